"""A linear map of one-hot answers as a sum of table rows, without the one-hot matrix.

A row of one-hot answers (an unknown answer: all zeros) times a weight matrix is the sum, over the
fields, of the weight row of each field's answer. :class:`AnswerTables` adds those rows in a fixed
order, element by element, so every case's numbers come from its own answers alone: the same bits
alone or in a batch, in any process, thread or BLAS setting (as :func:`pipeline.core.blas.dot_exact`
promises, at a fraction of its cost). Fields are taken a few at a time from a joint table of every
combination of their answers, so the oracle's 27 yes/no symptoms are 6 gathers of one row each
rather than a product with 54 one-hot columns (the oracle took half the time on 200k cases).

A field's table has one row per answer code and a last row for the unknown answer (code -1, which
indexes the last row as numpy's negative indices do); the oracle's log-probability tables and the
model's first-layer weights both have that form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.core.parsing import code_rows
from pipeline.core.sizes import FEW_CASES

__all__ = ["AnswerTables", "answer_tables"]

MAX_JOINT_ROWS = 243  # rows of a joint table (5 yes/no fields): fields are grouped while their answers' combinations fit


@dataclass(frozen=True)
class _Group:
    names: tuple[str, ...]
    strides: tuple[int, ...]  # the mixed-radix weight of each field's code
    table: np.ndarray  # (product of the fields' rows, width)


@dataclass(frozen=True)
class AnswerTables:
    """Sums of the rows of per-field tables, indexed by the fields' answer codes."""

    groups: tuple[_Group, ...]
    width: int

    def sum(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, width): per case, the sum over the fields of its answer's row, in field order
        (a group's rows were added in field order when the joint table was built).

        The codes must lie in their tables (-1 for unknown, then 0..n_codes - 1), as
        :func:`pipeline.core.parsing.parse_cases` gives them: another code would carry into the
        field before it. Not checked here: a check per field doubled the cost for one case."""
        n = len(next(iter(codes.values()))) if codes else 0
        if not self.groups:
            return np.zeros((n, self.width))
        if n <= FEW_CASES:
            return self._few(codes)
        out = np.empty((n, self.width))
        rows = np.empty_like(out) if len(self.groups) > 1 else out  # one buffer for the other groups' rows
        for g, group in enumerate(self.groups):
            index = np.multiply(codes[group.names[0]], group.strides[0], dtype=np.intp)
            for name, stride in zip(group.names[1:], group.strides[1:]):
                index += codes[name] if stride == 1 else np.multiply(codes[name], stride, dtype=np.intp)
            # "wrap" takes a negative index modulo the table's length, as the joint table was laid
            # out, and writes straight into its target ("raise" would copy through a buffer)
            group.table.take(index, axis=0, out=out if g == 0 else rows, mode="wrap")
            if g:
                out += rows
        return out

    @cached_property
    def _joined(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every group at once: the fields, their strides, where each group's fields start, each
        group's table length and its first row in the tables stacked, and the stacked tables."""
        sizes = [len(g.names) for g in self.groups]
        lengths = [len(g.table) for g in self.groups]
        return (tuple(name for g in self.groups for name in g.names),
                np.array([s for g in self.groups for s in g.strides], dtype=np.intp)[:, None],
                np.cumsum([0, *sizes[:-1]]), np.array(lengths, dtype=np.intp)[:, None],
                np.cumsum([0, *lengths[:-1]])[:, None], np.concatenate([g.table for g in self.groups]))

    def _few(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """:meth:`sum` for a few cases: every group's row index in a few array operations, one
        gather, and the groups' rows added in group order (the same bits: each case's sum is its
        own rows', added in the same order)."""
        names, strides, starts, lengths, offsets, table = self._joined
        digits = code_rows(codes, names).astype(np.intp) * strides
        # "wrap" as in sum: a negative index taken modulo the group's table length
        rows = table.take(np.add.reduceat(digits, starts, axis=0) % lengths + offsets, axis=0)
        out = rows[0].copy()
        for more in rows[1:]:
            out += more
        return out


def answer_tables(tables: Sequence[tuple[str, np.ndarray]], max_rows: int = MAX_JOINT_ROWS) -> AnswerTables:
    """:class:`AnswerTables` of ``(field, table)`` pairs: each table (n_codes + 1, width), rows by
    answer code and the unknown answer's row last; consecutive fields share a joint table while
    it has at most ``max_rows`` rows."""
    width = {np.asarray(t).shape[1] for _, t in tables}
    if len(width) > 1:
        raise ValueError(f"the tables have {sorted(width)} columns: they must all have the same number")
    groups: list[list[tuple[str, np.ndarray]]] = []
    for name, table in tables:
        table = np.asarray(table, dtype=np.float64)
        if groups and len(table) * int(np.prod([len(t) for _, t in groups[-1]])) <= max_rows:
            groups[-1].append((name, table))
        else:
            groups.append([(name, table)])
    return AnswerTables(tuple(_joint(group) for group in groups), width.pop() if width else 0)


def _joint(group: list[tuple[str, np.ndarray]]) -> _Group:
    """The joint table of a few fields: at row ``sum(code_i * stride_i)`` (taken modulo its length,
    so that an unknown code -1 wraps like numpy's negative index), the sum of the fields' rows.

    With each code in [-1, rows_i - 2], ``code_i + 1`` are the digits of a mixed-radix number; the
    index is that number less a constant, so every combination of codes has its own row."""
    sizes = [len(t) for _, t in group]
    strides = [int(np.prod(sizes[i + 1:])) for i in range(len(sizes))]
    total = int(np.prod(sizes))
    # every combination of digits at once, in np.ndindex's order; digit 0 is the unknown answer
    codes = np.indices(sizes).reshape(len(sizes), total) - 1
    rows = group[0][1][codes[0]]  # a copy: fancy indexing
    for (_, t), c in zip(group[1:], codes[1:]):  # the fields' rows added in field order, as AnswerTables.sum adds groups
        rows += t[c]
    table = np.empty((total, group[0][1].shape[1]))
    table[(np.asarray(strides)[:, None] * codes).sum(axis=0) % total] = rows
    return _Group(tuple(name for name, _ in group), tuple(strides), table)
