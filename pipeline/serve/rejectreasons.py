"""What a rejects file's rows have in common: the commonest reasons, and markers of a missing answer.

A rejects file's ``reject_reason`` holds a row's problems, ``|``-separated, each "column 'c', value
'v': reason" (or a record's own problem, such as its number of fields). A file in which every row
is rejected usually has one cause: a column under a name of its own, an age in months, or a
missing-value convention the case schema does not read (R's ``NA``, SAS's ``.``), where only a
blank or ``unknown`` is unknown. :func:`rejects_digest` says so in a few lines, so that the cause
is seen without opening the file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.csvrecords import reading_long_records, reason_kind
from pipeline.core.files import arrow_file, is_parquet
from pipeline.core.schema import ID_COLUMN, LABEL_COLUMN, normalise_header
from pipeline.core.wording import counted

__all__ = ["MISSING_MARKERS", "marker_advice", "markers_among", "missing_markers", "reason_texts", "reject_reasons",
           "rejects_digest"]

_LITERAL = r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"'  # a Python string's repr, as the rejects writer quotes
# one problem of a rejects file's reject_reason: "column <name>, value <value>: reason", or a row's
# own problem (a malformed record); problems are " | "-separated, and a value may hold " | " or ": "
_PROBLEM = re.compile(rf"(?:\A| \| )(?:column (?P<column>{_LITERAL}), value (?P<value>{_LITERAL}): (?P<reason>.*?)"
                      rf"|(?P<other>.+?))(?= \| |\Z)", re.DOTALL)
# how other tools write a missing value (compared without case or surrounding spaces)
MISSING_MARKERS = frozenset({"na", "n/a", "#n/a", "nan", "null", "none", "nil", "missing", ".", "-", "?"})
DIGEST_ROWS = 200_000  # the rejected rows a digest reads, at most (the first ones)


def _unquoted(literal: str) -> str:
    """The text of a quoted Python string (its repr): read directly when nothing in it is escaped
    (no backslash), else by :func:`ast.literal_eval` (20x slower)."""
    return literal[1:-1] if "\\" not in literal else ast.literal_eval(literal)


Problem = tuple[str | None, str | None, str, int]  # column, value (None for a record's own problem), reason, rows


def _problems(reasons: pd.Series) -> list[Problem]:
    """One (column, value, reason, rows) per problem of each distinct reason text (rows: how
    many rows have that text)."""
    return _problems_of_counts(reasons.astype(str).value_counts(sort=False).items())


def _problems_of_counts(counted: Iterable[tuple[str, int]]) -> list[Problem]:
    """:func:`_problems` of each distinct reason text with its number of rows."""
    lines: list[Problem] = []
    for text, n in counted:
        for found in _PROBLEM.finditer(text):
            if found["column"] is None:
                lines.append((None, None, found["other"], int(n)))
            else:
                lines.append((_unquoted(found["column"]), _unquoted(found["value"]), found["reason"], int(n)))
    return lines


def _counted(labels: list, counts: list[int]) -> pd.Series:
    """The summed counts by label, the largest first (equal ones in order of first appearance)."""
    return pd.Series(counts, dtype="int64").groupby(pd.Series(labels, dtype=object).to_numpy(), sort=False).sum(
    ).sort_values(ascending=False, kind="stable")


def _reasons_of(problems: list[Problem]) -> pd.Series:
    kinds = reason_kind(pd.Series([reason for _, _, reason, _ in problems], dtype=object))
    labels = [f"{column}: {kind}" if column is not None else kind for (column, *_), kind in zip(problems, kinds)]
    return _counted(labels, [n for *_, n in problems])


def _is_marker(value: object, column: object) -> bool:
    """Whether a rejected ``value`` of ``column`` is another tool's missing-answer marker: of an
    answer, not of a case's id or condition, where a blank (the advice) is no answer either."""
    return isinstance(value, str) and len(value) < 12 and value.strip().lower() in MISSING_MARKERS and \
        normalise_header(column) not in (ID_COLUMN, LABEL_COLUMN)


def _markers_of(problems: list[Problem]) -> pd.Series:
    marked = [(value, n) for column, value, _, n in problems if _is_marker(value, column)]
    return _counted([v for v, _ in marked], [n for _, n in marked])


def markers_among(problems: pd.DataFrame) -> pd.Series:
    """How many of the rejected answers (a problem list: its ``column`` and ``value`` as shown)
    are a missing-value marker of another tool, by the marker as written, the commonest first."""
    marked = [v for c, v in zip(problems["column"], problems["value"]) if _is_marker(v, c)]
    return _counted(marked, [1] * len(marked))


def marker_advice(markers: Mapping[str, int], among: str = "", then: str = "score again") -> str:
    """The sentence on rejected answers that are missing-value markers (``markers``: counts by
    marker, as :func:`missing_markers` gives them or a metrics file holds them), ending in what to
    do ``then``; "" when there are none."""
    if not len(markers):
        return ""
    written = ", ".join(f"{v!r} ({counted(n, 'answer')})" for v, n in markers.items())
    return (f"rejected answers{among} that mark a missing answer in other tools: {written}. Only a blank or "
            "'unknown' is read as unknown: write missing answers as blanks (pandas' to_csv does; in R, "
            f"write.csv(x, na = \"\")) and {then}.")


def reject_reasons(reasons: pd.Series) -> pd.Series:
    """How often each "column: reason" occurs among the problems of the rejected rows (``reasons``:
    a rejects file's ``reject_reason``), the commonest first. No part of a value is in a label: the
    value's quoted text is read whole."""
    return _reasons_of(_problems(reasons))


def reason_texts(path: str | Path) -> Iterator[pa.Array]:
    """The ``reject_reason`` column of a rejects file (CSV, or Parquet where its name ends in
    ``.parquet``, as ``kneepain score`` writes them), a batch at a time, as text."""
    path = Path(path)
    if is_parquet(path):
        with arrow_file(path) as source, pq.ParquetFile(source) as parquet:
            if "reject_reason" in parquet.schema_arrow.names:  # (a file without it gives batches of no column)
                for batch in parquet.iter_batches(batch_size=1 << 16, columns=["reject_reason"]):
                    yield batch.column(0).cast(pa.string())
        return
    # one thread, small blocks: Arrow reads a couple of dozen blocks ahead, and a job's digest runs in
    # the scoring process after its peak (4 MB blocks on all threads: 160 MB more at 1M rejected rows);
    # larger ones where a record (a row kept whole, as scoring reads it) is longer than they are
    def read(block: int) -> Iterator[pa.RecordBatch]:
        with arrow_file(path) as source, pacsv.open_csv(
                source, read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),  # kept values may hold them
                convert_options=pacsv.ConvertOptions(include_columns=["reject_reason"],
                                                     column_types={"reject_reason": pa.string()})) as reader:
            yield from reader

    for batch in reading_long_records(read):
        yield batch.column(0)


def missing_markers(reasons: pd.Series) -> pd.Series:
    """How many rejected answers were a missing-value marker of another tool (:data:`MISSING_MARKERS`),
    by the marker as written, the commonest first."""
    return _markers_of(_problems(reasons))


def rejects_digest(path: str | Path, top: int = 3, max_rows: int = DIGEST_ROWS) -> list[str]:
    """A few lines on a rejects file (CSV, or Parquet where its name ends in ``.parquet``, as
    ``kneepain score`` writes them): its commonest reasons, and, where rejected answers are another
    tool's missing-value marker, how to write them. Reads the first ``max_rows`` rejected rows at
    most (and says so)."""
    # streamed, a batch at a time, each distinct text counted in Arrow: a rejects file of every row of
    # a large input is read no further than needed, and only the counts are held (holding the
    # 200,000 texts took 55 MiB, and put the scoring process past its 350 MB when every row was rejected)
    counts: dict[str, int] = {}
    rows = 0
    try:
        for texts in reason_texts(path):
            found = pc.value_counts(texts.slice(0, max(max_rows - rows, 0)))
            rows += len(texts)
            for text, n in zip(found.field("values").to_pylist(), found.field("counts").to_pylist()):
                if text is not None:  # (a rejects file's rows all have a reason; another file's may not)
                    counts[text] = counts.get(text, 0) + n
            if rows > max_rows:
                break
    except (OSError, pa.ArrowException):  # the file is the user's to read; the digest is a courtesy
        return []
    among = f" (of the first {max_rows:,} rejected rows)" if rows > max_rows else ""
    problems = _problems_of_counts(counts.items())
    reasons = _reasons_of(problems)
    lines = []
    if len(reasons):
        shown = ", ".join(f"{label} ({counted(n, 'row')})" for label, n in reasons.head(top).items())
        others = f"; and {counted(len(reasons) - top, 'other kind')} of reason" if len(reasons) > top else ""
        lines.append(f"  commonest reasons{among}: {shown}{others}")
    if advice := marker_advice(_markers_of(problems), among):
        lines.append(f"  {advice}")
    return lines
