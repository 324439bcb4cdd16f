"""Small file helpers: hashes, atomic writes (a file is complete or absent, never half-written),
temporary names, the temporary folder's errors and YAML reading."""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import json
import math
import os
import re
import select
import shutil
import socket
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.errors import BatchInputError

__all__ = ["CASE_FILE_TYPES", "FILE_TYPES_TEXT", "arrow_file", "changed_while_read", "file_label", "file_state",
           "in_temporary_folder", "is_case_file", "is_parquet", "is_pipe", "is_temporary", "link_target", "load_json",
           "load_yaml", "numbered", "private_temp_folder", "process_alive", "read_regular_file", "reclaim_stale_temps",
           "refuse_changed", "regular_stat", "replace_keeping_mode", "replace_together", "sha256_file",
           "standard_stream_closed", "stdout_bytes", "tmp_path", "write_bytes_atomic", "write_json_atomic",
           "write_parts_atomic", "write_report_json", "write_text_atomic"]


CASE_FILE_TYPES = (".csv", ".parquet")  # the file types of cases, outputs and rejects, told by name
FILE_TYPES_TEXT = " or ".join(CASE_FILE_TYPES)  # as messages name them: ".csv or .parquet"


def arrow_file(path: str | Path, mode: str = "rb") -> Any:
    """``path`` opened by Arrow (a ``pyarrow.OSFile``: its reads and writes need no GIL), whatever
    bytes its name holds. Arrow encodes a name given as text in UTF-8, which a name that is not
    UTF-8 cannot be (``caf\\xe9.csv`` from a Latin-1 archive, which Python holds as ``caf\\udce9.csv``);
    its bytes can be given as they are."""
    import pyarrow as pa

    return pa.OSFile(os.fsencode(path), mode)


def file_state(file: int | str | Path) -> tuple[int, int, int, int]:
    """A file's size, modification time (ns), device and inode (``file``: its path, or the
    descriptor of the file as it was opened): a write to it moves the first two, and a rename
    that puts another file in its place the last two."""
    state = os.stat(file)
    return state.st_size, state.st_mtime_ns, state.st_dev, state.st_ino


def changed_while_read(where: str, before: tuple[int, ...], now: tuple[int, ...],
                       expected: int | None = None) -> BatchInputError:
    """The error for an input that changed while a job read it (:func:`file_state` ``before``
    and ``now``; or, unchanged, holding fewer than ``expected`` bytes): the rows read are not the file's."""
    if now == before and expected is not None:
        change = f"{expected:,} bytes expected, {now[0]:,} found"
    elif now[0] != before[0]:
        change = f"{before[0]:,} bytes when it was opened, {now[0]:,} at the end"
    elif now[2:] != before[2:]:
        change = "another file of its size was put in its place"
    else:
        change = "its modification time moved"
    return BatchInputError(f"{where}: the file changed while it was read ({change}), so rows may be missing or out "
                           "of date: score it again once nothing writes to it")


def refuse_changed(file: int | str | Path, opened: tuple[int, ...], where: str, expected: int | None = None) -> None:
    """Raise :func:`changed_while_read` if ``file`` (the descriptor of the file as it was opened, or
    its path) is not as it was when ``opened`` (:func:`file_state`), or holds fewer than
    ``expected`` bytes."""
    if (now := file_state(file)) != opened or expected is not None and now[0] < expected:
        raise changed_while_read(where, opened, now, expected)


def file_label(path: str | Path) -> str:
    """A file's name as text any output can hold (a rejects file's ``reject_file`` column, a
    message): the bytes of a name that are not UTF-8 written as ``\\xNN`` (``caf\\xe9.csv``)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a name's bytes are held as lone surrogates (surrogateescape); any other as \udNNN
        return "".join(c.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if "\udc80" <= c <= "\udcff"
                       else c.encode("utf-8", "backslashreplace").decode("utf-8") for c in text)
    return text


def numbered(i: int, last: int) -> str:
    """``i`` in five digits or more, as many as ``last`` (the highest number of its kind) has, for
    names that sort in their numbers' order (``part-00000-100000`` sorted before ``part-00000-10001``)."""
    return f"{i:0{max(5, len(str(last)))}d}"


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` names a Parquet file: its name ends in ``.parquet``, in any case (every
    other name is read and written as CSV)."""
    return Path(path).suffix.lower() == ".parquet"


def is_case_file(path: str | Path) -> bool:
    """Whether ``path``'s name ends in one of :data:`CASE_FILE_TYPES`, in any case."""
    return Path(path).suffix.lower() in CASE_FILE_TYPES


def is_pipe(path: str | Path) -> bool:
    """Whether ``path`` leads to a pipe: a named pipe, ``<(...)``'s ``/dev/fd/N``, or
    ``/dev/stdin`` when standard input is one (a pipe gives its bytes once)."""
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):  # missing, or a name no file can have
        return False


@contextmanager
def in_temporary_folder(what: str) -> Iterator[None]:
    """Writing ``what`` into the temporary folder (``TMPDIR``): an OS error there (most often a
    full disk) is a :class:`BatchInputError` that names the folder and what was written, not the
    job's output."""
    try:
        yield
    except OSError as err:
        raise BatchInputError(f"{tempfile.gettempdir()}: cannot write {what} in the temporary folder: "
                              f"{err.strerror or err}; if it is full, set TMPDIR to a folder with room.") from err


def load_yaml(text: str | bytes) -> Any:
    """The plain data of YAML ``text`` (safe: no tag builds an object). libyaml's parser when PyYAML
    has it, the pure-Python one otherwise: the same data, but the knowledge base (100 KB) reads in
    0.08 s rather than 0.45 s, most of a model's load. Text libyaml refuses is read again by the
    pure-Python parser, whose ``yaml.YAMLError`` quotes the line and marks the column (libyaml's
    does not). libyaml accepts a little more (a tab before a comment), so such a file loads here
    and not where PyYAML lacks libyaml.

    A mapping that gives a key twice is refused (PyYAML keeps the last silently: a second ``cv:``
    section, or a number given twice in the knowledge base, would replace the first unseen), and
    text nested deeper than Python's recursion allows is a ``yaml.YAMLError`` like any other text
    that is not YAML, not a ``RecursionError``."""
    import yaml

    fast, safe = _unique_key_loaders()
    try:
        if fast is not None:
            try:
                return yaml.load(text, Loader=fast)
            except yaml.YAMLError:
                pass
        return yaml.load(text, Loader=safe)
    except RecursionError as err:
        raise yaml.YAMLError(f"nested deeper than the parser goes ({err})") from None


def load_json(data: str | bytes) -> Any:
    """The data of JSON ``data``; text nested deeper than Python's recursion allows is a
    ``json.JSONDecodeError`` like any other text that is not JSON, not a ``RecursionError``."""
    try:
        return json.loads(data)
    except RecursionError as err:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raise json.JSONDecodeError(f"nested deeper than the parser goes ({err})", text, 0) from None


@cache
def _unique_key_loaders() -> tuple[Any, Any]:
    """PyYAML's safe loaders (libyaml's, or None without it; the pure-Python one) refusing a
    mapping that gives a key twice (``<<`` merges may still override what they merge)."""
    import yaml

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base constructor names it
                    continue
                if earlier is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found key {key!r} a second time (first on line {earlier.line + 1}); give each "
                        "key once", key_node.start_mark)
        return yaml.SafeLoader.construct_mapping(self, node, deep)

    fast = getattr(yaml, "CSafeLoader", None)
    unique = {"construct_mapping": construct_mapping}
    return (type("UniqueKeyCSafeLoader", (fast,), unique) if fast is not None else None,
            type("UniqueKeySafeLoader", (yaml.SafeLoader,), unique))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tmp_path(path: str | Path, *, unique: bool = False) -> Path:
    """The hidden temporary name a file (or a folder) is written under before it is renamed into
    place: ``.<name>.tmp-<host>-<pid>``, so two writers never share one, and the temporaries of a
    job killed outright (SIGKILL, out of memory, power loss) are found by the next job on the same
    target (:func:`reclaim_stale_temps`). With ``unique``, a random part is added (a folder that
    several jobs of one process may make in turn)."""
    path = Path(path)
    name = f".{path.name}{_TMP_MARK}{_host()}-{os.getpid()}"
    return path.with_name(f"{name}-{uuid.uuid4().hex[:12]}" if unique else name)


_TMP_MARK = ".tmp-"


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as a :func:`tmp_path` is (a name to show as the file it becomes)."""
    return path.name.startswith(".") and _TMP_MARK in path.name


@cache
def _host() -> str:
    """This machine's name as a temporary name's part: ``%`` and ``-`` (which separates the parts)
    escaped, so two machines' names never become one."""
    return socket.gethostname().replace("%", "%25").replace("-", "%2D") or "host"


_PID = re.compile(r"[0-9]{1,9}")


def reclaim_stale_temps(target: str | Path, spare: Iterable[str | Path] = ()) -> list[Path]:
    """Remove the :func:`tmp_path` files and folders of ``target`` whose process is gone; return them.

    Only this machine's are considered: a temporary of another machine (on a shared file system) is
    left alone, as is a live process's, anything not named by :func:`tmp_path`, and the files
    ``spare`` (the job's inputs: a file named like a temporary is still the user's). A folder being
    removed (``<tmp>.removing``) counts as its own. Files named as earlier versions named them
    (``.<target>.<pid>.tmp``, without a host) are removed when their process is gone."""
    target = Path(target)
    spared = [Path(p) for p in spare]
    prefix = f".{target.name}{_TMP_MARK}"
    removed = []
    for found in target.parent.glob(glob.escape(prefix) + "*"):
        parts = found.name[len(prefix):].removesuffix(".removing").split("-")
        if len(parts) in (2, 3) and parts[0] == _host() and _stale(parts[1]) and \
                (len(parts) == 2 or _UNIQUE.fullmatch(parts[2])) and not any(_is(found, p) for p in spared):
            _remove(found)
            removed.append(found)
    legacy = f".{target.name}."
    for found in target.parent.glob(glob.escape(legacy) + "*.tmp"):
        if _stale(found.name[len(legacy):-len(".tmp")]) and not found.is_dir() and not any(_is(found, p) for p in spared):
            _remove(found)
            removed.append(found)
    return removed


_UNIQUE = re.compile(r"[0-9a-f]{12}")  # tmp_path's random part


def private_temp_folder(name: str) -> Path:
    """A new folder of this process's own (mode 0700) in the system's temporary folder, named by
    :func:`tmp_path` after ``name``, once those that processes gone left there are removed
    (:func:`reclaim_stale_temps`): a job killed outright (SIGKILL, out of memory) cannot remove
    its own, and each held a copy of the model."""
    target = Path(tempfile.gettempdir()) / name
    reclaim_stale_temps(target)
    folder = tmp_path(target, unique=True)
    folder.mkdir(mode=0o700)
    return folder


def _is(found: Path, path: Path) -> bool:
    """Whether ``found`` is the file ``path`` (by any name, through a link) or a folder holding it,
    as ``path`` is written (a link in the folder to a file elsewhere) or as it resolves."""
    try:
        if os.path.samefile(found, path):
            return True
    except OSError:
        pass
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(found)) or \
        path.resolve().is_relative_to(found.resolve())


def _stale(pid: str) -> bool:
    return _PID.fullmatch(pid) is not None and not process_alive(int(pid))


def _remove(found: Path) -> None:
    if found.is_dir() and not found.is_symlink():
        shutil.rmtree(found, ignore_errors=True)
    else:
        found.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process, and another user's, count as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a process id this system can have
        return False
    return True


def link_target(path: str | Path) -> Path:
    """The file written for ``path``: where it is a symbolic link, the file the link names (written
    beside it and renamed onto it, so the link stays a link), else ``path``."""
    path = Path(path)
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def replace_keeping_mode(tmp: Path, path: Path, before: os.stat_result | None) -> None:
    """Rename ``tmp`` onto ``path`` with the permissions, owner and group ``before`` (the file that
    was there, :func:`regular_stat`) had, as ``sed -i`` keeps them: a file a user made private
    (``chmod 600``) stays so when a job writes it again, and one that root (a cron job) writes
    again stays its owner's. An owner or group this user may not give is left as made (a user
    can give only a group of their own)."""
    if before is not None:
        os.chmod(tmp, stat.S_IMODE(before.st_mode))
        for uid in (before.st_uid, -1):
            try:
                os.chown(tmp, uid, before.st_gid)
                break
            except OSError:  # not this user's to give
                continue
    os.replace(tmp, path)


def replace_together(changes: Sequence[tuple[Path | None, Path]]) -> None:
    """Put every change in place, in order, or none: each ``(new, target)`` renames ``new`` onto
    ``target`` (:func:`replace_keeping_mode`, with the permissions the file there had) or, where
    ``new`` is None, removes ``target``. Every file there is first renamed aside (a
    :func:`tmp_path` beside it); if any step fails, the new files put in place are removed, the
    earlier ones renamed back, and the ``OSError`` raised, naming the target that failed. A job's
    output and its rejects file then stay as the earlier run left them: before, a rejects file that
    could not be replaced (another user's, in a shared folder) was found after the earlier output
    had been removed. Where a target is no regular file (a folder put in its place meanwhile),
    nothing is changed."""
    before = {target: regular_stat(target) for _, target in changes}
    aside: list[tuple[Path, Path]] = []  # (target, where its earlier file is)
    placed: list[Path] = []
    step: Path | None = None  # the target being changed, named in an error
    try:
        for _, target in changes:
            step = target
            if os.path.lexists(target):
                if before[target] is None:  # a folder, a device: not ours to move or replace
                    raise IsADirectoryError(errno.EISDIR, "not a regular file", str(target))
                moved = tmp_path(target, unique=True)
                os.rename(target, moved)
                aside.append((target, moved))
        for new, target in changes:
            step = target
            if new is not None:
                replace_keeping_mode(new, target, before[target])
                placed.append(target)
    except OSError as err:
        for target in reversed(placed):
            with suppress(OSError):
                target.unlink()
        for target, moved in reversed(aside):
            with suppress(OSError):
                os.rename(moved, target)
        raise OSError(err.errno, err.strerror or str(err), str(step)) from err
    for _, moved in aside:
        with suppress(OSError):  # left for reclaim_stale_temps
            moved.unlink()


def read_regular_file(path: Path, *, follow_links: bool = True, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, read from the file opened (not a name that may be
    switched meanwhile), without blocking on a pipe. Raises ``ValueError`` for anything but a
    regular file (a FIFO, a device, a folder; a link, unless ``follow_links``) or for one larger
    than ``max_bytes`` (before reading it), ``OSError`` as ``open`` does."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if not follow_links and os.path.islink(path):  # O_NOFOLLOW's ELOOP
            raise ValueError("a link, not a regular file") from err
        raise
    with open(fd, "rb") as read:
        mode = os.fstat(read.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError("a pipe, not a regular file" if stat.S_ISFIFO(mode) else "not a regular file")
        if max_bytes is not None and (size := os.fstat(read.fileno()).st_size) > max_bytes:
            raise ValueError(f"{size:,} bytes, larger than the {max_bytes:,} allowed")
        return read.read()


def regular_stat(path: Path) -> os.stat_result | None:
    """``path``'s status if it is a regular file (through links), else None."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_parts_atomic(path, [data])


def write_parts_atomic(path: str | Path, parts: Iterable[bytes]) -> None:
    """Write ``parts`` one after another (a generator keeps only one in memory) to a temporary
    file renamed to ``path`` once all are written."""

    def write(fh: BinaryIO) -> None:
        for part in parts:
            fh.write(part)

    write_atomic(path, write)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` with a binary file that becomes ``path`` once it returns (a temporary file
    renamed into place): a writer that fails or is stopped leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a folder in the way, a signal: no half-written file is left
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")


def write_report_json(path: str | Path, data: Any) -> None:
    """:func:`write_json_atomic` as JSON that every reader takes: a number that is not finite (the
    NaN of an empty band, or of a condition a labelled file lacks) is written ``null``, as strict
    JSON has no NaN or Infinity (``jq``, JavaScript and most JSON libraries refuse them)."""
    write_text_atomic(path, json.dumps(_finite_or_null(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy number
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _WholeWrites(io.RawIOBase):
    """A file descriptor written with ``os.write``, waiting while a non-blocking pipe is full
    (:func:`stdout_bytes`' raw stream)."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        while True:
            try:
                return os.write(self._fd, data)  # perhaps part of it: the buffered writer writes the rest
            except BlockingIOError:
                select.select([], [self._fd], [])


def standard_stream_closed(which: str) -> BatchInputError:
    """The error for ``-`` where standard ``which`` (input or output) is closed (``<&-``, ``>&-``)."""
    return BatchInputError(f"-: standard {which} is closed; give a file instead of -, or open standard {which} "
                           "(a pipe or a redirection).")


def stdout_bytes() -> Any:
    """Standard output as a binary stream whose writes put down every byte or raise the error of
    the write that failed (``EPIPE``, ``EFBIG``), never losing bytes silently; flush it when done
    (closing it leaves standard output open).

    ``sys.stdout.buffer`` is the raw file itself when Python runs unbuffered (``PYTHONUNBUFFERED``,
    ``python -u``, as many container images set it): a write into a full pipe or up to a file-size
    limit takes part of the bytes and drops the rest, and into a non-blocking pipe (as some parent
    processes leave it) takes none. A standard output with no file descriptor (a stream in memory)
    is its own ``buffer``; a closed one (``>&-``) is an error that says so."""
    if sys.stdout is None:
        raise standard_stream_closed("output")
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return sys.stdout.buffer
    sys.stdout.flush()  # anything printed before goes first
    return io.BufferedWriter(_WholeWrites(fd), buffer_size=1 << 20)
