"""What keeps a scoring job from destroying or mixing up a user's files.

- :func:`refuse_repeated_inputs`: one file given twice as an input is refused;
  :func:`refuse_same_file`: an output (or its rejects file) that is one of the inputs, by any
  path (relative, through a link), is refused before anything is opened for writing, and so is
  (:func:`refuse_stdin_source`) the file standard input is redirected from (``- -o f < f``), and
  (:func:`refuse_stdout_target`) a file standard output is redirected to that is an input or
  another of the job's files (``f -o - >> f``); :func:`refuse_shared_outputs`: so are two of a
  job's outputs (scores, rejects, texts lookup) that are one file.
- :func:`written_path`: a file to write that is a symbolic link is written through it (the file
  it names is replaced, the link stays); a link to one of the process's own open files
  (``/dev/stdout``, ``/dev/fd/1``) is refused, as the rename would replace that file.
- :func:`output_lock`: one job at a time per output; a second job fails at once (``filelock``,
  an OS lock on a hidden ``.<output>.lock`` beside the output, released if the job dies).
- :func:`stop_on_signals` and :func:`check_stop`: SIGTERM, SIGHUP and Ctrl-C (SIGINT) are noted
  when they arrive and stop the job at its next step (a chunk read, scored or written), so the
  clean-up that removes its temporary files runs and no lock is left half-taken; a second signal
  stops it at once. While standard input and pipes are copied, and while the copies exist,
  :func:`stop_at_once_on_signals` stops it at once: the clean-up is ``with`` blocks (an OS lock
  taken then is released with its file when the process ends), and the copies are removed with
  further signals held off (:func:`signals_deferred`). A stop once the output is in place
  (:func:`stops_after_output`) says so:
  :class:`pipeline.core.errors.StoppedAfterOutput`.
- Temporary files left by a job that was killed outright (SIGKILL, power loss) carry its machine
  and process id; a later job on the same output removes those of dead processes
  (:func:`pipeline.core.files.reclaim_stale_temps`).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from filelock import FileLock, Timeout

from pipeline.core.errors import BatchInputError, StoppedAfterOutput
from pipeline.core.files import is_parquet, link_target

__all__ = ["STOP_SIGNALS", "Interrupted", "OutputBusyError", "OutputInPlace", "check_stop", "output_lock",
           "refuse_open_file", "refuse_repeated_inputs", "refuse_same_file", "refuse_shared_outputs",
           "refuse_stdin_source", "refuse_stdout_target", "signals_deferred", "stop_at_once_on_signals",
           "stop_on_signals", "stops_after_output", "written_path"]

# what stops a job: a terminal's Ctrl-C, `kill`, `timeout` and systemd's SIGTERM, a closed terminal's SIGHUP
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal; ``signum`` says which."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    def __reduce__(self):  # pickled and copied by its signal (tblib, which Dask installs, pickles a context)
        return type(self), (self.signum,)


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a link that loops names no file, and so not the other's
        return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def _another(what: str) -> str:
    """How to give the job's ``what`` (``output``, ``rejects file``, ...) another path."""
    return {"rejects file": "give the rejected rows another file (--rejects PATH)",
            "texts lookup": "choose another output path (with -o -, the lookup is written beside the rejects "
                            "file: give --rejects PATH in another folder)"}.get(what, f"choose another {what} path")


def refuse_same_file(inputs: Sequence[Path], outputs: Sequence[tuple[str, Path]], *, job: str = "scoring",
                     advice: str | None = None) -> None:
    """Raise :class:`BatchInputError` if one of the job's files (``(what, path)``: the output, its
    rejects file, ...) is the same file as an input (``job``: what the message calls the job;
    ``advice``: how to avoid it, by default another path for that file)."""
    for what, out in outputs:
        for src in inputs:
            if _same(src, out):
                raise BatchInputError(f"{out}: the {what} would be the input file {src}: {job} would overwrite "
                                      f"your data; {advice or _another(what)}.")


def refuse_repeated_inputs(inputs: Sequence[Path], stdin: IO[Any] | None = None) -> None:
    """Raise :class:`BatchInputError` if two of the inputs are one file, by any path (``a.csv``
    and ``./a.csv``, overlapping globs, a link), or if standard input (``stdin``, where ``-`` is an
    input) is redirected from one of them: its rows would be scored twice, and without a
    ``case_id`` under the same file name and row numbers. A pipe (a named pipe, ``/dev/stdin``)
    given twice, or also read as ``-``, is refused too: it gives its rows once, so the second
    read would find none. Each input is looked at once."""
    seen: dict[tuple[int, int], Path] = {}
    for path in inputs:
        try:
            found = os.stat(path)
        except OSError:  # a missing input is said to be missing, later
            continue
        if not _read_once_or_more(found):  # a folder or a device is named as what it is, later
            continue
        first = seen.setdefault((found.st_dev, found.st_ino), path)
        if first is not path:
            again = "is given twice as an input" if str(first) == str(path) else f"is the input {first} again"
            why = ("a pipe gives its rows once, so the second read would find none" if stat.S_ISFIFO(found.st_mode)
                   else "its rows would be scored twice")
            raise BatchInputError(f"{path}: {again}, and {why}; give each input once "
                                  "(globs that overlap name a file twice).")
    redirected = _stream_file(stdin) if stdin is not None else None
    source = seen.get((redirected.st_dev, redirected.st_ino)) if redirected is not None else None
    if source is not None and redirected is not None:
        if stat.S_ISFIFO(redirected.st_mode):
            raise BatchInputError(f"-: standard input is the pipe {source}, which gives its rows once; give it once, "
                                  "as - or by its name.")
        raise BatchInputError(f"-: standard input is redirected from the input {source}, and its rows would be "
                              "scored twice; give each input once.")


def _read_once_or_more(found: os.stat_result) -> bool:
    """Whether a file is one an input can repeat: a regular file or a pipe."""
    return stat.S_ISREG(found.st_mode) or stat.S_ISFIFO(found.st_mode)


def _stream_file(stream: IO[Any]) -> os.stat_result | None:
    """What a standard stream reads from or writes to, if it is a regular file or a pipe (a terminal or
    an in-memory stream: None)."""
    try:
        found = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # in memory, or closed (said where it is read)
        return None
    return found if _read_once_or_more(found) else None


def _regular_file_of(stream: IO[Any]) -> os.stat_result | None:
    """The file a standard stream is redirected from or to, if it is a regular file (a pipe, a
    terminal or an in-memory stream: None)."""
    found = _stream_file(stream)
    return found if found is not None and stat.S_ISREG(found.st_mode) else None


def _is_file(path: Path, found: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.stat(path), found)
    except OSError:  # not there yet: not that file
        return False


def refuse_stdin_source(stdin: IO[Any], outputs: Sequence[tuple[str, Path]]) -> None:
    """Raise :class:`BatchInputError` if standard input is read from a file (``< cases.csv``) that
    is one of the job's files (``(what, path)``): the cases would be copied and scored, then the
    file replaced by the scores. A pipe, a terminal or an in-memory stream is no file and passes."""
    source = _regular_file_of(stdin)
    if source is None:
        return
    for what, out in outputs:
        if _is_file(out, source):
            raise BatchInputError(f"{out}: the {what} would be the file standard input is read from: scoring "
                                  f"would overwrite your data; {_another(what)}.")


def refuse_stdout_target(stdout: BinaryIO, inputs: Sequence[Path], outputs: Sequence[tuple[str, Path]],
                         stdin: IO[Any] | None = None) -> None:
    """Raise :class:`BatchInputError` if standard output, where the scored rows go, is redirected to
    a file that is an input (``cases.csv -o - >> cases.csv``: the scores would be appended to the
    cases, and read back as cases), the file standard input is read from, or another of the job's
    files (``(what, path)``: its rejects file or texts lookup, which would replace or remove the
    scored rows). A pipe, a terminal or an in-memory stream passes."""
    target = _regular_file_of(stdout)
    if target is None:
        return
    # `> file` empties the file before the command starts: nothing is left to protect, and saying so
    # is what the user needs to know
    emptied = (" The file is empty now (`>` empties its file before the command starts): restore it from its "
               "source or a backup." if target.st_size == 0 else "")
    for src in inputs:
        if _is_file(src, target):
            raise BatchInputError(f"-: standard output is redirected to the input file {src}: the scores would be "
                                  f"written into your data; redirect standard output to another file.{emptied}")
    source = _regular_file_of(stdin) if stdin is not None else None
    if source is not None and os.path.samestat(source, target):
        raise BatchInputError("-: standard output is redirected to the file standard input is read from: the "
                              f"scores would be written into your data; redirect standard output to another file.{emptied}")
    for what, out in outputs:
        if _is_file(out, target):
            raise BatchInputError(f"-: standard output is redirected to {out}, the job's {what}, which would "
                                  f"replace or remove the scored rows; redirect standard output to another "
                                  f"file, or {_another(what)}.")


def refuse_shared_outputs(outputs: Sequence[tuple[str, Path]]) -> None:
    """Raise :class:`BatchInputError` if two of a job's outputs (``(what, path)``) are one file:
    the second written would replace the first."""
    for i, (first, a) in enumerate(outputs):
        for second, b in outputs[i + 1:]:
            if _same(a, b):
                raise BatchInputError(f"{b}: the {second} would be the same file as the {first} ({a}); give "
                                      "each its own path.")


# a process's own open files, by name: /dev/stdout, /dev/fd/1, /proc/self/fd/1, /proc/1234/task/1234/fd/1
_OPEN_FILE = re.compile(
    r"/(?:dev/(?:fd|stdin|stdout|stderr)|proc/(?:self|thread-self|\d+)(?:/task/\d+)?/fd)(?:/|$)")
_MAX_LINKS = 40  # as Linux follows at most 40 links in one path
_STREAMS = ((1, "output"), (2, "error"))  # written to: renaming onto them loses what was written


def _hint(what: str) -> str:
    return "write to standard output with `-o -`" if what == "output" else f"give the path of a file for the {what}"


def refuse_open_file(path: Path, what: str) -> None:
    """Refuse a name for one of the job's own open files (:func:`written_path`), by its name or
    through links, and a link that leads back to itself; before any other check of ``path``,
    whose message would not point to ``-o -``."""
    here = Path(os.path.abspath(path))
    for _ in range(_MAX_LINKS + 1):  # the file, then at most _MAX_LINKS links
        for name in (here, Path(os.path.realpath(here.parent)) / here.name):  # /proc/self/fd by a folder's link too
            if _OPEN_FILE.match(name.as_posix()):
                raise BatchInputError(f"{path}: names an open file of this process ({name}), which the {what} would "
                                      f"be renamed onto; {_hint(what)}.")
        if not here.is_symlink():
            return
        here = Path(os.path.normpath(here.parent / os.readlink(here)))
    raise BatchInputError(f"{path}: is a symbolic link that leads back to itself (or through more than "
                          f"{_MAX_LINKS} links), so the {what} has no file to be written to; give the path of "
                          "a file.")


def written_path(path: Path, what: str) -> Path:
    """The file a job writes for ``path``: where ``path`` is a symbolic link, the file the link names
    (its folder gets the temporary file, and the rename replaces that file, not the link).

    A job writes each file beside its place and renames it there, so a name for one of the job's
    own open files (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``, also
    through a linked folder) would have that file (the terminal's, the shell's redirection)
    replaced, or under root the system's link itself: refused, saying to use ``-o -`` for
    standard output; so is any path to the file a standard stream is redirected to. A link to a
    file of another type (``out.csv`` naming ``real.parquet``) is refused: the job would write the
    type of one name into the other."""
    refuse_open_file(path, what)
    target = link_target(path)
    for fd, stream in _STREAMS:
        try:
            redirected = os.fstat(fd)
        except OSError:  # a stream that is closed
            continue
        if _is_file(target, redirected):
            raise BatchInputError(f"{path}: is the file standard {stream} is redirected to, which the {what} would be "
                                  f"renamed onto; {_hint(what)}.")
    if target is not path and is_parquet(target) != is_parquet(path):
        raise BatchInputError(f"{path}: is a link to {target}, a file of another type; the {what} is written in the "
                              f"type its name says: give the file itself, or a name of its type.")
    return target


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


class OutputBusyError(BatchInputError):
    """Another job holds the lock of a file this job would write."""


@contextmanager
def output_lock(output: Path, what: str = "output") -> Iterator[None]:
    """Hold the lock of the job's ``what`` (its output, its rejects file) for the job; fail at once
    (:class:`OutputBusyError`) if another job holds it."""
    lock = FileLock(lock_path(output), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusyError(f"{output}: another kneepain job is writing this {what} (it holds "
                              f"{lock_path(output)}); wait for it to finish or {_another(what)}.") from None
    except OSError as err:
        if os.path.isdir(lock_path(output)):  # in the way, not a folder that cannot be written
            raise BatchInputError(f"{output}: cannot write the {what}: its lock file's path {lock_path(output)} is a "
                                  f"folder; remove it (a kneepain lock is a file) or {_another(what)}.") from err
        raise BatchInputError(f"{output}: cannot write the {what}: its lock file {lock_path(output)} cannot be "
                              f"made ({err.strerror or err}); {_another(what)} in a folder you can write to."
                              ) from err
    try:
        yield
    finally:
        lock.release()


_received: list[int] = []  # stop signals noted by stop_on_signals' handler
_acted: list[int] = []  # those raised as Interrupted (by check_stop, or a second signal at once)


def _note(signum: int, frame) -> None:
    if _received:  # a second signal: the user means now
        _acted.append(signum)
        raise Interrupted(signum)
    _received.append(signum)


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived since :func:`stop_on_signals` began."""
    if _received:
        _acted.append(_received[0])
        raise Interrupted(_received[0])


def _stop_now(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def _signals_to(handler, signums: Sequence[int]) -> Iterator[None]:
    """``handler`` for ``signums`` for the duration (restored after), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def stop_at_once_on_signals(signums: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Turn ``signums`` into :class:`Interrupted` where the main thread is, for a step whose
    clean-up is ``with`` blocks (copying standard input and pipes to temporary files); no-op
    elsewhere than the main thread."""
    with _signals_to(_stop_now, signums):
        yield


@contextmanager
def signals_deferred(signums: Sequence[int] = STOP_SIGNALS, *, second_at_once: bool = False) -> Iterator[None]:
    """Hold ``signums`` off for a step that must finish (removing a job's temporary copies,
    renaming its files into place), then raise :class:`Interrupted` for the first that came, if
    any; no-op elsewhere than the main thread. An exception from the body goes on as it is. With
    ``second_at_once``, a second signal raises at once, for a step that may hang (a local Dask
    cluster's start: a stop held off there could otherwise only be killed)."""
    came: list[int] = []

    def note(signum: int, frame) -> None:
        if came and second_at_once:
            raise Interrupted(signum)
        came.append(signum)

    with _signals_to(note, signums):
        yield
    if came:
        raise Interrupted(came[0])


class OutputInPlace:
    """Called (``complete(summary)``) as soon as a job's output is in place; ``done`` says whether
    it was, and ``summary`` keeps what the job reported then (rows scored and rejected), for a stop
    from then on to carry. In the main thread, where stops land, it also marks the enclosing
    :func:`stops_after_output` blocks opened ``for_one_job`` (a command's, around the library
    call that writes its one output)."""

    def __init__(self, for_one_job: bool = False) -> None:
        self.done, self.for_one_job, self.summary = False, for_one_job, None

    def __call__(self, summary: Any = None) -> None:
        self.done, self.summary = True, summary
        if threading.current_thread() is threading.main_thread():
            for block in _open_blocks:
                if block.for_one_job:
                    block.done, block.summary = True, summary


_open_blocks: list[OutputInPlace] = []  # the stops_after_output blocks the main thread is in


@contextmanager
def stops_after_output(what: str, *, for_one_job: bool = False) -> Iterator[OutputInPlace]:
    """Give a job a ``complete()`` (:class:`OutputInPlace`) to call as soon as its output is in
    place. A stop from then to the block's end (one held off as its files were renamed, a second
    signal while its workers stop, one raised as its temporary copies are removed or its cluster
    shuts down, or as :func:`stop_on_signals` ends) raises :class:`StoppedAfterOutput`, ``"<the
    stop> after <what>"``, with the ``summary`` given to ``complete()``, rather than a stop whose
    caller says that no output was written. Before ``complete()``, a stop goes on as it is.
    ``for_one_job``: the block is around one job, whose own ``complete()`` marks it too."""
    complete, main = OutputInPlace(for_one_job), threading.current_thread() is threading.main_thread()
    try:
        if main:
            _open_blocks.append(complete)
        yield complete
    except KeyboardInterrupt as err:
        if not complete.done or isinstance(err, StoppedAfterOutput):
            raise
        raise StoppedAfterOutput(str(err) or "interrupted", what, complete.summary) from None
    finally:
        if main and complete in _open_blocks:
            _open_blocks.remove(complete)


@contextmanager
def stop_on_signals(signums: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Note ``signums`` in the main thread for the duration; :func:`check_stop` turns one into
    :class:`Interrupted` (elsewhere than the main thread: no-op).

    The handler only notes the signal: an exception raised from a handler lands wherever the main
    thread is, between a lock's acquire and the ``with`` that releases it too (inside
    ``concurrent.futures``, a lock held for ever, and a job that never exits). The job calls
    :func:`check_stop` between its steps instead. A second signal raises at once. One noted
    since the last :func:`check_stop` raises as the block ends without an error, once the
    handlers before it are back (a signal from then on meets them): no signal is lost.
    """
    main = threading.current_thread() is threading.main_thread()
    if main:
        _received.clear()
        _acted.clear()
    try:
        with _signals_to(_note, signums):
            yield
        if main and _received and not _acted:
            raise Interrupted(_received[0])
    finally:
        if main:
            _received.clear()
            _acted.clear()
