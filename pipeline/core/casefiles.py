"""Reading case files: CSV (every cell as text) and Parquet, in chunks, with no row lost.

The one reader behind ``kneepain score``, the Dask engine and :func:`pipeline.predict` on a path:

- a CSV record with the wrong number of fields does not stop the file: it comes back in its
  chunk, at its place, with its fields as far as they go and a reason naming the record;
- a record longer than the read block (about 1 MB, which keeps memory flat) is read by reopening
  the file with a larger block and skipping the rows already delivered, up to
  :data:`MAX_RECORD_BYTES`;
- a header that names one column twice once case and surrounding spaces are ignored (``age`` and
  ``Age ``) is refused: which of the two to read would be a guess.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.schema import ID_COLUMN, normalise_header, repeated_columns

__all__ = ["MAX_RECORD_BYTES", "CaseChunk", "check_columns", "file_columns", "has_case_ids", "iter_chunks",
           "read_case_file"]

_CSV_BLOCK = 1 << 20  # small blocks keep pyarrow's read-ahead, and so peak memory, small
MAX_RECORD_BYTES = 1 << 28  # 256 MB: a longer CSV record makes the file unreadable (exit 2)
_STRADDLE = "straddl"  # pyarrow: "straddling object straddles two block boundaries"


class CaseChunk(NamedTuple):
    """Consecutive rows of a case file: ``frame`` holds every row in file order; ``malformed``
    maps the position in ``frame`` of a record with the wrong number of fields to its reason."""

    frame: pd.DataFrame
    malformed: dict[int, str]


def check_columns(names: list[str], where: str) -> None:
    """Refuse a header that names one column twice after case and spaces are folded."""
    repeated = repeated_columns(names)
    if repeated:
        name, spellings = next(iter(repeated.items()))
        raise BatchInputError(f"{where}: the header repeats column {name!r} ({', '.join(map(repr, spellings))}); "
                              "column names are matched ignoring case and surrounding spaces, so each may appear once.")


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:  # the header's bytes only: a bad byte further on is the reader's to report
            raw = fh.readline()
            while raw.count(b'"') % 2 and (more := fh.readline()):  # a quoted name across lines
                raw += more
        header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")), None)
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{path}: the header is not valid UTF-8 ({err.reason} at byte {err.start}).") from err
    except csv.Error as err:
        raise BatchInputError(f"{path}: cannot read the header: {err}.") from err
    except OSError as err:
        raise BatchInputError(f"{path}: cannot read: {err.strerror or err}.") from err
    if not header or all(not h.strip() for h in header):
        raise BatchInputError(f"{path}: the file is empty (no header line); expected a CSV header with at least "
                              "the required columns age and sex.")
    check_columns(header, str(path))
    return header


def file_columns(path: str | Path) -> list[str]:
    """The column names of a CSV (its header) or Parquet file (its schema), checked for repeats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BatchInputError(f"{path}: no such file.")
    if suffix == ".parquet":
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as err:
            raise BatchInputError(f"{path}: cannot read: {_first_line(err)}") from err
        check_columns(names, str(path))
        return names
    if suffix == ".csv":
        return _csv_header(path)
    raise BatchInputError(f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet.")


def has_case_ids(path: str | Path) -> bool:
    """Whether the file's header (CSV) or schema (Parquet) has a ``case_id`` column."""
    return ID_COLUMN in {normalise_header(h) for h in file_columns(path)}


def iter_chunks(path: str | Path, chunk_rows: int) -> Iterator[CaseChunk]:
    """:class:`CaseChunk` of about ``chunk_rows`` rows from a CSV (all cells as text) or Parquet file.

    Raises
    ------
    BatchInputError
        The file cannot be read at all: missing, empty, not UTF-8, another type, a repeated column.
    """
    path = Path(path)
    header = file_columns(path)
    try:
        if path.suffix.lower() == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield CaseChunk(_ids_as_text(pa.Table.from_batches([batch])).to_pandas(), {})
            return
        yield from _csv_chunks(path, header, chunk_rows)
    except (pa.ArrowException, OSError) as err:
        message = _first_line(err)
        if "UTF8" in message:
            message = "not valid UTF-8 text (save the file as UTF-8)"
        raise BatchInputError(f"{path}: cannot read: {message}") from err


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class _Malformed(NamedTuple):
    fields: int
    text: str


def _arrow_batches(path: Path, header: list[str], bad: dict[int, _Malformed]) -> Iterator[pa.RecordBatch]:
    """The well-formed records as Arrow batches; records with the wrong field count go to ``bad``
    (keyed by their 0-based data row). A record longer than the block reopens the file with a
    larger block and skips the rows already delivered."""

    def keep(row) -> str:
        # with use_threads=False pyarrow numbers the records (1 is the header), quoted newlines included
        bad[row.number - 2] = _Malformed(row.actual_columns, row.text)
        return "skip"

    block, delivered = _CSV_BLOCK, 0
    while True:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        seen = 0
        try:
            for batch in reader:
                skip = min(max(delivered - seen, 0), batch.num_rows)
                seen += batch.num_rows
                if skip < batch.num_rows:
                    out = batch.slice(skip)
                    delivered += out.num_rows
                    yield out
            return
        except pa.ArrowInvalid as err:
            if _STRADDLE not in str(err) or block >= MAX_RECORD_BYTES:
                if _STRADDLE in str(err):
                    raise BatchInputError(f"{path}: a record is longer than {MAX_RECORD_BYTES >> 20} MB; split "
                                          "the field or the file.") from err
                raise
            block = min(block * 8, MAX_RECORD_BYTES)


def _csv_chunks(path: Path, header: list[str], chunk_rows: int) -> Iterator[CaseChunk]:
    bad: dict[int, _Malformed] = {}
    pending: list[pa.RecordBatch] = []
    size = good = start = 0  # good rows delivered before ``pending``; first data row of the next chunk
    batches = _arrow_batches(path, header, bad)
    while True:
        batch = next(batches, None)
        if batch is not None:
            pending.append(batch)
            size += batch.num_rows
            if size < chunk_rows:
                continue
        last = batch is None
        if not pending and not last:
            continue
        table = (pa.Table.from_batches(pending) if pending
                 else pa.schema([pa.field(h, pa.string()) for h in header]).empty_table())
        chunk, start = _place_malformed(table, bad, good, start, header, last, str(path))
        good += table.num_rows
        pending, size = [], 0
        if len(chunk.frame) or last and start == 0:  # a header-only file still yields its (empty) columns once
            yield chunk
        if last:
            return


def _place_malformed(table: pa.Table, bad: dict[int, _Malformed], good: int, start: int, header: list[str],
                     last: bool, where: str) -> tuple[CaseChunk, int]:
    """The chunk of data rows ``start`` .. (the last well-formed row of ``table``, or the end of the
    file when ``last``), malformed records put back at their place. Returns it and the next ``start``."""
    frame = table.to_pandas()
    if not bad and not last:
        return CaseChunk(frame, {}), start + len(frame)
    known = np.array(sorted(bad), dtype=np.int64)
    # the i-th malformed record (sorted) has known[i] - i well-formed rows before it
    rows = np.arange(good, good + len(frame))
    rows = rows + np.searchsorted(known - np.arange(len(known)), rows, side="right")
    end = int(rows[-1]) + 1 if len(rows) else start
    if last:
        end = max([end, *(int(k) + 1 for k in known)])
    mine = [int(k) for k in known if start <= k < end]
    if not mine:
        return CaseChunk(frame, {}), end
    names = list(frame.columns)
    fields = [(next(csv.reader([bad[k].text]), []) + [""] * len(names))[:len(names)] for k in mine]
    extra = pd.DataFrame(fields, columns=names, dtype=frame.dtypes.iloc[0] if len(names) else None)
    order = np.argsort(np.concatenate([rows, mine]), kind="stable")
    merged = pd.concat([frame, extra], ignore_index=True).iloc[order].reset_index(drop=True)
    position = {k: i for i, k in enumerate(np.concatenate([rows, mine])[order].tolist())}
    reasons = {position[k]: f"record {k + 2} of {where} (the header is record 1) has {bad[k].fields} fields; the "
                            f"header has {len(header)}" for k in mine}
    return CaseChunk(merged, reasons), end


def _ids_as_text(table: pa.Table) -> pa.Table:
    """A numeric ``case_id`` column as text in Arrow (in pandas, integers with nulls become floats: "123.0")."""
    names = [normalise_header(n) for n in table.column_names]
    if ID_COLUMN in names:
        i = names.index(ID_COLUMN)
        kind = table.schema.types[i]
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
            table = table.set_column(i, table.column_names[i], pc.cast(table.column(i), pa.string()))
    return table


def read_case_file(path: str | Path, chunk_rows: int = 100_000) -> pd.DataFrame:
    """A whole CSV or Parquet case file as one DataFrame, read as ``kneepain score`` reads it.

    Raises
    ------
    BatchInputError
        The file cannot be read at all.
    CaseValidationError
        Some CSV records have the wrong number of fields (each named with its row and record).
    """
    frames, problems, offset = [], [], 0
    for chunk in iter_chunks(path, chunk_rows):
        frames.append(chunk.frame)
        problems += [(offset + i, reason) for i, reason in chunk.malformed.items()]
        offset += len(chunk.frame)
    if problems:
        raise CaseValidationError(pd.DataFrame({"row": [r for r, _ in problems], "column": "",
                                                "value": "", "reason": [m for _, m in problems]}), offset)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame
