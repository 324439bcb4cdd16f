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

import functools
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
from pipeline.serve.writing import Writer, encode_csv, output_schema, output_table, reject_schema, reject_table

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
    parsed, valid, errors = parse_chunk(frame, file=file, row_offset=row_offset, malformed=malformed)
    repeated = seen_ids.check_and_add(parsed.ids) if seen_ids is not None and parsed.ids is not None else None
    valid, problems = reject_repeated(parsed.ids, valid, errors, repeated, row_offset=row_offset)
    return parsed, valid, problems


def parse_chunk(frame: pd.DataFrame, *, file: str, row_offset: int, malformed: dict[int, str] | None = None
                ) -> tuple[ParsedCases, np.ndarray, pd.DataFrame]:
    """:func:`validate_chunk` but for ids repeated from earlier chunks: (parsed, valid, errors).
    It depends on this chunk alone, so chunks can be parsed in any order or process."""
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
    return parsed, valid, errors


def chunk_ids(frame: pd.DataFrame, malformed: dict[int, str] | None = None) -> pd.Series | None:
    """The chunk's case ids as :func:`parse_chunk` reads them (None without a ``case_id`` column;
    a malformed record has none), for :meth:`SeenIds.check_and_add` before the chunk is parsed."""
    names = [c for c in frame.columns if normalise_header(str(c)) == ID_COLUMN]
    if not names:
        return None
    ids = frame[names[0]].reset_index(drop=True)
    if malformed:
        ids = ids.astype(object)
        ids.iloc[list(malformed)] = None
    return ids


def reject_repeated(ids: pd.Series | None, valid: np.ndarray, errors: pd.DataFrame, repeated: np.ndarray | None, *,
                    row_offset: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The chunk's valid rows less those whose id an earlier chunk had (``repeated``, from
    :meth:`SeenIds.check_and_add`), and its problems sorted by row."""
    if repeated is not None and ids is not None:
        dup = repeated & valid
        if dup.any():
            rows = np.flatnonzero(dup)
            errors = pd.concat([errors, pd.DataFrame({
                "row": rows + row_offset, "column": ID_COLUMN, "value": ids.iloc[rows].astype(str).to_numpy(),
                "reason": "duplicate case_id: seen in an earlier chunk or file"})], ignore_index=True)
            valid = valid & ~dup
    problems = errors.sort_values("row", kind="stable")[_ERROR_COLUMNS] if len(errors) \
        else pd.DataFrame(columns=_ERROR_COLUMNS)
    return valid, problems


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
                stdout: BinaryIO | None = None, rejects: str | Path | None = None, jobs: int = 1) -> ScoreSummary:
    """Score every row of ``inputs`` into ``output`` (CSV or Parquet by extension).

    Rejected rows go to ``<output>.rejects.csv`` (or ``rejects``), whole, after their file, row
    and reasons. Both files appear only when the run completes; a stale rejects file from an
    earlier run is removed. The output is locked for the run, and temporary files are removed if
    it is stopped. ``options`` chooses the columns, the float digits and the texts
    (:mod:`pipeline.serve.shaping`); with ``texts="codes"`` a file output gets ``<output>.texts.csv``.

    An input ``-`` is CSV read from ``stdin``, copied to a temporary file first (the reader rereads
    a record longer than its block). An output ``-`` is CSV written to ``stdout`` as it is scored
    (its rejects default to ``score.rejects.csv`` in the current folder).

    ``jobs`` > 1 parses and scores chunks in that many processes (each holds the model and its
    chunks: about 200 MB more per process); the output is the same, row for row and bit for bit.

    Raises
    ------
    BatchInputError
        An input cannot be read or lacks a required column, the output is an input, another job
        holds the output, or the output cannot be written; nothing is written.
    """
    options = options or OutputOptions()
    if not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise BatchInputError(f"jobs == {jobs!r}, must be an integer >= 1.")
    if str(output) == "-":
        return _score_to_stream(inputs, stdout or sys.stdout.buffer, model, rejects=Path(rejects or STREAM_REJECTS),
                                chunk_rows=chunk_rows, progress=progress, warn=warn, options=options, stdin=stdin,
                                jobs=jobs)
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
                                    progress=progress, warn=warn, options=options, jobs=jobs)
    codes = _text_codes(model, options)
    if codes:
        write_text_atomic(texts_path, text_lookup(codes).to_csv(index=False))
    return summary


STREAM_REJECTS = "score.rejects.csv"
STDIN_LABEL = "<stdin>"  # standard input's name in rejects and messages
_SPOOLED = "kneepain-stdin.csv"


def _score_to_stream(inputs: list[str | Path], stream: BinaryIO, model: LoadedModel, *, rejects: Path,
                     chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                     options: OutputOptions, stdin: BinaryIO | None, jobs: int) -> ScoreSummary:
    with _stdin_spooled(inputs, stdin) as paths:
        refuse_same_file(paths, [rejects])
        columns = [file_columns(p) for p in paths]
        with output_lock(rejects), stop_on_signals():
            reclaim_stale_temps([rejects])
            return _score_locked(paths, columns, None, rejects, model, chunk_rows=chunk_rows, progress=progress,
                                 warn=warn, options=options, jobs=jobs, stream=stream)


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
    return functools.partial(round_floats, digits=options.float_digits)  # a partial pickles, for the processes


@dataclass(frozen=True)
class _FileJob:
    """What scoring a chunk of one input needs besides the chunk (sent with each chunk)."""

    label: str
    schema: pa.Schema
    rschema: pa.Schema
    top_k: int
    keep: dict[str, str]
    codes: bool
    shape: Callable[[pa.Table], pa.Table] | None
    csv: bool


@dataclass
class _Done:
    """A chunk scored: its output (a table, or CSV lines), its rejects, counts, ignored columns."""

    output: "pa.Table | pa.Buffer"
    rejects: pa.Table | None
    scored: int
    rejected: int
    ignored: tuple[str, ...]


def _score_one(model: LoadedModel, job: _FileJob, frame: pd.DataFrame, malformed: dict[int, str], row_offset: int,
               repeated: np.ndarray | None) -> _Done:
    """One chunk parsed, its rows that are valid and not ``repeated`` scored, and both made ready to write."""
    parsed, valid, errors = parse_chunk(frame, file=job.label, row_offset=row_offset, malformed=malformed)
    valid, bad = reject_repeated(parsed.ids, valid, errors, repeated, row_offset=row_offset)
    scored = _score_and_keep(model, parsed, valid, frame, row_offset=row_offset, top_k=job.top_k, keep=job.keep,
                             codes=job.codes)
    table = output_table(_with_blank(scored, job.schema), job.schema, file=job.label)
    rejects = reject_table(bad, frame, row_offset=row_offset, file=job.label, schema=job.rschema) if len(bad) else None
    return _Done(encode_csv(table, job.shape) if job.csv else table, rejects, len(scored),
                 int(bad["row"].nunique()) if len(bad) else 0, parsed.ignored_columns)


class _ThreadScorer:
    """Chunks parsed and scored on one background thread, in order."""

    def __init__(self, model: LoadedModel):
        self._model = model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-scorer")

    def submit(self, *args) -> Future:
        return self._pool.submit(_score_one, self._model, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_WORKER_MODEL: LoadedModel | None = None


def _start_worker(model: bytes) -> None:
    """A scoring process: the parent's model (pickled by this process's parent, never read from a
    file), and Ctrl-C left to the parent, which stops the pool."""
    global _WORKER_MODEL
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_MODEL = pickle.loads(model)  # bytes from the parent process, which verified the model; never a file


def _in_worker(*args) -> _Done:
    assert _WORKER_MODEL is not None
    return _score_one(_WORKER_MODEL, *args)


class _ProcessScorer:
    """Chunks parsed and scored in ``jobs`` processes (each with the model, sent once)."""

    def __init__(self, model: LoadedModel, jobs: int):
        import multiprocessing

        # spawned, not forked: this process already runs threads (the reader, the writer)
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(pickle.dumps(model),))

    def submit(self, *args) -> Future:
        return self._pool.submit(_in_worker, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _chunk_scorer(model: LoadedModel, jobs: int) -> "_ThreadScorer | _ProcessScorer":
    return _ThreadScorer(model) if jobs <= 1 else _ProcessScorer(model, jobs)


def _score_locked(paths: list[Path], columns: list[list[str]], output: Path | None, rejects_path: Path,
                  model: LoadedModel, *, chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                  options: OutputOptions, jobs: int, stream: BinaryIO | None = None) -> ScoreSummary:
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
    # chunks are parsed, scored and encoded on another thread (jobs == 1) or in ``jobs`` processes,
    # while this thread reads ahead, finds repeated ids (in order: they depend on earlier chunks)
    # and hands the results to the writers
    scorer = _chunk_scorer(model, jobs)
    in_flight: deque[tuple[Future, str]] = deque()
    told: set[str] = set()  # files whose ignored columns were reported

    def finish_one(out: Writer, rejected: Writer) -> None:
        future, name = in_flight.popleft()
        done: _Done = future.result()
        if done.ignored and name not in told:
            summary.warnings.append(ignored_columns_message(done.ignored, name))
            if warn:
                warn(summary.warnings[-1])
            told.add(name)
        out.write(done.output)
        if done.rejects is not None:
            rejected.write(done.rejects)
        summary.rows_scored += done.scored
        summary.rows_rejected += done.rejected

    try:
        # created inside the try: a signal that arrives as a file is created still gets it removed
        writer = Writer(output if output is not None else Path("-"), schema, stream=stream, shape=shape)
        rejects = Writer(rejects_path, rschema)
        for path, label, keep in zip(paths, labels, keep_by_file):
            job = _FileJob(label, schema, rschema, options.top_k, keep, codes, shape, csv_out)
            offset = 0
            for frame, malformed in prefetch(iter_chunks(path, chunk_rows)):
                ids = chunk_ids(frame, malformed) if seen is not None else None
                repeated = seen.check_and_add(ids) if seen is not None and ids is not None else None
                in_flight.append((scorer.submit(job, frame, malformed, offset, repeated), label))
                if len(in_flight) > jobs:
                    finish_one(writer, rejects)
                offset += len(frame)
                bar(len(frame))
        while in_flight:
            finish_one(writer, rejects)
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
    except BrokenProcessPool as err:
        raise BatchInputError("a scoring process stopped before its chunk was scored (out of memory, or killed); "
                              "nothing was written.") from err
    except BrokenPipeError as err:  # `kneepain score - -o - | head`: the reader has gone
        raise BatchInputError("-: the output pipe was closed before all rows were written.") from err
    except OSError as err:  # disk full, a folder in the way, permissions: one clear line, nothing left
        raise BatchInputError(f"{output or '-'}: cannot write: {err.strerror or err}.") from err
    finally:
        scorer.shutdown()
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
