"""P(dog) for images: a Kaggle submission, or a few files on the command line.

    python -m catdog_tf.predict --model=runs/final/model.keras --images=../shared/data/kaggle200/test --out=submission.csv
    python -m catdog_tf.predict --model=runs/final/model.keras photo1.jpg photo2.png

Any model this package writes (one backbone or an ensemble) takes float images in 0..255
at its declared input size; resizing here matches training (pipeline.decode_resize: a squash).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
import zipfile
import zlib

import keras
import numpy as np
import tensorflow as tf

import catdog_tf.models.layers  # noqa: F401 - registers the package's layers for load_model
from catdog_tf import contracts, distribution, files
from catdog_tf.data import kaggle, manifest, oof, pipeline, sources
from catdog_tf.models import combination
from catdog_tf.errors import UserError
from catdog_tf.metrics import KAGGLE_EPS
from catdog_tf.progress import Progress
from catdog_tf.data.photos import check, Checked
from catdog_tf.config import MAX_PIXELS

# tta='flip': a photo and its mirror image, averaged in logit space
FLIP_RULE = combination.Rule((1.0, 1.0))


def load_model(path: str, strategy: tf.distribute.Strategy | None = None):
    """A model dir (holding model.keras) or a .keras file, loaded with safe_mode on (under
    `strategy`'s scope: its weights on every device)."""
    p = files.join(path, "model.keras") if files.isdir(path) else str(path)
    if not files.exists(p):
        raise UserError(f"{path}: no model (expected a .keras file or a folder holding model.keras)")
    files.check_regular(p)  # a FIFO would block Keras's reader
    if p.endswith(".keras") and not files.is_remote(p) and not zipfile.is_zipfile(p):
        raise UserError(f"{p}: not a .keras model file (a .keras file is a zip; this one is damaged or truncated)")
    # A damaged file, a foreign format or a layer safe_mode refuses: one line naming the file.
    with files.reading(p, "model"), (strategy or tf.distribute.get_strategy()).scope():
        model = keras.saving.load_model(p, safe_mode=True, compile=False)
    _check_signature(model, p)
    return model


def _check_signature(model, path: str) -> None:
    """A P(dog) model: one image input [N, S, S, 3] and one output [N, 1]; another model (two
    classes, several inputs) would give rows that look right and are not."""
    ins, outs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    shape_in = tuple(ins[0].shape) if len(ins) == 1 else None
    shape_out = tuple(outs[0].shape) if len(outs) == 1 else None
    if not (shape_in and len(shape_in) == 4 and shape_in[3] == 3 and shape_in[1] and shape_in[1] == shape_in[2]) \
            or shape_out is None or tuple(shape_out[1:]) != (1,):
        raise UserError(f"{path}: not a P(dog) model (input {[tuple(t.shape) for t in ins]}, output "
                        f"{[tuple(t.shape) for t in outs]}; expected [N, S, S, 3] -> [N, 1])")


def input_size(model) -> int:
    shape = model.input_shape
    if shape[1] is None:
        raise UserError(f"{model.name}: input size is not fixed ({shape})")
    return int(shape[1])


def predict_batches(model, batches, tta: str = "none", total: int | None = None, desc: str = "predict",
                    strategy: tf.distribute.Strategy | None = None):
    """Runs model over an iterable of image batches, each split across the strategy's local
    devices; tta='flip' averages with the mirror image in logit space. Returns P(dog) as
    float64 numpy."""
    if tta not in ("none", "flip"):
        raise ValueError(f"tta must be 'none' or 'flip', not {tta!r}")

    @tf.function(reduce_retracing=True)
    def step(images):
        p = tf.cast(model(images, training=False), tf.float32)
        if tta == "flip":
            q = tf.cast(model(tf.image.flip_left_right(images), training=False), tf.float32)
            pq = tf.concat([tf.reshape(p, [-1, 1]), tf.reshape(q, [-1, 1])], axis=-1)
            p = combination.combine(combination.TENSOR, pq, FLIP_RULE)
        return tf.reshape(p, [-1])

    run = distribution.replica_map(strategy or tf.distribute.get_strategy(), step)
    out = []
    bar = Progress(total, desc)
    for images in batches:
        out.append(np.asarray(run(images)))
        bar.update(len(out[-1]))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


@dataclasses.dataclass
class Photos:
    """The photos of a folder that will be scored, and every file that will not, with the reason."""

    items: list[Checked]
    skipped: list[dict]
    folder: str

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    @property
    def paths(self) -> list[str]:
        return [it.origin for it in self.items]

    def missing_ids(self) -> list[str]:
        """Ids that a file in the folder claims by its name but that no scored photo has (an
        unreadable photo, a folder or FIFO named like one): a submission without them is wrong."""
        scored = set(self.ids)
        kind = {it.label != kaggle.UNLABELED for it in self.items}
        claimed = {kn.id for s in self.skipped
                   if (kn := kaggle.parse(files.name(s["file"]))) is not None and {kn.labeled} == kind}
        return sorted(claimed - scored, key=lambda i: (len(i), i))

    def describe(self) -> str:
        return f"{len(self.items)} photo(s) scored from {self.folder}, {len(self.skipped)} file(s) skipped"


def scan_folder(folder: str, labeled: bool, max_pixels: int = MAX_PIXELS) -> Photos:
    """The photos of a Kaggle folder (searched like records' inputs: recursively, regular files
    only, the same name rules), each checked to decode, so a bad file is reported by name, not
    as a tf.data crash. Duplicate ids keep the first file. No photo at all is a UserError."""
    if not files.isdir(folder):
        raise UserError(f"{folder}: not a folder")
    cands, skipped = sources.discover([folder])
    wanted = []
    for c in cands:
        if (c.label != kaggle.UNLABELED) == labeled:
            wanted.append(c)
        else:
            skipped.append({"file": c.origin, "reason": kaggle.name_problem(files.name(c.origin), labeled)})
    items = []
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for res in pool.map(lambda c: check(c, max_pixels), wanted):
            (items if isinstance(res, Checked) else skipped).append(res)
    if not items:
        first = f"; first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else ""
        raise UserError(f"{folder}: no readable photo named {'cat.N.jpg / dog.N.jpg' if labeled else 'N.jpg'} "
                        f"({len(skipped)} file(s) skipped{first})")
    return Photos(items, skipped, folder)


def predict_photos(model, photos: Photos, batch_size: int = 32, tta: str = "none",
                   strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
    """P(dog) of every photo, in order. Under a multi-worker strategy each worker predicts its
    share and every worker gets all the predictions. batch_size: split across the devices."""
    w, mine = distribution.share(strategy, len(photos.items))
    # Every worker must score the same photo list (a folder each host reads for itself).
    if not distribution.same_everywhere(strategy, zlib.crc32("\n".join(photos.ids).encode()) % (1 << 20)):
        raise UserError(f"{photos.folder}: the workers found different photos there; give every host the same folder")
    ds = pipeline.photos_dataset([photos.items[i] for i in mine], input_size(model), batch_size)
    p = predict_batches(model, ds, tta, total=len(mine), strategy=strategy)
    return distribution.gather_rows(strategy, p, mine, len(photos.items)).astype(np.float64) if w.count > 1 else p


def predict_files(model, paths: list[str], batch_size: int = 32, tta: str = "none",
                  strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
    ds = pipeline.files_dataset(paths, input_size(model), batch_size)
    return predict_batches(model, ds, tta, total=len(paths), strategy=strategy)


def predict_records(model, records_dir: str, split: str, batch_size: int = 32, tta: str = "none",
                    fold: int | None = None, strategy: tf.distribute.Strategy | None = None,
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, labels, P(dog)) for a records split in manifest order (each worker predicts its
    share under a multi-worker strategy; every worker returns all of them)."""
    total = manifest.split_count(records_dir, split, fold)
    w, mine = distribution.share(strategy, total)
    ds = pipeline.make_dataset(records_dir, split, input_size(model), batch_size,
                               pipeline.Read(fold=fold, with_ids=True,
                                             shard=(w.count, w.rank) if w.count > 1 else None))
    ids, labels = [], []

    def images():
        for x, y in ds:
            ids.extend(i.decode() for i in x["id"].numpy())
            labels.append(y.numpy())
            yield x["image"]

    with manifest.damage_named(records_dir):
        p = predict_batches(model, images(), tta, total=len(mine), strategy=strategy)
    y = np.concatenate(labels) if labels else np.zeros(0)
    if w.count > 1:
        order = pipeline.example_ids(records_dir, split, fold)
        y, p = (a.astype(np.float64) for a in distribution.assemble(strategy, [y.astype(np.float32), p], ids, order, split))
        ids = order
    if len(ids) != total or len(p) != total:
        raise sources.RecordsError(f"{records_dir}: split {split!r} lists {total} photos but {len(ids)} were read; "
                                   "rebuild the records")
    return ids, y, p


def check_request(paths: list[str], images: str | None, records: str | None, out_given: bool) -> None:
    """Photos given as arguments, or a test set (--images or --records) for a submission."""
    if paths and (images or records or out_given):
        raise UserError("photos as arguments print their P(dog); --images/--records (and --out) write a "
                        "submission: give one or the other")
    if not paths and bool(images) == bool(records):
        raise UserError("give --images=FOLDER or --records=FOLDER (or image paths as arguments)")


def predict_test_set(model, images: str | None, records: str | None, batch_size: int, tta: str,
                     strategy, max_pixels: int = MAX_PIXELS):
    """(ids, P(dog), every id the submission must hold) for a folder of test photos or a
    records folder's test split. The expected ids include photos that could not be read, so a
    submission missing them is refused (write_submission), never written short."""
    if images:
        photos = scan_folder(images, labeled=False, max_pixels=max_pixels)
        for s in photos.skipped:
            print(f"skip: {s['file']}: {s['reason']}", file=sys.stderr)
        print(photos.describe(), file=sys.stderr)
        return photos.ids, predict_photos(model, photos, batch_size, tta, strategy), photos.ids + photos.missing_ids()
    ids, _, p = predict_records(model, records, "test", batch_size, tta, strategy=strategy)
    return ids, p, ids + manifest.lost_ids(records, labeled=False)


def write_submission(path: str, ids: list[str], p: np.ndarray, clip: float = KAGGLE_EPS,
                     expected: list[str] | None = None) -> np.ndarray:
    """Kaggle's `id,label` CSV, ids in numeric order, label = P(dog) clipped to [clip, 1-clip];
    returns the written labels. Checked first (contracts): one finite row in [0, 1] for every id
    of `expected` (the source's test ids; default `ids`) and no other; then read back, so a full
    disk or a short write is an error, not a shorter file. A violation writes nothing."""
    contracts.complete(ids, ids if expected is None else expected, path)
    p = contracts.probabilities(p, path, ids)
    if not 0 <= clip < 0.5:
        raise UserError(f"--clip={clip}: must be >= 0 and < 0.5 (0.5 would make every row the same)")
    order = sorted(range(len(ids)), key=lambda i: kaggle.number_order(ids[i]))
    q = np.clip(p, clip, 1 - clip)
    text = oof.SUBMISSION_HEADER + "\n" + "".join(f"{ids[i]},{q[i]:.6f}\n" for i in order)
    files.write_text(path, text)
    if files.read_text(path) != text:
        files.remove(path)
        raise UserError(f"{path}: the file on disk differs from the submission written (disk full?): removed")
    return q
