"""Standard error as a command's messages use it: never in its output, never its exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from pipeline.core.files import file_label

__all__ = ["messages_lost", "messages_to_stderr", "silence"]


class _Messages:
    """A text stream that writes to ``stream`` until a write fails, and drops what follows.

    A message that cannot be written (``2>/dev/full``, a reader that has gone, ``2>&-``) is lost,
    not an error: a job whose files are written still says so by its exit code. After a failure
    the stream's descriptor is pointed at ``/dev/null``, so that the interpreter's last flush of
    what it holds neither fails nor changes the exit code."""

    def __init__(self, stream: TextIO | None):
        self._stream = stream
        self._broken = stream is None

    @property
    def broken(self) -> bool:
        """Whether writes are being dropped."""
        return self._broken

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                # a file name's bytes that are not UTF-8 as \xNN, as output files name them
                self._stream.write(file_label(text))  # type: ignore[union-attr]
            except (OSError, ValueError):  # ValueError: a stream closed in this process
                self._give_up()
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._stream.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):
                self._give_up()

    def isatty(self) -> bool:
        try:
            return not self._broken and self._stream.isatty()  # type: ignore[union-attr]
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, errors and the like, as the stream has them
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _give_up(self) -> None:
        self._broken = True
        silence(self._stream)


def _to_devnull(fd: int) -> None:
    """Point file descriptor ``fd`` at ``/dev/null`` (opened there if it was closed)."""
    null = os.open(os.devnull, os.O_RDWR)
    if null == fd:  # it was closed, and the lowest free number: it is /dev/null now
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def silence(*streams: Any) -> None:
    """Point each stream's file descriptor at ``/dev/null``, so that flushing it at exit into a
    closed pipe or a full disk neither fails nor changes the exit code (a stream that is ``None``,
    or has no descriptor, is left as it is)."""
    for stream in streams:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        _to_devnull(fd)


def _hold_closed_descriptors() -> None:
    """Give each of the standard file descriptors 0-2 that is closed (``2>&-``) to ``/dev/null``, so
    that no file the command opens takes its number: what a library writes to standard error, or
    a print to a closed standard output, would land in that file. Python's own stream for it stays
    ``None``, so ``-`` still finds it closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _to_devnull(fd)


def messages_lost() -> bool:
    """Whether a message to ``sys.stderr`` has been dropped (within :func:`messages_to_stderr`)."""
    return isinstance(sys.stderr, _Messages) and sys.stderr.broken


@contextmanager
def messages_to_stderr() -> Iterator[None]:
    """Within the block, ``sys.stderr`` is a stream whose failures are dropped (:class:`_Messages`):
    with standard error closed, Python leaves ``sys.stderr`` None, and ``print(..., file=None)``
    writes to standard output, into the CSV a job writes there; with it full or gone, a message
    printed after the output was written made a complete job fatal. Closed standard descriptors
    are held by ``/dev/null`` (:func:`_hold_closed_descriptors`)."""
    _hold_closed_descriptors()
    before = sys.stderr
    sys.stderr = _Messages(before)
    try:
        yield
    finally:
        if isinstance(sys.stderr, _Messages):
            sys.stderr.flush()
        sys.stderr = before
