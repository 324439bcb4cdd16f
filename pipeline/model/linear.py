"""Probabilities of a fitted logistic pipeline from its arrays, without BLAS.

The winning model is usually ``Pipeline(CaseFeaturizer, LogisticRegression)``, optionally
temperature-calibrated. :class:`LinearScorer` holds its arrays (the featuriser's centres and
scales, the coefficients, the intercepts, the inverse temperature) and computes
``softmax(beta * (X @ coef.T + intercept))`` with :func:`pipeline.core.blas.dot_exact`, so the same
case gives the same probabilities in every process and thread, alone or in a batch. Any other
estimator is scored by scikit-learn on one BLAS thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from pipeline.core.blas import dot_exact, one_blas_thread
from pipeline.core.parsing import ParsedCases
from pipeline.model.features import CaseFeaturizer

__all__ = ["LinearScorer", "linear_scorer", "predict_proba"]


@dataclass(frozen=True)
class LinearScorer:
    """``softmax(beta * (features(cases) @ coef.T + intercept))``."""

    featurizer: CaseFeaturizer
    coef: np.ndarray  # (n_classes, n_features), C-contiguous
    intercept: np.ndarray  # (n_classes,)
    beta: float = 1.0

    def predict_proba(self, parsed: ParsedCases) -> np.ndarray:
        logits = dot_exact(self.featurizer.transform(parsed), self.coef)
        logits += self.intercept
        if self.beta != 1.0:
            logits *= self.beta
        return softmax(logits, axis=1)


def _unwrap_pipeline(estimator: Any) -> tuple[Any, float] | None:
    """(the features -> logistic pipeline, inverse temperature) or None if not of that form."""
    from sklearn.calibration import CalibratedClassifierCV

    beta = 1.0
    if isinstance(estimator, CalibratedClassifierCV):
        if estimator.method != "temperature" or len(estimator.calibrated_classifiers_) != 1:
            return None
        inner = estimator.calibrated_classifiers_[0]
        estimator = getattr(inner.estimator, "estimator", inner.estimator)  # FrozenEstimator
        beta = float(inner.calibrators[0].beta_)
    return estimator, beta


def linear_scorer(estimator: Any) -> LinearScorer | None:
    """A :class:`LinearScorer` for a fitted (calibrated) features -> multinomial logistic pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    unwrapped = _unwrap_pipeline(estimator)
    if unwrapped is None:
        return None
    pipe, beta = unwrapped
    if not (isinstance(pipe, Pipeline) and len(pipe.steps) == 2):
        return None
    features, model = pipe.steps[0][1], pipe.steps[1][1]
    if not (isinstance(features, CaseFeaturizer) and isinstance(model, LogisticRegression)):
        return None
    if model.coef_.shape[0] != len(model.classes_):  # a binary model has one row: not ours
        return None
    return LinearScorer(features, np.ascontiguousarray(model.coef_, dtype=np.float64),
                        np.asarray(model.intercept_, dtype=np.float64), beta)


def predict_proba(estimator: Any, parsed: ParsedCases, scorer: LinearScorer | None = None) -> np.ndarray:
    """Class probabilities, shape (n_cases, n_classes): from ``scorer`` when given, else by
    scikit-learn on one BLAS thread."""
    if scorer is not None:
        return scorer.predict_proba(parsed)
    with one_blas_thread():
        return np.asarray(estimator.predict_proba(parsed), dtype=np.float64)
