"""A Dask cluster for the duration of a job, and the helpers every Dask job shares.

Dask itself is imported only inside these functions, so nothing else pays for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.files import reclaim_stale_temps, tmp_path
from pipeline.core.spawning import signals_blocked

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["LOCAL_CLUSTER_ADDRESSES", "LOCAL_WORKER_CONFIG", "DaskJobError", "code_digest", "dask_client", "gather",
           "other_code", "remove_temp_folder", "temp_folder"]

# Dask sets MALLOC_TRIM_THRESHOLD_=65536 in every worker it spawns, to hand freed memory back to
# the system at once. Setting any trim threshold also turns off glibc's adaptive mmap threshold,
# so every array above 128 KB is a fresh mmap, page-faulted in and unmapped again: a scoring
# worker spent a third of its time in the kernel (450k rows: 6.2 s against 4.8 s, 800k page faults
# against 50k). With None the nanny does not set it, so the local cluster's workers keep glibc's
# default unless this process's environment already holds the variable (a user's own setting, or
# one an earlier default LocalCluster wrote into os.environ). A worker's memory stays bounded by
# the chunk size.
# Dask's statistical profiler (for the dashboard, which the local cluster does not start) walks
# the task thread's stack every 10 ms while holding the GIL: off, a worker's event loop took 0.4 s
# of CPU instead of 0.8 s per 20 s of scoring, and one worker scored a 4M-row CSV 3.5% faster.
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                       "distributed.worker.profile.enabled": False,
                       # each worker runs this module's dask_setup as it starts (a Dask preload)
                       "distributed.worker.preload": [__name__]}


def dask_setup(worker: Any) -> None:
    """A local worker's start (Dask's preload hook): Ctrl-C left to the job, and quiet once it closes.

    A terminal's Ctrl-C reaches the whole process group, the workers too: each printed its
    ``KeyboardInterrupt`` traceback (about 65 lines around the job's one-line stop). The job
    stops the cluster, which stops its workers with SIGTERM. A worker closed while it runs a
    task (a stopped job, or one whose other task failed) logged the cancelled task and, when
    the scheduler closed first, a traceback per failed heartbeat: up to 65 lines again. What a
    local worker logs once it is closing is dropped; the job says itself why it stopped. So is a
    task's "Compute Failed" traceback: the job names the error in one line (``--debug`` adds where
    on the worker it came from), where a task that could not write printed it for each retry."""
    from distributed.core import Status

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    live = {Status.init, Status.created, Status.starting, Status.running, Status.paused}
    for handler in logging.getLogger("distributed").handlers:
        handler.addFilter(lambda record: worker.status in live and not str(record.msg).startswith("Compute Failed"))


class DaskJobError(RuntimeError):
    """The cluster failed the job (a task failed after its retries, or no scheduler answered); nothing was written."""


class RemoteTraceback(Exception):
    """The traceback of an error a task met on its worker, as text (the cause of the job's error)."""

    def __str__(self) -> str:
        return str(self.args[0])


@functools.cache
def code_digest() -> str:
    """A hash of this installation's kneepain code (every ``.py`` and ``.yaml`` file of the package,
    by path and contents), found once per process. A long-lived worker keeps the modules it
    imported when it started: after an upgrade its rejects, and maybe its scores, would differ
    from the driver's. A job sends its own digest with each task, and a worker whose code differs
    scores nothing."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def other_code(label: str) -> DaskJobError:
    """The error of a task whose worker runs other kneepain code than the job's driver (:func:`code_digest`)."""
    return DaskJobError(f"{label}: a Dask worker and this job run different kneepain code (their package files "
                        "differ: an upgrade or a `git pull` since one of them started?); restart the workers, and "
                        "this process if it is a notebook or another long-lived one, from the same installation. "
                        "No output was written.")


def task_failed(label: str, err: BaseException) -> DaskJobError:
    """The error of a job whose task on input ``label`` failed with ``err``."""
    return DaskJobError(f"{label}: the Dask task failed ({type(err).__name__}: {err}); no output was written.")


def tasks_cancelled(err: BaseException) -> DaskJobError:
    """The error of a job whose tasks the cluster cancelled (``err``: distributed's, which lists every
    task's key): the reasons Dask gives, in one line."""
    reasons = sorted({str(group.reason) for group in getattr(err, "error_groups", [])}) or \
        [str(getattr(err, "reason", "") or "no reason given")]
    return DaskJobError(f"the Dask cluster cancelled the job's tasks ({', '.join(reasons)}: the connection to the "
                        "scheduler was lost, or the scheduler stopped); no output was written.")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None,
                while_starting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                ) -> Iterator["Client"]:
    """A ``distributed.Client`` for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Default: start a ``LocalCluster`` on
        127.0.0.1 with one single-threaded worker process per core and no dashboard (the
        scheduler still answers health checks over HTTP, on a free port of 127.0.0.1).
    n_workers : int, optional
        Workers of the local cluster (default ``os.cpu_count()``); not allowed with ``scheduler``.
    while_starting : callable, optional
        A context manager entered while the local cluster and its client start: a command holds
        its stop signals off there (``pipeline.serve.guard.signals_deferred``), since a cluster
        stopped half started is not closed by the job (distributed's own exit then printed an
        ``AssertionError`` traceback) and is closed once started.

    Yields
    ------
    distributed.Client
        Also the default client, so ``joblib.parallel_backend("dask")`` uses it. The client, and
        the local cluster if one was started, are closed on exit.
    """
    with _without_sync_cancel_noise():
        yield from _client(scheduler, n_workers, while_starting)


SCHEDULER_ANSWER_SECONDS = 10.0  # a Dask scheduler sends its handshake as soon as a connection is made


def probe_scheduler(address: str, timeout: float = SCHEDULER_ANSWER_SECONDS) -> None:
    """Refuse a ``tcp://`` address where no Dask scheduler answers, in one line and within
    ``timeout`` seconds: a port where nothing listens, a host that does not answer, or a server of
    another kind (the scheduler's dashboard, an HTTP proxy). Dask's own client waited until such a
    server closed the connection (minutes, on the dashboard's port) or read an HTTP reply as a
    message of 3 EiB (MemoryError). Another scheme (``tls://``, ``inproc://``) is left to Dask."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number: Dask says so
        return
    if parts.scheme != "tcp" or host is None or port is None:
        return
    where = f"cannot connect to the Dask scheduler at {address!r}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise DaskJobError(f"{where}: no answer within {timeout:g} s (is the host up and the port open?)") from None
    except OSError as err:
        raise DaskJobError(f"{where}: {err.strerror or err}") from None
    with sock:
        sock.settimeout(timeout)
        try:
            first = sock.recv(8)
        except TimeoutError:
            raise DaskJobError(f"{where}: what listens there sent nothing within {timeout:g} s, where a Dask scheduler "
                               "answers at once (the dashboard's port? a scheduler listens on 8786 unless told "
                               "otherwise)") from None
        except OSError as err:
            raise DaskJobError(f"{where}: {err.strerror or err}") from None
    if not first:
        raise DaskJobError(f"{where}: what listens there closed the connection at once, where a Dask scheduler answers "
                           "(a scheduler listens on 8786 unless told otherwise)")
    if first.startswith(b"HTTP") or len(first) < 8 or int.from_bytes(first, "little") > 1 << 20:
        kind = "an HTTP server" if first.startswith(b"HTTP") else "a server of another kind"
        raise DaskJobError(f"{where}: {kind} answers there, not a Dask scheduler (a scheduler listens on 8786 unless "
                           "told otherwise)")


def _client(scheduler: str | None, n_workers: int | None,
            while_starting: Callable[[], contextlib.AbstractContextManager]) -> Iterator["Client"]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if n_workers is not None:
            raise ValueError("n_workers applies only to a local cluster; a scheduler at "
                             f"{scheduler!r} has its own workers.")
        probe_scheduler(scheduler)
        try:
            client = Client(scheduler)
        except (OSError, ValueError, MemoryError) as err:  # refused or timed out, not an address, not a scheduler
            raise DaskJobError(f"cannot connect to the Dask scheduler at {scheduler!r}: {err}") from err
        with client:
            yield client
        return
    n = (os.cpu_count() or 1) if n_workers is None else n_workers
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n_workers == {n_workers!r}, must be an integer >= 1.")
    # one thread per worker: scoring holds the GIL for much of a chunk (two threads in one process score
    # about 1.4x one), so processes scale and threads less
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(LOCAL_WORKER_CONFIG))
        try:
            # SIGINT held back while the cluster starts: its event-loop thread, and through it every
            # worker it spawns (now or on a restart), inherits the block, so a terminal's Ctrl-C is
            # this process's alone, also while a worker imports, before dask_setup can ignore it
            # (not SIGTERM: the cluster stops its workers with it)
            with while_starting():
                with signals_blocked({signal.SIGINT}):
                    cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                               **LOCAL_CLUSTER_ADDRESSES))
                client = stack.enter_context(Client(cluster))
        except RuntimeError as err:  # a worker that died while it started ("Nanny failed to start")
            raise DaskJobError(f"the local Dask cluster did not start: {err}") from err
        yield client


def _is_sync_cancel_noise(record: logging.LogRecord) -> bool:
    """Whether ``record`` is tornado's report of distributed's ``sync()`` failing to cancel what it
    waited for: a Ctrl-C that lands before its coroutine has started makes the cancel callback read
    a variable not yet assigned (distributed 2026.8), a NameError traceback after the job's stop."""
    err = record.exc_info[1] if record.exc_info else None
    if not isinstance(err, NameError) or err.__traceback__ is None:
        return False
    last = err.__traceback__
    while last.tb_next is not None:
        last = last.tb_next
    return last.tb_frame.f_code.co_name == "cancel" and last.tb_frame.f_globals.get("__name__") == "distributed.utils"


def _is_forgotten_gather(record: logging.LogRecord) -> bool:
    """Whether ``record`` is the local scheduler's report that it could not gather results it has
    already forgotten: a job stopped by Ctrl-C releases its tasks while a gather is on its way,
    and the scheduler logged "Couldn't gather keys: {...: 'forgotten'}" after the job's one-line
    stop. A gather that fails otherwise raises in the job, which names the error itself."""
    states = record.args if isinstance(record.args, dict) else {}
    return record.msg == "Couldn't gather keys: %s" and bool(states) and all(s == "forgotten" for s in states.values())


@contextlib.contextmanager
def _without_sync_cancel_noise() -> Iterator[None]:
    """:func:`_is_sync_cancel_noise` and :func:`_is_forgotten_gather` records dropped while inside
    (nothing else of tornado's or the scheduler's)."""
    filters = [(logging.getLogger("tornado.application"), lambda record: not _is_sync_cancel_noise(record)),
               (logging.getLogger("distributed.scheduler"), lambda record: not _is_forgotten_gather(record))]
    for logger, keep in filters:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger, keep in filters:
            logger.removeFilter(keep)


def temp_folder(target: Path, spare: Iterable[str | Path] = ()) -> Path:
    """A new hidden folder next to ``target`` for a job's files; the job makes its output in it
    and renames that to ``target`` once complete, then removes the folder (:func:`remove_temp_folder`).

    Its name is :func:`pipeline.core.files.tmp_path`'s with a random part
    (``.<target>.tmp-<host>-<pid>-<random>``), so the folders of a job killed outright (SIGKILL, out
    of memory) on this machine are found and removed by the next job on the same target
    (:func:`pipeline.core.files.reclaim_stale_temps`, called here first; never the files ``spare``,
    the job's inputs, or a folder holding one).
    """
    reclaim_stale_temps(target, spare)
    tmp = tmp_path(target, unique=True)
    tmp.mkdir()
    return tmp


def remove_temp_folder(tmp: Path) -> None:
    """Remove a job's :func:`temp_folder` even while tasks still write into it: renamed first, so a
    task's next part file has no folder to go to, then removed."""
    doomed = tmp.with_name(tmp.name + ".removing")
    try:
        os.rename(tmp, doomed)
    except OSError:  # already gone, or cannot be renamed: removed where it is
        doomed = tmp
    shutil.rmtree(doomed, ignore_errors=True)


# a local cluster's addresses: 127.0.0.1, no dashboard, and the scheduler's health checks on a free
# port (on 8787, a second cluster at once was warned, in four lines, that the port was in use)
LOCAL_CLUSTER_ADDRESSES: dict[str, Any] = {"host": "127.0.0.1", "dashboard_address": None,
                                           "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
NO_WORKERS_SECONDS = 120.0  # a job whose cluster has had no worker this long stops


def gather(client: "Client", futures: dict["Future", str]) -> list[Any]:
    """Results of ``futures`` (future -> input label); on the first failure cancel the rest and raise.

    Each future is released as soon as its result is taken. The scheduler reruns a finished task
    whose result a lost worker held while a client still holds its future: held to the end, a
    scoring task of the first pass could run again while the rest of the pass, or the second
    pass, went on, and write its part files over the second pass's (repeated ids scored after
    all). Released, it has nothing left to rerun.

    A cluster left without workers (none ever joined a scheduler, or a local cluster's all died
    before they ran a task, which Dask does not count as a failure) would wait for ever: after
    :data:`NO_WORKERS_SECONDS` without one the job stops with :class:`DaskJobError`."""
    from concurrent.futures import CancelledError

    from distributed import wait

    results = []
    pending = list(futures)
    idle_since: float | None = None
    try:
        while pending:
            try:
                done, not_done = wait(pending, timeout=min(5.0, NO_WORKERS_SECONDS), return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished meanwhile
                done, not_done = set(), pending
            except CancelledError as err:  # the scheduler lost or stopped: every task, listed by key, in one error
                raise tasks_cancelled(err) from err
            pending = list(not_done)
            for future in done:
                try:
                    result = future.result()
                except CancelledError as err:
                    raise tasks_cancelled(err) from err
                except Exception as err:  # KilledWorker, or a transient error after the retries
                    raise task_failed(futures[future], err) from err
                if (error := getattr(result, "error", None)) is not None:
                    remote = getattr(result, "error_traceback", None)
                    if remote:  # shown by --debug, as Dask shows a task's own exception
                        raise error from RemoteTraceback(remote)
                    raise error
                results.append(result)
                future.release()
            if done or client.nthreads():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > NO_WORKERS_SECONDS:
                raise DaskJobError(f"the Dask cluster has had no worker for {NO_WORKERS_SECONDS:g} s (none joined "
                                   "the scheduler, or they all died); no output was written.")
    except BaseException:
        client.cancel(list(futures))  # tasks already running finish, but write into a removed folder
        raise
    return results
