"""Confidence intervals for figures computed on small labelled sets.

A rate (accuracy, recall, a triage rate, coverage) gets the Wilson score interval, which keeps
its level down to a handful of cases and never leaves [0, 1]. A figure that is not a simple
proportion (log loss, Brier score) gets a bias-corrected percentile bootstrap over cases; on
fewer than about 50 cases its intervals are too narrow (docs/own-cases.md gives the figures). The binned calibration
error gets no interval but the range a perfectly calibrated model's would take on the same cases
(:func:`calibrated_range`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import norm

__all__ = ["LEVEL", "MIN_BOOTSTRAP_CASES", "MIN_RESAMPLES", "bootstrap_interval", "calibrated_range", "wilson_interval"]

LEVEL = 0.95
# below this many cases a resample takes so few distinct values that the percentile interval is
# far too narrow (one case: every resample is that case, an interval of zero width); no interval
# is given rather than a false one. A rule of thumb, not a derived bound: 10-30 is the usual range.
MIN_BOOTSTRAP_CASES = 10
# a 95% interval's ends are the 2.5th and 97.5th percentiles of the resamples: with fewer than 100,
# each end is one of the two most extreme draws, and moves from one seed to the next by most of
# the interval's width. 100 is the floor; the default of 1000 is the usual advice for percentile
# intervals.
MIN_RESAMPLES = 100


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> list[float]:
    """Wilson score interval ``[low, high]`` for ``successes`` out of ``n`` (NaNs when ``n == 0``)."""
    if not 0 < level < 1:
        raise ValueError(f"level == {level}, must be in (0, 1).")
    if successes < 0 or successes > n:
        raise ValueError(f"successes == {successes}, must be within [0, n == {n}].")
    if n == 0:
        return [float("nan"), float("nan")]
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at no success or no failure the bound is 0 or 1 exactly, which the floats miss by a rounding (0.9999999999999999)
    low = 0.0 if successes == 0 else float(max(0.0, centre - half))
    high = 1.0 if successes == n else float(min(1.0, centre + half))
    return [low, high]


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0,
                       level: float = LEVEL, floor: float | None = None, ceiling: float | None = None) -> list[float]:
    """Bias-corrected percentile bootstrap interval ``[low, high]`` of ``statistic(indices)`` over ``n`` cases.

    The percentiles of the resampled statistic are shifted by the bootstrap's estimate of its bias
    (mean of the resamples minus the statistic on all cases). For a mean (log loss, Brier) the
    shift is nil; a binned calibration error is biased upwards on small samples, and unshifted
    percentiles can miss the estimate itself.

    Parameters
    ----------
    statistic : callable
        Takes an integer array of case indices (a resample, with repeats) and returns the figure.
    n : int
        Number of cases.
    n_boot : int, default=1000
        Resamples, at least :data:`MIN_RESAMPLES`.
    seed : int, default=0
        Seed of ``numpy.random.default_rng``.
    level : float, default=0.95
    floor : float, optional
        A bound the figure cannot go below (0 for an error); the interval is clipped to it.
    ceiling : float, optional
        A bound the figure cannot go above (1 for an F1 score, 2 for a multi-class Brier score):
        the bias shift of a figure that resampling pulls down (an F1 score, on a few cases) can
        carry the upper end past it, and the interval is clipped to it.

    Returns NaNs (no interval) for fewer than :data:`MIN_BOOTSTRAP_CASES` cases.
    """
    if n_boot < MIN_RESAMPLES:
        raise ValueError(f"n_boot == {n_boot}, must be >= {MIN_RESAMPLES}: fewer resamples leave each end of the "
                         "interval to one or two draws.")
    if n < MIN_BOOTSTRAP_CASES:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    bias = draws.mean() - statistic(np.arange(n))
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail]) - bias
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    if ceiling is not None:
        low, high = min(low, ceiling), min(high, ceiling)
    return [float(low), float(high)]


def calibrated_range(statistic: Callable[[np.ndarray], float], proba: np.ndarray, *, n_draws: int = 1000,
                     seed: int = 0, level: float = LEVEL) -> list[float]:
    """The central ``level`` range ``[low, high]`` of ``statistic(labels)`` with the labels drawn from
    ``proba`` itself (one condition per case, by its row's probabilities): what a perfectly
    calibrated model's figure would be on as many cases with the same probabilities (consistency
    resampling, Broecker and Smith, Weather and Forecasting 2007).

    A binned calibration error is biased upwards on a small set: on 50 cases of a model whose
    ECE on 50,000 is 0.004 it is about 0.1, and a bootstrap interval of it held the 50,000-case
    figure in 2 of 200 such sets. A figure inside this range shows no miscalibration that so
    few cases can detect; one above it does. ``statistic`` takes an integer label per case."""
    if n_draws < 2:
        raise ValueError(f"n_draws == {n_draws}, must be >= 2.")
    proba = np.asarray(proba, dtype=np.float64)
    if not len(proba):
        return [float("nan"), float("nan")]
    cumulative = np.cumsum(proba, axis=1)
    cumulative /= cumulative[:, -1:]  # rows that sum to 1 but for rounding: the last condition ends at 1
    rng = np.random.default_rng(seed)
    draws = [statistic((cumulative < rng.random((len(proba), 1))).sum(axis=1)) for _ in range(n_draws)]
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return [float(low), float(high)]
