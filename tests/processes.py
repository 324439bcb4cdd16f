"""The processes a job started, found in /proc (Linux): what a test waits for before it signals the
job; and a child's file-size limit, where a test needs its writes to fail."""

import resource
import signal
from pathlib import Path

FILE_SIZE_LIMIT = 20_000  # bytes a child started with limit_file_size may write to one file


def limit_file_size() -> None:
    """In a child (``subprocess``'s ``preexec_fn``): files of at most :data:`FILE_SIZE_LIMIT`
    bytes, the limit's signal ignored, so that the write past it fails (EFBIG) instead."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def spawned_children(pid: int, *, loaded: str | None = None) -> list[int]:
    """The children of ``pid`` running multiprocessing's ``spawn_main`` (not its resource tracker),
    with ``loaded`` among their mapped files when given (``"_multiarray_umath"``: numpy imported)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if (parent == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes()
                    and (loaded is None or loaded in (stat.parent / "maps").read_text())):
                found.append(int(stat.parent.name))
        except (OSError, IndexError):  # a process that ended meanwhile
            continue
    return found
