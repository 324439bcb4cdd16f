"""Parsing cases: text or typed columns into validated integer codes, once, with errors that name
row, column, value and what is allowed.

Parsed cases are held as integer codes: a tri-state is ``1`` (yes), ``0`` (no) or ``-1``
(unknown); a category is its index in :attr:`Field.allowed` or ``-1``; a number is a float with
``NaN`` for unknown.
"""

from __future__ import annotations

import datetime
import decimal
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import CaseValidationError
from pipeline.core.schema import (
    _TRISTATE_UNKNOWN,
    BETWEEN_WORDS,
    CATEGORY_FIELDS,
    DAYS_PER_YEAR,
    FIELD_NAMES,
    FIELDS,
    ID_COLUMN,
    LABEL_COLUMN,
    MALE_NOT_ASKED,
    NAMED_COLUMNS,
    REFERENCE_COLUMN,
    SEVERITY_COLUMN,
    SEX_MALE,
    TRISTATE_FIELDS,
    TRISTATE_NO,
    TRISTATE_YES,
    UNKNOWN,
    Field,
    field,
    max_duration_days,
    normalise_header,
    quoted_name,
    repeated_columns,
    visible,
)
from pipeline.core.sizes import FEW_CASES

__all__ = ["DUPLICATE_ID", "ParsedCases", "code_rows", "codes_to_frame", "codes_to_text_frame", "ignored_columns_message",
           "is_blank", "named_ids", "normalise_ids", "not_utf8", "not_utf8_mask", "parse_cases", "parse_records",
           "premise_denied", "required_columns_error", "shown_values", "unanswered", "unanswered_matrix", "utf8_or_bytes",
           "whole_number_fields"]


# what forms call a required field that no spelling of its name is near
_OTHER_NAMES = {"sex": ("gender", "sex/gender", "gender/sex")}


def required_columns_error(names) -> CaseValidationError | None:
    """The error for column names (as the input spells them: they are folded by
    :func:`normalise_header` here) that lack a required field (one line per missing field, naming
    a column that looks like it: ``Age (years)``, ``Gender``), or None when none is missing."""
    names = list(names)
    folded = {normalise_header(n) for n in names}
    missing = [f.name for f in FIELDS if f.required and f.name not in folded]
    if not missing:
        return None
    reason = "required column is missing (required columns: " + ", ".join(f.name for f in FIELDS if f.required) + ")"
    others = [str(n) for n in names if normalise_header(n) not in NAMED_COLUMNS]
    reasons = []
    for name in missing:  # a column that looks like it (`Age (years)`), named: the fix is to rename it
        near = [n for n in others if _near_field(n, [name]) == name or normalise_header(n) in _OTHER_NAMES.get(name, ())]
        reasons.append(reason + (f"; is {column_name(near[0])!r} it? Name that column {name}" if near else ""))
    return CaseValidationError(pd.DataFrame({"row": [-1] * len(missing), "column": missing,
                                             "value": [""] * len(missing), "reason": reasons}))


def ignored_columns_message(columns: tuple[str, ...] | list[str], where: str = "", also: tuple[str, ...] = ()) -> str:
    """The one warning for input columns that are not case fields (``where``: a file, or nothing),
    with the field (or a name of ``also``, such as labelled cases' label columns) a name looks like
    a misspelling of: an answer under a misspelt name is unknown, and an unknown red-flag answer
    can lower the triage."""
    names = []
    for c in columns[:_LISTED]:
        if not str(c).strip():
            names.append("(a column without a name)")
            continue
        near = _near_field(str(c), [*_SPELLED, *also])
        shown = column_name(quoted_name(str(c)))
        names.append(f"{shown} (did you mean {near}?)" if near else shown)
    more = f" and {len(columns) - _LISTED:,} more" if len(columns) > _LISTED else ""
    return f"{where + ': ' if where else ''}ignoring columns that are not case fields: {', '.join(names)}{more}"


def _near_field(name: str, spelled: list[str]) -> str | None:
    """The field (or name of ``spelled``) a column name looks like: a near spelling of it, or of
    it without a form's unit, question mark or colon (``BMI (kg/m²)``, ``Fever?``, ``Smoker
    (Y/N)``), or the one name of which it is a whole word (``Duration (days)`` for
    symptom_duration_days, ``ID`` for case_id); None when none or several are (``Swelling``, a
    word of four fields, is none of them by its spelling: it was guessed as leg_swelling)."""
    core = normalise_header(_FORM_DECORATION.sub("", name))
    if core in spelled:  # `Onset?` is onset, though "onset" is a word of pain_delayed_onset too
        return core
    holding = [s for s in spelled if core and core in s.split("_")]
    if len(holding) > 1:
        return None
    near = difflib.get_close_matches(normalise_header(name), spelled, n=1, cutoff=_NEAR)
    if near:
        return near[0]
    if not core:
        return None
    near = difflib.get_close_matches(core, spelled, n=1, cutoff=_NEAR)
    if near:
        return near[0]
    return holding[0] if holding else None


# what a form adds to a question's name: a unit or choices in brackets, a question mark or a colon
_FORM_DECORATION = re.compile(r"\s*([(\[].*|[?:]+\s*)$")


def column_name(name: object, limit: int = 60) -> str:
    """A column's name as a message shows it: a control character escaped (a line break in a
    name cannot start a line of a log), and a long name cut to ``limit`` characters."""
    text = str(name)
    return _cut(text if text.isprintable() else repr(text)[1:-1], limit)


def _cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it is."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


_LISTED = 20  # columns named in one message, at most

_SPELLED = [*FIELD_NAMES, ID_COLUMN]
_NEAR = 0.8  # difflib's similarity: "fevers" and "breathless_or_chest_pains" are near, "notes" and "clinic" are not


@dataclass
class ParsedCases:
    """Validated cases as codes. Rows with an error are marked in ``valid`` and listed in ``errors``."""

    codes: dict[str, np.ndarray]
    valid: np.ndarray
    errors: pd.DataFrame
    ids: pd.Series | None = None
    ignored_columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.valid)

    @classmethod
    def of_codes(cls, codes: dict[str, np.ndarray]) -> "ParsedCases":
        """Valid cases of codes made by the decision layer (a case with answers changed), no ids."""
        return cls(codes, np.ones(len(codes["age"]), dtype=bool), _empty_errors())

    @property
    def shape(self) -> tuple[int, int]:
        """(n_cases, n_fields), so scikit-learn's input checks accept parsed cases."""
        return (len(self.valid), len(FIELDS))

    def __getitem__(self, key) -> "ParsedCases":
        """Rows selected by a boolean mask, integer indices or a slice (errors are not carried)."""
        if isinstance(key, tuple):  # scikit-learn's _safe_indexing may pass (rows, slice(None))
            key = key[0]
        key = np.arange(len(self.valid))[key] if isinstance(key, slice) else np.asarray(key)
        return ParsedCases(
            {k: v[key] for k, v in self.codes.items()},
            self.valid[key],
            _empty_errors(),
            None if self.ids is None else self.ids.iloc[np.flatnonzero(key) if key.dtype == bool else key]
            .reset_index(drop=True),
            self.ignored_columns,
        )

    def blanked(self, hide: dict[str, np.ndarray | bool]) -> "ParsedCases":
        """A copy with the answers where ``hide[field]`` is true set to unknown (``True`` hides a
        whole column); the codes of these cases are not changed."""
        codes = {}
        for f in FIELDS:
            c = self.codes[f.name]
            if f.name in hide:
                unknown = np.nan if f.kind in ("integer", "float") else UNKNOWN
                c = np.where(hide[f.name], unknown, c).astype(c.dtype)
            else:
                c = c.copy()
            codes[f.name] = c
        return ParsedCases(codes, self.valid.copy(), self.errors, self.ids, self.ignored_columns)


    def to_frame(self) -> pd.DataFrame:
        """The canonical typed DataFrame: categoricals, nullable booleans and floats."""
        return codes_to_frame(self.codes)


_EMPTY_ERRORS: pd.DataFrame | None = None


def _empty_errors() -> pd.DataFrame:
    """An empty errors table (built once: a typed empty DataFrame costs over a millisecond)."""
    global _EMPTY_ERRORS
    if _EMPTY_ERRORS is None:
        _EMPTY_ERRORS = pd.DataFrame({"row": pd.Series(dtype="int64"), "column": pd.Series(dtype="str"),
                                      "value": pd.Series(dtype="str"), "reason": pd.Series(dtype="str")})
    return _EMPTY_ERRORS.copy(deep=False)  # its own frame: pandas copies the (empty) data on a write


@cache
def _unanswered_plan(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """The number fields and the coded fields of ``names``, and where each name's column lands
    when the numbers' columns are followed by the coded ones."""
    numbers = tuple(n for n in names if field(n).kind in ("integer", "float"))
    coded = tuple(n for n in names if n not in numbers)
    position = {n: i for i, n in enumerate(numbers + coded)}
    return numbers, coded, np.array([position[n] for n in names], dtype=np.intp)


def code_rows(codes: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(len(names), n_cases): the codes of the fields ``names`` (at least one) as the rows of one
    array, as ``np.stack`` makes it (joined end to end: a third of its time for one case, two thirds
    for 16k)."""
    return np.concatenate([codes[k] for k in names]).reshape(len(names), len(codes[names[0]]))


def unanswered(name: str, codes: dict[str, np.ndarray]) -> np.ndarray:
    """Per case, whether field ``name`` is unknown (a missing number, or the unknown code); for
    many fields at once, :func:`unanswered_matrix`."""
    c = codes[name]
    return np.isnan(c) if field(name).kind in ("integer", "float") else c == UNKNOWN


# questions about what happened at an injury ("when it happened", "after that moment", "after the
# injury"; the knowledge base asks them after a reported injury): a case that reports no injury has
# denied their premise
INJURY_PREMISED = frozenset({"heard_pop", "pain_delayed_onset", "swelling_within_hours"})
_NO_INJURY = field("injury_event").allowed.index("none")


def premise_denied(codes: dict[str, np.ndarray], names: Sequence[str],
                   fertile_max: float | None = None) -> np.ndarray:
    """(n_cases, len(names)) bool: the questions ``names`` whose premise a case's answers deny, so
    that they are not offered to it: the questions about an injury, when it reports none, pregnancy
    and the pill or HRT, to a male (a man's rate of oestrogen treatment is a tenth of a percent or
    so: the knowledge base's ``hormonal_therapy_men``), the pill or HRT, to a woman who is pregnant
    or has given birth in the last six weeks (``pregnant``; her answer could not change a rule: the
    only one reading the pill or HRT reads pregnancy beside it, and the pregnancy rule reads the
    same signs at the same day), and, given ``fertile_max`` (the knowledge base's ``fertile_age``),
    pregnancy to anyone older (past it the knowledge base gives pregnancy one rate for every
    condition, so the answer would tell nothing)."""
    denied = np.zeros((len(codes["age"]), len(names)), dtype=bool)
    premised = [i for i, name in enumerate(names) if name in INJURY_PREMISED]
    if premised:
        denied[:, premised] = (codes["injury_event"] == _NO_INJURY)[:, None]
    for name in MALE_NOT_ASKED:
        if name in names:
            denied[:, list(names).index(name)] = codes["sex"] == SEX_MALE
    if "hormonal_therapy" in names:
        denied[:, list(names).index("hormonal_therapy")] |= codes["pregnant"] == 1  # yes
    if fertile_max is not None and "pregnant" in names:
        denied[:, list(names).index("pregnant")] |= codes["age"] > fertile_max
    return denied


def unanswered_matrix(codes: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(n_cases, len(names)) bool: which of the fields ``names`` each case left unanswered (a
    missing number, or the unknown code), in a few array operations rather than one per field.
    Codes are the parser's: NaN for an unknown number, :data:`UNKNOWN` for an unknown answer.

    The matrix is built a field per row and returned transposed (Fortran-ordered): stacking the
    fields' columns side by side, or copying the transpose, cost 20x more on 16k cases."""
    numbers, coded, position = _unanswered_plan(tuple(names))
    n = len(codes["age"])
    parts = []
    if numbers:
        parts.append(np.isnan(code_rows(codes, numbers)))
    if coded:
        parts.append(code_rows(codes, coded) == UNKNOWN)
    if not parts:
        return np.zeros((n, 0), dtype=bool)
    both = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return both.take(position, axis=0).T


def codes_to_frame(codes: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build the typed case DataFrame from codes (the generator's output format)."""
    columns: dict[str, Any] = {}
    for f in FIELDS:
        c = codes[f.name]
        if f.kind == "tristate":
            columns[f.name] = pd.arrays.BooleanArray(c == 1, c < 0)
        elif f.kind == "category":
            columns[f.name] = pd.Categorical.from_codes(c.astype(np.int8), categories=list(f.allowed))
        elif f.kind == "integer":
            missing = np.isnan(c)
            columns[f.name] = pd.arrays.IntegerArray(np.where(missing, 0, c).astype(np.int16), missing)
        else:
            columns[f.name] = c.astype(np.float64)
    return pd.DataFrame(columns)


def whole_number_fields(codes: dict[str, np.ndarray]) -> set[str]:
    """The integer fields none of whose values is unknown (written without a decimal point)."""
    return {f.name for f in FIELDS if f.kind == "integer" and not np.isnan(codes[f.name]).any()}


def codes_to_text_frame(codes: dict[str, np.ndarray], whole: set[str] | None = None) -> pd.DataFrame:
    """Cases as the text a CSV holds: ``yes``/``no``/blank, category names, numbers, blank unknown.

    An integer field is written as whole numbers when none of its values is unknown, or when it is
    in ``whole`` (:func:`whole_number_fields` of all the rows, for a frame of some of them)."""
    whole = whole_number_fields(codes) if whole is None else whole
    columns: dict[str, Any] = {}
    for f in FIELDS:
        c = codes[f.name]
        if f.kind == "tristate":
            columns[f.name] = np.array(["no", "yes", ""], dtype=object)[c]
        elif f.kind == "category":
            columns[f.name] = np.array([*f.allowed, ""], dtype=object)[c]
        elif f.name in whole:
            columns[f.name] = c.astype(np.int64)
        else:
            columns[f.name] = c
    return pd.DataFrame(columns)


def _as_text(values: np.ndarray) -> np.ndarray:
    """Normalise unique raw values to lower-case stripped text ('' for blanks)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if is_blank(v):
            out[i] = ""
        elif isinstance(v, (bool, np.bool_)):
            out[i] = "1" if v else "0"
        elif isinstance(v, (int, np.integer)):
            out[i] = _text(int(v))
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            out[i] = visible(str(v)).strip().lower()
    return out


def _text(v: Any) -> str:
    """``str(v)``, except an integer too long for Python to print (over 4300 digits): its size."""
    try:
        return str(v)
    except ValueError:
        return f"an integer of about {int(v.bit_length() * math.log10(2))} digits"


def is_blank(v: Any) -> bool:
    """Whether ``v`` is a missing value: None, pandas' NA or NaT, or a NaN of any float type
    (numpy's float32 is no Python float)."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _is_plain(v: Any) -> bool:
    """A value a case field may hold: text, a number or a boolean (not a date, a duration, a list, a mapping)."""
    return is_blank(v) or isinstance(v, (str, bool, int, float, np.bool_, np.integer, np.floating, decimal.Decimal))


def utf8_or_bytes(value: Any) -> Any:
    """``value``, but bytes that are UTF-8 as their text (bytes that are not stay bytes)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def not_utf8(v: Any) -> bool:
    """Whether ``v`` is bytes that are not UTF-8 text."""
    return isinstance(v, bytes) and isinstance(utf8_or_bytes(v), bytes)


def not_utf8_mask(values: pd.Series) -> np.ndarray:
    """Per value, :func:`not_utf8` (for a column of Python objects)."""
    return np.fromiter((not_utf8(v) for v in values.to_numpy()), dtype=bool, count=len(values))


def _kind_name(v: Any) -> str:
    if isinstance(v, decimal.Decimal):  # the one Decimal that is not plain
        return "a signaling NaN"
    if not_utf8(v):  # bytes a Parquet file gave that are not UTF-8 (pipeline.core.casefiles)
        return "a value that is not valid UTF-8 text"
    if isinstance(v, (datetime.timedelta, np.timedelta64)):
        return "a duration"
    if isinstance(v, (datetime.date, datetime.time, np.datetime64)):
        return "a date or time"
    if isinstance(v, np.ndarray):  # a Parquet list column's cells, or a 0-d array standing for its value
        return "a list" if v.ndim else "a numpy array"
    return f"a {type(v).__name__}"


def _plain_only(series: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """``series`` with values that are not plain (see :func:`_is_plain`) blanked, the mask of those
    values and a reason for each. Typed columns of dates, durations or nested values are all not plain."""
    kind = getattr(series.dtype, "kind", "O")
    if kind in "mMc":
        bad = series.notna().to_numpy()
        what = {"m": "a duration", "M": "a date or time", "c": "a complex number"}[kind]
        return pd.Series(np.full(len(series), np.nan)), bad, np.full(len(series), what, dtype=object)
    plain_categories = isinstance(series.dtype, pd.CategoricalDtype) and all(map(_is_plain, series.dtype.categories))
    if kind != "O" or plain_categories or pd.api.types.is_string_dtype(series.dtype) and not series.dtype == object:
        return series, np.zeros(len(series), dtype=bool), np.array([], dtype=object)
    values = series.to_numpy(dtype=object)
    bad = np.fromiter((not _is_plain(v) for v in values), dtype=bool, count=len(values))
    decimals = [i for i, v in enumerate(values) if isinstance(v, decimal.Decimal)]
    if decimals:  # as the floats they stand for, so that a value reads the same alone or among others
        values = values.copy()
        for i in decimals:
            if values[i].is_snan():
                bad[i] = True
            else:
                values[i] = float(values[i])
        series = pd.Series(values, index=series.index, dtype=object)
    if bad.any():  # UTF-8 bytes (pd.read_parquet of text stored as binary) read as their text, as a file's are
        decoded = [i for i in np.flatnonzero(bad) if isinstance(values[i], bytes) and not not_utf8(values[i])]
        if decoded:
            values = values.copy()
            values[decoded] = [values[i].decode("utf-8") for i in decoded]
            bad[decoded] = False
            series = pd.Series(values, index=series.index, dtype=object)
    if not bad.any():
        return series, bad, np.array([], dtype=object)
    reasons = np.array([_kind_name(v) if b else "" for v, b in zip(values, bad)], dtype=object)
    return pd.Series(np.where(bad, None, values), index=series.index, dtype=object), bad, reasons


def _as_category_text(values: np.ndarray) -> np.ndarray:
    """:func:`_as_text`, with spaces or hyphens between words read as one underscore, as a column's
    name is read (:func:`pipeline.core.schema.normalise_header`): ``Fall onto knee`` and
    ``fall-onto-knee`` are ``fall_onto_knee``."""
    return np.array([BETWEEN_WORDS.sub("_", t) for t in _as_text(values)], dtype=object)


@cache
def _canonical(name: str) -> tuple[pa.Array, np.ndarray]:
    """A coded field's canonical texts (``no``, ``yes`` or its categories, then the blank) and their codes."""
    f = field(name)
    names = ["no", "yes"] if f.kind == "tristate" else list(f.allowed)
    return pa.array([*names, ""], pa.string()), np.array([*range(len(names)), UNKNOWN], dtype=np.int8)


def _canonical_codes(series: pd.Series, f: Field) -> np.ndarray | None:
    """The codes of a text column whose every cell is a canonical text (how kneepain and most
    exports write them), in one Arrow lookup; None when some cell is not (a null, ``Yes``, ``1``,
    a typo: the caller's general path then reads it)."""
    texts, codes = _canonical(f.name)
    index = pc.index_in(pa.array(series.array), value_set=texts)
    if index.null_count:
        return None
    return codes[index.to_numpy(zero_copy_only=False)]


_NESTED = (list, tuple, dict, set, frozenset, np.ndarray)
# one reason for a repeated id, within a chunk or across chunks and files: the rejects do not
# depend on how the input was chunked or split between Dask workers
DUPLICATE_ID = "duplicate case_id: seen in an earlier row"


@cache
def _lookups(name: str) -> dict[str, int]:
    """A coded field's accepted texts (lower-case, stripped) and their codes."""
    f = field(name)
    if f.kind == "tristate":
        # "1.0" and "0.0" are how pandas writes a 0/1 column that has blanks
        return {**{t: 1 for t in TRISTATE_YES}, **{t: 0 for t in TRISTATE_NO},
                **{t: UNKNOWN for t in _TRISTATE_UNKNOWN}, "1.0": 1, "0.0": 0}
    return {**{c: i for i, c in enumerate(f.allowed)}, "": UNKNOWN, "unknown": UNKNOWN}


def _parse_coded(series: pd.Series, f: Field) -> tuple[np.ndarray, np.ndarray, str | np.ndarray]:
    """Codes, an error mask and the reason (one, or one per row) for a tri-state or category
    column (parses each unique value once)."""
    allowed = f"not allowed; allowed: {f.allowed_text}"
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow" and len(series) > FEW_CASES:
        canonical = _canonical_codes(series, f)
        if canonical is not None:
            return canonical, np.zeros(len(series), dtype=bool), allowed
    series, odd, kinds = _plain_only(series)
    # a value of another kind (a list, a date, a numpy array) is named by its kind: its text may read as an answer
    reason = np.where(odd, np.char.add(kinds.astype(str), f" is not an answer; allowed: {f.allowed_text}"), allowed) \
        if odd.any() else allowed
    lookup = _lookups(f.name)
    as_text = _as_category_text if f.kind == "category" else _as_text
    if len(series) <= FEW_CASES:  # a few rows: each value looked up, without a factorisation's set-up
        codes = np.array([lookup.get(t, -2) for t in as_text(series.to_numpy(dtype=object))], dtype=np.int8)
    else:
        inverse, uniques = pd.factorize(series, use_na_sentinel=True)
        text = as_text(np.asarray(uniques, dtype=object))
        mapped = np.array([lookup.get(t, -2) for t in text] + [UNKNOWN], dtype=np.int8)
        codes = mapped[inverse]  # factorize's -1 (missing) picks the trailing UNKNOWN
    bad = (codes == -2) | odd
    codes[bad] = UNKNOWN
    return codes, bad, reason


def _arrow_number(series: pd.Series) -> tuple[pd.Series, np.ndarray] | None:
    """Numbers from text in one Arrow cast; None when some cell is not a number (the caller then
    finds which, row by row)."""
    try:
        text = pc.utf8_trim_whitespace(pa.array(series.array))
        blank = pc.or_kleene(pc.equal(text, ""), pc.equal(pc.utf8_lower(text), "unknown"))
        values = pc.cast(pc.if_else(pc.fill_null(blank, True), pa.scalar(None, pa.string()), text), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        return None
    if pc.any(pc.is_nan(values)).as_py():  # text "nan" is not a number: let the row-by-row path say so
        return None
    return pd.Series(values.to_numpy(zero_copy_only=False)), np.zeros(len(series), dtype=bool)


def _typed_for_pandas(series: pd.Series) -> pd.Series:
    """``series``, or as text when pandas cannot say what its Arrow type holds (``string_view``:
    its dtype checks raise NotImplementedError)."""
    if isinstance(series.dtype, pd.ArrowDtype):
        try:
            _ = series.dtype.type
        except NotImplementedError:  # nor can it convert it: Arrow does
            text = pa.array(series.array).cast(pa.string()).to_pandas(types_mapper=pd.ArrowDtype)
            return pd.Series(text.array, index=series.index, name=series.name)
    return series


def _number_like(v: Any) -> Any:
    """A cell of a column of Python objects as ``pd.to_numeric`` reads it: text stripped, and an
    integer too large for a float as an infinity (out of range, not an overflow)."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2 ** 63:
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    return v


def _parse_number(series: pd.Series, f: Field) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floats (NaN unknown), an error mask and a reason per error."""
    series, odd, odd_reasons = _plain_only(series)
    if odd.any():
        values, bad, reasons = _parse_number(series, f)
        reasons = np.where(odd, np.char.add(odd_reasons.astype(str), " is not a number"),
                           reasons if bad.any() else "").astype(str)
        return values, bad | odd, reasons
    if pd.api.types.is_bool_dtype(series.dtype):
        raw = pd.Series(np.full(len(series), np.nan))
        bad_type = series.notna().to_numpy()
    elif pd.api.types.is_numeric_dtype(series.dtype):
        # numpy's numbers have no NA but NaN (with na_value, pandas took 0.1 ms for one value); nullable integers' NA too
        raw = series.to_numpy(dtype=np.float64) if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iuf" \
            else series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad_type = np.zeros(len(series), dtype=bool)
    elif isinstance(series.dtype, pd.StringDtype) and (fast := _arrow_number(series)) is not None:
        raw, bad_type = fast
    elif isinstance(series.dtype, pd.StringDtype):
        text = series.str.strip()
        blank = (series.isna() | text.eq("") | text.str.lower().eq("unknown")).to_numpy(dtype=bool)
        raw = pd.to_numeric(text.mask(blank), errors="coerce")
        bad_type = raw.isna().to_numpy() & ~blank
    else:  # Python objects (dicts, lists of dicts): any mix of numbers, text and None
        obj = series.astype(object)
        blank = obj.map(lambda v: is_blank(v) or (isinstance(v, str) and v.strip().lower() in _TRISTATE_UNKNOWN))
        # a yes/no is not a number here either, as in a column of booleans (not 1 or 0)
        logical = obj.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        raw = pd.to_numeric(obj.where(~blank & ~logical, np.nan).map(_number_like), errors="coerce")
        bad_type = (raw.isna() & ~blank).to_numpy()
    values = raw if isinstance(raw, np.ndarray) else raw.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad_range = np.zeros(len(values), dtype=bool)
        if f.minimum is not None:
            bad_range |= values < f.minimum
        if f.maximum is not None:
            bad_range |= values > f.maximum
        bad_range |= np.isinf(values)
        bad_whole = (values != np.floor(values)) & ~np.isnan(values) if f.kind == "integer" else \
            np.zeros(len(values), dtype=bool)
    bad = bad_type | bad_range | bad_whole
    reasons = (np.where(bad_type, "not a number", np.where(
        np.isinf(values), "not a finite number (too large for a float, or infinite)",
        np.where(bad_whole, "not a whole number", "out of range")))
               if bad.any() else np.array([], dtype=str))
    if bad_type.any():  # a spreadsheet's decimal comma ("30,1") is said (one text, so that reasons are counted together)
        reasons = reasons.astype(object)
        for i in np.flatnonzero(bad_type):
            if isinstance(cell := series.iat[i], str) and _DECIMAL_COMMA.fullmatch(text := cell.strip()) \
                    and not _THOUSANDS.fullmatch(text):  # "1,000" may be a thousand: no guess
                reasons[i] = _DECIMAL_COMMA_REASON
        reasons = reasons.astype(str)
    values = np.where(bad, np.nan, values)
    return values, bad, reasons


_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(,[0-9]{3})+")
_DECIMAL_COMMA_REASON = "not a number (a decimal comma? numbers are written with a point: 30.1, not 30,1)"


def parse_cases(cases: pd.DataFrame, *, row_offset: int = 0, raise_on_error: bool = True) -> ParsedCases:
    """Parse and validate a DataFrame of cases into codes.

    Parameters
    ----------
    cases : DataFrame of shape (n_cases, n_columns)
        Any columns; the schema's fields are read, ``case_id`` is kept, ``condition``,
        ``severity`` and ``reference_level`` (labelled cases' columns) are ignored and other
        columns are reported in ``ignored_columns``.
    row_offset : int, default=0
        Added to row numbers in errors (for chunked reading).
    raise_on_error : bool, default=True
        Raise :class:`CaseValidationError` naming every bad row, column and value; otherwise mark
        those rows invalid and return them in ``errors``.

    Raises
    ------
    CaseValidationError
        If a required column is missing (always), or a value is invalid and ``raise_on_error``.
    """
    if not isinstance(cases, pd.DataFrame):
        raise TypeError(f"cases must be a pandas DataFrame, got {type(cases).__name__}.")
    # every column read once, by position (a frame's getitem per field cost more than parsing one case)
    return _parse_columns(list(cases.items()), len(cases), row_offset, raise_on_error)


def parse_records(records: Sequence[Mapping[Any, Any]], *, raise_on_error: bool = True) -> ParsedCases:
    """:func:`parse_cases` of ``pd.DataFrame(records)``, without building the frame.

    Each column is a Series of its values in record order (``NaN`` where a record lacks the key),
    typed by pandas as the DataFrame constructor types a column of a list of dicts; columns come
    in the order their keys first appear. For one case the frame cost more than parsing it; from
    ``_MANY_RECORDS`` records the frame is built after all (in bulk it is the faster way), unless
    the records hold more than ``_FRAME_MAX_COLUMNS`` distinct keys: the frame holds a value per
    record and key, so records that each add keys of their own (1,000 records of 50 new keys each
    took 16 s and 1 GB) are read column by column, where a key that is no case field is only named.
    """
    many = len(records) >= _MANY_RECORDS and isinstance(records, list) and all(isinstance(r, dict) for r in records) \
        and len(set().union(*records)) <= _FRAME_MAX_COLUMNS  # the keys counted in C, as the frame reads them
    if many and (frame := _records_frame(records)) is not None:
        if not (repeated := repeated_columns(list(frame.columns))):
            return parse_cases(frame, raise_on_error=raise_on_error)
        return parse_records(_one_spelling(records, repeated), raise_on_error=raise_on_error)
    headers = list(dict.fromkeys(key for record in records for key in record))
    if repeated := repeated_columns(headers):
        return parse_records(_one_spelling(records, repeated), raise_on_error=raise_on_error)
    # a column that is no case field is only named (as ignored): no Series of its values
    columns = [(h, _record_column(h, [record.get(h, np.nan) for record in records])
                if normalise_header(h) in _READ_COLUMNS else None) for h in headers]
    return _parse_columns(columns, len(records), 0, raise_on_error)


def _one_spelling(records: Sequence[Mapping[Any, Any]], repeated: dict[str, list[str]]) -> list[dict[Any, Any]]:
    """``records`` with each field of ``repeated`` (its spellings, as :func:`repeated_columns`
    gives them) under its first spelling: records may spell a name differently (``Age`` in one,
    ``age`` in the next), but a record that gives a field twice is refused, naming it (every such
    record, with each field it repeats)."""
    first = {folded: spellings[0] for folded, spellings in repeated.items()}
    out: list[dict[Any, Any]] = []
    problems: list[tuple[int, str, str]] = []
    for row, record in enumerate(records):
        fields: dict[Any, Any] = {}
        given: dict[str, list[str]] = {}
        for key, value in record.items():
            folded = normalise_header(key)
            if folded in first:
                given.setdefault(folded, []).append(str(key))
                key = first[folded]
            fields[key] = value
        problems += [(row, column_name(folded), ", ".join(column_name(repr(n)) for n in spellings))
                     for folded, spellings in given.items() if len(spellings) > 1]
        out.append(fields)
    if problems:
        rows, columns, values = zip(*problems)
        raise CaseValidationError(pd.DataFrame({
            "row": rows, "column": columns, "value": values,
            "reason": "the column is given more than once in this record (names are matched ignoring case, "
                      "surrounding spaces and the spaces or hyphens between a field's words); give it once"}), len(records))
    return out


# from this many records, the DataFrame constructor (which reads them in C, a record at a time)
# is faster than a Series per column (100k records of 50 fields: 3.3 s against 8 s)
_MANY_RECORDS = 1_000
# at most this many distinct keys for the frame (the schema has about 60 fields)
_FRAME_MAX_COLUMNS = 256


def _records_frame(records: Sequence[Mapping[Any, Any]]) -> pd.DataFrame | None:
    """``pd.DataFrame(records)`` with its case ids as :func:`_record_column` gives them (integers
    beside a missing one stay as given); None where a value is no text Arrow can hold (a lone
    surrogate), for the column by column path to name."""
    try:
        frame = pd.DataFrame(records)
    except UnicodeEncodeError:
        return None
    for at, name in enumerate(frame.columns):
        if frame.dtypes.iloc[at].kind == "f" and isinstance(name, str) and normalise_header(name) == ID_COLUMN:
            frame.isetitem(at, _record_column(name, [record.get(name, np.nan) for record in records]))
    return frame


def _record_column(name: Any, values: list) -> pd.Series:
    """One column of records, typed as the DataFrame constructor types it, except that integer case
    ids beside a missing one stay as given: ids are labels, and as floats large ones would lose
    digits (and two of them could become one); and that a yes/no or category column of texts is
    kept as Python strings rather than made Arrow's (the same codes and errors, as each value is
    looked up by its stripped, lower-case text, in half the time)."""
    if normalise_header(name) in _CODED_FIELDS and all(type(v) is str and _is_unicode(v) for v in values):
        return pd.Series(pd.arrays.StringArray(np.array(values, dtype=object), dtype=_PYTHON_TEXT), name=name, copy=False)
    try:
        series = pd.Series(values, name=name)
    except UnicodeEncodeError:  # Arrow's strings are UTF-8: a lone surrogate ("\ud800" in JSON) is no text
        bad = [i for i, v in enumerate(values) if isinstance(v, str) and not _is_unicode(v)]
        raise CaseValidationError(pd.DataFrame({
            "row": bad, "column": column_name(name), "value": [_show(repr(values[i])) for i in bad],
            "reason": "not valid Unicode text (it holds a lone surrogate); allowed: text"}), len(values)) from None
    if series.dtype.kind == "f" and normalise_header(name) == ID_COLUMN and any(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        return pd.Series(values, name=name, dtype=object)
    return series


# the yes/no and category fields: each value is looked up as its text, whatever the column's type
_CODED_FIELDS = frozenset((*TRISTATE_FIELDS, *CATEGORY_FIELDS))
_PYTHON_TEXT = pd.StringDtype("python", na_value=np.nan)  # text as Python strings: no Arrow array to build


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_READ_COLUMNS = frozenset(FIELD_NAMES) | {ID_COLUMN}  # the columns parsing reads; others are named as ignored


def _parse_columns(items: list[tuple[Any, pd.Series | None]], n: int, row_offset: int,
                   raise_on_error: bool) -> ParsedCases:
    """:func:`parse_cases` of the columns ``items`` ((header, values) pairs) of ``n`` rows; only
    the columns of :data:`_READ_COLUMNS` are read (another's values may be None)."""
    repeated = repeated_columns([h for h, _ in items])
    if repeated:
        raise CaseValidationError(pd.DataFrame({
            "row": -1, "column": [column_name(c) for c in repeated],
            "value": [", ".join(column_name(repr(n)) for n in v) for v in repeated.values()],
            "reason": "the column is given more than once (names are matched ignoring case, surrounding spaces, "
                      "invisible characters and the spaces or hyphens between a field's words); give it once"}))
    columns = {normalise_header(h): h for h, _ in items}
    series_of = {folded: _typed_for_pandas(series) for h, series in items
                 if (folded := normalise_header(h)) in _READ_COLUMNS and series is not None}
    missing = required_columns_error(columns.values())  # as the input spells them, for the message
    if missing is not None:
        raise missing
    rows = np.arange(n) + row_offset
    codes: dict[str, np.ndarray] = {}
    problems: list[pd.DataFrame] = []

    def report(name: str, mask: np.ndarray, values: pd.Series, reason: str | np.ndarray) -> None:
        if mask.any():  # the common case, no error, costs one check
            raw = values[mask].to_numpy(dtype=object)
            problems.append(pd.DataFrame({
                "row": rows[mask], "column": name, "value": shown_values(raw),
                "reason": reason if isinstance(reason, str) else reason[mask]}))

    # the fields not given, unknown: rows of one array per type (one case names a few of fifty)
    numbers, coded, _ = _unanswered_plan(tuple(f.name for f in FIELDS if f.name not in columns))
    not_given = {**dict(zip(numbers, np.full((len(numbers), n), np.nan))),
                 **dict(zip(coded, np.full((len(coded), n), UNKNOWN, dtype=np.int8)))}
    for f in FIELDS:
        if f.name not in columns:
            codes[f.name] = not_given[f.name]
            continue
        series = series_of[f.name]
        if f.kind in ("integer", "float"):
            values, bad, reasons = _parse_number(series, f)
            codes[f.name] = values
            report(f.name, bad, series, np.char.add(reasons, f"; allowed: {f.allowed_text}") if bad.any() else "")
        else:
            c, bad, reason = _parse_coded(series, f)
            codes[f.name] = c
            report(f.name, bad, series, reason)
        if f.required:
            blank = unanswered(f.name, codes) & ~bad
            report(f.name, blank, series, f"required; allowed: {f.allowed_text}")

    if ID_COLUMN in columns:
        ids_raw = series_of[ID_COLUMN]
        # a list, a mapping, true or false or an infinite number is no label (nor is it written the same
        # in JSON or a file)
        odd_id = None
        if ids_raw.dtype == object:
            if any(isinstance(v, bytes) for v in ids_raw.to_numpy()):  # as the values above, and as a file's
                ids_raw = series_of[ID_COLUMN] = ids_raw.map(utf8_or_bytes)
            odd_id = np.fromiter((isinstance(v, (*_NESTED, bool, np.bool_))
                                  or (isinstance(v, (float, np.floating)) and math.isinf(v))
                                  for v in ids_raw.to_numpy()), dtype=bool, count=n)
            # bytes a file gave that are not UTF-8 (pipeline.core.casefiles): no text to write the id as
            report(ID_COLUMN, not_utf8_mask(ids_raw), ids_raw, "not valid UTF-8 text; allowed: text or a finite number")
        elif ids_raw.dtype.kind == "f":
            odd_id = np.isinf(ids_raw.to_numpy())
        elif ids_raw.dtype.kind == "b" or isinstance(ids_raw.dtype, pd.BooleanDtype):  # true/false names no case
            odd_id = ids_raw.notna().to_numpy()
        if odd_id is not None:
            report(ID_COLUMN, odd_id, ids_raw, "not a case id; allowed: text or a finite number")

    male = codes["sex"] == SEX_MALE
    pregnant_male = male & (codes["pregnant"] == 1)
    if "pregnant" in columns:
        report("pregnant", pregnant_male, series_of["pregnant"],
               "pregnant cannot be yes when sex is male; allowed for males: no or unknown")
    # for a male, "no" and unknown are one answer: it tells nothing, and counts as no answer given
    # (so a male who gave only age, sex and "not pregnant" has answered nothing, as the session asks him)
    codes["pregnant"] = np.where(male, UNKNOWN, codes["pregnant"]).astype(codes["pregnant"].dtype, copy=False)
    # the pill or HRT: a man's "no" tells nothing either (his rate of oestrogen treatment is the
    # knowledge base's tenth of a percent or so); his "yes" is kept
    hormonal = codes["hormonal_therapy"]
    codes["hormonal_therapy"] = np.where(male & (hormonal == 0), UNKNOWN, hormonal).astype(hormonal.dtype, copy=False)
    days, age = codes["symptom_duration_days"], codes["age"]
    before_birth = days > max_duration_days(age)  # False where either is unknown or invalid
    if before_birth.any():
        reasons = np.full(n, "", dtype=object)
        reasons[before_birth] = [
            f"longer than the patient has lived: at age {a:g} at most {max_duration_days(a):.10g} days; allowed: "
            f"{field('symptom_duration_days').allowed_text} and at most (age + 1) x {DAYS_PER_YEAR:g}"
            for a in age[before_birth]]
        report("symptom_duration_days", before_birth, series_of["symptom_duration_days"], reasons)
    if ID_COLUMN in columns:
        # a repeated id last of a row's problems, where a repeat of an id from an earlier chunk is
        # added (pipeline.serve.chunks.reject_repeated): the reasons do not depend on the chunking
        ids_raw = series_of[ID_COLUMN]
        text = normalise_ids(ids_raw)
        # blank ids are not identifiers: never duplicates, nor the first of one (a missing id's
        # text, "None" or "nan", is no id a later row can repeat)
        named = named_ids(ids_raw, text)
        dup = text.where(named).duplicated(keep="first").to_numpy() & named
        if dup.any():
            report(ID_COLUMN, dup, ids_raw, DUPLICATE_ID)

    errors = pd.concat(problems, ignore_index=True).sort_values("row", kind="stable", ignore_index=True) \
        if problems else _empty_errors()
    valid = ~np.isin(rows, errors["row"].to_numpy()) if problems else np.ones(n, dtype=bool)
    ids = None
    if ID_COLUMN in columns:
        ids = series_of[ID_COLUMN].reset_index(drop=True)
    known = _READ_COLUMNS | {LABEL_COLUMN, SEVERITY_COLUMN, REFERENCE_COLUMN}  # a labelled file scores as it is
    ignored = tuple(str(c) for k, c in columns.items() if k not in known)
    parsed = ParsedCases(codes, valid, errors, ids, ignored)
    if raise_on_error and len(errors):
        raise CaseValidationError(errors, n)
    return parsed


def normalise_ids(ids: pd.Series) -> pd.Series:
    """Case ids as compared for duplicates: text with surrounding spaces removed."""
    try:
        text = ids.astype(str)
    except ValueError:  # an integer too long to print
        text = ids.map(_text).astype(str)
    return text.str.strip()


def named_ids(ids: pd.Series, text: pd.Series) -> np.ndarray:
    """Which of ``ids`` (``text``: :func:`normalise_ids` of them) name a case: a missing or blank id
    is no identifier, so it never repeats another nor is repeated."""
    return ids.notna().to_numpy() & (text != "").to_numpy()


def _show(value: Any, limit: int = 80) -> str:
    return _cut("" if is_blank(value) else _text(value), limit)


def shown_values(values: Iterable[Any]) -> list[str]:
    """Values as a problem's ``value`` shows them: a blank as nothing, bytes as Python writes them
    (``b'\\xff'``), a long text cut (:func:`_cut`)."""
    shown: dict[str, str] = {}  # a text's, made once (a file of NA answers repeats one value)
    return [(shown.get(v) or shown.setdefault(v, _show(v))) if type(v) is str else _show(v) for v in values]
