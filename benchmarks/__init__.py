"""Benchmarks for kneepain: ``python -m benchmarks [NAME ...] [--quick]`` (``make bench``).

A benchmark is a module ``benchmarks/bench_<name>.py`` with a function
``run(quick: bool) -> list[dict]`` that returns rows made by :func:`benchmarks.harness.make_row`;
adding its ``<name>`` to :data:`BENCHMARKS` registers it. Modules are imported only when run, so
this package does no work at import time.
"""

__all__ = ["BENCHMARKS"]

# Run in this order: quick in-process measurements first, the training command last.
BENCHMARKS: tuple[str, ...] = ("generate", "oracle", "featurize", "score", "dask", "train")
