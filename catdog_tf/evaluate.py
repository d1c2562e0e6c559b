"""Log loss and accuracy of a model (or ensemble) on labeled images.

    python -m catdog_tf.evaluate --model=runs/final/model.keras --images=../shared/data/kaggle_native/train --json_out=eval.json
    python -m catdog_tf.evaluate --model=runs/final --records=records --split=validation

Writes a JSON summary (log_loss, accuracy, count, clipped log losses, calibration table,
worst mistakes), a calibration plot and a contact sheet of the worst mistakes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from catdog_tf import predict

DEFAULT_CLIPS = (1e-15, 1e-4, 1e-3, 5e-3, 1e-2, 2e-2)


def log_loss(y, p, eps: float = 1e-15) -> float:
    """Kaggle's formula: -mean(y log p + (1-y) log(1-p)), p clipped to [eps, 1-eps]."""
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def summarize(ids: list[str], y: np.ndarray, p: np.ndarray, clips=DEFAULT_CLIPS, worst: int = 24) -> dict:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    per = -(y * np.log(np.clip(p, 1e-15, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-15, 1)))
    order = np.argsort(-per)[:worst]
    from catdog_tf.report import calibration

    return {
        "log_loss": log_loss(y, p),
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))) if len(y) else float("nan"),
        "count": int(len(y)),
        "log_loss_clipped": {f"{c:g}": log_loss(y, p, c) for c in clips},
        "calibration": calibration(y, p),
        "worst": [{"id": ids[i], "label": int(y[i]), "p_dog": float(p[i]), "loss": float(per[i])} for i in order],
    }


def evaluate(model, *, images: str | None = None, records_dir: str | None = None, split: str = "validation",
             fold: int | None = None, tta: str = "none", batch_size: int = 32, out_dir: str | None = None,
             clips=DEFAULT_CLIPS) -> dict:
    """Predicts every labeled image of a folder or a records split; returns the summary and,
    with out_dir, writes calibration.png and worst_mistakes.png there."""
    if images:
        paths, ids, labels, skipped = predict.scan_folder(images, labeled=True)
        for s in skipped:
            print(f"skip {s['file']}: {s['reason']}", file=sys.stderr)
        p = predict.predict_files(model, paths, batch_size, tta)
        y = np.asarray(labels, np.float64)
    else:
        ids, y, p = predict.predict_records(model, records_dir, split, batch_size, tta, fold)
        skipped = []
    s = summarize(ids, y, p, clips)
    s["skipped"] = skipped
    s["tta"] = tta
    if out_dir:
        from catdog_tf import report

        out = Path(out_dir)
        s["calibration_png"] = report.calibration_plot(y, p, str(out / "calibration.png"),
                                                       f"{model.name}: log loss {s['log_loss']:.4f}, n={len(y)}")
        worst = s["worst"]
        if images:
            sources = dict(zip(ids, paths))
        else:  # JPEG bytes of just the worst few, for the contact sheet
            from catdog_tf import records

            want = {w["id"] for w in worst}
            sources = {e["id"]: e["encoded"] for e in records.read_examples(records_dir) if e["id"] in want}
        items = [(sources[w["id"]], f"{w['id']}  P(dog)={w['p_dog']:.3f}\nloss {w['loss']:.2f}") for w in worst
                 if w["id"] in sources]
        s["worst_png"] = report.contact_sheet(items, str(out / "worst_mistakes.png"),
                                              f"{model.name}: worst {len(items)} of {len(y)} (title: true label in id)")
    return s


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if bool(F.images) == bool(F.records):
        raise SystemExit("error: give exactly one of --images=FOLDER or --records=FOLDER")
    model = predict.load_model(F.model)
    out_dir = F.out_dir or (str(Path(F.json_out).with_suffix("")) + "_plots" if F.json_out else None)
    s = evaluate(model, images=F.images, records_dir=F.records, split=F.split, fold=F.fold, tta=F.tta,
                 batch_size=F.batch_size, out_dir=out_dir, clips=tuple(DEFAULT_CLIPS) + tuple(F.clip or ()))
    s["model"] = F.model
    s["data"] = F.images or f"{F.records}:{F.split}"
    print(f"log loss {s['log_loss']:.5f}  accuracy {s['accuracy']:.4f}  count {s['count']}  (tta={F.tta})")
    for c, v in s["log_loss_clipped"].items():
        print(f"  clipped to [{c}, 1-{c}]: {v:.5f}")
    if F.json_out:
        Path(F.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(F.json_out).write_text(json.dumps(s, indent=1))
        print(f"wrote {F.json_out}" + (f" and plots in {out_dir}" if out_dir else ""))


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", "runs/final/model.keras", "Model file or model dir.")
    flags.DEFINE_string("images", None, "Folder of labeled images cat.N.jpg / dog.N.jpg.")
    flags.DEFINE_string("records", None, "Records folder.")
    flags.DEFINE_string("split", "validation", "Records split to evaluate.")
    flags.DEFINE_integer("fold", None, "Fold (records built with --folds).")
    flags.DEFINE_string("json_out", None, "Write the JSON summary here.")
    flags.DEFINE_string("out_dir", None, "Folder for plots (default: next to --json_out).")
    flags.DEFINE_enum("tta", "none", ["none", "flip"], "Test-time augmentation.")
    flags.DEFINE_multi_float("clip", None, "Also report the log loss under this clip (repeatable).")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
