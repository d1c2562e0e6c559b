"""tf.data input pipeline: TFRecord shards (or image files) -> batches of float images.

Images come out as float32 RGB in 0..255, squashed to `image_size` x `image_size` (the
same geometry for training and evaluation; Kaggle's 200x200 set is squashed already).
Each backbone's preprocessing lives inside its model, so this module knows no backbone.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Callable, Iterator

import tensorflow as tf

from catdog_tf.data import manifest, schema
from catdog_tf.data.photos import check_file, Checked, stored_bytes
from catdog_tf.config import MAX_PIXELS

AUTOTUNE = tf.data.AUTOTUNE

_RATIOS = (8, 4, 2, 1)  # libjpeg's DCT scaling factors


def _scale(height: tf.Tensor, width: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(index into _RATIOS of the DCT scale to decode at, whether a side will still shrink).
    The largest ratio whose scaled short side still covers image_size is used."""
    short = tf.minimum(height, width)
    ok = tf.stack([short // r >= image_size for r in _RATIOS])  # ratios are descending
    index = tf.where(tf.reduce_any(ok), tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32), len(_RATIOS) - 1)
    ratio = tf.gather(tf.constant(_RATIOS, height.dtype), index)
    return index, (tf.maximum(height, width) + ratio - 1) // ratio > image_size  # libjpeg rounds up


def _decode(encoded: tf.Tensor, index: tf.Tensor, dct_method: str = "") -> tf.Tensor:
    return tf.switch_case(index, [lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r, dct_method=dct_method)
                                  for r in _RATIOS])


def decode_scaled(encoded: tf.Tensor, height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """The decode step of decode_resize alone: uint8 [h, w, 3] at the DCT scale it picks.

    libjpeg decodes large photos at 1/2, 1/4 or 1/8 scale straight from the DCT
    coefficients, which skips most of the work for large photos. A photo that will shrink
    is decoded with libjpeg's accurate integer IDCT (at full scale, PIL's decode to the
    pixel); one that will not keeps TensorFlow's default (INTEGER_FAST) IDCT.
    """
    index, shrinks = _scale(height, width, image_size)
    return tf.cond(shrinks, lambda: _decode(encoded, index, "INTEGER_ACCURATE"), lambda: _decode(encoded, index))


def decode_resize(encoded: tf.Tensor, height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG bytes (height x width as stored) -> float32 [image_size, image_size, 3] in 0..255.

    The decode of decode_scaled, then: while no side shrinks by more than 2x, a plain
    bilinear resize (its two taps per side still reach every source pixel; at exactly 2x it
    is the 2x2 average); beyond that, an area resize (a box filter) of the shrinking sides,
    then plain bilinear for a side that grows (area would be nearest-neighbour there). When
    no side shrinks, this is the plain decode and bilinear resize (kaggle200 photos upscaled to
    the model size keep their pixels).
    """
    index, shrinks = _scale(height, width, image_size)

    image = tf.cond(shrinks, lambda: resize_decoded(_decode(encoded, index, "INTEGER_ACCURATE"), image_size),
                    lambda: tf.image.resize(_decode(encoded, index), [image_size, image_size], method="bilinear"))
    return tf.reshape(image, [image_size, image_size, 3])


def resize_decoded(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """A decoded image [h, w, 3] -> float32 [image_size, image_size, 3], resized as
    decode_resize resizes (also for PNG/GIF/BMP in the serving graph)."""
    size = tf.shape(image)[:2]
    # Why not tf.image.resize(antialias=True): it costs more than the decode,
    # and the IDCT, not the filter, was most of the distance to PIL's antialiased resize.
    # Measured, with the candidates not kept: BENCHMARKS.md, section 1.
    return tf.cond(tf.reduce_max(size) > 2 * image_size,
                   lambda: _area_shrink(image, size, image_size),
                   lambda: tf.image.resize(image, [image_size, image_size], method="bilinear"))


def _area_shrink(image: tf.Tensor, size: tf.Tensor, image_size: int) -> tf.Tensor:
    """Area resize of the sides longer than image_size, then (when the other side is shorter,
    as a squashed wide photo's can be) plain bilinear for that side alone."""
    image = tf.image.resize(image, tf.minimum(size, image_size), method="area")
    return tf.cond(tf.reduce_any(size < image_size),
                   lambda: tf.image.resize(image, [image_size, image_size], method="bilinear"),
                   lambda: image)


def decode_stored(encoded: tf.Tensor, image_size: int, where: str = "records") -> tf.Tensor:
    """A photo records stored at exactly image_size x image_size (records --store_size): the
    decode alone, with the accurate IDCT, and no control flow (its pixels are Pillow's resize).
    A photo of another size (a manifest that lies) fails naming `where`."""
    image = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
    check = tf.debugging.assert_equal(
        tf.shape(image)[:2], [image_size, image_size],
        message=f"{where}: a photo is not stored at {image_size}x{image_size} as the manifest's store_size says; "
                "rebuild the records")
    with tf.control_dependencies([check]):
        return tf.reshape(tf.cast(image, tf.float32), [image_size, image_size, 3])


def record_decoder(records_dir: str, image_size: int) -> Callable:
    """(JPEG bytes, height, width) -> float image, as a records folder is decoded at image_size:
    decode_stored when its build stored every photo at exactly that size (--store_size), else
    decode_resize."""
    stored = manifest.stored_size(records_dir)
    if stored == image_size:
        return lambda encoded, height, width: decode_stored(encoded, image_size, records_dir)
    if stored and stored < image_size:
        print(f"warning: {records_dir} holds photos stored at {stored}x{stored} (--store_size); at {image_size} px "
              "they are upscaled, while a photo file would be resized from its own size", file=sys.stderr)
    return lambda encoded, height, width: decode_resize(encoded, height, width, image_size)


def parse(serialized: tf.Tensor, decode: Callable) -> dict:
    """decode: record_decoder's function for the records."""
    ex = schema.parse(serialized)
    return {
        "image": decode(ex["encoded"], ex["height"], ex["width"]),
        "id": ex["id"],
        "label": tf.cast(ex["label"], tf.float32),
    }


@dataclasses.dataclass(frozen=True)
class Read:
    """How make_dataset reads a split; the defaults read it once, in the manifest's order."""

    # Shuffle files and examples, and read shards in non-deterministic order for speed.
    # Otherwise the order is exactly the manifest's, every time.
    training: bool = False
    fold: int | None = None
    shuffle_buffer: int = 2048
    seed: int | None = None
    # True caches decoded images in memory, a path caches them on disk (worth it when the
    # decoded set fits and decoding is the bottleneck).
    cache: bool | str = False
    repeat: bool = False
    with_ids: bool = False
    drop_remainder: bool = False
    # From strategy.distribute_datasets_from_function: each input pipeline reads its own shards
    # (or its own examples when there are too few shards), and make_dataset's batch_size is the
    # global batch, divided per replica there.
    input_context: tf.distribute.InputContext | None = None
    batch_transform: Callable | None = None  # applied to each (images, labels) batch, e.g. MixUp
    # Leave out the photos on the build's exclusion list (manifest.excluded_ids); None: when
    # training. Evaluation scores every photo.
    skip_excluded: bool | None = None
    # (count, index): every count-th example from the index-th, in order (one worker's share of
    # an extraction or evaluation; example_ids() lists the whole order).
    shard: tuple[int, int] | None = None


def make_dataset(records_dir: str, split: str, image_size: int, batch_size: int,
                 read: Read = Read()) -> tf.data.Dataset:
    """Batches of (images, labels), or ({"image", "id"}, labels) with read.with_ids."""
    files = manifest.shard_files(records_dir, split, read.fold)
    if read.input_context is not None:
        batch_size = read.input_context.get_per_replica_batch_size(batch_size)
    ds = _examples(files, read)
    excluded = manifest.excluded_ids(records_dir) if (
        read.training if read.skip_excluded is None else read.skip_excluded) else []
    if excluded:
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(excluded), tf.ones(len(excluded), tf.int32)), default_value=0)
        ds = ds.filter(lambda s: table.lookup(schema.parse(s)["id"]) == 0)
    ds = _decoded(ds, record_decoder(records_dir, image_size), read)
    if read.repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=read.drop_remainder, num_parallel_calls=AUTOTUNE,
                  deterministic=not read.training)
    if not read.repeat and read.shard is None and read.input_context is None:
        # A dataset that knows its length (from the manifest): Keras shows a bar with an ETA
        # inside the epoch, and does not warn that the input "ran out of data".
        n = manifest.split_count(records_dir, split, read.fold, training=bool(excluded))
        ds = ds.apply(tf.data.experimental.assert_cardinality(n // batch_size if read.drop_remainder else
                                                              -(-n // batch_size)))
    return _finished(ds, read)


def _examples(files: list[str], read: Read) -> tf.data.Dataset:
    """The serialized examples of this input pipeline's (and shard's) share of `files`."""
    ctx = read.input_context
    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_examples = False
    if ctx is not None and ctx.num_input_pipelines > 1:
        if len(files) >= ctx.num_input_pipelines:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        else:
            shard_examples = True
    if read.training:
        ds = ds.shuffle(len(files), seed=read.seed, reshuffle_each_iteration=True)
    ds = _interleave(ds, len(files), read.training)
    if shard_examples:
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    if read.shard is not None:
        ds = ds.shard(*read.shard)
    if read.training and not read.cache:
        # Shuffle the serialized examples (~10-50 KB each), not decoded images (0.6 MB each
        # at 224, 1.1 MB at 299): the same randomness for ~20x less memory, and the first
        # batch waits for reading the buffer, not for decoding it (BENCHMARKS.md).
        ds = ds.shuffle(read.shuffle_buffer, seed=read.seed, reshuffle_each_iteration=True)
    return ds


def _decoded(examples: tf.data.Dataset, decode: Callable, read: Read) -> tf.data.Dataset:
    """Parsed examples with decoded images, cached (and then shuffled) as `read` says."""
    ds = examples.map(lambda s: parse(s, decode), num_parallel_calls=AUTOTUNE, deterministic=not read.training)
    if read.cache:
        ds = ds.cache(read.cache if isinstance(read.cache, str) else "")
        if read.training:  # after the cache, or every epoch would replay the first epoch's order
            ds = ds.shuffle(read.shuffle_buffer, seed=read.seed, reshuffle_each_iteration=True)
    return ds


def _finished(batches: tf.data.Dataset, read: Read) -> tf.data.Dataset:
    """Batches of parsed examples -> the (inputs, labels) pairs Keras reads, with the options."""
    if read.with_ids:
        ds = batches.map(lambda d: ({"image": d["image"], "id": d["id"]}, d["label"]))
    else:
        ds = batches.map(lambda d: (d["image"], d["label"]))
    if read.batch_transform is not None:
        ds = ds.map(read.batch_transform, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = not read.training
    # We shard by hand (input_context); Keras must not shard the files again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF \
        if read.input_context is not None else tf.data.experimental.AutoShardPolicy.AUTO
    return ds.with_options(options).prefetch(AUTOTUNE)


def _interleave(files: tf.data.Dataset, count: int, training: bool) -> tf.data.Dataset:
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(count, 16), num_parallel_calls=AUTOTUNE,
                            deterministic=not training)


def example_ids(records_dir: str, split: str, fold: int | None = None) -> list[str]:
    """The ids of a split in the order make_dataset yields its photos when not training."""
    return list(_ids(tuple(manifest.shard_files(records_dir, split, fold))))


@functools.lru_cache(maxsize=64)  # shard names carry their content's fingerprint: same names, same ids
def _ids(files: tuple[str, ...]) -> tuple[str, ...]:
    ds = _interleave(tf.data.Dataset.from_tensor_slices(list(files)), len(files), False)
    ds = ds.map(lambda s: schema.parse(s)["id"], num_parallel_calls=AUTOTUNE).batch(4096)
    return tuple(i.decode() for b in ds for i in b.numpy())


def encoded_dataset(encoded: Callable[[], Iterator[tuple[bytes, int, int]]], image_size: int,
                    batch_size: int) -> tf.data.Dataset:
    """Batches of float images from (JPEG bytes, height, width) triples, in order, decoded
    exactly as records are (evaluation, prediction, the outlier screen)."""
    spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))
    ds = tf.data.Dataset.from_generator(encoded, output_signature=spec)
    ds = ds.map(lambda b, h, w: decode_resize(b, h, w, image_size), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def photos_dataset(items: list[Checked], image_size: int, batch_size: int) -> tf.data.Dataset:
    """Checked photo files (records.check) as batches: the bytes records would store for each
    without --store_size (its own JPEG bytes, or its re-encoding), so a file and its record (of a
    build without --store_size) give the same pixels."""
    return encoded_dataset(lambda: ((stored_bytes(it), it.height, it.width) for it in items),
                           image_size, batch_size)


def files_dataset(paths: list[str], image_size: int, batch_size: int,
                  max_pixels: int = MAX_PIXELS) -> tf.data.Dataset:
    """Photo files in the order given; an unreadable one is a RecordsError naming it."""
    return photos_dataset([check_file(p, max_pixels) for p in paths], image_size, batch_size)
