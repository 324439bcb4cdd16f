"""The results: the machine and library versions, a plain-text table and ``reports/benchmarks.json``."""

from __future__ import annotations

import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["REPORT_PATH", "environment", "format_table", "load_average", "write_report"]

REPORT_PATH = Path(__file__).resolve().parent.parent / "reports" / "benchmarks.json"
_DASH = "—"
_COLUMNS = ("benchmark", "size", "wall s", "rows/s", "peak RSS MiB", "target", "met?")
_RIGHT = {"size", "wall s", "rows/s", "peak RSS MiB"}


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none.

    Recorded before the first benchmark: on a small machine another process's load shows up
    directly in the timings (OpenMP models such as gradient boosting suffer most).
    """
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def environment(quick: bool) -> dict[str, Any]:
    """Where and when the benchmarks ran: date, cores usable, load, platform, Python and library versions."""
    from pipeline.model.persist import library_versions
    from pipeline.serve.chunks import available_cores

    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": available_cores(),  # the cores it may run on, as kneepain counts them
        "load_average_start": load_average(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "quick": quick,
    }


def _header(env: dict[str, Any]) -> str:
    versions = "  ".join(f"{k} {v}" for k, v in env["versions"].items())
    load = "" if env["load_average_start"] is None else f" (load {env['load_average_start']} at start)"
    mode = "  (--quick: smoke sizes, targets not judged)" if env["quick"] else ""
    return f"kneepain benchmarks  {env['date']}  {env['cpu_count']} cores{load}  {versions}{mode}"


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    seconds = row["wall_seconds"]
    met = {True: "yes", False: "no", None: _DASH}[row["met"]]
    return (
        row["benchmark"],
        f"{row['size']:,}",
        # three figures below 0.1 s: a 2.8 ms call is not "0.003" beside a 3 ms target
        f"{seconds:.3g}" if seconds < 0.1 else f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}",
        f"{row['rows_per_second']:,.0f}",
        _DASH if row["peak_rss_mib"] is None else f"{row['peak_rss_mib']:,.0f}",
        row["target"] or _DASH,
        met,
    )


def format_table(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The header line and one aligned line per row."""
    cells = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if name in _RIGHT else v.ljust(w)
                         for name, v, w in zip(_COLUMNS, values, widths)).rstrip()

    rule = "-" * len(line(_COLUMNS))
    return "\n".join([_header(env), rule, line(_COLUMNS), rule, *(line(c) for c in cells[1:]), rule])


def write_report(path: str | Path, env: dict[str, Any], rows: list[dict[str, Any]],
                 failed: dict[str, str]) -> None:
    """Write the environment, the rows and any failures as JSON, atomically."""
    from pipeline.core.files import write_json_atomic

    write_json_atomic(path, {**env, "results": rows, "failed": failed})
