"""tf.data input pipeline: TFRecord shards (or image files) -> batches of float images.

Images come out as float32 RGB in 0..255, squashed to `image_size` x `image_size` (the
same geometry for training and evaluation; Kaggle's 200x200 set is squashed already).
Each backbone's preprocessing lives inside its model, so this module knows no backbone.
"""

from __future__ import annotations

from typing import Callable, Iterator

import tensorflow as tf

from catdog_tf.data import records, schema

AUTOTUNE = tf.data.AUTOTUNE

_RATIOS = (8, 4, 2, 1)  # libjpeg's DCT scaling factors


def decode_resize(encoded: tf.Tensor, height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG bytes -> float32 [image_size, image_size, 3] in 0..255.

    Decoding and downscaling are fused: libjpeg decodes large photos at 1/2, 1/4 or 1/8
    scale straight from the DCT coefficients when the result is still >= image_size on
    both sides, which skips most of the work for native-size photos.

    The antialiased resize (2-3x the cost of a plain bilinear one, more than the decode
    itself for 200 px photos) runs only when a side shrinks: when both sides grow or stay,
    antialiasing changes nothing (same output to float rounding), so the plain one is used.
    """
    short = tf.minimum(height, width)
    branches = [lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in _RATIOS]
    # First ratio whose scaled short side still covers image_size (ratios are descending).
    ok = tf.stack([short // r >= image_size for r in _RATIOS])
    index = tf.where(tf.reduce_any(ok), tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32), len(_RATIOS) - 1)
    image = tf.switch_case(index, branches)
    shrinks = tf.reduce_any(tf.shape(image)[:2] > image_size)
    image = tf.cond(shrinks,
                    lambda: tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True),
                    lambda: tf.image.resize(image, [image_size, image_size], method="bilinear"))
    return tf.reshape(image, [image_size, image_size, 3])


def parse(serialized: tf.Tensor, image_size: int) -> dict:
    ex = schema.parse(serialized)
    return {
        "image": decode_resize(ex["encoded"], ex["height"], ex["width"], image_size),
        "id": ex["id"],
        "label": tf.cast(ex["label"], tf.float32),
    }


def make_dataset(
    records_dir: str,
    split: str,
    image_size: int,
    batch_size: int,
    *,
    training: bool = False,
    fold: int | None = None,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    cache: bool | str = False,
    repeat: bool = False,
    with_ids: bool = False,
    drop_remainder: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    batch_transform=None,
) -> tf.data.Dataset:
    """Batches of (images, labels), or ({"image", "id"}, labels) with with_ids.

    training: shuffles files and examples, reads shards in non-deterministic order for
        speed. Otherwise the order is exactly the manifest's, every time.
    cache: True caches decoded images in memory, a path caches them on disk (worth it
        when the decoded set fits and decoding is the bottleneck).
    input_context: from strategy.distribute_datasets_from_function; each input pipeline
        reads its own shards (or its own examples when there are too few shards) and
        batch_size is the global batch, divided per replica here.
    batch_transform: a function applied to each (images, labels) batch, e.g. MixUp.
    """
    files = records.shard_files(records_dir, split, fold)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_examples = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_examples = True
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                       num_parallel_calls=AUTOTUNE, deterministic=not training)
    if shard_examples:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training and not cache:
        # Shuffle the serialized examples (~10-50 KB each), not decoded images (0.6 MB each
        # at 224, 1.1 MB at 299): the same randomness for ~20x less memory, and the first
        # batch waits for reading the buffer, not for decoding it (BENCHMARKS.md).
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda s: parse(s, image_size), num_parallel_calls=AUTOTUNE, deterministic=not training)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if training:  # after the cache, or every epoch would replay the first epoch's order
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=not training)
    if with_ids:
        ds = ds.map(lambda d: ({"image": d["image"], "id": d["id"]}, d["label"]))
    else:
        ds = ds.map(lambda d: (d["image"], d["label"]))
    if batch_transform is not None:
        ds = ds.map(batch_transform, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = not training
    # We shard by hand above (input_context); Keras must not shard the files again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF \
        if input_context is not None else tf.data.experimental.AutoShardPolicy.AUTO
    return ds.with_options(options).prefetch(AUTOTUNE)


def encoded_dataset(encoded: Callable[[], Iterator[tuple[bytes, int, int]]], image_size: int,
                    batch_size: int) -> tf.data.Dataset:
    """Batches of float images from (JPEG bytes, height, width) triples, in order, decoded
    exactly as records are (evaluation, prediction, the outlier screen)."""
    spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))
    ds = tf.data.Dataset.from_generator(encoded, output_signature=spec)
    ds = ds.map(lambda b, h, w: decode_resize(b, h, w, image_size), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def photos_dataset(items: list[records.Checked], image_size: int, batch_size: int) -> tf.data.Dataset:
    """Checked photo files (records.check) as batches: the bytes records would store for each
    (its own JPEG bytes, or its re-encoding), so a file and its record give the same pixels."""
    return encoded_dataset(lambda: ((records.stored_bytes(it), it.height, it.width) for it in items),
                           image_size, batch_size)


def files_dataset(paths: list[str], image_size: int, batch_size: int,
                  max_pixels: int = records.DEFAULT_MAX_PIXELS) -> tf.data.Dataset:
    """Photo files in the order given; an unreadable one is a RecordsError naming it."""
    return photos_dataset([records.check_file(p, max_pixels) for p in paths], image_size, batch_size)
