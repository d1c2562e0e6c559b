import numpy as np
import pytest
import keras
import tensorflow as tf

from catdog_tf import metrics
from catdog_tf.inference import ensembling, predictor
from conftest import tiny_classifier as tiny


@pytest.fixture
def members():
    return [tiny(32, 1, "a"), tiny(48, 2, "b")]


@pytest.mark.parametrize("space, floor", [("prob", 0.0), ("logit", 0.0), ("logit", 0.02)])
def test_ensemble_equals_weighted_combination(members, space, floor):
    w = [0.3, 0.7]
    ens = ensembling.build_ensemble(members, w, space, temperature=1.5, floor=floor)
    assert ens.input_shape == (None, 48, 48, 3)
    x = np.random.default_rng(0).uniform(0, 255, (5, 48, 48, 3)).astype("float32")
    pa = members[0](tf.image.resize(x, [32, 32], antialias=True)).numpy()[:, 0]
    pb = members[1](x).numpy()[:, 0]
    expected = ensembling.combine(np.stack([pa, pb], 1), w, space, 1.5, floor=floor)
    np.testing.assert_allclose(ens(x).numpy()[:, 0], expected, rtol=1e-4, atol=1e-6)
    assert floor == 0 or expected.min() >= floor


@pytest.mark.parametrize("floor", [0.0, 1e-3])
def test_export_reloads_safe_mode_identical(members, tmp_path, floor):
    ens = ensembling.build_ensemble(members, [1, 1], "logit", 0.9, floor=floor)
    path = tmp_path / "model.keras"
    ens.save(path)
    again = predictor.load_model(str(path))  # safe_mode=True inside
    x = np.random.default_rng(1).uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    np.testing.assert_array_equal(ens(x).numpy(), again(x).numpy())


def test_fitted_weights_never_worse_than_best_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    good = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.15, 400), 0.01, 0.99)
    noisy = np.clip(y * 0.5 + 0.25 + rng.normal(0, 0.3, 400), 0.01, 0.99)
    bad = rng.uniform(0.01, 0.99, 400)
    P = np.stack([noisy, good, bad], 1)
    best_single = min(metrics.log_loss(y, P[:, k]) for k in range(3))
    for space in ("prob", "logit"):
        w = ensembling.fit_weights(P, y, space)
        assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
        assert metrics.log_loss(y, ensembling.combine(P, w, space)) <= best_single + 1e-12
        assert w[1] > w[2]  # the informative member gets more weight than noise


def test_temperature_calibrates_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000).astype(float)
    z = (2 * y - 1) * 1.0 + rng.normal(0, 1.0, 2000)
    # the calibrated logit for unit-variance classes at +-1 is 2z; 3z is overconfident by 1.5
    p = 1 / (1 + np.exp(-3 * z))
    t = ensembling.fit_temperature(p, y)
    assert 1.3 < t < 1.7
    assert metrics.log_loss(y, 1 / (1 + np.exp(-3 * z / t))) < metrics.log_loss(y, p)


def test_floor_fitted_on_label_noise_and_absent_without_it():
    """Confident predictions with 1 % wrong labels: the fitted floor lowers the log loss and
    lands near the noise rate; on clean labels with calibrated predictions it stays negligible."""
    rng = np.random.default_rng(0)
    n = 20000
    y = rng.integers(0, 2, n).astype(float)
    p = np.where(y == 1, 1 - 1e-6, 1e-6)
    flipped = rng.random(n) < 0.01
    noisy = np.where(flipped, 1 - y, y)
    eps = ensembling.fit_floor(p, noisy)
    assert 0.003 < eps < 0.03
    assert metrics.log_loss(noisy, ensembling.combine(p[:, None], [1.0], "logit", floor=eps)) < \
        0.5 * metrics.log_loss(noisy, ensembling.combine(p[:, None], [1.0], "logit"))
    q = rng.uniform(0.05, 0.95, n)
    calibrated = (rng.random(n) < q).astype(float)
    assert ensembling.fit_floor(q, calibrated) < 1e-3


def test_submission_has_every_id_once(tmp_path):
    ids = ["10", "2", "1"]
    predictor.write_submission(str(tmp_path / "s.csv"), ids, np.array([0.9, 0.2, 1.0]), clip=0.01)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines == ["id,label", "1,0.990000", "2,0.200000", "10,0.900000"]
    with pytest.raises(ValueError, match="appear twice"):
        predictor.write_submission(str(tmp_path / "t.csv"), ["1", "1"], np.array([0.5, 0.5]))
    assert not (tmp_path / "t.csv").exists()


def test_hedge_pulls_photos_without_one_clear_animal_toward_half():
    """Photos whose ImageNet mass says 'no animal' or 'both animals' get confident, random
    predictions: the fitted hedge shrinks their logits and keeps the clear photos sharp."""
    rng = np.random.default_rng(0)
    n = 3000
    y = rng.integers(0, 2, n).astype(float)
    kind = rng.choice(3, n, p=[0.9, 0.05, 0.05])  # clear animal, no animal, both
    cat = np.where(kind == 0, np.where(y == 0, 0.95, 0.02), np.where(kind == 1, 0.01, 0.45))
    dog = np.where(kind == 0, np.where(y == 1, 0.95, 0.02), np.where(kind == 1, 0.01, 0.45))
    masses = np.stack([cat, dog], 1)
    z = np.where(kind == 0, (2 * y - 1) * 6 + rng.normal(0, 1, n), rng.normal(0, 6, n))
    P = metrics.sigmoid(np.stack([z, z + rng.normal(0, 0.5, n)], 1))
    w = ensembling.fit_weights(P, y, "logit")
    plain = ensembling.combine(P, w, "logit", ensembling.fit_temperature(ensembling.combine(P, w, "logit"), y))
    h = ensembling.fit_hedge(P, y, w, "logit", masses)
    hedged = ensembling.combine(P, w, "logit", 1.0, h, masses)
    assert metrics.log_loss(y, hedged) < 0.7 * metrics.log_loss(y, plain)
    unclear = kind != 0
    assert np.abs(hedged[unclear] - 0.5).mean() < 0.5 * np.abs(plain[unclear] - 0.5).mean()
    assert np.abs(hedged[~unclear] - 0.5).mean() > 0.45  # clear photos stay confident


def _pooled_member(seed, mirror=False):
    from catdog_tf.models import head
    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1 / 255.0)(inp))
    pooled = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name=f"tiny{seed}_32_avg")
    member = head.pooled_head_model([pooled], head.build_head(8, 0.0, seed=seed), f"member{seed}", mirror=mirror)
    clf = keras.layers.Dense(1000, activation="softmax", name=f"imagenet_tiny{seed}")
    clf.build((None, 8))
    clf.set_weights([np.random.default_rng(seed).normal(0, 3, (8, 1000)).astype("float32"), np.zeros(1000, "float32")])
    return member, pooled, clf


def test_hedged_ensemble_is_one_graph_equal_to_numpy_and_to_plain_keras(tmp_path):
    from catdog_tf.inference import serving
    from catdog_tf.models import imagenet
    parts = [_pooled_member(1), _pooled_member(2, mirror=True)]
    members, clfs = [m for m, _, _ in parts], [c for _, _, c in parts]
    w, h = [0.4, 0.6], [-1.0, 2.0, -5.0]
    ens = ensembling.build_ensemble(members, w, "logit", hedge=h, classifiers=clfs)
    x = np.random.default_rng(3).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    P = np.stack([m(x).numpy()[:, 0] for m in members], 1)
    feats = [parts[0][1](x).numpy(), (parts[1][1](x).numpy() + parts[1][1](x[:, :, ::-1]).numpy()) / 2]
    masses = np.mean([np.stack(imagenet.cat_dog_probs(c(f).numpy()), 1) for (_, _, c), f in zip(parts, feats)], axis=0)
    # The mirror member averages the logits of the image and of its mirror image.
    z = [metrics.logit(m(x).numpy()[:, 0]) for m in (members[1], _pooled_member(2)[0])]
    zm = metrics.logit(_pooled_member(2)[0](x[:, :, ::-1]).numpy()[:, 0])
    np.testing.assert_allclose(z[0], (z[1] + zm) / 2, rtol=1e-4, atol=1e-4)
    expected = ensembling.combine(P, w, "logit", 1.0, h, masses)
    assert np.abs(expected - ensembling.combine(P, w, "logit")).max() > 1e-3  # the hedge does something here
    np.testing.assert_allclose(ens(x).numpy()[:, 0], expected, rtol=1e-4, atol=1e-6)
    ens.save(tmp_path / "model.keras")
    again = predictor.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(again(x).numpy(), ens(x).numpy(), rtol=1e-6, atol=1e-7)
    plain = serving.plain_keras(again)
    np.testing.assert_allclose(plain(x).numpy()[:, 0], expected, rtol=1e-4, atol=1e-6)


def test_one_member_ties_go_to_the_logit_space_serving_can_rewrite():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.clip(y * 0.7 + 0.15 + rng.normal(0, 0.1, 300), 0.01, 0.99)
    space, w, _, fitted = ensembling._fit_combination(p[:, None], y, "auto", True)
    assert fitted["prob"][1] == fitted["logit"][1] and space == "logit" and list(w) == [1.0]
