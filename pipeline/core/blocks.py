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
  so the first ones can be scored while the rest of the file is still being read; the first
  ones can be small (``lead``), so that every worker starts at once, and the read stops where
  the last block starts (that block runs to the end of the file, its rows not counted).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.core.casefiles import FileBlock, csv_data_start, file_columns, parquet_metadata
from pipeline.core.files import is_parquet

__all__ = ["LEAD_DIVISOR", "MIN_BLOCK_BYTES", "WINDOW_BYTES", "plan_blocks"]

MIN_BLOCK_BYTES = 64 << 20  # below this a block's set-up (a task, a second look for repeated ids) is not worth it
LEAD_DIVISOR = 16  # a leading block (plan_blocks' lead) is about a sixteenth of a block: 16 MB of 260 planned in 0.02 s
WINDOW_BYTES = 1 << 20  # its bit masks stay in a core's cache: 1.5x faster than 16 MB
_QUOTE, _NEWLINE, _RETURN, _COMMA = 34, 10, 13, 44
_OPENS_AFTER = np.zeros(256, dtype=bool)  # a quote that opens a field follows a delimiter or a record's end
_OPENS_AFTER[[_COMMA, _NEWLINE, _QUOTE]] = True  # (after a quote: the second of an escaped "")
_CLOSES_BEFORE = np.zeros(256, dtype=bool)
_CLOSES_BEFORE[[_COMMA, _NEWLINE, _RETURN, _QUOTE]] = True


def plan_blocks(path: str | Path, *, chunk_rows: int, block_bytes: int, lead: int = 0) -> Iterator[FileBlock]:
    """The blocks of one CSV or Parquet case file, in file order, each as soon as it is known.

    Parameters
    ----------
    path : path
        A ``.csv`` or ``.parquet`` file (its header is checked by :func:`file_columns`).
    chunk_rows : int
        Rows per chunk: every block but the last holds a whole number of chunks.
    block_bytes : int
        About how many bytes of the file a block holds: the file's data (after a CSV's header) is
        split into as many blocks as whole sizes fit in it, at even steps (so each holds at least
        this many bytes without leading blocks); a file of less than twice this is one block,
        ``FileBlock()`` for Parquet or the whole data part of a CSV.
    lead : int, default=0
        A CSV file that is split starts with this many small blocks, of about
        ``block_bytes // LEAD_DIVISOR`` bytes each (:data:`LEAD_DIVISOR`; at most half of the
        data in all), and the even blocks share the rest: a block is known only once the scan
        has passed its end, so with a small one per worker every worker starts at once (the
        first of four blocks of 260 MB took 0.3 s to plan, and the second worker waited 0.6 s).
        A block holds at least one chunk: where a chunk is longer than a small block, the
        leading blocks merge into fewer (not with the Dask engine's defaults, where a small
        block is at least 4 MB and a chunk about 1 MB). Parquet blocks come from the footer at
        once: ``lead`` does not apply.

    Yields
    ------
    FileBlock
        Consecutive blocks covering every row of the file once. A CSV block whose ``rows`` is
        None runs to the end of the file (its rows were not counted in advance): the last block
        of a split file, as the scan stops where it starts, and the rest of a file from where
        Arrow's reader could read the records otherwise (see above).
    """
    if lead < 0:
        raise ValueError(f"lead == {lead!r}, must be >= 0.")
    path = Path(path)
    file_columns(path)
    if is_parquet(path):
        yield from _parquet_blocks(path, chunk_rows, block_bytes)
    else:
        yield from _csv_blocks(path, chunk_rows, block_bytes, lead)


def _parquet_blocks(path: Path, chunk_rows: int, block_bytes: int) -> Iterator[FileBlock]:
    meta = parquet_metadata(path)
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


# Bit masks: bit j of word w stands for byte 64 w + j of a window; the bits past its end are 0.
_ALL, _ONE, _TOP = np.uint64(2**64 - 1), np.uint64(1), np.uint64(63)


def _bits(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as little-endian 64-bit words of bits."""
    packed = np.packbits(mask, bitorder="little")
    if len(packed) % 8:
        packed = np.concatenate([packed, np.zeros(-len(packed) % 8, dtype=np.uint8)])
    return packed.view("<u8")


def _bit_of(i: int) -> np.uint64:
    return np.uint64(1 << (i % 64))


def _bit(words: np.ndarray, i: int) -> bool:
    """Bit ``i``."""
    return bool(words[i // 64] >> np.uint64(i % 64) & _ONE)


def _first_bit(words: np.ndarray) -> int | None:
    """The lowest set bit's place, or None."""
    nonzero = np.flatnonzero(words)
    if not len(nonzero):
        return None
    word = int(words[nonzero[0]])
    return int(nonzero[0]) * 64 + (word & -word).bit_length() - 1


def _last_bit(words: np.ndarray) -> int | None:
    """The highest set bit's place, or None."""
    nonzero = np.flatnonzero(words)
    return None if not len(nonzero) else int(nonzero[-1]) * 64 + int(words[nonzero[-1]]).bit_length() - 1


class _RecordEnds:
    """The newlines that end a window's records, as bits: how many (``len``) and where the chosen ones are.

    Counted by popcount rather than listed: of a window's thousands of records, the planner needs
    the places of only the few that end a chunk.
    """

    def __init__(self, words: np.ndarray, offset: int):
        self.words, self.offset = words, offset  # the window's file offset
        self._per_word = np.bitwise_count(words)
        self._count = int(self._per_word.sum())
        self._before: np.ndarray | None = None

    def __len__(self) -> int:
        return self._count

    def at(self, ranks: np.ndarray) -> np.ndarray:
        """The file offsets of the newlines that end the window's records ``ranks`` (0-based, ascending)."""
        if self._before is None:
            self._before = np.cumsum(self._per_word, dtype=np.int64)  # the ends up to each word's end
        found = np.searchsorted(self._before, ranks, side="right")
        places = []
        for rank, w in zip(ranks.tolist(), found.tolist()):
            word = int(self.words[w])
            for _ in range(rank - (int(self._before[w - 1]) if w else 0)):
                word &= word - 1  # the lower set bits cleared
            places.append(self.offset + w * 64 + (word & -word).bit_length() - 1)
        return np.array(places, dtype=np.int64)


def _previous(words: np.ndarray, by: int = 1, carry: int = 1) -> np.ndarray:
    """Bit i set where bit i - ``by`` is (``by`` 1 or 2); the bits below ``by`` are those of ``carry``
    (the window before's last bytes; by default bit 0 set: the byte before is checked elsewhere)."""
    out = words << np.uint64(by)
    out[1:] |= words[:-1] >> np.uint64(64 - by)
    out[0] |= np.uint64(carry)
    return out


def _next(words: np.ndarray, n: int) -> np.ndarray:
    """Bit i set where bit i + 1 is, and bit ``n - 1`` set (the byte after the window is checked elsewhere)."""
    out = words >> _ONE
    out[:-1] |= words[1:] << _TOP
    out[(n - 1) // 64] |= _bit_of(n - 1)
    return out


def _prefix_parity(words: np.ndarray) -> np.ndarray:
    """Bit i set where bits 0 .. i hold an odd number of set bits."""
    x = words.copy()
    for shift in (1, 2, 4, 8, 16, 32):  # within each word
        x ^= x << np.uint64(shift)
    before = np.bitwise_xor.accumulate(x >> _TOP)  # the parity up to each word's end, then of the words before
    before[1:], before[0] = before[:-1].copy(), 0
    return x ^ (np.uint64(0) - before)  # flipped where the words before hold an odd number


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

    def window(self, data: np.ndarray) -> _RecordEnds:
        """The newlines that end the non-empty records in ``data``; where Arrow's reader could read
        the window otherwise, only those before the first such byte (the records that end there are
        right: the planner still splits the file up to it).

        The work is done on bit masks, a bit per byte in 64-bit words (8x less to go through than a
        byte per byte, and a word's quote parity takes six shifts): a 265 MB CSV that quotes its
        texts is planned in 0.25 s, where byte masks in 16 MB windows took 1.8 s."""
        n = len(data)
        bad = []  # window offsets from which Arrow could disagree
        if self.close_pending and not _CLOSES_BEFORE[data[0]] or self.return_pending and data[0] != _NEWLINE:
            bad.append(0)
        self.close_pending = False
        newline = _bits(data == _NEWLINE)
        returns = _bits(data == _RETURN)
        # a carriage return not before a newline ends a record for Arrow (one that ends the window: see above)
        if (at := _first_bit(returns & ~_next(newline, n))) is not None:
            bad.append(at)
        quote = _bits(data == _QUOTE)
        if quote.any():
            inside, stray = self._inside_quotes(data, quote, newline, returns)
            if stray is not None:
                bad.append(stray)
        else:
            inside = np.full_like(newline, _ALL if self.quotes_odd else 0)
        ends = newline & ~inside
        if bad:
            self.regular = False
            cut = min(bad)  # only the ends before it
            ends[cut // 64 + 1:] = 0
            ends[cut // 64] &= np.uint64((1 << cut % 64) - 1)
        ends &= ~self._empty_lines(ends, returns)
        self.return_pending = bool(data[-1] == _RETURN)
        self.pos += n
        self.last_byte = int(data[-1])
        found = _RecordEnds(ends, self.pos - n)
        self.records += len(found)
        return found

    def _empty_lines(self, ends: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """The ``ends`` (bits) that end an empty line (no record to Arrow): a newline right after
        the end before, or after a carriage return right after it; sets ``last_end``."""
        back = self.pos - self.last_end  # the end before the window: 1 (its last byte), 2, ...
        after_end = _previous(ends, 1, back == 1)
        two_after_end = _previous(ends, 2, (back == 2) | (back == 1) << 1)
        after_return = _previous(returns, 1, self.last_byte == _RETURN) & two_after_end
        if (last := _last_bit(ends)) is not None:
            self.last_end = self.pos + last
        return ends & (after_end | after_return)

    def _inside_quotes(self, data: np.ndarray, quote: np.ndarray, newline: np.ndarray, returns: np.ndarray
                       ) -> tuple[np.ndarray, int | None]:
        """Per byte (a bit mask, as ``quote``, ``newline`` and ``returns`` are of ``data``), whether
        a quoted field is open after it; and the first quote that does not open, close or escape
        as RFC 4180 has it (None: every one does)."""
        n = len(data)
        # the parity of the quotes so far: a quote that leaves it odd opens a field (or is the
        # second of an escaped ""), one that leaves it even closes it (or is the first)
        inside = _prefix_parity(quote)
        if self.quotes_odd:
            inside = ~inside
        opening = quote & inside
        closing = quote & ~inside
        ends_field = _bits(data == _COMMA) | newline | quote
        # the byte before an opening quote ends a field or a record, or is a quote; the byte after
        # a closing one does, or is a carriage return (at the window's first and last bytes: the
        # byte before it, and the next window's first byte, checked by the caller)
        strays = opening & ~_previous(ends_field)
        strays |= closing & ~_next(ends_field | returns, n)
        if opening[0] & 1 and not _OPENS_AFTER[self.last_byte]:
            strays[0] |= 1
        self.close_pending = _bit(closing, n - 1)
        self.quotes_odd = _bit(inside, n - 1)
        return inside, _first_bit(strays)

    def finish(self, size: int) -> int:
        """The number of records, a last one without a newline included (call after the last window)."""
        if self.quotes_odd:
            self.regular = False  # an unclosed quote: Arrow reads the rest as one value
        tail = size - self.last_end - 1
        if tail > 1 or tail == 1 and self.last_byte != _RETURN:
            self.records += 1
        return self.records


def _csv_blocks(path: Path, chunk_rows: int, block_bytes: int, lead: int) -> Iterator[FileBlock]:
    data_start, size = csv_data_start(path), path.stat().st_size
    count = (size - data_start) // block_bytes
    if count <= 1:
        yield FileBlock(start=data_start)
        return
    small = max(1, block_bytes // LEAD_DIVISOR)
    lead = min(lead, (size - data_start) // (2 * small))  # the leading blocks take at most half of the file
    rest = data_start + lead * small  # where the even blocks begin
    span, evens = size - rest, count
    count = lead + evens  # blocks in all

    def target(k: int) -> int:  # where the k-th block would end (0-based), at even steps; exact in Python's ints
        if k < lead:
            return data_start + small * (k + 1)
        return rest + span * (k - lead + 1) // evens

    def first_after(offset: int) -> int:  # the first k whose target lies after ``offset``
        if offset < rest:
            return (offset - data_start) // small
        return lead - (-(offset - rest + 1) * evens // span) - 1

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
            # the chunks that start in this window (after every chunk_rows-th record), and the last one before it
            last_of_chunk = np.arange((-before - 1) % chunk_rows, len(ends), chunk_rows)
            starts = np.concatenate([[start_before], ends.at(last_of_chunk) + 1])
            rows = np.concatenate([[rows_before], before + last_of_chunk + 1])
            while k < count - 1 and starts[-1] >= (at := target(k)):
                i = int(np.searchsorted(starts, at))
                if i > 0 and starts[i - 1] > start and at - starts[i - 1] < starts[i] - at:
                    i -= 1  # the nearest chunk start
                yield FileBlock(first, int(rows[i]) - first, start, int(starts[i]))
                first, start = int(rows[i]), int(starts[i])
                k = max(k + 1, first_after(start))
            if k == count - 1:  # the last block: the rest of the file, read to its end without counting it
                yield FileBlock(first, None, start)
                return
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
