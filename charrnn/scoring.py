"""Scoring units against features: which unit, and the rank statistics that say how well it tracks one.

Shared by `charrnn.inspection` (the best single units) and `charrnn.probes` (all the units of a layer at once).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Unit:
    """One hidden unit: layer (0-based), state name ("h", "c", "i", "f", "o", "z", "r") and index."""

    layer: int
    state: str
    unit: int


def rank_columns(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of each column of `x` (N, H), ties given their average rank (float64)."""
    n = x.shape[0]
    order = np.argsort(x, axis=0, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=0)
    ranks = np.empty(x.shape, np.float64)
    positions = np.arange(1, n + 1, dtype=np.float64)
    for col in range(x.shape[1]):
        # Start of each run of equal values; every member of a run gets the run's mean position.
        starts = np.flatnonzero(np.r_[True, sorted_x[1:, col] != sorted_x[:-1, col]])
        run_lengths = np.diff(np.r_[starts, n])
        mean_rank = positions[starts] + (run_lengths - 1) / 2.0
        ranks[order[:, col], col] = np.repeat(mean_rank, run_lengths)
    return ranks


def auroc(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each column as a detector of `positive` (N,) bool, from its ranks (N, H).

    The Mann-Whitney statistic: the probability that a random positive position has a higher activation
    than a random negative one (ties count half). 1 - AUROC measures a unit that is *low* on the feature.
    """
    p = int(positive.sum())
    q = len(positive) - p
    return (ranks[positive].sum(axis=0) - p * (p + 1) / 2.0) / (p * q)


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation between each column of `x` (N, H) and `y` (N,); 0 for a constant column."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    denom = np.sqrt((xc * xc).sum(axis=0) * (yc * yc).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc[:, None]).sum(axis=0) / denom
    return np.where(denom > 0, r, 0.0)
