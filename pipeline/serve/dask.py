"""The Dask engine of ``kneepain score``: scoring files, large or many, on a cluster.

:func:`score_files_dask` splits each input into blocks of whole chunks
(:func:`pipeline.core.blocks.plan_blocks`: Parquet by rows from the footer, CSV by byte ranges
that start at a record) and runs one task per block, so N workers score even a single large
file about N times faster. A task streams its block's chunks through
:func:`pipeline.serve.batch.score_chunk` (the same code as the pandas engine, so every row gets
the same numbers) and writes one part file per chunk, named by the chunk's place in its file.
Chunks have exactly ``chunk_rows`` rows whichever way a file is read, so row numbers, malformed-
record reasons and rejects are those of the pandas engine; a ``case_id`` repeated in another
block or file is found by a second pass on the driver. The cluster itself comes from
:func:`pipeline.core.cluster.dask_client`.

Outputs are written into a hidden temporary folder next to the target and renamed into place only
when every task succeeded: an output folder is complete or absent. Inputs and outputs must be on a
file system that the workers see at the same paths (always true for a local cluster).
Dask itself is imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.blocks import MIN_BLOCK_BYTES, plan_blocks
from pipeline.core.casefiles import (
    BlockMismatchError,
    FileBlock,
    check_is_file,
    complete_columns,
    csv_data_start,
    iter_chunks,
    parquet_metadata,
    unsupported_file_type,
    url_problem,
)
from pipeline.core.cluster import (
    DaskJobError,
    code_digest,
    gather,
    other_code,
    remove_temp_folder,
    task_failed,
    temp_folder,
)
from pipeline.core.errors import BatchInputError, ModelIntegrityError
from pipeline.core.files import (
    arrow_file,
    file_label,
    file_state,
    is_case_file,
    is_parquet,
    numbered,
    refuse_changed,
    tmp_path,
)
from pipeline.core.parsing import ignored_columns_message
from pipeline.core.paths import models_dir
from pipeline.core.schema import ID_COLUMN, normalise_header
from pipeline.serve import CHUNK_ROWS, batch
from pipeline.serve.batch import ScoreSummary, SeenIds
from pipeline.serve.guard import refuse_repeated_inputs, signals_deferred, stops_after_output
from pipeline.serve.loading import get_model, is_model_uri, pinned_uri
from pipeline.serve.writing import encode_csv, output_schema, output_table, reject_schema, reject_table

if TYPE_CHECKING:
    from distributed import Client


__all__ = ["FORMATS", "DaskJobError", "default_block_bytes", "score_files_dask"]

FORMATS = ("parquet", "csv")
REJECTS_FILE = "_rejects.csv"  # a leading _ keeps it out of pd.read_parquet(folder) and other dataset readers
BLOCKS_PER_WORKER = 2  # default block size: the inputs in about this many blocks per worker thread
_INPUT_ERRORS = (BatchInputError, ModelIntegrityError, FileNotFoundError)  # the user's to fix: not retried
# what a retry can mend (a file system or a worker's memory briefly failing); any other error
# would only fail again, so it ends the job at once
_TRANSIENT_ERRORS = (OSError, MemoryError)


@dataclass
class _BlockResult:
    """What one scoring task reports back: its parts and rejects (file names in the attempt's own
    subfolder of the job's folder), counts and the hashes of its case ids."""

    file: int
    first_row: int
    attempt: str = ""  # the attempt's subfolder of the job's folder
    parts: list[str] = field(default_factory=list)
    rejects: str | None = None
    rows_scored: int = 0
    rows_rejected: int = 0
    ignored: tuple[str, ...] = ()
    id_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    error: Exception | None = None
    error_traceback: str | None = None  # where on the worker an unexpected error came from
    whole_file: bool = False  # the block could not be read on its own: score its file unsplit


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An ``OSError`` while a task writes ``path`` (a part or its rejects, in the job's hidden
    folder) carries that file's name (Arrow's and ``write``'s carry none), so the job's error can
    name the output (:func:`_named_as_output`); still an ``OSError``, so Dask retries it."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, os.strerror(err.errno) if err.errno else str(err), str(path)) from err


def _write_part(table: pa.Table, path: Path, fmt: str) -> None:
    tmp = tmp_path(path)  # a worker killed mid-write leaves only a hidden .tmp, removed with the job's folder
    with _writing(path):
        if fmt == "parquet":
            with arrow_file(tmp, "wb") as sink:
                pq.write_table(table, sink, compression="zstd")
        else:
            with open(tmp, "wb") as fh:
                fh.write(encode_csv(table, header=True))  # as the pandas engine encodes its chunks
        os.replace(tmp, path)


def _last_chunk(path: Path, chunk_rows: int) -> int:
    """The highest chunk number ``path`` could have: from a Parquet file's row count, and from a
    CSV file's size (a record takes at least a byte)."""
    if is_parquet(path):
        rows = parquet_metadata(path).num_rows
    else:
        rows = path.stat().st_size
    return max(0, -(-rows // chunk_rows) - 1)


def _is_split(block: FileBlock) -> bool:
    return block.first_row > 0 or block.rows is not None


def _score_block(file: int, label: str, path: str, block: FileBlock, model_source: str, tmp_dir: str, *,
                 fmt: str, chunk_rows: int, id_column: str, earlier: np.ndarray, rschema: pa.Schema,
                 digest: str = "", code: str = "", last: tuple[int, int] = (0, 0)) -> _BlockResult:
    """Task: score every chunk of one block of a file into ``part-<file>-<chunk>`` files in a
    subfolder of ``tmp_dir`` of this attempt's own: an attempt that the scheduler gave up on (its
    worker dropped, yet still running) writes only there, never over the parts of the attempt
    whose result the job uses, and :func:`_publish` takes only the files a result reports.

    Chunks are numbered in the file (a block starts at a whole chunk), so the part names do not
    depend on how the file was split; ``last``, the highest file number of the job and the highest
    chunk number this file could have (:func:`_last_chunk`), sets how many digits the numbers
    take. ``earlier`` holds the hashes of this block's case ids that an earlier block or file
    also has (the driver's second pass); they are rejected as duplicates exactly as the pandas
    engine would. ``digest``: the driver's model's
    (:attr:`pipeline.serve.loading.LoadedModel.digest`); a worker that loads another (the folder
    was replaced while the job ran) scores nothing and fails the job; so does a worker whose
    kneepain code is not the driver's ``code`` (:func:`pipeline.core.cluster.code_digest`).
    """
    result, offset = _BlockResult(file, block.first_row), block.first_row
    if code and code != code_digest():  # returned: a retry on the same worker would only fail again
        result.error = other_code(label)
        return result
    attempt = f"attempt-{uuid.uuid4().hex}"
    folder = Path(tmp_dir) / attempt
    result.attempt = attempt
    first_chunk = block.first_row // chunk_rows
    seen = SeenIds()
    if len(earlier):
        seen.runs.append(np.sort(earlier))
    number = lambda chunk: f"{numbered(file, last[0])}-{numbered(chunk, last[1])}"
    rejects, rejects_path = None, folder / f"rejects-{number(first_chunk)}.csv"
    done = False  # every part and the rejects written: the attempt's folder is kept for the job
    try:
        with _writing(folder):
            folder.mkdir()
        model = get_model(model_source)  # cached per process: the model loads once per worker
        if digest and model.digest != digest:  # one job, one model: never parts of two
            raise ModelIntegrityError(
                f"{model_source}: the model changed while the job ran (a worker loaded other files than the ones "
                "checked when the job started, as when a training run replaces the folder); nothing was written. "
                "Score again once the folder is no longer being replaced, or from a copy of it.")
        # the pandas engine's schema (with the decision columns when the model has a decision layer)
        schema = output_schema(id_column, True, model.decision is not None)
        for chunk, (frame, malformed) in enumerate(iter_chunks(path, chunk_rows, block=block, name=label)):
            if (chunk or block.first_row) and not len(frame):  # nothing to write (a file's first block writes its header)
                continue
            scored, bad, ignored = batch.score_chunk(model, frame, file=label, row_offset=offset, seen_ids=seen,
                                                     malformed=malformed)
            result.ignored = result.ignored or ignored
            name = f"part-{number(first_chunk + chunk)}.{fmt}"
            _write_part(output_table(scored, schema, file=label), folder / name, fmt)
            result.parts.append(name)
            if len(bad):
                with _writing(rejects_path):
                    if rejects is None:  # the header as the pandas engine writes it (input names guarded too)
                        rejects = open(tmp_path(rejects_path), "wb")
                        rejects.write(encode_csv(rschema.empty_table(), header=True))
                    rejects.write(encode_csv(reject_table(bad, frame, row_offset=offset, file=label, schema=rschema)))
                result.rows_rejected += bad["row"].nunique()
            result.rows_scored += len(scored)
            offset += len(frame)
        if rejects is not None:
            with _writing(rejects_path):
                rejects.close()
                os.replace(tmp_path(rejects_path), rejects_path)
            result.rejects = rejects_path.name
        done = True
    except (BlockMismatchError, *_INPUT_ERRORS) as err:  # returned, not raised: Dask would retry a task that raises
        # a split block that cannot be read (or does not hold its planned rows) sends its file
        # back to be scored whole, which reports the file's real error, if any, as the pandas engine does
        result.whole_file = _is_split(block) and not isinstance(err, ModelIntegrityError)  # no block's doing
        result.error = None if result.whole_file else _named_as_given(err, path, label)
    except _TRANSIENT_ERRORS:
        raise  # Dask retries the task
    except Exception as err:  # returned, so that Dask does not retry what would fail again
        result.error, result.error_traceback = task_failed(label, err), traceback.format_exc()
    finally:
        if rejects is not None:
            rejects.close()  # a second close is a no-op
        if not done:
            shutil.rmtree(folder, ignore_errors=True)  # a failed attempt's parts: no disk held until the job ends
            result.parts, result.rejects = [], None
    if seen.runs:
        result.id_hashes = np.unique(np.concatenate(seen.runs))
    return result


def _named_as_output(err: DaskJobError, tmp: Path, target: Path) -> DaskJobError:
    """A job that failed because a task could not write into the job's hidden folder (a full disk,
    a file-size limit, after the task's retries), named as the output the user gave: not as the
    input the task read, nor by the hidden folder."""
    cause = err.__cause__
    written = getattr(cause, "filename", None)
    if not isinstance(cause, OSError) or not written or tmp not in Path(written).parents:  # _writing's name
        return err
    name = "" if Path(written).name.startswith("attempt-") else f"{Path(written).name}: "  # (its folder: no file's)
    return DaskJobError(f"{target}: cannot write the output ({name}{cause.strerror or cause}); no output was written.")


def _named_as_given(err: Exception, path: str, label: str) -> Exception:
    """An input error naming its file as the user gave it (a task reads the file by its absolute
    path, so that workers in another folder find it), as the pandas engine names it."""
    return err.naming(path, label) if type(err) is BatchInputError and path in str(err) else err


def _expand_inputs(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(c in text for c in "*?[") and not Path(text).is_file():  # a file's own name is taken as it is
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise url_problem(text) or BatchInputError(f"{text}: no file matches this pattern.")
            paths += [Path(m) for m in matches]
        else:
            paths.append(Path(text))
    if not paths:
        raise BatchInputError("no input files given; expected one or more CSV or Parquet files or globs.")
    for p in paths:
        check_is_file(p)
        if not is_case_file(p):
            raise unsupported_file_type(p)
    refuse_repeated_inputs(paths)
    return paths


def _model_path(model_source: str | Path | None) -> str:
    if model_source is None:
        return str(models_dir())
    if is_model_uri(model_source):  # an MLflow URI: each worker resolves it, an alias as the version it names now
        return pinned_uri(str(model_source))
    return str(Path(model_source).resolve())  # workers may not share the driver's working directory


def _cross_block_duplicates(results: list[_BlockResult]) -> dict[int, np.ndarray]:
    """For each block (its place in ``results``, in input order), the hashes of its ids that an earlier block has too."""
    named = [(i, r) for i, r in enumerate(results) if len(r.id_hashes)]
    if len(named) < 2:
        return {}
    # each block's hashes are sorted and unique: a stable sort merges the runs, and a hash found
    # twice is in two blocks. Usually none is, and the job's tail waits for no more than that.
    hashes = np.sort(np.concatenate([r.id_hashes for _, r in named]), kind="stable")
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if not len(repeated):
        return {}
    found, earlier = {}, np.empty(0, dtype=np.uint64)
    for i, r in named:  # in input order: the first block to hold an id keeps it
        shared = r.id_hashes[np.isin(r.id_hashes, repeated, assume_unique=True)]
        if len(again := shared[np.isin(shared, earlier, assume_unique=True)]):
            found[i] = again
        earlier = np.union1d(earlier, shared)
    return found


def _publish(tmp: Path, results: list[_BlockResult], target: Path, rschema: pa.Schema,
             complete: Callable[[], None] = lambda: None) -> None:
    """Make the output in a new subfolder of ``tmp`` from the files ``results`` report (each part
    moved there under its own name, the rejects merged into ``_rejects.csv``) and rename it to
    ``target``, then call ``complete()``, these two with stop signals held off (a stop then says
    the folder is whole): what other attempts wrote (killed, or given up on and still running) stays
    behind in ``tmp``, which the caller removes."""
    header = encode_csv(rschema.empty_table(), header=True).to_pybytes()
    out = tmp / "output"
    out.mkdir()
    parts = [(tmp / r.attempt / name, name) for r in results for name in r.parts]
    missing = [str(written.relative_to(tmp)) for written, _ in parts if not written.is_file()]
    if missing:
        raise DaskJobError(f"{tmp}: part files missing after the job: {', '.join(sorted(missing)[:5])}")
    with open(out / REJECTS_FILE, "wb") as merged:
        merged.write(header)
        for r in results:
            if r.rejects:
                with open(tmp / r.attempt / r.rejects, "rb") as fh:
                    # each file's header, by its bytes: a column name may hold a line break
                    if fh.read(len(header)) != header:
                        raise DaskJobError(f"{fh.name}: does not start with the rejects' header.")
                    shutil.copyfileobj(fh, merged)
    for written, name in parts:
        os.rename(written, out / name)
    if os.path.lexists(target):
        raise BatchInputError(f"{target}: appeared while the job ran; the output is not replaced.")
    with signals_deferred():
        os.rename(out, target)
        complete()


def _discard(tmp: Path, results: list[_BlockResult]) -> None:
    """Remove the attempt folders of ``results`` the job will not use (a block scored again)."""
    for r in results:
        if r.attempt:
            shutil.rmtree(tmp / r.attempt, ignore_errors=True)


def default_block_bytes(paths: Sequence[Path], workers: int, *, min_bytes: int | None = None) -> int:
    """The block size :func:`score_files_dask` uses by default: the inputs in ``BLOCKS_PER_WORKER``
    blocks per worker thread, at least ``min_bytes`` (default
    :data:`pipeline.core.blocks.MIN_BLOCK_BYTES`; the benchmark splits its small file with 1).

    The size is that of the data, headers left out, rounded down: a planner makes as many blocks
    as whole block sizes fit in a file's data, so one CSV gets exactly that many blocks, after
    its small leading ones (``plan_blocks``' ``lead``, one per worker thread). A size rounded
    up, or counting the header, made one block fewer, and a worker waited on the other's second
    block: 2 workers scored one file 1.6x faster than one instead of about 1.9x."""
    total = sum(Path(p).stat().st_size - (0 if is_parquet(p) else csv_data_start(p))
                for p in paths)
    return max(MIN_BLOCK_BYTES if min_bytes is None else min_bytes, total // (BLOCKS_PER_WORKER * max(workers, 1)))


_Scored = tuple[list[tuple[int, FileBlock]], list[_BlockResult]]  # (file, block) units and their results


def _in_order(units: list[tuple[int, FileBlock]], results: list[_BlockResult]) -> _Scored:
    """``units`` and their results in input order (file, then first row); a later result for a unit replaces an earlier one."""
    by_unit = {(r.file, r.first_row): r for r in results}
    units = sorted({(i, b.first_row): (i, b) for i, b in units}.values(), key=lambda u: (u[0], u[1].first_row))
    return units, [by_unit[(i, b.first_row)] for i, b in units]


def _score_units(submit: Callable[..., _Scored], planned: Iterator[tuple[int, FileBlock]]) -> _Scored:
    """First pass: every planned block; a file one of whose blocks could not be read alone is scored again unsplit."""
    units, results = submit(planned, {}, "pass1")
    whole = sorted({r.file for r in results if r.whole_file})
    if whole:
        units = [u for u in units if u[0] not in whole] + [(i, FileBlock()) for i in whole]
        results = [r for r in results if r.file not in whole] + submit([(i, FileBlock()) for i in whole], {},
                                                                          "whole")[1]
    return _in_order(units, results)


def score_files_dask(inputs: Sequence[str | Path] | str | Path, output_dir: str | Path,
                     model_source: str | Path | None = None, *, client: "Client", fmt: str = "parquet",
                     chunk_rows: int = CHUNK_ROWS, block_bytes: int | None = None, retries: int = 2,
                     warn: Callable[[str], None] | None = None) -> ScoreSummary:
    """Score every row of ``inputs`` on a Dask cluster into a folder of part files.

    Parameters
    ----------
    inputs : path, glob, or sequence of them
        CSV or Parquet files (by extension); a glob's matches are sorted, and one that matches
        nothing is an error. Files, and blocks of large files, are scored in parallel, one task
        per block.
    output_dir : path
        A new folder (it must not exist). It gets ``part-<file>-<chunk>.<fmt>``, one per chunk
        (numbered within its file, so the names do not depend on the blocks), named so that
        sorting the names gives input order, and ``_rejects.csv`` (the rejected
        rows, whole, after ``reject_file``, ``reject_row`` and ``reject_reason``; only the header
        when every row was scored).
    model_source : path or MLflow URI, optional
        Default: the project's ``models/``. Only this string goes to the workers; each loads the
        model once (hash-checked) and reuses it for every task.
    client : distributed.Client
        The cluster to run on (see :func:`dask_client`).
    fmt : {"parquet", "csv"}, default="parquet"
        Format of the part files.
    chunk_rows : int, default=CHUNK_ROWS
        Rows per chunk, as in :func:`pipeline.serve.batch.score_files`.
    block_bytes : int, optional
        About how many bytes of a file one task scores: a file of at least twice this is split
        into blocks of whole chunks. Default: the inputs' total size over
        ``BLOCKS_PER_WORKER`` (2) blocks per worker thread of ``client``, and at least
        :data:`pipeline.core.blocks.MIN_BLOCK_BYTES` (64 MB), so small files stay whole. A CSV is
        read on the driver up to where its last block starts, to find where its blocks start (a
        pass that only counts newlines and quotes; blocks are submitted as they are found, and
        until every worker thread has one, a split CSV file's blocks are a sixteenth of this
        size, so that no worker waits while the pass reads a whole block); its rows are then
        read by the workers.
    retries : int, default=2
        Retries of a task that raised an ``OSError`` or a ``MemoryError`` (a file system or a
        worker's memory failing for a moment). A task whose worker died is rerun by the scheduler
        (``distributed.scheduler.allowed-failures`` times). Input errors are not retried, nor is
        any other error (it would only fail again): it ends the job at once.
    warn : callable, optional
        Called with each warning (columns that are not case fields).

    Returns
    -------
    ScoreSummary
        Rows scored, rows rejected, seconds. Every row is in exactly one part file (with its
        ``file`` and ``row``) or in ``_rejects.csv``; a duplicate ``case_id``, within a file or
        across blocks and files, is rejected as by the pandas engine (a second pass on the driver
        compares the hashes of each block's ids and rescores the few blocks that repeat an
        earlier id). A split file whose block cannot be read on its own (an input error, or
        rows not as planned) is scored again unsplit, which reports its error as the pandas
        engine does.

    Raises
    ------
    BatchInputError
        An input is missing, unreadable or lacks a required column, or ``output_dir`` exists.
    DaskJobError
        A task failed with an unexpected error, or still failed after its retries (for example
        its worker was killed repeatedly); the message names the input. In both cases no output
        folder is left behind.
    pipeline.core.errors.StoppedAfterOutput
        A stop (Ctrl-C, or a signal the caller turns into one) came as the folder was renamed into
        place or once it was (as the temporary one was removed, in a warning): the folder is
        whole, and the message says so; its ``summary`` counts the rows scored and rejected.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt == {fmt!r}, must be one of {FORMATS}.")
    if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows == {chunk_rows!r}, must be an integer >= 1.")
    if block_bytes is not None and (not isinstance(block_bytes, (int, np.integer)) or block_bytes < 1):
        raise ValueError(f"block_bytes == {block_bytes!r}, must be None or an integer >= 1.")
    start = time.perf_counter()
    paths, target = _expand_inputs(inputs), Path(output_dir)
    labels = [file_label(p) for p in paths]
    columns = complete_columns(paths)  # every input complete before any block is scored
    # the workers open the inputs by name: none may change meanwhile (taken after the opening above,
    # which refreshes a network file system's cached attributes)
    states = [file_state(p) for p in paths]
    has_ids = [ID_COLUMN in {normalise_header(c) for c in cols} for cols in columns]
    rschema = reject_schema(columns)
    model = _model_path(model_source)
    digest = get_model(model).digest  # checked here; each worker's load must give the same files
    code = code_digest()  # and each worker must run this code
    if os.path.lexists(target):  # a link to nothing too: the folder could not be renamed onto it
        raise BatchInputError(f"{target}: already exists; the dask engine writes a new folder and never "
                              "overwrites one (remove it or choose another name).")
    if not target.parent.is_dir():
        raise BatchInputError(f"{target.parent}: no such folder for the output.")
    threads = sum(client.nthreads().values())
    if block_bytes is None:
        block_bytes = default_block_bytes(paths, threads)
    tmp = temp_folder(target, spare=paths).absolute()  # workers may not share the driver's working directory
    run = uuid.uuid4().hex[:8]
    id_column = ID_COLUMN if any(has_ids) else "row"
    last_chunks = [_last_chunk(p, int(chunk_rows)) for p in paths]  # the digits of each file's part names

    def submit(units: Iterable[tuple[int, FileBlock]], earlier: dict[int, np.ndarray], stage: str) -> _Scored:
        futures, submitted = {}, []
        for unit, (i, block) in enumerate(units):  # each is submitted as soon as it is planned
            submitted.append((i, block))
            key = f"kneepain-score-{stage}-{run}-{i:05d}-{block.first_row}"
            futures[client.submit(_score_block, i, labels[i], str(paths[i].resolve()), block, model, str(tmp),
                                  fmt=fmt, chunk_rows=int(chunk_rows), id_column=id_column,
                                  earlier=earlier.get(unit, np.empty(0, dtype=np.uint64)), rschema=rschema,
                                  digest=digest, code=code, last=(len(paths) - 1, last_chunks[i]), key=key,
                                  retries=retries)] = labels[i]
        return submitted, gather(client, futures)

    def planned() -> Iterator[tuple[int, FileBlock]]:
        made = 0  # until every worker thread has a block, a split CSV file starts with small ones (plan_blocks' lead)
        for i, path in enumerate(paths):
            for block in plan_blocks(path, chunk_rows=int(chunk_rows), block_bytes=block_bytes,
                                     lead=max(0, threads - made)):
                made += 1
                yield i, block

    def unchanged() -> None:  # every input as the job found it (one removed since was read whole, as it was)
        for label, path, before in zip(labels, paths, states):
            if path.exists():
                refuse_changed(path, before, label)

    # a stop once the folder is in place (as the temporary one is removed, or in a warning) says that it is whole
    with stops_after_output(f"{target} was written in full") as complete:
        try:
            try:
                units, ordered = _score_units(submit, planned())
                repeated = _cross_block_duplicates(ordered)
                if repeated:  # their first attempts' parts are replaced: removed before the second pass writes
                    _discard(tmp, [ordered[u] for u in repeated])
                    again = submit([units[u] for u in sorted(repeated)],
                                   {n: repeated[u] for n, u in enumerate(sorted(repeated))}, "pass2")[1]
                    ordered = _in_order(units, ordered + again)[1]
            except BatchInputError:
                unchanged()  # a file rewritten meanwhile fails the task that opens it: said as the change it is
                raise
            unchanged()
            summary = ScoreSummary(files=labels, rows_scored=sum(r.rows_scored for r in ordered),
                                   rows_rejected=sum(r.rows_rejected for r in ordered),
                                   seconds=time.perf_counter() - start)  # for a stop once the folder is in place
            _publish(tmp, ordered, target, rschema, lambda: complete(summary))
            remove_temp_folder(tmp)  # with what other attempts left there
        except DaskJobError as err:
            remove_temp_folder(tmp)
            raise _named_as_output(err, tmp, target) from err.__cause__
        except BaseException:
            remove_temp_folder(tmp)
            raise
        ignored = {r.file: r.ignored for r in reversed(ordered) if r.ignored}
        for i, label in enumerate(labels):
            if i in ignored:
                summary.warnings.append(ignored_columns_message(ignored[i], label))
                if warn:
                    warn(summary.warnings[-1])
        summary.seconds = time.perf_counter() - start
    return summary
