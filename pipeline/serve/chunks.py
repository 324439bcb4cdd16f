"""One chunk of a case file: parsed, its repeated ids rejected, scored and made ready to write.

:func:`validate_chunk` (= :func:`parse_chunk` + :func:`reject_repeated`) and :func:`score_chunk`
are what every engine runs on a chunk; :class:`SeenIds` remembers the case ids of earlier chunks.
For ``kneepain score`` a chunk is scored, shaped and encoded where it is parsed
(:class:`ChunkScorer`: two background threads where two cores are free, or N spawned processes
that each hold the model), so the process that reads and writes only appends the result.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import pickle
import shutil
import signal
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.casefiles import parse_read
from pipeline.core.errors import BatchInputError, CaseValidationError, ModelIntegrityError
from pipeline.core.files import in_temporary_folder, private_temp_folder
from pipeline.core.parsing import DUPLICATE_ID, ParsedCases, named_ids, normalise_ids, not_utf8_mask, shown_values
from pipeline.core.schema import ID_COLUMN, normalise_header
from pipeline.core.spawning import die_with_parent, signals_blocked
from pipeline.serve.guard import STOP_SIGNALS
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import available_cores, score_columns, scorer_threads
from pipeline.serve.reading import reuse_freed_heap
from pipeline.serve.writing import as_text, encode_csv, output_table, reject_table, without_reject_meta

__all__ = ["ChunkScorer", "Done", "FileJob", "SeenIds", "available_cores", "chunk_ids", "parse_chunk", "reject_repeated",
           "score_chunk", "score_valid", "scorer_threads", "valid_columns", "validate_chunk"]


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
    try:
        parsed = parse_read(frame, malformed or {}, row_offset=row_offset)
    except CaseValidationError as err:  # a required column is missing: the whole file is unusable
        raise BatchInputError(f"{file}: {err}") from err
    return parsed, parsed.valid.copy(), parsed.errors


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
    :meth:`SeenIds.check_and_add`), and its problems sorted by row. A repeated id is a problem of
    its row whatever else is wrong with it, as it is within a chunk: the rejects do not depend on
    how the file was chunked."""
    if repeated is not None and ids is not None:
        dup = repeated.copy()
        if len(errors):  # a repeat within this chunk already has its reason
            within = errors["row"][(errors["column"] == ID_COLUMN) & (errors["reason"] == DUPLICATE_ID)]
            dup[within.to_numpy(dtype=np.int64) - row_offset] = False
        if dup.any():
            rows = np.flatnonzero(dup)
            errors = pd.concat([errors, pd.DataFrame({
                "row": rows + row_offset, "column": ID_COLUMN, "value": shown_values(ids.iloc[rows]),
                "reason": DUPLICATE_ID})], ignore_index=True)
            valid = valid & ~dup
    problems = errors.sort_values("row", kind="stable")[_ERROR_COLUMNS] if len(errors) \
        else pd.DataFrame(columns=_ERROR_COLUMNS)
    return valid, problems


def score_valid(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, *, row_offset: int,
                top_k: int = 3, codes: bool = False) -> pd.DataFrame:
    """Score the valid rows of a parsed chunk: ``row`` (0-based row in its file), ``case_id``
    when the input has one, then the columns of :func:`pipeline.serve.predict.score_parsed`."""
    return pd.DataFrame(valid_columns(model, parsed, valid, row_offset=row_offset, top_k=top_k, codes=codes))


def valid_columns(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, *, row_offset: int,
                  top_k: int = 3, codes: bool = False, columns: Collection[str] | None = None) -> dict[str, Any]:
    """:func:`score_valid`'s columns as arrays, by name, in order (for :func:`pipeline.serve.writing.output_table`;
    ``columns``: as in :func:`pipeline.serve.predict.score_columns`)."""
    scored = score_columns(model, parsed[valid], ids=None, top_k=top_k, codes=codes, columns=columns)
    row_numbers = np.flatnonzero(valid) + row_offset
    if parsed.ids is None:
        scored["row"] = row_numbers  # in the place of the ids
        return scored
    ids = scored[ID_COLUMN]
    if not isinstance(ids.dtype, pd.StringDtype):  # numbers (a Parquet input's) as text
        ids = pd.Series(ids, copy=False).astype(str).array
    return {"row": row_numbers, **scored, ID_COLUMN: ids}


def score_chunk(model: LoadedModel, frame: pd.DataFrame, *, file: str, row_offset: int,
                seen_ids: "SeenIds | None" = None, malformed: dict[int, str] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Score one chunk of raw cases. Returns (scored rows, problems, ignored columns)."""
    parsed, valid, problems = validate_chunk(frame, file=file, row_offset=row_offset, seen_ids=seen_ids,
                                             malformed=malformed)
    return score_valid(model, parsed, valid, row_offset=row_offset), problems, _warned_columns(parsed.ignored_columns)


class SeenIds:
    """Hashes of case ids seen so far, in disjoint sorted runs merged like a binary counter (memory
    ~8 bytes per id; merging two runs needs room for one more copy of them, for the merge only).

    A run of ``_MAPPED_BYTES`` or more lives in memory mapped for it alone, which goes back to the
    system once a merge has replaced it: from the heap, ``kneepain score`` (which keeps freed heap
    memory for the next chunks, :func:`pipeline.serve.reading.reuse_freed_heap`) kept the space of
    every run a merge replaced, and a 4M-row file with ids peaked 60 MiB above one without, for
    31 MiB of hashes."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def check_and_add(self, ids: pd.Series) -> np.ndarray:
        text = normalise_ids(ids)
        named = named_ids(ids, text)
        # the same hash in every process: Dask's driver matches the hashes its workers send; ids
        # are nearly all distinct, so not factorised first (the same hashes in half the time)
        h = pd.util.hash_pandas_object(text, index=False, categorize=False).to_numpy()
        # looked up in sorted order: each search starts where the last one ended, in cache
        order = np.argsort(h)
        h = h[order]
        named = named[order]
        found = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, h), len(run) - 1)
            found |= run[pos] == h
        found &= named
        fresh = h[named & ~found]  # only ids no run has, so runs stay disjoint; sorted
        if len(fresh):
            self.runs.append(fresh[np.concatenate([[True], fresh[1:] != fresh[:-1]])])
        dup = np.empty_like(found)
        dup[order] = found
        while len(self.runs) > 1 and len(self.runs[-1]) >= len(self.runs[-2]):
            self.runs[-2:] = [_merged(*self.runs[-2:])]  # the two runs are let go as soon as merged
        return dup


_MAPPED_BYTES = 1 << 20  # a run of this size or more is mapped memory of its own (SeenIds)
_MERGE_BLOCK = 1 << 16  # hashes of the newer run merged per step (SeenIds)


def _mapped(n: int) -> np.ndarray:
    """An array of ``n`` uint64 in memory mapped for it alone (unmapped when the array is freed);
    no memory for it is a :class:`MemoryError`, as for numpy's own arrays."""
    try:
        buffer = mmap.mmap(-1, n * 8)
    except OSError as err:
        raise MemoryError(f"no memory for the hashes of {n:,} case ids ({err.strerror or err})") from err
    return np.frombuffer(buffer, dtype=np.uint64, count=n)


def _merged(older: np.ndarray, newer: np.ndarray) -> np.ndarray:
    """Two sorted runs of distinct hashes, no hash in both, as one sorted run (of
    ``_MAPPED_BYTES`` or more: in memory mapped for it). Merged a block of ``newer`` at a time with
    the ``older`` hashes below its last, each step sorted in place in the result (numpy's stable
    sort finds the two runs and merges them), so the sort's working memory stays that of a block
    whatever the runs' size (sorting the two whole would hold half of them again)."""
    n = len(older) + len(newer)
    out = _mapped(n) if n * 8 >= _MAPPED_BYTES else np.empty(n, dtype=np.uint64)
    done_old = done = 0
    for start in range(0, len(newer), _MERGE_BLOCK):
        block = newer[start:start + _MERGE_BLOCK]
        below = int(np.searchsorted(older, block[-1]))  # the older hashes that come before the block's last
        step = out[done:done + below - done_old + len(block)]
        step[:below - done_old] = older[done_old:below]
        step[below - done_old:] = block
        step.sort(kind="stable")
        done, done_old = done + len(step), below
    out[done:] = older[done_old:]
    return out


def _unkeepable(frame: pd.DataFrame, keep: dict[str, str], row_offset: int) -> pd.DataFrame:
    """Problems of the kept input columns (``keep``: input name -> output name): a value that is
    bytes and not UTF-8 (a Parquet binary column's, :mod:`pipeline.core.casefiles`) has no text to
    be written as, so its row is rejected rather than written altered."""
    found = []
    for name in keep:
        column = frame[name]
        if column.dtype != object:  # text, numbers: every value has its text
            continue
        bad = not_utf8_mask(column)
        if bad.any():
            rows = np.flatnonzero(bad)
            found.append(pd.DataFrame({"row": rows + row_offset, "column": name,
                                       "value": shown_values(column.to_numpy()[rows]),
                                       "reason": "not valid UTF-8 text, so it cannot be kept as text "
                                                 "(--keep-input-columns)"}))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=_ERROR_COLUMNS)


def _score_and_keep(model: LoadedModel, parsed: ParsedCases, valid: np.ndarray, frame: pd.DataFrame, *,
                    row_offset: int, top_k: int, keep: dict[str, str], codes: bool,
                    columns: Collection[str]) -> dict[str, Any]:
    """:func:`valid_columns` of the output's ``columns``, with the input columns ``keep`` (input name ->
    output name) of the scored rows as text."""
    scored = valid_columns(model, parsed, valid, row_offset=row_offset, top_k=top_k, codes=codes, columns=columns)
    if keep:
        rows = frame.iloc[np.flatnonzero(valid)]
        scored.update({out: as_text(rows[name]) for name, out in keep.items()})  # a missing value: null (empty)
    return scored


@dataclass(frozen=True)
class FileJob:
    """What scoring a chunk of one input needs besides the chunk (sent with each chunk)."""

    label: str
    schema: pa.Schema
    rschema: pa.Schema
    top_k: int
    keep: dict[str, str]
    blank: tuple[str, ...]  # output columns this input does not have (other inputs' kept columns): null
    codes: bool
    shape: Callable[[pa.Table], pa.Table] | None
    csv: bool


@dataclass
class Done:
    """A chunk scored: its output (a table, or CSV lines), its rejects, counts, ignored columns."""

    output: "pa.Table | pa.Buffer"
    rejects: pa.Table | None
    scored: int
    rejected: int
    ignored: tuple[str, ...]


def _score_one(model: LoadedModel, job: FileJob, frame: pd.DataFrame, malformed: dict[int, str], row_offset: int,
               repeated: np.ndarray | None) -> Done:
    """One chunk parsed, its rows that are valid and not ``repeated`` scored, and both made ready to write."""
    parsed, valid, errors = parse_chunk(frame, file=job.label, row_offset=row_offset, malformed=malformed)
    valid, bad = reject_repeated(parsed.ids, valid, errors, repeated, row_offset=row_offset)
    if job.keep:  # after every other problem of a row, however the file was chunked
        unkeepable = _unkeepable(frame, job.keep, row_offset)
        if len(unkeepable):
            bad = pd.concat([bad, unkeepable], ignore_index=True).sort_values("row", kind="stable")
            valid = valid.copy()
            valid[unkeepable["row"].to_numpy(dtype=np.int64) - row_offset] = False
    scored = _score_and_keep(model, parsed, valid, frame, row_offset=row_offset, top_k=job.top_k, keep=job.keep,
                             codes=job.codes, columns=job.schema.names)  # only the output's columns are made
    table = output_table(scored, job.schema, file=job.label, blank=job.blank)
    rejects = reject_table(bad, frame, row_offset=row_offset, file=job.label, schema=job.rschema) if len(bad) else None
    return Done(encode_csv(table, job.shape) if job.csv else table, rejects, len(table),
                 int(bad["row"].nunique()) if len(bad) else 0, _warned_columns(parsed.ignored_columns))


def _warned_columns(ignored: tuple[str, ...]) -> tuple[str, ...]:
    """The ignored columns a warning names: in a rejects file (one with every ``reject_*``
    column), not its own ``reject_*`` columns, as scoring a mended rejects file again is how it is
    used; in any other file, every one."""
    own = without_reject_meta(ignored)
    return ignored if own is None else tuple(own)


_WORKER_MODEL: LoadedModel | None = None


def _start_worker(path: str, digest: str, parent: int | None = None) -> None:
    """A scoring process: the parent's model, and the stop signals left to the parent, which stops
    the pool. (A SIGTERM or SIGHUP to the whole process group, as ``timeout``, ``kill -- -PGID``,
    systemd or a closed terminal send it, killed a process midway through sending its result: the
    pool's reader then waited for the rest for ever, and the job never ended.) So that none
    outlives its job, each is killed when ``parent``, the job's process, ends
    (:func:`pipeline.core.spawning.die_with_parent`), and the job kills them when one dies
    (:meth:`ChunkScorer._kill_if_broken`).

    The parent pickles the model it verified into a file of its own private folder and sends its
    path and SHA-256: the bytes are unpickled only if they are the parent's. (Sent through the
    start-up pipe, the ~100 KB model overflowed the pipe's buffer, and CPython's spawn blocks for
    ever writing to a child that died first, as on a Ctrl-C to the whole process group.)"""
    global _WORKER_MODEL
    if parent is not None:
        die_with_parent(parent)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    reuse_freed_heap()  # a process of this job's own: see pipeline.serve.reading
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ModelIntegrityError(f"{path}: the model this job handed its scoring processes has changed; not loaded.")
    _WORKER_MODEL = pickle.loads(data)  # the parent's own bytes, checked above


def _in_worker(*args) -> Done:
    assert _WORKER_MODEL is not None
    return _score_one(_WORKER_MODEL, *args)


class ChunkScorer:
    """Chunks parsed and scored on :func:`scorer_threads` background threads (``jobs`` = 1) or in
    ``jobs`` spawned processes that each hold the model, sent once. Results come back through
    each chunk's future, so the caller keeps the file's order; ``width`` chunks are worked on at once."""

    def __init__(self, model: LoadedModel, jobs: int):
        self._pool: ThreadPoolExecutor | ProcessPoolExecutor
        self._handover: Path | None = None  # the folder of the processes' model file
        if jobs <= 1:
            self.width = scorer_threads()
            self._pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="kneepain-scorer")
            self._run: Callable[..., Done] = functools.partial(_score_one, model)
        else:
            import multiprocessing

            self.width = jobs
            data = pickle.dumps(model)
            with in_temporary_folder(f"the model for the scoring processes (--jobs {jobs})"):
                self._handover = private_temp_folder("kneepain-model")
                path = self._handover / "model.pickle"
                try:
                    path.write_bytes(data)
                except OSError:
                    shutil.rmtree(self._handover, ignore_errors=True)
                    raise
            # spawned, not forked: this process already runs threads (the reader, the writer); its queues'
            # locks start multiprocessing's resource tracker, which signals_blocked starts shielded
            with signals_blocked(STOP_SIGNALS):
                self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_worker,
                                                 initargs=(str(path), hashlib.sha256(data).hexdigest(), os.getpid()))
            self._run = _in_worker

    def submit(self, *args) -> Future:
        if self._handover is None:
            return self._pool.submit(self._run, *args)
        # the pool starts its processes inside submit: each starts with the stop signals blocked, so a
        # Ctrl-C or SIGTERM while it imports is the parent's alone (it stops the pool) rather than a
        # traceback per process
        with signals_blocked(STOP_SIGNALS):
            future = self._pool.submit(self._run, *args)
        future.add_done_callback(self._kill_if_broken)
        return future

    def result(self, future: Future) -> Done:
        """A chunk's result. With processes, the wait also watches them: a process killed while it
        sent a result leaves the pool's reader waiting for the rest of it, so the pool never learns
        that the process died, and the chunk never ends (:func:`_unstick`)."""
        if self._handover is None:
            return future.result()
        while True:
            try:
                return future.result(timeout=_WATCH_SECONDS)
            except FutureTimeout:
                _unstick(_PoolParts.of(self._pool))

    def _kill_if_broken(self, future: Future) -> None:
        """When a scoring process has died (out of memory, killed), the pool fails every chunk with
        :class:`BrokenProcessPool`, stops the other processes with SIGTERM, which they ignore
        (:func:`_start_worker`), and waits for them: for ever, where one is sending a result
        nobody reads. They are killed instead. (Run by the pool's own thread as it fails the chunk,
        before it waits; ``_processes`` is CPython's record of the pool's processes.)"""
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            _unstick(_PoolParts.of(self._pool))

    def shutdown(self) -> None:
        try:
            if self._handover is None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            else:
                self._shutdown_processes()
        finally:
            if self._handover is not None:
                shutil.rmtree(self._handover, ignore_errors=True)

    def _shutdown_processes(self) -> None:
        """Shut the process pool down and wait for it, killing its processes once it is broken. A
        process that died while no chunk was outstanding (the job waiting on a slow reader of its
        output) fails no chunk, so :meth:`_kill_if_broken` never runs; the pool's SIGTERM is
        ignored, and where the dead process held the task queue's lock the others could never read
        their stop message: the job waited for ever. (``_executor_manager_thread``, ``_processes``
        and ``_broken`` are CPython's, taken before ``shutdown`` lets go of them.)"""
        pool, parts = self._pool, _PoolParts.of(self._pool)
        pool.shutdown(wait=parts.manager is None, cancel_futures=True)  # (none: never started, or a CPython without it)
        while parts.manager is not None and parts.manager.is_alive():
            _unstick(parts)
            parts.manager.join(0.02)


def _kill(processes: dict | None) -> None:
    """Kill a process pool's processes (its ``_processes``, None once it has shut down)."""
    for process in list((processes or {}).values()):
        process.kill()


_WATCH_SECONDS = 0.5  # how often a wait for a chunk looks at the scoring processes


@dataclass(frozen=True)
class _PoolParts:
    """What a process pool is made of (CPython's names), taken while it runs: ``shutdown`` lets go of them."""

    pool: ProcessPoolExecutor
    processes: dict | None
    results: Any  # the results pipe (a multiprocessing SimpleQueue)
    manager: Any  # the thread that reads it

    @classmethod
    def of(cls, pool: Any) -> "_PoolParts":
        return cls(pool, getattr(pool, "_processes", None), getattr(pool, "_result_queue", None),
                   getattr(pool, "_executor_manager_thread", None))


def _unstick(parts: _PoolParts) -> None:
    """Once the pool is broken, or one of its processes has died, kill them all: the pool's own
    SIGTERM is ignored (:func:`_start_worker`), and it would wait for ever for a process stuck
    sending a result nobody reads, or waiting on a lock a dead one held. When one died without
    the pool seeing it (killed while it sent a result, the pool's reader waits for the rest for
    ever), end that wait too: bytes written into the results pipe (this process holds its
    writing end) complete the message, which does not unpickle, and the pool breaks as when a
    process dies, failing every chunk with :class:`BrokenProcessPool`."""
    processes = list((parts.processes or {}).values())
    broken = getattr(parts.pool, "_broken", False)
    if not broken and not any(p.exitcode is not None for p in processes):
        return
    _kill(parts.processes)
    if broken:  # the pool has seen it: it fails the chunks itself
        return
    wait([p.sentinel for p in processes], timeout=10)  # none of them writes any more
    if parts.results is None or parts.manager is None:
        return
    fd, filler = parts.results._writer.fileno(), bytes(1 << 16)
    os.set_blocking(fd, False)  # (the pipe's other writers are dead)
    while not getattr(parts.pool, "_broken", False) and parts.manager.is_alive():
        try:
            os.write(fd, filler)
        except BlockingIOError:
            time.sleep(0.005)
        except OSError:  # closed: the pool has shut down
            return
