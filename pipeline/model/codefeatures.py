"""The features of a fitted :class:`pipeline.model.features.CaseFeaturizer` without scikit-learn.

Scoring needs only the featuriser's centres and scales and :func:`featurize_codes`; holding them
here keeps scikit-learn (about 1.5 s to import) out of ``predict()`` and ``kneepain score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.core.answertables import AnswerTables, answer_tables
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import FIELDS

__all__ = ["DURATION", "DURATION_KNOTS_DAYS", "CodeFeatures", "CodeLinear", "checked_knots", "code_linear",
           "feature_names", "featurize_codes", "standardised"]

_LOG_FLOOR_DAYS = 1e-4
DURATION = "symptom_duration_days"
# where the duration's hinge features bend (days): a day, a week, a month, half a year. A condition
# whose cases may count from a recent episode has a duration likelihood with two humps on the log
# scale (the knowledge base's `episode`), which a quadratic alone cannot follow.
DURATION_KNOTS_DAYS: tuple[float, ...] = (1.0, 7.0, 30.0, 180.0)


def checked_knots(knots) -> tuple[float, ...]:
    """``knots`` as a tuple of floats, or ValueError unless they are a list or tuple of finite,
    positive, strictly increasing numbers of days (the hinge columns follow them in that order)."""
    values = list(knots) if isinstance(knots, (list, tuple)) else None
    if values is None or not all(isinstance(k, (int, float)) and not isinstance(k, bool) and math.isfinite(k) and k > 0
                                 for k in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"duration knots must be finite, positive, strictly increasing numbers of days, got {knots!r}")
    return tuple(float(k) for k in values)


def numeric_scale(name: str, values: np.ndarray) -> np.ndarray:
    """A number on the scale its features use: the duration in log days, the others as they are."""
    if name == DURATION:
        return np.log(np.maximum(values, _LOG_FLOOR_DAYS))
    return values


def standardised(name: str, values: np.ndarray, center: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A number's standardised value (0 where it is unknown) and where it is unknown."""
    x = numeric_scale(name, values.astype(np.float64))
    missing = np.isnan(x)
    return np.where(missing, 0.0, (x - center) / scale), missing


def feature_names(duration_knots: tuple[float, ...] = ()) -> list[str]:
    """The feature columns, in order (see :mod:`pipeline.model.features` for the layout), with a
    hinge column per knot of ``duration_knots`` (days) after the duration's own."""
    names = []
    for f in FIELDS:
        if f.kind == "tristate":
            names += [f"{f.name}=yes", f"{f.name}=no"]
        elif f.kind == "category":
            names += [f"{f.name}={v}" for v in f.allowed]
        else:
            names += [f.name, f"{f.name}^2"] + ([] if f.required else [f"{f.name}=unknown"])
            if f.name == DURATION:
                names += [f"{f.name}>{k:g}d" for k in duration_knots]
    return names


def _hinges(z: np.ndarray, missing: np.ndarray, center: float, scale: float, knots: tuple[float, ...]):
    """max(0, z - z_k) per knot (days; z_k its standardised log), 0 where the duration is unknown."""
    for k in knots:
        yield np.where(missing, 0.0, np.maximum(z - (math.log(k) - center) / scale, 0.0))


def featurize_codes(codes: dict[str, np.ndarray], center: dict[str, float], scale: dict[str, float],
                    dtype=np.float64, order: Literal["C", "F"] = "F",
                    duration_knots: tuple[float, ...] = ()) -> np.ndarray:
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
            z, missing = standardised(f.name, c, center[f.name], scale[f.name])
            blocks += [z, z * z]
            if not f.required:
                blocks.append(missing)
            if f.name == DURATION:
                blocks += _hinges(z, missing, center[f.name], scale[f.name], duration_knots)
    if not blocks:
        return np.empty((n, 0), dtype=dtype, order=order)
    if order == "C":
        return np.column_stack(blocks).astype(dtype, copy=False)
    return np.vstack(blocks).astype(dtype, copy=False).T


@dataclass(frozen=True)
class CodeLinear:
    """``featurize_codes(codes) @ weights.T`` computed from the codes: the one-hot features of the
    yes/no and category answers as sums of the weights' rows (:mod:`pipeline.core.answertables`),
    then each number's features (value, square, unknown), in a fixed order, so a case's numbers
    depend on its own row only."""

    answers: AnswerTables
    # name, centre, scale, (3 + n_knots, n_out) weights, the knots (days; the duration's only)
    numbers: tuple[tuple[str, float, float, np.ndarray, tuple[float, ...]], ...]

    def __call__(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        out = self.answers.sum(codes)
        for name, center, scale, w, knots in self.numbers:
            z, missing = standardised(name, codes[name], center, scale)
            out += z[:, None] * w[0]
            out += (z * z)[:, None] * w[1]
            out += missing[:, None] * w[2]  # the weight where unknown, else 0
            for j, hinge in enumerate(_hinges(z, missing, center, scale, knots)):
                out += hinge[:, None] * w[3 + j]
        return out


def code_linear(weights: np.ndarray, center: dict[str, float], scale: dict[str, float],
                duration_knots: tuple[float, ...] = ()) -> CodeLinear:
    """:class:`CodeLinear` of ``weights`` (n_out, n_features) over :func:`feature_names`' columns."""
    names = feature_names(duration_knots)
    column = {name: j for j, name in enumerate(names)}  # the hinges, whose names may coincide, go by position
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[1] != len(names):
        raise ValueError(f"weights have {w.shape[1]} columns; the features are {len(names)}")
    none = np.zeros(len(w))
    tables, numbers = [], []
    for f in FIELDS:
        if f.kind == "tristate":  # rows by code: no, yes, then unknown
            tables.append((f.name, np.stack([w[:, column[f"{f.name}=no"]], w[:, column[f"{f.name}=yes"]], none])))
        elif f.kind == "category":
            tables.append((f.name, np.stack([*(w[:, column[f"{f.name}={v}"]] for v in f.allowed), none])))
        else:
            unknown = w[:, column[f"{f.name}=unknown"]] if f"{f.name}=unknown" in column else none
            knots = tuple(duration_knots) if f.name == DURATION else ()
            first_hinge = column[f"{f.name}=unknown"] + 1 if knots else 0  # the hinges follow, in the knots' order
            numbers.append((f.name, float(center[f.name]), float(scale[f.name]),
                            np.stack([w[:, column[f.name]], w[:, column[f"{f.name}^2"]], unknown,
                                      *(w[:, first_hinge + j] for j in range(len(knots)))]), knots))
    return CodeLinear(answer_tables(tables), tuple(numbers))


@dataclass(frozen=True)
class CodeFeatures:
    """A fitted featuriser's numbers: ``center_`` and ``scale_`` per numeric field, and the dtype."""

    center_: dict[str, float]
    scale_: dict[str, float]
    dtype: str = "float64"
    duration_knots: tuple[float, ...] = ()  # days; () in a model trained before the hinges

    def __post_init__(self):
        object.__setattr__(self, "duration_knots", checked_knots(self.duration_knots))

    @property
    def n_features_out_(self) -> int:
        return len(feature_names(self.duration_knots))

    def transform(self, X: ParsedCases | pd.DataFrame) -> np.ndarray:
        parsed = X if isinstance(X, ParsedCases) else parse_cases(X)
        return featurize_codes(parsed.codes, self.center_, self.scale_, np.dtype(self.dtype),
                               duration_knots=self.duration_knots)
