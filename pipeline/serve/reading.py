"""A background read-ahead of case-file chunks (:func:`pipeline.core.casefiles.iter_chunks`):
parsing CSV in Arrow releases the GIL, so the next chunk is read while this one is scored."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["lean_memory_pool", "prefetch", "reuse_freed_heap"]

# what glibc's malloc keeps above the top of a heap when it grows or trims one (mallopt's M_TOP_PAD)
M_TOP_PAD = -2
HEAP_PAD_BYTES = 64 << 20

T = TypeVar("T")


def lean_memory_pool() -> None:
    """Make Arrow's jemalloc pool the default where this pyarrow has it (a no-op elsewhere).

    Streaming allocates and frees chunk-sized buffers on four threads; jemalloc hands freed memory
    back sooner than the default mimalloc (``kneepain score`` on a 1M-row CSV: 335 MB against
    380 MB peak, for the same time). Process-wide: the command calls it, the library does not.
    """
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pass


def reuse_freed_heap(pad_bytes: int = HEAP_PAD_BYTES) -> bool:
    """Ask glibc's malloc to keep ``pad_bytes`` of freed memory at the top of each heap for reuse
    (``mallopt(M_TOP_PAD)``); False where the C library is not glibc's, and nothing changes.

    Scoring a chunk allocates and frees numpy arrays of a few MB on two threads. By default glibc
    hands the freed top of a heap back to the kernel and faults it in again for the next chunk:
    ``kneepain score`` on a 1M-row CSV took about 450k page faults and 1.4 s of system time, and
    with the pad 100k and 0.8 s, for the same peak RSS (the pad is address space, resident only
    once used). Process-wide: the command calls it, the library does not.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_TOP_PAD, pad_bytes) == 1


@contextmanager
def prefetch(chunks: Iterator[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """The chunks, read ``depth`` ahead on a background thread (parsing CSV in Arrow releases the GIL).

    A context manager: on leaving it, however the loop ended, the reader is stopped and joined
    (it finishes the chunk it is on). A reader still inside Arrow when the process exits
    deadlocks Arrow's own shutdown: the job would never end.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone: drop the item rather than block forever

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)
        finally:
            close = getattr(chunks, "close", None)  # a generator: the reader and its file are released
            if close is not None:  # even if the consumer stopped early
                close()

    def consume() -> Iterator[T]:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    thread = threading.Thread(target=produce, name="kneepain-reader")  # joined below, and at exit
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
