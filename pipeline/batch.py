"""Streaming batch scoring of CSV and Parquet files (`kneepain score`).

Files are read in chunks (memory stays flat however large the file), each chunk is parsed and
scored by the same code as :func:`pipeline.predict`, and every input row ends up either in the
output or in ``OUTPUT.rejects.csv`` with its file, row, column, value and reason. Outputs are
written to temporary files and renamed when complete, so an interrupted run leaves no output.
"""

from __future__ import annotations

import csv
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .io import tmp_path
from .model_io import LoadedModel
from .predict import score_parsed
from .schema import CONDITIONS, ID_COLUMN, CaseValidationError, ParsedCases, normalise_ids, parse_cases

__all__ = ["CHUNK_ROWS", "REJECT_COLUMNS", "REJECT_SCHEMA", "BatchInputError", "ScoreSummary", "has_case_ids",
           "iter_chunks", "output_table", "reject_table", "score_chunk", "score_files", "score_valid",
           "validate_chunk"]

REJECT_COLUMNS = ["file", "row", "column", "value", "reason"]
REJECT_SCHEMA = pa.schema([pa.field("file", pa.string()), pa.field("row", pa.int64()), pa.field("column", pa.string()),
                           pa.field("value", pa.string()), pa.field("reason", pa.string())])
# rows per chunk: 100k scored 1M rows 8% faster than 50k (fewer per-chunk costs) for ~230 MB more
# peak memory (0.92 vs 0.69 GB); memory stays flat as files grow either way
CHUNK_ROWS = 100_000
_CSV_BLOCK = 1 << 20  # small blocks keep pyarrow's read-ahead, and so peak memory, small


class BatchInputError(ValueError):
    """An input cannot be scored at all (unreadable, not CSV, a required column missing)."""


@dataclass
class ScoreSummary:
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.rows_scored + self.rows_rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{path}: the header is not valid UTF-8 ({err.reason} at byte {err.start}).") from err
    except OSError as err:
        raise BatchInputError(f"{path}: cannot read: {err.strerror or err}.") from err
    if not header or all(not h.strip() for h in header):
        raise BatchInputError(f"{path}: the file is empty (no header line); expected a CSV header with at least "
                              "the required columns age and sex.")
    return header


def iter_chunks(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """DataFrames of about ``chunk_rows`` rows from a CSV (all cells as text) or Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BatchInputError(f"{path}: no such file.")
    try:
        if suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _ids_as_text(pa.Table.from_batches([batch])).to_pandas()
            return
        if suffix != ".csv":
            raise BatchInputError(f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet.")
        header = _csv_header(path)
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        pending, size, yielded = [], 0, False
        for batch in reader:
            pending.append(batch)
            size += batch.num_rows
            if size >= chunk_rows:
                yield pa.Table.from_batches(pending).to_pandas()
                pending, size, yielded = [], 0, True
        if pending or not yielded:  # a header-only file still yields its (empty) columns once
            yield pa.Table.from_batches(pending, schema=reader.schema).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        message = str(err).strip().splitlines()[0]
        if "invalid UTF8" in message or "UTF8" in message:
            message = "not valid UTF-8 text (save the file as UTF-8)"
        raise BatchInputError(f"{path}: cannot read: {message}") from err


def _ids_as_text(table: pa.Table) -> pa.Table:
    """A numeric ``case_id`` column as text in Arrow (in pandas, integers with nulls become floats: "123.0")."""
    names = [n.strip().lower() for n in table.column_names]
    if ID_COLUMN in names:
        i = names.index(ID_COLUMN)
        if not pa.types.is_string(table.schema.types[i]) and not pa.types.is_large_string(table.schema.types[i]):
            table = table.set_column(i, table.column_names[i], pc.cast(table.column(i), pa.string()))
    return table


def output_table(scored: pd.DataFrame, schema: pa.Schema, *, file: str | None = None) -> pa.Table:
    """Scored rows as an Arrow table of the output ``schema`` (adding ``file``, and a blank
    ``case_id`` for an input without one when the output has that column)."""
    if file is not None and "file" in schema.names:
        scored = scored.assign(file=file)
    if ID_COLUMN in schema.names and ID_COLUMN not in scored:
        scored = scored.assign(**{ID_COLUMN: ""})
    return pa.Table.from_pandas(scored[schema.names], schema=schema, preserve_index=False)


def reject_table(bad: pd.DataFrame) -> pa.Table:
    """Reject lines as an Arrow table of :data:`REJECT_SCHEMA`."""
    return pa.Table.from_pandas(bad.astype({"file": str, "value": str, "reason": str, "column": str})[REJECT_COLUMNS],
                                schema=REJECT_SCHEMA, preserve_index=False)


def _output_schema(id_column: str, multi: bool, decision: bool) -> pa.Schema:
    fields = [pa.field("file", pa.string())] if multi else []
    fields += [pa.field("row", pa.int64())]
    if id_column == ID_COLUMN:
        fields += [pa.field(ID_COLUMN, pa.string())]
    fields += [pa.field("prediction", pa.string()), pa.field("confidence", pa.float64())]
    fields += [pa.field(f"p_{c}", pa.float64()) for c in CONDITIONS]
    fields += [pa.field("top3", pa.string())]
    if decision:
        fields += [pa.field("triage", pa.string()), pa.field("triage_reason", pa.string()),
                   pa.field("advice", pa.string()), pa.field("differential", pa.string()),
                   pa.field("differential_size", pa.int64()), pa.field("atypical", pa.bool_()),
                   pa.field("atypical_reason", pa.string())]
    return pa.schema(fields)


def validate_chunk(frame: pd.DataFrame, *, file: str, row_offset: int, seen_ids: "_SeenIds | None" = None
                   ) -> tuple[ParsedCases, np.ndarray, pd.DataFrame]:
    """Parse one chunk of raw cases: (parsed cases, which rows are valid, reject lines).

    Each reject line names the file, row, column, value and reason (a row may have several).
    ``seen_ids`` carries the case ids of earlier chunks, so a repeated id is rejected too.
    """
    try:
        parsed = parse_cases(frame, row_offset=row_offset, raise_on_error=False)
    except CaseValidationError as err:  # a required column is missing: the whole file is unusable
        raise BatchInputError(f"{file}: " + "; ".join(
            f"column {r.column!r}: {r.reason}" for r in err.errors.itertuples())) from err
    errors = parsed.errors
    valid = parsed.valid.copy()
    if seen_ids is not None and parsed.ids is not None:
        dup = seen_ids.check_and_add(parsed.ids) & valid
        if dup.any():
            rows = np.flatnonzero(dup)
            errors = pd.concat([errors, pd.DataFrame({
                "row": rows + row_offset, "column": ID_COLUMN, "value": parsed.ids.iloc[rows].astype(str).to_numpy(),
                "reason": "duplicate case_id: seen in an earlier chunk or file"})], ignore_index=True)
            valid &= ~dup
    rejects = errors.assign(file=file)[REJECT_COLUMNS] if len(errors) else pd.DataFrame(columns=REJECT_COLUMNS)
    return parsed, valid, rejects


def score_valid(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, *, row_offset: int) -> pd.DataFrame:
    """Score the valid rows of a parsed chunk: ``row`` (0-based row in its file), ``case_id``
    when the input has one, then the columns of :func:`pipeline.predict.score_parsed`."""
    scored = score_parsed(model, parsed[valid], ids=None)
    row_numbers = np.flatnonzero(valid) + row_offset
    if parsed.ids is not None:
        scored.insert(0, "row", row_numbers)
        scored[ID_COLUMN] = scored[ID_COLUMN].astype(str)
    else:
        scored["row"] = row_numbers
    return scored


def score_chunk(model: LoadedModel, frame: pd.DataFrame, *, file: str, row_offset: int,
                seen_ids: "_SeenIds | None" = None) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Score one chunk of raw cases. Returns (scored rows, reject lines, ignored columns)."""
    parsed, valid, rejects = validate_chunk(frame, file=file, row_offset=row_offset, seen_ids=seen_ids)
    return score_valid(model, parsed, valid, row_offset=row_offset), rejects, parsed.ignored_columns


class _SeenIds:
    """Hashes of case ids seen so far, in sorted runs merged like a binary counter (memory ~8 bytes per id)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def check_and_add(self, ids: pd.Series) -> np.ndarray:
        text = normalise_ids(ids)
        named = (ids.notna() & (text != "")).to_numpy()
        h = pd.util.hash_pandas_object(text, index=False).to_numpy()
        dup = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, h), len(run) - 1)
            dup |= run[pos] == h
        dup &= named
        if named.any():
            self.runs.append(np.unique(h[named]))
        while len(self.runs) > 1 and len(self.runs[-1]) >= len(self.runs[-2]):
            last = self.runs.pop()
            self.runs[-1] = np.union1d(self.runs[-1], last)
        return dup


class _Writer:
    """Writes a CSV or Parquet output to a temporary file next to the target.

    Each chunk is encoded and written on a background thread (Arrow releases the GIL there)
    while the next chunk is scored; chunks stay in order, and an error surfaces on the next call.
    """

    def __init__(self, target: Path, schema: pa.Schema):
        self.target, self.schema = target, schema
        self.tmp = tmp_path(target)
        try:
            if target.suffix.lower() == ".parquet":
                self._w = pq.ParquetWriter(self.tmp, schema, compression="zstd")
            else:
                self._w = pacsv.CSVWriter(self.tmp, schema)
        except OSError as err:
            raise BatchInputError(f"{target}: cannot write: {err.strerror or err}.") from err
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-writer")
        self._pending: Future | None = None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def write(self, table: pa.Table) -> None:
        self._wait()
        self._pending = self._pool.submit(self._w.write_table, table)

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self._w.close()


def _prefetch(chunks: Iterator[pd.DataFrame], depth: int = 2) -> Iterator[pd.DataFrame]:
    """Read ahead ``depth`` chunks on a background thread (parsing CSV in Arrow releases the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone: drop the item rather than block forever

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)
        finally:
            chunks.close()  # the reader and its file are released even if the consumer stopped early

    thread = threading.Thread(target=produce, name="kneepain-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def score_files(inputs: list[str | Path], output: str | Path, model: LoadedModel, *, chunk_rows: int = CHUNK_ROWS,
                progress: bool = False, warn: Callable[[str], None] | None = None) -> ScoreSummary:
    """Score every row of ``inputs`` into ``output`` (CSV or Parquet by extension).

    Rejected rows go to ``<output>.rejects.csv`` (file, row, column, value, reason). Both files
    appear only when the run completes; a stale rejects file from an earlier run is removed.

    Raises
    ------
    BatchInputError
        An input cannot be read or lacks a required column; nothing is written.
    """
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise BatchInputError(f"{output}: unsupported output type {output.suffix!r}; expected .csv or .parquet.")
    if not output.parent.is_dir():
        raise BatchInputError(f"{output.parent}: no such folder for the output.")
    paths = [Path(p) for p in inputs]
    rejects_path = output.with_name(output.name + ".rejects.csv")
    summary, start = ScoreSummary(files=[str(p) for p in paths]), time.perf_counter()
    multi = len(paths) > 1
    has_ids = [has_case_ids(p) for p in paths]
    schema = _output_schema(ID_COLUMN if any(has_ids) else "row", multi, model.decision is not None)
    writer = _Writer(output, schema)
    rejects = _Writer(rejects_path, REJECT_SCHEMA)
    bar = _progress(progress)
    seen = _SeenIds() if any(has_ids) else None
    # parsing (in order: duplicate ids depend on earlier chunks) overlaps with scoring the previous
    # chunk on a second thread; numpy, scikit-learn and Arrow release the GIL for much of both
    scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-scorer")
    in_flight: deque[tuple[Future, str]] = deque()

    def finish_one() -> None:
        future, name = in_flight.popleft()
        scored = future.result()
        writer.write(output_table(scored, schema, file=name))
        summary.rows_scored += len(scored)

    try:
        for path in paths:
            offset, ignored_told = 0, False
            for frame in _prefetch(iter_chunks(path, chunk_rows)):
                parsed, valid, bad = validate_chunk(frame, file=str(path), row_offset=offset, seen_ids=seen)
                if parsed.ignored_columns and not ignored_told:
                    summary.warnings.append(f"{path}: ignoring columns that are not case fields: "
                                            f"{', '.join(parsed.ignored_columns)}")
                    if warn:
                        warn(summary.warnings[-1])
                    ignored_told = True
                in_flight.append((scorer.submit(score_valid, model, parsed, valid, row_offset=offset), str(path)))
                if len(in_flight) > 1:
                    finish_one()
                if len(bad):
                    rejects.write(reject_table(bad))
                summary.rows_rejected += bad["row"].nunique() if len(bad) else 0
                offset += len(frame)
                bar(len(frame))
        while in_flight:
            finish_one()
        writer.close()
        rejects.close()
        # rejects first: a run killed between the two renames leaves no output, never an output
        # whose rejects are missing
        output.unlink(missing_ok=True)  # never leave new rejects beside an old output
        if summary.rows_rejected:
            os.replace(rejects.tmp, rejects_path)
        else:
            rejects.tmp.unlink()
            rejects_path.unlink(missing_ok=True)
        os.replace(writer.tmp, output)
    finally:
        scorer.shutdown(wait=True, cancel_futures=True)
        for w in (writer, rejects):
            try:
                w.close()
            except (OSError, ValueError, pa.ArrowException):
                pass
            w.tmp.unlink(missing_ok=True)
        bar(None)
    summary.seconds = time.perf_counter() - start
    return summary


def has_case_ids(path: Path) -> bool:
    """Whether the file's header (CSV) or schema (Parquet) has a ``case_id`` column."""
    return ID_COLUMN in {h.strip().lower().lstrip("\ufeff") for h in _peek_columns(path)}


def _peek_columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet" and path.is_file():
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise BatchInputError(f"{path}: cannot read: {err}") from err
    if path.suffix.lower() == ".csv" and path.is_file():
        return _csv_header(path)
    return []


def _progress(enabled: bool) -> Callable[[int | None], None]:
    if not enabled:
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(unit=" rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def update(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update
