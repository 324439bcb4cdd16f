"""The features of a fitted :class:`pipeline.model.features.CaseFeaturizer` without scikit-learn.

Scoring needs only the featuriser's centres and scales and :func:`featurize_codes`; holding them
here keeps scikit-learn (about 1.5 s to import) out of ``predict()`` and ``kneepain score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import FIELDS

__all__ = ["CodeFeatures", "feature_names", "featurize_codes"]

_LOG_FLOOR_DAYS = 1e-4


def numeric_scale(name: str, values: np.ndarray) -> np.ndarray:
    """A number on the scale its features use: the duration in log days, the others as they are."""
    if name == "symptom_duration_days":
        return np.log(np.maximum(values, _LOG_FLOOR_DAYS))
    return values


def feature_names() -> list[str]:
    """The feature columns, in order (see :mod:`pipeline.model.features` for the layout)."""
    names = []
    for f in FIELDS:
        if f.kind == "tristate":
            names += [f"{f.name}=yes", f"{f.name}=no"]
        elif f.kind == "category":
            names += [f"{f.name}={v}" for v in f.allowed]
        else:
            names += [f.name, f"{f.name}^2"] + ([] if f.required else [f"{f.name}=unknown"])
    return names


def featurize_codes(codes: dict[str, np.ndarray], center: dict[str, float], scale: dict[str, float],
                    dtype=np.float64, order: Literal["C", "F"] = "F") -> np.ndarray:
    """The feature matrix from schema codes (see :mod:`pipeline.model.features` for the layout),
    Fortran-ordered (one contiguous column per feature, as training has always had it) or, with
    ``order="C"``, one contiguous row per case (what the exact product of the scoring path reads)."""
    n = len(codes["sex"])
    blocks = []
    for f in FIELDS:
        c = codes[f.name]
        if f.kind == "tristate":
            blocks += [c == 1, c == 0]
        elif f.kind == "category":
            blocks += [c == i for i in range(len(f.allowed))]
        else:
            x = numeric_scale(f.name, c.astype(np.float64))
            missing = np.isnan(x)
            z = np.where(missing, 0.0, (x - center[f.name]) / scale[f.name])
            blocks += [z, z * z]
            if not f.required:
                blocks.append(missing)
    if not blocks:
        return np.empty((n, 0), dtype=dtype, order=order)
    if order == "C":
        return np.column_stack(blocks).astype(dtype, copy=False)
    return np.vstack(blocks).astype(dtype, copy=False).T


@dataclass(frozen=True)
class CodeFeatures:
    """A fitted featuriser's numbers: ``center_`` and ``scale_`` per numeric field, and the dtype."""

    center_: dict[str, float]
    scale_: dict[str, float]
    dtype: str = "float64"

    @property
    def n_features_out_(self) -> int:
        return len(feature_names())

    def transform(self, X: ParsedCases | pd.DataFrame) -> np.ndarray:
        parsed = X if isinstance(X, ParsedCases) else parse_cases(X)
        return featurize_codes(parsed.codes, self.center_, self.scale_, np.dtype(self.dtype))
