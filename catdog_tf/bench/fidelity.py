"""Fidelity of a loader's images: the mean |error| (0..255 scale) against PIL's antialiased
resize of the full photo, `Image.open(photo).convert("RGB").resize((S, S), Image.BILINEAR)`
(Pillow widens its bilinear filter by the shrink factor, so it antialiases when it shrinks),
over every photo of the row's data set. Runs in a child process (TensorFlow, like rows.py),
as a row of its own, so that it does not touch the timed rows' memory figures.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from keras.src.legacy.preprocessing.image import ImageDataGenerator as LegacyImageDataGenerator

from catdog_tf.bench.measure import Clock
from catdog_tf.data import manifest, pipeline

AUTOTUNE = tf.data.AUTOTUNE


def reference(path: Path, size: int) -> np.ndarray:
    """PIL's antialiased resize of the whole photo, as float32 0..255."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)


def area_everywhere(encoded, height, width, size: int):
    """A candidate not kept: decode_resize with an area resize on every side that shrinks (not
    only beyond 2x), plain bilinear for a side that grows."""
    image = pipeline.decode_scaled(encoded, height, width, size)
    hw = tf.shape(image)[:2]

    def shrink():
        small = tf.image.resize(image, tf.minimum(hw, size), method="area")
        return tf.cond(tf.reduce_any(hw < size), lambda: tf.image.resize(small, [size, size]), lambda: small)

    image = tf.cond(tf.reduce_any(hw > size), shrink, lambda: tf.image.resize(image, [size, size]))
    return tf.reshape(image, [size, size, 3])


def per_image(loader: str, size: int):
    """The per-image function (JPEG bytes, height, width) -> float image of the in-memory
    loaders, or None for a loader that is not one of them."""
    if loader == "area":
        return lambda e, h, w: area_everywhere(e, h, w, size)
    if loader == "limit-noaa":  # full-size decode, plain (aliasing) bilinear resize
        return lambda e, h, w: tf.image.resize(tf.io.decode_jpeg(e, channels=3), [size, size])
    return None


def _images(loader: str, size: int, records_dir: str | None, classes: str | None, batch: int = 32):
    """(photo id, float image) of a loader, every photo once, deterministically."""
    fn = per_image(loader, size)
    if fn is not None:
        ex = list(manifest.read_examples(records_dir, "train"))
        ds = tf.data.Dataset.from_tensor_slices(([e["encoded"] for e in ex], [e["height"] for e in ex],
                                                 [e["width"] for e in ex]))
        ds = ds.map(fn, num_parallel_calls=AUTOTUNE).batch(batch)
        ids = iter(e["id"] for e in ex)
        for b in ds:
            for x in b.numpy():
                yield next(ids), x
    elif loader == "ours":  # the real pipeline, in the manifest's order
        for x, _ in pipeline.make_dataset(records_dir, "train", size, batch, pipeline.Read(with_ids=True)):
            for i, im in zip(x["id"].numpy(), x["image"].numpy()):
                yield i.decode(), im
    elif loader == "idfd":
        ds = keras.utils.image_dataset_from_directory(classes, label_mode=None, image_size=(size, size),
                                                      batch_size=batch, shuffle=False, verbose=False)
        paths = iter(ds.file_paths)
        for b in ds:
            for x in b.numpy():
                yield Path(next(paths)).stem, x
    elif loader == "idg":  # its resize (nearest-neighbour, PIL) without the random augmentation
        it = LegacyImageDataGenerator().flow_from_directory(classes, target_size=(size, size), batch_size=batch,
                                                            class_mode=None, shuffle=False)
        names = iter(it.filenames)
        for _ in range(len(it)):
            for x in next(it):
                yield Path(next(names)).stem, x
    else:
        raise ValueError(f"no fidelity for loader {loader!r}")


def row_fidelity(size: int, flat: str, specs: dict, limit: int | None = None) -> dict:
    """specs: key -> dict(loader=..., records=..., classes=...). Returns summarize()-style
    figures of the reference computation (so the row reads like the others) plus
    `fidelity`: key -> mean |error| over the photos, and `photos`."""
    by_id = {p.stem: p for p in Path(flat).iterdir()}
    refs: dict[str, np.ndarray] = {}
    clock = Clock(sorted(by_id)[:limit], count=lambda _: 1)
    for i in clock:
        refs[i] = reference(by_id[i], size)
    out = {}
    for key, spec in specs.items():
        errs = [float(np.abs(x - refs[i]).mean()) for i, x in _images(spec["loader"], size, spec.get("records"),
                                                                       spec.get("classes")) if i in refs]
        if len(errs) != len(refs):
            raise RuntimeError(f"fidelity {key}: {len(errs)} of {len(refs)} photos matched")
        out[key] = float(np.mean(errs))
    return {**clock.summary(0, max(1, len(refs) // 3)), "fidelity": out, "photos": len(refs)}
