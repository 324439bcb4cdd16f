"""Turn what a user hands over (a dict, a list of dicts, a DataFrame, a file path) into cases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.casefiles import read_case_file
from pipeline.core.errors import CaseValidationError
from pipeline.core.parsing import ParsedCases, parse_cases, parse_records

__all__ = ["as_frame", "as_parsed", "in_blocks", "read_case_file"]


def _records(cases: Any) -> list[dict] | None:
    """``cases`` as a list of dicts when it is a dict (one case) or a list or tuple of dicts; None
    for anything else; TypeError for a list or tuple holding something other than dicts."""
    if isinstance(cases, Mapping):
        return [dict(cases)]
    if isinstance(cases, (list, tuple)):
        odd = [i for i, c in enumerate(cases) if not isinstance(c, Mapping)]
        if odd:
            shown = ", ".join(f"cases[{i}] is of type {type(cases[i]).__name__}" for i in odd[:5])
            more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
            raise TypeError(f"a list of cases must hold dicts, one per case: {shown}{more}.")
        return [dict(c) for c in cases]
    return None


def as_frame(cases: Any) -> pd.DataFrame:
    """A DataFrame view of ``cases``: a dict (one case), a list of dicts, a DataFrame or a path."""
    if isinstance(cases, pd.DataFrame):
        return cases
    if isinstance(cases, (str, Path)):
        return read_case_file(cases)
    records = _records(cases)
    if records is None:
        raise TypeError(f"cases must be a dict, a list of dicts, a DataFrame or a path to a CSV or "
                        f"Parquet file, got {type(cases).__name__}.")
    return pd.DataFrame(records)


def as_parsed(cases: Any) -> ParsedCases:
    """Parsed, validated cases (anything :func:`as_frame` takes, or parsed cases); raises
    :class:`CaseValidationError` naming every bad value. Dicts are parsed without a DataFrame
    (:func:`pipeline.core.parsing.parse_records`: the same codes and errors)."""
    if isinstance(cases, ParsedCases):
        return cases
    records = _records(cases)
    if records:
        return parse_records(records)
    if records is None:
        frame = as_frame(cases)
        if len(frame) or len(frame.columns):
            return parse_cases(frame)
    raise CaseValidationError(pd.DataFrame({"row": [-1], "column": [""], "value": [""],
                                            "reason": ["no cases were given"]}))


def in_blocks(fn: Callable[[dict[str, np.ndarray]], np.ndarray], codes: dict[str, np.ndarray],
              size: int) -> np.ndarray:
    """``fn`` on the codes of ``size`` cases at a time, its rows stacked (one call when all fit).
    For row-wise work (each case's result depends on its own row only) whose intermediate arrays
    grow with the rows."""
    n = len(codes["sex"])
    if n <= size:
        return fn(codes)
    return np.concatenate([fn({k: v[start:start + size] for k, v in codes.items()}) for start in range(0, n, size)])
