"""Inputs that give their bytes once, standard input (``-``) and pipes given by name
(``<(zcat cases.csv.gz)``, a named pipe, ``/dev/stdin``), copied to temporary files before a job
reads them: the readers read a file more than once (its header first, then its records, and a
record longer than a block again)."""

from __future__ import annotations

import io
import os
import select
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from pipeline.core.casefiles import PARQUET_FIX, check_is_file, unsupported_file_type
from pipeline.core.errors import BatchInputError
from pipeline.core.files import file_label, in_temporary_folder, is_case_file, is_parquet, is_pipe
from pipeline.serve.guard import refuse_repeated_inputs, refuse_same_file, refuse_stdin_source, stop_at_once_on_signals

__all__ = ["STDIN_LABEL", "copy_stream", "spooled_inputs"]

STDIN_LABEL = "<stdin>"  # standard input's name in rejects and messages
_STDIN_PARQUET_FIX = "save it to a file with a .parquet name and give that file (standard input is read as CSV only)"
_PIPE_PARQUET_FIX = ("give the file itself (a pipe is read as CSV unless its name ends in .parquet, and "
                     "<(...)'s never does)")
_SPOOLED = "kneepain-stdin.csv"
_SPOOL_PREFIX = "kneepain-inputs-"
_WAIT_SECONDS = 0.2  # how long a copy waits for bytes before it looks for a stop


@contextmanager
def spooled_inputs(inputs: Sequence[str | Path], standard_input: Callable[[], BinaryIO],
                   outputs: Sequence[tuple[str, Path]], lock: Callable[[], AbstractContextManager]
                   ) -> Iterator[tuple[list[Path], list[str]]]:
    """The inputs as files to read, and their names in messages and rows (as given; standard input
    is :data:`STDIN_LABEL`). ``-`` is replaced by a temporary copy of ``standard_input()``, and a
    pipe by a copy of what it gives, all read at once to their ends before any row is scored (one
    process may feed several: ``tee``, a script that writes two named pipes in turn) and removed
    afterwards. A pipe is CSV unless its name ends in ``.parquet``; standard input is CSV.

    Before anything is read from a pipe or standard input, what can be told without their bytes
    is: an input given twice (a pipe gives its rows once), standard input redirected from one of
    ``outputs``, an input file that is missing, no file, of another type or one of ``outputs``,
    and another job holding the job's locks (``lock()``, entered and left)."""
    if sum(str(p) == "-" for p in inputs) > 1:
        raise BatchInputError("-: standard input can be read once; give '-' at most once.")
    labels = [STDIN_LABEL if str(p) == "-" else file_label(p) for p in inputs]
    copied = [str(p) == "-" or is_pipe(p) for p in inputs]
    files = [Path(p) for p, copy in zip(inputs, copied) if not copy]
    if not any(copied):
        refuse_repeated_inputs(files)
        yield files, labels
        return
    source = None
    if any(str(p) == "-" for p in inputs):
        source = standard_input()
        refuse_stdin_source(source, outputs)
    refuse_repeated_inputs([Path(p) for p in inputs if str(p) != "-"], source)
    for path in files:
        check_is_file(path)
        if not is_case_file(path):
            raise unsupported_file_type(path)
    refuse_same_file(files, outputs)
    with lock():
        pass
    what = ("the copy of standard input" if all(str(p) == "-" for p, copy in zip(inputs, copied) if copy)
            else "the copies of the inputs read from pipes")
    with in_temporary_folder(what):
        spool = tempfile.TemporaryDirectory(prefix=_SPOOL_PREFIX)
    with spool as folder:
        paths = [Path(folder) / (_SPOOLED if str(p) == "-" else f"pipe-{i}{'.parquet' if is_parquet(p) else '.csv'}")
                 if copy else Path(p) for i, (p, copy) in enumerate(zip(inputs, copied))]
        # the handlers first: a signal that comes once a copy exists (what a caller may wait for) removes it
        with in_temporary_folder(what), stop_at_once_on_signals():
            _copy_all([(p, path, label) for p, path, label, copy in zip(inputs, paths, labels, copied) if copy],
                      source)
        try:
            yield paths, labels
        except BatchInputError as err:  # an input is named as the user gave it, not by its copy
            for p, path, label, copy in zip(inputs, paths, labels, copied):
                if copy and str(path) in str(err):
                    fix = _STDIN_PARQUET_FIX if str(p) == "-" else _PIPE_PARQUET_FIX
                    raise BatchInputError(str(err.naming(str(path), label)).replace(PARQUET_FIX, fix)) from err
            raise


def _copy_all(copies: list[tuple[str | Path, Path, str]], stdin: BinaryIO | None) -> None:
    """Copy each ``(given, target, label)``: one in this thread; several at once, a thread each, so
    that a writer blocked on a full pipe the job has not reached yet cannot hold up the others.
    The first failure (by the inputs' order), or a stop signal in this thread, ends them all."""
    if len(copies) == 1:
        _copy_input(*copies[0], stdin)
        return
    stop = threading.Event()
    failures: dict[int, BaseException] = {}

    def run(i: int, given: str | Path, target: Path, label: str) -> None:
        try:
            _copy_input(given, target, label, stdin, stop)
        except BaseException as err:  # raised again in the job's thread
            failures[i] = err
            stop.set()

    threads = [threading.Thread(target=run, args=(i, *copy), daemon=True, name=f"kneepain-copy-{i}")
               for i, copy in enumerate(copies)]
    for thread in threads:
        thread.start()
    try:
        _wait(threads, stop, copies)
    finally:
        if any(thread.is_alive() for thread in threads):  # stopped here: the copies stop too
            stop.set()
            _wait(threads, stop, copies)
    if failures:
        raise failures[min(failures)]


def _wait(threads: list[threading.Thread], stop: threading.Event, copies: list[tuple[str | Path, Path, str]]) -> None:
    """Wait for the copying ``threads`` to end, a little at a time (a stop signal's handler runs
    between the waits); once ``stop`` is set, release any still waiting for a pipe's writer."""
    while alive := [thread for thread in threads if thread.is_alive()]:
        if stop.is_set():
            for given, _, _ in copies:
                _release_opener(given)
        alive[0].join(_WAIT_SECONDS)


def _release_opener(given: str | Path) -> None:
    """End the wait of a copy still opening the named pipe ``given`` for a writer: open it for
    writing and close it at once (where nobody waits to read, the open fails and nothing is done)."""
    if str(given) == "-":
        return
    try:
        os.close(os.open(given, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _copy_input(given: str | Path, target: Path, label: str, stdin: BinaryIO | None,
                stop: threading.Event | None = None) -> None:
    """Copy standard input (``given`` is ``-``: from ``stdin``) or the pipe ``given`` to ``target``,
    until the end or until ``stop`` is set."""
    with open(target, "wb") as fh:
        if str(given) == "-":
            assert stdin is not None
            copy_stream(stdin, fh, stop=stop)
            return
        try:  # waits for a writer, as `cat` does; a stop signal (or _release_opener) ends the wait
            pipe = open(given, "rb", buffering=0)  # closed by the with below, after the copy
        except OSError as err:
            raise BatchInputError(f"{label}: cannot read: {err.strerror or err}.") from err
        with pipe:
            copy_stream(pipe, fh, label, "the pipe", stop=stop)


def copy_stream(source: BinaryIO, target: BinaryIO, name: str = "-", what: str = "standard input", *,
                stop: threading.Event | None = None, wait: float = _WAIT_SECONDS) -> None:
    """Copy ``source`` (``name``: ``what``, in a message) to ``target``, waiting for data at most
    ``wait`` seconds at a time, until its end or until ``stop`` is set.

    A stop signal that reaches another thread of the process (one of pyarrow's, say) does not
    interrupt the main thread's blocking read, and Python runs its handler only once that read
    returns: with a pipe held open and idle, never. Between waits the handler runs. Read from the
    file descriptor: nothing may have been read from ``source`` before."""
    try:
        fd = source.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stream never blocks
        shutil.copyfileobj(source, target, 1 << 20)
        return
    while stop is None or not stop.is_set():
        try:
            if not select.select([fd], [], [], wait)[0]:
                continue
            block = os.read(fd, 1 << 20)
        except OSError as err:  # the input's own failure, not the copy's (a full temporary folder)
            raise BatchInputError(f"{name}: cannot read {what}: {err.strerror or err}.") from err
        if not block:
            return
        target.write(block)
