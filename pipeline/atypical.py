"""Atypical cases: answers that fit none of the documented profiles well.

The score is the average surprise per answered field, -log p(known fields) / n_known, under the
knowledge base's own model (so a case with few answers is not penalised for having few). The
threshold is the (1 - quantile) quantile of the scores of ``calib`` cases: calibrated, not guessed.
"""

from __future__ import annotations

import numpy as np

from .knowledge import KnowledgeBase
from .oracle import log_density
from .schema import FIELDS, ParsedCases

__all__ = ["surprise", "fit_atypical", "flag_atypical"]


def _n_known(parsed: ParsedCases) -> np.ndarray:
    known = np.zeros(len(parsed), dtype=np.int32)
    for f in FIELDS:
        c = parsed.codes[f.name]
        known += ~np.isnan(c) if f.kind in ("integer", "float") else (c >= 0)
    return np.maximum(known, 1)


def surprise(kb: KnowledgeBase, parsed: ParsedCases) -> np.ndarray:
    """Average negative log-likelihood per answered field, shape (n_cases,)."""
    return -log_density(kb, parsed) / _n_known(parsed)


def fit_atypical(kb: KnowledgeBase, parsed_calib: ParsedCases, quantile: float) -> dict:
    scores = surprise(kb, parsed_calib)
    return {"quantile": quantile, "threshold": float(np.quantile(scores, 1 - quantile)),
            "n_calib": int(len(scores))}


def flag_atypical(kb: KnowledgeBase, parsed: ParsedCases, fitted: dict) -> tuple[np.ndarray, np.ndarray]:
    """(flag, score) per case: flagged when the score is above the calibrated threshold."""
    scores = surprise(kb, parsed)
    return scores > fitted["threshold"], scores
