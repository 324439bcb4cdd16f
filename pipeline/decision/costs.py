"""The expected-cost level: the triage level that minimises the expected cost under the probabilities."""

from __future__ import annotations

import numpy as np

from pipeline.core.blas import dot_exact
from pipeline.core.config import LEVELS, TriageConfig
from pipeline.core.schema import CONDITIONS

__all__ = ["cost_levels", "cost_matrix"]


def cost_matrix(cfg: TriageConfig) -> np.ndarray:
    """(n_conditions, n_levels) cost of each level when the condition is the true one."""
    return np.array([[cfg.costs[c][lv] for lv in LEVELS] for c in CONDITIONS], dtype=np.float64)


def cost_levels(cfg: TriageConfig, proba: np.ndarray) -> np.ndarray:
    """The level minimising expected cost under ``proba``; ties go to the more urgent level."""
    expected = dot_exact(proba, cost_matrix(cfg).T)  # no BLAS: the same level in every process
    # reversed argmin picks the most urgent of equally costly levels
    return (len(LEVELS) - 1 - np.argmin(expected[:, ::-1], axis=1)).astype(np.int8)
