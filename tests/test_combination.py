"""The combination rule is one function; its NumPy, keras.ops and standard-layer forms agree."""

import keras
import numpy as np
import pytest

from catdog_tf.metrics import LOGIT_EPS
from catdog_tf.models import combination
from catdog_tf.models.layers import CombineProbabilities

RULES = [
    combination.Rule((1.0, 3.0), "logit", 2.0),
    combination.Rule((0.2, 0.5, 0.3), "prob", 0.7),
    combination.Rule((1.0, 1.0, 2.0), "logit", 1.0, (0.3, -1.2, 2.5)),
    combination.Rule((0.6, 0.4), "prob", 1.3, (-0.4, 0.8, -3.0)),
    combination.Rule((1.0, 2.0), "logit", 0.8, None, 1e-3),
    combination.Rule((1.0, 1.0), "logit", 1.0, (0.3, -1.2, 2.5), 2e-4),
]


def _id(r):
    return f"{r.space}-{'hedge' if r.hedge else 'plain'}{'-floor' if r.floor else ''}"


def _inputs(m, n=300, seed=0, extremes=True):
    rng = np.random.default_rng(seed)
    z = np.clip(rng.normal(0, 6, (n, m)), -13, 13)
    if extremes:  # beyond and at the clip
        z[:5] = [[40.0] * m, [-40.0] * m, [0.0] * m, [17.0] * m, [-16.0] * m]
    masses = rng.dirichlet([1, 1, 1], n)[:, :2]
    return z, 1 / (1 + np.exp(-z)), masses


def test_numpy_rule_by_hand():
    p = np.array([[0.9, 0.2], [1.0, 0.0]])
    got = combination.combine(combination.NUMPY, p, combination.Rule((1.0, 3.0), "logit", 2.0))
    lg = lambda v: np.log(v / (1 - v))  # noqa: E731
    c = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    want = 1 / (1 + np.exp(-(lg(c[:, 0]) + 3 * lg(c[:, 1])) / 4 / 2))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    q = combination.combine(combination.NUMPY, p, combination.Rule((1.0, 3.0), "prob"))
    np.testing.assert_allclose(q, [(0.9 + 0.6) / 4, (1 - LOGIT_EPS + 3 * LOGIT_EPS) / 4], rtol=1e-12)  # clipped first
    hedged = combination.combine(combination.NUMPY, p, combination.Rule((1.0, 3.0), "logit", 2.0, (0.0, 0.0, 0.0)),
                                 np.array([[0.5, 0.5], [0.1, 0.0]]))
    np.testing.assert_allclose(hedged, got, rtol=1e-12)
    floored = combination.combine(combination.NUMPY, p, combination.Rule((1.0, 3.0), "logit", 2.0, None, 0.01))
    np.testing.assert_allclose(floored, 0.01 + 0.98 * got, rtol=1e-12)
    assert floored.min() >= 0.01 and floored.max() <= 0.99


def test_floor_caps_one_photos_loss():
    """A confident mistake costs at most -log(eps) with the floor."""
    p = np.array([[1 - 1e-9], [1e-9]])
    rule = combination.Rule((1.0,), "logit", 1.0, None, 1e-3)
    q = combination.combine(combination.NUMPY, p, rule)
    np.testing.assert_allclose([1 - q[0], q[1]], [1e-3, 1e-3], rtol=1e-3)  # the mistake costs ~ -log(1e-3)


def test_hedge_scale_formula():
    masses = np.array([[0.2, 0.7], [0.0, 0.0]])
    got = combination.hedge_scale(combination.NUMPY, (0.5, -1.0, 3.0), masses)
    np.testing.assert_allclose(got, np.exp([0.5 - 0.9 + 3 * 0.14, 0.5]), rtol=1e-12)


@pytest.mark.parametrize("rule", RULES, ids=_id)
def test_graph_layer_agrees_with_numpy(rule):
    m = len(rule.weights)
    # float32 P within 1e-7 of 0 or 1 is clipped at float32(1 - eps), a logit of 15.9, not 16.1:
    # the graph agrees with NumPy where float32 resolves the probabilities
    _, p, masses = _inputs(m, extremes=False)
    p, masses = p.astype(np.float32), masses.astype(np.float32)
    want = combination.combine(combination.NUMPY, p, rule, masses)
    layer = CombineProbabilities(rule.weights, rule.space, rule.temperature, hedge=rule.hedge, floor=rule.floor)
    args = [p[:, k:k + 1] for k in range(m)] + ([masses] if rule.hedge else [])
    got = np.asarray(layer(args))[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", [r for r in RULES if r.space == "logit"], ids=_id)
def test_standard_layers_agree_with_numpy(rule):
    m = len(rule.weights)
    z, p, masses = _inputs(m, seed=1)
    want = combination.combine(combination.NUMPY, p, rule, masses)
    logits = [keras.Input((1,)) for _ in range(m)]
    extra = [keras.Input((2,))] if rule.hedge else []
    out = combination.combine(combination.LayerOps("combine"), logits, rule, extra[0] if extra else None)
    model = keras.Model(logits + extra, out)
    assert all(type(layer).__module__.startswith("keras.") for layer in model.layers)
    got = model.predict([z[:, k:k + 1].astype(np.float32) for k in range(m)]
                        + ([masses.astype(np.float32)] if extra else []), verbose=0)[:, 0]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


def test_unknown_space_refused():
    with pytest.raises(ValueError, match="space"):
        combination.Rule((1.0,), "geometric")


@pytest.mark.parametrize("eps", [-1e-3, 0.5, 0.7])
def test_floor_outside_range_refused(eps):
    with pytest.raises(ValueError, match="floor"):
        combination.Rule((1.0,), "logit", 1.0, None, eps)
