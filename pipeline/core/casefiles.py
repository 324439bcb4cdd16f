"""Reading case files: CSV (every cell as text) and Parquet, in chunks, with no row lost.

The one reader behind ``kneepain score``, the Dask engine and :func:`pipeline.predict` on a path:

- chunks have exactly ``chunk_rows`` rows (the last fewer), so a file read in blocks of whole
  chunks (:class:`FileBlock`, planned by :mod:`pipeline.core.blocks`) gives the same chunks,
  row numbers and reasons as the file read whole;

- a CSV record with the wrong number of fields does not stop the file: it comes back in its
  chunk, at its place, with its fields as far as they go and a reason naming the record;
- a record longer than the read block (about 1 MB, which keeps memory flat) is read by reopening
  the file with a larger block and skipping the rows already delivered, up to
  :data:`MAX_RECORD_BYTES`;
- a header that names one column twice once case and surrounding spaces are ignored (``age`` and
  ``Age ``) is refused: which of the two to read would be a guess.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.parsing import ParsedCases, parse_cases, required_columns_error
from pipeline.core.schema import ID_COLUMN, normalise_header, repeated_columns

__all__ = ["MAX_RECORD_BYTES", "BlockMismatchError", "CaseChunk", "FileBlock", "check_columns", "complete_columns",
           "csv_data_start", "file_columns", "has_case_ids", "iter_chunks", "parse_read", "read_case_file"]

_CSV_BLOCK = 1 << 18  # pyarrow reads about 24 blocks ahead: 256 KB blocks hold that to ~6 MB (1 MB: ~24 MB)
MAX_RECORD_BYTES = 1 << 28  # 256 MB: a longer CSV record makes the file unreadable (exit 2)
_STRADDLE = "straddl"  # pyarrow: "straddling object straddles two block boundaries"
# pyarrow gives a record with the wrong field count to the row handler as text; one that is not
# UTF-8 cannot be, and the read stops with this (its records numbered from 1 in the stream)
_UNDECODABLE = re.compile(r"Row #(\d+): Expected \d+ columns, got (\d+)")
_HEADER_BYTES = 1 << 20  # a longer header is refused
# files given as CSV that are something else: (first bytes, what it is, what to do)
_NOT_CSV = [(b"PAR1", "Parquet", "give it a .parquet name (standard input is read as CSV only)"),
            (b"\x1f\x8b", "gzip-compressed", "decompress it first, for example: zcat FILE.gz | kneepain score - -o OUTPUT"),
            (b"PK\x03\x04", "zip (or Excel .xlsx)", "extract it, or save the sheet as 'CSV UTF-8'")]
_BARE_CR = re.compile(rb"\r(?!\n)")  # a line ending of CR alone (LF and CR LF are read)
_HANDLER_MARK = "_kneepain_row_handler"
_HOOK_MARK = "_kneepain_quiet_rows"
_hook_lock = threading.Lock()


def _quiet_undecodable_rows() -> None:
    """Keep pyarrow's report of an undecodable malformed record off stderr (the read's own error names it).

    pyarrow decodes such a record before calling the row handler; the decoding error cannot reach
    the handler, so Python prints it as an "Exception ignored" traceback. Installed once, the hook
    drops only a ``UnicodeDecodeError`` reported against one of this module's row handlers and hands
    every other report to the hook it replaced.
    """
    with _hook_lock:
        previous = sys.unraisablehook
        if getattr(previous, _HOOK_MARK, False):
            return

        def hook(unraisable) -> None:
            if not (isinstance(unraisable.exc_value, UnicodeDecodeError)
                    and getattr(unraisable.object, _HANDLER_MARK, False)):
                previous(unraisable)

        setattr(hook, _HOOK_MARK, True)
        sys.unraisablehook = hook


class FileBlock(NamedTuple):
    """Consecutive rows of one case file, read on their own (:func:`pipeline.core.blocks.plan_blocks`).

    ``rows`` None is the whole file. Otherwise the rows ``first_row`` .. ``first_row + rows`` (0-based
    data rows); a CSV block's records are the bytes ``start`` .. ``end``, a Parquet block's rows lie
    in the row groups ``start`` .. ``end``.
    """

    first_row: int = 0
    rows: int | None = None
    start: int = 0
    end: int = 0


class BlockMismatchError(RuntimeError):
    """A CSV block does not hold the records planned for it (quoting the planner read otherwise): read the file whole."""


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
        if not name:
            unnamed = [i + 1 for i, n in enumerate(names) if not str(n).strip()]
            raise BatchInputError(f"{where}: columns {', '.join(map(str, unnamed))} of the header have no name (a "
                                  "spreadsheet's empty columns, saved as ',,'); remove them or give each a name.")
        raise BatchInputError(f"{where}: the header repeats column {name!r} ({', '.join(map(repr, spellings))}); "
                              "column names are matched ignoring case and surrounding spaces, so each may appear once.")


def complete_columns(paths: Sequence[Path]) -> list[list[str]]:
    """Each file's columns (:func:`file_columns`), every file refused first if it lacks a required
    column, so a job stops before any of its rows is scored."""
    columns = [file_columns(p) for p in paths]
    for path, names in zip(paths, columns):
        missing = required_columns_error(names)
        if missing is None:
            continue
        separator = next((sep for sep in (";", "\t", "|") if len(names) == 1 and sep in names[0]), None)
        if separator is not None:  # the usual cause: a file separated by something other than commas
            raise BatchInputError(f"{path}: the header is one column, {_clip(names[0])!r}: the file looks separated by "
                                  f"{separator!r}, and kneepain reads comma-separated CSV; save it with commas.")
        raise BatchInputError(f"{path}: {missing}") from missing
    return columns


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


def parse_read(frame: pd.DataFrame, malformed: dict[int, str], *, row_offset: int = 0) -> ParsedCases:
    """:func:`pipeline.core.parsing.parse_cases` of rows as read (``raise_on_error=False``): each
    malformed record (row -> reason, from a :class:`CaseChunk`) is invalid for that reason alone,
    since its fields may be shifted, and its id counts as no id."""
    if malformed:
        frame = frame.copy()
        frame.iloc[list(malformed)] = None
    parsed = parse_cases(frame, row_offset=row_offset, raise_on_error=False)
    if malformed:
        rows = np.fromiter(malformed, dtype=np.int64, count=len(malformed)) + row_offset
        parsed.errors = pd.concat([parsed.errors[~parsed.errors["row"].isin(rows)], pd.DataFrame({
            "row": rows, "column": "", "value": "", "reason": list(malformed.values())})], ignore_index=True)
        parsed.valid[list(malformed)] = False
    return parsed


def _csv_header(path: Path) -> tuple[list[str], int]:
    """The header's names and its length in bytes (where the data records begin)."""
    try:
        with open(path, "rb") as fh:  # the header's bytes only: a bad byte further on is the reader's to report
            raw = fh.readline(_HEADER_BYTES)
            while raw.count(b'"') % 2 and len(raw) < _HEADER_BYTES and (more := fh.readline(_HEADER_BYTES)):
                raw += more  # a quoted name across lines
        for magic, kind, fix in _NOT_CSV:
            if raw.startswith(magic):
                raise BatchInputError(f"{path}: is a {kind} file, not CSV text (by its first bytes); {fix}.")
        if _BARE_CR.search(raw):
            raise BatchInputError(f"{path}: its lines end in a bare carriage return (CR), as old Mac programs save "
                                  "CSV; save it with LF or CR LF line endings (for example Excel's 'CSV UTF-8').")
        if len(raw) >= _HEADER_BYTES and not raw.endswith(b"\n"):
            raise BatchInputError(f"{path}: the header is longer than {_HEADER_BYTES >> 20} MB; is this a CSV file?")
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
    return header, len(raw)


def csv_data_start(path: str | Path) -> int:
    """The byte offset of a CSV file's first data record: the length of its header record."""
    return _csv_header(Path(path))[1]


def file_columns(path: str | Path) -> list[str]:
    """The column names of a CSV (its header) or Parquet file (its schema), checked for repeats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise BatchInputError(f"{path}: is a folder; give the CSV or Parquet files in it (with --engine dask, a glob "
                              "such as 'folder/*.csv').")
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
        return _csv_header(path)[0]
    raise BatchInputError(f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet.")


def has_case_ids(path: str | Path) -> bool:
    """Whether the file's header (CSV) or schema (Parquet) has a ``case_id`` column."""
    return ID_COLUMN in {normalise_header(h) for h in file_columns(path)}


def iter_chunks(path: str | Path, chunk_rows: int, *, block: FileBlock | None = None,
                name: str | None = None) -> Iterator[CaseChunk]:
    """:class:`CaseChunk` of ``chunk_rows`` rows from a CSV (all cells as text) or Parquet file.

    Every chunk but the last has exactly ``chunk_rows`` rows, so the chunks of a file are the same
    whichever way it is read: whole, or ``block`` by block (:mod:`pipeline.core.blocks`).

    Parameters
    ----------
    path : path
        A ``.csv`` or ``.parquet`` file.
    chunk_rows : int
        Rows per chunk.
    block : FileBlock, optional
        Read only these rows (their chunks are the file's chunks ``block.first_row // chunk_rows``
        on). Default: the whole file.
    name : str, optional
        The file's name in the reasons of malformed records (default ``path``).

    Raises
    ------
    BatchInputError
        The file cannot be read at all: missing, empty, not UTF-8, another type, a repeated column.
    BlockMismatchError
        A CSV ``block`` does not hold the records it was planned to hold; read the file whole.
    """
    path = Path(path)
    file_columns(path)  # refuses a missing, empty or unsupported file, or a repeated column
    block = block or FileBlock()
    try:
        if path.suffix.lower() == ".parquet":
            for table in _parquet_tables(path, chunk_rows, block):
                yield CaseChunk(_ids_as_text(table).to_pandas(), {})
            return
        header, data_start = _csv_header(path)
        if block.first_row == 0 and block.rows is None:  # the whole file
            block = FileBlock(start=data_start)
        yield from _csv_chunks(path, header, chunk_rows, block, name or str(path))
    except (pa.ArrowException, OSError) as err:
        message = _first_line(err)
        if "UTF8" in message:
            message = f"not valid UTF-8 text{_where_not_utf8(path)} (save the file as UTF-8)"
        raise BatchInputError(f"{path}: cannot read: {message}") from err


def _where_not_utf8(path: Path) -> str:
    """`` at byte offset B (line L)`` of the file's first byte that is not UTF-8 ('' if none is found)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    # err.object is the bytes the decoder held back from the block before, then this block
                    at = offset - (len(err.object) - len(block)) + err.start
                    line = lines + block[:max(at - offset, 0)].count(b"\n") + 1
                    return f" at byte offset {at} (line {line})"
                if not block:
                    return ""
                lines += block.count(b"\n")
                offset += len(block)
    except OSError:
        return ""


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _parquet_tables(path: Path, chunk_rows: int, block: FileBlock) -> Iterator[pa.Table]:
    """The Parquet file's rows of ``block`` in tables of exactly ``chunk_rows`` rows (the last may be shorter)."""
    file = pq.ParquetFile(path)
    rows = file.metadata.num_rows if block.rows is None else block.rows
    if block.rows is None:  # the whole file; its batches end at row groups' ends, so they are regrouped too
        block = FileBlock(0, rows, 0, file.num_row_groups)
    groups = range(block.start, block.end)
    skip = block.first_row - sum(file.metadata.row_group(g).num_rows for g in range(block.start))
    left, pending, held = rows, [], 0
    for batch in file.iter_batches(batch_size=chunk_rows, row_groups=groups):
        cut = min(skip, batch.num_rows)
        skip -= cut
        if cut < batch.num_rows and left > 0:
            pending.append(batch.slice(cut, left))
            held += pending[-1].num_rows
            left -= pending[-1].num_rows
        while held >= chunk_rows or (held and left == 0):
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            pending, held = table.slice(chunk_rows).to_batches(), max(held - chunk_rows, 0)
        if left == 0:
            return


class _Malformed(NamedTuple):
    fields: int
    text: str


def _arrow_batches(path: Path, start: int, end: int, header: list[str], report: Callable[[int, _Malformed], None],
                   where: str, first_row: int = 0) -> Iterator[pa.RecordBatch]:
    """The well-formed records in bytes ``start`` .. ``end`` of ``path`` (data records, no header) as
    Arrow batches; records with the wrong field count go to ``report`` (with their 0-based record
    there). A record longer than the block reopens the file with a larger block and skips the rows
    already delivered."""

    def keep(row) -> str:
        # with use_threads=False pyarrow numbers the records from 1, quoted newlines included and
        # blank lines left out
        report(row.number - 1, _Malformed(row.actual_columns, row.text))
        return "skip"

    setattr(keep, _HANDLER_MARK, True)
    _quiet_undecodable_rows()
    block, delivered = _CSV_BLOCK, 0
    while True:
        with pa.OSFile(str(path)) as file:  # a native stream: Arrow's reading thread never waits for Python
            seen = 0
            try:  # opening reads the first block, so it can fail as any later block can
                # large_string is pandas' own storage for text: the chunk's DataFrame wraps it without a cast
                reader = pacsv.open_csv(
                    file.get_stream(start, end - start),
                    read_options=pacsv.ReadOptions(block_size=block, use_threads=False, column_names=header),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep),
                    convert_options=pacsv.ConvertOptions(column_types={h: pa.large_string() for h in header},
                                                         strings_can_be_null=False, quoted_strings_can_be_null=False))
                for batch in reader:
                    skip = min(max(delivered - seen, 0), batch.num_rows)
                    seen += batch.num_rows
                    if skip < batch.num_rows:
                        out = batch.slice(skip)
                        delivered += out.num_rows
                        yield out
                return
            except pa.ArrowInvalid as err:
                undecodable = _UNDECODABLE.search(str(err))
                if undecodable:
                    raise BatchInputError(
                        f"{where}: record {first_row + int(undecodable[1]) + 1} (the header is record 1) has "
                        f"{_fields(int(undecodable[2]))} where the header has {len(header)}, and is not valid UTF-8 text "
                        "(save the file as UTF-8)") from err
                if _STRADDLE not in str(err) or block >= MAX_RECORD_BYTES:
                    if _STRADDLE in str(err):
                        raise BatchInputError(f"{where}: a record is longer than {MAX_RECORD_BYTES >> 20} MB; split "
                                              "the field or the file.") from err
                    raise
                block = min(block * 8, MAX_RECORD_BYTES)


def _csv_chunks(path: Path, header: list[str], chunk_rows: int, block: FileBlock, where: str) -> Iterator[CaseChunk]:
    """Chunks of exactly ``chunk_rows`` records of ``block`` (malformed ones at their place), the last shorter."""
    rows = _RowPlacer(header, where, block.first_row)
    end = path.stat().st_size if block.rows is None else block.end
    # a header and no data is no rows (pyarrow would say "Empty CSV file")
    batches = (_arrow_batches(path, block.start, end, header, rows.report, where, block.first_row)
               if end > block.start else iter(()))
    done = yielded = False
    while not done:
        batch = next(batches, None)
        done = batch is None
        if batch is not None:
            rows.add(batch)
        if done and block.rows is not None:
            rows.check_count(block.rows)
        while rows.ready(chunk_rows, done):
            yielded = True
            yield rows.take(chunk_rows)
    if not yielded:  # a file of a header only still yields its (empty) columns once
        yield rows.take(chunk_rows)


class _RowPlacer:
    """Well-formed records (Arrow batches) and malformed ones (``bad``), given back as chunks in record order.

    The ``g``-th well-formed record is record ``g`` + (malformed records before it); once a
    well-formed record has been read, every malformed one before it is known (pyarrow reads in order).
    """

    def __init__(self, header: list[str], where: str, first_row: int):
        self.header, self.where, self.first_row = header, where, first_row
        self.bad: dict[int, _Malformed] = {}
        self.pending: list[pa.RecordBatch] = []
        # rows in pending; well-formed and malformed records given back; the next chunk's first record
        self.held = self.good = self.dropped = self.start = 0

    def report(self, record: int, malformed: _Malformed) -> None:
        """A malformed record (reported again when the reader reopens the file: kept once)."""
        if record >= self.start:
            self.bad[record] = malformed

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.held += batch.num_rows

    def _records(self, good: np.ndarray) -> np.ndarray:
        """The record numbers of the well-formed records ``good`` (not yet given back)."""
        known = np.array(sorted(self.bad), dtype=np.int64)
        before = known - self.dropped - np.arange(len(known))  # well-formed records before each malformed one
        return good + self.dropped + np.searchsorted(before, good, side="right")

    def _total(self) -> int:
        return self.good + self.held + self.dropped + len(self.bad)

    def ready(self, chunk_rows: int, done: bool) -> bool:
        """Whether the next chunk is complete (at the end, whether any record is left)."""
        if done:
            return self.start < self._total()
        if not self.held:
            return False
        return int(self._records(np.array([self.good + self.held - 1]))[0]) >= self.start + chunk_rows - 1

    def check_count(self, rows: int) -> None:
        """Raise :class:`BlockMismatchError` unless the block held ``rows`` records, as planned."""
        if self._total() != rows:
            raise BlockMismatchError(f"{self.where}: the block of rows {self.first_row}.. holds {self._total()} records, "
                                     f"not the {rows} planned; read the file whole.")

    def take(self, chunk_rows: int) -> CaseChunk:
        """The next chunk: records ``start`` .. ``start + chunk_rows`` (or to the end)."""
        table = (pa.Table.from_batches(self.pending) if self.pending
                 else pa.schema([pa.field(h, pa.large_string()) for h in self.header]).empty_table())
        stop = self.start + chunk_rows
        records = self._records(np.arange(self.good, self.good + self.held))
        mine = int(np.searchsorted(records, stop))
        malformed = [k for k in sorted(self.bad) if k < stop]
        good = table.slice(0, mine)
        swallowing = {int(records[i]): reason for i, reason in _swallowing_fields(good, len(self.header)).items()}
        chunk = _with_malformed(good.to_pandas(), records[:mine], malformed, self.bad,
                                lambda k: f"record {self.first_row + k + 2} of {self.where} (the header is record 1) "
                                          + (swallowing[k] if k in swallowing else
                                             _malformed_reason(self.header, self.bad[k])),
                                also=list(swallowing))
        self.pending = table.slice(mine).to_batches()
        self.good, self.held, self.start = self.good + mine, self.held - mine, stop
        for k in malformed:
            del self.bad[k]
        self.dropped += len(malformed)
        return chunk


def _swallowing_fields(table: pa.Table, n_fields: int) -> dict[int, str]:
    """Rows of ``table`` with a field that swallowed records (:func:`_swallowed`): row -> the reason's end."""
    found: dict[int, str] = {}
    for name, column in zip(table.column_names, table.columns):
        if not _may_break_lines(column):
            continue
        for i in np.flatnonzero(pc.match_substring(column, "\n").to_numpy(zero_copy_only=False)).tolist():
            if i not in found and (reason := _swallowed(name, str(column[i].as_py()), n_fields)):
                found[i] = reason
    return found


def _swallowed(name: str, value: str, n_fields: int) -> str | None:
    """Why field ``name`` holding ``value`` looks like records swallowed by a quote left open (its lines
    after the first have the header's ``n_fields`` fields; a quote left open reads every record up to
    the next quote into one field, and they would vanish from the count), else None."""
    lines = value.split("\n")
    records = sum(len(next(csv.reader([line.rstrip("\r")]), [])) == n_fields for line in lines[1:])
    if not records:
        return None
    return (f"has a field {name!r} that runs over {len(lines)} lines, {records} of them with the header's {n_fields} "
            "fields: a quote left open there reads the records that follow into this one (close the quote; the "
            "whole record is in this row)")


def _malformed_reason(header: list[str], record: _Malformed) -> str:
    """Why a record with the wrong number of fields is malformed (a field that swallowed records is the likely cause)."""
    fields = next(csv.reader(io.StringIO(record.text, newline="")), [])
    for name, value in zip(header, fields):
        if "\n" in value and (reason := _swallowed(name, value, len(header))):
            return reason
    return f"has {_fields(record.fields)}; the header has {len(header)}"


def _may_break_lines(column: pa.ChunkedArray) -> bool:
    """Whether a text column's bytes hold a line break (most files have none in any field: one scan
    of the bytes, about 0.1 s per million rows of 50 columns, rather than a search of every value)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]  # the text bytes (a slice's may run past its rows: then the search decides)
        if data is not None and b"\n" in data.to_pybytes():
            return True
    return False


def _with_malformed(frame: pd.DataFrame, rows: np.ndarray, malformed: list[int], bad: dict[int, _Malformed],
                    reason: Callable[[int], str], also: Sequence[int] = ()) -> CaseChunk:
    """``frame`` (the well-formed records ``rows``) with the ``malformed`` records put back at their
    place; the well-formed records ``also`` are malformed too (read whole, rejected for ``reason``)."""
    if not malformed:
        at = np.searchsorted(rows, np.asarray(also, dtype=np.int64))
        return CaseChunk(frame, {int(i): reason(k) for i, k in zip(at, also)})
    names = list(frame.columns)
    fields = [(next(csv.reader([bad[k].text]), []) + [""] * len(names))[:len(names)] for k in malformed]
    extra = pd.DataFrame(fields, columns=names, dtype=frame.dtypes.iloc[0] if len(names) else None)
    everything = np.concatenate([rows, malformed])
    order = np.argsort(everything, kind="stable")
    merged = pd.concat([frame, extra], ignore_index=True).iloc[order].reset_index(drop=True)
    position = {k: i for i, k in enumerate(everything[order].tolist())}
    return CaseChunk(merged, {position[k]: reason(k) for k in sorted([*malformed, *also])})


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
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if problems:  # named with every other invalid row of the file, as `kneepain score` names them
        errors = parse_read(frame, dict(problems)).errors
        raise CaseValidationError(errors.sort_values("row", kind="stable"), offset)
    return frame
