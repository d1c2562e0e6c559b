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

from catdog_tf.models import backbones


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
    if kind == "flatten":
        return keras.layers.Flatten(name="pool")
    raise ValueError(f"pooling must be 'avg' or 'flatten', not {kind!r}")


def pool(backbone_model: keras.Model, backbone: str, pooling: str = "avg",
         pooling_layer: keras.layers.Layer | None = None) -> keras.Model:
    """backbone -> pooling as one model, named for the feature cache."""
    size = int(backbone_model.input_shape[1])
    layer = pooling_layer or make_pooling(pooling)
    return keras.Model(backbone_model.input, layer(backbone_model.output),
                       name=feature_model_name(backbone, size, pooling))


def pooled_model(backbone: str, weights="auto", image_size: int | None = None, pooling: str = "avg") -> keras.Model:
    """A new frozen backbone + pooling: the feature extractor of k-fold members and fusion."""
    return pool(backbones.build_backbone(backbone, weights=weights, include_top=False, image_size=image_size),
                backbone, pooling)


def average_heads(heads: list[keras.Model]) -> keras.Model:
    """One head whose weights are the mean of the heads' (all linear, dropout aside): its
    logit is exactly the mean of their logits."""
    avg = keras.models.clone_model(heads[0])
    avg.set_weights([np.mean(ws, axis=0) for ws in zip(*(h.get_weights() for h in heads))])
    return avg


def pooled_head_model(pooled_models: list[keras.Model], head: keras.Model, name: str) -> keras.Model:
    """One graph: image batch at the largest backbone's size -> per-backbone resize
    (antialiased bilinear, as the pipeline) -> pooled features, concatenated when several
    -> head. The export of k-fold members and of feature fusion."""
    size = max(int(m.input_shape[1]) for m in pooled_models)
    inputs = keras.Input((size, size, 3), name="image")
    feats = []
    for k, m in enumerate(pooled_models):
        s = int(m.input_shape[1])
        z = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        feats.append(m(z, training=False))
    z = feats[0] if len(feats) == 1 else keras.layers.Concatenate(name="fused")(feats)
    return keras.Model(inputs, head(z), name=name)
