"""`kneepain score --jobs N`: chunks parsed and scored in N processes give the same files as one."""

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from processes import spawned_children
from temporaries import leftover_temporaries

from pipeline.cli import EXIT_REJECTED, main
from pipeline.core.errors import BatchInputError
from pipeline.serve import chunks
from pipeline.serve.batch import score_files
from pipeline.serve.loading import load_model
from pipeline.serve.shaping import OutputOptions


@pytest.fixture(scope="module")
def messy_csv(small_data, tmp_path_factory) -> Path:
    """600 cases in text, with bad values, ids repeated within and across chunks, a record with
    too many fields, and a column that is not a case field."""
    cases = pd.read_parquet(small_data / "test.parquet").head(600).astype(str).replace({"<NA>": "", "nan": ""})
    cases.insert(1, "clinic", "north")
    cases.loc[17, "age"] = "old"
    cases.loc[260, "case_id"] = cases.loc[3, "case_id"]  # a later chunk repeats an id
    cases.loc[41, "case_id"] = cases.loc[40, "case_id"]  # within one chunk
    cases.loc[300, "sex"] = "x"
    path = tmp_path_factory.mktemp("jobs") / "messy.csv"
    lines = cases.to_csv(index=False).splitlines(keepends=True)
    lines[500] = lines[500].rstrip("\n") + ",extra\n"  # data row 498 has one field too many
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_two_processes_write_the_same_files_as_one(trained, messy_csv, tmp_path, suffix):
    models, _ = trained
    outputs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out-{jobs}{suffix}"
        code = main(["score", str(messy_csv), "-o", str(out), "--model", str(models), "--quiet", "--chunk-rows", "97",
                     "--jobs", str(jobs), "--keep-input-columns"])
        assert code == EXIT_REJECTED  # some rows were rejected, and said so
        rejects = out.with_name(out.name + ".rejects.csv").read_bytes()
        outputs[jobs] = (out.read_bytes() if suffix == ".csv" else pd.read_parquet(out), rejects)
    one, two = outputs[1], outputs[2]
    assert one[1] == two[1]  # the rejects, byte for byte
    assert one[1].count(b"\n") == 1 + 5  # the header, then five rejected rows
    if suffix == ".csv":
        assert one[0] == two[0]
    else:
        pd.testing.assert_frame_equal(one[0], two[0])  # the same numbers, to the bit


def test_scoring_threads_keep_the_order_and_the_bytes(trained, messy_csv, tmp_path, monkeypatch):
    """One process scores chunks on several threads (two where two cores are free): the files are
    those of one thread, rows in input order."""
    models, _ = trained
    outputs = {}
    for threads in (1, 3):
        monkeypatch.setattr(chunks, "scorer_threads", lambda threads=threads: threads)
        out = tmp_path / f"out-{threads}.csv"
        score_files([messy_csv], out, load_model(models), chunk_rows=37, options=OutputOptions(), jobs=1)
        outputs[threads] = (out.read_bytes(), out.with_name(out.name + ".rejects.csv").read_bytes())
    assert outputs[1] == outputs[3]
    rows = pd.read_csv(tmp_path / "out-3.csv", usecols=["row"])["row"]
    assert rows.is_monotonic_increasing and len(rows) == 600 - 5


def test_a_process_scores_on_two_threads_where_two_cores_are_free(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert chunks.scorer_threads() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert chunks.scorer_threads() == 1


def _die_in_worker(*args):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_scoring_process_stops_the_run_and_leaves_nothing(trained, messy_csv, tmp_path, monkeypatch):
    models, _ = trained
    # sent by reference: each spawned process imports this test module to run it
    monkeypatch.setattr(chunks, "_in_worker", _die_in_worker)
    out = tmp_path / "out.csv"
    with pytest.raises(BatchInputError, match="scoring process stopped"):
        score_files([messy_csv], out, load_model(models), chunk_rows=100, jobs=2, options=OutputOptions())
    # the locks of the output and its rejects file stay, unheld
    assert [p.name for p in tmp_path.iterdir() if p.name not in (".out.csv.lock", ".out.csv.rejects.csv.lock",
                                                                 ".out.csv.texts.csv.lock")] == []
    # to standard output, rows may have gone out before: the error does not say that nothing was written
    with open(tmp_path / "stdout.csv", "wb") as stdout, \
            pytest.raises(BatchInputError, match="no file was written; standard output may hold the rows scored"):
        score_files([messy_csv], "-", load_model(models), chunk_rows=100, jobs=2, options=OutputOptions(),
                    stdout=stdout, rejects=tmp_path / "rejects.csv")
    assert not (tmp_path / "rejects.csv").exists()


def _one_dies_the_other_sends(*args):
    """The first process to score a chunk dies; the other, once the pool is broken, sends a result
    larger than a pipe's buffer, which nobody reads any more."""
    import time

    try:
        os.close(os.open(os.environ["KNEEPAIN_TEST_FIRST"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(1.0)
        return b"x" * (1 << 22)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the scoring processes in /proc")
def test_a_process_killed_while_another_sends_its_result_stops_the_run(trained, messy_csv, tmp_path, monkeypatch):
    """The out-of-memory killer takes one process while the other is busy: the pool stops the other
    with SIGTERM, which scoring processes ignore, and waited for it for ever, stuck sending a
    result nobody read. The job stops with its one-line error instead."""
    import threading
    import time

    models, _ = trained
    monkeypatch.setattr(chunks, "_in_worker", _one_dies_the_other_sends)
    monkeypatch.setenv("KNEEPAIN_TEST_FIRST", str(tmp_path / "first"))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            score_files([messy_csv], tmp_path / "out.csv", load_model(models), chunk_rows=100, jobs=2,
                        options=OutputOptions())
        except BaseException as err:  # what the job raised, looked at below
            raised.append(err)

    job = threading.Thread(target=run, daemon=True)
    job.start()
    job.join(timeout=90)
    hung = job.is_alive()
    if hung:  # free the test run: the stuck processes are killed, and the pool's wait ends
        for pid in spawned_children(os.getpid()):
            os.kill(pid, signal.SIGKILL)
        job.join(timeout=30)
    assert not hung, "the job waited for ever for a process the pool could not stop"
    assert len(raised) == 1 and isinstance(raised[0], BatchInputError), raised
    assert "scoring process stopped" in str(raised[0])
    assert not (tmp_path / "out.csv").exists()
    deadline = time.monotonic() + 30
    while spawned_children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spawned_children(os.getpid())


def test_a_stop_while_the_scoring_processes_stop_leaves_no_temporary_file(trained, messy_csv, tmp_path, monkeypatch):
    """A stop signal that lands while the job waits for its scoring processes to stop (at its
    end, or after one died) still removes the half-written output and rejects."""
    models, _ = trained
    submit, shutdown, submitted = chunks.ChunkScorer.submit, chunks.ChunkScorer.shutdown, []

    def stopped_midway(self, *args):
        submitted.append(1)
        if len(submitted) > 3:
            raise KeyboardInterrupt  # a first stop, as the stop handler raises it in the main thread
        return submit(self, *args)

    def stopped_again(self) -> None:
        shutdown(self)
        raise KeyboardInterrupt  # a second one while the processes stop

    monkeypatch.setattr(chunks.ChunkScorer, "submit", stopped_midway)
    monkeypatch.setattr(chunks.ChunkScorer, "shutdown", stopped_again)
    with pytest.raises(KeyboardInterrupt):
        score_files([messy_csv], tmp_path / "out.csv", load_model(models), chunk_rows=100, jobs=2,
                    options=OutputOptions())
    assert leftover_temporaries(tmp_path) == [] and not (tmp_path / "out.csv").exists()


@contextmanager
def _idle_scoring_processes(models: Path) -> Iterator[tuple[chunks.ChunkScorer, list[int]]]:
    """A scorer with two processes started and waiting for work, and their pids; on the way out
    every one is killed (freeing a test run that hung) and none is left."""
    scorer = chunks.ChunkScorer(load_model(models), jobs=2)
    pool, processes = scorer._pool, []
    try:
        assert all(f.result(timeout=120) for f in [pool.submit(os.getpid) for _ in range(4)])
        processes += list(pool._processes)
        assert len(processes) == 2
        yield scorer, processes
    finally:
        for pid in processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    while spawned_children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spawned_children(os.getpid())


def _ends(call: Callable[[], object], what: str) -> list[BaseException]:
    """Run ``call`` on a thread; fail the test if it has not returned within 60 s (it would wait
    for ever); what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as err:  # looked at by the caller
            raised.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), f"{what} waited for ever"
    return raised


def test_a_process_killed_while_it_sends_a_result_does_not_hang_the_job(trained):
    """A scoring process killed part-way through sending a result (the job slow to read them)
    leaves the pool's reader waiting for the rest of it, so the pool never learns that it died:
    the chunk the job waited for never ended, nor did the job. (The half-sent result is written
    here by the test into the pool's results pipe: a long message's header and a few bytes.)"""
    import struct
    from concurrent.futures.process import BrokenProcessPool

    models, _ = trained
    with _idle_scoring_processes(models) as (scorer, processes):
        pool = scorer._pool
        os.write(pool._result_queue._writer.fileno(), struct.pack("!i", 8 << 20) + bytes(100))
        waiting = pool.submit(os.getpid)  # the pool's reader is stuck: it never reaches a process
        os.kill(processes[0], signal.SIGKILL)
        raised = _ends(lambda: scorer.result(waiting), "the wait for a chunk")
        assert len(raised) == 1 and isinstance(raised[0], BrokenProcessPool), raised
        assert _ends(scorer.shutdown, "the pool's shutdown") == []


def test_a_process_that_dies_while_no_chunk_is_outstanding_does_not_hang_the_job(trained):
    """A scoring process killed while both wait for work (the job held up by a slow reader of its
    output): no chunk fails, and the other process, which the pool can only ask to stop, cannot
    read its stop message when the dead one held the task queue's lock (stood in for here by a
    stopped process). Shutting the pool down kills it instead of waiting for ever."""
    models, _ = trained
    with _idle_scoring_processes(models) as (scorer, processes):
        os.kill(processes[1], signal.SIGSTOP)  # cannot act on a stop message, as when it waits on a dead one's lock
        os.kill(processes[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not scorer._pool._broken and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scorer._pool._broken
        assert _ends(scorer.shutdown, "the pool's shutdown") == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the scoring processes in /proc")
def test_the_scoring_processes_end_with_a_job_killed_outright(trained, messy_csv, tmp_path):
    """A job killed outright (out of memory, kill -9) cannot stop its processes, which ignore the
    stop signals: they are killed with it rather than left running for ever."""
    import subprocess
    import sys
    import time

    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", str(messy_csv), "-o", str(tmp_path / "out.csv"), "--model",
                             str(models), "--jobs", "2", "--chunk-rows", "1", "--quiet"], stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(children := spawned_children(proc.pid, loaded="_multiarray_umath")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended before its processes started"
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (alive := [pid for pid in children if Path(f"/proc/{pid}").exists()
                         and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for pid in children:  # whatever happened above, none is left running
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not alive, f"scoring processes {alive} outlived their job"


def test_the_processes_start_up_message_stays_small(trained):
    """A process is started with a message through a pipe; one larger than the pipe's buffer (64 KB)
    hangs the job for ever if the process dies first (a Ctrl-C to the whole process group)."""
    import pickle

    models, _ = trained
    scorer = chunks.ChunkScorer(load_model(models), jobs=2)
    try:
        assert len(pickle.dumps(scorer._pool._initargs)) < 4096
    finally:
        scorer.shutdown()
    assert not scorer._handover.exists()  # the model's file is removed with the processes


def test_a_model_copy_left_by_a_job_killed_outright_is_removed_by_the_next(trained, tmp_path, monkeypatch):
    """`kill -9` of a `--jobs 2` job left its copy of the model (2.5 MB) in /tmp for good, and no
    later job removed it; a live job's copy, and another machine's, are left alone."""
    import subprocess
    import tempfile

    from pipeline.core.files import tmp_path as temporary_name

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])  # a process id that has ended
    dead.wait()
    target = tmp_path / "kneepain-model"
    mine = temporary_name(target, unique=True)  # this (live) process's
    stale = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    other = mine.with_name(mine.name.replace(".tmp-", ".tmp-otherhost-"))
    for folder in (mine, stale, other):
        folder.mkdir()
        (folder / "model.pickle").write_bytes(b"x")
    models, _ = trained
    scorer = chunks.ChunkScorer(load_model(models), jobs=2)
    try:
        assert scorer._handover.parent == tmp_path and scorer._handover.stat().st_mode & 0o777 == 0o700
        assert not stale.exists() and mine.exists() and other.exists()
    finally:
        scorer.shutdown()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def test_a_scoring_process_unpickles_only_the_bytes_its_parent_wrote(tmp_path):
    """The model reaches the processes through a private file and its digest (the start-up pipe
    would hold it): a file changed in between is refused, never unpickled."""
    import hashlib
    import pickle

    from pipeline.core.errors import ModelIntegrityError

    data = pickle.dumps({"model": 1})
    path = tmp_path / "model.pickle"
    path.write_bytes(pickle.dumps({"model": 2}))
    with pytest.raises(ModelIntegrityError, match="has changed; not loaded"):
        chunks._start_worker(str(path), hashlib.sha256(data).hexdigest())
    path.write_bytes(data)
    chunks._start_worker(str(path), hashlib.sha256(data).hexdigest())
    assert chunks._WORKER_MODEL == {"model": 1}
    # the stop signals are the parent's: a process killed by a group's SIGTERM midway through
    # sending its result left the pool waiting for the rest for ever
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    chunks._WORKER_MODEL = None
    _restore_stop_signals()


def _restore_stop_signals() -> None:
    """This process's stop signals as they were before a scoring process's start was run in it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_jobs_must_be_positive(trained, messy_csv, tmp_path):
    models, _ = trained
    with pytest.raises(BatchInputError, match="jobs == 0"):
        score_files([messy_csv], tmp_path / "o.csv", load_model(models), jobs=0)
    assert main(["score", str(messy_csv), "-o", str(tmp_path / "o.csv"), "--model", str(models), "--jobs", "-1"]) != 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the scoring processes in /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_while_the_processes_start_stops_the_job_in_one_line(trained, small_data, tmp_path, signum):
    """A terminal's Ctrl-C (or `timeout`'s or systemd's SIGTERM, or a closed terminal's SIGHUP)
    reaches the whole process group, the scoring processes and multiprocessing's resource tracker
    too, most likely while they import: they leave it to the job, which stops in one line with no
    traceback. (A file of 20,000 rows: on a loaded machine one process scored the 600 rows of a
    small one before the other had imported numpy, and the job ended before it was stopped.)"""
    import subprocess
    import sys
    import time

    models, _ = trained
    cases = pd.read_parquet(small_data / "test.parquet")
    cases = pd.concat([cases] * -(-20_000 // len(cases)), ignore_index=True).head(20_000)
    cases["case_id"] = [f"c{i}" for i in range(len(cases))]
    path = tmp_path / "cases.csv"
    cases.to_csv(path, index=False)
    out = tmp_path / "out.csv"
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", str(path), "-o", str(out), "--model", str(models),
                             "--jobs", "2", "--chunk-rows", "100", "--quiet"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(spawned_children(proc.pid, loaded="_multiarray_umath")) < 1:  # importing the scoring code
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended before its processes started"
            time.sleep(0.01)
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, err
    assert err == f"kneepain score: error: stopped by {signal.Signals(signum).name} (no output was written)\n", err
    assert not out.exists()


def test_the_score_command_and_its_processes_reuse_freed_heap(trained, tmp_path, monkeypatch):
    """`kneepain score` and its scoring processes ask glibc's malloc to reuse freed memory (fewer
    page faults); where the C library is not glibc's, nothing changes and the call says so. The
    setting is process-wide, so it is tried in a child process, as is Arrow's pool."""
    import hashlib
    import pickle
    import platform
    import subprocess
    import sys

    import pyarrow as pa

    from pipeline.serve import reading

    child = subprocess.run([sys.executable, "-c", "from pipeline.serve.reading import reuse_freed_heap as r; "
                            "print(r())"], capture_output=True, text=True, timeout=120, check=True)
    assert child.stdout.strip() == str(platform.libc_ver()[0] == "glibc")
    # and Arrow's jemalloc pool, with its longer decay, where this pyarrow has jemalloc
    child = subprocess.run([sys.executable, "-c", "import pyarrow as pa; from pipeline.serve.reading import "
                            "lean_memory_pool as lean; lean(); print(pa.default_memory_pool().backend_name)"],
                           capture_output=True, text=True, timeout=120, check=True)
    try:
        pa.jemalloc_memory_pool()
        expected = "jemalloc"
    except NotImplementedError:
        expected = pa.default_memory_pool().backend_name
    assert child.stdout.strip() == expected
    calls = []
    monkeypatch.setattr(reading, "reuse_freed_heap", lambda: calls.append("command"))
    monkeypatch.setattr(chunks, "reuse_freed_heap", lambda: calls.append("process"))
    pd.DataFrame({"age": [30, 70], "sex": ["male", "female"]}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["score", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"), "--model", str(trained[0])]) == 0
    assert calls == ["command"]
    data = pickle.dumps({"model": 1})
    (tmp_path / "model.pickle").write_bytes(data)
    chunks._start_worker(str(tmp_path / "model.pickle"), hashlib.sha256(data).hexdigest())
    chunks._WORKER_MODEL = None
    _restore_stop_signals()
    assert calls == ["command", "process"]
