"""Splitting one case file into blocks of whole chunks that are read on their own (the Dask engine).

A block is a run of the file's chunks (:func:`pipeline.core.casefiles.iter_chunks` gives chunks
of exactly ``chunk_rows`` rows), so reading a file block by block gives the same chunks, row
numbers and malformed-record reasons as reading it whole.

- **Parquet**: the row counts of the row groups are in the footer; a block is a range of rows
  and the row groups that hold them. Nothing is scanned.
- **CSV**: a block is a byte range that starts at a record. :func:`plan_blocks` reads the file
  once, in windows of :data:`WINDOW_BYTES` (memory stays flat), and finds the records as Arrow's
  reader does (RFC 4180): a newline ends a record when an even number of ``"`` bytes come
  before it (an escaped ``""`` adds two), an empty line is no record, and a file without any
  ``"`` needs only its newlines counted. Where the file leaves that rule (a ``"`` inside an
  unquoted field, a carriage return that is not before a newline, an unclosed quote) the rest
  of the file, from the last chunk start before that byte, is one block, read to its end (the
  blocks before it are split as usual, however far into the window it is): a split is only ever
  made where the reader would end a record. Each block is yielded as soon as its end is known,
  so the first ones can be scored while the rest of the file is still being read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.core.casefiles import FileBlock, csv_data_start, file_columns
from pipeline.core.files import is_parquet

__all__ = ["MIN_BLOCK_BYTES", "WINDOW_BYTES", "plan_blocks"]

MIN_BLOCK_BYTES = 64 << 20  # below this a block's set-up (a task, a second look for repeated ids) is not worth it
WINDOW_BYTES = 16 << 20
_QUOTE, _NEWLINE, _RETURN, _COMMA = 34, 10, 13, 44
_OPENS_AFTER = np.zeros(256, dtype=bool)  # a quote that opens a field follows a delimiter or a record's end
_OPENS_AFTER[[_COMMA, _NEWLINE, _QUOTE]] = True  # (after a quote: the second of an escaped "")
_CLOSES_BEFORE = np.zeros(256, dtype=bool)
_CLOSES_BEFORE[[_COMMA, _NEWLINE, _RETURN, _QUOTE]] = True


def plan_blocks(path: str | Path, *, chunk_rows: int, block_bytes: int) -> Iterator[FileBlock]:
    """The blocks of one CSV or Parquet case file, in file order, each as soon as it is known.

    Parameters
    ----------
    path : path
        A ``.csv`` or ``.parquet`` file (its header is checked by :func:`file_columns`).
    chunk_rows : int
        Rows per chunk: every block but the last holds a whole number of chunks.
    block_bytes : int
        About how many bytes of the file a block holds (at least this many; a file of less than
        twice this is one block, ``FileBlock()`` for Parquet or the whole data part of a CSV).

    Yields
    ------
    FileBlock
        Consecutive blocks covering every row of the file once. A CSV block whose ``rows`` is
        None runs to the end of the file (its rows were not counted in advance).
    """
    path = Path(path)
    file_columns(path)
    if is_parquet(path):
        yield from _parquet_blocks(path, chunk_rows, block_bytes)
    else:
        yield from _csv_blocks(path, chunk_rows, block_bytes)


def _parquet_blocks(path: Path, chunk_rows: int, block_bytes: int) -> Iterator[FileBlock]:
    meta = pq.ParquetFile(path).metadata
    count = path.stat().st_size // block_bytes
    if count <= 1 or meta.num_rows <= chunk_rows:
        yield FileBlock()
        return
    per_block = -(-meta.num_rows // count)
    per_block = -(-per_block // chunk_rows) * chunk_rows  # whole chunks
    group_ends = np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    for first in range(0, meta.num_rows, per_block):
        rows = min(per_block, meta.num_rows - first)
        groups = np.searchsorted(group_ends, [first, first + rows - 1], side="right")
        yield FileBlock(first, rows, int(groups[0]), int(groups[1]) + 1)


class _RecordScan:
    """Finds the ends of a CSV file's data records, window by window (see the module docstring).

    ``regular`` turns False at the first byte where Arrow's reader could disagree with this
    count; the record ends returned before it are right.
    """

    def __init__(self, data_start: int):
        self.pos = data_start  # the file offset of the next window
        self.quotes_odd = False  # an odd number of quotes so far: inside a quoted field
        self.last_end = data_start - 1  # the newline that ended the last record (or the header)
        self.last_byte = _NEWLINE
        self.close_pending = self.return_pending = False  # a window ended in a closing quote, a carriage return
        self.records = 0
        self.regular = True

    def window(self, data: np.ndarray) -> np.ndarray:
        """The file offsets of the newlines that end the non-empty records in ``data``; where Arrow's
        reader could read the window otherwise, only those before the first such byte (the records
        that end there are right: the planner still splits the file up to it)."""
        bad = []  # window offsets from which Arrow could disagree
        if self.close_pending and not _CLOSES_BEFORE[data[0]] or self.return_pending and data[0] != _NEWLINE:
            bad.append(0)
        self.close_pending = False
        is_newline = data == _NEWLINE
        returns = np.flatnonzero(data == _RETURN)
        self.return_pending = bool(len(returns)) and returns[-1] == len(data) - 1
        inner = returns[:len(returns) - self.return_pending]
        lone = inner[data[inner + 1] != _NEWLINE]  # a lone carriage return ends a record for Arrow
        if len(lone):
            bad.append(int(lone[0]))
        is_quote = data == _QUOTE
        if is_quote.any():
            inside, stray = self._inside_quotes(data, is_quote, is_newline)
            ends = np.flatnonzero(is_newline & ~inside)
            if stray is not None:
                bad.append(stray)
        else:
            ends = np.flatnonzero(is_newline) if not self.quotes_odd else np.empty(0, dtype=np.intp)
        if bad:
            self.regular = False
            ends = ends[ends < min(bad)]
        ends = self._non_empty(data, ends)
        self.pos += len(data)
        self.last_byte = int(data[-1])
        self.records += len(ends)
        return ends

    def _inside_quotes(self, data: np.ndarray, is_quote: np.ndarray, is_newline: np.ndarray
                       ) -> tuple[np.ndarray, int | None]:
        """Per byte, whether a quoted field is open after it; and the first quote that does not
        open, close or escape as RFC 4180 has it (None: every one does). Whole-window masks rather
        than the quotes' positions: a file that quotes every field has about one quote in three bytes."""
        # the parity of the quotes so far: a quote that leaves it odd opens a field (or is the
        # second of an escaped ""), one that leaves it even closes it (or is the first)
        inside = np.bitwise_xor.accumulate(is_quote.view(np.uint8)).view(bool)
        if self.quotes_odd:
            inside = ~inside
        opening = is_quote & inside
        closing = is_quote & ~inside
        comma = data == _COMMA
        # the byte before an opening quote ends a field or a record, or is a quote; the byte
        # after a closing one ends a field or a record, or is a quote (the last byte: the next window)
        opens_ok = comma[:-1] | is_newline[:-1] | is_quote[:-1]
        closes_ok = comma[1:] | is_newline[1:] | is_quote[1:] | (data[1:] == _RETURN)
        strays = [int(i) + 1 for i in np.flatnonzero(opening[1:] & ~opens_ok)[:1]]
        strays += [int(i) for i in np.flatnonzero(closing[:-1] & ~closes_ok)[:1]]
        if opening[0] and not _OPENS_AFTER[self.last_byte]:
            strays.append(0)
        self.close_pending = bool(closing[-1])
        self.quotes_odd = bool(inside[-1])
        return inside, min(strays, default=None)

    def _non_empty(self, data: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``ends`` (window offsets) as file offsets, less those of empty lines (no record to Arrow)."""
        ends = ends + self.pos
        if not len(ends):
            return ends
        previous = np.concatenate([[self.last_end], ends[:-1]])
        self.last_end = int(ends[-1])
        local = ends - self.pos - 1
        before = np.where(local >= 0, data[np.maximum(local, 0)], self.last_byte)
        empty = (ends - previous == 1) | ((ends - previous == 2) & (before == _RETURN))
        return ends[~empty]

    def finish(self, size: int) -> int:
        """The number of records, a last one without a newline included (call after the last window)."""
        if self.quotes_odd:
            self.regular = False  # an unclosed quote: Arrow reads the rest as one value
        tail = size - self.last_end - 1
        if tail > 1 or tail == 1 and self.last_byte != _RETURN:
            self.records += 1
        return self.records


def _csv_blocks(path: Path, chunk_rows: int, block_bytes: int) -> Iterator[FileBlock]:
    data_start, size = csv_data_start(path), path.stat().st_size
    count = (size - data_start) // block_bytes
    if count <= 1:
        yield FileBlock(start=data_start)
        return
    span = size - data_start

    def target(k: int) -> int:  # where the k-th block would end (0-based), at even steps; exact in Python's ints
        return data_start + span * (k + 1) // count

    def first_after(offset: int) -> int:  # the first k whose target lies after ``offset``
        return -(-(offset - data_start + 1) * count // span) - 1

    # the targets are computed as they are reached, not listed: a tiny block size (many targets)
    # costs no memory, and planning stays linear in the blocks made
    k = 0
    scan, first, start = _RecordScan(data_start), 0, data_start
    start_before, rows_before = start, first
    buffer = bytearray(WINDOW_BYTES)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(data_start)
        while scan.regular and (got := fh.readinto(buffer)):
            before = scan.records
            ends = scan.window(np.frombuffer(buffer, dtype=np.uint8, count=got))  # (irregular: those before it)
            # the chunks that start in this window: after the end of every chunk_rows-th record
            last_of_chunk = np.flatnonzero((before + np.arange(len(ends)) + 1) % chunk_rows == 0)
            # the chunks that start in this window (after every chunk_rows-th record), and the last one before it
            starts = np.concatenate([[start_before], ends[last_of_chunk] + 1])
            rows = np.concatenate([[rows_before], before + last_of_chunk + 1])
            while k < count - 1 and starts[-1] >= (at := target(k)):
                i = int(np.searchsorted(starts, at))
                if i > 0 and starts[i - 1] > start and at - starts[i - 1] < starts[i] - at:
                    i -= 1  # the nearest chunk start
                yield FileBlock(first, int(rows[i]) - first, start, int(starts[i]))
                first, start = int(rows[i]), int(starts[i])
                k = max(k + 1, first_after(start))
            if not scan.regular and starts[-1] > start:  # the last chunk start before the file leaves the rule
                yield FileBlock(first, int(rows[-1]) - first, start, int(starts[-1]))
                first, start = int(rows[-1]), int(starts[-1])
            start_before, rows_before = int(starts[-1]), int(rows[-1])
    total = scan.finish(size) if scan.regular else 0
    if not scan.regular:
        yield FileBlock(first, None, start)
    elif total > first:  # a split just before trailing empty lines leaves them to no block
        yield FileBlock(first, total - first, start, size)
    elif first == 0:  # no record at all (blank lines): one block, read whole, so the file still has its part
        yield FileBlock(start=data_start)
