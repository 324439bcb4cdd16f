"""Features for the classifier, derived from the schema (no hand-written column list).

:class:`CaseFeaturizer` is a scikit-learn transformer from case DataFrames (raw text or typed)
to a dense float matrix built from the schema's integer codes, which is far cheaper than a generic
``OneHotEncoder`` over string columns and gives the same one-hot features:

- a tri-state field gives two columns, ``=yes`` and ``=no``; unknown is both 0, kept distinct
  from "no";
- a category gives one column per allowed value; unknown is all 0 (a value outside the schema
  never gets here: validation rejects it with its row and column);
- a number is imputed with its training mean, standardised, given a squared term (the knowledge
  base's age, BMI and log-duration likelihoods are quadratic on that scale) and a missing
  indicator when it can be unknown; the duration is used on a log scale, with a hinge
  ``max(0, z - z_k)`` per knot of ``duration_knots`` (days), since a condition whose cases may
  count from a recent episode has a duration likelihood with two humps on that scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import FIELDS
from pipeline.model.codefeatures import DURATION_KNOTS_DAYS, checked_knots, feature_names, featurize_codes
from pipeline.model.codefeatures import numeric_scale as _numeric

__all__ = ["CaseFeaturizer", "featurize_codes"]

def _as_parsed(X) -> ParsedCases:
    if isinstance(X, ParsedCases):
        return X
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame of cases, got {type(X).__name__}.")
    return parse_cases(X)


class CaseFeaturizer(TransformerMixin, BaseEstimator):
    """Schema-derived features: one-hot tri-states and categories, standardised numbers.

    Accepts a DataFrame of cases (any columns; the schema's are read) or :class:`ParsedCases`.
    Features are float64 so that a case scored alone and in a batch gets the same numbers (in
    float32 the matrix products differed in the sixth digit with the batch size).
    Invalid cases raise :class:`pipeline.CaseValidationError`.
    """

    def __init__(self, dtype: str = "float64", duration_knots: tuple[float, ...] = DURATION_KNOTS_DAYS):
        self.dtype = dtype
        self.duration_knots = duration_knots

    def fit(self, X, y=None):
        checked_knots(self.duration_knots)
        parsed = _as_parsed(X)
        self.center_, self.scale_ = {}, {}
        for f in FIELDS:
            if f.kind in ("integer", "float"):
                x = _numeric(f.name, parsed.codes[f.name].astype(np.float64))
                mean = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
                sd = float(np.nanstd(x)) if np.isfinite(x).any() else 1.0
                self.center_[f.name], self.scale_[f.name] = mean, sd if sd > 0 else 1.0
        self.n_features_out_ = len(self.get_feature_names_out())
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "center_")
        return featurize_codes(_as_parsed(X).codes, self.center_, self.scale_, np.dtype(self.dtype),
                               duration_knots=tuple(self.duration_knots))

    def __setstate__(self, state):
        # a featuriser saved before the duration's knots existed has none: its features are as they were
        super().__setstate__({"duration_knots": (), **state})

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(feature_names(tuple(self.duration_knots)), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.input_tags.allow_nan = True
        return tags
