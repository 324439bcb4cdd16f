"""Child processes that leave the stop signals to the job that started them."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager

__all__ = ["die_with_parent", "signals_blocked"]


@contextmanager
def signals_blocked(signals: Collection[int]) -> Iterator[None]:
    """``signals`` blocked in this thread while inside.

    A process started meanwhile (by this thread, or by a thread it starts meanwhile) inherits the
    block, so none of them reaches it while it imports, where it printed a traceback of its own
    around the job's one-line stop; its own code may then ignore them. One sent to this process
    meanwhile goes to another of its threads, or waits until the block ends: it is never lost.
    multiprocessing unblocks SIGINT and SIGTERM in the thread that starts its resource tracker, so
    the tracker is started first, with SIGHUP blocked (it ignores SIGINT and SIGTERM itself): a
    closed terminal's SIGHUP to the process group killed it, and the job's end then printed the
    tracebacks of the one started in its place ("process died unexpectedly, relaunching")."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()  # once per process: a tracker already running is kept
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def die_with_parent(parent: int) -> None:
    """In a child process: be killed when ``parent``, the process that started it, ends, however it
    ends (Linux; elsewhere nothing). A child that ignores the stop signals outlived a job killed
    outright (out of memory, ``kill -9``), for ever, blocked sending a result nobody would read."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl to call: as elsewhere
        return
    if os.getppid() != parent:  # it ended before the call above
        os._exit(1)
