"""Softmax and log-sum-exp along the rows of an (n, k) array, for the scoring path.

The formulas are scipy's (the row's maximum subtracted before ``exp``); scipy 1.15+ routes them
through its array-API layer, which on a million rows of nine columns costs 4x (softmax) to 10x
(log-sum-exp) the arithmetic (in ``kneepain score``'s 16k-row chunks the saving is smaller: about
0.15 s per million rows). :func:`softmax_rows` gives scipy's bits;
:func:`logsumexp_rows` may differ from scipy's in the last bit (scipy adds the largest term apart).
"""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp_rows", "softmax_rows"]


def softmax_rows(z: np.ndarray) -> np.ndarray:
    """``exp(z)`` normalised along each row, shape of ``z``."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """``log(sum(exp(a)))`` of each row, shape (n,); ``-inf`` for a row of ``-inf``."""
    top = a.max(axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a row of -inf: log(0)
        return np.log(np.exp(a - safe[:, None]).sum(axis=1)) + safe
