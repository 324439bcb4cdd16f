"""Inputs that give their bytes once, standard input (``-``) and pipes given by name
(``<(zcat cases.csv.gz)``, a named pipe, ``/dev/stdin``), copied to temporary files before a job
reads them: the readers read a file more than once (its header first, then its records, and a
record longer than a block again)."""

from __future__ import annotations

import io
import os
import select
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO, cast

from pipeline.core.casefiles import PARQUET_FIX, complete_columns
from pipeline.core.errors import BatchInputError
from pipeline.core.files import file_label, in_temporary_folder, is_parquet, is_pipe, standard_stream_closed
from pipeline.serve.guard import (
    refuse_repeated_inputs,
    refuse_same_file,
    refuse_stdin_source,
    signals_deferred,
    stop_at_once_on_signals,
)

__all__ = ["STDIN_LABEL", "StandardInput", "spooled_inputs"]

StandardInput = BinaryIO | TextIO  # what a job reads ``-`` from: bytes, or text written as UTF-8

STDIN_LABEL = "<stdin>"  # standard input's name in rejects and messages
_STDIN_PARQUET_FIX = "save it to a file with a .parquet name and give that file (standard input is read as CSV only)"
_PIPE_PARQUET_FIX = ("give the file itself (a pipe is read as CSV unless its name ends in .parquet, and "
                     "<(...)'s never does)")
_SPOOLED = "kneepain-stdin.csv"
_SPOOL_PREFIX = "kneepain-inputs-"
_WAIT_SECONDS = 0.2  # how long a copy waits for bytes before it looks for a stop


@contextmanager
def spooled_inputs(inputs: Sequence[str | Path], standard_input: Callable[[], StandardInput],
                   outputs: Sequence[tuple[str, Path]], lock: Callable[[], AbstractContextManager]
                   ) -> Iterator[tuple[list[Path], list[str], list[list[str]]]]:
    """The inputs as files to read, their names in messages and rows (as given; standard input is
    :data:`STDIN_LABEL`) and their columns (:func:`pipeline.core.casefiles.complete_columns`),
    with the job's locks (``lock()``) held. No input may be one of ``outputs``. ``-`` is
    replaced by a temporary copy of ``standard_input()``, and a pipe by a copy of what it gives,
    all read at once to their ends before any row is scored (one process may feed several:
    ``tee``, a script that writes two named pipes in turn) and removed afterwards, whatever stops
    the job. A pipe is CSV unless its name ends in ``.parquet``; standard input is CSV.

    Before anything is read from a pipe or standard input, what can be told without their bytes
    is: an input given twice (a pipe gives its rows once), standard input redirected from one of
    ``outputs``, a pipe that cannot be opened, the other inputs' problems
    (:func:`pipeline.core.casefiles.complete_columns`), one of them that is one of ``outputs``,
    and another job holding the job's locks, which are then held until the job ends."""
    if sum(str(p) == "-" for p in inputs) > 1:
        raise BatchInputError("-: standard input can be read once; give '-' at most once.")
    labels = [STDIN_LABEL if str(p) == "-" else file_label(p) for p in inputs]
    copied = [str(p) == "-" or is_pipe(p) for p in inputs]
    files = [Path(p) for p, copy in zip(inputs, copied) if not copy]
    if not any(copied):
        refuse_repeated_inputs(files)
        refuse_same_file(files, outputs)
        columns = complete_columns(files)  # every input readable and complete before anything is written
        with lock():
            yield files, labels, columns
        return
    source = None
    if any(str(p) == "-" for p in inputs):
        source = standard_input()
        if getattr(source, "closed", False):
            raise standard_stream_closed("input")
        refuse_stdin_source(source, outputs)
    refuse_repeated_inputs([Path(p) for p in inputs if str(p) != "-"], source)
    refuse_same_file(files, outputs)
    file_columns = complete_columns(files)
    what = ("the copy of standard input" if all(str(p) == "-" for p, copy in zip(inputs, copied) if copy)
            else "the copies of the inputs read from pipes")
    folder: str | None = None
    # a stop signal from here on raises where the job is, and the copies are removed however it ends
    pipes = [(p, label) for p, label, copy in zip(inputs, labels, copied) if copy]
    for given, label in pipes:  # opening a pipe wakes its writer, whose rows a later refusal would lose
        if str(given) != "-" and not os.access(given, os.R_OK):
            raise BatchInputError(f"{label}: cannot read: Permission denied.")
    with ExitStack() as held, stop_at_once_on_signals():
        try:
            held.enter_context(lock())
            sources, opened = held.enter_context(_opened(pipes, source))
            with in_temporary_folder(what):
                folder = tempfile.mkdtemp(prefix=_SPOOL_PREFIX)
            paths = [Path(folder) / (_SPOOLED if str(p) == "-" else
                                     f"pipe-{i}{'.parquet' if is_parquet(p) else '.csv'}")
                     if copy else Path(p) for i, (p, copy) in enumerate(zip(inputs, copied))]
            with in_temporary_folder(what):
                _copy_all(sources, [path for path, copy in zip(paths, copied) if copy], opened)
            try:
                copies, others = (iter(complete_columns([path for path, copy in zip(paths, copied) if copy])),
                                  iter(file_columns))
                yield paths, labels, [next(copies) if copy else next(others) for copy in copied]
            except BatchInputError as err:  # an input is named as the user gave it, not by its copy
                for p, path, label, copy in zip(inputs, paths, labels, copied):
                    if copy and str(path) in str(err):
                        fix = _STDIN_PARQUET_FIX if str(p) == "-" else _PIPE_PARQUET_FIX
                        raise BatchInputError(str(err.naming(str(path), label)).replace(PARQUET_FIX, fix)) from err
                raise
        finally:
            if folder is not None:
                try:
                    with signals_deferred():  # a second stop signal waits until the copies are gone
                        shutil.rmtree(folder, ignore_errors=True)
                finally:  # one that came as the wait began
                    shutil.rmtree(folder, ignore_errors=True)


class _Source(NamedTuple):
    fd: int
    name: str  # in a message: the input as given
    what: str  # "standard input" or "the pipe"
    head: bytes = b""  # what a reader over the descriptor had already taken from it, written first


@contextmanager
def _opened(pipes: list[tuple[str | Path, str]], stdin: StandardInput | None
            ) -> Iterator[tuple[list[_Source | StandardInput], list[int]]]:
    """Each ``(given, label)`` opened to be read, and the descriptors opened here (a copy closes
    each at its end; the rest are closed afterwards): ``-`` as ``stdin`` (:func:`_standard_source`);
    a pipe without waiting for its writer."""
    opened: list[int] = []
    sources: list[_Source | StandardInput] = []
    try:
        for given, label in pipes:
            if str(given) == "-":
                assert stdin is not None
                sources.append(_standard_source(stdin))
                continue
            try:  # a pipe opened so is read once a writer has written or come and gone (Linux)
                opened.append(os.open(given, os.O_RDONLY | os.O_NONBLOCK))
            except OSError as err:
                raise BatchInputError(f"{label}: cannot read: {err.strerror or err}.") from err
            sources.append(_Source(opened[-1], label, "the pipe"))
        yield sources, opened
    finally:
        for fd in opened:
            os.close(fd)


def _standard_source(stdin: StandardInput) -> _Source | StandardInput:
    """Standard input's stream, to be copied by its descriptor where its bytes are the
    descriptor's: a raw file or socket (``io.FileIO``, ``socket.SocketIO``), or a buffered reader
    over one (``sys.stdin.buffer``, ``open(path, "rb")``, a subprocess's ``stdout``,
    ``socket.makefile("rb")``), with what its buffer already holds taken first, without waiting.
    Any other stream is read through its own ``read``: ``gzip.open``, ``io.BytesIO``, and text
    (``sys.stdin``, ``open(path)``, ``io.StringIO``: the text it gives, as it decodes it, written
    as UTF-8), to its end before the pipes are read: a process that feeds it and a pipe of the
    same job in turn waits for ever."""
    raw = getattr(stdin, "raw", stdin)
    if not isinstance(raw, (io.FileIO, socket.SocketIO)):
        return stdin
    if not stdin.readable():
        raise _unreadable(io.UnsupportedOperation("not readable"))
    fd = raw.fileno()
    if stdin is raw:
        return _Source(fd, "-", "standard input")
    try:  # a buffered reader: the bytes it holds, without waiting for more
        blocking = os.get_blocking(fd)
        try:
            os.set_blocking(fd, False)
            reader = cast(io.BufferedReader, stdin)
            head = reader.read(len(reader.peek(0)))
        finally:
            os.set_blocking(fd, blocking)
    except BlockingIOError:
        head = b""
    except OSError as err:
        raise _unreadable(err) from err
    return _Source(fd, "-", "standard input", head)


def _unreadable(err: BaseException, source: str = "-", what: str = "standard input") -> BatchInputError:
    """An input's own failure to be read (not the copy's: a full temporary folder)."""
    if isinstance(err, io.UnsupportedOperation):
        return BatchInputError(f"{source}: cannot read {what}: the stream given is not open for reading.")
    return BatchInputError(f"{source}: cannot read {what}: {getattr(err, 'strerror', None) or err}.")


def _copy_stream(source: StandardInput, target: BinaryIO) -> None:
    """Copy standard input's stream through its ``read`` (text as UTF-8); a stream that has
    nothing yet (a non-blocking one's ``None``) is waited for."""
    while True:
        try:
            block = source.read(1 << 20)
            if isinstance(block, str):
                block = block.encode("utf-8")
        except (OSError, ValueError) as err:  # gzip's "not a gzipped file"; text UTF-8 cannot hold
            raise _unreadable(err) from err
        if block is None:  # not the end: nothing yet (a stop signal's handler runs in the wait)
            time.sleep(_WAIT_SECONDS / 20)
            continue
        if not block:
            return
        target.write(block)


def _copy_all(sources: list[_Source | StandardInput], targets: list[Path], opened: list[int]) -> None:
    """Copy each source to its target, all at once, in this thread: whichever has bytes is read,
    so a writer blocked on a full pipe the job has not emptied yet cannot hold up the others. A
    pipe in ``opened`` is closed at its end (and taken out), so that a later writer waits, as it
    would for ``cat``, rather than write into a pipe nobody reads. A stop signal's handler runs
    between the waits, of at most :data:`_WAIT_SECONDS`."""
    with ExitStack() as stack:
        files = {}
        poller = select.poll()  # any descriptor number (select() stops at 1024)
        for source, target in zip(sources, targets):
            fh = stack.enter_context(open(target, "wb"))
            if isinstance(source, _Source):
                fh.write(source.head)
                files[source.fd] = (fh, source)
                poller.register(source.fd, select.POLLIN)
            else:
                _copy_stream(source, fh)
        while files:
            for fd, _ in poller.poll(_WAIT_SECONDS * 1000):
                fh, source = files[fd]
                try:
                    block = os.read(fd, 1 << 20)
                except BlockingIOError:  # woken with nothing to read after all
                    continue
                except OSError as err:  # the input's own failure, not the copy's (a full temporary folder)
                    raise _unreadable(err, source.name, source.what) from err
                if block:
                    fh.write(block)
                else:  # its end: ready, and nothing left (an unopened pipe's writer has come and gone)
                    poller.unregister(fd)
                    del files[fd]
                    if fd in opened:
                        opened.remove(fd)
                        os.close(fd)
