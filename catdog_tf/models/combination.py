"""The ensemble's combination rule, written once for every array backend.

Members' P(dog) [n, m] -> one P(dog): P clipped to [eps, 1 - eps], a weighted average (weights
normalized to sum 1) in probability or logit space, optionally a per-photo hedge on the
ImageNet [cat, dog] mass, then a temperature, then optionally a label-noise floor. Three callers run it with their own arithmetic:
NumPy in float64 where the rule is fitted (inference.ensembling), keras.ops in float32 inside
the exported graph (layers.CombineProbabilities) and standard Keras layers for serving
(inference.serving). The test that they agree is tests/test_combination.py.

The hedge (b0, b_animal, b_both) multiplies the combined logit z by
exp(b0 + b_animal * (cat + dog) + b_both * cat * dog): a learned temperature per photo, which
can pull a photo with no animal (a logo, a poster) or with both toward 0.5.

The floor eps maps P to eps + (1 - 2 eps) P: a few training and test labels are wrong, so no
prediction should be surer than the labels are right; it caps one photo's loss at -log(eps).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from catdog_tf import metrics
from catdog_tf.metrics import LOGIT_EPS

SPACES = ("prob", "logit")


@dataclasses.dataclass(frozen=True)
class Rule:
    weights: tuple[float, ...]
    space: str = "logit"
    temperature: float = 1.0
    hedge: tuple[float, float, float] | None = None
    floor: float = 0.0

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"space must be 'prob' or 'logit', not {self.space!r}")
        if not 0 <= self.floor < 0.5:
            raise ValueError(f"the floor must be in [0, 0.5), not {self.floor}")


def combine(ops, p, rule: Rule, masses=None):
    """The combined P(dog) of member probabilities `p` [n, m] (`masses` [n, 2] with a hedge)."""
    w = ops.weights(rule.weights)
    p = ops.clip(p)
    if rule.space == "prob":
        z = ops.logit(ops.clip(ops.weighted(p, w)))
    else:
        z = ops.weighted(ops.logit(p), w)
    if rule.hedge is not None:
        z = ops.mul(z, hedge_scale(ops, rule.hedge, masses))
    return ops.floor(ops.sigmoid(ops.div(z, rule.temperature)), rule.floor)


def hedge_scale(ops, hedge, masses):
    """exp(b0 + b_animal * (cat + dog) + b_both * cat * dog) per photo."""
    b0, b_animal, b_both = hedge
    cat, dog = ops.column(masses, 0), ops.column(masses, 1)
    g = ops.add(ops.shift(ops.scale(ops.add(cat, dog), b_animal), b0), ops.mul(ops.scale(cat, b_both), dog))
    return ops.exp(g)


class NumpyOps:
    """float64 arrays; P [n, m] -> [n]."""

    @staticmethod
    def weights(w):
        return np.asarray(w, np.float64) / sum(w)

    @staticmethod
    def clip(p):
        return np.clip(np.asarray(p, np.float64), LOGIT_EPS, 1 - LOGIT_EPS)

    logit = staticmethod(metrics.logit)
    sigmoid = staticmethod(metrics.sigmoid)
    exp = staticmethod(np.exp)

    @staticmethod
    def weighted(x, w):
        return x @ w

    @staticmethod
    def column(m, i):
        return np.asarray(m, np.float64)[:, i]

    add, mul, div = np.add, np.multiply, np.divide
    scale, shift = mul, add

    @staticmethod
    def floor(p, eps):
        return eps + (1 - 2 * eps) * p if eps else p


class TensorOps:
    """keras.ops on float32 tensors, inside a layer's call; P [n, m] -> [n, 1]."""

    @staticmethod
    def weights(w):
        return keras.ops.convert_to_tensor(np.asarray(w, np.float32) / sum(w))

    @staticmethod
    def clip(p):
        return keras.ops.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)

    @staticmethod
    def logit(p):
        return keras.ops.log(p) - keras.ops.log(1 - p)

    @staticmethod
    def weighted(x, w):
        return keras.ops.sum(x * w, axis=-1, keepdims=True)

    @staticmethod
    def column(m, i):
        return m[:, i:i + 1]

    sigmoid = staticmethod(keras.ops.sigmoid)
    exp = staticmethod(keras.ops.exp)
    add, mul, div = staticmethod(keras.ops.add), staticmethod(keras.ops.multiply), staticmethod(keras.ops.divide)
    scale, shift = mul, add

    @staticmethod
    def floor(p, eps):
        return eps + (1 - 2 * eps) * p if eps else p


# Clipping P to [eps, 1 - eps] is clamping its logit at +-LOGIT_CLAMP.
LOGIT_CLAMP = float(np.log((1 - LOGIT_EPS) / LOGIT_EPS))


class LayerOps:
    """Standard Keras layers on symbolic tensors, for a model that loads without this package.

    Each member arrives as its logit (its head without the sigmoid: sigmoid then logit would
    lose precision), so `clip` clamps the logit and `logit` is the identity. Only the logit
    space has this form; `weighted` takes the member list and is a fixed Dense."""

    def __init__(self, name: str):
        self.name = name
        self._k = 0

    def _n(self, what: str) -> str:
        self._k += 1
        return f"{self.name}_{what}{self._k}"

    @staticmethod
    def weights(w):
        return (np.asarray(w, np.float64) / sum(w)).astype(np.float32)

    def clip(self, logits):
        out = []
        for z in logits:  # clamp(z, -c, c): a capped ReLU of (z + c), shifted back
            z = keras.layers.Rescaling(1.0, LOGIT_CLAMP, name=self._n("shift"))(z)
            z = keras.layers.ReLU(max_value=2 * LOGIT_CLAMP, name=self._n("clamp"))(z)
            out.append(keras.layers.Rescaling(1.0, -LOGIT_CLAMP, name=self._n("unshift"))(z))
        return out

    @staticmethod
    def logit(logits):
        return logits

    def weighted(self, logits, w):
        z = keras.layers.Concatenate(name=self._n("logits"))(logits) if len(logits) > 1 else logits[0]
        return fixed_dense(z, np.reshape(w, (-1, 1)), name=self._n("weights"))

    def column(self, m, i):
        return fixed_dense(m, np.eye(2)[:, i:i + 1], name=self._n(("cat", "dog")[i]))

    def add(self, a, b):
        return keras.layers.Add(name=self._n("add"))([a, b])

    def mul(self, a, b):
        return keras.layers.Multiply(name=self._n("mul"))([a, b])

    def scale(self, x, c):
        return keras.layers.Rescaling(float(c), name=self._n("scale"))(x)

    def shift(self, x, c):
        return keras.layers.Rescaling(1.0, float(c), name=self._n("shift"))(x)

    def div(self, x, c):
        return keras.layers.Rescaling(1.0 / float(c), name=self._n("temperature"))(x)

    def exp(self, x):
        return keras.layers.Activation("exponential", dtype="float32", name=self._n("exp"))(x)

    def sigmoid(self, x):
        return keras.layers.Activation("sigmoid", dtype="float32", name=self._n("sigmoid"))(x)

    def floor(self, p, eps):  # the last step, named as the layer it rewrites (identity at eps 0)
        return keras.layers.Rescaling(1 - 2 * float(eps), float(eps), dtype="float32", name=self.name)(p)


def fixed_dense(x, kernel, name=None, *, dtype="float32", trainable=True):
    """A bias-free Dense layer with the given, untrained weights (`dtype=None`: the policy's)."""
    dense = keras.layers.Dense(np.shape(kernel)[1], use_bias=False, dtype=dtype, trainable=trainable, name=name)
    y = dense(x)
    dense.set_weights([np.asarray(kernel, np.float32)])
    return y


NUMPY = NumpyOps()
TENSOR = TensorOps()
