"""The package's own Keras layers: GeM pooling, its standard-Keras rewrite and the k-fold option."""

import numpy as np
import keras
import pytest

from catdog_tf.config import GEM_P, KFoldConfig
from catdog_tf.errors import UserError
from catdog_tf.inference import serving
from catdog_tf.models.blocks import all_layers
from catdog_tf.models.head import make_pooling
from catdog_tf.models.layers import GeneralizedMeanPooling2D


def _maps(seed=0, shape=(3, 5, 4, 7)):
    # ReLU6-like maps: zeros (dead units) and values up to 6, as the backbones' last activations.
    x = np.random.default_rng(seed).uniform(-2, 6, shape).astype("float32")
    return np.maximum(x, 0)


def test_gem_is_the_generalized_mean_between_average_and_max():
    x = _maps()
    for p in (1.0, 2.0, 3.0):
        want = np.mean(np.maximum(x, 1e-6) ** p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(GeneralizedMeanPooling2D(p)(x), want, rtol=1e-5)
    avg = np.mean(x, axis=(1, 2))
    np.testing.assert_allclose(GeneralizedMeanPooling2D(1.0)(x), avg, atol=1e-5)
    g = np.asarray(GeneralizedMeanPooling2D(GEM_P)(x))
    assert np.all(g >= avg - 1e-5) and np.all(g <= x.max(axis=(1, 2)) + 1e-5)
    assert make_pooling("gem").p == GEM_P
    with pytest.raises(ValueError, match="p >= 1"):
        GeneralizedMeanPooling2D(0.5)


def test_gem_survives_save_and_load(tmp_path):
    inputs = keras.Input((5, 4, 7))
    model = keras.Model(inputs, keras.layers.Dense(1)(make_pooling("gem")(inputs)))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = _maps(1)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_gem_p2_is_rewritten_with_standard_layers_exactly():
    inputs = keras.Input((5, 4, 7))
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, keras.layers.Dense(1)(GeneralizedMeanPooling2D(2.0, name="pool")(inputs)))
    plain = serving.plain_keras(model)
    assert {type(layer).__module__.split(".")[0] for layer in all_layers(plain)} == {"keras"}
    x = _maps(2)
    x[0] = 0  # an all-zero map: every location at the clip
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    cube = keras.Model(inputs, GeneralizedMeanPooling2D(3.0, name="pool3")(inputs))
    with pytest.raises(UserError, match="pool3: GeM pooling with p = 3 cannot be written"):
        serving.plain_keras(cube)


def test_kfold_pooling_names_the_run_and_the_cache():
    assert KFoldConfig(backbone="a@380", pooling="gem").resolved_out() == "runs/kfold/a_380_gem"
    assert KFoldConfig(backbone="a@380", pooling="gem", head="lbfgs").resolved_out() == "runs/kfold/a_380_gem_lbfgs"
    assert KFoldConfig(backbone="a@380").resolved_out() == "runs/kfold/a_380"
