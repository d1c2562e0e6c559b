"""The classifier: ImageNet backbone + new head (pooling, dropout, one sigmoid unit).

    image (float 0..255) -> [augmentation] -> backbone (own preprocessing inside, BatchNorm
    always in inference mode) -> pooling (avg, gem or flatten) -> head (dropout, Dense(1, sigmoid, float32))
"""

from __future__ import annotations

import dataclasses

import keras

from catdog_tf.data import augment
from catdog_tf.models import registry
from catdog_tf.models.head import build_head, make_pooling, pool


@dataclasses.dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    weights: str | None = "auto"
    image_size: int | None = None  # None: the backbone's own input size
    pooling: str = "avg"  # "avg" or "flatten"
    dropout: float = 0.2
    augmentation: str = "reference"  # catdog_tf.data.augment policy inside the model
    seed: int | None = None


@dataclasses.dataclass
class Classifier:
    """The pieces training needs; `model` is the full trainable model."""

    model: keras.Model
    backbone: keras.Model
    pooling: keras.layers.Layer
    head: keras.Model
    image_size: int
    config: ModelConfig

    def inference_model(self) -> keras.Model:
        """The same layers without augmentation: what gets exported."""
        inputs = keras.Input((self.image_size, self.image_size, 3), name="image")
        x = self.backbone(inputs, training=False)
        outputs = self.head(self.pooling(x))
        return keras.Model(inputs, outputs, name=self.model.name)

    def pooled(self) -> keras.Model:
        """backbone -> pooling, sharing this classifier's layers: the stage-1 feature model."""
        return pool(self.backbone, self.config.backbone, self.config.pooling, self.pooling)


def build_classifier(cfg: ModelConfig) -> Classifier:
    spec = registry.get(cfg.backbone)
    size = cfg.image_size or spec.input_size
    backbone = registry.build_backbone(cfg.backbone, weights=cfg.weights, include_top=False, image_size=size)
    backbone.trainable = False
    pooling = make_pooling(cfg.pooling)
    feature_dim = int(pooling.compute_output_shape(backbone.output_shape)[-1])
    head = build_head(feature_dim, cfg.dropout, cfg.seed)

    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    aug = augment.build_augmentation(cfg.augmentation, seed=cfg.seed)
    if aug is not None:
        x = aug(x)
    # training=False pins BatchNorm to inference mode in both stages, even once unfrozen:
    # the small cats-vs-dogs batches would otherwise wreck the ImageNet statistics.
    x = backbone(x, training=False)
    outputs = head(pooling(x))
    model = keras.Model(inputs, outputs, name=f"catdog_{cfg.backbone}")
    return Classifier(model, backbone, pooling, head, size, cfg)
