"""Run one measurement in a fresh Python process; read back its wall time and peak RSS.

Two kinds of measurement, each in its own child process so that one benchmark's memory and
warmed caches never leak into the next:

- :func:`time_in_child` imports a *case* (a module-level function ``case(n) -> callable``) in a
  child, calls ``case(n)`` once untimed (the setup: loading the knowledge base, generating input
  data), calls the returned callable ``warmup`` times untimed and then ``repeats`` times timed,
  and prints one JSON line with the timings; the median timed run is reported (the best would
  lean towards passing a target).
- :func:`run_command` runs any command (``kneepain train``) and times the whole process.

Peak RSS comes from :func:`os.wait4` for that child alone: ``ru_maxrss``, the largest resident set
of the child or of any descendant it waited for. It includes the interpreter and its imports, and
it is the largest single process, not a sum over parallel workers. The child's CPU time (user +
system, its waited-for descendants included) comes from the same call: on a shared machine it
moves less than wall time when other jobs take the cores.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["MIB", "BenchmarkError", "ChildRun", "Measurement", "Target", "log", "make_row", "median_run", "run_command",
           "time_in_child"]

REPO_ROOT = Path(__file__).resolve().parent.parent
_STDERR_TAIL = 20


class BenchmarkError(RuntimeError):
    """A benchmark's child process failed; the message holds its command, exit code and stderr tail."""


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: wall seconds around it, its peak RSS, what it printed and its CPU seconds."""

    wall_seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str
    cpu_seconds: float


@dataclass(frozen=True)
class Measurement:
    """The timed runs of one case in one child, and that child's peak RSS."""

    seconds: float  # the median timed run
    runs: tuple[float, ...]
    peak_rss_mib: float
    setup_peak_rss_mib: float  # peak RSS after the setup, before the timed calls


@dataclass(frozen=True)
class Target:
    """A performance target, judged only on a row of exactly ``size`` rows (not on ``--quick`` sizes)."""

    size: int
    max_seconds: float | None = None
    min_rows_per_second: float | None = None

    def text(self) -> str:
        at = f"{self.size / 1e6:g}M" if self.size >= 1_000_000 else f"{self.size:,}"
        if self.max_seconds is not None:
            return f"< {self.max_seconds:g} s at {at}"
        return f">= {self.min_rows_per_second:,.0f}/s at {at}"

    def met(self, size: int, seconds: float) -> bool | None:
        """True or False on a row of the target's size; None (not judged) on any other size."""
        if size != self.size:
            return None
        if self.max_seconds is not None:
            return seconds < self.max_seconds
        return size / seconds >= self.min_rows_per_second


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the final table."""
    print(message, file=sys.stderr, flush=True)


MIB = 1 << 20  # the benchmarks' unit of memory


def _max_rss_mib(ru_maxrss: int) -> float:
    """Peak RSS in MiB (2**20 bytes), as every memory figure of the benchmarks is given."""
    # Linux reports KiB, macOS bytes
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def run_command(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                cwd: str | Path | None = None, exit_codes: tuple[int, ...] = (0,)) -> ChildRun:
    """Run ``cmd`` to completion; measure its wall time and, with :func:`os.wait4`, its peak RSS.

    Output goes to temporary files rather than pipes, so a chatty child cannot block on a full
    pipe while we wait for it.

    Raises
    ------
    BenchmarkError
        If the command exits with a code other than ``exit_codes`` (by default, any but 0).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as rss:
        # started through benchmarks.rss, a small interpreter: see that module for why
        shim = [sys.executable, str(Path(__file__).with_name("rss.py")), rss.name, *map(str, cmd)]
        start = time.perf_counter()
        proc = subprocess.Popen(shim, stdout=out, stderr=err, env=env, cwd=cwd)
        try:
            proc.wait()
        except BaseException:  # Ctrl-C: do not leave the child running, then stop as asked
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        rss.seek(0)
        text = rss.read()
    if proc.returncode not in exit_codes or not text:
        tail = "\n".join(stderr.splitlines()[-_STDERR_TAIL:])
        raise BenchmarkError(f"`{' '.join(map(str, cmd))}` exited with code {proc.returncode}:\n{tail}")
    usage = json.loads(text)
    return ChildRun(usage.get("wall_seconds", wall), _max_rss_mib(usage["ru_maxrss"]), stdout, stderr,
                    usage["cpu_seconds"])


def time_in_child(case: Callable[[int], Callable[[], Any]], n: int, *, repeats: int = 3,
                  warmup: int = 1, collect: bool = True) -> Measurement:
    """Time ``case(n)()`` in a fresh interpreter: the median of ``repeats`` runs after ``warmup`` runs.

    ``case`` must be a module-level function of an importable module; it does the untimed setup
    and returns the callable to time. With ``collect`` (the default) a full garbage collection
    runs before each timed run, so one run's garbage is not collected inside the next; without
    it the runs follow each other as in a caller's loop (for calls of a few milliseconds, where
    a full collection walks the whole heap and leaves the CPU caches cold for the call after it).
    """
    cmd = [sys.executable, "-m", "benchmarks.harness", case.__module__, case.__qualname__, str(n),
           "--repeats", str(repeats), "--warmup", str(warmup), *([] if collect else ["--no-collect"])]
    child = run_command(cmd, cwd=REPO_ROOT)
    lines = child.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"`{' '.join(cmd)}` printed no JSON result line; stdout was:\n"
                             f"{child.stdout[-2000:]}") from err
    return Measurement(seconds=statistics.median(report["runs"]), runs=tuple(report["runs"]),
                       peak_rss_mib=child.peak_rss_mib, setup_peak_rss_mib=report["setup_peak_rss_mib"])


def median_run(runs: Sequence[ChildRun]) -> ChildRun:
    """The run of median wall time, with the largest peak RSS of all ``runs`` (a memory target
    holds only if every run met it)."""
    middle = sorted(runs, key=lambda r: r.wall_seconds)[len(runs) // 2]
    return replace(middle, peak_rss_mib=max(r.peak_rss_mib for r in runs))


def make_row(benchmark: str, size: int, seconds: float, *, peak_rss_mib: float | None,
             target: Target | None = None, rows_per_second: float | None = None,
             **details: Any) -> dict[str, Any]:
    """One result row (a table line and a JSON record).

    ``rows_per_second`` defaults to ``size / seconds``; ``details`` go into the JSON only.
    """
    return {
        "benchmark": benchmark,
        "size": int(size),
        "wall_seconds": float(seconds),
        "rows_per_second": float(rows_per_second if rows_per_second is not None else size / seconds),
        "peak_rss_mib": None if peak_rss_mib is None else round(float(peak_rss_mib), 1),
        "target": None if target is None else target.text(),
        "met": None if target is None else target.met(size, seconds),
        "details": details,
    }


def _child_main(argv: Sequence[str] | None = None) -> int:
    """Child side of :func:`time_in_child`: set up, warm up, time, print one JSON line."""
    import resource

    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness",
                                     description="time one benchmark case (used by time_in_child)")
    parser.add_argument("module")
    parser.add_argument("function")
    parser.add_argument("n", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-collect", action="store_true", help="no gc.collect() before each timed run")
    args = parser.parse_args(argv)
    call = getattr(importlib.import_module(args.module), args.function)(args.n)
    setup_rss = _max_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    for _ in range(args.warmup):
        call()
    runs = []
    for _ in range(args.repeats):
        if not args.no_collect:
            gc.collect()
        start = time.perf_counter()
        call()  # the result is dropped at once, so peak RSS is one call's worth
        runs.append(time.perf_counter() - start)
    print(json.dumps({"runs": runs, "setup_peak_rss_mib": round(setup_rss, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
