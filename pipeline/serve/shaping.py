"""What a `kneepain score` output holds: the columns chosen, input columns passed through, floats
written compactly, and the long texts as short codes.

- **floats** in a CSV output are rounded to :data:`FLOAT_DIGITS` decimal places (``0.000001``
  apart at most from the full number). Every decision in the file (``prediction``, ``top<k>``,
  ``triage``, ``differential``, ...) was made on the full numbers before rounding; Parquet keeps
  them whole.
- **texts**: ``triage_reason``, ``advice``, ``safety_net`` and ``ask_next`` repeat a few long
  sentences on every row. With ``texts="codes"`` (the command's default) they are written as short
  codes (``red_flag:possible_dvt``, ``see_doctor:bakers_cyst``, a rule's or a question's name), and
  :func:`text_lookup` gives each code's text (``OUTPUT.texts.csv`` beside a file output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.errors import BatchInputError
from pipeline.core.schema import ID_COLUMN, normalise_header, quoted_name, top_k_problem, whole_number

__all__ = ["FLOAT_DIGITS", "MAX_FLOAT_DIGITS", "OutputOptions", "column_list", "float_digits_allowed", "input_columns",
           "parse_column_list", "round_floats", "rounded",
           "columns_problem", "select_columns", "text_lookup"]

FLOAT_DIGITS = 6
MAX_FLOAT_DIGITS = 17  # a double's every digit: more is the same number
_SEP = "|"


def float_digits_allowed(digits: Any) -> bool:
    """Whether ``digits`` is a number of decimal places a CSV output can keep: None (every digit) or a
    :func:`pipeline.core.schema.whole_number` in 0..:data:`MAX_FLOAT_DIGITS`."""
    count = whole_number(digits)
    return digits is None or (count is not None and 0 <= count <= MAX_FLOAT_DIGITS)


@dataclass(frozen=True)
class OutputOptions:
    """How a scoring output is shaped (the defaults are ``predict()``'s full output).

    ``columns``: the output columns to write, in that order (None: all); ``keep_input``: append the
    input's own columns (as text) to each scored row; ``float_digits``: decimal places of floats in
    a CSV (None: every digit); ``texts``: ``"full"`` or ``"codes"``."""

    columns: tuple[str, ...] | None = None
    keep_input: bool = False
    top_k: int = 3
    float_digits: int | None = None
    texts: str = "full"

    def __post_init__(self) -> None:
        if (problem := top_k_problem(self.top_k)) is not None:
            raise BatchInputError(f"top_k == {self.top_k!r}, {problem}.")
        if not float_digits_allowed(self.float_digits):
            raise BatchInputError(f"float_digits == {self.float_digits!r}, must be None or an integer in "
                                  f"0..{MAX_FLOAT_DIGITS}.")
        if self.texts not in ("full", "codes"):
            raise BatchInputError(f"texts == {self.texts!r}, must be 'full' or 'codes'.")


def input_columns(names: Sequence[str], taken: Sequence[str], *, keep_ids: bool = False) -> dict[str, str]:
    """Input column -> its output name: the input's own name, or ``input_<name>`` if the output
    already has it (``input_input_<name>`` if the input has that too, and so on: no column is lost).
    The case id is left out (the output has its own) unless ``keep_ids``."""
    names = [n for n in names if keep_ids or normalise_header(n) != "case_id"]
    used = {normalise_header(t) for t in taken}
    clashing = {n for n in names if normalise_header(n) in used}
    used |= {normalise_header(n) for n in names if n not in clashing}  # the names that stay as they are
    out = {}
    for n in names:
        name = n
        while n in clashing and normalise_header(name) in used:
            name = f"input_{name}"
        used.add(normalise_header(name))
        out[n] = name
    return out


def parse_column_list(text: str) -> tuple[str, ...]:
    """``--columns``' names: comma-separated, each stripped of surrounding spaces, and quoted as in
    CSV where a name holds a comma or begins or ends with a space (``case_id,"note, free text"``,
    ``" Extra "``): a quoted name is taken as it is written, spaces included.

    Raises
    ------
    ValueError
        A quote is not closed (``"case_id``): the names after it would be read into one.
    """
    names: list[str] = []
    at = 0
    while True:
        start = len(text) - len(text[at:].lstrip())
        if text.startswith('"', start):
            name, at = _quoted(text, start)
            end = text.find(",", at)
            tail = text[at:end if end >= 0 else len(text)]
            names.append(name + tail.rstrip())  # text after the closing quote (a"b" c) joins the name, as in CSV
        else:
            end = text.find(",", at)
            names.append(text[at:end if end >= 0 else len(text)].strip())
        if end < 0:
            return tuple(names)
        at = end + 1


def _quoted(text: str, opening: int) -> tuple[str, int]:
    """The quoted name whose opening quote is at ``opening`` (``""`` in it is a quote) and where it
    ends (after its closing quote); ValueError if it has none."""
    parts: list[str] = []
    at = opening + 1
    while True:
        close = text.find('"', at)
        if close < 0:
            raise ValueError(f"the quote at character {opening + 1} is not closed; a name in quotes ends with another "
                             '(e.g. case_id,"note, free text")')
        parts.append(text[at:close])
        if not text.startswith('"', close + 1):
            return "".join(parts), close + 1
        parts.append('"')
        at = close + 2


def column_list(names: Sequence[str]) -> str:
    """``names`` as ``--columns`` takes them (:func:`parse_column_list`'s inverse): a name with a
    comma or a quote, or one that begins or ends with a space, quoted."""
    return ",".join(quoted_name(n) for n in names)


def select_columns(schema: pa.Schema, columns: Sequence[str] | None, kept: Sequence[str] = ()) -> pa.Schema:
    """``schema`` restricted to ``columns``, in their order; an unknown name is an error naming the
    choices, as is a choice of none of the input columns ``kept`` (``--keep-input-columns``, which
    would then keep nothing; the case id is not among them, the output having its own)."""
    if columns is None:
        return schema
    if (problem := columns_problem(schema.names, columns)) is not None:
        raise BatchInputError(f"--columns: {problem}")
    if kept and not set(kept) & set(columns):
        raise BatchInputError(f"--columns names none of the columns --keep-input-columns adds (the input's columns "
                              "other than a case_id, which the output has as its own), so the flag would keep none; name "
                              f"those to keep among {column_list(kept)}, or leave out --keep-input-columns.")
    return pa.schema([schema.field(c) for c in columns])


def columns_problem(names: Sequence[str], columns: Sequence[str]) -> str | None:
    """What is wrong with choosing ``columns`` among the output columns ``names`` (None if nothing):
    none chosen, a name that is not an output column (the choices named), or a name given twice."""
    if not columns:
        return f"no column chosen; choose from {column_list(names)}."
    unknown = [c for c in columns if c not in names]
    if unknown:
        verb = "is not an output column" if len(unknown) == 1 else "are not output columns"
        # the one column named after what the cases have: say why the other is not there
        why = (f" (the cases have no {ID_COLUMN} column: 'row' numbers them)" if ID_COLUMN in unknown and "row" in names
               else f" (the cases have a {ID_COLUMN} column, which names them)" if "row" in unknown and ID_COLUMN in names
               else "")
        return f"{', '.join(map(repr, unknown))} {verb}{why}; choose from {column_list(names)}."
    repeated = sorted({c for c in columns if list(columns).count(c) > 1})
    return f"{', '.join(map(repr, repeated))} given twice." if repeated else None


def round_floats(table: pa.Table, digits: int | None) -> pa.Table:
    """Every float column of ``table`` rounded to ``digits`` decimal places, half to even, as
    Python's ``round`` rounds (correctly: from the double's exact value), so a CSV writes at most
    ``digits`` decimals. See :func:`rounded`."""
    if digits is None:
        return table
    for i, kind in enumerate(table.schema.types):
        if pa.types.is_floating(kind):
            column = table.column(i)
            values = rounded(column.to_numpy(), digits)
            mask = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
            table = table.set_column(i, table.field(i), pa.array(values, type=kind, mask=mask))
    return table


def rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` decimals as Python's ``round`` rounds each, at numpy's speed.

    numpy scales by 10**digits, rounds and divides back. The scaling rounds too, so a value whose
    scaled form lies within a unit in the last place of a tie (..., 0.5) may round the wrong way:
    from about 12 decimals on, numpy's last digit was off by one in up to 7% of probabilities
    (0.9798140340786081 at 16 gave ...082). Only those values (and scaled values of 2**52 and
    more, which have no fraction left to round) are rounded by Python, one at a time; for the
    others numpy's result is the same double (the division of a whole number below 2**53 by a
    power of ten up to 10**22, both exact, is correctly rounded). A value whose scaled form is
    2**53 or more is its own rounding: a step of 10**-digits is finer than the step between its
    neighbouring doubles, so the nearest double to the rounded decimal is the value itself (most
    probabilities at 16 and 17 digits). ``digits``: 0 to 17."""
    values = np.asarray(values)
    nmant = np.finfo(values.dtype).nmant
    with np.errstate(invalid="ignore", over="ignore"):  # an infinity has no fraction: never doubtful
        out = np.round(values, digits)
        scaled = np.abs(values * values.dtype.type(10.0 ** digits))  # as numpy scales them, in their own type
        near_tie = np.abs(scaled - np.floor(scaled) - 0.5) <= 2 * np.spacing(scaled)
        # with a margin for the scaling's own rounding; past the largest float too (1.7e308 at 2 decimals)
        itself = scaled >= 2.0 ** (nmant + 1) * (1 + 2.0 ** (4 - nmant))
    out[itself] = values[itself]
    # from 2**52 to 2**53 numpy's scaling has nothing left to round, and the value is not yet its own rounding
    doubtful = np.flatnonzero((near_tie | ~(scaled < 2.0 ** nmant)) & ~itself & np.isfinite(values))
    if len(doubtful):
        out[doubtful] = [round(float(v), digits) for v in values[doubtful]]
    return out


def text_lookup(codes: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Each long text column's codes and their texts (:meth:`pipeline.decision.layer.Decision.text_codes`):
    ``column``, ``code``, ``text``."""
    rows = [(column, code, text) for column, mapping in codes.items() for code, text in mapping.items()]
    return pd.DataFrame(np.array(rows, dtype=object).reshape(-1, 3), columns=["column", "code", "text"])
