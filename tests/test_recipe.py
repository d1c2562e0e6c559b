"""The recipe's plateau schedule is FitConfig's, in Keras's fit and in the multi-worker loop alike."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from catdog_tf.training import loop
from catdog_tf.training.fit import fit
from catdog_tf.training.recipe import FitConfig

CFG = FitConfig(epochs=5, lr=0.02, batch_size=16, plateau_factor=0.5, plateau_patience=1, min_lr=0.004, patience=4)


def _frozen_model():
    # Nothing trains, so the monitored loss never improves after the first epoch.
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid", trainable=False)])


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64).astype("float32")


def test_keras_fit_follows_the_plateau_fields(tmp_path):
    x, y = _data()
    hist = fit(_frozen_model(), (x, y), (x, y), CFG, verbose=0, log=lambda m: None)
    # logged during an epoch, reduced after each flat one down to the floor; stopped after `patience` flat epochs
    np.testing.assert_allclose(hist.history["learning_rate"], [0.02, 0.02, 0.01, 0.005, 0.004], rtol=1e-6)
    assert len(hist.epoch) == 5


def test_loop_follows_the_same_fields(tmp_path):
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    said = []
    hist = loop.fit(_frozen_model(), tf.distribute.get_strategy(), ds, ds, CFG, decay_steps=20,
                    backup_dir=str(tmp_path / "b"), log=said.append)
    np.testing.assert_allclose(hist.history["learning_rate"], [0.02, 0.02, 0.01, 0.005, 0.004], rtol=1e-6)
    assert said[-1] == "early stopping after epoch 5"


def test_unknown_schedule_refused():
    with pytest.raises(ValueError, match="schedule"):
        FitConfig(epochs=1, lr=1e-3, batch_size=8, schedule="step")


def test_cosine_warms_up_then_decays_to_zero_and_weight_decay_makes_adamw():
    from catdog_tf.training import recipe

    cfg = FitConfig(epochs=4, lr=0.01, batch_size=8, schedule="cosine", warmup_epochs=1, weight_decay=0.05)
    schedule = recipe.learning_rate(cfg, decay_steps=40)  # 10 steps an epoch: 10 of warm-up, 30 of decay
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 25, 40)], [0.0, 0.005, 0.01, 0.005, 0.0],
                               atol=1e-7)
    opt = recipe.optimizer(cfg, decay_steps=40)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == pytest.approx(0.05)
    plain = recipe.optimizer(FitConfig(epochs=4, lr=0.01, batch_size=8, schedule="cosine"), decay_steps=40)
    assert type(plain) is keras.optimizers.Adam
    assert float(recipe.learning_rate(FitConfig(epochs=4, lr=0.01, batch_size=8, schedule="cosine"), 40)(0)) == \
        pytest.approx(0.01)
