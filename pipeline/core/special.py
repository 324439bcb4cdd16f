"""The logistic function, its inverse, the standard normal CDF and the normal log-density, in numpy and
the standard library.

``scipy.special`` would give them too, but importing it loads scipy's array-API layer: about a
quarter of ``kneepain score``'s start-up. These agree with scipy's to a few units in the last place.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["expit", "logit", "ndtr", "norm_logpdf"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def expit(x):
    """``1 / (1 + exp(-x))``, element-wise."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit(p):
    """``log(p / (1 - p))``, element-wise (as ``log(p) - log1p(-p)``: no bits lost near 1)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):  # 0 and 1: -inf and inf, as scipy
        return np.log(p) - np.log1p(-p)


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def ndtr(x) -> np.ndarray:
    """P(Z <= x) for a standard normal Z, element-wise (for the knowledge base's small tables)."""
    return 0.5 * np.asarray(_ERFC(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)


def norm_logpdf(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(n, k) log N(x_i; mean_j, sd_j) for ``x`` of shape (n,) and ``params`` rows (mean, sd) of shape (k, 2)."""
    z = (x[:, None] - params[None, :, 0]) / params[None, :, 1]
    return -0.5 * z * z - np.log(params[None, :, 1]) - _LOG_SQRT_2PI
