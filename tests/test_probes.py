"""Linear probes: the fits agree with an independent optimiser, and on activations built so that the answer is
known, a feature held by one unit gives a probe no better than that unit while a feature spread over many units
gives a probe far better than any one of them."""

import numpy as np
import pytest

from charrnn import probes
from charrnn.features import Feature
from charrnn.inspection import Recording
from charrnn.scoring import Unit


def newton_logistic(x, s, ridge, iterations=50):
    """The same objective, mean log(1 + exp(-s (x w + b))) + ridge / 2 |w|^2, minimised by plain Newton steps
    with the exact Hessian: an optimiser independent of the code's (a preconditioned first-order method)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.r_[np.full(x.shape[1], ridge), 0.0]
    theta = np.zeros(xa.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(s * (xa @ theta)))  # sigmoid(-z): the weight of each example's gradient
        grad = -(xa * (s * p)[:, None]).mean(0) + penalty * theta
        hess = (xa * (p * (1 - p))[:, None]).T @ xa / len(x) + np.diag(penalty)
        theta = theta - np.linalg.solve(hess, grad)
    return theta


def test_logistic_fit_matches_an_independent_optimiser():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = np.stack([x @ rng.normal(size=6) + rng.normal(size=400) > 0.3, x[:, 2] + rng.normal(size=400) > 0], axis=1)
    ridge = 0.05
    w, b = probes.fit_logistic(x, y, ridge, max_iterations=5000, tolerance=1e-10)
    for k in range(2):
        want = newton_logistic(x, np.where(y[:, k], 1.0, -1.0), ridge)
        np.testing.assert_allclose(w[:, k], want[:-1], atol=1e-4)
        assert b[k] == pytest.approx(want[-1], abs=1e-4)


def test_ridge_fit_matches_least_squares_on_the_augmented_system():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    y = x @ rng.normal(size=(5, 2)) + 3.0 + rng.normal(size=(300, 2))
    ridge = 0.1
    w, b = probes.fit_linear(x, y, ridge)
    # Ridge on centred data = least squares on [X - mean; sqrt(n ridge) I] against [y - mean; 0].
    n = len(x)
    xc, yc = x - x.mean(0), y - y.mean(0)
    big_x = np.vstack([xc, np.sqrt(n * ridge) * np.eye(5)])
    big_y = np.vstack([yc, np.zeros((5, 2))])
    want = np.linalg.lstsq(big_x, big_y, rcond=None)[0]
    np.testing.assert_allclose(w, want, atol=1e-10)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ want, atol=1e-10)


def test_r_squared_and_spearman():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert probes.r_squared(y, y) == 1.0 and probes.r_squared(np.full(4, 2.5), y) == 0.0
    assert probes.spearman(np.array([[10.0], [20.0], [15.0], [40.0]]), y)[0] == pytest.approx(0.8)


def recording_of(states: np.ndarray) -> Recording:
    n = len(states)
    return Recording(ids=np.zeros(n, np.int32), states={(0, "h"): states.astype(np.float32)}, nll=np.zeros(n - 1))


@pytest.fixture(scope="module")
def activations():
    return np.random.default_rng(2).normal(size=(4000, 40))


def test_a_feature_held_by_one_unit(activations):
    held = Feature("held", "binary", activations[:, 7] > 0.5, "")
    count = Feature("count", "count", np.round(3 * activations[:, 11]).astype(np.int32), "")
    got = {p.feature: p for p in probes.probe_layers(recording_of(activations), [held, count])}
    p = got["held"]
    assert p.unit == Unit(0, "h", 7) and p.unit_direction == "+" and p.unit_score == 1.0
    assert p.score > 0.99 and p.metric == "auroc" and p.units == 40
    assert (p.train_chars, p.test_chars) == (2000, 2000)
    c = got["count"]
    assert c.unit == Unit(0, "h", 11) and c.unit_score > 0.99 and c.score > 0.99 and c.r2 > 0.95


def test_a_feature_spread_over_many_units(activations):
    weights = np.random.default_rng(3).choice([-1.0, 1.0], size=40)
    spread = Feature("spread", "binary", activations @ weights > 0, "")
    total = Feature("total", "count", np.round(activations @ weights).astype(np.int32), "")
    got = {p.feature: p for p in probes.probe_layers(recording_of(activations), [spread, total])}
    assert got["spread"].score > 0.97 and got["spread"].unit_score < 0.7  # no one unit holds it
    assert got["total"].score > 0.97 and got["total"].r2 > 0.9 and abs(got["total"].unit_score) < 0.4


def test_a_negated_unit_is_found_with_its_sign(activations):
    low = Feature("low", "binary", activations[:, 3] < 0, "")
    (p,) = probes.probe_layers(recording_of(activations), [low])
    assert p.unit == Unit(0, "h", 3) and p.unit_direction == "-" and p.unit_score == 1.0


def test_features_missing_from_a_half_get_no_probe(activations):
    only_first_half = np.zeros(4000, bool)
    only_first_half[:500] = True
    flat_second_half = np.r_[np.arange(2000) % 5, np.zeros(2000)].astype(np.int32)
    got = probes.probe_layers(recording_of(activations), [Feature("a", "binary", only_first_half, ""),
                                                          Feature("b", "count", flat_second_half, "")])
    assert got == []


def test_probes_read_h_and_c_of_each_layer():
    rng = np.random.default_rng(4)
    states = {(layer, s): rng.normal(size=(600, 5)).astype(np.float32) for layer in (0, 1) for s in ("h", "c", "f")}
    recording = Recording(np.zeros(600, np.int32), states, np.zeros(599))
    c_unit = states[(1, "c")][:, 4] > 0
    got = probes.probe_layers(recording, [Feature("x", "binary", c_unit, "")], cell="lstm")
    assert [p.layer for p in got] == [0, 1] and all(p.units == 10 for p in got)
    assert got[1].unit == Unit(1, "c", 4) and got[0].score < 0.7 < 0.99 < got[1].score
    d = got[1].to_dict()
    assert d["best_unit"] == {"layer": 1, "state": "c", "unit": 4, "direction": "+", "score": 1.0}
    assert "r2" not in d and d["metric"] == "auroc"
