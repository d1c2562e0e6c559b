"""The record format, once: one tf.train.Example per photo.

    image/encoded  bytes   the photo's JPEG bytes (the original file's, unless it had to be converted)
    image/id       bytes   "cat.123", "dog.7" or "42" (test)
    image/label    int64   0 cat, 1 dog, -1 unlabeled
    image/height   int64   height of the stored JPEG
    image/width    int64
    image/fold     int64   cross-validation fold, -1 when not in fold mode

The writer (`encode`), the tf.data parser (`parse`) and the Python reader (`to_python`)
all live here, so a change to the format touches one module.
"""

from __future__ import annotations

import tensorflow as tf

FORMAT = "catdog_tf.records/1"

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.string),
    "image/label": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def encode(*, encoded: bytes, id: str, label: int, height: int, width: int, fold: int) -> bytes:
    """One serialized Example."""

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(encoded),
        "image/id": b(id.encode()),
        "image/label": i(label),
        "image/height": i(height),
        "image/width": i(width),
        "image/fold": i(fold),
    })).SerializeToString(deterministic=True)  # map order fixed: equal examples, equal shard bytes


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """tf.data side: a serialized Example -> its tensors, keyed by the short names."""
    ex = tf.io.parse_single_example(serialized, FEATURES)
    return {k.split("/", 1)[1]: v for k, v in ex.items()}


def to_python(raw: bytes) -> dict:
    """Python side: a serialized Example -> a dict of Python values (tools and tests).
    Raises ValueError when the bytes are not an Example of this format."""
    try:
        f = tf.train.Example.FromString(raw).features.feature
        return {
            "id": f["image/id"].bytes_list.value[0].decode("utf-8", "replace"),
            "label": int(f["image/label"].int64_list.value[0]),
            "height": int(f["image/height"].int64_list.value[0]),
            "width": int(f["image/width"].int64_list.value[0]),
            "fold": int(f["image/fold"].int64_list.value[0]) if "image/fold" in f else -1,
            "encoded": f["image/encoded"].bytes_list.value[0],
        }
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError, IndexError, KeyError
        raise ValueError(f"not a {FORMAT} example: {type(e).__name__}: {e}") from None
