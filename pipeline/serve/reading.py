"""A background read-ahead of case-file chunks (:func:`pipeline.core.casefiles.iter_chunks`):
parsing CSV in Arrow releases the GIL, so the next chunk is read while this one is scored."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["lean_memory_pool", "prefetch", "reuse_freed_heap"]

# glibc's mallopt parameters: what a heap keeps above its top when it grows or trims, and the
# size from which a block gets its own mapping rather than heap memory
M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
HEAP_PAD_BYTES = 64 << 20
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest dynamic threshold on 64-bit machines
# how long Arrow's jemalloc keeps freed pages before handing them back (see lean_memory_pool)
JEMALLOC_DECAY_MS = 10_000

T = TypeVar("T")


def lean_memory_pool(decay_ms: int = JEMALLOC_DECAY_MS) -> None:
    """Make Arrow's jemalloc pool the default where this pyarrow has it (a no-op elsewhere), with
    the arenas it makes from now on keeping freed pages ``decay_ms`` milliseconds for reuse before
    they go back to the kernel. In ``kneepain score`` those are the arenas of the threads that
    read, score and write (jemalloc gives each new thread an arena of its own while it has fewer
    threads than arenas, four per core); the first arena, made as the pool starts, keeps Arrow's
    1 s, and on one CPU it is the only one.

    Streaming allocates and frees chunk-sized buffers on four threads; jemalloc hands freed memory
    back sooner than the default mimalloc (``kneepain score`` on a 1M-row CSV: 335 MB against
    380 MB peak, for the same time). jemalloc hands freed pages back gradually over the decay
    time, so with Arrow's default (1 s) some went back within the tenth of a second a chunk takes,
    and the next chunk faulted them in again: with 10 s, on two cores, the same run took half the
    page faults (61k against 117k), 0.24 s less system time and 2% less wall time, for the same
    peak RSS (298 MiB either way; medians of five runs each, run alternately); on 4M rows, 89k
    against 351k page faults and 0.8 s less system time, for 1 MiB more. Process-wide: the
    command calls it, the library does not.
    """
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(decay_ms)
    except NotImplementedError:  # a pyarrow built without jemalloc
        pass


def reuse_freed_heap(pad_bytes: int = HEAP_PAD_BYTES, mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc's malloc reuse freed memory: blocks under ``mmap_threshold`` come from the heap,
    and each heap keeps ``pad_bytes`` above its top rather than returning it to the kernel
    (``mallopt``). False where the C library is not glibc's, and nothing changes.

    Scoring a chunk allocates and frees numpy arrays of a few MB on two threads. By default glibc
    returns the freed top of a heap to the kernel (and maps some blocks afresh), then faults the
    pages in again for the next chunk: ``kneepain score`` on a 1M-row CSV took about 445k page
    faults and 1.7 s of system time, against about 95k and 0.9 s with both settings, and 5-15%
    less wall time, for a peak RSS 5-10 MB higher. Setting either parameter turns off glibc's
    sliding mmap threshold, so both are set. Process-wide: the command calls it, the library does not.
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
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TOP_PAD, pad_bytes) == 1


@contextmanager
def prefetch(chunks: Iterator[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """The chunks, read ``depth`` ahead on a background thread (parsing CSV in Arrow releases the GIL).

    At most ``depth`` chunks are read and not yet taken: the reader starts on the next chunk once
    the consumer has taken one, rather than reading it and waiting with it for a free place (a
    chunk more held: ``kneepain score`` on 1M rows peaked about 11 MB higher, for the same time,
    since reading a chunk takes a fraction of the time scoring one does).

    A context manager: on leaving it, however the loop ended, the reader is stopped and joined
    (it finishes the chunk it is on). A reader still inside Arrow when the process exits
    deadlocks Arrow's own shutdown: the job would never end.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    free = threading.Semaphore(depth)  # places for chunks read and not yet taken
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
            it = iter(chunks)
            while True:
                while not free.acquire(timeout=0.1):  # a place for the chunk before it is read
                    if stop.is_set():
                        return  # the consumer has gone
                chunk = next(it, done)
                if chunk is done or not put(chunk):
                    break
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
            free.release()
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
