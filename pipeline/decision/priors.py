"""The case mix of an unlabelled batch, and posteriors re-weighted to it (prior shift).

When a clinic sees the conditions in other proportions than the training data, but each
condition presents the same way (``p(answers | condition)`` unchanged: "prior shift" or "label
shift"), the model's posteriors are wrong only by the ratio of the priors. :func:`estimate_prior`
finds the batch's prior by the EM algorithm of Saerens, Latinne & Decaestecker (2002), "Adjusting
the outputs of a classifier to new a priori probabilities: a simple procedure", Neural
Computation 14(1):21-41: the maximum-likelihood prior given the calibrated posteriors.
:func:`adjust_posteriors` applies Bayes' rule with the new prior. The interval of each share comes
from the observed information of that likelihood (the delta method on the simplex), which costs
one pass over the batch, however large.

Written here rather than taken from a library: the method is a dozen lines of numpy, and the
libraries that have it (e.g. ``quapy``) bring a large dependency tree for one function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["PriorEstimate", "adjust_posteriors", "estimate_prior"]

_TINY = 1e-300


@dataclass(frozen=True)
class PriorEstimate:
    """The estimated class mix of a batch.

    Attributes
    ----------
    prior : ndarray of shape (n_classes,)
        The maximum-likelihood class shares, summing to 1.
    low, high : ndarrays of shape (n_classes,)
        Bounds of the ``level`` interval of each share, within [0, 1].
    training_prior : ndarray of shape (n_classes,)
        The class shares the posteriors were calibrated under.
    n_cases, n_iter : int
    converged : bool
    level : float
    """

    prior: np.ndarray
    low: np.ndarray
    high: np.ndarray
    training_prior: np.ndarray
    n_cases: int
    n_iter: int
    converged: bool
    level: float

    @property
    def ratio(self) -> np.ndarray:
        """``prior / training_prior``: the factor :func:`adjust_posteriors` multiplies by."""
        return self.prior / self.training_prior


def _check(proba: np.ndarray, training_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    training_prior = np.asarray(training_prior, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(training_prior):
        raise ValueError(f"proba has shape {proba.shape}, expected (n_cases, {len(training_prior)}) to match "
                         "training_prior.")
    if (training_prior <= 0).any() or not np.isclose(training_prior.sum(), 1.0):
        raise ValueError(f"training_prior == {training_prior.round(4).tolist()}, must be positive and sum to 1.")
    return proba, training_prior


def adjust_posteriors(proba: np.ndarray, training_prior: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Posteriors under ``prior`` from posteriors under ``training_prior`` (Bayes' rule, rows sum to 1)."""
    proba, training_prior = _check(proba, training_prior)
    weighted = proba * (np.asarray(prior, dtype=np.float64) / training_prior)
    return weighted / np.maximum(weighted.sum(axis=1, keepdims=True), _TINY)


def estimate_prior(proba: np.ndarray, training_prior: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-7,
                   level: float = 0.95) -> PriorEstimate:
    """EM estimate of the class mix of the cases behind ``proba``, with an interval per class.

    Parameters
    ----------
    proba : ndarray of shape (n_cases, n_classes)
        Calibrated posteriors of the batch under ``training_prior``.
    training_prior : ndarray of shape (n_classes,)
        The class shares of the data the model was trained and calibrated on.
    max_iter : int, default=1000
    tol : float, default=1e-7
        Stop when no share moves by more than this.
    level : float, default=0.95

    Returns
    -------
    PriorEstimate
    """
    proba, training_prior = _check(proba, training_prior)
    if len(proba) == 0:
        raise ValueError("proba has no rows: the class mix of an empty batch cannot be estimated.")
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"max_iter == {max_iter} and tol == {tol}, must be >= 1 and > 0.")
    # w[i, k] = p(x_i | k) / p(x_i) up to a factor per case: the likelihood of a prior pi is prod_i w_i . pi
    w = proba / training_prior
    prior, converged, n_iter = training_prior.copy(), False, 0
    while not converged and n_iter < max_iter:
        posterior = w * prior
        posterior /= np.maximum(posterior.sum(axis=1, keepdims=True), _TINY)
        new = posterior.mean(axis=0)
        converged = float(np.abs(new - prior).max()) < tol
        prior, n_iter = new, n_iter + 1
    low, high = _interval(w, prior, level)
    return PriorEstimate(prior, low, high, training_prior, len(proba), n_iter, converged, level)


def _interval(w: np.ndarray, prior: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Delta-method interval from the observed information, the largest share as the free one's complement."""
    k = len(prior)
    ref = int(np.argmax(prior))
    free = [j for j in range(k) if j != ref]
    lik = np.maximum(w @ prior, _TINY)
    d = (w[:, free] - w[:, [ref]]) / lik[:, None]  # gradient of each case's log likelihood
    info = d.T @ d
    cov_free = np.linalg.pinv(info)
    cov = np.zeros((k, k))
    cov[np.ix_(free, free)] = cov_free
    cov[ref, ref] = cov_free.sum()
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    z = float(norm.ppf(0.5 + level / 2))
    return np.clip(prior - z * se, 0.0, 1.0), np.clip(prior + z * se, 0.0, 1.0)
