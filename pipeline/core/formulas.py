"""The spreadsheet guard of CSV outputs, and its removal when a CSV file is read.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (and is not a
plain number) is written with a leading ``'`` (:func:`csv_safe`, OWASP's advice against formula
injection), as a spreadsheet marks text it must show rather than run. Reading a CSV file takes
that mark off again (:func:`unguarded`): a rejects file, fixed and scored again, or a scored
file read back, holds the ids and answers that were written, not ``'``-prefixed ones. Column names
are the user's text too: a header is written with :func:`guarded_names` and read with
:func:`unguarded_names`, so a name round-trips as the cells do.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["csv_safe", "guarded_names", "unguarded", "unguarded_names"]

_FORMULA_FIRST = pa.array(["=", "+", "-", "@", "\t", "\r"])
# the same characters as bytes: all ASCII, so a cell starts with one iff its first UTF-8 byte is one
_FORMULA_BYTE = np.zeros(256, dtype=bool)
_FORMULA_BYTE[[ord(c) for c in _FORMULA_FIRST.to_pylist()]] = True
_MARK_BYTE = np.zeros(256, dtype=bool)
_MARK_BYTE[ord("'")] = True
_FIRST_BYTE = _FORMULA_BYTE | _MARK_BYTE
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _text_columns(table: pa.Table):
    for i, kind in enumerate(table.schema.types):
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            yield i, kind, table.column(i)


def _guarded(text: pa.ChunkedArray | pa.Array, kind: pa.DataType):
    """Per cell, whether :func:`csv_safe` guards it: a formula character first, and not a plain number."""
    starts = pc.is_in(pc.utf8_slice_codeunits(text, 0, 1), value_set=_FORMULA_FIRST.cast(kind))
    return pc.and_(starts, pc.invert(pc.match_substring_regex(text, _PLAIN_NUMBER)))


def csv_safe(table: pa.Table) -> pa.Table:
    """``table`` with a ``'`` before every text cell that a spreadsheet would run as a formula, and
    before every cell that already looks so marked (so that :func:`unguarded` gives back every cell)."""
    for i, kind, col in _text_columns(table):
        # the first character alone rules out nearly every column, at a tenth of a regular expression's cost
        if not any(_starts_with(chunk, _FIRST_BYTE) for chunk in col.chunks):
            continue
        risky = pc.or_(_guarded(col, kind), _marked(col, kind))
        if pc.any(risky).as_py():
            quoted = pc.binary_join_element_wise(pa.scalar("'", kind), col, pa.scalar("", kind))
            table = table.set_column(i, table.field(i), pc.if_else(risky, quoted, col))
    return table


def unguarded(table: pa.Table) -> pa.Table:
    """``table`` with the mark :func:`csv_safe` adds taken off: a text cell of ``'`` followed by a
    text csv_safe marks reads as that text (any other cell, ``'`` first or not, is left as it is)."""
    for i, kind, col in _text_columns(table):
        if not any(_starts_with(chunk, _MARK_BYTE) for chunk in col.chunks):
            continue
        marked = _marked(col, kind)
        if pc.any(marked).as_py():
            table = table.set_column(i, table.field(i), pc.if_else(marked, pc.utf8_slice_codeunits(col, 1), col))
    return table


def guarded_names(names: list[str]) -> list[str]:
    """Column names as :func:`csv_safe` writes text cells."""
    return csv_safe(pa.table({"name": pa.array(names, pa.string())})).column(0).to_pylist()


def unguarded_names(names: list[str]) -> list[str]:
    """Column names read from a CSV header, with :func:`guarded_names`' mark taken off (:func:`unguarded`)."""
    return unguarded(pa.table({"name": pa.array(names, pa.string())})).column(0).to_pylist()


def _marked(text: pa.ChunkedArray, kind: pa.DataType):
    """Per cell, whether it is one or more ``'`` then a text csv_safe guards (a formula)."""
    core = pc.replace_substring_regex(text, "^'+", "")
    return pc.and_(pc.starts_with(text, "'"), _guarded(core, kind))


def _starts_with(chunk: pa.Array, first: np.ndarray) -> bool:
    """Whether a cell of a string array starts with a byte marked in ``first`` (256 booleans), read
    from its buffers: a gather of the cells' first bytes, a tenth of Arrow's slice and lookup."""
    if not len(chunk):
        return False
    _, offsets, data = chunk.buffers()
    if data is None:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    marked = np.flatnonzero(first)
    # one byte (the mark, when a CSV file is read) found nowhere in the buffer starts no cell: one
    # scan of the bytes is a third of the gather below (50 columns of 16k cells: 0.8 ms against
    # 2.4). For the six formula characters of an output, six scans cost more than the gather.
    if len(marked) == 1 and not np.any(raw == marked[0]):
        return False
    width = np.dtype(np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
    # a buffer may be longer than its offsets (Arrow allows padding): read only those
    at: np.ndarray = np.frombuffer(offsets, dtype=width, count=chunk.offset + len(chunk) + 1)[chunk.offset:]
    texts = at[1:] > at[:-1]  # empty cells start with nothing
    if chunk.null_count:  # a null cell may still own bytes in the buffer: it is not a text
        texts &= chunk.is_valid().to_numpy(zero_copy_only=False)
    starts = at[:-1][texts]
    return bool(len(starts)) and bool(first[raw[starts]].any())
