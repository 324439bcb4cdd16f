"""Child processes that leave the stop signals to the job that started them."""

from __future__ import annotations

import signal
from collections.abc import Collection, Iterator
from contextlib import contextmanager

__all__ = ["signals_blocked"]


@contextmanager
def signals_blocked(signals: Collection[int]) -> Iterator[None]:
    """``signals`` blocked in this thread while inside.

    A process started meanwhile (by this thread, or by a thread it starts meanwhile) inherits the
    block, so none of them reaches it while it imports, where it printed a traceback of its own
    around the job's one-line stop; its own code may then ignore them. One sent to this process
    meanwhile goes to another of its threads, or waits until the block ends: it is never lost.
    multiprocessing unblocks SIGINT and SIGTERM in the thread that starts its resource tracker, so
    the tracker is started first."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
