"""Probabilities of a fitted model computed from its arrays, without BLAS.

The candidates are ``Pipeline(CaseFeaturizer, LogisticRegression | MLPClassifier |
HistGradientBoostingClassifier)``, optionally temperature-calibrated. For the logistic model and
the MLP, :class:`ArrayScorer` holds the arrays (the featuriser's centres and scales, weights,
intercepts, the inverse temperature) and computes the probabilities with
:func:`pipeline.core.blas.dot_exact` (the first layer as sums of its weights' rows, picked by the
answers: :class:`pipeline.model.codefeatures.CodeLinear`), so the same case gives the same
probabilities in every process and thread, alone or in a batch (a BLAS product's summation order
depends on the thread count). Gradient boosting makes no matrix products; it, and anything else, is
scored by scikit-learn on one BLAS thread. The formulas are scikit-learn's (``predict_proba`` of
the model, then the temperature calibrator's ``softmax(beta * logits)``); a test holds them to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from pipeline.core.blas import dot_exact, one_blas_thread
from pipeline.core.cases import in_blocks
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.rowwise import softmax_rows
from pipeline.core.special import expit
from pipeline.model.codefeatures import CodeFeatures, CodeLinear, code_linear, featurize_codes

__all__ = ["ACTIVATIONS", "BLOCK_ROWS", "ArrayScorer", "array_scorer", "predict_proba"]

BLOCK_ROWS = 8192  # cases featurised at once: a few MB of features, whatever the chunk
_EPS = 1e-12  # scikit-learn's when it turns probabilities into logits for temperature scaling
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh, "logistic": expit, "identity": lambda z: z}


@dataclass(frozen=True)
class ArrayScorer:
    """A logistic model (one layer, softmax of the logits) or an MLP (hidden layers, then softmax)."""

    featurizer: CodeFeatures  # a fitted CaseFeaturizer's numbers (scoring needs no scikit-learn)
    weights: tuple[np.ndarray, ...]  # per layer (n_out, n_in), C-contiguous: dot_exact's layout
    intercepts: tuple[np.ndarray, ...]
    activation: str = "identity"  # of the hidden layers
    beta: float | None = None  # inverse temperature, when calibrated
    from_proba: bool = False  # calibrated on probabilities (an MLP has no decision function)

    def uncalibrated(self) -> "ArrayScorer":
        """The same model without its temperature."""
        return replace(self, beta=None)

    def predict_proba(self, parsed: ParsedCases) -> np.ndarray:
        """Probabilities, scored in blocks of :data:`BLOCK_ROWS` cases: every case's numbers depend
        on its own row only, and the features of a block stay small (150 floats a case)."""
        if not isinstance(parsed, ParsedCases):
            parsed = parse_cases(parsed)
        return in_blocks(self._proba, parsed.codes, BLOCK_ROWS)

    @cached_property
    def _first_layer(self) -> CodeLinear | None:
        """The first layer's product from the codes (float64 features; else None: featurise, then multiply)."""
        f = self.featurizer
        if np.dtype(f.dtype) != np.float64:
            return None
        return code_linear(self.weights[0], f.center_, f.scale_, f.duration_knots)

    def _proba(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        f = self.featurizer
        if self._first_layer is not None:
            z = self._first_layer(codes)
        else:
            z = dot_exact(featurize_codes(codes, f.center_, f.scale_, np.dtype(f.dtype), order="C",
                                          duration_knots=f.duration_knots), self.weights[0])
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.intercepts)):
            if i > 0:
                z = dot_exact(z, w)
            z += b
            if i < last:
                z = ACTIVATIONS[self.activation](z)
        if self.beta is None:
            return softmax_rows(z)
        logits = np.log(softmax_rows(z) + _EPS) if self.from_proba else z
        proba = softmax_rows(self.beta * logits)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba


def _unwrap(estimator: Any) -> tuple[Any, float | None] | None:
    """(the features -> model pipeline, inverse temperature or None) or None if not of that form."""
    from sklearn.calibration import CalibratedClassifierCV

    if not isinstance(estimator, CalibratedClassifierCV):
        return estimator, None
    if estimator.method != "temperature" or len(estimator.calibrated_classifiers_) != 1:
        return None
    inner = estimator.calibrated_classifiers_[0]
    return getattr(inner.estimator, "estimator", inner.estimator), float(inner.calibrators[0].beta_)  # FrozenEstimator


def array_scorer(estimator: Any) -> ArrayScorer | None:
    """An :class:`ArrayScorer` for a fitted (calibrated) features -> logistic or MLP pipeline, else None."""
    if isinstance(estimator, ArrayScorer):
        return estimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from pipeline.model.features import CaseFeaturizer

    unwrapped = _unwrap(estimator)
    if unwrapped is None:
        return None
    pipe, beta = unwrapped
    if not (isinstance(pipe, Pipeline) and len(pipe.steps) == 2 and isinstance(pipe.steps[0][1], CaseFeaturizer)):
        return None
    fitted, model = pipe.steps[0][1], pipe.steps[1][1]
    if len(getattr(model, "classes_", ())) < 3 or not isinstance(model, (LogisticRegression, MLPClassifier)):
        return None  # a binary model has one output column (not ours); other estimators are not arrays
    features = CodeFeatures(dict(fitted.center_), dict(fitted.scale_), fitted.dtype,
                            tuple(fitted.duration_knots))
    if isinstance(model, LogisticRegression):
        return ArrayScorer(features, (np.ascontiguousarray(model.coef_, dtype=np.float64),),
                           (np.asarray(model.intercept_, dtype=np.float64),), beta=beta)
    if isinstance(model, MLPClassifier) and model.out_activation_ == "softmax" and model.activation in ACTIVATIONS:
        return ArrayScorer(features, tuple(np.ascontiguousarray(w.T, dtype=np.float64) for w in model.coefs_),
                           tuple(np.asarray(b, dtype=np.float64) for b in model.intercepts_),
                           activation=model.activation, beta=beta, from_proba=True)
    return None


def predict_proba(estimator: Any, parsed: ParsedCases, scorer: ArrayScorer | None = None) -> np.ndarray:
    """Class probabilities, shape (n_cases, n_classes): from ``scorer`` when given, else by
    scikit-learn on one BLAS thread."""
    if scorer is not None:
        return scorer.predict_proba(parsed)
    with one_blas_thread():
        return np.asarray(estimator.predict_proba(parsed), dtype=np.float64)
