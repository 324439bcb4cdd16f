"""Which labelled rows a model was fitted on, found by their answers rather than by their file.

`kneepain evaluate --data FILE` refuses a file the model was fitted on by its bytes. The same rows
saved again (another Parquet compression, as CSV, or with rows added) have other bytes, and their
figures would be reported as held out. A row's fingerprint is a 64-bit hash of its parsed answers
(every field of the schema, as the parser reads it, so ``"27.5"`` in a CSV and ``27.5`` in Parquet
are one answer, and so are 27.3 and its float32 27.299999) and its condition:
:func:`fitted_fingerprints` takes those of the splits a model was fitted on, where they can still
be found with the bytes its manifest records, and the evaluation leaves out the rows that have
one of them.

Two different cases share a fingerprint only if every answer (to float32 precision; the answers
have at most four significant digits) and the condition are the same; such a case was in the
fitting data in every respect that matters to the model, so leaving it out is right either way.
The hash is splitmix64 over the answers' bits, in numpy alone: the same in every process,
platform and library version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.core.files import sha256_file
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import FIELDS
from pipeline.data.datasets import labels

__all__ = ["FITTED_SPLITS", "HELD_OUT_SPLITS", "FittedRows", "case_fingerprints", "cases_digest",
           "fitted_fingerprints", "split_matches"]

FITTED_SPLITS = ("train", "valid", "calib")  # the synthetic splits a model is trained, calibrated and given its decision layer on
# the synthetic splits a model is not trained on, and what each is for
HELD_OUT_SPLITS = {"valid": "calibrates the model and gives the validation log loss that moves the champion alias",
                   "calib": "fits the decision layer's thresholds (the differential's coverage, the atypical flag)",
                   "test": "gives the evaluation's held-out figures", "shift": "gives the held-out figures under "
                   "another case mix"}
_GOLDEN = 0x9E3779B97F4A7C15  # a column's salt is its position times this, modulo 2**64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element by element (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def case_fingerprints(parsed: ParsedCases, condition: np.ndarray) -> np.ndarray:
    """Per case, a uint64 hash of its parsed answers and its ``condition`` (an index into
    :data:`pipeline.core.schema.CONDITIONS`). An unanswered field counts as one answer, whatever
    spelling left it blank."""
    h = np.zeros(len(condition), dtype=np.uint64)
    columns = [*(parsed.codes[f.name] for f in FIELDS), np.asarray(condition)]
    for j, column in enumerate(columns, start=1):
        # as float32 first: a file saved with 32-bit numbers (bmi 27.3 as 27.299999) is the same case
        values = np.asarray(column, dtype=np.float64).astype(np.float32).astype(np.float64)
        values = np.where(np.isnan(values), np.nan, values) + 0.0  # one NaN, and -0.0 as 0.0
        h = _mix(h ^ values.view(np.uint64) ^ np.uint64(_GOLDEN * j % 2**64))
    return h


def cases_digest(frame: pd.DataFrame) -> str:
    """The SHA-256 of a labelled frame's cases, whatever file held them or in what order: of its
    rows' :func:`case_fingerprints`, sorted. The same cases written by another pyarrow (a Parquet
    file records its writer), compressed otherwise or shuffled have one digest; a metric that is a
    mean over the rows, such as a log loss, compares between two frames of one digest."""
    fingerprints = np.sort(_frame_fingerprints(frame))
    return hashlib.sha256(fingerprints.astype("<u8").tobytes()).hexdigest()


def _frame_fingerprints(frame: pd.DataFrame) -> np.ndarray:
    """The fingerprints of the rows of a labelled frame."""
    return case_fingerprints(parse_cases(frame), labels(frame))


def _split_fingerprints(path: Path) -> np.ndarray:
    """The fingerprints of the rows of a labelled split's Parquet file."""
    return _frame_fingerprints(pd.read_parquet(path))


class FittedRows(NamedTuple):
    """:func:`fitted_fingerprints`' result."""

    fingerprints: np.ndarray  # uint64
    found: list[str]  # the fitting splits whose rows are in ``fingerprints``
    not_found: list[str]  # those the manifest records that could not be checked
    folder: str  # where the splits were looked for


def fitted_fingerprints(manifest: dict[str, Any], data: Path) -> FittedRows:
    """The fingerprints of the rows of the splits in ``data`` the model was fitted on, where
    a split's file has the SHA-256 its manifest records; the splits found; and those the manifest
    records that were not found so (missing, generated again since, or a user's ``--extra-data``
    file, whose path the manifest does not keep)."""
    recorded = manifest.get("data_sha256") or {}
    parts, found, not_found = [], [], []
    for name, digest in recorded.items():
        path = Path(data) / f"{name}.parquet"
        if name not in FITTED_SPLITS or not path.is_file() or sha256_file(path) != digest:
            not_found.append(name)
            continue
        parts.append(_split_fingerprints(path))
        found.append(name)
    fingerprints = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return FittedRows(fingerprints, found, not_found, str(data))


def split_matches(parsed: ParsedCases, condition: np.ndarray, data: Path, splits: tuple[str, ...]) -> np.ndarray:
    """Per case, the name of the synthetic split of ``splits`` in ``data`` that holds the same case
    (every answer and the condition: :func:`case_fingerprints`), the first in that order; ``""``
    where none does (or the split's file is not there)."""
    found = np.full(len(condition), "", dtype=object)
    mine = case_fingerprints(parsed, condition)
    for name in splits:
        path = Path(data) / f"{name}.parquet"
        if not path.is_file():
            continue
        found[(found == "") & np.isin(mine, _split_fingerprints(path))] = name
    return found
