"""Writing scoring outputs and rejects: Arrow tables of one schema, written on a background thread
to a temporary file that is renamed into place only when the job completes.

A rejects file has one line per rejected input row: ``reject_file``, ``reject_row`` and
``reject_reason`` (every problem of the row), then the row itself as it was read, under the
input's own column names, so fixing the rejects file and scoring it again is one step.

CSV outputs are safe to open in a spreadsheet: a text cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (and is not a plain number) is written with a leading ``'``
(OWASP's advice against formula injection; :mod:`pipeline.core.formulas`, whose reading side
takes it off again). Parquet outputs keep the text as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import BatchInputError
from pipeline.core.files import arrow_file, is_parquet, tmp_path
from pipeline.core.formulas import csv_safe, guarded_names
from pipeline.core.parsing import is_blank
from pipeline.core.schema import ID_COLUMN, REJECT_META, first_spellings, normalise_header
from pipeline.serve.predict import OUTPUT_TYPES, output_columns
from pipeline.serve.shaping import input_columns

__all__ = ["REJECT_META", "Writer", "as_text", "csv_safe", "encode_csv", "output_schema", "output_table",
           "reject_schema", "reject_table"]

PARQUET_GROUP_ROWS = 16_384  # the fewest rows of a Parquet output's row group (but the last): a default chunk


def output_schema(id_column: str, multi: bool, decision: bool, *, top_k: int = 3,
                  extra: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of a scoring output: ``file`` (several inputs), ``row``, ``case_id`` (when
    the input has one), then :func:`pipeline.serve.predict.output_columns` with their types, then
    the text columns ``extra`` (input columns passed through)."""
    columns = output_columns(top_k, decision=decision)
    names = (["file"] if multi else []) + ["row"] + (columns if id_column == ID_COLUMN else columns[1:])
    types = {"file": "string", "row": "int64", ID_COLUMN: "string", f"top{top_k}": "string", **OUTPUT_TYPES}
    return pa.schema([*(pa.field(name, pa.type_for_alias(types[name])) for name in names),
                      *(pa.field(name, pa.string()) for name in extra)])


def output_table(scored: Mapping[str, Any], schema: pa.Schema, *, file: str | None = None,
                 blank: Sequence[str] = ()) -> pa.Table:
    """Scored rows (a DataFrame, or columns by name as :func:`pipeline.serve.chunks.valid_columns`
    gives them, with ``row``) as an Arrow table of the output ``schema``: ``file`` is added, and a
    ``case_id`` the input does not have (another input's) or a column of ``blank`` it does not have
    (another input's kept column) is null: the input holds no value there, not an empty one. Any
    other column of ``schema`` must be there."""
    n = len(scored) if isinstance(scored, pd.DataFrame) else len(scored["row"])
    columns = []
    for field in schema:
        if field.name == "file" and file is not None:
            columns.append(pa.repeat(pa.scalar(file, field.type), n))
        elif (field.name == ID_COLUMN or field.name in blank) and field.name not in scored:
            columns.append(pa.nulls(n, field.type))
        else:
            columns.append(_arrow(scored[field.name], field.type))
    return pa.table(columns, schema=schema)


def _arrow(values: Any, kind: pa.DataType) -> pa.Array:
    """A column as an Arrow array of type ``kind``, as ``pa.Table.from_pandas`` converts it (NaN and None: null)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values if values.type == kind else values.cast(kind)
    return pa.array(values, type=kind, from_pandas=True)


def without_reject_meta(columns: Sequence[str]) -> list[str] | None:
    """For an input that is itself a rejects file (it holds every :data:`REJECT_META` column), its
    other columns; None for any other input."""
    folded = [normalise_header(c) for c in columns]
    if not set(folded) >= set(REJECT_META):
        return None
    return [c for c, name in zip(columns, folded) if name not in REJECT_META]


def rejected_names(columns: Sequence[str]) -> dict[str, str]:
    """An input's columns -> their names in the rejects file. An input that is itself a rejects
    file loses its :data:`REJECT_META` columns: the new reasons replace them. Another input's
    column of such a name is kept as ``input_<name>``, as ``--keep-input-columns`` keeps a name
    the output has."""
    if (own := without_reject_meta(columns)) is not None:
        return {c: c for c in own}
    return input_columns(columns, REJECT_META, keep_ids=True)


def reject_schema(input_columns: list[list[str]]) -> pa.Schema:
    """The rejects file's schema: :data:`REJECT_META`, then every input column (first seen first)
    as text, named by :func:`rejected_names`.

    Names are matched as the scorer matches them (``Age`` in one input is ``age`` in another: one
    column, spelt as first seen), so the rejects file can be scored again once its rows are mended;
    an input cannot hold two such spellings (the scorer refuses a header that repeats one)."""
    names = list(first_spellings([list(rejected_names(c).values()) for c in input_columns]).values())
    return pa.schema([pa.field("reject_file", pa.string()), pa.field("reject_row", pa.int64()),
                      pa.field("reject_reason", pa.string()), *(pa.field(c, pa.string()) for c in names)])


def _problem(column: str, value: str, reason: str) -> str:
    return f"column {column!r}, value {value!r}: {reason}" if column else reason


# Arrow's text (``string``) holds at most 2**31 - 1 bytes per array: a longer column is a chunked
# array of such pieces (a module constant, so that tests can make the pieces small)
STRING_PIECE_BYTES = 2**31 - 1


def small_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text (``string`` or ``large_string``, chunked or not) as ``string``: in one array where it
    fits, else in pieces of at most :data:`STRING_PIECE_BYTES` each (a cast of the whole failed
    with "input array too large"). A single value longer than that cannot be held and is refused."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    pieces: list[pa.Array] = []
    for chunk in chunks:
        if not len(chunk):  # no piece of its own: Arrow's CSV writer mishandles an empty first batch
            continue
        if chunk.type == pa.string():
            pieces.append(chunk)
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        start = 0
        while start < len(chunk):
            # the most values from ``start`` whose bytes fit in one piece
            end = int(np.searchsorted(offsets, offsets[start] + STRING_PIECE_BYTES, side="right")) - 1
            if end <= start:
                raise BatchInputError(f"a text of {int(offsets[start + 1] - offsets[start]):,} bytes: longer than "
                                      f"{STRING_PIECE_BYTES:,} bytes, the most one value can hold.")
            pieces.append(chunk.slice(start, end - start).cast(pa.string()))
            start = end
    if len(pieces) <= 1:
        return pieces[0] if pieces else pa.array([], pa.string())
    return pa.chunked_array(pieces, pa.string())


def as_text(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A column of any type as Arrow text (:func:`small_strings`), a missing value (None, NA,
    NaN, NaT) as null: integers as Arrow writes them (Python's text), a float32 or float16 as its
    own shortest text ("0.1", not its float64's "0.10000000149011612"), a list (a Parquet list
    column) whole (numpy's text of an array cuts it short and breaks its lines: :func:`_list_text`)."""
    if isinstance(values.dtype, pd.StringDtype):
        return small_strings(pa.array(values.array, type=pa.large_string()))
    if pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return pc.cast(pa.array(values.array, from_pandas=True), pa.string())
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _zoned_text(values)
    narrow = isinstance(values.dtype, np.dtype) and values.dtype.kind == "f" and values.dtype.itemsize < 8
    obj = values.to_numpy() if narrow else values.astype(object)
    return small_strings(pa.array([v if type(v) is str else None if is_blank(v) else _list_text(v)
                                   if isinstance(v, _NESTED) else str(v) for v in obj], type=pa.large_string()))


_BEYOND_PYTHON = (NotImplementedError, ValueError, OverflowError)  # pandas, on a time Python cannot hold


def _zoned_text(values: pd.Series) -> pa.Array:
    """Time-zoned timestamps' text (``2024-07-01 01:00:00+01:00``); one after the year 9999,
    which Python's dates cannot hold (nor pandas put in a zone), as the same instant in UTC
    (``11476-08-15 05:20:00+00:00``)."""
    try:
        return pa.array([None if v is pd.NaT else str(v) for v in values], type=pa.string())
    except _BEYOND_PYTHON:  # one at a time, from UTC
        zone = values.dtype.tz

        def text(utc: pd.Timestamp) -> str | None:
            if utc is pd.NaT:
                return None
            try:
                return str(utc.tz_localize("UTC").tz_convert(zone))
            except _BEYOND_PYTHON:
                return f"{utc}+00:00"

        return pa.array([text(u) for u in values.dt.tz_convert(None)], type=pa.string())


_NESTED = (np.ndarray, list, tuple, dict)  # a Parquet list, a map's (key, value) pairs, a struct


def _list_text(value: Any) -> str:
    """A Parquet list, map or struct cell (a numpy array, a list of (key, value) tuples, a dict,
    nested in one another) as Python writes a list, tuple or dict, each item as numpy writes it
    alone: ``[1, 2]``, ``['a b', 'c']``, ``[0.1]`` for a float32, ``[2024-01-01T12:00:00.123456789]``
    for a timestamp in nanoseconds, ``{'b': [1, None]}``, ``[('k', [1, 2])]``. (Python's text of a
    dict or tuple holding an array is numpy's, which cuts a long array short with "...".)"""
    if isinstance(value, (np.ndarray, list)):
        return "[" + ", ".join(_list_text(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_list_text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_list_text(k)}: {_list_text(v)}" for k, v in value.items()) + "}"
    return repr(str(value)) if isinstance(value, str) else str(value)


def reject_table(errors: pd.DataFrame, frame: pd.DataFrame, *, row_offset: int, file: str,
                 schema: pa.Schema) -> pa.Table:
    """One line per rejected row of ``frame`` (the rows ``row_offset``..): its file, row, every
    problem in ``errors`` (row, column, value, reason) and the row as read."""
    # each row's problems in the order found, " | "-joined: a list per row, joined by Arrow (a pandas
    # groupby joined them in Python, a row at a time: 5 of 6 s of a chunk whose every row was rejected)
    order = np.argsort(errors["row"].to_numpy(dtype=np.int64), kind="stable")
    by_row = errors["row"].to_numpy(dtype=np.int64)[order]
    starts = np.flatnonzero(np.r_[True, by_row[1:] != by_row[:-1]]) if len(by_row) else np.zeros(0, np.int64)
    shown: dict[tuple[str, str, str], str] = {}  # a problem's text, made once per distinct problem
    texts = [shown.get(key) or shown.setdefault(key, _problem(*key)) for key in zip(
        errors["column"].astype(str).to_numpy(dtype=object)[order], errors["value"].astype(str).to_numpy(dtype=object)[order],
        errors["reason"].astype(str).to_numpy(dtype=object)[order])]
    # 64-bit offsets: a chunk's reasons may pass 2 GiB (every field of 400k rows rejected); the
    # joined column is cut into pieces of Arrow's 32-bit text below
    lists = pa.LargeListArray.from_arrays(pa.array(np.r_[starts, len(by_row)], pa.int64()),
                                          pa.array(texts, pa.large_string()))
    rows = by_row[starts]
    original = frame.iloc[rows - row_offset]
    columns: dict[str, pa.Array] = {"reject_file": pa.array([file] * len(rows), pa.string()),
                                    "reject_row": pa.array(rows, pa.int64()),
                                    "reject_reason": small_strings(pc.binary_join(lists, pa.scalar(" | ", pa.large_string())))}
    # this input's column under each name of the rejects file, as it spells it
    own = {normalise_header(name): c for c, name in rejected_names(list(original.columns)).items()}
    for name in schema.names[len(REJECT_META):]:
        spelt = own.get(normalise_header(name))
        columns[name] = as_text(original[spelt]) if spelt is not None else pa.nulls(len(rows), pa.string())
    return pa.table(columns, schema=schema)


def encode_csv(table: pa.Table, shape: Callable[[pa.Table], pa.Table] | None = None, *,
               header: bool = False) -> pa.Buffer:
    """CSV lines of ``table`` (shaped, made :func:`csv_safe`), without the header unless asked:
    what :class:`Writer` appends to a CSV output, made wherever the chunk was scored."""
    if shape is not None:
        table = shape(table)
    if header:  # input column names are the user's text too (rejects, --keep-input-columns)
        table = table.rename_columns(guarded_names(table.column_names))
    table = csv_safe(table)
    # Arrow's CSV writer writes a stale (without a header, uninitialised) buffer for a table whose
    # first record batch is empty (apache/arrow#36889): a column in chunks, the first one empty,
    # made a rejects file's row into 49 kB of NUL bytes. Rebuilt of its rows only where it has one.
    batches = table.to_batches()
    if table.num_rows and any(not b.num_rows for b in batches):
        table = pa.Table.from_batches([b for b in batches if b.num_rows], schema=table.schema)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=header))
    return sink.getvalue()


class Writer:
    """Writes a CSV or Parquet output to a temporary file next to the target, or a CSV to ``stream``.

    Each chunk is encoded and written on a background thread (Arrow releases the GIL there)
    while the next chunk is scored; chunks stay in order, and an error surfaces on the next call.
    A CSV chunk may also come already encoded (:func:`encode_csv`, where it was scored).
    Parquet outputs keep text columns dictionary-encoded (each distinct text stored once per page).
    """

    def __init__(self, target: Path, schema: pa.Schema, *, stream: BinaryIO | None = None):
        self.target, self.schema = target, schema
        self.tmp = tmp_path(target)
        self._csv = stream is not None or not is_parquet(target)
        self._parquet: pq.ParquetWriter | None = None
        self._sink: pa.NativeFile | None = None  # the Parquet file, which its writer does not close
        self._own = stream is None
        try:
            if not self._csv:
                self._sink = arrow_file(self.tmp, "wb")
                self._parquet = pq.ParquetWriter(self._sink, schema, compression="zstd", use_dictionary=True)
            self._fh: BinaryIO | None = (stream if stream is not None else open(self.tmp, "wb")) if self._csv else None
            if self._fh is not None:
                self._fh.write(encode_csv(schema.empty_table(), header=True))
        except OSError as err:
            raise BatchInputError(f"{target}: cannot write: {err.strerror or err}.") from err
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-writer")
        self._pending: Future | None = None
        self._held: list[pa.Table] = []  # Parquet chunks not yet a row group

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            with self._named_on_failure():
                pending.result()

    @contextmanager
    def _named_on_failure(self) -> Iterator[None]:
        """A failed write (a full disk) named by this writer's file, for a job that writes two."""
        try:
            yield
        except BrokenPipeError:  # standard output's reader has gone: the caller says so
            raise
        except OSError as err:
            named = "-" if not self._own else self.target
            raise BatchInputError(f"{named}: cannot write: {err.strerror or err}.") from err

    def write(self, chunk: pa.Table | pa.Buffer) -> None:
        """Append a table, or (CSV) lines already encoded by :func:`encode_csv`. Parquet tables are
        held until they make a row group of :data:`PARQUET_GROUP_ROWS` rows (or the output ends):
        small chunks (``--chunk-rows 10``) would otherwise each be a row group with its own
        dictionaries and statistics, and a file several times the size."""
        if self._parquet is not None:
            assert isinstance(chunk, pa.Table)
            self._held.append(chunk)
            if sum(t.num_rows for t in self._held) < PARQUET_GROUP_ROWS:
                return
            chunk = self._take_held()
        self._submit(chunk)

    def _take_held(self) -> pa.Table:
        table = self._held[0] if len(self._held) == 1 else pa.concat_tables(self._held)
        self._held = []
        return table

    def _submit(self, chunk: pa.Table | pa.Buffer) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, chunk)

    def _write(self, chunk: pa.Table | pa.Buffer) -> None:
        if self._fh is not None:
            self._fh.write(chunk if isinstance(chunk, pa.Buffer) else encode_csv(chunk))
        else:
            assert self._parquet is not None and isinstance(chunk, pa.Table)
            self._parquet.write_table(chunk)

    def close(self) -> None:
        try:
            if self._held:
                self._submit(self._take_held())
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            with self._named_on_failure():
                try:
                    if self._parquet is not None:
                        self._parquet.close()
                finally:
                    if self._sink is not None:
                        self._sink.close()
                if self._fh is not None:
                    if self._own:
                        self._fh.close()
                    else:
                        self._fh.flush()
