"""Frozen-backbone activations computed once and cached on disk.

On a CPU a large backbone runs at a few images/s in training but the frozen part of it
gives the same output every epoch, so it is computed once (per image and per horizontal
flip) and the trainable part is fit on the cached arrays: minutes instead of hours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import keras
import numpy as np
import tensorflow as tf

from catdog_tf import distribution, files
from catdog_tf.data import manifest, pipeline
from catdog_tf.errors import UserError
from catdog_tf.progress import Progress


def extract(feature_model: keras.Model, ds: tf.data.Dataset, total: int | None = None, desc: str = "features",
            flip: bool = False, strategy: tf.distribute.Strategy | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs feature_model over ds (batches of ({"image", "id"}, label)); returns
    (features, labels, str ids). flip=True mirrors every image first (test-time/cached flip).
    Each batch is split across the strategy's local replicas (distribute.replica_map)."""

    # One trace for every batch size (the last batch is smaller).
    @tf.function(input_signature=[tf.TensorSpec([None, *feature_model.input_shape[1:]], tf.float32)])
    def step(images):
        if flip:
            images = tf.image.flip_left_right(images)
        return feature_model(images, training=False)

    run = distribution.replica_map(strategy or tf.distribute.get_strategy(), step)
    feats, labels, ids = [], [], []
    bar = Progress(total, desc)
    for x, y in ds:
        feats.append(np.asarray(run(x["image"])))
        labels.append(y.numpy())
        ids += [i.decode() for i in x["id"].numpy()]
        bar.update(len(y))
    if not feats:
        return np.zeros((0,) + tuple(feature_model.output_shape[1:]), np.float32), np.zeros(0), np.zeros(0, object)
    return np.concatenate(feats), np.concatenate(labels), np.asarray(ids, dtype=object)


def apply(model: keras.Model, x: np.ndarray, desc: str, batch_size: int = 256) -> np.ndarray:
    """model over cached arrays in batches, with a progress line (a trainable top over every
    cached photo takes minutes)."""
    step = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    bar, out = Progress(len(x), desc), []
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(step(tf.convert_to_tensor(x[i:i + batch_size]))))
        bar.update(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)


def _weights_fingerprint(model: keras.Model) -> str:
    # Every weight's bytes (a fine-tuned or edited tensor anywhere changes the features); about
    # 0.1 s per 20 M weights, nothing beside an extraction.
    h = hashlib.sha256()
    for w in model.weights:
        h.update(str(tuple(w.shape)).encode())
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()[:16]


def cached(feature_model: keras.Model, records_dir: str, split: str, image_size: int, *, fold: int | None = None,
           flip: bool = False, batch_size: int = 64, cache_dir: str | None = None,
           dtype: str = "float32", strategy: tf.distribute.Strategy | None = None,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """extract() over a records split, cached under cache_dir keyed by the model's name and
    weights, its output, the split's shard checksums, image size and flip.

    Under a multi-worker strategy each worker extracts every K-th photo, the parts are
    assembled on every worker (distribute.gather_rows) and only the chief writes the cache."""
    strategy = strategy or tf.distribute.get_strategy()
    shards = manifest.split_shards(records_dir, split, fold)
    shas = sorted(sh["sha256"] for sh in shards)
    key = hashlib.sha256(json.dumps([feature_model.name, _weights_fingerprint(feature_model),
                                     list(feature_model.output_shape), image_size, flip, shas]).encode()).hexdigest()[:20]
    path = files.join(cache_dir, f"{feature_model.name}-{split}{'' if fold is None else fold}-{'flip-' if flip else ''}"
                                 f"{key}.npz") if cache_dir else None
    total = sum(sh["count"] for sh in shards)
    z = _load_cache(path, total, feature_model.output_shape[1:]) if path else None
    # Decided together: a worker that saw no cache would extract, and wait for the others forever.
    if path and distribution.agree(strategy, z is not None):
        return z["features"], z["labels"], z["ids"].astype(object)
    w, mine = distribution.share(strategy, total)
    desc = f"{feature_model.name} {split}{' flipped' if flip else ''}"
    print(f"features: worker {w.rank}/{w.count} extracts {len(mine)} of {total} photos ({desc})", file=sys.stderr,
          flush=True)
    # batch_size: split across this worker's devices (replica_map)
    ds = pipeline.make_dataset(records_dir, split, image_size, batch_size,
                               pipeline.Read(fold=fold, with_ids=True,
                                             shard=(w.count, w.rank) if w.count > 1 else None))
    with manifest.damage_named(records_dir):
        feats, labels, ids = extract(feature_model, ds, len(mine), desc=desc, flip=flip, strategy=strategy)
    if w.count > 1:
        order = pipeline.example_ids(records_dir, split, fold)
        feats, labels = distribution.assemble(strategy, [feats, labels.astype(np.float32)], list(ids), order, split)
        ids = np.asarray(order, dtype=object)
    feats = feats.astype(dtype)
    if path and w.chief:
        files.save_npz(path, features=feats, labels=labels, ids=ids.astype(str))
    return feats, labels, ids


def _load_cache(path: str, count: int, shape) -> dict | None:
    """A cache file's arrays when it holds what its name promises (count rows of `shape`,
    labels and ids); None when absent. A damaged one (truncated, flipped, foreign) is named,
    removed and recomputed, never read as features."""
    if not files.exists(path):
        return None
    try:
        z = files.load_npz(path)
        x, y, ids = z["features"], z["labels"], z["ids"]
        if x.shape != (count, *shape) or y.shape != (count,) or ids.shape != (count,) or \
                not np.all(np.isfinite(x.astype(np.float32))):
            raise UserError(f"{path}: holds {x.shape[0]} rows of {x.shape[1:]} where {count} of {tuple(shape)} are due")
        return z
    except (UserError, KeyError, ValueError) as e:
        print(f"features: {e if str(path) in str(e) else f'{path}: {e}'}; damaged cache removed, recomputing",
              file=sys.stderr, flush=True)
        files.remove(path)
        return None


@dataclasses.dataclass
class FeatureSet:
    """Cached activations of some photos, and of their mirror images in the same order."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    x_flip: np.ndarray | None = None

    def without(self, ids) -> "FeatureSet":
        """The same set without the photos `ids` (e.g. records.excluded_ids: kept out of training)."""
        keep = ~np.isin(self.ids.astype(str), list(ids))
        return FeatureSet(self.x[keep], self.y[keep], self.ids[keep], None if self.x_flip is None else self.x_flip[keep])

    def mirror_mean(self) -> np.ndarray:
        """The mean of each photo's and its mirror image's features: what a model with flip
        test-time augmentation feeds its (linear) head."""
        return (self.x + self.x_flip) / 2

    def with_mirrors(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) with the mirror images appended: the training arrays of the flip policy."""
        if self.x_flip is None:
            return self.x, self.y
        return np.concatenate([self.x, self.x_flip]), np.concatenate([self.y, self.y])


def load(feature_model: keras.Model, records_dir: str, splits: list[str], image_size: int, *, flip: bool = False,
         fold: int | None = None, cache_dir: str | None = None, dtype: str = "float32",
         batch_size: int = 64, strategy: tf.distribute.Strategy | None = None) -> FeatureSet:
    """The cached activations of every photo of `splits` (each cached as one file), in order;
    with flip, those of the mirror images too."""
    parts, fparts, ys, id_parts = [], [], [], []
    kw = dict(fold=fold, cache_dir=cache_dir, dtype=dtype, batch_size=batch_size, strategy=strategy)
    for split in splits:
        x, y, ids = cached(feature_model, records_dir, split, image_size, **kw)
        parts.append(x)
        ys.append(y)
        id_parts.append(ids)
        if flip:
            xf, _, idsf = cached(feature_model, records_dir, split, image_size, flip=True, **kw)
            if list(idsf) != list(ids):
                raise ValueError(f"{split}: flipped and plain feature caches list photos in different orders")
            fparts.append(xf)
    return FeatureSet(np.concatenate(parts), np.concatenate(ys), np.concatenate(id_parts),
                      np.concatenate(fparts) if flip else None)
