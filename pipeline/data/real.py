"""Real labelled cases a user brings: validated row by row, and split into a part to train on and
a part held out to evaluate on (`kneepain evaluate --data FILE`, `kneepain train --extra-data FILE`).

A labelled file is any CSV or Parquet file in the case schema with the true ``condition`` and,
optionally, a clinician's ``reference_level`` (one of the four triage levels). A row that fails
validation is listed with its column, value and reason, never fatal for the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.core.config import LEVELS
from pipeline.core.errors import BatchInputError
from pipeline.core.parsing import parse_cases
from pipeline.core.schema import CONDITIONS, LABEL_COLUMN

__all__ = ["REFERENCE_COLUMN", "holdout_split", "validate_labelled"]

REFERENCE_COLUMN = "reference_level"


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("").str.strip().str.lower()


def validate_labelled(frame: pd.DataFrame, *, where: str = "cases") -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Split labelled cases into the valid rows and the reject lines.

    Returns
    -------
    valid : DataFrame
        The rows with a valid case, a known ``condition`` and, if given, a valid ``reference_level``.
    reference : ndarray of int, shape (n_valid,)
        Index into :data:`LEVELS` of each valid row's ``reference_level``, -1 where not given.
    rejects : DataFrame
        ``row`` (0-based, header excluded), ``column``, ``value``, ``reason``; a row may have several.

    Raises
    ------
    BatchInputError
        ``frame`` has no ``condition`` column.
    CaseValidationError
        A required case column is missing.
    """
    if LABEL_COLUMN not in frame.columns:
        raise BatchInputError(f"{where}: no {LABEL_COLUMN!r} column; labelled cases need the true condition, "
                              f"one of {', '.join(CONDITIONS)}.")
    parsed = parse_cases(frame, raise_on_error=False)
    problems = [parsed.errors[["row", "column", "value", "reason"]]]
    condition = _text(frame[LABEL_COLUMN])
    bad = ~condition.isin(CONDITIONS).to_numpy()
    problems.append(pd.DataFrame({"row": np.flatnonzero(bad), "column": LABEL_COLUMN,
                                  "value": frame[LABEL_COLUMN].astype("string").fillna("").to_numpy()[bad],
                                  "reason": f"not a condition; allowed: {', '.join(CONDITIONS)}"}))
    reference = np.full(len(frame), -1)
    if REFERENCE_COLUMN in frame.columns:
        given = _text(frame[REFERENCE_COLUMN])
        wrong = ((given != "") & ~given.isin(LEVELS)).to_numpy()
        problems.append(pd.DataFrame({"row": np.flatnonzero(wrong), "column": REFERENCE_COLUMN,
                                      "value": frame[REFERENCE_COLUMN].astype("string").to_numpy()[wrong],
                                      "reason": f"not a triage level; allowed: {', '.join(LEVELS)} or blank"}))
        lookup = {level: i for i, level in enumerate(LEVELS)}
        reference = given.map(lambda v: lookup.get(v, -1)).to_numpy(dtype=np.int64)
    rejects = pd.concat([p for p in problems if len(p)], ignore_index=True) if any(len(p) for p in problems) \
        else pd.DataFrame(columns=["row", "column", "value", "reason"])
    rejects = rejects.sort_values("row", kind="stable", ignore_index=True)
    keep = ~np.isin(np.arange(len(frame)), rejects["row"].to_numpy())
    valid = frame.iloc[np.flatnonzero(keep)].reset_index(drop=True)
    valid = valid.assign(**{LABEL_COLUMN: condition.to_numpy()[keep]})
    return valid, reference[keep], rejects


def holdout_split(cases: pd.DataFrame, fraction: float, *, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(to_train, held_out)``: ``fraction`` of the (valid, labelled) cases held out, stratified by
    condition where every condition present has at least two cases."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction == {fraction}, must be in [0, 1).")
    n_held = int(round(fraction * len(cases)))
    if n_held == 0:
        return cases.reset_index(drop=True), cases.iloc[:0]
    if n_held >= len(cases):
        raise ValueError(f"holding out {fraction:.0%} of {len(cases)} cases leaves none to train on.")
    counts = cases[LABEL_COLUMN].value_counts()
    stratify = cases[LABEL_COLUMN] if counts.min() >= 2 and n_held >= len(counts) else None
    keep, held = train_test_split(np.arange(len(cases)), test_size=n_held, random_state=seed, stratify=stratify)
    return cases.iloc[np.sort(keep)].reset_index(drop=True), cases.iloc[np.sort(held)].reset_index(drop=True)
