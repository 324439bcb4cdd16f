"""Oracle posteriors on 1M generated cases.

- ``oracle_log_joint`` on :class:`~pipeline.core.schema.ParsedCases` built straight from
  ``generate_codes`` output: the oracle's arithmetic alone, parsing excluded;
- ``oracle_posterior`` on the DataFrame from ``generate_cases``: parsing, log joint and softmax,
  as a user calls it.

Each is timed in its own child (median of 3 after one warm-up). Target: at least 200,000 cases/s.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .harness import Target, log, make_row, time_in_child

__all__ = ["log_joint_case", "posterior_case", "run"]

FULL_SIZE, QUICK_SIZE = 1_000_000, 100_000
TARGET = Target(size=1_000_000, min_rows_per_second=200_000)


def log_joint_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): generate codes and wrap them as valid parsed cases. Timed: ``oracle_log_joint``."""
    import numpy as np

    from pipeline import load_knowledge_base
    from pipeline.core.oracle import oracle_log_joint
    from pipeline.core.parsing import ParsedCases
    from pipeline.data.generate import generate_codes

    kb = load_knowledge_base()
    codes, _, _ = generate_codes(kb, n, seed=0)
    parsed = ParsedCases(codes, valid=np.ones(n, dtype=bool), errors=None)
    return partial(oracle_log_joint, kb, parsed)


def posterior_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): a typed DataFrame from ``generate_cases``. Timed: ``oracle_posterior`` (parsing included)."""
    from pipeline import generate_cases, load_knowledge_base, oracle_posterior

    kb = load_knowledge_base()
    return partial(oracle_posterior, kb, generate_cases(kb, n, seed=0))


def run(quick: bool) -> list[dict]:
    """Rows for the log joint on parsed codes and the posterior on a DataFrame."""
    n = QUICK_SIZE if quick else FULL_SIZE
    rows = []
    for name, case in (("oracle_log_joint (parsed codes)", log_joint_case),
                       ("oracle_posterior (DataFrame)", posterior_case)):
        log(f"oracle: {name} on {n:,} cases ...")
        m = time_in_child(case, n)
        rows.append(make_row(f"oracle: {name}", n, m.seconds, peak_rss_mib=m.peak_rss_mib, target=TARGET,
                             runs=m.runs, setup_peak_rss_mib=m.setup_peak_rss_mib))
    return rows
