"""Linear probes: is a feature held by one unit, or spread over many?

For each feature and layer a probe reads every unit of the layer's carried state at once (h, and c for an
LSTM: everything the layer passes on to the next step), fitted on the first half of the text and scored on the
second half. Beside it stands the best single unit of the same state, chosen on the first half and scored on the
second, so the two numbers are comparable::

    probes = probe_layers(recording, features)       # [Probe], one per (feature, layer)

A feature held by one unit gives a probe no better than that unit; a feature spread over many gives a probe far
better than any single unit.

- On/off features get a ridge-regularised logistic regression, scored by AUROC of its logit on the held-out
  half. It is fitted by preconditioned accelerated gradient steps with Böhning's bound on the Hessian
  (X^T X / 4n + ridge), which needs one D x D inverse per layer, shared by every feature (Böhning 1992,
  "Multinomial logistic regression algorithm").
- Counts get ridge regression, scored by Spearman correlation and R² on the held-out half.

Units are standardised with the first half's mean and standard deviation before fitting. NumPy only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from .features import Feature
from .scoring import Unit, auroc, correlation, rank_columns

RIDGE = 1e-3  # penalty on the mean loss, per standardised unit weight; the intercept is not penalised
MAX_ITERATIONS = 100  # accelerated steps of the logistic fit; enough to rank held-out positions (tests/test_probes.py)
TOLERANCE = 1e-5  # largest change of any weight in one step that counts as settled
MIN_PER_HALF = 10  # fewer positive (or negative) positions than this in either half and there is no probe
PROBED_STATES = {"rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe over one layer's units against one feature, beside the best single unit.

    metric: "auroc" (on/off features) or "spearman" (counts). score: the probe's held-out AUROC or Spearman
    correlation; r2: its held-out R² (counts only). unit, unit_score: the single unit (and its sign) that
    scores best on the first half, and its score on the second half with that sign. units: how many units the
    probe reads; train_chars, test_chars: positions in each half.
    """

    feature: str
    layer: int
    metric: str
    score: float
    unit: Unit
    unit_direction: str
    unit_score: float
    units: int
    train_chars: int
    test_chars: int
    r2: Optional[float] = None

    def to_dict(self) -> dict:
        d = {"feature": self.feature, "layer": self.layer, "metric": self.metric, "score": round(self.score, 6),
             "best_unit": {"layer": self.unit.layer, "state": self.unit.state, "unit": self.unit.unit,
                           "direction": self.unit_direction, "score": round(self.unit_score, 6)},
             "units": self.units, "train_chars": self.train_chars, "test_chars": self.test_chars}
        if self.r2 is not None:
            d["r2"] = round(self.r2, 6)
        return d


# --- fitting ---------------------------------------------------------------------------------------------------


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (n, D) arrays centred and scaled by the training half's mean and standard deviation (a constant
    unit keeps scale 1), as float64."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _with_intercept(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, max_iterations: int = MAX_ITERATIONS,
                 tolerance: float = TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Ridge-regularised logistic regressions of every column of `y` on `x`, fitted together.

    Minimises mean_i log(1 + exp(-s_i (x_i w + b))) + ridge / 2 |w|² per column (s = ±1), by Nesterov-accelerated
    steps preconditioned with Böhning's bound B = X^T X / 4n + ridge (a Hessian bound, so a step of one is safe).

    Args:
      x: (n, D) standardised inputs.
      y: (n, F) bool targets.

    Returns:
      weights (D, F) and intercepts (F,).
    """
    n, d = x.shape
    xa = _with_intercept(x)  # its dtype is the fit's: float32 halves the time of a large layer
    penalty = np.full(d + 1, ridge)
    penalty[-1] = 0.0
    bound = xa.T @ xa / (4.0 * n) + np.diag(penalty)
    bound[-1, -1] += 1e-12  # keeps B invertible when x is all zeros
    inverse = np.linalg.inv(bound).astype(x.dtype)
    penalty = penalty.astype(x.dtype)
    targets = np.asarray(y, x.dtype).reshape(n, -1)
    w = np.zeros((d + 1, targets.shape[1]), x.dtype)
    look = w
    for k in range(max_iterations):
        gradient = xa.T @ (_sigmoid(xa @ look) - targets) / n + penalty[:, None] * look
        new = look - inverse @ gradient
        settled = np.max(np.abs(new - w)) < tolerance
        look = new + (k / (k + 3.0)) * (new - w)
        w = new
        if settled:
            break
    return w[:-1], w[-1]


def fit_linear(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regressions of every column of `y` (n, F) on `x` (n, D): minimises mean squared error +
    ridge |w|² per column, intercept unpenalised. Returns weights (D, F) and intercepts (F,)."""
    n, d = x.shape
    targets = np.asarray(y, np.float64).reshape(n, -1)
    x_mean, y_mean = x.mean(axis=0), targets.mean(axis=0)
    xc, yc = x - x_mean, targets - y_mean
    w = np.linalg.solve(xc.T @ xc / n + ridge * np.eye(d), xc.T @ yc / n)
    return w, y_mean - x_mean @ w


def r_squared(predicted: np.ndarray, actual: np.ndarray) -> float:
    """1 - residual sum of squares / total sum of squares (negative when worse than the mean)."""
    total = float(((actual - actual.mean()) ** 2).sum())
    return 1.0 - float(((actual - predicted) ** 2).sum()) / total if total > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of `x` (n, D) with `y` (n,)."""
    return correlation(rank_columns(x), rank_columns(np.asarray(y, np.float64)[:, None])[:, 0])


# --- probing a recording ---------------------------------------------------------------------------------------


def _usable(f: Feature, train: np.ndarray, test: np.ndarray) -> bool:
    if f.kind == "binary":
        return all(MIN_PER_HALF <= int(part.sum()) <= len(part) - MIN_PER_HALF for part in (train, test))
    return bool(np.ptp(train) > 0 and np.ptp(test) > 0)


def probe_layers(recording, features: Sequence[Feature], *, cell: Optional[str] = None,
                 ridge: float = RIDGE) -> list[Probe]:
    """One probe per (feature, layer), in feature order then layer order, from a `charrnn.inspection.Recording`
    (its ``ids`` (N,) and ``states`` {(layer, state): (N, H)}).

    A layer's probe reads its carried state (`PROBED_STATES` of `cell`; by default whatever of h and c the
    recording holds). Features that are constant in either half, or on/off features with fewer than
    MIN_PER_HALF positive or negative positions in either half, are left out.
    """
    n = len(recording.ids)
    half = n // 2
    names = PROBED_STATES[cell] if cell else ("h", "c")
    layers = sorted({layer for layer, _ in recording.states})
    usable = [f for f in features
              if _usable(f, np.asarray(f.values)[:half], np.asarray(f.values)[half:n])]
    probes = []
    by_feature: dict[str, list[Probe]] = {f.name: [] for f in usable}
    for layer in layers:
        states = [s for s in names if (layer, s) in recording.states]
        if not states or not usable:
            continue
        units = [Unit(layer, s, u) for s in states for u in range(recording.states[(layer, s)].shape[1])]
        x = np.concatenate([recording.states[(layer, s)] for s in states], axis=1).astype(np.float64)
        x_train, x_test = standardise(x[:half], x[half:n])
        train_ranks, test_ranks = rank_columns(x_train), rank_columns(x_test)
        binary = [f for f in usable if f.kind == "binary"]
        counts = [f for f in usable if f.kind == "count"]
        if binary:
            y = np.stack([np.asarray(f.values[:n], bool) for f in binary], axis=1)
            w, b = fit_logistic(x_train.astype(np.float32), y[:half], ridge)
            logits = x_test @ w.astype(np.float64) + b
            logit_ranks = rank_columns(logits)
            for k, f in enumerate(binary):
                a_train = auroc(train_ranks, y[:half, k])
                strength = np.maximum(a_train, 1.0 - a_train)
                best = int(np.argmax(strength))
                sign = 1.0 if a_train[best] >= 0.5 else -1.0
                a_test = float(auroc(test_ranks[:, best : best + 1], y[half:, k])[0])
                by_feature[f.name].append(Probe(
                    f.name, layer, "auroc", float(auroc(logit_ranks[:, k : k + 1], y[half:, k])[0]), units[best],
                    "+" if sign > 0 else "-", a_test if sign > 0 else 1.0 - a_test, len(units), half, n - half))
        if counts:
            y = np.stack([np.asarray(f.values[:n], np.float64) for f in counts], axis=1)
            w, b = fit_linear(x_train, y[:half], ridge)
            predicted = x_test @ w + b
            for k, f in enumerate(counts):
                rho_train = correlation(train_ranks, rank_columns(y[:half, k : k + 1])[:, 0])
                best = int(np.argmax(np.abs(rho_train)))
                sign = 1.0 if rho_train[best] >= 0 else -1.0
                rho_test = float(spearman(x_test[:, best : best + 1], y[half:, k])[0])
                by_feature[f.name].append(Probe(
                    f.name, layer, "spearman", float(spearman(predicted[:, k : k + 1], y[half:, k])[0]), units[best],
                    "+" if sign > 0 else "-", sign * rho_test, len(units), half, n - half,
                    r2=r_squared(predicted[:, k], y[half:, k])))
    for f in usable:
        probes += by_feature[f.name]
    return probes
