"""Split-conformal prediction sets that keep their coverage within bands: the differential.

The score of a class is 1 - p(class) (the LAC score, which gives the smallest average sets when
the probabilities are right), except that the most likely class scores 0: a differential is
never empty, and the score says so, so the guarantee holds for the sets actually shown.

Coverage on average is not enough: a set fitted on all cases together is too small for the
uncertain ones and for cases with few answers (measured before this design: 35% coverage below
confidence 0.4). So the threshold is Mondrian (Vovk et al. 2003; conformal prediction conditional
on a taxonomy of the input): one per cell of a grid of bands of confidence (the top probability)
and of answers known (the share of the optional answers given), each the
ceil((n+1)(1-alpha))/n quantile of the scores of that cell's calibration cases. The calibration
cases are ``calib`` (a split the model never saw) plus copies of it with answers blanked at
random, so every band of answers known holds cases like those people send. A cell with fewer than
``min_band_cases`` cases uses the threshold of its confidence band as a whole.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.config import ConformalConfig
from pipeline.core.parsing import ParsedCases, unanswered_matrix
from pipeline.core.schema import CONDITIONS, FIELDS
from pipeline.core.textcols import join_ranked

__all__ = ["blank_at_random", "credible_sets", "fit_conformal", "format_sets", "known_share", "prediction_sets",
           "set_cells"]

_OPTIONAL = [f for f in FIELDS if not f.required]
_OPTIONAL_NAMES = [f.name for f in _OPTIONAL]


def known_share(codes: dict[str, np.ndarray]) -> np.ndarray:
    """Per case, the share of the optional answers that are known."""
    return (~unanswered_matrix(codes, _OPTIONAL_NAMES)).sum(axis=1) / len(_OPTIONAL)


def blank_at_random(parsed: ParsedCases, rate: float, seed: int) -> ParsedCases:
    """A copy with each optional answer blanked with probability ``rate``, independently of
    everything (so missing completely at random; the required answers stay)."""
    rng = np.random.default_rng(seed)
    return parsed.blanked({f.name: rng.random(len(parsed)) < rate for f in _OPTIONAL})


def set_cells(proba: np.ndarray, codes: dict[str, np.ndarray], edges: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per case, its answers-known band and its confidence band (indices into the grid)."""
    known = np.searchsorted(np.asarray(edges["known_edges"]), known_share(codes), side="right")
    confidence = np.searchsorted(np.asarray(edges["confidence_edges"]), proba.max(axis=1), side="right")
    return known, confidence


def _scores(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(proba.argmax(axis=1) == y, 0.0, 1.0 - proba[np.arange(len(y)), y])


def _quantile(scores: np.ndarray, coverage: float) -> float:
    """The k-th smallest score, k = ceil((n + 1) * coverage); 1.0 (every class) when k > n."""
    n = len(scores)
    k = int(np.ceil((n + 1) * coverage))
    if k > n:
        return 1.0  # too few calibration cases for this coverage: include everything
    return float(np.sort(scores)[k - 1])


def _thresholds(scores: np.ndarray, known: np.ndarray, confidence: np.ndarray, shape: tuple[int, int],
                level: float, min_cases: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the conformal quantile at ``level`` of its scores; a cell with fewer than
    ``min_cases`` cases uses its confidence band's column (all answers-known bands together), and
    a column with too few, all cases."""
    overall = _quantile(scores, level)
    thresholds = np.ones(shape)
    pooled = np.zeros(shape, dtype=bool)
    for j in range(shape[1]):
        in_col = confidence == j
        column = _quantile(scores[in_col], level) if in_col.sum() >= min_cases else overall
        for i in range(shape[0]):
            cell = in_col & (known == i)
            pooled[i, j] = cell.sum() < min_cases
            thresholds[i, j] = column if pooled[i, j] else _quantile(scores[cell], level)
    return thresholds, pooled


def fit_conformal(proba: np.ndarray, y: np.ndarray, codes: dict[str, np.ndarray], config: ConformalConfig) -> dict:
    """Thresholds per (answers-known band, confidence band) from calibration probabilities
    ``proba`` (n, K), labels ``y`` (n,) and the cases' ``codes``.

    A differential is never empty, so in the most confident band the top condition alone covers
    more than the target (its accuracy there, about 0.97). Each band's level is therefore the
    lowest in [``min_band_coverage``, ``coverage``] at which the calibration cases are covered
    ``coverage`` overall: the overall coverage is the configured one, and no band falls below
    ``min_band_coverage``.
    """
    edges = {"confidence_edges": list(config.confidence_edges), "known_edges": list(config.known_edges)}
    known, confidence = set_cells(proba, codes, edges)
    scores = _scores(proba, y)
    shape = (len(config.known_edges) + 1, len(config.confidence_edges) + 1)

    def fitted(level: float) -> tuple[np.ndarray, np.ndarray, float]:
        thresholds, pooled = _thresholds(scores, known, confidence, shape, level, config.min_band_cases)
        return thresholds, pooled, float((scores <= thresholds[known, confidence] + 1e-12).mean())

    levels = np.round(np.arange(config.min_band_coverage, config.coverage + 1e-9, 0.0025), 4)
    for level in levels:  # the first level reaching the overall target (the last one if none does)
        thresholds, pooled, covered = fitted(float(level))
        if covered >= config.coverage:
            break
    counts = np.zeros(shape, dtype=int)
    np.add.at(counts, (known, confidence), 1)
    return {"coverage": config.coverage, "band_coverage": float(level), "calibration_coverage": covered, **edges,
            "thresholds": thresholds.tolist(), "n_calib": int(len(y)), "cell_counts": counts.tolist(),
            "pooled": pooled.tolist()}


def prediction_sets(proba: np.ndarray, codes: dict[str, np.ndarray], fitted: dict) -> np.ndarray:
    """Boolean (n, K): the top class, and every class k with 1 - p_k <= its case's threshold."""
    known, confidence = set_cells(proba, codes, fitted)
    threshold = np.asarray(fitted["thresholds"])[known, confidence]
    sets = (1.0 - proba) <= threshold[:, None] + 1e-12
    sets[np.arange(len(proba)), proba.argmax(axis=1)] = True
    return sets


def format_sets(proba: np.ndarray, sets: np.ndarray) -> tuple[pd.api.extensions.ExtensionArray, np.ndarray]:
    """``|``-joined condition names, most likely first, and the set sizes."""
    order = np.argsort(-proba, axis=1, kind="stable")
    return join_ranked(CONDITIONS, order, np.take_along_axis(sets, order, axis=1)), sets.sum(axis=1)


def credible_sets(posterior: np.ndarray, coverage: float) -> np.ndarray:
    """Boolean (n, K): per case, the smallest set of classes whose posterior mass reaches
    ``coverage`` (the most probable first). With the true posterior (the oracle) each set holds
    the true class with probability at least ``coverage`` whatever the case: the reference for
    conditional coverage and size."""
    order = np.argsort(-posterior, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(posterior, order, axis=1), axis=1)
    keep = np.concatenate([np.ones((len(posterior), 1), bool), mass[:, :-1] < coverage - 1e-12], axis=1)
    sets = np.zeros_like(keep)
    np.put_along_axis(sets, order, keep, axis=1)
    return sets
