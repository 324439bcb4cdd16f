"""``python -m benchmarks [NAME ...] [--quick] [--out PATH]``: run benchmarks, print a table, write JSON.

Without names every registered benchmark (:data:`benchmarks.BENCHMARKS`) runs, in order. The JSON
file (default ``reports/benchmarks.json``) holds the rows of this run only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import BENCHMARKS
from .harness import BenchmarkError, log
from .report import REPORT_PATH, environment, format_table, write_report

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Run kneepain's benchmarks and print a table.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--out", type=Path, default=REPORT_PATH,
                        help=f"JSON results file (default {REPORT_PATH.relative_to(REPORT_PATH.parents[1])})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks; return 0, 1 if any failed, 2 on an unknown name."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.print_usage(sys.stderr)
        print(f"python -m benchmarks: error: unknown benchmark(s) {', '.join(unknown)}; "
              f"known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    names = [n for n in BENCHMARKS if n in args.names] if args.names else list(BENCHMARKS)
    env = environment(args.quick)
    rows: list[dict] = []
    failed: dict[str, str] = {}
    for name in names:
        module = importlib.import_module(f"{__package__}.bench_{name}")
        try:
            rows += module.run(args.quick)
        except BenchmarkError as err:  # a failed child: report it, keep the other benchmarks' results
            failed[name] = str(err)
            log(f"{name}: FAILED: {err}")
    print(format_table(rows, env))
    for name in failed:
        print(f"{name}: FAILED (see stderr and {args.out})")
    write_report(args.out, env, rows, failed)
    print(f"Wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
