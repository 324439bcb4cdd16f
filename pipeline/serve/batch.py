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

import errno
import functools
import os
import stat
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from pipeline.core.casefiles import iter_chunks
from pipeline.core.errors import BatchInputError
from pipeline.core.files import (
    FILE_TYPES_TEXT,
    is_case_file,
    is_parquet,
    is_temporary,
    link_target,
    reclaim_stale_temps,
    regular_stat,
    replace_keeping_mode,
    replace_together,
    standard_stream_closed,
    stdout_bytes,
    tmp_path,
)
from pipeline.core.parsing import ignored_columns_message
from pipeline.core.schema import ID_COLUMN, first_spellings, normalise_header
from pipeline.decision.layer import TEXT_CODE_COLUMNS
from pipeline.serve import CHUNK_ROWS
from pipeline.serve.chunks import ChunkScorer, Done, FileJob, SeenIds, chunk_ids, score_chunk, score_valid, validate_chunk
from pipeline.serve.guard import (
    OutputBusyError,
    check_stop,
    output_lock,
    refuse_open_file,
    refuse_shared_outputs,
    refuse_stdout_target,
    signals_deferred,
    stop_on_signals,
    stops_after_output,
    written_path,
)
from pipeline.serve.loading import LoadedModel
from pipeline.serve.reading import prefetch
from pipeline.serve.shaping import OutputOptions, input_columns, round_floats, select_columns, text_lookup
from pipeline.serve.spool import StandardInput, spooled_inputs
from pipeline.serve.writing import Writer, output_schema, reject_schema, rejected_names

__all__ = ["BatchInputError", "ScoreSummary", "SeenIds", "check_target", "score_chunk", "score_files", "score_valid",
           "validate_chunk", "written_targets"]

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


def score_files(inputs: list[str | Path], output: str | Path, model: LoadedModel, *, chunk_rows: int = CHUNK_ROWS,
                progress: bool = False, warn: Callable[[str], None] | None = None,
                options: OutputOptions | None = None, stdin: StandardInput | None = None,
                stdout: BinaryIO | None = None, rejects: str | Path | None = None, jobs: int = 1,
                stale: Sequence[Path] = ()) -> ScoreSummary:
    """Score every row of ``inputs`` into ``output`` (CSV or Parquet by extension).

    Rejected rows go to ``<output>.rejects.csv`` (or ``rejects``), whole, after their file, row
    and reasons. Both files appear only when the run completes; a stale rejects file from an
    earlier run is removed. The output is locked for the run, and temporary files are removed if
    it is stopped. ``options`` chooses the columns, the float digits and the texts
    (:mod:`pipeline.serve.shaping`); with ``texts="codes"`` the codes' texts go to ``<output>.texts.csv``
    (:data:`STREAM_TEXTS` beside the rejects file for an output ``-``). Two outputs that are one file
    are refused.

    An input ``-`` is CSV read from ``stdin`` (the process's standard input by default; any stream
    that gives the file's bytes, as ``gzip.open`` does, or its text), copied to a temporary file
    first (the reader rereads a record longer than its block). An output ``-`` is CSV written to ``stdout`` as it is scored
    (its rejects default to ``score.rejects.csv`` in the current folder).

    ``jobs`` > 1 parses and scores chunks in that many processes (each holds the model and its
    chunks: about 200 MB more per process); the output is the same, row for row and bit for bit.

    ``stale``: files that describe the output and are written after it (the case mix, a batch
    report); an earlier run's are removed as the new output is put in place, so a run stopped
    between the two leaves none that describes another output.

    Raises
    ------
    BatchInputError
        An input cannot be read or lacks a required column, the output is an input, another job
        holds the output, or the output cannot be written; nothing is written.
    pipeline.core.errors.StoppedAfterOutput
        A stop signal (SIGTERM, SIGHUP, Ctrl-C) came once the output was in place: it is whole,
        the message says so, and its ``summary`` counts the rows scored and rejected. One that
        came before stops the job with :class:`pipeline.serve.guard.Interrupted` (a
        ``KeyboardInterrupt``), and no file is written (with an output ``-``, the rows scored
        before it may have gone out).
    """
    options = options or OutputOptions()
    if not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise BatchInputError(f"jobs == {jobs!r}, must be an integer >= 1.")
    if rejects is not None and str(rejects) == "-":
        raise BatchInputError("--rejects -: the rejected rows go to a file (standard output is the scored rows'); "
                              "give a path.")
    if str(output) == "-":
        return _score_to_stream(inputs, stdout or _standard("output"), model, rejects=Path(rejects or STREAM_REJECTS),
                                chunk_rows=chunk_rows, progress=progress, warn=warn, options=options, stdin=stdin,
                                jobs=jobs)
    output = Path(output)
    refuse_open_file(output, "output")  # /dev/stdout: said so, rather than that it has no file type
    if not is_case_file(output):
        raise BatchInputError(f"{output}: unsupported output type {output.suffix!r}; expected {FILE_TYPES_TEXT}.")
    # the rejects file and lookup are named beside the output's name as given (a link's own folder); the
    # lookup is written, or an earlier run's removed: either way it is no other output's file
    outputs = written_targets([("output", output), ("rejects file", rejects_file(output, rejects)),
                                ("texts lookup", texts_lookup(output))])
    output, rejects_path, lookup = (path for _, path in outputs)

    @contextmanager
    def locked() -> Iterator[None]:
        # the rejects file and the texts lookup are locked too: two jobs may share the rejects file
        # (--rejects), and another job's output may be named as this one's lookup
        with output_lock(output), output_lock(rejects_path, "rejects file"), output_lock(lookup, "texts lookup"):
            yield

    with stops_after_output(f"{output} was written in full") as complete, \
            spooled_inputs(inputs, lambda: stdin or _standard("input"), outputs, locked) as (paths, labels, columns), \
            stop_on_signals():
        for target in (output, rejects_path, lookup):
            reclaim_stale_temps(target, spare=paths)
        summary = _score_locked(paths, labels, columns, output, rejects_path, model, chunk_rows=chunk_rows,
                                progress=progress, warn=warn, options=options, jobs=jobs, lookup=lookup, stale=stale,
                                complete=complete)
    return summary


def rejects_file(output: Path, rejects: str | Path | None = None) -> Path:
    """Where an output's rejected rows go: ``rejects`` if given, else ``<output>.rejects.csv``."""
    return Path(rejects) if rejects is not None else output.with_name(output.name + ".rejects.csv")


def texts_lookup(output: Path) -> Path:
    """An output's lookup of the codes it writes for long texts: ``<output>.texts.csv``."""
    return output.with_name(output.name + ".texts.csv")


STREAM_REJECTS = "score.rejects.csv"
STREAM_TEXTS = "score.texts.csv"  # with an output -, the codes' lookup, beside the rejects file


def _text_lookup_bytes(model: LoadedModel) -> bytes:
    """The codes' texts (``<output>.texts.csv``, or :data:`STREAM_TEXTS`), for a job that writes codes."""
    assert model.decision is not None and model.kb is not None
    return text_lookup(model.decision.text_codes(model.kb)).to_csv(index=False).encode("utf-8")


def _write_lookup(tmp: Path, data: bytes, lookup: Path, *, rename: bool) -> None:
    """Write the texts lookup's bytes to ``tmp`` (with ``rename``, renamed onto ``lookup`` too),
    naming the lookup if that fails (not the output)."""
    try:
        tmp.write_bytes(data)
        if rename:
            replace_keeping_mode(tmp, lookup, regular_stat(lookup))
    except OSError as err:
        raise BatchInputError(f"{lookup}: cannot write the texts lookup: {err.strerror or err}.") from err


def written_targets(outputs: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """A job's files to write (``(what, path)``), each as it is written (:func:`written_path`:
    through a link, to the file it names), each refused if it cannot be (:func:`check_target`),
    and two that are one file refused: all before any row is read."""
    written = [(what, written_path(path, what)) for what, path in outputs]
    for what, path in written:
        check_target(path, what)
    refuse_shared_outputs(written)
    return written


def check_target(path: Path, what: str, *, make_folders: bool = False) -> None:
    """Refuse, before any row is read (or made), a file to write that is a folder, that is there
    and is no regular file (a device such as /dev/null, a pipe, a link to one: the file is written
    beside it and renamed into its place, or an earlier run's removed), or whose folder is missing
    (with ``make_folders``, whose folder cannot be made: a file stands in its path), or whose
    folder cannot be written (read-only, no permission: a probe file is made there and removed;
    found at the end, the earlier run's files were already replaced)."""
    refuse_open_file(path, what)  # /dev/stdout: said so, rather than that its folder takes no files
    if path.is_dir():
        raise BatchInputError(f"{path}: is a folder; give the path of the {what}.")
    try:
        kind = os.stat(path).st_mode
    except OSError:  # not there (or a link to nothing): written new
        kind = None
    if kind is not None and not stat.S_ISREG(kind):
        raise BatchInputError(f"{path}: is not a regular file (a device, a pipe or a socket), and the {what} would "
                              f"be renamed into its place or removed; give the path of a file.")
    blocked = next((p for p in path.parents if os.path.lexists(p) and not p.is_dir()), None)
    if blocked is not None:  # before "no such folder": that folder's name is a file's
        raise BatchInputError(f"{blocked}: is a file, not a folder, so the {what} {path} cannot be written.")
    if not make_folders and not path.parent.is_dir():
        raise BatchInputError(f"{path.parent}: no such folder for the {what}.")
    folder = next(p for p in (path.parent, *path.parent.parents) if p.is_dir())  # where a file or folder is made
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:  # /proc answers "no such file" for any new one
        why = "it takes no new files" if err.errno == errno.ENOENT else (err.strerror or str(err))
        raise BatchInputError(f"{folder}: cannot write there ({why}), so the {what} {path} cannot be written; "
                              "nothing was read or changed.") from None


def _score_to_stream(inputs: list[str | Path], stream: BinaryIO, model: LoadedModel, *, rejects: Path,
                     chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                     options: OutputOptions, stdin: StandardInput | None, jobs: int) -> ScoreSummary:
    outputs = [("rejects file", rejects)]
    if _writes_codes(model, options):
        outputs.append(("texts lookup", rejects.with_name(STREAM_TEXTS)))
    # standard output redirected into an input, standard input's file or the rejects: before anything is
    # read, and named as such before the paths are resolved (which refuses a standard stream's file too)
    reads_stdin = any(str(p) == "-" for p in inputs)
    refuse_stdout_target(stream, [Path(p) for p in inputs if str(p) != "-"], outputs,
                         stdin=(stdin or _standard("input")) if reads_stdin else None)
    outputs = written_targets(outputs)
    rejects, texts_path = outputs[0][1], (outputs[1][1] if len(outputs) > 1 else None)
    with stops_after_output("every row was written to standard output") as complete, \
            spooled_inputs(inputs, lambda: stdin or _standard("input"), outputs,
                           lambda: _stream_lock(rejects, texts_path)) as (paths, labels, columns), stop_on_signals():
        for target in (rejects, texts_path):
            if target is not None:
                reclaim_stale_temps(target, spare=paths)
        summary = _score_locked(paths, labels, columns, None, rejects, model, chunk_rows=chunk_rows, progress=progress,
                                warn=warn, options=options, jobs=jobs, stream=stream, lookup=texts_path,
                                complete=complete)
    return summary


@contextmanager
def _stream_lock(rejects: Path, lookup: Path | None) -> Iterator[None]:
    """The locks of the rejects file and the texts lookup (if one is written), for a job writing to
    standard output."""
    with ExitStack() as stack:
        try:
            stack.enter_context(output_lock(rejects, "rejects file"))
            if lookup is not None:
                stack.enter_context(output_lock(lookup, "texts lookup"))
        except OutputBusyError as err:
            raise OutputBusyError(f"{err} Jobs writing to standard output in one folder share {STREAM_REJECTS} and "
                                  f"{STREAM_TEXTS}: give each its own --rejects PATH in its own folder.") from err
        yield


def _standard(which: str) -> BinaryIO:
    """The process's standard input or output (``which``), as bytes (the output written whole:
    :func:`pipeline.core.files.stdout_bytes`); closed (``<&-``) is an error."""
    if which == "output":
        return stdout_bytes()
    if sys.stdin is None:
        raise standard_stream_closed("input")
    return sys.stdin.buffer


def _as_codes(model: LoadedModel, options: OutputOptions) -> bool:
    """Whether the long texts are written as codes (asked for, and the model has a decision layer)."""
    return options.texts == "codes" and model.decision is not None and model.kb is not None


def _writes_codes(model: LoadedModel, options: OutputOptions) -> bool:
    """Whether the output holds codes, so that it needs the texts lookup: :func:`_as_codes`, and
    one of the coded columns is among those written."""
    coded = TEXT_CODE_COLUMNS if options.columns is None else set(TEXT_CODE_COLUMNS) & set(options.columns)
    return _as_codes(model, options) and bool(coded)


def _kept_columns(columns: list[list[str]], taken: list[str]) -> list[dict[str, str]]:
    """Per input, its columns -> their output names (:func:`input_columns`), named over every
    input's columns at once: one input's ``prediction`` (kept as ``input_prediction``) and
    another's own ``input_prediction`` stay two columns, and ``Note`` and ``note`` are one. A
    rejects file's ``reject_*`` columns are not kept (the rows are scored now: its reasons are
    stale), as they are not written to a new rejects file (:func:`rejected_names`)."""
    columns = [list(rejected_names(cols)) for cols in columns]
    first = first_spellings(columns)
    named = input_columns(list(first.values()), taken)
    return [{c: named[first[normalise_header(c)]] for c in cols if first[normalise_header(c)] in named}
            for cols in columns]


def _shaper(options: OutputOptions, csv: bool) -> Callable[[pa.Table], pa.Table] | None:
    if not csv or options.float_digits is None:
        return None
    return functools.partial(round_floats, digits=options.float_digits)  # a partial pickles, for the processes


def _score_locked(paths: list[Path], labels: list[str], columns: list[list[str]], output: Path | None, rejects_path: Path,
                  model: LoadedModel, *, chunk_rows: int, progress: bool, warn: Callable[[str], None] | None,
                  options: OutputOptions, jobs: int, stream: BinaryIO | None = None,
                  lookup: Path | None = None, stale: Sequence[Path] = (),
                  complete: Callable[[ScoreSummary], None]) -> ScoreSummary:
    """Score ``paths`` (named ``labels`` in messages and rows) into ``output`` (or ``stream``) and
    ``rejects_path``, with the texts ``lookup`` written beside them when the output holds codes
    (else an earlier run's removed): all three are renamed into place together at the end, the
    output last, or none is; ``complete(summary)`` is called as soon as they are
    (:func:`pipeline.serve.guard.stops_after_output`)."""
    summary, start = ScoreSummary(files=labels), time.perf_counter()
    has_ids = any(ID_COLUMN in {normalise_header(c) for c in cols} for cols in columns)
    full = output_schema(ID_COLUMN if has_ids else "row", len(paths) > 1, model.decision is not None,
                         top_k=options.top_k)
    # `file` is taken with one input too: the rows of every output table are stamped with it
    keep_by_file = (_kept_columns(columns, [*full.names, "file"]) if options.keep_input
                    else [{} for _ in columns])
    extra = list(dict.fromkeys(out for keep in keep_by_file for out in keep.values()))
    schema = select_columns(output_schema(ID_COLUMN if has_ids else "row", len(paths) > 1, model.decision is not None,
                                          top_k=options.top_k, extra=extra), options.columns, extra)
    rschema = reject_schema(columns)
    csv_out = output is None or not is_parquet(output)
    shape = _shaper(options, csv_out)
    codes = _as_codes(model, options)
    # removed whenever the run stops, even mid-way
    temporary = ([tmp_path(output)] if output is not None else []) + [tmp_path(rejects_path)]
    # the lookup's temporary name and bytes, when the output holds codes
    texts = (tmp_path(lookup), _text_lookup_bytes(model)) if lookup is not None and _writes_codes(model, options) \
        else None
    if texts is not None:
        temporary.append(texts[0])
    writer: Writer | None = None
    rejects: Writer | None = None
    bar = _progress(progress)
    seen = SeenIds() if has_ids else None
    # chunks are parsed, scored and encoded on other threads (jobs == 1) or in ``jobs`` processes,
    # while this thread reads ahead, finds repeated ids (in order: they depend on earlier chunks)
    # and hands the results to the writers
    scorer = ChunkScorer(model, jobs)
    in_flight: deque[tuple[Future, str]] = deque()
    told: set[str] = set()  # files whose ignored columns were reported

    def finish_one(out: Writer, rejected: Writer) -> None:
        future, name = in_flight.popleft()
        done: Done = scorer.result(future)
        check_stop()
        if done.ignored and name not in told and not options.keep_input:  # kept columns are not ignored
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
        if stream is not None and texts is not None and lookup is not None:
            # before the first row: a reader that stops early (`| head`) still has the codes' texts
            _write_lookup(texts[0], texts[1], lookup, rename=True)
            texts = None
        # created inside the try: a signal that arrives as a file is created still gets it removed
        writer = Writer(output if output is not None else Path("-"), schema, stream=stream)
        rejects = Writer(rejects_path, rschema)
        for path, label, keep in zip(paths, labels, keep_by_file):
            # only the kept columns written (--columns may leave some out) are read, or can reject a row
            keep = {name: out for name, out in keep.items() if out in schema.names}
            blank = tuple(out for out in extra if out not in keep.values())  # other inputs' kept columns
            job = FileJob(label, schema, rschema, options.top_k, keep, blank, codes, shape, csv_out)
            offset = 0
            with prefetch(iter_chunks(path, chunk_rows, name=label)) as chunks:
                for frame, malformed in chunks:
                    check_stop()  # a stop signal acts here and after each chunk is scored (pipeline.serve.guard)
                    ids = chunk_ids(frame, malformed) if seen is not None else None
                    repeated = seen.check_and_add(ids) if seen is not None and ids is not None else None
                    in_flight.append((scorer.submit(job, frame, malformed, offset, repeated), label))
                    # no chunk waits in the pool's queue: one more held there (a chunk's raw frame
                    # and its scoring's working memory) cost about 11 MB of peak RSS at 1M rows
                    # and gained no time, on threads as with --jobs 2
                    if len(in_flight) >= scorer.width:
                        finish_one(writer, rejects)
                    offset += len(frame)
                    bar(len(frame))
        while in_flight:
            finish_one(writer, rejects)
        writer.close()
        rejects.close()
        if texts is not None and lookup is not None:
            _write_lookup(texts[0], texts[1], lookup, rename=False)
        # the last point a stop leaves nothing written: one from here on waits until the files below
        # are renamed, then acts, and says that the output is whole (stops_after_output)
        check_stop()
        with signals_deferred():
            # all in place or none, the files replaced keeping their permissions and group (a private
            # rejects file stays private); the output last: a run killed between the renames leaves
            # no output, never an output whose rejects or texts lookup are missing
            changes: list[tuple[Path | None, Path]] = [(rejects.tmp if summary.rows_rejected else None, rejects_path)]
            if texts is not None and lookup is not None:
                changes.append((texts[0], lookup))
            elif lookup is not None and output is not None:  # an earlier run's lookup would describe codes this output lacks
                changes.append((None, lookup))
            if output is not None:
                # an earlier run's case mix and report describe another output; a link's file is
                # the one written through it
                changes += [(None, link_target(path)) for path in stale]
                changes.append((writer.tmp, output))
            replace_together(changes)
            summary.seconds = time.perf_counter() - start  # for a stop from here on to tell
            complete(summary)
    except BrokenProcessPool as err:
        check_stop()  # the processes got the user's stop signal too (a terminal's, or a process group's)
        written = ("nothing was written" if stream is None else
                   "no file was written; standard output may hold the rows scored before it")
        raise BatchInputError("a scoring process stopped before its chunk was scored (out of memory, or killed); "
                              f"{written}.") from err
    except BrokenPipeError as err:  # `kneepain score - -o - | head`: the reader has gone
        raise BatchInputError("-: the output pipe was closed before all rows were written.") from err
    except OSError as err:  # disk full, a folder in the way, permissions: one clear line, nothing left
        named = err.filename if isinstance(err.filename, str) and not is_temporary(Path(err.filename)) else output
        raise BatchInputError(f"{named or '-'}: cannot write: {err.strerror or err}.") from err
    finally:
        try:
            scorer.shutdown()
        finally:  # a stop signal while the scorers stop still leaves nothing behind
            for w in (writer, rejects):
                try:
                    if w is not None:
                        w.close()
                except (OSError, ValueError, pa.ArrowException, BatchInputError):  # the first error is the one told
                    pass
            for tmp in temporary:
                with suppress(OSError):  # one that cannot be removed is left for the next job (reclaim_stale_temps)
                    tmp.unlink(missing_ok=True)
            bar(None)
    summary.seconds = time.perf_counter() - start
    return summary


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
