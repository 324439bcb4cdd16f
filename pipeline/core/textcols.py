"""Text columns for scoring outputs, built in Arrow rather than one Python string per row.

Per-row ``"|".join`` and object-dtype columns cost more than the model itself at a million rows
(measured: 0.55 s of 5 s per 200k rows); table lookups (Arrow's ``take``) of texts built once per
distinct value do not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.sizes import FEW_CASES

__all__ = ["TEXT_DTYPE", "join_ranked", "join_variants", "lookup", "text_array"]

# pandas' default text type (``str``): Arrow strings, NaN for a missing value
TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)


def _wrap(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    # pandas keeps its strings as large_string (it casts any other string type): the arrays here
    # are built as such, so wrapping one costs 5 us rather than pd.array's 22 us for one row, where
    # a scoring output has a dozen text columns
    return pd.arrays.ArrowStringArray(array, dtype=TEXT_DTYPE)


def text_array(values: Sequence[str] | np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Python strings as a pandas string array (the dtype of every text column here)."""
    return _wrap(pa.array(values, type=pa.large_string()))


def lookup(table: Sequence[str] | np.ndarray, index: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``table[index]`` as a pandas string array (``index`` may have any shape; it is flattened)."""
    flat = np.ravel(index)
    if len(flat) <= FEW_CASES:  # Python strings: the same array, without Arrow's set-up
        return _wrap(pa.array([table[i] for i in flat.tolist()], type=pa.large_string()))
    return _wrap(pa.array(list(table), type=pa.large_string()).take(pa.array(flat)))


def join_ranked(names: Sequence[str], order: np.ndarray, keep: np.ndarray | None = None,
                sep: str = "|") -> pd.api.extensions.ExtensionArray:
    """Per row, ``sep``-join ``names[order[i, j]]`` for the columns j where ``keep[i, j]`` (all if None);
    ``""`` for a row that keeps none. ``order`` holds indices in ``0..len(names) - 1`` (an argsort's):
    :func:`join_variants` with ``names`` for every column."""
    return join_variants([names] * order.shape[1], order, keep, sep)


def join_variants(tables: Sequence[Sequence[str]], variant: np.ndarray, keep: np.ndarray | None = None,
                  sep: str = "|") -> pd.api.extensions.ExtensionArray:
    """Per row, ``sep``-join ``tables[j][variant[i, j]]`` for the columns j where ``keep[i, j]`` (all
    if None); ``""`` for a row that keeps none: a column per table, each with texts of its own (a
    ranking's names, the same for every column; a rule's variants of its line).

    Rows repeat a few combinations (a chunk of 16k rows has some hundreds): each distinct one is
    joined once, in Python, and the rows take their text from those (16k rows of nine names: 1.6 ms,
    where Arrow's element-wise join took 3.8); the texts are kept for the next call with the same
    tables (a file's chunks repeat them: a million cases' five ranked columns, 0.35 s -> 0.28 s)."""
    sizes = [len(t) for t in tables]
    if len(variant) <= FEW_CASES:
        rows = variant.tolist()
        kept = [[True] * len(tables)] * len(rows) if keep is None else keep.tolist()
        for row in rows:
            if any(not 0 <= v < n for v, n in zip(row, sizes)):
                _refuse(np.array([row]), sizes)
        return _wrap(pa.array([sep.join(tables[j][v] for j, (v, k) in enumerate(zip(vs, ks)) if k)
                               for vs, ks in zip(rows, kept)], type=pa.large_string()))
    if variant.size and not ((variant >= 0) & (variant < np.array(sizes, dtype=np.int64))).all():
        _refuse(variant, sizes)  # a digit out of range would carry into the next
    ranks = variant.astype(np.int64) + 1  # a kept text is its index + 1, a dropped one 0
    if keep is not None:
        ranks *= keep
    return _join_rows(ranks, max(sizes, default=0) + 1,
                      lambda row: sep.join(tables[j][v - 1] for j, v in enumerate(row) if v),
                      (tuple(map(tuple, tables)), sep))


def _refuse(variant: np.ndarray, sizes: list[int]) -> None:
    """Raise the IndexError that names the first column of ``variant`` holding an index its table
    (of ``sizes[j]`` texts) does not have."""
    for j, n in enumerate(sizes):
        bad = variant[:, j][(variant[:, j] < 0) | (variant[:, j] >= n)]
        if len(bad):
            raise IndexError(f"column {j} holds {bad.min()}..{bad.max()}, not indices of its table of {n} texts")


def _join_rows(ranks: np.ndarray, base: int, text: Callable[[list[int]], str],
               key: tuple) -> pd.api.extensions.ExtensionArray:
    """Per row of ``ranks`` (numbers in ``0..base - 1``), ``text(row)``: each distinct row's text
    made once, and kept under ``key`` for the next call (:func:`join_variants`)."""
    width = ranks.shape[1]
    # the rows as numbers in ``base``, hashed (pandas' factorize: a fifth of the time of np.unique's
    # sort); a number's text is joined once per process (the chunks of a file repeat the same few
    # hundred), and only the numbers not seen before are read back into rows
    numbers: list[Any]
    if base ** width < 2 ** 63:  # one number per row (integer products: exact)
        powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
        inverse, keys = pd.factorize(ranks @ powers)
        keys = np.asarray(keys)
        numbers = keys.tolist()

        def rows_of(new: list[int]) -> list[list[int]]:
            return ((keys[new, None] // powers) % base).tolist()
    else:  # too wide for one (16 rules of the safety net: 17 ** 16 > 2 ** 63): one per part of the row,
        # the parts' codes combined into one per row; a row is known by its parts' numbers
        step = int(62 // math.log2(base))  # digits per part: base ** step <= 2 ** 62
        parts = [ranks[:, s:s + step] @ (base ** np.arange(min(step, width - s) - 1, -1, -1, dtype=np.int64))
                 for s in range(0, width, step)]
        inverse = np.zeros(len(ranks), dtype=np.int64)
        for part in parts:
            codes, uniques = pd.factorize(part)
            inverse = pd.factorize(inverse * len(uniques) + codes)[0]
        one = np.empty(inverse.max() + 1, dtype=np.int64)
        one[inverse] = np.arange(len(ranks))  # a row of each distinct ranking (any: they are equal)
        numbers = list(zip(*(part[one].tolist() for part in parts)))

        def rows_of(new: list[int]) -> list[list[int]]:
            return ranks[one[new]].tolist()
    joined = _joined(key + (width,))
    known = [joined.get(k) for k in numbers]  # this call's own list: another thread may clear the table
    new = [i for i, t in enumerate(known) if t is None]
    if new and len(joined) > _JOINED_MAX:
        joined.clear()
    for i, row in zip(new, rows_of(new)):
        known[i] = joined[numbers[i]] = text(row)
    found = cast(list[str], known)  # every one is joined by now
    return _wrap(pa.array(found, type=pa.large_string()).take(pa.array(np.ravel(inverse))))


_JOINED_MAX = 1 << 16  # texts kept per (names, sep, width); past this the table starts again


@functools.lru_cache(maxsize=64)
def _joined(key: tuple) -> dict[Any, str]:
    """The texts :func:`_join_rows` has made under ``key`` (the names or tables, the separator and
    the width), by row number (or tuple of numbers, for rows too wide for one; shared by the
    process's threads: two that join the same row at once store the same text)."""
    return {}
