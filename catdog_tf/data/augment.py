"""Augmentation policies as Keras 3 preprocessing layers.

Image policies are a keras.Sequential placed inside the model right after the input, so
they run on the accelerator as part of the training step and are inactive at inference
(Keras random layers only act when training=True). MixUp and CutMix also mix labels, so
they are batch transforms applied to (images, labels) in the tf.data pipeline.

keras-cv is not used: Keras 3 ships every layer needed here (see BUILD.md).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from catdog_tf.config import AUGMENTATIONS as POLICIES
from catdog_tf.config import BATCH_POLICIES


def build_augmentation(policy: str = "reference", seed: int | None = None) -> keras.Sequential | None:
    """Image augmentation for float images in 0..255; None for policy 'none'.

    reference: the original Kaggle recipe (ImageDataGenerator with rotation_range=40,
    width/height shift 0.2, zoom 0.2, horizontal flip).
    """
    if policy == "none":
        return None
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    if policy == "flip":
        return keras.Sequential([flip], name="augment")
    reference = [
        flip,
        keras.layers.RandomRotation(40 / 360, fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(0.2, 0.2, fill_mode="reflect", seed=seed),
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="reflect", seed=seed),
    ]
    if policy == "reference":
        return keras.Sequential(reference, name="augment")
    if policy == "randaugment":
        return keras.Sequential(
            [flip, keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed)],
            name="augment")
    raise ValueError(f"unknown augmentation policy {policy!r}; choose from {POLICIES}")


def batch_transform(policy: str = "none", seed: int | None = None):
    """A function (images, labels) -> (images, labels) for the tf.data pipeline, or None."""
    if policy == "none":
        return None
    if policy == "mixup":
        layer = keras.layers.MixUp(alpha=0.2, seed=seed)
    elif policy == "cutmix":
        layer = keras.layers.CutMix(factor=1.0, seed=seed)
    else:
        raise ValueError(f"unknown batch policy {policy!r}; choose from {BATCH_POLICIES}")

    def transform(images, labels):
        # The layers mix one-hot style label tensors; keep our [batch] float labels.
        out = layer({"images": images, "labels": tf.reshape(labels, [-1, 1])}, training=True)
        return out["images"], tf.reshape(out["labels"], [-1])

    return transform
