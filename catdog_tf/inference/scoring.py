"""Log loss and accuracy of a model (or ensemble) on labeled images.

    python -m catdog_tf.evaluate --model=runs/final/model.keras --images=../shared/data/kaggle_native/train --json_out=eval.json
    python -m catdog_tf.evaluate --model=runs/final --records=records --split=validation

Writes a JSON summary (log_loss, accuracy, count, clipped log losses, calibration table,
worst mistakes), a calibration plot and a contact sheet of the worst mistakes.
"""

from __future__ import annotations

import collections
import sys

import numpy as np
import tensorflow as tf

from catdog_tf import contracts, files
from catdog_tf.data import manifest
from catdog_tf.errors import UserError
from catdog_tf.inference import predictor
from catdog_tf.data import oof
from catdog_tf.metrics import accuracy, bootstrap_ci, log_loss, per_example_log_loss
from catdog_tf import plots
from catdog_tf.config import MAX_PIXELS

DEFAULT_CLIPS = (1e-15, 1e-4, 1e-3, 5e-3, 1e-2, 2e-2)


def summarize(ids: list[str], y: np.ndarray, p: np.ndarray, clips=DEFAULT_CLIPS, worst: int = 24) -> dict:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    per = per_example_log_loss(y, p)
    order = np.argsort(-per)[:worst]
    return {
        "log_loss": log_loss(y, p),
        "log_loss_ci95": bootstrap_ci(y, p),
        "accuracy": accuracy(y, p),
        "count": int(len(y)),
        "log_loss_clipped": {f"{c:g}": log_loss(y, p, c) for c in clips},
        "calibration": plots.calibration(y, p),
        "worst": [{"id": ids[i], "label": int(y[i]), "p_dog": float(p[i]), "loss": float(per[i])} for i in order],
    }


def evaluate(model, *, images: str | None = None, records_dir: str | None = None, split: str = "validation",
             fold: int | None = None, tta: str = "none", batch_size: int = 32, out_dir: str | None = None,
             clips=DEFAULT_CLIPS, max_pixels: int = MAX_PIXELS, worst: int = 24,
             strategy: tf.distribute.Strategy | None = None) -> dict:
    """Predicts every labeled image of a folder or a records split (under `strategy`: split
    across devices and workers); returns the summary and, with out_dir, writes
    calibration.png and worst_mistakes.png there."""
    if images:
        photos = predictor.scan_folder(images, labeled=True, max_pixels=max_pixels)
        for s in photos.skipped:
            print(f"skip {s['file']}: {s['reason']}", file=sys.stderr)
        print(photos.describe(), file=sys.stderr)
        ids, skipped = photos.ids, photos.skipped
        p = predictor.predict_photos(model, photos, batch_size, tta, strategy)
        y = np.asarray(photos.labels, np.float64)
        sources = dict(zip(ids, photos.paths))
    else:
        manifest.require_labeled(records_dir, split, fold, "evaluation")
        ids, y, p = predictor.predict_records(model, records_dir, split, batch_size, tta, fold, strategy)
        skipped, sources = [], None
    s = report(ids, y, p, records_dir=records_dir, out_dir=out_dir, clips=clips, worst=worst, sources=sources,
               title=model.name)
    s["skipped"] = skipped
    s["tta"] = tta
    return s


def report(ids: list[str], y, p, *, records_dir: str | None = None, out_dir: str | None = None, clips=DEFAULT_CLIPS,
           worst: int = 24, sources: dict | None = None, title: str = "") -> dict:
    """The summary of predictions p of photos `ids` labeled y: figures over every photo and, when
    the records list photos excluded from training, over the rest too; with out_dir, a calibration
    plot and a contact sheet of the worst mistakes (photos from `sources` or the records)."""
    y, p = contracts.labels(y, title or "evaluation", ids), contracts.probabilities(p, title or "evaluation", ids)
    s = summarize(ids, y, p, clips, worst)
    excluded = set(manifest.excluded_ids(records_dir)) if records_dir else set()
    if excluded:
        # The build's exclusion list: photos kept out of training but scored above like any other.
        ex = np.isin(np.asarray(ids, dtype=str), list(excluded))
        s["excluded"] = int(ex.sum())
        s["cleaned"] = {"count": int((~ex).sum()), "log_loss": log_loss(y[~ex], p[~ex]),
                        "log_loss_ci95": bootstrap_ci(y[~ex], p[~ex]), "accuracy": accuracy(y[~ex], p[~ex])}
        for w in s["worst"]:
            w["excluded"] = w["id"] in excluded
    if out_dir:
        s["calibration_png"] = plots.calibration_plot(y, p, files.join(out_dir, "calibration.png"),
                                                       f"{title}: log loss {s['log_loss']:.4f}, n={len(y)}")
        if sources is None and records_dir:  # JPEG bytes of just the worst few, for the contact sheet
            want = {w["id"] for w in s["worst"]}
            sources = {e["id"]: e["encoded"] for e in manifest.read_examples(records_dir) if e["id"] in want}
        sources = sources or {}  # predictions alone: the sheet names the photos without them
        items = [(sources[w["id"]], f"{w['id']}{' (excl.)' if w.get('excluded') else ''}  P(dog)={w['p_dog']:.3f}"
                  f"\nloss {w['loss']:.2f}") for w in s["worst"] if w["id"] in sources]
        s["worst_png"] = plots.contact_sheet(items, files.join(out_dir, "worst_mistakes.png"),
                                              f"{title}: worst {len(items)} of {len(y)} (true label in the id)")
    return s


def evaluate_predictions(path: str, *, records_dir: str | None = None, out_dir: str | None = None,
                         clips=DEFAULT_CLIPS, worst: int = 24) -> dict:
    """report() of an out-of-fold predictions CSV (kfold / ensemble --oof). Its worst mistakes
    among photos used for training are the label-error candidates: a prediction made without
    the photo that contradicts its label with confidence."""
    o = oof.read_oof(path)
    if records_dir:
        excluded = set(manifest.excluded_ids(records_dir))
        if any(e != (i in excluded) for i, e in zip(o.ids, o.excluded)):
            raise UserError(f"{path}: its excluded photos differ from {records_dir}'s list: not these records' run")
        splits = manifest.load_manifest(records_dir)["splits"]
        for fold, n in collections.Counter(o.folds).items():  # a partial file would score a subset
            have = splits[fold]["count"] if fold in splits else 0
            if n != have:
                raise UserError(f"{path}: {n} row(s) of {fold} where {records_dir} holds {have} photos: not these "
                                "records' run, or a partial file")
    return report(o.ids, o.labels, o.p_dog, records_dir=records_dir, out_dir=out_dir, clips=clips, worst=worst,
                  title=f"out of fold: {files.name(path if files.isdir(path) else files.parent(path))}")
