"""P(dog) for images: a Kaggle submission, or a few files on the command line.

    python -m catdog_tf.predict --model=runs/final/model.keras --images=../shared/data/kaggle200/test --out=submission.csv
    python -m catdog_tf.predict --model=runs/final/model.keras photo1.jpg photo2.png

Any model this package writes (one backbone or an ensemble) takes float images in 0..255
at its declared input size; resizing here matches training (squash, antialiased bilinear).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

SAFE_EPS = 1e-15


def load_model(path: str):
    """A model dir (holding model.keras) or a .keras file, loaded with safe_mode on."""
    import keras

    import catdog_tf.backbones  # noqa: F401 - registers the custom layers
    import catdog_tf.ensemble  # noqa: F401

    p = Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.exists():
        raise FileNotFoundError(f"{path}: no model (expected a .keras file or a folder holding model.keras)")
    return keras.saving.load_model(str(p), safe_mode=True, compile=False)


def input_size(model) -> int:
    shape = model.input_shape
    if shape[1] is None:
        raise ValueError(f"{model.name}: input size is not fixed ({shape})")
    return int(shape[1])


def predict_batches(model, batches, tta: str = "none", total: int | None = None, desc: str = "predict"):
    """Runs model over an iterable of image batches; tta='flip' averages with the mirror
    image in logit space. Returns P(dog) as float64 numpy."""
    import tensorflow as tf

    from catdog_tf.features import Progress

    if tta not in ("none", "flip"):
        raise ValueError(f"tta must be 'none' or 'flip', not {tta!r}")

    @tf.function(reduce_retracing=True)
    def step(images):
        p = tf.cast(model(images, training=False), tf.float32)
        if tta == "flip":
            q = tf.cast(model(tf.image.flip_left_right(images), training=False), tf.float32)
            eps = 1e-7
            logit = lambda v: tf.math.log(tf.clip_by_value(v, eps, 1 - eps) / tf.clip_by_value(1 - v, eps, 1))  # noqa: E731
            p = tf.sigmoid((logit(p) + logit(q)) / 2)
        return tf.reshape(p, [-1])

    out = []
    bar = Progress(total, desc)
    for images in batches:
        out.append(step(images).numpy())
        bar.update(len(out[-1]))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


_LABELED = re.compile(r"^(cat|dog)\.(\d+)\.", re.IGNORECASE)
_NUMERIC = re.compile(r"^(\d+)\.")


def scan_folder(folder: str, labeled: bool) -> tuple[list[str], list[str], list[int], list[dict]]:
    """Image files of a Kaggle folder -> (paths, ids, labels, skipped). Every file is checked
    to decode (records.check), so a bad image is reported by name, not as a tf.data crash."""
    import concurrent.futures
    import os

    from catdog_tf import records

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    paths, ids, labels, skipped = [], [], [], []
    cands = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_file() and not p.is_symlink():
            continue
        m = (_LABELED if labeled else _NUMERIC).match(p.name)
        if not m:
            skipped.append({"file": str(p), "reason": "name is not cat.N.jpg/dog.N.jpg" if labeled else "name is not N.jpg"})
            continue
        id_ = f"{m.group(1).lower()}.{int(m.group(2))}" if labeled else str(int(m.group(1)))
        label = (1 if m.group(1).lower() == "dog" else 0) if labeled else -1
        cands.append(records.Candidate(id_, label, str(p), p.read_bytes))
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for c, res in zip(cands, pool.map(records.check, cands)):
            if isinstance(res, records.Checked):
                paths.append(c.origin)
                ids.append(c.id)
                labels.append(c.label)
            else:
                skipped.append(res)
    return paths, ids, labels, skipped


def predict_files(model, paths: list[str], batch_size: int = 32, tta: str = "none") -> np.ndarray:
    from catdog_tf import pipeline

    ds = pipeline.files_dataset(paths, input_size(model), batch_size)
    return predict_batches(model, ds, tta, total=len(paths))


def predict_records(model, records_dir: str, split: str, batch_size: int = 32, tta: str = "none",
                    fold: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, labels, P(dog)) for a records split in manifest order."""
    from catdog_tf import features, pipeline

    ds = pipeline.make_dataset(records_dir, split, input_size(model), batch_size, fold=fold, with_ids=True)
    ids, labels = [], []

    def images():
        for x, y in ds:
            ids.extend(i.decode() for i in x["id"].numpy())
            labels.append(y.numpy())
            yield x["image"]

    total = features.split_count(records_dir, split, fold)
    p = predict_batches(model, images(), tta, total=total)
    return ids, (np.concatenate(labels) if labels else np.zeros(0)), p


def write_submission(path: str, ids: list[str], p: np.ndarray, clip: float = SAFE_EPS):
    """Kaggle's `id,label` CSV, ids in numeric order, label = P(dog) clipped to [clip, 1-clip]."""
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate test ids {dup}: refusing to write {path}")
    order = sorted(range(len(ids)), key=lambda i: int(ids[i]))
    p = np.clip(p, clip, 1 - clip)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write("id,label\n")
        f.writelines(f"{ids[i]},{p[i]:.6f}\n" for i in order)
    tmp.replace(path)


def main(argv):
    from absl import flags

    F = flags.FLAGS
    model = load_model(F.model)
    files = argv[1:]
    if files:
        p = predict_files(model, files, F.batch_size, F.tta)
        for f, v in zip(files, p):
            print(f"{f}\t{v:.6f}")
        return
    if bool(F.images) == bool(F.records):
        raise SystemExit("error: give --images=FOLDER or --records=FOLDER (or image paths as arguments)")
    if F.images:
        paths, ids, _, skipped = scan_folder(F.images, labeled=False)
        for s in skipped:
            print(f"error: {s['file']}: {s['reason']}", file=sys.stderr)
        if any(s["reason"] != "name is not N.jpg" for s in skipped):
            raise SystemExit(f"error: {len(skipped)} test image(s) unreadable: no submission written "
                             "(every test id needs a prediction)")
        p = predict_files(model, paths, F.batch_size, F.tta)
    else:
        ids, _, p = predict_records(model, F.records, "test", F.batch_size, F.tta)
    write_submission(F.out, ids, p, F.clip)
    print(f"wrote {F.out}: {len(ids)} rows, mean P(dog) {np.mean(p):.3f}", file=sys.stderr)


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", "runs/final/model.keras", "Model file or model dir.")
    flags.DEFINE_string("images", None, "Folder of test images N.jpg.")
    flags.DEFINE_string("records", None, "Records folder; its 'test' split is predicted.")
    flags.DEFINE_string("out", "submission.csv", "Submission CSV path.")
    flags.DEFINE_float("clip", SAFE_EPS, "Clip P(dog) to [clip, 1-clip] in the submission.")
    flags.DEFINE_enum("tta", "flip", ["none", "flip"], "Test-time augmentation.")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
