"""A CSV file's data records in chunks of exactly ``chunk_rows`` rows, none lost (:func:`csv_chunks`).

- a record with the wrong number of fields does not stop the file: it comes back in its chunk, at
  its place, with its fields as far as they go and a reason naming the record (a field that
  swallowed the records after it, through a quote left open, is named as the likely cause);
- a record longer than the read block (256 KB, which keeps memory flat) is read by reopening the
  file with a larger block and skipping the rows already delivered, up to :data:`MAX_RECORD_BYTES`;
- a quoted CR LF keeps its LF wherever a read block ends (:class:`_CarriageReturnsHeld`), so a
  value reads the same from the file's start and from a Dask block's.

:mod:`pipeline.core.casefiles` checks the file and its header first and reads Parquet files.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.core.errors import BatchInputError
from pipeline.core.files import arrow_file, file_state, refuse_changed
from pipeline.core.formulas import unguarded

__all__ = ["MAX_RECORD_BYTES", "BlockMismatchError", "CaseChunk", "csv_chunks", "reading_long_records", "reason_kind"]

_CSV_BLOCK = 1 << 18  # pyarrow reads about 24 blocks ahead: 256 KB blocks hold that to ~6 MB (1 MB: ~24 MB)
MAX_RECORD_BYTES = 1 << 28  # 256 MB: a longer CSV record makes the file unreadable (exit 2)
# Python's csv module, which splits malformed records, multi-line fields and the header, refuses a
# field over 128 KB by default: its limit (one for the process) is raised to ours, never lowered
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))
_STRADDLE = "straddl"  # pyarrow: "straddling object straddles two block boundaries"
# pyarrow gives a record with the wrong field count to the row handler as text; one that is not
# UTF-8 cannot be, and the read stops with this (its records numbered from 1 in the stream)
_UNDECODABLE = re.compile(r"Row #(\d+): Expected \d+ columns, got (\d+)")
_HANDLER_MARK = "_kneepain_row_handler"
_HOOK_MARK = "_kneepain_quiet_rows"
_hook_lock = threading.Lock()


class _CarriageReturnsHeld(io.RawIOBase):
    """``stream``'s bytes in reads that never end with a carriage return while bytes follow it.

    pyarrow (up to 25 at least, apache/arrow#51368) drops the line feed of a quoted CR LF whose CR
    is the last byte of one read and whose LF starts the next: the field's value loses a byte, and
    which value does depends on where a read starts (a Dask block's reads start elsewhere than the
    whole file's). Held back to the next read, a CR arrives with the byte after it (but in a read of
    nothing but CRs). Arrow's reading thread then takes the GIL once per read (a 256 KB block),
    which made ``kneepain score`` on 1M rows about 5% slower on two threads: a stream is wrapped
    only where one of its reads would end with a CR (:func:`_cr_ends_a_read`)."""

    def __init__(self, stream: pa.NativeFile):
        super().__init__()
        self._stream, self._held = stream, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = -1 if size is None or size < 0 else max(size - len(self._held), 1)
        data, self._held = self._held + self._stream.read(want), b""
        kept = data.rstrip(b"\r")
        if kept and len(kept) < len(data):  # the CRs wait for the next read, with what follows them
            following = self._stream.read(1)
            if following:
                data, self._held = kept, data[len(kept):] + following
        return data


def _cr_ends_a_read(file: pa.NativeFile, start: int, end: int, block: int) -> bool:
    """Whether a read of ``block`` bytes of the stream of bytes ``start`` .. ``end`` of ``file``
    (Arrow reads a native stream so, block after block) would end with a CR and not the stream:
    one byte looked at per block, at its offset (the file's position and its streams' stay)."""
    return any(file.read_at(1, edge) == b"\r" for edge in range(start + block - 1, end - 1, block))


class BlockMismatchError(RuntimeError):
    """A CSV block does not hold the records planned for it (quoting the planner read otherwise): read the file whole."""


class CaseChunk(NamedTuple):
    """Consecutive rows of a case file: ``frame`` holds every row in file order; ``malformed``
    maps the position in ``frame`` of a record with the wrong number of fields to its reason."""

    frame: pd.DataFrame
    malformed: dict[int, str]


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


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def _keeping_a_leading_mark(path: Path, start: int) -> int:
    """Where to start reading records at byte ``start`` (after the header) so that a record there
    keeps a byte-order mark it starts with: Arrow drops one at the start of its stream, which is
    where the pandas engine's reading and each Dask block of a file begin, while one anywhere else
    in the file is part of its field (as pandas and Python's csv read it). Started at the line end
    before it, the stream begins with an empty line, which Arrow skips and does not number."""
    if start <= 0:
        return start
    with open(path, "rb") as fh:
        fh.seek(start - 1)
        before = fh.read(1 + len(codecs.BOM_UTF8))
    return start - 1 if before[:1] == b"\n" and before[1:] == codecs.BOM_UTF8 else start


class _Malformed(NamedTuple):
    fields: int
    text: str


def _arrow_batches(path: Path, start: int, end: int, header: list[str], report: Callable[[int, _Malformed], None],
                   where: str, first_row: int = 0) -> Iterator[pa.RecordBatch]:
    """The well-formed records in bytes ``start`` .. ``end`` of ``path`` (data records, no header) as
    Arrow batches; records with the wrong field count go to ``report`` (with their 0-based record
    there). A record longer than the block reopens the file with a larger block and skips the rows
    already delivered. A file that changes while it is read (cut short, added to, rewritten: its
    size or modification time moves, or it holds fewer than ``end`` bytes; or, reopened, it is
    another file) is an error once its last record has been read, or once the change breaks a
    record, rather than a job that scores what happened to be there."""

    def keep(row) -> str:
        # with use_threads=False pyarrow numbers the records from 1, quoted newlines included and
        # blank lines left out
        report(row.number - 1, _Malformed(row.actual_columns, row.text))
        return "skip"

    setattr(keep, _HANDLER_MARK, True)

    _quiet_undecodable_rows()
    start = _keeping_a_leading_mark(path, start)
    opened: tuple[int, ...] | None = None  # the file's state when first opened (file_state)

    def read(block: int) -> Iterator[pa.RecordBatch]:
        nonlocal opened
        with arrow_file(path) as file:  # native reads: Arrow's reading thread needs no GIL
            opened = opened or file_state(file.fileno())
            stream = file.get_stream(start, end - start)
            if _cr_ends_a_read(file, start, end, block):
                stream = _CarriageReturnsHeld(stream)
            try:  # opening reads the first block, so it can fail as any later block can
                # large_string is pandas' own storage for text: the chunk's DataFrame wraps it without a cast
                yield from pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=block, use_threads=False, column_names=header),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep),
                    convert_options=pacsv.ConvertOptions(column_types={h: pa.large_string() for h in header},
                                                         strings_can_be_null=False, quoted_strings_can_be_null=False))
                refuse_changed(file.fileno(), opened, where, end)
            except pa.ArrowInvalid as err:
                # a file cut short mid-record (or a writer part-way through one) reads as broken text
                refuse_changed(file.fileno(), opened, where, end)
                undecodable = _UNDECODABLE.search(str(err))
                if undecodable:
                    raise BatchInputError(
                        f"{where}: record {first_row + int(undecodable[1]) + 1} (the header is record 1) has "
                        f"{_fields(int(undecodable[2]))} where the header has {len(header)}, and is not valid UTF-8 text "
                        "(save the file as UTF-8)") from err
                if _STRADDLE in str(err) and block >= MAX_RECORD_BYTES:
                    raise BatchInputError(f"{where}: a record is longer than {MAX_RECORD_BYTES >> 20} MB; split "
                                          "the field or the file.") from err
                raise

    return reading_long_records(read)


def reading_long_records(read: Callable[[int], Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """The batches of a CSV reader opened by ``read(block_size)``: where a record is longer than
    its blocks (pyarrow: "straddling object"), read again with blocks eight times as large, up to
    :data:`MAX_RECORD_BYTES`, the rows already given skipped."""
    block, delivered = _CSV_BLOCK, 0
    while True:
        seen = 0
        try:
            for batch in read(block):
                skip = min(max(delivered - seen, 0), batch.num_rows)
                seen += batch.num_rows
                if skip < batch.num_rows:
                    out = batch.slice(skip)
                    delivered += out.num_rows
                    yield out
            return
        except pa.ArrowInvalid as err:
            if _STRADDLE not in str(err) or block >= MAX_RECORD_BYTES:
                raise
            block = min(block * 8, MAX_RECORD_BYTES)


def csv_chunks(path: str | Path, header: list[str], chunk_rows: int, *, start: int, where: str, end: int | None = None,
               first_row: int = 0, rows: int | None = None,
               looks_like_record: Callable[[list[str]], bool] | None = None) -> Iterator[CaseChunk]:
    """Chunks of exactly ``chunk_rows`` records (malformed ones at their place), the last shorter.

    The records are the bytes ``start`` .. ``end`` of ``path`` (None: to the end of the file), data
    records without the header, ``header`` their column names. ``first_row`` is the file's row
    number of the first record, for the reasons (which name the file as ``where``); with ``rows``,
    the bytes must hold that many records, or :class:`BlockMismatchError`. ``looks_like_record``:
    whether a line's fields, whatever their number, look like one of the file's records (a line of
    a multi-line field that does is taken for a record swallowed by a quote left open).
    """
    path = Path(path)
    placer = _RowPlacer(header, where, first_row, looks_like_record)
    end = path.stat().st_size if end is None else end
    # a header and no data is no rows (pyarrow would say "Empty CSV file")
    batches = (_arrow_batches(path, start, end, header, placer.report, where, first_row)
               if end > start else iter(()))
    done = yielded = False
    while not done:
        batch = next(batches, None)
        done = batch is None
        if batch is not None:
            placer.add(batch)
        if done and rows is not None:
            placer.check_count(rows)
        while placer.ready(chunk_rows, done):
            yielded = True
            yield placer.take(chunk_rows)
    if not yielded:  # a file of a header only still yields its (empty) columns once
        yield placer.take(chunk_rows)


class _RowPlacer:
    """Well-formed records (Arrow batches) and malformed ones (``bad``), given back as chunks in record order.

    The ``g``-th well-formed record is record ``g`` + (malformed records before it); once a
    well-formed record has been read, every malformed one before it is known (pyarrow reads in order).
    """

    def __init__(self, header: list[str], where: str, first_row: int,
                 looks_like_record: Callable[[list[str]], bool] | None = None):
        self.header, self.where, self.first_row = header, where, first_row
        self.is_record = _record_test(len(header), looks_like_record)
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
        if not self.bad:  # the usual file: no malformed record ahead of these
            return good + self.dropped
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
        # the reader's batches (about 1,000 rows each) joined into one array per column, so each
        # later step costs one call per column rather than one per batch (1M rows: 1.5 s less);
        # then the spreadsheet mark of kneepain's own CSV outputs taken off
        good = unguarded(table.slice(0, mine).combine_chunks())
        swallowing = {int(records[i]): reason for i, reason in _swallowing_fields(good, self.is_record).items()}
        chunk = _with_malformed(good.to_pandas(), records[:mine], malformed, self.bad,
                                lambda k: f"record {self.first_row + k + 2} of {self.where} (the header is record 1) "
                                          + (swallowing[k] if k in swallowing else
                                             _malformed_reason(self.header, self.bad[k], self.is_record)),
                                also=list(swallowing))
        self.pending = table.slice(mine).to_batches()
        self.good, self.held, self.start = self.good + mine, self.held - mine, stop
        for k in malformed:
            del self.bad[k]
        self.dropped += len(malformed)
        return chunk


def _record_test(n_fields: int, looks_like_record: Callable[[list[str]], bool] | None) -> Callable[[list[str]], bool]:
    """Whether a line's fields could be a record of the file: by ``looks_like_record`` where given,
    whatever number of fields the line has (a quote left open reads a record with a field too many
    or too few into the field as well: counting only lines of the header's ``n_fields`` lost such
    records without a word; ``looks_like_record`` asks more of such a line); else the header's
    ``n_fields``."""
    if looks_like_record is None:
        return lambda fields: len(fields) == n_fields
    return lambda fields: len(fields) > 1 and looks_like_record(fields)


_RECORD_NAMED = r"(?s)^record \d+ of .*? \(the header is record 1\) "  # a file's name may hold a line break


def reason_kind(reasons: pd.Series) -> pd.Series:
    """Each problem's reason without what names its one record (its number, its field count, the
    lines a field runs over) and without the allowed answers after a ``;``, so that problems of
    one kind count together in a report's commonest reasons."""
    kind = reasons.astype(str).str.replace(_RECORD_NAMED, "", regex=True)
    kind = kind.str.replace(r"(?s)^has \d+ fields?; the header has \d+( \(.*)?$", "has the wrong number of fields", regex=True)
    kind = kind.str.replace(r"(?s)^(has a field '.*?') that runs over .*$",
                            r"\1 that reads the records after it (a quote left open)", regex=True)
    return kind.str.split(";").str[0]


def _swallowing_fields(table: pa.Table, is_record: Callable[[list[str]], bool]) -> dict[int, str]:
    """Rows of ``table`` with a field that swallowed records (:func:`_swallowed`): row -> the reason's end."""
    found: dict[int, str] = {}
    for name, column in zip(table.column_names, table.columns):
        if not _may_break_lines(column):
            continue
        for i in np.flatnonzero(pc.match_substring(column, "\n").to_numpy(zero_copy_only=False)).tolist():
            if i not in found and (reason := _swallowed(name, str(column[i].as_py()), is_record)):
                found[i] = reason
    return found


def _swallowed(name: str, value: str, is_record: Callable[[list[str]], bool]) -> str | None:
    """Why field ``name`` holding ``value`` looks like records swallowed by a quote left open (some of
    its lines after the first are records by ``is_record``, :func:`_record_test`; a quote left
    open reads every record up to the next quote into one field, and they would vanish from the
    count), else None."""
    lines = value.split("\n")
    records = sum(is_record(_fields_of(line)) for line in lines[1:])
    if not records:
        return None
    return (f"has a field {name!r} that runs over {len(lines)} lines, {records} of them like records of this "
            "file: a quote left open there reads the records that follow into this one (close the quote; the "
            "whole record is in this row)")


def _fields_of(text: str) -> list[str]:
    """The fields of the first CSV record in ``text`` (a line break or a lone carriage return outside
    quotes ends it; text the csv module cannot split is one field)."""
    try:
        return next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error:
        return [text]


def _malformed_reason(header: list[str], record: _Malformed, is_record: Callable[[list[str]], bool]) -> str:
    """Why a record with the wrong number of fields is malformed (a field that swallowed records is the likely cause)."""
    fields = _fields_of(record.text)
    for name, value in zip(header, fields):
        if "\n" in value and (reason := _swallowed(name, value, is_record)):
            return reason
    reason = f"has {_fields(record.fields)}; the header has {len(header)}"
    if len(fields) > len(header) and header:
        return reason + f" (column {header[-1]!r} holds the fields from there on, as CSV text)"
    return reason


def _may_break_lines(column: pa.ChunkedArray) -> bool:
    """Whether a text column's bytes hold a line break (most files have none in any field: one scan
    of the bytes, about 0.1 s per million rows of 50 columns, rather than a search of every value)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]  # the text bytes (a slice's may run past its rows: then the search decides)
        if data is not None and b"\n" in data.to_pybytes():
            return True
    return False


def _as_many_fields(fields: list[str], n: int) -> list[str]:
    """A malformed record's ``fields`` as ``n``: blanks added at the end, or the fields from the
    ``n``-th on kept in the last one as CSV text (``no,yes``; a field holding a comma, a quote or a
    line break quoted), so that no value is lost."""
    if len(fields) <= n:
        return fields + [""] * (n - len(fields))
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerow(fields[n - 1:])  # \r or \n in a field: quoted
    return fields[:n - 1] + [text.getvalue()[:-2]]


def _with_malformed(frame: pd.DataFrame, rows: np.ndarray, malformed: list[int], bad: dict[int, _Malformed],
                    reason: Callable[[int], str], also: Sequence[int] = ()) -> CaseChunk:
    """``frame`` (the well-formed records ``rows``) with the ``malformed`` records put back at their
    place; the well-formed records ``also`` are malformed too (read whole, rejected for ``reason``)."""
    if not malformed:
        at = np.searchsorted(rows, np.asarray(also, dtype=np.int64))
        return CaseChunk(frame, {int(i): reason(k) for i, k in zip(at, also)})
    names = list(frame.columns)
    fields = [_as_many_fields(_fields_of(bad[k].text), len(names)) for k in malformed]
    # made as the well-formed records are (:meth:`_RowPlacer.take`): Arrow text, the spreadsheet
    # mark taken off, then pandas
    extra = unguarded(pa.table([pa.array(column, pa.large_string()) for column in zip(*fields)],
                               names=names)).to_pandas()
    everything = np.concatenate([rows, malformed])
    order = np.argsort(everything, kind="stable")
    merged = pd.concat([frame, extra], ignore_index=True).iloc[order].reset_index(drop=True)
    position = {k: i for i, k in enumerate(everything[order].tolist())}
    return CaseChunk(merged, {position[k]: reason(k) for k in sorted([*malformed, *also])})
