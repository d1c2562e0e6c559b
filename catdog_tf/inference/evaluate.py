"""Log loss and accuracy of a model (or ensemble) on labeled images.

    python -m catdog_tf.evaluate --model=runs/final/model.keras --images=../shared/data/kaggle_native/train --json_out=eval.json
    python -m catdog_tf.evaluate --model=runs/final --records=records --split=validation

Writes a JSON summary (log_loss, accuracy, count, clipped log losses, calibration table,
worst mistakes), a calibration plot and a contact sheet of the worst mistakes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from catdog_tf.data import records
from catdog_tf.inference import predict
from catdog_tf.metrics import accuracy, log_loss, per_example_log_loss
from catdog_tf import plots

DEFAULT_CLIPS = (1e-15, 1e-4, 1e-3, 5e-3, 1e-2, 2e-2)


def summarize(ids: list[str], y: np.ndarray, p: np.ndarray, clips=DEFAULT_CLIPS, worst: int = 24) -> dict:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    per = per_example_log_loss(y, p)
    order = np.argsort(-per)[:worst]
    return {
        "log_loss": log_loss(y, p),
        "accuracy": accuracy(y, p),
        "count": int(len(y)),
        "log_loss_clipped": {f"{c:g}": log_loss(y, p, c) for c in clips},
        "calibration": plots.calibration(y, p),
        "worst": [{"id": ids[i], "label": int(y[i]), "p_dog": float(p[i]), "loss": float(per[i])} for i in order],
    }


def evaluate(model, *, images: str | None = None, records_dir: str | None = None, split: str = "validation",
             fold: int | None = None, tta: str = "none", batch_size: int = 32, out_dir: str | None = None,
             clips=DEFAULT_CLIPS, max_pixels: int = records.DEFAULT_MAX_PIXELS) -> dict:
    """Predicts every labeled image of a folder or a records split; returns the summary and,
    with out_dir, writes calibration.png and worst_mistakes.png there."""
    if images:
        photos = predict.scan_folder(images, labeled=True, max_pixels=max_pixels)
        for s in photos.skipped:
            print(f"skip {s['file']}: {s['reason']}", file=sys.stderr)
        print(photos.describe(), file=sys.stderr)
        ids, paths, skipped = photos.ids, photos.paths, photos.skipped
        p = predict.predict_photos(model, photos, batch_size, tta)
        y = np.asarray(photos.labels, np.float64)
    else:
        ids, y, p = predict.predict_records(model, records_dir, split, batch_size, tta, fold)
        skipped = []
    s = summarize(ids, y, p, clips)
    s["skipped"] = skipped
    s["tta"] = tta
    if out_dir:
        out = Path(out_dir)
        s["calibration_png"] = plots.calibration_plot(y, p, str(out / "calibration.png"),
                                                       f"{model.name}: log loss {s['log_loss']:.4f}, n={len(y)}")
        worst = s["worst"]
        if images:
            sources = dict(zip(ids, paths))
        else:  # JPEG bytes of just the worst few, for the contact sheet
            want = {w["id"] for w in worst}
            sources = {e["id"]: e["encoded"] for e in records.read_examples(records_dir) if e["id"] in want}
        items = [(sources[w["id"]], f"{w['id']}  P(dog)={w['p_dog']:.3f}\nloss {w['loss']:.2f}") for w in worst
                 if w["id"] in sources]
        s["worst_png"] = plots.contact_sheet(items, str(out / "worst_mistakes.png"),
                                              f"{model.name}: worst {len(items)} of {len(y)} (title: true label in id)")
    return s
