"""Scoring throughput: the Dask engine on a local cluster (1 and 2 workers) against the pandas engine.

The input, 4M cases as text with ``case_id`` (``--quick``: 200k) in eight Parquet files, is
generated once into a temporary folder (untimed) with ``generate_codes`` + ``codes_to_text_frame``.
Each engine then scores all of it in its own child process (``python -m benchmarks.bench_dask``):

- ``score_files`` (the pandas engine, one process) into one Parquet file;
- ``score_files_dask`` on ``dask_client(n_workers=k)`` for k = 1 and 2 into a folder of parts;
- ``score_files_dask`` for k = 1 and 2 on the same cases as **one** CSV file (every text
  quoted, as Arrow and R write a CSV, with ``case_id``; not timed), which the engine splits at
  one block size for both: the default for 2 workers (about two blocks per worker; ``--quick``:
  the same without the 64 MB floor, so the small file is split too), into as many blocks for
  both after the small leading blocks, one per worker (``plan_blocks``' ``lead``: 1 or 2 of
  them, so the even blocks' bounds differ a little between the two; 5 and 6 blocks in all), three times
  each, alternating, then the ratio of the two median wall times of the whole child process
  (target: 2 workers at least 1.7x one, on a machine with at least 2 cores; the issue's own
  figures were medians of 3 of whole processes, and a single run's ratio moved between 1.5x and
  2.1x on one shared machine): its imports, starting the cluster, loading the model on each
  worker, the scoring call (the CSV's planning pass on the driver is inside it) and closing the
  cluster. Beside it, for comparison, the same ratio of the scoring call alone, and of the call
  with the cluster's start-up and model load.

Every engine scores with its default chunk size (``pipeline.serve.CHUNK_ROWS``). For the
many-file rows the wall time is that of the scoring call alone: imports, the model load and, for
Dask, starting the cluster and loading the model on each worker happen before it (the start-up is
in the JSON details as ``startup_seconds``). Every run must score every row and reject none.
Peak RSS is each process's own high-water mark (``VmHWM``, read
in that process): the pandas engine's process; for Dask the largest worker's, read with
``client.run`` after the job, with every worker's and the driver's in the details. (``ru_maxrss``
from ``os.wait4`` is not used: on Linux it carries over the RSS of the process that forked the
child. The input is generated in a child too, to keep the parent small.) The model is a copy of
the project's ``models/`` if that scores with this code, else a small one trained into the
temporary folder first (untimed). The many-file rows have no target: they are for comparison (on
2 cores, 2 workers can at best halve the time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.serve import CHUNK_ROWS  # the engines' default (the pandas engine's and each Dask task's)

from .harness import REPO_ROOT, BenchmarkError, _max_rss_mib, log, make_row, run_command

__all__ = ["run"]

FULL_SIZE, QUICK_SIZE = 4_000_000, 200_000
N_FILES = 8
WORKERS = (1, 2)
ONE_FILE_ROUNDS = 3  # runs of each worker count on the one file, alternating; their medians are compared
SEED = 20261125
_QUICK_TRAIN = """seed: 0
cv: {folds: 3, max_rows: 0, n_jobs: 1}
candidates: [logistic]
models:
  logistic: {C: 1.0, max_iter: 300, tol: 0.0001}
  hist_gradient_boosting: {max_iter: 15, learning_rate: 0.2, max_leaf_nodes: 15, l2_regularization: 0.0, early_stopping: false}
  mlp: {hidden_layer_sizes: [16], alpha: 0.001, learning_rate_init: 0.003, max_iter: 40, early_stopping: false}
selection: {log_loss_tolerance: 0.003}
calibration: {method: temperature, min_improvement: 0.0}
tracking: {experiment: kneepain-bench, registered_model: kneepain-bench, alias: champion}
"""


def _write_inputs(folder: Path, n: int) -> list[Path]:
    """``n`` generated cases as text in ``N_FILES`` Parquet files (untimed setup)."""
    from pipeline import load_knowledge_base
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.core.schema import ID_COLUMN
    from pipeline.data.generate import generate_codes

    kb, paths = load_knowledge_base(), []
    for i in range(N_FILES):
        size = n // N_FILES + (i < n % N_FILES)
        codes, _, _ = generate_codes(kb, size, seed=SEED + i)
        frame = codes_to_text_frame(codes).astype({"age": str})
        frame.insert(0, ID_COLUMN, [f"f{i}-{j:07d}" for j in range(size)])
        paths.append(folder / f"cases-{i:02d}.parquet")
        frame.to_parquet(paths[-1], index=False)
    return paths


def _write_one_csv(parts: Path, out: Path) -> Path:
    """The cases of :func:`_write_inputs` (the Parquet files in ``parts``) again, as one CSV file in ``out`` (untimed)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = out / "cases.csv"
    # every text quoted, as Arrow, pandas' to_csv(quoting=csv.QUOTE_NONNUMERIC) and R's write.csv write it (and
    # as the score benchmark's file is): the driver's planning pass costs more on quotes than on bare fields
    with pacsv.CSVWriter(path, pq.read_schema(next(parts.glob("*.parquet"))).remove_metadata()) as writer:
        for part in sorted(parts.glob("*.parquet")):
            writer.write_table(pq.read_table(part).replace_schema_metadata(None))
    return path


def _model(tmp: Path) -> tuple[Path, str]:
    """A copy of the project's model if it scores with this code, else a small model trained into ``tmp`` (untimed).

    The copy keeps a concurrent ``make run`` from changing the model between the engines' runs.
    """
    import shutil

    from pipeline.core.paths import models_dir
    from pipeline.model.persist import MANIFEST_FILE

    if (models_dir() / MANIFEST_FILE).exists():
        copy = shutil.copytree(models_dir(), tmp / "project-model")
        try:
            _child("check-model", "--model", str(copy), "--inputs", str(tmp))
            return copy, "the project's models/ (winner " + json.loads((copy / MANIFEST_FILE).read_text())["winner"] + ")"
        except BenchmarkError as err:
            log(f"dask: the project's models/ does not score with this code ({str(err).splitlines()[-1]}); "
                "training a small model instead")
    kneepain = Path(sys.executable).with_name("kneepain")
    if not kneepain.exists():
        raise BenchmarkError(f"{kneepain} does not exist: install the project (`pip install -e .`).")
    (tmp / "generate.yaml").write_text(f"seed: {SEED}\nsplits:\n  train: {{n: 10000}}\n  valid: {{n: 3000}}\n"
                                       "  calib: {n: 3000}\n", encoding="utf-8")
    (tmp / "train.yaml").write_text(_QUICK_TRAIN, encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    log("dask: training a small model (not timed) ...")
    run_command([str(kneepain), "generate", "--config", str(tmp / "generate.yaml"), "--out", str(tmp / "data")],
                env=env, cwd=tmp)
    run_command([str(kneepain), "train", "--config", str(tmp / "train.yaml"), "--data", str(tmp / "data"),
                 "--out", str(tmp / "models")], env=env, cwd=tmp)
    return tmp / "models", "a small logistic model trained for the benchmark"


def _child(*args: str) -> dict:
    """What the child printed (its JSON line), with its whole process's wall time as ``process_seconds``."""
    child = run_command([sys.executable, "-m", "benchmarks.bench_dask", *args], cwd=REPO_ROOT)
    return {**json.loads(child.stdout.strip().splitlines()[-1]), "process_seconds": child.wall_seconds}


def _check_scored(result: dict, n: int, what: str) -> None:
    """Stop the benchmark unless ``what`` scored all ``n`` rows and rejected none."""
    if result["rows"] != n or result["rows_rejected"]:
        raise BenchmarkError(f"{what} read {result['rows']:,} rows of {n:,} and rejected {result['rows_rejected']:,}: "
                             "every row should be scored.")


def run(quick: bool) -> list[dict]:
    """One row for the pandas engine, one per Dask worker count."""
    n = QUICK_SIZE if quick else FULL_SIZE
    rows = []
    with tempfile.TemporaryDirectory(prefix="kneepain-bench-dask-") as name:
        tmp = Path(name)
        model, model_text = _model(tmp)
        log(f"dask: writing {n:,} cases as {N_FILES} Parquet files (not timed) ...")
        inputs = tmp / "inputs"
        inputs.mkdir()
        _child("write-inputs", "--n", str(n), "--inputs", str(inputs))
        for engine, workers in [("pandas", 0)] + [("dask", k) for k in WORKERS]:
            label = "pandas engine (score_files)" if engine == "pandas" else \
                f"dask engine, {workers} worker{'s' * (workers > 1)}"
            log(f"dask: scoring {n:,} rows with the {label} ...")
            out = tmp / f"out-{engine}-{workers}"
            result = _child(engine, "--workers", str(workers), "--model", str(model), "--inputs", str(inputs),
                            "--out", str(out))
            _check_scored(result, n, f"the {label}")
            if engine == "pandas":
                peak, details = result["driver_peak_rss_mib"], {}
            else:
                peak = max(result["worker_peak_rss_mib"])
                details = {"worker_peak_rss_mib": result["worker_peak_rss_mib"],
                           "driver_peak_rss_mib": result["driver_peak_rss_mib"],
                           "startup_seconds": result["startup_seconds"]}
            rows.append(make_row(f"score: {label}", n, result["seconds"], peak_rss_mib=peak, files=N_FILES,
                                 chunk_rows=CHUNK_ROWS, rows_rejected=result["rows_rejected"], model=model_text,
                                 **details))
        rows += _one_file_rows(tmp, inputs, model, model_text, n, quick)
    return rows


def _one_file_rows(tmp: Path, inputs: Path, model: Path, model_text: str, n: int, quick: bool) -> list[dict]:
    """Dask with 1 and 2 workers on the inputs as one CSV file, and the ratio of their wall times."""
    one = tmp / "one-file"
    one.mkdir()
    _child("write-one-csv", "--inputs", str(inputs), "--out", str(one))
    from pipeline.serve.chunks import available_cores
    from pipeline.serve.dask import default_block_bytes

    size = f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n // 1000}k"
    # one block size for both worker counts, the default's for the most workers (about two blocks per
    # worker; --quick: the same without its 64 MB floor), so that the ratio measures the workers
    # alone: as many even blocks for both, after the engine's small leading ones (one per worker)
    most = max(WORKERS)
    block = default_block_bytes([one / "cases.csv"], most, min_bytes=1 if quick else None)
    results: dict[int, list[dict]] = {workers: [] for workers in WORKERS}
    for round_ in range(ONE_FILE_ROUNDS):  # alternately, so that a slow spell of the machine hits both
        for workers in WORKERS:
            log(f"dask: scoring one {size}-row CSV with {workers} worker(s), run {round_ + 1} of {ONE_FILE_ROUNDS} ...")
            result = _child("dask", "--workers", str(workers), "--model", str(model), "--inputs", str(one),
                            "--out", str(tmp / f"out-one-{workers}-{round_}"), "--csv", "--block-bytes", str(block))
            _check_scored(result, n, f"{workers} worker(s) on the {size}-row CSV")
            results[workers].append(result)
    rows, process, call, with_startup = [], {}, {}, {}
    for workers in WORKERS:
        blocks = _child("count-blocks", "--inputs", str(one), "--csv", "--block-bytes", str(block),
                        "--workers", str(workers))["blocks"]
        label = (f"dask engine, {workers} worker{'s' * (workers > 1)}, one {size}-row CSV split into {blocks} "
                 f"blocks (whole process, median of {ONE_FILE_ROUNDS})")
        runs = results[workers]
        process[workers] = statistics.median(r["process_seconds"] for r in runs)
        call[workers] = statistics.median(r["seconds"] for r in runs)
        with_startup[workers] = statistics.median(r["seconds"] + r["startup_seconds"] for r in runs)
        rows.append(make_row(f"score: {label}", n, process[workers],
                             peak_rss_mib=max(max(r["worker_peak_rss_mib"]) for r in runs),
                             files=1, chunk_rows=CHUNK_ROWS, model=model_text, blocks=blocks,
                             runs_seconds=[round(r["process_seconds"], 2) for r in runs],
                             call_seconds=[round(r["seconds"], 2) for r in runs],
                             worker_peak_rss_mib=[r["worker_peak_rss_mib"] for r in runs],
                             driver_peak_rss_mib=[r["driver_peak_rss_mib"] for r in runs],
                             startup_seconds=[r["startup_seconds"] for r in runs]))
    ratio = process[1] / process[2]
    rows.append(make_row(f"score: Dask 1 vs 2 workers on one {size}-row file (whole process) = {ratio:.2f}x", n,
                         process[2], peak_rss_mib=None, ratio=round(ratio, 2), cpu_count=available_cores()))
    rows[-1]["target"], rows[-1]["met"] = ">= 1.7x", bool(ratio >= 1.7) if not quick else None
    # for comparison: the scoring call alone (the workers' share), and with the cluster's start-up
    for text, times in (("the scoring call alone", call), ("the call with the cluster's start-up and model load",
                                                           with_startup)):
        ratio = times[1] / times[2]
        rows.append(make_row(f"score: the same, {text} = {ratio:.2f}x", n, times[2], peak_rss_mib=None,
                             ratio=round(ratio, 2)))
    return rows


def _warm(model: str) -> None:
    """On a worker: import the scoring code and load the model into the process cache."""
    from pipeline.serve.predict import get_model

    get_model(model)


def _peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` where there is /proc, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _max_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child_main(argv: Sequence[str] | None = None) -> int:
    """Child side: score the inputs with one engine; print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dask",
                                     description="score the benchmark inputs with one engine (used by run)")
    parser.add_argument("engine", choices=("pandas", "dask", "write-inputs", "write-one-csv", "check-model",
                                           "count-blocks"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int)
    parser.add_argument("--csv", action="store_true", help="score the CSV files of --inputs (default: Parquet)")
    parser.add_argument("--block-bytes", type=int, default=0, help="the Dask engine's block size (0: its default)")
    args = parser.parse_args(argv)
    if args.engine == "write-inputs":
        _write_inputs(args.inputs, args.n)
        print(json.dumps({"files": N_FILES}))
        return 0
    if args.engine == "write-one-csv":
        print(json.dumps({"file": str(_write_one_csv(args.inputs, args.out))}))
        return 0
    if args.engine == "check-model":
        from pipeline.serve.predict import predict

        print(json.dumps({"rows": len(predict({"age": 30, "sex": "male"}, model=args.model))}))
        return 0
    from pipeline.core.cluster import dask_client
    from pipeline.serve.batch import score_files
    from pipeline.serve.dask import score_files_dask
    from pipeline.serve.predict import get_model

    paths = sorted(args.inputs.glob("*.csv" if args.csv else "*.parquet"))
    if args.engine == "count-blocks":  # the blocks the engine splits one input into, at --block-bytes and --workers
        from pipeline.core.blocks import plan_blocks

        blocks = sum(len(list(plan_blocks(p, chunk_rows=CHUNK_ROWS, block_bytes=args.block_bytes, lead=args.workers)))
                     for p in paths)
        print(json.dumps({"blocks": blocks}))
        return 0
    if args.engine == "pandas":
        model = get_model(args.model)
        start = time.perf_counter()
        summary = score_files(paths, args.out.with_suffix(".parquet"), model, chunk_rows=CHUNK_ROWS)
        result = {"seconds": time.perf_counter() - start, "driver_peak_rss_mib": round(_peak_rss_mib(), 1)}
    else:
        begin = time.perf_counter()
        with dask_client(n_workers=args.workers) as client:
            client.run(_warm, args.model)
            start = time.perf_counter()
            summary = score_files_dask(paths, args.out, args.model, client=client, chunk_rows=CHUNK_ROWS,
                                       block_bytes=args.block_bytes or None)
            result = {"seconds": time.perf_counter() - start, "startup_seconds": start - begin,
                      "worker_peak_rss_mib": [round(v, 1) for v in client.run(_peak_rss_mib).values()],
                      "driver_peak_rss_mib": round(_peak_rss_mib(), 1)}
    result.update(rows=summary.rows, rows_rejected=summary.rows_rejected)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
