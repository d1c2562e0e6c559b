"""The new head and the pooled-feature models it sits on.

    image -> backbone -> pooling -> [pooled features] -> head: dropout, Dense(1, sigmoid)

The head is its own small model so that the same layers can be trained on cached pooled
features (the fast path on a CPU) and then run on top of the backbone in the exported model.
It is linear in the pooled features, so the mean of several heads' weights is exactly the
mean of their logits (`average_heads`).
"""

from __future__ import annotations

import keras
import numpy as np

from catdog_tf.config import GEM_P, POOLINGS
from catdog_tf.models import registry
from catdog_tf.models.layers import FlipLeftRight, GeneralizedMeanPooling2D


def feature_model_name(backbone: str, image_size: int, output: str = "avg") -> str:
    """The name of a frozen feature model: it keys the feature cache, so every builder uses this."""
    return f"{backbone}_{image_size}_{output}"


def build_head(feature_dim: int, dropout: float, seed: int | None = None) -> keras.Model:
    inputs = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(inputs)
    # float32 output even under mixed precision: log loss needs the precision.
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_dog")(x)
    return keras.Model(inputs, outputs, name="head")


def make_pooling(kind: str) -> keras.layers.Layer:
    if kind == "avg":
        return keras.layers.GlobalAveragePooling2D(name="pool")
    if kind == "gem":
        return GeneralizedMeanPooling2D(p=GEM_P, name="pool")
    if kind == "flatten":
        return keras.layers.Flatten(name="pool")
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {kind!r}")


def pool(backbone_model: keras.Model, backbone: str, pooling: str = "avg",
         pooling_layer: keras.layers.Layer | None = None) -> keras.Model:
    """backbone -> pooling as one model, named for the feature cache."""
    size = int(backbone_model.input_shape[1])
    layer = pooling_layer or make_pooling(pooling)
    return keras.Model(backbone_model.input, layer(backbone_model.output),
                       name=feature_model_name(backbone, size, pooling))


def pooled_model(backbone: str, weights="auto", image_size: int | None = None, pooling: str = "avg") -> keras.Model:
    """A new frozen backbone + pooling: the feature extractor of k-fold members and fusion."""
    return pool(registry.build_backbone(backbone, weights=weights, include_top=False, image_size=image_size),
                backbone, pooling)


def imagenet_classifier(backbone: str, weights="auto", image_size: int | None = None,
                        name: str | None = None) -> keras.layers.Dense | None:
    """The backbone's own ImageNet classifier as it sits on the average-pooled features
    (a Dense named 'predictions', dropout aside), or None when the backbone has none or its
    weights are not on this machine. Gives the ImageNet cat and dog mass of cached features."""
    if weights in (None, "none"):
        return None
    try:
        full = registry.build_backbone(backbone, weights=weights, include_top=True, image_size=image_size)
    except (OSError, ValueError):  # WeightsUnavailableError is an OSError
        return None
    try:
        top = full.get_layer("predictions")
    except ValueError:
        return None
    if not isinstance(top, keras.layers.Dense) or int(top.kernel.shape[0]) != registry.get(backbone).feature_size:
        return None
    dense = keras.layers.Dense(int(top.units), activation="softmax", name=name or f"imagenet_{backbone}")
    dense.build((None, int(top.kernel.shape[0])))
    dense.set_weights(top.get_weights())
    return dense


def average_heads(heads: list[keras.Model]) -> keras.Model:
    """One head whose weights are the mean of the heads' (all linear, dropout aside): its
    logit is exactly the mean of their logits."""
    avg = keras.models.clone_model(heads[0])
    avg.set_weights([np.mean(ws, axis=0) for ws in zip(*(h.get_weights() for h in heads))])
    return avg


def split_pooled_head(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """(image -> pooled features model, head) of a model pooled_head_model built, else None: the
    ensemble reuses the pooled features for the ImageNet classifier."""
    head = model.layers[-1]
    try:
        feats = model.get_layer(FEATURES_LAYER).output
    except ValueError:  # built before the layer was named: image -> pooled model -> head
        inner = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        if len(inner) != 2 or not all(isinstance(m, keras.Model) for m in inner) or \
                inner[0].input_shape != model.input_shape:
            return None
        return inner[0], head
    if not isinstance(head, keras.Model) or tuple(feats.shape[1:]) != tuple(head.input_shape[1:]):
        return None
    return keras.Model(model.input, feats, name=f"{model.name}_features"), head


FEATURES_LAYER = "pooled_features"


def pooled_head_model(pooled_models: list[keras.Model], head: keras.Model, name: str,
                      mirror: bool = False) -> keras.Model:
    """One graph: image batch at the largest backbone's size -> per-backbone resize
    (antialiased bilinear) -> pooled features, concatenated when several
    -> head. The export of k-fold members and of feature fusion.

    mirror: the features of the image and of its mirror image are averaged before the head,
    which (the head being linear) averages the two logits: flip test-time augmentation."""
    size = max(int(m.input_shape[1]) for m in pooled_models)
    inputs = keras.Input((size, size, 3), name="image")
    feats = []
    for k, m in enumerate(pooled_models):
        s = int(m.input_shape[1])
        z = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        f = m(z, training=False)
        if mirror:
            f = keras.layers.Average(name=f"mirror_average{k}")([f, m(FlipLeftRight(name=f"mirror{k}")(z),
                                                                    training=False)])
        feats.append(f)
    z = feats[0] if len(feats) == 1 else keras.layers.Concatenate(name="fused")(feats)
    z = keras.layers.Identity(name=FEATURES_LAYER)(z)
    return keras.Model(inputs, head(z), name=name)
