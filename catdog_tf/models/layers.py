"""The package's own Keras layers, registered so a saved model.keras loads them by name.

    ImagePreprocess        per-channel affine normalization in front of a backbone
    CombineProbabilities   the ensemble's combination rule (models.combination) in the graph
    FlipLeftRight          the mirror image (test-time augmentation inside a model)
    GeneralizedMeanPooling2D  GeM pooling of a feature map (k-fold members' --pooling=gem)
"""

from __future__ import annotations

import keras

from catdog_tf.models import combination


@keras.saving.register_keras_serializable(package="catdog_tf")
class ImagePreprocess(keras.layers.Layer):
    """Per-channel affine normalization (optionally RGB->BGR) with no weights.

    No weights on purpose: keras.applications load legacy .h5 files by the order
    of weighted layers, so this layer must not shift that order.
    """

    def __init__(self, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), bgr=False, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.bgr = bool(bgr)

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        if self.bgr:
            x = keras.ops.flip(x, axis=-1)
        mean = keras.ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        inv_std = keras.ops.convert_to_tensor([1.0 / s for s in self.std], dtype=self.compute_dtype)
        return (x - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std), "bgr": self.bgr}


@keras.saving.register_keras_serializable(package="catdog_tf")
class CombineProbabilities(keras.layers.Layer):
    """The ensemble's combination rule (models.combination) as one layer: member P(dog)s, and
    with `hedge` a last input of the photo's ImageNet [cat, dog] mass, -> the combined P(dog)."""

    def __init__(self, member_weights, space: str = "logit", temperature: float = 1.0, hedge=None,
                 floor: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rule = combination.Rule(tuple(float(w) for w in member_weights), space, float(temperature),
                                     None if hedge is None else tuple(float(v) for v in hedge), float(floor))
        self.member_weights = list(self.rule.weights)
        self.space = space
        self.temperature = self.rule.temperature
        self.hedge = None if hedge is None else list(self.rule.hedge)
        self.floor = self.rule.floor

    def call(self, inputs):
        ops = keras.ops
        inputs = list(inputs)
        masses = ops.cast(inputs.pop(), "float32") if self.hedge is not None else None
        p = ops.concatenate([ops.cast(ops.reshape(x, (-1, 1)), "float32") for x in inputs], axis=-1)
        return combination.combine(combination.TENSOR, p, self.rule, masses)

    def get_config(self):
        return {**super().get_config(), "member_weights": self.member_weights, "space": self.space,
                "temperature": self.temperature, "hedge": self.hedge, "floor": self.floor}


@keras.saving.register_keras_serializable(package="catdog_tf")
class FlipLeftRight(keras.layers.Layer):
    """Images [N, H, W, C] mirrored left to right, always (not a random augmentation)."""

    def call(self, x):
        return keras.ops.flip(x, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="catdog_tf")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """GeM pooling (Radenovic et al. 2018): (mean over locations of x^p)^(1/p) per channel, on
    [N, H, W, C] -> [N, C]. p = 1 is average pooling and p -> inf max pooling; in between, the
    strongest locations weigh more without one location deciding alone. Inputs are clipped at
    `eps` first (the backbones' last activations are ReLU6, so only zeros are moved)."""

    def __init__(self, p: float, eps: float = 1e-6, **kwargs):  # p: the package's is config.GEM_P
        super().__init__(**kwargs)
        if not p >= 1:
            raise ValueError(f"GeM pooling needs p >= 1, not {p}")
        self.p = float(p)
        self.eps = float(eps)

    def call(self, x):
        ops = keras.ops
        x = ops.power(ops.maximum(ops.cast(x, "float32"), self.eps), self.p)
        return ops.cast(ops.power(ops.mean(x, axis=(1, 2)), 1.0 / self.p), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "p": self.p, "eps": self.eps}
