"""Frozen-backbone activations computed once and cached on disk.

On a CPU a large backbone runs at a few images/s in training but the frozen part of it
gives the same output every epoch, so it is computed once (per image and per horizontal
flip) and the trainable part is fit on the cached arrays: minutes instead of hours.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog_tf import pipeline, records


class Progress:
    """One line per step with count, rate and ETA (readable in logs, unlike a redrawn bar)."""

    def __init__(self, total: int | None, desc: str, every_s: float = 10.0):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.n, self.t0, self.last = 0, time.time(), 0.0

    def update(self, n: int):
        self.n += n
        now = time.time()
        if now - self.last >= self.every_s or (self.total and self.n >= self.total):
            self.last = now
            rate = self.n / max(now - self.t0, 1e-9)
            if self.total:
                eta = (self.total - self.n) / max(rate, 1e-9)
                print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                      f"{rate:.1f} img/s, ETA {eta:.0f}s", file=sys.stderr, flush=True)
            else:
                print(f"{self.desc}: {self.n} {rate:.1f} img/s", file=sys.stderr, flush=True)


def split_shards(records_dir: str, split: str, fold: int | None = None) -> list[dict]:
    """The manifest entries (file, count, bytes, sha256) of a split's shards."""
    m = records.load_manifest(records_dir)
    names = {Path(f).name for f in records.shard_files(records_dir, split, fold)}
    return [sh for s in m["splits"].values() for sh in s["shards"] if sh["file"] in names]


def split_count(records_dir: str, split: str, fold: int | None = None) -> int:
    return sum(sh["count"] for sh in split_shards(records_dir, split, fold))


def extract(feature_model: keras.Model, ds: tf.data.Dataset, total: int | None = None, desc: str = "features",
            flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs feature_model over ds (batches of ({"image", "id"}, label)); returns
    (features, labels, str ids). flip=True mirrors every image first (test-time/cached flip)."""

    # One trace for every batch size (the last batch is smaller).
    @tf.function(input_signature=[tf.TensorSpec([None, *feature_model.input_shape[1:]], tf.float32)])
    def step(images):
        if flip:
            images = tf.image.flip_left_right(images)
        return feature_model(images, training=False)

    feats, labels, ids = [], [], []
    bar = Progress(total, desc)
    for x, y in ds:
        feats.append(np.asarray(step(x["image"])))
        labels.append(y.numpy())
        ids += [i.decode() for i in x["id"].numpy()]
        bar.update(len(y))
    if not feats:
        return np.zeros((0,) + tuple(feature_model.output_shape[1:]), np.float32), np.zeros(0), np.zeros(0, object)
    return np.concatenate(feats), np.concatenate(labels), np.asarray(ids, dtype=object)


def _weights_fingerprint(model: keras.Model) -> str:
    # Cheap but specific: a hash of a few weight tensors' bytes and every shape.
    h = hashlib.sha256()
    ws = model.weights
    for w in ws:
        h.update(str(tuple(w.shape)).encode())
    for w in ws[:4] + ws[-4:]:
        h.update(np.asarray(w).tobytes())
    return h.hexdigest()[:16]


def cached(feature_model: keras.Model, records_dir: str, split: str, image_size: int, *, fold: int | None = None,
           flip: bool = False, batch_size: int = 64, cache_dir: str | None = None,
           dtype: str = "float32") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """extract() over a records split, cached under cache_dir keyed by the model's weights,
    its output, the split's shard checksums, image size and flip."""
    shards = split_shards(records_dir, split, fold)
    shas = sorted(sh["sha256"] for sh in shards)
    key = hashlib.sha256(json.dumps([feature_model.name, _weights_fingerprint(feature_model),
                                     list(feature_model.output_shape), image_size, flip, shas]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{feature_model.name}-{split}{'' if fold is None else fold}-{'flip-' if flip else ''}{key}.npz" \
        if cache_dir else None
    if path and path.exists():
        z = np.load(path, allow_pickle=False)
        return z["features"], z["labels"], z["ids"].astype(object)
    ds = pipeline.make_dataset(records_dir, split, image_size, batch_size, fold=fold, with_ids=True)
    total = sum(sh["count"] for sh in shards)
    feats, labels, ids = extract(feature_model, ds, total, desc=f"{feature_model.name} {split}{' flipped' if flip else ''}",
                                 flip=flip)
    feats = feats.astype(dtype)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, features=feats, labels=labels, ids=ids.astype(str))
        os.replace(tmp, path)
    return feats, labels, ids
