"""Atypical cases: answers that fit none of the documented profiles well.

The score is the average surprise per answered field, -log p(known fields) / n_known, under the
knowledge base's own model. How surprising a typical case is depends on how many questions were
answered (a case with only age and sex known is scored by its age alone), so the threshold is a
function of ``n_known``: the (1 - quantile) quantile of the scores of ``calib`` cases with that
many answers. Cases with few answers are rare in ``calib``, so its cases are also scored with
answers blanked at random rates; the generator's unknowns are missing at random, so a blanked case
is a draw from the same model with fewer answers. Calibrated, not guessed.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.oracle import log_density
from pipeline.core.parsing import ParsedCases, unanswered_matrix
from pipeline.core.schema import FIELD_NAMES, FIELDS

__all__ = ["surprise", "fit_atypical", "flag_atypical", "n_known"]

_MIN_PER_BUCKET = 2000  # sparse counts of answers are pooled with their neighbours until this many
_COPIES = 4  # blanked copies of calib, each case with its own blanking rate


def n_known(parsed: ParsedCases) -> np.ndarray:
    """Per case, how many fields are answered."""
    return (~unanswered_matrix(parsed.codes, FIELD_NAMES)).sum(axis=1, dtype=np.int32)


def surprise(kb: KnowledgeBase, parsed: ParsedCases, known: np.ndarray | None = None) -> np.ndarray:
    """Average negative log-likelihood per answered field, shape (n_cases,) (``known``:
    :func:`n_known`, if the caller has it)."""
    return -log_density(kb, parsed) / np.maximum(n_known(parsed) if known is None else known, 1)


def _blanked(parsed: ParsedCases, rng: np.random.Generator) -> ParsedCases:
    """Each case's optional answers hidden at its own random rate."""
    rate = rng.uniform(0.0, 1.0, size=len(parsed))
    return parsed.blanked({f.name: rng.random(len(parsed)) < rate for f in FIELDS if not f.required})


def fit_atypical(kb: KnowledgeBase, parsed_calib: ParsedCases, quantile: float, *, seed: int = 0) -> dict:
    """Thresholds per number of answered fields, from ``calib`` and blanked copies of it."""
    rng = np.random.default_rng(seed)
    samples = [parsed_calib] + [_blanked(parsed_calib, rng) for _ in range(_COPIES)]
    counts = [n_known(p) for p in samples]
    scores = np.concatenate([surprise(kb, p, k) for p, k in zip(samples, counts)])
    known = np.concatenate(counts)
    groups: list[list[int]] = [[]]
    for k in range(len(FIELDS) + 1):
        groups[-1].append(k)
        if np.isin(known, groups[-1]).sum() >= _MIN_PER_BUCKET:
            groups.append([])
    if len(groups) > 1:  # a short (or empty) last group joins the one before it
        last = groups.pop()
        groups[-1].extend(last)
    thresholds = np.empty(len(FIELDS) + 1)
    for group in groups:
        mask = np.isin(known, group)
        thresholds[group] = np.quantile(scores[mask], 1 - quantile) if mask.any() else np.inf
    return {"quantile": quantile, "thresholds_by_n_known": thresholds.tolist(), "n_calib": int(len(parsed_calib)),
            "n_reference": int(len(scores))}


def flag_atypical(kb: KnowledgeBase, parsed: ParsedCases, fitted: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flag, score, threshold) per case: flagged when the score is above the threshold for its
    number of answered fields."""
    known = n_known(parsed)
    scores = surprise(kb, parsed, known)
    threshold = np.asarray(fitted["thresholds_by_n_known"])[known]
    return scores > threshold, scores, threshold
