"""Streaming batch scoring of CSV and Parquet files (`kneepain score`).

Files are read in chunks (:mod:`pipeline.serve.reading`; memory stays flat however large the
file), each chunk is parsed and
scored by the same code as :func:`pipeline.serve.predict`, and every input row ends up either in the
output or in ``OUTPUT.rejects.csv``, whole, with its file, row and reasons (a record with the wrong
number of fields included). Outputs are written to temporary files and renamed when complete, so
an interrupted run leaves no output; :mod:`pipeline.serve.guard` refuses an output that is an
input, locks the output, and removes temporary files on SIGTERM/SIGHUP/SIGINT and those of dead jobs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.casefiles import file_columns, iter_chunks
from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.files import tmp_path, write_text_atomic
from pipeline.core.parsing import ParsedCases, ignored_columns_message, normalise_ids, parse_cases
from pipeline.core.schema import ID_COLUMN, normalise_header
from pipeline.serve import CHUNK_ROWS
from pipeline.serve.guard import output_lock, reclaim_stale_temps, refuse_same_file, stop_on_signals
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import score_parsed
from pipeline.serve.reading import prefetch
from pipeline.serve.shaping import OutputOptions, input_columns, round_floats, select_columns, text_lookup
from pipeline.serve.writing import Writer, output_schema, output_table, reject_schema, reject_table

__all__ = ["BatchInputError", "ScoreSummary", "SeenIds", "score_chunk", "score_files", "score_valid",
           "validate_chunk"]

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


_ERROR_COLUMNS = ["row", "column", "value", "reason"]


def validate_chunk(frame: pd.DataFrame, *, file: str, row_offset: int, seen_ids: "SeenIds | None" = None,
                   malformed: dict[int, str] | None = None) -> tuple[ParsedCases, np.ndarray, pd.DataFrame]:
    """Parse one chunk of raw cases: (parsed cases, which rows are valid, problems).

    Each problem names the row, column, value and reason (a row may have several).
    ``seen_ids`` carries the case ids of earlier chunks, so a repeated id is rejected too.
    ``malformed`` maps rows that are CSV records with the wrong number of fields to their reason:
    they are rejected for that alone (their fields may be shifted) and their ids are not counted.
    """
    if malformed:
        frame = frame.copy()
        frame.iloc[list(malformed)] = None
    try:
        parsed = parse_cases(frame, row_offset=row_offset, raise_on_error=False)
    except CaseValidationError as err:  # a required column is missing: the whole file is unusable
        raise BatchInputError(f"{file}: " + "; ".join(
            f"column {r.column!r}: {r.reason}" for r in err.errors.itertuples())) from err
    errors = parsed.errors
    valid = parsed.valid.copy()
    if malformed:
        rows = np.fromiter(malformed, dtype=np.int64) + row_offset
        errors = pd.concat([errors[~errors["row"].isin(rows)], pd.DataFrame({
            "row": rows, "column": "", "value": "", "reason": list(malformed.values())})], ignore_index=True)
        valid[list(malformed)] = False
        parsed.valid[list(malformed)] = False
    if seen_ids is not None and parsed.ids is not None:
        dup = seen_ids.check_and_add(parsed.ids) & valid
        if dup.any():
            rows = np.flatnonzero(dup)
            errors = pd.concat([errors, pd.DataFrame({
                "row": rows + row_offset, "column": ID_COLUMN, "value": parsed.ids.iloc[rows].astype(str).to_numpy(),
                "reason": "duplicate case_id: seen in an earlier chunk or file"})], ignore_index=True)
            valid &= ~dup
    problems = errors.sort_values("row", kind="stable")[_ERROR_COLUMNS] if len(errors) \
        else pd.DataFrame(columns=_ERROR_COLUMNS)
    return parsed, valid, problems


def score_valid(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, *, row_offset: int,
                top_k: int = 3, codes: bool = False) -> pd.DataFrame:
    """Score the valid rows of a parsed chunk: ``row`` (0-based row in its file), ``case_id``
    when the input has one, then the columns of :func:`pipeline.serve.predict.score_parsed`."""
    scored = score_parsed(model, parsed[valid], ids=None, top_k=top_k, codes=codes)
    row_numbers = np.flatnonzero(valid) + row_offset
    if parsed.ids is not None:
        scored.insert(0, "row", row_numbers)
        scored[ID_COLUMN] = scored[ID_COLUMN].astype(str)
    else:
        scored["row"] = row_numbers
    return scored


def score_chunk(model: LoadedModel, frame: pd.DataFrame, *, file: str, row_offset: int,
                seen_ids: "SeenIds | None" = None, malformed: dict[int, str] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Score one chunk of raw cases. Returns (scored rows, problems, ignored columns)."""
    parsed, valid, problems = validate_chunk(frame, file=file, row_offset=row_offset, seen_ids=seen_ids,
                                             malformed=malformed)
    return score_valid(model, parsed, valid, row_offset=row_offset), problems, parsed.ignored_columns


class SeenIds:
    """Hashes of case ids seen so far, in disjoint sorted runs merged like a binary counter (memory
    ~8 bytes per id; merging two runs needs room for one more copy of them)."""

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
        fresh = h[named & ~dup]  # only ids no run has, so runs stay disjoint
        if len(fresh):
            fresh.sort(kind="stable")
            self.runs.append(fresh[np.concatenate([[True], fresh[1:] != fresh[:-1]])])
        while len(self.runs) > 1 and len(self.runs[-1]) >= len(self.runs[-2]):
            last = self.runs.pop()
            merged = np.concatenate([self.runs.pop(), last])
            del last
            merged.sort(kind="stable")  # two sorted runs: the stable sort merges them in linear time
            self.runs.append(merged)
        return dup


def _score_and_keep(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, frame: pd.DataFrame, *,
                    row_offset: int, top_k: int, keep: dict[str, str], codes: bool) -> pd.DataFrame:
    """:func:`score_valid`, with the input columns ``keep`` (input name -> output name) of the scored rows as text."""
    scored = score_valid(model, parsed, valid, row_offset=row_offset, top_k=top_k, codes=codes)
    if keep:
        rows = frame.iloc[np.flatnonzero(valid)]
        scored = scored.assign(**{out: rows[name].astype("str").to_numpy() for name, out in keep.items()})
    return scored


def score_files(inputs: list[str | Path], output: str | Path, model: LoadedModel, *, chunk_rows: int = CHUNK_ROWS,
                progress: bool = False, warn: Callable[[str], None] | None = None,
                options: OutputOptions | None = None, stdin: BinaryIO | None = None,
                stdout: BinaryIO | None = None, rejects: str | Path | None = None) -> ScoreSummary:
    """Score every row of ``inputs`` into ``output`` (CSV or Parquet by extension).

    Rejected rows go to ``<output>.rejects.csv`` (or ``rejects``), whole, after their file, row
    and reasons. Both files appear only when the run completes; a stale rejects file from an
    earlier run is removed. The output is locked for the run, and temporary files are removed if
    it is stopped. ``options`` chooses the columns, the float digits and the texts
    (:mod:`pipeline.serve.shaping`); with ``texts="codes"`` a file output gets ``<output>.texts.csv``.

    An input ``-`` is CSV read from ``stdin``, copied to a temporary file first (the reader rereads
    a record longer than its block). An output ``-`` is CSV written to ``stdout`` as it is scored
    (its rejects default to ``score.rejects.csv`` in the current folder).

    Raises
    ------
    BatchInputError
        An input cannot be read or lacks a required column, the output is an input, another job
        holds the output, or the output cannot be written; nothing is written.
    """
    options = options or OutputOptions()
    if str(output) == "-":
        return _score_to_stream(inputs, stdout or sys.stdout.buffer, model, rejects=Path(rejects or STREAM_REJECTS),
                                chunk_rows=chunk_rows, progress=progress, warn=warn, options=options, stdin=stdin)
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise BatchInputError(f"{output}: unsupported output type {output.suffix!r}; expected .csv or .parquet.")
    if output.is_dir():
        raise BatchInputError(f"{output}: is a folder; give the path of an output file.")
    if not output.parent.is_dir():
        raise BatchInputError(f"{output.parent}: no such folder for the output.")
    rejects_path = Path(rejects) if rejects is not None else output.with_name(output.name + ".rejects.csv")
    texts_path = output.with_name(output.name + ".texts.csv")
    with _stdin_spooled(inputs, stdin) as paths:
        refuse_same_file(paths, [output, rejects_path, texts_path])
        columns = [file_columns(p) for p in paths]  # every input readable before anything is written
        with output_lock(output), stop_on_signals():
            reclaim_stale_temps([output, rejects_path])
            summary = _score_locked(paths, columns, output, rejects_path, model, chunk_rows=chunk_rows,
                                    progress=progress, warn=warn, options=options)
    codes = _text_codes(model, options)
    if codes:
        write_text_atomic(texts_path, text_lookup(codes).to_csv(index=False))
    return summary


STREAM_REJECTS = "score.rejects.csv"
STDIN_LABEL = "<stdin>"  # standard input's name in rejects and messages
_SPOOLED = "kneepain-stdin.csv"


def _score_to_stream(inputs: list[str | Path], stream: BinaryIO, model: LoadedModel, *, rejects: Path,
                     chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                     options: OutputOptions, stdin: BinaryIO | None) -> ScoreSummary:
    with _stdin_spooled(inputs, stdin) as paths:
        refuse_same_file(paths, [rejects])
        columns = [file_columns(p) for p in paths]
        with output_lock(rejects), stop_on_signals():
            reclaim_stale_temps([rejects])
            return _score_locked(paths, columns, None, rejects, model, chunk_rows=chunk_rows, progress=progress,
                                 warn=warn, options=options, stream=stream)


@contextmanager
def _stdin_spooled(inputs: list[str | Path], stdin: BinaryIO | None) -> Iterator[list[Path]]:
    """The input paths, ``-`` replaced by a temporary copy of standard input (removed afterwards)."""
    if sum(str(p) == "-" for p in inputs) > 1:
        raise BatchInputError("-: standard input can be read once; give '-' at most once.")
    if not any(str(p) == "-" for p in inputs):
        yield [Path(p) for p in inputs]
        return
    with tempfile.TemporaryDirectory(prefix="kneepain-stdin-") as folder:
        spooled = Path(folder) / _SPOOLED
        with open(spooled, "wb") as fh:
            shutil.copyfileobj(stdin or sys.stdin.buffer, fh, 1 << 20)
        yield [spooled if str(p) == "-" else Path(p) for p in inputs]


def _text_codes(model: LoadedModel, options: OutputOptions) -> dict[str, dict[str, str]]:
    if options.texts != "codes" or model.decision is None or model.kb is None:
        return {}
    return model.decision.text_codes(model.kb)


def _shaper(options: OutputOptions, csv: bool) -> Callable[[pa.Table], pa.Table] | None:
    if not csv or options.float_digits is None:
        return None
    return lambda table: round_floats(table, options.float_digits)


def _score_locked(paths: list[Path], columns: list[list[str]], output: Path | None, rejects_path: Path,
                  model: LoadedModel, *, chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                  options: OutputOptions, stream: BinaryIO | None = None) -> ScoreSummary:
    labels = [STDIN_LABEL if p.name == _SPOOLED else str(p) for p in paths]  # a file's name in messages and rows
    summary, start = ScoreSummary(files=labels), time.perf_counter()
    has_ids = any(ID_COLUMN in {normalise_header(c) for c in cols} for cols in columns)
    full = output_schema(ID_COLUMN if has_ids else "row", len(paths) > 1, model.decision is not None,
                         top_k=options.top_k)
    keep_by_file = [input_columns(cols, full.names) if options.keep_input else {} for cols in columns]
    extra = list(dict.fromkeys(out for keep in keep_by_file for out in keep.values()))
    schema = select_columns(output_schema(ID_COLUMN if has_ids else "row", len(paths) > 1, model.decision is not None,
                                          top_k=options.top_k, extra=extra), options.columns)
    rschema = reject_schema(columns)
    csv_out = output is None or output.suffix.lower() != ".parquet"
    shape = _shaper(options, csv_out)
    codes = bool(_text_codes(model, options))
    # removed whenever the run stops, even mid-way
    temporary = ([tmp_path(output)] if output is not None else []) + [tmp_path(rejects_path)]
    writer: Writer | None = None
    rejects: Writer | None = None
    bar = _progress(progress)
    seen = SeenIds() if has_ids else None
    # parsing (in order: duplicate ids depend on earlier chunks) overlaps with scoring the previous
    # chunk on a second thread; numpy and Arrow release the GIL for much of both
    scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-scorer")
    in_flight: deque[tuple[Future, str]] = deque()

    def finish_one(out: Writer) -> None:
        future, name = in_flight.popleft()
        scored = future.result()
        out.write(output_table(_with_blank(scored, schema), schema, file=name))
        summary.rows_scored += len(scored)

    try:
        # created inside the try: a signal that arrives as a file is created still gets it removed
        writer = Writer(output if output is not None else Path("-"), schema, stream=stream, shape=shape)
        rejects = Writer(rejects_path, rschema)
        for path, label, keep in zip(paths, labels, keep_by_file):
            offset, ignored_told = 0, False
            for frame, malformed in prefetch(iter_chunks(path, chunk_rows)):
                parsed, valid, bad = validate_chunk(frame, file=label, row_offset=offset, seen_ids=seen,
                                                    malformed=malformed)
                if parsed.ignored_columns and not ignored_told:
                    summary.warnings.append(ignored_columns_message(parsed.ignored_columns, label))
                    if warn:
                        warn(summary.warnings[-1])
                    ignored_told = True
                in_flight.append((scorer.submit(_score_and_keep, model, parsed, valid, frame, row_offset=offset,
                                                top_k=options.top_k, keep=keep, codes=codes), label))
                if len(in_flight) > 1:
                    finish_one(writer)
                if len(bad):
                    rejects.write(reject_table(bad, frame, row_offset=offset, file=label, schema=rschema))
                summary.rows_rejected += bad["row"].nunique() if len(bad) else 0
                offset += len(frame)
                bar(len(frame))
        while in_flight:
            finish_one(writer)
        writer.close()
        rejects.close()
        # rejects first: a run killed between the two renames leaves no output, never an output
        # whose rejects are missing
        if output is not None:
            output.unlink(missing_ok=True)  # never leave new rejects beside an old output
        if summary.rows_rejected:
            os.replace(rejects.tmp, rejects_path)
        else:
            rejects.tmp.unlink()
            rejects_path.unlink(missing_ok=True)
        if output is not None:
            os.replace(writer.tmp, output)
    except BrokenPipeError as err:  # `kneepain score - -o - | head`: the reader has gone
        raise BatchInputError("-: the output pipe was closed before all rows were written.") from err
    except OSError as err:  # disk full, a folder in the way, permissions: one clear line, nothing left
        raise BatchInputError(f"{output or '-'}: cannot write: {err.strerror or err}.") from err
    finally:
        scorer.shutdown(wait=True, cancel_futures=True)
        for w in (writer, rejects):
            try:
                if w is not None:
                    w.close()
            except (OSError, ValueError, pa.ArrowException):
                pass
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
        bar(None)
    summary.seconds = time.perf_counter() - start
    return summary


def _with_blank(scored: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """``scored`` with an empty text for an input column of ``schema`` this file does not have."""
    missing = [n for n in schema.names if n not in scored.columns and n not in ("file", ID_COLUMN)]
    return scored.assign(**{n: "" for n in missing}) if missing else scored


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
