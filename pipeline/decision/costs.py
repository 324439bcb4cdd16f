"""The expected-cost level: the triage level that minimises the expected cost under the probabilities."""

from __future__ import annotations

import weakref

import numpy as np

from pipeline.core.blas import dot_exact_columns
from pipeline.core.config import LEVELS, TriageConfig
from pipeline.core.schema import CONDITIONS

__all__ = ["cost_levels", "cost_levels_of_columns", "cost_matrix", "costs_by_level", "right_levels"]


def right_levels(cfg: TriageConfig) -> np.ndarray:
    """Per condition (in :data:`CONDITIONS` order), the index in :data:`LEVELS` of its right level."""
    return np.array([LEVELS.index(cfg.right_level[c]) for c in CONDITIONS], dtype=np.int64)


def cost_matrix(cfg: TriageConfig) -> np.ndarray:
    """(n_conditions, n_levels) cost of each level when the condition is the true one."""
    return np.array([[cfg.costs[c][lv] for lv in LEVELS] for c in CONDITIONS], dtype=np.float64)


def cost_levels(cfg: TriageConfig, proba: np.ndarray) -> np.ndarray:
    """The level minimising expected cost under ``proba``; ties go to the more urgent level."""
    return cost_levels_of_columns(cfg, np.asarray(proba).T)


def cost_levels_of_columns(cfg: TriageConfig, columns: np.ndarray) -> np.ndarray:
    """:func:`cost_levels` of probabilities given by condition, ``proba.T`` (n_conditions, n)."""
    expected = dot_exact_columns(columns, costs_by_level(cfg))  # (n_levels, n): no BLAS, the same level in every process
    # from the most urgent level down, a level replaces the best so far only if strictly cheaper
    # (np.argmin over four columns per row took three times as long)
    level = np.full(expected.shape[1], len(LEVELS) - 1, dtype=np.int8)
    best = expected[-1].copy()
    for lv in range(len(LEVELS) - 2, -1, -1):
        cheaper = expected[lv] < best
        level[cheaper] = lv
        np.minimum(best, expected[lv], out=best)
    return level


# cost_matrix(cfg).T by the id of each live config: a validated config is frozen, and one call
# of predict() asks for its levels several times (building the matrix each time was a tenth of
# ask_next's time for one case)
_BY_CONFIG: dict[int, np.ndarray] = {}


def costs_by_level(cfg: TriageConfig) -> np.ndarray:
    """``cost_matrix(cfg).T`` (n_levels, n_conditions), made once per config object and dropped with it."""
    key = id(cfg)
    costs = _BY_CONFIG.get(key)
    if costs is None:
        costs = _BY_CONFIG[key] = cost_matrix(cfg).T
        weakref.finalize(cfg, _BY_CONFIG.pop, key, None)  # before the id can be another object's
    return costs
