"""Generation: ``generate_codes`` and ``generate_cases`` on 1M cases, writing excluded.

Each is timed in its own child: the median of 3 runs after one warm-up, with the child's peak RSS.
The target (docs/benchmarks.md): 1M cases in under 2 s.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .harness import Target, log, make_row, time_in_child

__all__ = ["codes_case", "frame_case", "run"]

FULL_SIZE, QUICK_SIZE = 1_000_000, 100_000
TARGET = Target(size=1_000_000, max_seconds=2.0)


def codes_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): load the knowledge base. Timed: ``generate_codes(kb, n, seed=0)``."""
    from pipeline import load_knowledge_base
    from pipeline.data.generate import generate_codes

    return partial(generate_codes, load_knowledge_base(), n, seed=0)


def frame_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): load the knowledge base. Timed: ``generate_cases(kb, n, seed=0)`` (a DataFrame)."""
    from pipeline import generate_cases, load_knowledge_base

    return partial(generate_cases, load_knowledge_base(), n, seed=0)


def run(quick: bool) -> list[dict]:
    """Rows for ``generate_codes`` and ``generate_cases``."""
    n = QUICK_SIZE if quick else FULL_SIZE
    rows = []
    for name, case in (("generate_codes", codes_case), ("generate_cases (DataFrame)", frame_case)):
        log(f"generate: {name} on {n:,} cases ...")
        m = time_in_child(case, n)
        rows.append(make_row(f"generate: {name}", n, m.seconds, peak_rss_mib=m.peak_rss_mib, target=TARGET,
                             runs=m.runs, setup_peak_rss_mib=m.setup_peak_rss_mib))
    return rows
