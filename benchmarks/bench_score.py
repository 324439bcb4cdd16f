"""Scoring: `kneepain score` end to end beside the I/O floor, `mlflow models predict` and a naive pandas script.

All score the same generated CSV with a ``case_id`` column (1M rows; 50k with ``--quick``) with the
project's model (``models/``, and for MLflow the registered champion in ``mlflow.db``: run
``make run`` first). Measured in subprocesses, in one run, so wall time includes start-up and
peak RSS is that process's own; ratios between rows of one run are what to compare on a shared
machine:

- the **I/O floor**: pyarrow reads the same CSV as text in 1 MB blocks and writes ``case_id``, a
  label and 9 floats per row as CSV, computing nothing; ``kneepain score`` (CSV -> CSV, default
  settings) against it: target at most 1.8x its wall time, and the ratio of their CPU seconds
  beside it, which a shared machine's other jobs move less (with ``--jobs 2``, for comparison,
  the peak RSS shown is the largest process's: the workers are its children). The 1M-row score
  and the floor run alternately, three times each, and their medians are compared (the peak RSS
  is the largest of the three): the issue's own figures were medians of 3, and a shared machine's
  speed drifts between one run and the next. The 4M-row file is scored three times too (its
  median time, its largest peak). ``--jobs 2`` and ``--columns case_id,prediction,p_dvt,triage``
  (only those columns computed) run once each, for comparison (their rows say so; no target:
  the issue's is at default settings);
- ``kneepain score``: peak RSS at most 350 MB (the largest of the three 1M runs; the table gives
  memory in MiB, and 350 MB is 333.8 MiB), and again on a
  file 4x larger, within 20% of the smallest of them (memory flat as the file grows); at least 20x
  the throughput of ``mlflow models predict``;
- start-up: ``kneepain score`` on a 10-row file (the issue: "well under half" of its 3.2 s;
  target under 40% of it, 1.28 s);
- the same 1M rows with ``NA`` for an answer, so that every row is rejected (R's missing-value
  marker), at default settings (the summary then reads the rejects back for their commonest
  reasons), against the scored file's median: rejecting a row should cost no more than scoring it;
- ``mlflow models predict --env-manager local`` on the same CSV file (``-t csv``), three times
  (the median): MLflow reads it with pandas and the pyfunc model scores it as ``predict()`` does.
  The registered champion it loads is first checked to be the model ``kneepain score`` uses
  (the same ``model.json``, knowledge base and decision layer), so the ratio compares engines,
  not models;
- a naive script: ``pandas.read_csv`` of the whole file, ``predict_proba``, ``to_csv``, once;

Every timed run's output is counted afterwards (untimed): a run that wrote fewer rows than it
read, or for the every-row-rejected file any scored row or fewer rejects, stops the benchmark
rather than reporting a fast time.
- ``predict()`` on a single dict, as a notebook calls it (``predict(case)``: the default model,
  looked up in the process's cache on each call): the median of 1,000 calls made one after
  another, as a caller's loop makes them (target under 3 ms); and, for comparison, the median of
  1,000 calls each after a full ``gc.collect()``, which walks the whole heap and leaves the CPU
  caches cold for the call, and of 1,000 calls given the loaded model (``model=``);
- ``predict()`` on a DataFrame of 200k generated cases (20k with ``--quick``), the model given:
  its chunks scored on two threads (kneepain's default where two cores are free) against one,
  the median of three calls each, in a child of its own each.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from .harness import MIB, REPO_ROOT, BenchmarkError, log, make_row, median_run, run_command, time_in_child

__all__ = ["run"]

SIZES = {False: (1_000_000, 4_000_000), True: (50_000, 200_000)}
ROUNDS = 3  # runs of the 1M score and of the floor, alternating
MODEL_URI = "models:/kneepain-classifier@champion"
CHOSEN = "case_id,prediction,p_dvt,triage"  # the issue's example of chosen columns: only they are computed
ISSUE_START_UP = 3.2  # seconds: `kneepain score` on a 10-row file when the issue was filed


def _write_csv(path: Path, n: int, seed: int = 1) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from pipeline import load_knowledge_base
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.data.generate import generate_codes

    kb = load_knowledge_base()
    with pacsv.CSVWriter(path, _schema()) as writer:
        for start in range(0, n, 500_000):
            m = min(500_000, n - start)
            codes, _, _ = generate_codes(kb, m, seed=seed + start)
            frame = codes_to_text_frame(codes)
            frame.insert(0, "case_id", [f"c{start + i:08d}" for i in range(m)])
            writer.write_table(pa.Table.from_pandas(frame.astype(str).replace({"nan": "", "<NA>": ""}),
                                                    schema=_schema(), preserve_index=False))


def _write_rejected(source: Path, path: Path) -> None:
    """``source`` with "NA" for every knee_swelling answer: each row is rejected, naming it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(column_types=_schema()))
    at = table.schema.get_field_index("knee_swelling")
    pacsv.write_csv(table.set_column(at, "knee_swelling", pa.repeat(pa.scalar("NA", pa.string()), table.num_rows)), path)


def _schema():
    import pyarrow as pa

    from pipeline.core.schema import FIELD_NAMES

    return pa.schema([pa.field(c, pa.string()) for c in ("case_id", *FIELD_NAMES)])


FLOOR_SCRIPT = """
import csv, sys
import pyarrow as pa, pyarrow.csv as pacsv
src, dst = sys.argv[1], sys.argv[2]
names = [f"p_{i}" for i in range(9)]
with open(src, encoding="utf-8") as fh:
    header = next(csv.reader(fh))
reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
                        convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                             strings_can_be_null=False))
schema = pa.schema([("case_id", pa.string()), ("label", pa.string()), *[(n, pa.float64()) for n in names]])
with pacsv.CSVWriter(dst, schema) as writer:
    for batch in reader:
        n = batch.num_rows
        ids = batch.column(batch.schema.get_field_index("case_id"))
        floats = [pa.repeat(pa.scalar(0.111111, pa.float64()), n) for _ in names]  # made in Arrow: no Python list
        writer.write_table(pa.table([ids, pa.repeat(pa.scalar("dvt", pa.string()), n), *floats], schema=schema))
"""


def _kneepain() -> str:
    return str(Path(sys.executable).with_name("kneepain"))


def _csv_rows(path: Path) -> int:
    """The data rows of a CSV file with a header (read as text, one column converted)."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, encoding="utf-8", newline="") as fh:
        first = next(csv.reader(fh))[0]
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(include_columns=[first],
                                                                       column_types={first: pa.string()}))
    return sum(batch.num_rows for batch in reader)


def _check_rows(path: Path, expected: int, what: str) -> None:
    """Stop the benchmark if ``what`` wrote other than ``expected`` rows to ``path``."""
    if not path.exists():
        raise BenchmarkError(f"{what} wrote no {path.name}.")
    if (got := _csv_rows(path)) != expected:
        raise BenchmarkError(f"{what} wrote {got:,} rows to {path.name}, not {expected:,}.")


def _json_predictions(path: Path, block_bytes: int = 1 << 24) -> int:
    """How many rows ``mlflow models predict`` wrote: its JSON holds one ``"prediction"`` key per row."""
    key, count, tail = b'"prediction":', 0, b""
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            data = tail + block
            count += data.count(key)
            tail = data[-(len(key) - 1):]  # a key cut by the block's end is counted in the next
    return count


CHAMPION_SCRIPT = """
import hashlib, json, sys, tempfile
from pathlib import Path
import mlflow
uri, models = sys.argv[1], Path(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    found = sorted(root.rglob("checksums.json"))
    if len(found) != 1:
        print(json.dumps({"differs": [f"{len(found)} model folders in {uri}"]}))
        sys.exit(0)
    theirs, ours = found[0].parent, models
    differs = [name for name in ("model.json", "knowledge_base.yaml")
               if hashlib.sha256((theirs / name).read_bytes()).digest() != hashlib.sha256((ours / name).read_bytes()).digest()]
    manifests = [json.loads((folder / "manifest.json").read_text(encoding="utf-8")) for folder in (theirs, ours)]
    differs += [f"manifest {key}" for key in ("classes", "decision") if manifests[0].get(key) != manifests[1].get(key)]
    print(json.dumps({"differs": differs}))
"""


_CASE = {"age": 71, "sex": "female", "sedentary": "yes", "leg_swelling": "yes", "skin_warm": "yes"}


def _single_case(n: int):
    """One ``predict(case)`` call on a dict with the default model (``n`` is unused: the harness
    repeats the call); the first call, untimed, loads the model into the process's cache."""
    from pipeline import predict

    predict(_CASE)
    return lambda: predict(_CASE)


def _single_case_loaded(n: int):
    """One ``predict(case, model=<loaded model>)`` call, which skips the cache's lookup."""
    from pipeline import predict
    from pipeline.serve.predict import get_model

    model = get_model()
    return lambda: predict(_CASE, model=model)


def _frame_cases(n: int, threads: int | None = None):
    """One ``predict(frame, model=<loaded model>)`` call on ``n`` generated cases, as a notebook
    holds them; ``threads``: the scoring threads (None: kneepain's choice, two where two cores are free)."""
    import pipeline.serve.predict as scoring
    from pipeline import load_knowledge_base, predict
    from pipeline.data.generate import generate_cases

    frame = generate_cases(load_knowledge_base(), n, seed=3).drop(columns=["condition", "severity"])
    model = scoring.get_model()
    return lambda: predict(frame, model=model, n_jobs=threads)


def _frame_cases_one_thread(n: int):
    """:func:`_frame_cases` with the chunks scored on one thread, for the ratio."""
    return _frame_cases(n, threads=1)


def run(quick: bool) -> list[dict]:
    from pipeline.core.paths import models_dir

    if not (models_dir() / "checksums.json").exists() or not (REPO_ROOT / "mlflow.db").exists():
        raise BenchmarkError("score: no trained model: run `make run` first (it trains and registers one).")
    small, large = SIZES[quick]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kneepain-bench-score-") as tmp:
        tmp = Path(tmp)
        for n in (small, large):
            log(f"score: writing a {n:,}-row CSV (not timed) ...")
            _write_csv(tmp / f"cases-{n}.csv", n)
        rates = {}

        def score(n: int, *extra: str):
            out = tmp / "out.csv"
            child = run_command([_kneepain(), "score", str(tmp / f"cases-{n}.csv"), "-o", str(out), "--quiet",
                                 "--model", str(models_dir()), *extra], cwd=tmp)
            _check_rows(out, n, " ".join(["kneepain score", *extra]))
            out.unlink()
            return child

        def floor_run():
            child = run_command([sys.executable, "-c", FLOOR_SCRIPT, str(tmp / f"cases-{small}.csv"),
                                 str(tmp / "floor.csv")], cwd=tmp)
            _check_rows(tmp / "floor.csv", small, "the I/O floor")
            return child

        # the 1M run and the floor alternate, ROUNDS times each, and their medians are compared:
        # a shared machine's speed drifts within minutes, and this keeps both under the same drift
        log(f"score: kneepain score on {small:,} rows and the I/O floor, alternately, {ROUNDS} times each ...")
        ours, floors = [], []
        for _ in range(ROUNDS):
            ours.append(score(small))
            floors.append(floor_run())
        child, floor = median_run(ours), median_run(floors)
        rates[small] = (child.wall_seconds, child.peak_rss_mib)
        rows.append(make_row(f"score: kneepain score (CSV -> CSV; median of {ROUNDS}, peak RSS the largest)", small,
                             child.wall_seconds, peak_rss_mib=child.peak_rss_mib,
                             runs=[round(c.wall_seconds, 3) for c in ours]))  # its targets are the ratios below
        log(f"score: kneepain score on {large:,} rows, {ROUNDS} times ...")
        bigs = [score(large) for _ in range(ROUNDS)]
        child = median_run(bigs)
        rates[large] = (child.wall_seconds, child.peak_rss_mib)
        rows.append(make_row(f"score: kneepain score (CSV -> CSV; median of {ROUNDS}, peak RSS the largest)", large,
                             child.wall_seconds, peak_rss_mib=child.peak_rss_mib,
                             runs=[round(c.wall_seconds, 3) for c in bigs]))
        rows.append(make_row(f"score: I/O floor (pyarrow text read, id + label + 9 floats written; median of {ROUNDS})",
                             small, floor.wall_seconds, peak_rss_mib=floor.peak_rss_mib,
                             runs=[round(c.wall_seconds, 3) for c in floors]))
        ratio = rates[small][0] / floor.wall_seconds
        rows.append(make_row(f"score: kneepain score / I/O floor (wall) = {ratio:.2f}x", small, rates[small][0],
                             peak_rss_mib=None, ratio=round(ratio, 2)))
        rows[-1]["target"], rows[-1]["met"] = "<= 1.8x", bool(ratio <= 1.8) if not quick else None
        # CPU seconds (user + system) move less than wall time when other jobs share the cores
        cpu, floor_cpu = (statistics.median(c.cpu_seconds for c in runs) for runs in (ours, floors))
        rows.append(make_row(f"score: CPU seconds, kneepain score {cpu:.1f} / I/O floor {floor_cpu:.1f} = "
                             f"{cpu / floor_cpu:.2f}x (medians of {ROUNDS})", small, rates[small][0], peak_rss_mib=None,
                             cpu_seconds=round(cpu, 2), floor_cpu_seconds=round(floor_cpu, 2),
                             cpu_ratio=round(cpu / floor_cpu, 2),
                             cpu_runs=[round(c.cpu_seconds, 2) for c in ours],
                             floor_cpu_runs=[round(c.cpu_seconds, 2) for c in floors]))
        log(f"score: kneepain score --jobs 2 on {small:,} rows ...")
        child = score(small, "--jobs", "2")
        ratio2 = child.wall_seconds / floor.wall_seconds
        rows.append(make_row(f"score: kneepain score --jobs 2 / I/O floor (wall; 1 run) = {ratio2:.2f}x; RSS of the "
                             "largest process", small, child.wall_seconds, peak_rss_mib=child.peak_rss_mib,
                             ratio=round(ratio2, 2), speedup_vs_jobs_1=round(rates[small][0] / child.wall_seconds, 2)))
        log(f"score: kneepain score --columns {CHOSEN} on {small:,} rows ...")
        child = score(small, "--columns", CHOSEN)
        ratio3 = child.wall_seconds / floor.wall_seconds
        rows.append(make_row(f"score: kneepain score --columns {CHOSEN} / I/O floor (wall; 1 run) = {ratio3:.2f}x", small,
                             child.wall_seconds, peak_rss_mib=child.peak_rss_mib, ratio=round(ratio3, 2),
                             speedup_vs_all_columns=round(rates[small][0] / child.wall_seconds, 2)))
        log(f"score: kneepain score on {small:,} rows, every one rejected (an R export's NA answers) ...")
        _write_rejected(tmp / f"cases-{small}.csv", tmp / "rejected.csv")
        # not --quiet: at default settings the summary reads the rejects file back for its commonest reasons
        child = run_command([_kneepain(), "score", str(tmp / "rejected.csv"), "-o", str(tmp / "out.csv"),
                             "--model", str(models_dir())], cwd=tmp, exit_codes=(1,))  # 1: rows were rejected
        _check_rows(tmp / "out.csv", 0, "kneepain score on the every-row-rejected file")
        _check_rows(tmp / "out.csv.rejects.csv", small, "kneepain score on the every-row-rejected file")
        ratio4 = child.wall_seconds / rates[small][0]
        rows.append(make_row(f"score: every row rejected / every row scored (wall; 1 run) = {ratio4:.2f}x", small,
                             child.wall_seconds, peak_rss_mib=child.peak_rss_mib, ratio=round(ratio4, 2)))
        rows.append(make_row(f"score: peak RSS at {small:,} rows", small, rates[small][0], peak_rss_mib=rates[small][1]))
        rows[-1]["target"] = f"<= 350 MB ({350e6 / MIB:.1f} MiB)"
        rows[-1]["met"] = bool(rates[small][1] * MIB <= 350e6) if not quick else None
        (tmp / "ten.csv").write_text("".join((tmp / f"cases-{small}.csv").open().readlines()[:11]))
        starts = []
        for _ in range(3):
            starts.append(run_command([_kneepain(), "score", str(tmp / "ten.csv"), "-o", str(tmp / "ten-out.csv"),
                                       "--quiet", "--model", str(models_dir())], cwd=tmp))
            _check_rows(tmp / "ten-out.csv", 10, "kneepain score on the 10-row file")
        started = median_run(starts)
        start_up = started.wall_seconds
        rows.append(make_row(f"score: start-up (10-row file, median of 3) = {start_up / ISSUE_START_UP:.0%} of the "
                             f"issue's {ISSUE_START_UP} s", 10, start_up, peak_rss_mib=started.peak_rss_mib))
        # "well under half": under 40%
        rows[-1]["target"] = f"< {0.4 * ISSUE_START_UP:.2f} s (40% of {ISSUE_START_UP} s)"
        rows[-1]["met"] = bool(start_up < 0.4 * ISSUE_START_UP) if not quick else None
        # against the smallest of the 1M runs' peaks (the 350 MB check takes the largest): both checks
        # lean against passing
        least = min(c.peak_rss_mib for c in ours)
        growth = rates[large][1] / least
        rows.append(make_row(f"score: peak RSS {large:,} vs {small:,} rows (the least of {ROUNDS}) = {growth:.2f}x", large,
                             rates[large][0], peak_rss_mib=rates[large][1], rss_ratio=round(growth, 3),
                             small_peak_rss_mib=round(least, 1)))
        rows[-1]["target"], rows[-1]["met"] = "RSS within 20%", bool(growth <= 1.2) if not quick else None

        log("score: naive pandas read_csv / predict_proba / to_csv ...")
        script = textwrap.dedent(f"""
            import pandas as pd
            from pipeline.serve.loading import load_model
            model = load_model()
            frame = pd.read_csv({str(tmp / f'cases-{small}.csv')!r}, dtype=str, keep_default_na=False)
            proba = model.estimator.predict_proba(frame)
            pd.DataFrame(proba, columns=list(model.classes)).assign(case_id=frame["case_id"]).to_csv(
                {str(tmp / 'naive.csv')!r}, index=False)
        """)
        child = run_command([sys.executable, "-c", script], cwd=REPO_ROOT)
        _check_rows(tmp / "naive.csv", small, "the naive pandas script")
        rows.append(make_row("score: naive pandas script (1 run)", small, child.wall_seconds,
                             peak_rss_mib=child.peak_rss_mib))

        n_ml = small  # the whole file
        env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI")
               or f"sqlite:///{REPO_ROOT / 'mlflow.db'}",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        checked = run_command([sys.executable, "-c", CHAMPION_SCRIPT, MODEL_URI, str(models_dir())], cwd=tmp, env=env)
        if differs := json.loads(checked.stdout.strip().splitlines()[-1])["differs"]:
            raise BenchmarkError(f"{MODEL_URI} is not the model in {models_dir()} ({', '.join(differs)} differ): "
                                 "run `make run` to train and register them together.")
        mlflow_runs = []
        for round_ in range(ROUNDS):
            log(f"score: mlflow models predict on the same {n_ml:,}-row CSV, run {round_ + 1} of {ROUNDS} ...")
            out = tmp / "mlflow-out.json"
            mlflow_runs.append(run_command([str(Path(sys.executable).with_name("mlflow")), "models", "predict", "-m",
                                            MODEL_URI, "-i", str(tmp / f"cases-{small}.csv"), "-t", "csv", "-o",
                                            str(out), "--env-manager", "local"], cwd=tmp, env=env))
            if (got := _json_predictions(out)) != n_ml:
                raise BenchmarkError(f"mlflow models predict wrote {got:,} predictions, not {n_ml:,}.")
            out.unlink()
        child = median_run(mlflow_runs)
        mlflow_rate = n_ml / child.wall_seconds
        rows.append(make_row(f"score: mlflow models predict (the same CSV; median of {ROUNDS})", n_ml,
                             child.wall_seconds, peak_rss_mib=child.peak_rss_mib,
                             runs=[round(c.wall_seconds, 2) for c in mlflow_runs]))
        ours = small / rates[small][0]
        rows.append(make_row(f"score: kneepain score / mlflow models predict = {ours / mlflow_rate:.1f}x", small, rates[small][0],
                             peak_rss_mib=None, rows_per_second=ours, speedup=round(ours / mlflow_rate, 2)))
        rows[-1]["target"], rows[-1]["met"] = ">= 20x", bool(ours / mlflow_rate >= 20) if not quick else None

    n_calls = 100 if quick else 1000
    log(f"score: predict() on one dict, {n_calls} calls in a loop, then {n_calls} after a gc.collect() each ...")
    loop = time_in_child(_single_case, 1, repeats=n_calls, warmup=10, collect=False)
    cold = time_in_child(_single_case, 1, repeats=n_calls, warmup=10)
    loaded = time_in_child(_single_case_loaded, 1, repeats=n_calls, warmup=10, collect=False)
    median, cold_median, loaded_median = (float(sorted(m.runs)[len(m.runs) // 2]) for m in (loop, cold, loaded))
    rows.append(make_row("score: predict() one dict (median call in a loop)", 1, median, peak_rss_mib=loop.peak_rss_mib,
                         calls=n_calls))
    rows[-1]["target"], rows[-1]["met"] = "< 3 ms median", bool(median < 0.003) if not quick else None
    rows.append(make_row("score: predict() one dict (median call after a gc.collect())", 1, cold_median,
                         peak_rss_mib=cold.peak_rss_mib, calls=n_calls))
    rows.append(make_row("score: predict(case, model=<loaded>) one dict (median call in a loop)", 1, loaded_median,
                         peak_rss_mib=loaded.peak_rss_mib, calls=n_calls))
    n_frame = 20_000 if quick else 200_000
    log(f"score: predict() on a {n_frame:,}-row DataFrame, on two threads and on one, {ROUNDS} calls each ...")
    two = time_in_child(_frame_cases, n_frame, repeats=ROUNDS)
    one = time_in_child(_frame_cases_one_thread, n_frame, repeats=ROUNDS)
    rows.append(make_row(f"score: predict(DataFrame), chunks on two threads / one = {one.seconds / two.seconds:.2f}x "
                         f"(median of {ROUNDS})", n_frame, two.seconds, peak_rss_mib=two.peak_rss_mib,
                         runs=list(two.runs), one_thread_runs=list(one.runs), one_thread_peak_rss_mib=one.peak_rss_mib))
    return rows
