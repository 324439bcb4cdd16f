"""The `kneepain` command line: a thin layer that parses arguments, calls one library function and prints.

Each command is ``_<name>_parser(subparsers)`` plus ``_<name>(args) -> int``; :func:`main` takes
``argv`` so tests call ``main(["generate", ...])`` directly.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import __version__

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.serve.batch import ScoreSummary
    from pipeline.serve.loading import LoadedModel

__all__ = ["main"]

EXIT_OK, EXIT_REJECTED, EXIT_FATAL = 0, 1, 2


class UsageError(Exception):
    """A fatal problem the user can fix; printed as one line."""


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate the synthetic splits and print the oracle's scores",
                       description="Default: the splits of configs/generate.yaml into data/synthetic. With "
                                   "--engine dask: --n cases in partitions with independent seeds, on a cluster.")
    p.add_argument("--config", default=None, help="generate config (default configs/generate.yaml)")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")
    p.add_argument("--out", default=None, help="output folder (default data/synthetic; with --engine dask a new "
                                               "folder, default data/generated)")
    p.add_argument("--engine", choices=("local", "dask"), default="local")
    p.add_argument("--n", type=int, default=None, help="cases to generate (--engine dask)")
    p.add_argument("--partitions", type=int, default=None,
                   help="partitions (--engine dask; default one per 1M cases; the data depends on it, not on workers)")
    p.add_argument("--seed", type=_seed, default=None, help="seed (--engine dask; default the generate config's)")
    p.add_argument("--population", choices=("default", "shift"), default="default", help="(--engine dask)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a local cluster)")


def _generate_dask(args: argparse.Namespace, kb, config) -> int:
    from pipeline.core.cluster import dask_client
    from pipeline.core.paths import data_dir
    from pipeline.data.parallel import generate_dask

    if args.n is None or args.n < 1:
        raise UsageError("--engine dask needs --n, the number of cases (>= 1).")
    partitions = max(1, -(-args.n // 1_000_000)) if args.partitions is None else args.partitions
    if not 1 <= partitions <= args.n:
        raise UsageError(f"--partitions == {partitions}, must be in 1..{args.n:,} (--n: at least one case each).")
    out = Path(args.out) if args.out else data_dir().parent / "generated"
    seed = config.seed if args.seed is None else args.seed
    with dask_client(args.scheduler) as client:
        manifest = generate_dask(kb, args.n, seed=seed, partitions=partitions, out_dir=out, client=client,
                                 population=args.population)
    print(f"Wrote {args.n:,} cases in {len(manifest['files'])} partitions (seed {seed}) to {out}/")
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    from pipeline.core.config import PIPELINE_SPLITS, GenerateConfig, load_config
    from pipeline.core.knowledge import load_knowledge_base
    from pipeline.core.paths import config_path, data_dir
    from pipeline.data.datasets import format_data_summary
    from pipeline.stages import generate_stage

    dask_only = [flag for flag, given in (("--n", args.n is not None), ("--partitions", args.partitions is not None),
                                          ("--seed", args.seed is not None),
                                          ("--population", args.population != "default"),
                                          ("--scheduler", args.scheduler is not None)) if given]
    if dask_only and args.engine != "dask":
        raise UsageError(f"{', '.join(dask_only)}: for --engine dask only; the splits' sizes, seed and populations "
                         "are set in the generate config (--config, default configs/generate.yaml).")
    kb = load_knowledge_base(args.kb)
    path = args.config or config_path("generate.yaml")
    config = load_config(GenerateConfig, path)
    if args.engine == "dask":
        return _generate_dask(args, kb, config)
    if missing := config.missing_pipeline_splits():
        raise UsageError(f"{path}: splits: no {', '.join(missing)}, which train and evaluate read (a misspelt name "
                         f"would leave the earlier file in place); give every one of {', '.join(PIPELINE_SPLITS)}.")
    out = Path(args.out) if args.out else data_dir()
    sizes, summary = generate_stage(kb, config, out)
    print(f"Wrote {', '.join(f'{k} ({n:,})' for k, n in sizes.items())} to {out}/\n")
    print(format_data_summary(summary))
    return EXIT_OK


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print the summary of the last run (data, oracle, evaluation)")
    p.add_argument("--data", default=None, help="data folder (default data/synthetic)")
    p.add_argument("--reports", default=None, help="reports folder (default reports)")


def _report(args: argparse.Namespace) -> int:
    import json

    from pipeline.core.paths import data_dir, reports_dir
    from pipeline.data.datasets import format_data_summary
    from pipeline.report.decision_metrics import format_decision_table
    from pipeline.report.evaluate import format_metrics_table
    from pipeline.report.views import DETAIL_FILE

    path = Path(args.data or data_dir()) / "summary.json"
    if not path.exists():
        raise UsageError(f"{path} does not exist: run `make run` (or `kneepain generate`) first.")
    reports, shown = (Path(args.reports), args.reports.rstrip("/")) if args.reports else (reports_dir(), "reports")
    if args.reports and not reports.is_dir():
        raise UsageError(f"--reports {args.reports}: no such folder.")
    if args.reports and not (reports / DETAIL_FILE).exists():
        raise UsageError(f"--reports {args.reports}: holds no {DETAIL_FILE} (a folder `kneepain evaluate` wrote).")
    print(format_data_summary(json.loads(path.read_text())))
    if (reports / DETAIL_FILE).exists():
        print(f"\nModel on held-out data ({shown}/{DETAIL_FILE}; headline in {shown}/metrics.json; plots and "
              f"model card in {shown}/)")
        metrics = json.loads((reports / DETAIL_FILE).read_text())
        print(format_metrics_table(metrics))
        print(format_decision_table(metrics))
    else:
        print(f"\nNo model evaluated yet ({shown}/{DETAIL_FILE} does not exist): run `make run` (or `kneepain "
              "evaluate`).")
    print("\nThis is information from synthetic data, not a diagnosis: seek professional medical advice.")
    return EXIT_OK


def _seed(text: str) -> int:
    """A ``--seed``: a whole number >= 0, as numpy's generators take it."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed; give a whole number >= 0")
    return seed


def _show_parser(sub: argparse._SubParsersAction) -> None:
    from pipeline.core.schema import CONDITIONS

    p = sub.add_parser("show", help="print generated cases as short prose vignettes")
    p.add_argument("--n", type=int, default=5, help="how many cases (default 5)")
    p.add_argument("--condition", choices=CONDITIONS, default=None, help="only this condition")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--shift", action="store_true", help="draw from the shifted population")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")


SHOW_MAX = 10_000  # vignettes to print


def _show(args: argparse.Namespace) -> int:
    from pipeline.core.knowledge import load_knowledge_base
    from pipeline.data.generate import generate_cases
    from pipeline.data.vignette import vignette

    if not 1 <= args.n <= SHOW_MAX:
        raise UsageError(f"--n == {args.n}, must be in 1..{SHOW_MAX:,} (cases to read as prose; kneepain sample "
                         "writes any number as CSV).")
    kb = load_knowledge_base(args.kb)
    kb = kb.shifted() if args.shift else kb
    share = 1.0 if args.condition is None else float(kb.prior[list(kb.conditions).index(args.condition)])
    cases = generate_cases(kb, int(args.n / share * 3) + 50, seed=args.seed)
    if args.condition is not None:
        cases = cases[cases["condition"] == args.condition]
    for i, (_, case) in enumerate(cases.head(args.n).iterrows(), 1):
        print(f"{i}. {vignette(case)}\n")
    return EXIT_OK


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="compare candidates, calibrate, save models/ and log to MLflow")
    p.add_argument("--config", default=None, help="train config (default configs/train.yaml)")
    p.add_argument("--data", default=None, help="data folder (default data/synthetic)")
    p.add_argument("--out", default=None, help="models folder (default models)")
    p.add_argument("--force-champion", action="store_true", help="move the champion alias even if not better")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="also write what the training registered (MLflow run, model version, whether it is the "
                        "champion) to FILE as JSON: the DVC stage's output that is not cached, so DVC never restores a "
                        "model folder from its run cache without training and registering it")
    p.add_argument("--backend", choices=("loky", "dask"), default="loky",
                   help="joblib backend for cross-validation (dask: a local cluster or --scheduler)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address for --backend dask")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")
    p.add_argument("--triage", default=None, help="decision-layer config (default configs/triage.yaml)")
    p.add_argument("--screen", default=None, help="emergency screen rules (default configs/screen.yaml)")
    p.add_argument("--extra-data", default=None, metavar="FILE",
                   help="real labelled cases (CSV or Parquet, case schema plus `condition`) to train on beside the "
                        "synthetic data (default: extra_data.path of the train config)")
    p.add_argument("--extra-weight", type=float, default=None, metavar="W",
                   help="each real case counts W synthetic ones (default: extra_data.weight, 1.0)")
    p.add_argument("--extra-holdout", type=float, default=None, metavar="F",
                   help="share of the real cases held out and evaluated on (default: extra_data.holdout, 0.3)")


def _train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.core.config import ScreenConfig, TrainConfig, TriageConfig, error_lines, load_config
    from pipeline.core.paths import config_path, data_dir, models_dir
    from pipeline.model.mlflow_hints import quiet_mlflow
    from pipeline.model.tracking import champion_note
    from pipeline.stages import train_stage

    if args.scheduler is not None and args.backend != "dask":
        raise UsageError("--scheduler: for --backend dask only (the cross-validation's cluster).")
    config = load_config(TrainConfig, args.config or config_path("train.yaml"))
    if (args.extra_weight is not None or args.extra_holdout is not None) and not (args.extra_data or
                                                                                 config.extra_data.path):
        raise UsageError("--extra-weight and --extra-holdout weigh and split real cases: give them with "
                         "--extra-data FILE (or extra_data.path in the train config).")
    # a path on the command line is the shell's, from the current folder (the config's are from the project's)
    extra_path = str(Path(args.extra_data).absolute()) if args.extra_data else args.extra_data
    given = {k: v for k, v in (("path", extra_path), ("weight", args.extra_weight),
                                ("holdout", args.extra_holdout)) if v is not None}
    if given:
        extra = config.extra_data.model_dump() | given
        try:
            config = TrainConfig.model_validate(config.model_dump() | {"extra_data": extra})
        except ValidationError as err:  # each line names its option: extra_data.weight is --extra-weight
            lines = error_lines(err, TrainConfig)
            raise UsageError("; ".join(line.replace("extra_data.", "--extra-", 1) for line in lines)) from err
    triage = load_config(TriageConfig, args.triage or config_path("triage.yaml"))
    screen = load_config(ScreenConfig, args.screen or config_path("screen.yaml"))
    kb_path = Path(args.kb) if args.kb else config_path("knowledge_base.yaml")
    out = Path(args.out) if args.out else models_dir()
    data = Path(args.data) if args.data else data_dir()
    with quiet_mlflow():
        info = train_stage(config, triage, screen, kb_path, data, out,
                           backend=args.backend, scheduler=args.scheduler, force_champion=args.force_champion)
    print(f"Saved {out / info['manifest']['model_file']} (manifest, knowledge base and checksums beside it)")
    note = champion_note(info.get("champion_why"), config.tracking.alias,
                         info["manifest"]["metrics"]["valid_log_loss"], info.get("champion_valid_log_loss"))
    new_store = " (a new tracking store: the database file did not exist)" if info.get("new_store") else ""
    print(f"MLflow run {info['mlflow_run_id']} at {info['tracking_uri']}{new_store}; registered "
          f"{info['registered_model']} version {info['registered_version']}{note}")
    if args.record:
        from pipeline.core.files import write_json_atomic

        write_json_atomic(args.record, {"models": str(out), "model_file": info["manifest"]["model_file"],
                                        **{k: info[k] for k in ("mlflow_run_id", "tracking_uri", "registered_model",
                                                                "registered_version", "champion")}})
    if "extra_holdout" in info:
        h = info["extra_holdout"]
        from pipeline.report.labelled import with_interval

        repeats = f", {h['repeated_rows']:,} of them repeating another's case" if h.get("repeated_rows") else ""
        print(f"Held-out real cases ({h['n']:,}{repeats}): accuracy {with_interval(h['accuracy'], h['accuracy_ci'])}, "
              f"log loss {with_interval(h['log_loss'], h['log_loss_ci'])} (in the manifest and the MLflow run as "
              "extra_holdout.*)")
    return EXIT_REJECTED if info.get("extra_rejected") else EXIT_OK  # as `evaluate`: a script sees rows left out


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score test and shift against the oracle, or your own labelled cases",
                       description="With a data folder (default data/synthetic): the DVC stage, test and shift "
                                   "beside the oracle, into reports/. With --data FILE (CSV or Parquet in the case "
                                   "schema plus `condition`, optionally `reference_level`): the same figures on your "
                                   "cases with 95% confidence intervals, into --out (default "
                                   "reports/evaluations/<file name>), logged to MLflow as an evaluation run. "
                                   "Exit codes: 0 every row evaluated, 1 some rows rejected (left out of the figures; "
                                   "see rejects.csv in --out) or left out as rows the model was fitted on, 2 fatal "
                                   "error (nothing written).")
    p.add_argument("--data", default=None, help="data folder (default data/synthetic), or a labelled .csv/.parquet")
    p.add_argument("--model", default=None, help="models folder or MLflow URI (default models)")
    p.add_argument("--out", default=None, help="reports folder (default reports, or reports/evaluations/<name>)")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for --data FILE (default 1000)")
    p.add_argument("--no-mlflow", action="store_true", help="with --data FILE: do not log a run to MLflow")


def _evaluated_source(folder: Path) -> str | None:
    """The file an earlier evaluation in ``folder`` was of (its metrics.json's ``source``), if it says."""
    import json

    try:
        source = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


def _evaluate_file(args: argparse.Namespace, path: Path) -> int:
    from pipeline.core.paths import reports_dir
    from pipeline.report.intervals import MIN_RESAMPLES
    from pipeline.report.labelled import format_labelled
    from pipeline.serve.guard import stop_at_once_on_signals
    from pipeline.stages import evaluate_file

    n_boot = 1000 if args.bootstrap is None else args.bootstrap
    if n_boot < MIN_RESAMPLES:
        raise UsageError(f"--bootstrap == {n_boot}, must be >= {MIN_RESAMPLES}: fewer resamples leave each end of "
                         "a 95% interval to one or two draws (default 1000).")
    out = Path(args.out) if args.out else reports_dir() / "evaluations" / path.stem
    _refuse_model_folder(out)
    _refuse_case_folder(out, path)
    stage = [name for name in ("metrics_detail.json", "model_card.md") if (out / name).exists()]
    if stage:  # its metrics.json is the stage's headline, which DVC and git track
        raise UsageError(f"--out {out}: holds the evaluation stage's reports ({', '.join(stage)}), whose metrics.json "
                         "this evaluation would replace; give a folder of its own (default reports/evaluations/"
                         f"{path.stem}).")
    if not args.out and (earlier := _evaluated_source(out)) not in (None, str(path.resolve())):
        print(f"kneepain evaluate: warning: {out} holds the evaluation of {earlier}, another file of the same name; "
              "this one replaces it (give --out DIR to keep both).", file=sys.stderr)
    with stop_at_once_on_signals():  # SIGTERM or SIGHUP as Ctrl-C: the report files' temporary folder removed
        result = evaluate_file(args.model, path, out, track=not args.no_mlflow, n_boot=n_boot)
    # as `score`: a script sees rows left out, rejected or fitted on
    left_out = result.metrics["n_rejected"] or (result.metrics.get("fitted_rows") or {}).get("left_out")
    code = EXIT_REJECTED if left_out else EXIT_OK
    try:  # the files are written: a reader that closes the pipe early (`| head -1`) changes nothing of the result
        print(format_labelled(result.metrics))  # with the columns it ignored, as report.md says them
        print(f"\nWrote {out / 'metrics.json'}, {out / 'report.md'} and the plots in {out}/"
              + (f"; rejected rows in {out / 'rejects.csv'}" if result.metrics["n_rejected"] else ""))
        if result.logged_to_mlflow:
            print(f"MLflow run {result.metrics['mlflow_run_id']} (the file is its evaluation dataset)")
        sys.stdout.flush()
    except BrokenPipeError:
        from pipeline.core.streams import silence

        silence(sys.stdout, sys.stderr)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.core.files import is_case_file
    from pipeline.core.knowledge import load_knowledge_base
    from pipeline.core.paths import data_dir, reports_dir
    from pipeline.report.decision_metrics import format_decision_table
    from pipeline.report.evaluate import format_metrics_table
    from pipeline.serve.batch import check_target
    from pipeline.serve.guard import stop_at_once_on_signals
    from pipeline.stages import evaluate_stage

    if args.data and is_case_file(args.data):
        return _evaluate_file(args, Path(args.data))
    if args.data and Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: a file of labelled cases is read as CSV or Parquet, by its extension "
                         "(.csv or .parquet); a folder, as the generated splits.")
    given = [flag for flag, on in (("--bootstrap", args.bootstrap is not None), ("--no-mlflow", args.no_mlflow)) if on]
    if given:  # they were ignored: the folder's evaluation logged to MLflow and drew no bootstrap
        raise UsageError(f"{', '.join(given)}: for --data FILE (labelled cases) only; a data folder's evaluation "
                         "is the DVC stage's, logged to the model's MLflow run where it is in this tracking store.")
    out = Path(args.out) if args.out else reports_dir()
    _refuse_model_folder(out)
    check_target(out / "metrics.json", "evaluation's metrics.json", make_folders=True)  # before the work, not after
    with stop_at_once_on_signals():  # SIGTERM or SIGHUP as Ctrl-C
        result = evaluate_stage(args.model, load_knowledge_base(args.kb), Path(args.data) if args.data else data_dir(),
                                out)
    print(format_metrics_table(result.metrics))
    print(format_decision_table(result.metrics))
    pngs = sum(p.suffix == ".png" for p in result.paths)
    print(f"\nWrote {out / 'metrics.json'} (headline), {out / 'metrics_detail.json'}, {out / 'model_card.md'}, "
          f"{pngs} plots in {out / 'plots'} and the curves as data in {out / 'series'}")
    if result.logged_to_mlflow:
        print("Logged to the model's MLflow run")
    else:
        print("The model's MLflow run is not in this tracking store: metrics not logged to MLflow.")
    return EXIT_OK


def _score_parser(sub: argparse._SubParsersAction) -> None:
    from pipeline.serve import CHUNK_ROWS

    p = sub.add_parser("score", help="score CSV or Parquet files of cases into one output file",
                       description="Exit codes: 0 every row scored, 1 some rows rejected (see the rejects file: "
                                   "OUTPUT.rejects.csv, --rejects, or OUTPUT/_rejects.csv with --engine dask), 2 fatal "
                                   "error (no file written; with -o - standard output may hold the rows scored before "
                                   "it).")
    p.add_argument("inputs", nargs="+", help="CSV or Parquet files (by extension; with --engine dask also globs); "
                                             "- reads CSV from standard input, and a pipe such as <(zcat in.csv.gz) "
                                             "is read as CSV (or Parquet, named .parquet)")
    p.add_argument("-o", "--output", required=True,
                   help="output .csv or .parquet; - writes CSV to standard output (messages go to standard error); "
                        "with --engine dask a new folder of part files")
    p.add_argument("--columns", default=None,
                   help="the output columns to write, comma-separated, in that order (e.g. case_id,prediction,p_dvt,"
                        "triage; a name with a comma in double quotes, as in CSV); default all. Only what they need is computed")
    p.add_argument("--keep-input-columns", action="store_true",
                   help="append the input's own columns to each scored row (a name the output already has gets input_)")
    p.add_argument("--top-k", type=int, default=None, help="how many conditions the top<k> column lists (default 3)")
    p.add_argument("--float-digits", type=int, default=None,
                   help="decimal places of probabilities in a CSV output (default 6: every decision in the file is "
                        "made on the full numbers; 17 writes each number whole, in as many decimals as it takes); Parquet keeps "
                        "them whole")
    p.add_argument("--texts", choices=("codes", "full"), default=None,
                   help="triage_reason, advice, safety_net and ask_next as short codes, looked up in OUTPUT.texts.csv "
                        "(score.texts.csv beside the rejects with -o -), "
                        "or as full texts (default: codes for CSV, full for Parquet, which stores each text once)")
    p.add_argument("--rejects", default=None,
                   help="where rejected rows go (default OUTPUT.rejects.csv; score.rejects.csv with -o -): "
                        "CSV, or Parquet where PATH ends in .parquet")
    p.add_argument("--model", default=None, help="models folder or MLflow URI (default models)")
    p.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                   help=f"rows per chunk (default {CHUNK_ROWS}; memory grows with it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--engine", choices=("pandas", "dask"), default="pandas",
                   help="pandas: stream in this process; dask: on a cluster, each file in blocks of whole chunks "
                        "(one task per block; same rows, numbers and rejects as pandas) into a folder of part files "
                        "and _rejects.csv, with every column (--columns, --keep-input-columns, --top-k, "
                        "--float-digits, --texts, --rejects and - are for the pandas engine)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (default: a local cluster, one worker per core)")
    p.add_argument("--format", choices=("parquet", "csv"), default=None,
                   help="part-file format (--engine dask; default parquet; CSV parts hold every digit and the full texts)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="parse and score in N processes (pandas engine; default 1: one process, scoring on two threads "
                        "where two cores are free). The output is the same; each process adds about 200 MB. 0: one "
                        "per available core")
    p.add_argument("--block-mb", type=float, default=None,
                   help="--engine dask: split a file into blocks of about this many MB, each scored by its own task "
                        "(default: the inputs in about two blocks per worker thread, at least 64 MB each, so small "
                        "files stay whole)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a model folder from an older version whose model is a pickle (model.joblib); only "
                        "for folders you produced yourself: a pickle runs code when loaded")
    p.add_argument("--report", default=None, metavar="FILE.html",
                   help="also write a one-page summary of the batch: rows scored and rejected, triage mix, estimated "
                        "case mix, atypical rate, drift per field (pandas engine; its numbers in FILE.json; reads the "
                        "inputs twice, so not with - or --columns/--keep-input-columns; the case mix needs --float-digits 6 or "
                        "more)")
    p.add_argument("--adapt-priors", action="store_true",
                   help="estimate the batch's case mix without labels (EM, Saerens et al. 2002), re-weight the "
                        "probabilities to it and save it in OUTPUT.priors.json (pandas engine; reads the inputs twice; at "
                        "least 500 valid rows)")


def _score_options(args: argparse.Namespace):
    from pipeline.core.files import is_parquet
    from pipeline.serve.shaping import FLOAT_DIGITS, MAX_FLOAT_DIGITS, OutputOptions, parse_column_list

    csv_out = args.output == "-" or not is_parquet(args.output)
    digits = FLOAT_DIGITS if args.float_digits is None else args.float_digits
    try:
        columns = parse_column_list(args.columns) if args.columns is not None else None
    except ValueError as err:
        raise UsageError(f"--columns {args.columns!r}: {err}.") from None
    if columns is not None and "" in columns:
        raise UsageError(f"--columns {args.columns!r}: a name is empty; give output columns separated by commas "
                         "(e.g. case_id,prediction,p_dvt,triage).")
    return OutputOptions(columns=columns, keep_input=args.keep_input_columns,
                         top_k=OutputOptions.top_k if args.top_k is None else args.top_k,
                         float_digits=None if digits >= MAX_FLOAT_DIGITS else digits,
                         texts=args.texts or ("codes" if csv_out else "full"))


def _score_pandas(args: argparse.Namespace, warn: Callable[[str], None], options, written: list[str]):
    """Score in this process; with --adapt-priors under the batch's estimated case mix; with --report
    the page (the files written after the output are named in ``written`` once they are)."""
    from pipeline.serve.batch import score_files
    from pipeline.serve.chunks import available_cores
    from pipeline.serve.loading import get_model
    from pipeline.serve.reading import lean_memory_pool, reuse_freed_heap

    lean_memory_pool()
    reuse_freed_heap()
    if args.report:  # before the output: a stop in the import of its compiled modules fails it
        from pipeline.report.plots import load_matplotlib

        load_matplotlib()
    model = plain = get_model(args.model, trust_pickle=args.trust_pickle)
    estimate = None
    if args.adapt_priors:
        from pipeline.serve.adapt import PriorShiftedModel, collapsed_conditions, estimate_batch_prior

        estimate = estimate_batch_prior(args.inputs, model, chunk_rows=args.chunk_rows)
        for message in collapsed_conditions(estimate):
            warn(message)
        model = PriorShiftedModel.from_model(model, estimate)
    jobs = args.jobs or available_cores()
    # written after the output: an earlier run's go as the new output is put in place
    stale = [path for _, path, _ in _written_after_output(args)] if args.output != "-" else []
    summary = score_files(args.inputs, args.output, model, chunk_rows=args.chunk_rows, options=options,
                          rejects=args.rejects, jobs=jobs, warn=warn, stale=stale,
                          progress=not args.quiet and sys.stderr is not None and sys.stderr.isatty())
    _after_scoring(args, plain, estimate, written)
    return summary


def _whole(args: argparse.Namespace) -> str:
    """What a stop once ``kneepain score``'s output is complete says was written."""
    return "every row was written to standard output" if args.output == "-" else f"{args.output} was written in full"


def _not_written(missing: list[str]) -> str:
    """The files asked for after the output that a stop left unwritten, as a message says them."""
    return f"; {' and '.join(missing)} {'were' if len(missing) > 1 else 'was'} not written" if missing else ""


def _refuse_model_folder(out: Path) -> None:
    """Refuse an ``--out`` that is a model folder: its files are the model's (verified, and cached
    by DVC as one output), and a report written among them would change it."""
    from pipeline.model.persist import MANIFEST_FILE, data_folder, holds_model

    if holds_model(out):
        what = (f"holds a {MANIFEST_FILE} that is not a model's (a data folder's?), whose files are that folder's own"
                if data_folder(out) else "is a model folder, whose files are the model's")
        raise UsageError(f"--out {out}: {what}; give a folder of its own for the reports.")


def _refuse_case_folder(out: Path, path: Path) -> None:
    """Refuse an ``--out`` that holds case files (CSV or Parquet) other than an evaluation's own
    (``rejects.csv``): ``--out data/real`` put the reports, and a ``rejects.csv`` of rows, among
    the real cases, which ``train --extra-data`` and DVC read."""
    from pipeline.core.files import is_case_file
    from pipeline.report.labelled import EVALUATION_FILES

    if not out.is_dir():
        return
    cases = sorted(p.name for p in out.iterdir() if is_case_file(p) and p.name not in EVALUATION_FILES)
    if cases:
        shown = ", ".join(cases[:3]) + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")
        raise UsageError(f"--out {out}: holds case files ({shown}), among which the reports and a rejects.csv "
                         f"would be written; give a folder of its own for the reports (default "
                         f"reports/evaluations/{path.stem}).")


def _refuse_folder_names(files: list[tuple[str, str | None, str]]) -> None:
    """Refuse a file to write given as a folder's name, ending in a slash, (option, value, what):
    ``Path`` drops the slash, so ``--rejects rejects/`` wrote a file named ``rejects``."""
    ends = tuple(s for s in (os.sep, os.altsep) if s)
    for option, value, what in files:
        if value and value != "-" and value.endswith(ends):
            raise UsageError(f"{option} {value}: ends in {value[-1]}, so it names a folder; give a file's path for "
                             f"the {what}.")


def _written_after_output(args: argparse.Namespace) -> list[tuple[str, Path, bool]]:
    """The files ``kneepain score`` writes after its output (a file, not -): (what, path, whether
    their folders may be made): the batch report and its numbers, and the case mix."""
    after = [("report", Path(args.report), True), ("report's numbers", Path(args.report).with_suffix(".json"), True)
             ] if args.report else []
    return after + [("case mix (written with --adapt-priors; an earlier run's is removed otherwise)",
                     Path(f"{args.output}.priors.json"), False)]


def _after_scoring(args: argparse.Namespace, plain, estimate, written: list[str]) -> None:
    """The files written after the output: the case mix (--adapt-priors; else an earlier run's is
    removed, as it describes probabilities this output does not have) and the report (--report),
    each named in ``written`` once it is in place."""
    if estimate is None and args.output != "-":
        Path(f"{args.output}.priors.json").unlink(missing_ok=True)
    elif estimate is not None:
        from pipeline.core.files import link_target, write_report_json
        from pipeline.serve.adapt import format_prior, prior_report

        write_report_json(link_target(f"{args.output}.priors.json"), prior_report(estimate))  # through a link
        written.append("the case mix")
        if not args.quiet:
            print(format_prior(estimate) + f"\n  (saved in {args.output}.priors.json; right when only the mix "
                  "differs from training, not how each condition presents)", file=sys.stderr)
    if args.report:
        from pipeline.report.batch_report import write_batch_report

        write_batch_report(args.inputs, args.output, plain, args.report, estimate=estimate, chunk_rows=args.chunk_rows,
                           rejects=args.rejects)
        written.append("the batch report")
        if not args.quiet:
            print(f"Batch report: {args.report} (numbers in {Path(args.report).with_suffix('.json')})", file=sys.stderr)


def _most_processes() -> int:
    """The most scoring processes a command starts (`score --jobs`, `serve --workers`): four per
    core; each holds the model and scores, so more only wait for a core."""
    return 4 * (os.cpu_count() or 1)


def _score(args: argparse.Namespace) -> int:
    from pipeline.core.files import is_case_file, is_parquet, is_pipe
    from pipeline.core.schema import top_k_problem
    from pipeline.serve.shaping import FLOAT_DIGITS, MAX_FLOAT_DIGITS, float_digits_allowed

    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows == {args.chunk_rows}, must be >= 1.")
    _refuse_folder_names([("-o", args.output if args.engine != "dask" else None, "output"),
                          ("--rejects", args.rejects, "rejects file"), ("--report", args.report, "report")])
    most = _most_processes()
    if not 0 <= args.jobs <= most:
        raise UsageError(f"--jobs == {args.jobs}, must be in 0..{most} (0: one process per available core; at most "
                         "four per core).")
    if args.jobs != 1 and args.engine == "dask":
        raise UsageError("--jobs is for the pandas engine; the dask engine's parallelism is its workers.")
    if (args.adapt_priors or args.report) and args.engine == "dask":
        raise UsageError("--adapt-priors and --report work with --engine pandas only.")
    if args.trust_pickle and args.engine == "dask":  # its workers would each run the pickle's code
        raise UsageError("--trust-pickle works with --engine pandas only: the dask engine's workers load only a "
                         "model folder of the current version (retrain with `kneepain train` to make one).")
    if args.top_k is not None and (problem := top_k_problem(args.top_k)) is not None:
        raise UsageError(f"--top-k == {args.top_k}, {problem}.")
    if not float_digits_allowed(args.float_digits):
        raise UsageError(f"--float-digits == {args.float_digits}, must be in 0..{MAX_FLOAT_DIGITS} "
                         f"({MAX_FLOAT_DIGITS} keeps every digit).")
    if args.engine != "dask":
        given = [flag for flag, value in (("--scheduler", args.scheduler), ("--block-mb", args.block_mb),
                                          ("--format", args.format)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: for --engine dask only.")
    if (args.float_digits is not None and args.float_digits < MAX_FLOAT_DIGITS and args.engine != "dask"
            and is_parquet(args.output)):  # 17 keeps every digit, as Parquet does
        raise UsageError(f"--float-digits {args.float_digits}: rounds a CSV output; a Parquet output keeps every "
                         f"float whole (as --float-digits {MAX_FLOAT_DIGITS} does).")
    if args.block_mb is not None and not (math.isfinite(args.block_mb) and round(args.block_mb * (1 << 20)) >= 1):
        raise UsageError(f"--block-mb == {args.block_mb:g}, must be a finite size of at least one byte "
                         f"({1 / (1 << 20):.2g}).")
    if args.report and Path(args.report).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--report {args.report}: the batch report is an .html file.")
    if (args.adapt_priors or args.report) and ("-" in (args.output, *args.inputs) or any(map(is_pipe, args.inputs))):
        raise UsageError("--adapt-priors and --report read the files twice: give files, not - (standard input or "
                         "output) or a pipe (<(...)).")
    if args.report and (args.columns is not None or args.keep_input_columns):
        raise UsageError("--report summarises the full output: leave out --columns and --keep-input-columns.")
    if args.report and args.float_digits is not None and args.float_digits < FLOAT_DIGITS:
        raise UsageError(f"--report estimates the case mix from the output's probabilities: give --float-digits "
                         f"{FLOAT_DIGITS} or more (or leave it out).")
    if args.engine != "dask" and args.output != "-":  # the files a job writes besides the output
        from pipeline.serve.batch import check_target, texts_lookup
        from pipeline.serve.guard import refuse_shared_outputs, written_path

        output = Path(args.output)
        # the files written after the output (score_files checks its rejects file and texts lookup):
        # refused now, not once the output is written
        after = _written_after_output(args)
        refuse_shared_outputs([("output", output), ("rejects file", _rejects_path(args)),
                               ("texts lookup", texts_lookup(output)), *((what, path) for what, path, _ in after)])
        check_target(output, "output")  # the output's own problem first (its folder is theirs too)
        for what, path, make_folders in after:  # as each is written: through a link, to the file it names
            check_target(written_path(path, what), what, make_folders=make_folders)
    warn = lambda m: print(f"kneepain score: warning: {m}", file=sys.stderr)
    options = _score_options(args)
    # given at all, whatever the value (--float-digits 0, --columns '', --top-k 3)
    shaped = (args.columns, args.top_k, args.float_digits, args.texts, args.rejects)
    if args.engine == "dask" and (args.keep_input_columns or any(v is not None for v in shaped)
                                  or "-" in (args.output, *args.inputs)):
        raise UsageError("--columns, --keep-input-columns, --top-k, --float-digits, --texts, --rejects and - are for "
                         "--engine pandas; the Dask engine writes the full output.")
    if args.engine == "dask" and is_case_file(args.output):
        raise UsageError(f"-o {args.output}: the dask engine writes a folder of part files (--format chooses "
                         "their type); give a folder name.")
    from pipeline.core.errors import StoppedAfterOutput
    from pipeline.serve.guard import stop_at_once_on_signals, stops_after_output
    from pipeline.serve.loading import get_model, is_model_uri, pinned_uri

    if is_model_uri(args.model):  # an alias as the version it names now: the one every step (and worker) loads
        args.model = pinned_uri(args.model)
    said = _model_said(get_model(args.model, trust_pickle=args.trust_pickle))  # the model the job scores with

    # from here to the summary's last line, SIGTERM and SIGHUP stop the command as Ctrl-C does (a
    # job notes one and acts at its next step, removing its temporary files); once the output is
    # in place, a stop says that it is whole, and which files asked for after it were not written,
    # after the summary's lines
    written: list[str] = []  # those written so far (each whole or not at all)
    told: list[bool] = []  # whether the summary's line is out
    with stops_after_output(_whole(args), for_one_job=True) as complete, stop_at_once_on_signals():
        try:
            if args.engine == "dask":
                summary = _score_dask(args, warn)
            else:
                summary = _score_pandas(args, warn, options, written)
            _tell_summary(args, summary, _rejects_path(args), told, said)
        except KeyboardInterrupt as err:
            if not (complete.done or isinstance(err, StoppedAfterOutput)):
                raise  # before the output was in place
            missing = [what for what, asked in (("the case mix", args.adapt_priors), ("the batch report", args.report))
                       if asked and what not in written]
            stop = err.stop if isinstance(err, StoppedAfterOutput) else str(err) or "interrupted"
            summary = err.summary if isinstance(err, StoppedAfterOutput) and err.summary else complete.summary
            if summary is not None and not told:
                _tell_summary(args, summary, _rejects_path(args), told, said)
            raise StoppedAfterOutput(stop, _whole(args) + _not_written(missing), summary) from None
    return EXIT_REJECTED if summary.rows_rejected else EXIT_OK


def _score_dask(args: argparse.Namespace, warn: Callable[[str], None]):
    """Score on a Dask cluster (``--scheduler``, or a local one) into a folder of part files."""
    from pipeline.core.cluster import dask_client
    from pipeline.serve.dask import score_files_dask
    from pipeline.serve.guard import signals_deferred
    from pipeline.serve.loading import get_model

    get_model(args.model)  # verified as the workers will load it: a missing or altered one named before any cluster
    block_bytes = None if args.block_mb is None else round(args.block_mb * (1 << 20))
    # the workers load the (hash-checked) model themselves, once each; a stop while the local
    # cluster starts acts once it has started, so that the job closes it (a second one at once)
    with dask_client(args.scheduler, while_starting=lambda: signals_deferred(second_at_once=True)) as client:
        return score_files_dask(args.inputs, args.output, args.model, client=client, fmt=args.format or "parquet",
                                chunk_rows=args.chunk_rows, warn=warn, block_bytes=block_bytes)


def _rejects_path(args: argparse.Namespace) -> Path:
    """Where ``kneepain score`` writes the rejected rows."""
    if args.engine == "dask":
        from pipeline.serve.dask import REJECTS_FILE

        return Path(args.output) / REJECTS_FILE
    from pipeline.serve.batch import STREAM_REJECTS, rejects_file

    return rejects_file(Path(args.output), args.rejects) if args.output != "-" else Path(args.rejects or STREAM_REJECTS)


def _tell_summary(args: argparse.Namespace, summary: ScoreSummary, rejects_path: Path, told: list[bool],
                  model: str) -> None:
    """``kneepain score``'s last lines (not with --quiet): the rows scored and rejected, the
    ``model`` that scored them (:func:`_model_said`), and what the rejected rows (in
    ``rejects_path``) have in common. A first stop signal as the first
    is printed waits until it is whole and ``told`` is marked, so that the stop's handler does not
    print it again (a second acts at once: a line blocked on a full pipe cannot hold the job)."""
    if args.quiet:
        return
    from pipeline.core.wording import counted
    from pipeline.serve.guard import stop_on_signals

    rejected = f", rejected {summary.rows_rejected:,} (see {rejects_path})" if summary.rows_rejected else ", rejected 0"
    with stop_on_signals():
        print(f"Scored {counted(summary.rows_scored, 'row')}{rejected} in "
              f"{summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s) -> {args.output}, {model}",
              file=sys.stderr)
        told.append(True)
    if summary.rows_rejected:  # what the rejected rows have in common, without opening the file
        from pipeline.serve.rejectreasons import rejects_digest

        for line in rejects_digest(rejects_path):
            print(line, file=sys.stderr)


def _model_said(model: LoadedModel) -> str:
    """Which model folder (or MLflow model) is used, and whether a signature vouched for it:
    without ``--model`` the folder is the project's found from the current folder, and a data
    folder delivered with a ``models/`` of its own would otherwise be used unseen."""
    from pipeline.model.legacy import LEGACY_MODEL_FILE
    from pipeline.model.signing import trusted_key

    if model.manifest.get("model_file") == LEGACY_MODEL_FILE:
        return f"model {model.source} (an older pickled folder, trusted with --trust-pickle)"
    key = trusted_key()
    return f"model {model.source} " + (f"(signed by the trusted key {key})" if key is not None else
                                       "(checksums checked; no signature, as KNEEPAIN_TRUSTED_KEY is not set)")


def _sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write generated cases, without labels, as CSV or Parquet to try scoring on")
    p.add_argument("-o", "--output", required=True,
                   help="output .csv or .parquet (by extension; Parquet has typed columns, blanks as nulls), or - "
                        "for CSV on standard output")
    p.add_argument("--n", type=int, default=1000, help="how many cases (default 1000)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")


def _sample(args: argparse.Namespace) -> int:
    from pipeline.core.files import is_parquet, reclaim_stale_temps, stdout_bytes, write_atomic, write_parts_atomic
    from pipeline.core.knowledge import load_knowledge_base
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.core.schema import FIELDS, ID_COLUMN
    from pipeline.data.generate import SAMPLE_BLOCK_ROWS, generate_codes, sample_block_seed
    from pipeline.serve.batch import written_targets
    from pipeline.serve.guard import stop_at_once_on_signals

    if args.n < 1:
        raise UsageError(f"--n == {args.n}, must be >= 1.")
    to_stdout = args.output == "-"
    _refuse_folder_names([("-o", args.output, "output")])
    if not to_stdout:
        if Path(args.output).suffix.lower() not in (".csv", ".parquet"):
            raise UsageError(f"-o {args.output}: kneepain sample writes CSV or Parquet, by the extension; give a "
                             ".csv or .parquet path, or - for CSV on standard output.")
        [(_, target)] = written_targets([("output", Path(args.output))])  # through a link, as score writes
    kb = load_knowledge_base(args.kb)
    # the integer fields the generator always answers (the required ones): whole numbers in every block
    whole = {f.name for f in FIELDS if f.kind == "integer" and f.required}

    def frames():  # drawn a block of rows at a time and written before the next: memory stays flat
        for block, start in enumerate(range(0, args.n, SAMPLE_BLOCK_ROWS)):
            codes, _, _ = generate_codes(kb, min(SAMPLE_BLOCK_ROWS, args.n - start), seed=sample_block_seed(args.seed, block))
            frame = codes_to_text_frame(codes, whole)
            frame.insert(0, ID_COLUMN, [f"sample-{i:06d}" for i in range(start, start + len(frame))])
            yield start, frame

    def parts():
        for start, frame in frames():
            yield frame.to_csv(index=False, header=start == 0).encode("utf-8")

    if to_stdout:
        try:
            out = stdout_bytes()
            for part in parts():
                out.write(part)
            out.flush()
        except BrokenPipeError:  # `kneepain sample -o - | head`: the reader has what it wanted
            from pipeline.core.streams import silence

            silence(sys.stdout, sys.stderr)
            return EXIT_OK
        except OSError as err:  # a full disk or a file-size limit: said, not taken for the end
            raise UsageError(f"-: cannot write: {err.strerror or err}.") from err
        print(f"Wrote {args.n:,} unlabelled cases to standard output", file=sys.stderr)
        return EXIT_OK
    # a stop signal (SIGTERM, SIGHUP, Ctrl-C) stops the job at once, its temporary file removed;
    # one killed outright leaves a temporary that the next sample on the same output removes
    reclaim_stale_temps(target)
    with stop_at_once_on_signals():
        if is_parquet(target):
            write_atomic(target, lambda fh: _write_sample_parquet(fh, (frame for _, frame in frames()), whole))
        else:
            write_parts_atomic(target, parts())
    print(f"Wrote {args.n:,} unlabelled cases to {args.output}")
    return EXIT_OK


def _write_sample_parquet(fh: Any, frames: Iterable[pd.DataFrame], whole: set[str]) -> None:
    """Blocks of :func:`codes_to_text_frame` rows as one Parquet file: answers as text and blanks as
    nulls, the always-answered integers as int64 and the other numbers as float64 (null unknown),
    one schema for every block (a block may have no answer in a column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core.schema import FIELDS, ID_COLUMN

    def kind(f: Any) -> Any:
        return pa.string() if f.kind in ("tristate", "category") else pa.int64() if f.name in whole else pa.float64()

    schema = pa.schema([(ID_COLUMN, pa.string()), *((f.name, kind(f)) for f in FIELDS)])
    texts = [f.name for f in FIELDS if f.kind in ("tristate", "category")]
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for frame in frames:
            frame[texts] = frame[texts].replace("", None)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


def _ask_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="answer questions one at a time; see the likely causes and the triage")
    p.add_argument("--model", default=None, help="models folder or MLflow URI (default models)")
    p.add_argument("--max-questions", type=int, default=15, help="questions after age and sex (default 15)")
    p.add_argument("--config", default=None, help="questions config (default configs/questions.yaml)")


def _ask(args: argparse.Namespace) -> int:
    from pipeline.interact.ask import run_session
    from pipeline.serve.loading import get_model

    if args.max_questions < 0:
        raise UsageError(f"--max-questions == {args.max_questions}, must be >= 0.")
    run_session(get_model(args.model), max_questions=args.max_questions, config=args.config)
    return EXIT_OK


def _sensitivity_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="how the oracle's answers move when the knowledge base's guesses move")
    p.add_argument("--kb", default=None, help="knowledge base (default configs/knowledge_base.yaml)")
    p.add_argument("--triage", default=None, help="decision-layer config (default configs/triage.yaml)")
    p.add_argument("--probes", default=None, help="probe cases (default configs/probes.yaml)")
    p.add_argument("--out", default=None, help="output folder (default reports/sensitivity)")
    p.add_argument("--draws", type=int, default=200, help="draws of the guessed numbers (default 200)")
    p.add_argument("--n", type=int, default=20_000, help="generated cases per draw (default 20000)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")


def _sensitivity(args: argparse.Namespace) -> int:
    from pipeline.core.config import ProbesConfig, TriageConfig, load_config
    from pipeline.core.paths import config_path, reports_dir
    from pipeline.stages import sensitivity_stage

    if args.draws < 1 or args.n < 100:
        raise UsageError(f"--draws == {args.draws} and --n == {args.n}: need --draws >= 1 and --n >= 100.")
    out = Path(args.out) if args.out else reports_dir() / "sensitivity"
    r = sensitivity_stage(Path(args.kb) if args.kb else config_path("knowledge_base.yaml"),
                          load_config(TriageConfig, args.triage or config_path("triage.yaml")),
                          load_config(ProbesConfig, args.probes or config_path("probes.yaml")), out,
                          draws=args.draws, n=args.n, seed=args.seed)
    acc = r["spread"]["oracle_accuracy"]
    print(f"{r['n_parameters']} guessed numbers drawn within their ranges, {r['draws']} draws of {r['cases_per_draw']:,} cases")
    print(f"oracle top-1 accuracy: {r['base']['oracle_accuracy']:.3f} as written; {acc['mean']:.3f} "
          f"[{acc['p05']:.3f}, {acc['p95']:.3f}] over the draws (mean [5%, 95%])")
    print("P(DVT) on the probes: as written; mean [5%, 95%] over the draws")
    for name, band in r["spread"]["p_dvt"].items():
        print(f"  {name:<52} {r['base']['p_dvt'][name]:.3f}; {band['mean']:.3f} [{band['p05']:.3f}, {band['p95']:.3f}]")
    print("triage mix (expected-cost level on the oracle): as written; [5%, 95%]")
    for level, band in r["spread"]["triage_mix"].items():
        print(f"  {level:<16} {r['base']['triage_mix'][level]:.3f}; [{band['p05']:.3f}, {band['p95']:.3f}]")
    t = r["tornado"]
    print(f"Top {len(t['rows'])} guesses by how far they move the {t['metric']} ({t['base']:.3f} as written):")
    for row in t["rows"]:
        print(f"  {row['parameter']:<60} [{row['low']:g}, {row['high']:g}]: {row['metric_at_low']:.3f} .. "
              f"{row['metric_at_high']:.3f}")
    print(f"Wrote {out / 'sensitivity.json'} and {out / 'tornado.png'}")
    return EXIT_OK


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (MLflow's JSON protocol; scores out)",
                       description="Serves POST /invocations like `mlflow models serve`, with the case schema's "
                                   "message in a 400 for an invalid case, no stack trace or path in any answer, "
                                   "and a request size limit. The model folder is verified before serving.")
    p.add_argument("-m", "--model-uri", default="models:/kneepain-classifier@champion",
                   help="MLflow model URI or models folder (default models:/kneepain-classifier@champion)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=5001, help="port (default 5001)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--max-request-mb", type=float, default=None,
                   help="largest request body accepted, in MB (default $KNEEPAIN_MAX_REQUEST_BYTES, else 10)")
    p.add_argument("--max-request-cases", type=int, default=None,
                   help="most cases one request may hold (default $KNEEPAIN_MAX_REQUEST_CASES, else 10,000); the "
                        "answer is built in memory, about 8 KB per case")


def _serve(args: argparse.Namespace) -> int:
    from pipeline.serve.http import MAX_CASES_ENV, MAX_REQUEST_ENV, MODEL_ENV, max_request_bytes, max_request_cases
    from pipeline.serve.loading import is_model_uri, load_model, pinned_uri

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port == {args.port}, must be in 0..65535 (0: a free port).")
    most = _most_processes()
    if not 1 <= args.workers <= most:
        raise UsageError(f"--workers == {args.workers}, must be in 1..{most} (four per core here).")
    env = dict(os.environ)
    if args.max_request_mb is not None:
        limit = args.max_request_mb * 1024 * 1024
        if not (math.isfinite(limit) and limit >= 1):
            raise UsageError(f"--max-request-mb == {args.max_request_mb}, must be a finite number of MB of at least "
                             "one byte (1 byte is about 1e-6 MB).")
        env[MAX_REQUEST_ENV] = str(int(limit))
    if args.max_request_cases is not None:
        if args.max_request_cases < 1:
            raise UsageError(f"--max-request-cases == {args.max_request_cases}, must be at least 1.")
        env[MAX_CASES_ENV] = str(args.max_request_cases)
    os.environ[MAX_REQUEST_ENV] = env.get(MAX_REQUEST_ENV, "")
    os.environ[MAX_CASES_ENV] = env.get(MAX_CASES_ENV, "")
    max_request_bytes(), max_request_cases()  # a bad limit is an error here, not in every worker
    # an alias as the version it names now: a worker that restarts loads the same model
    source = pinned_uri(args.model_uri) if is_model_uri(args.model_uri) else args.model_uri
    loaded = load_model(source)  # a model that fails its checks is refused here, in one line
    print(f"Serving {_model_said(loaded)}", file=sys.stderr)
    env[MODEL_ENV] = source
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "pipeline.serve.http:create_app", "--host", args.host,
           "--port", str(args.port), "--workers", str(args.workers)]
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # replaces this process: signals and exit code are the server's
    return EXIT_OK  # not reached


def _sign_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sign", help="sign a model folder with a private key (model.sig; see docs/model-files.md)")
    p.add_argument("folder", nargs="?", default=None, help="models folder (default models)")
    p.add_argument("--key", required=True, help="elliptic-curve private key, PEM")
    p.add_argument("--password-env", default=None, help="environment variable holding the key's password")


def _sign(args: argparse.Namespace) -> int:
    import os

    from pipeline.core.paths import models_dir
    from pipeline.model.signing import sign_folder
    from pipeline.serve.loading import load_model

    folder = Path(args.folder) if args.folder else models_dir()
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise UsageError(f"--password-env {args.password_env}: no such environment variable; set it to the "
                             "key's password.")
    # only a folder that passes its checksums is signed; a signature it may lack yet is not asked for
    load_model(folder, check_signature=False)
    print(f"Signed every file of {folder}: {sign_folder(folder, args.key, password=password)}")
    return EXIT_OK


def _verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a model folder's files (and its signature) without scoring")
    p.add_argument("folder", nargs="?", default=None, help="models folder or MLflow URI (default models)")
    p.add_argument("--trusted-key", default=None, help="public key the folder must be signed with "
                                                       "(default $KNEEPAIN_TRUSTED_KEY; none: checksums only)")


def _verify(args: argparse.Namespace) -> int:
    from pipeline.model.signing import SIGNATURE_FILE, TRUSTED_KEY_ENV, trusted_key
    from pipeline.serve.loading import load_model

    key = trusted_key(args.trusted_key)
    model = load_model(args.folder, trusted=key)
    if key:
        said = f" and the signature by {key}"
    elif (Path(model.source) / SIGNATURE_FILE).is_file():  # a folder rewritten with its checksums passes them
        said = (f"; it is signed ({SIGNATURE_FILE}), but no trusted key was given, so the signature was not "
                f"checked: give --trusted-key PUBLIC_KEY (or set {TRUSTED_KEY_ENV}) to check who signed it")
    else:
        said = " (no trusted key given: signature not checked)"
    print(f"{model.source}: every file matches its checksum{said}")
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "generate": (_generate_parser, _generate),
    "show": (_show_parser, _show),
    "report": (_report_parser, _report),
    "train": (_train_parser, _train),
    "evaluate": (_evaluate_parser, _evaluate),
    "score": (_score_parser, _score),
    "sample": (_sample_parser, _sample),
    "ask": (_ask_parser, _ask),
    "sensitivity": (_sensitivity_parser, _sensitivity),
    "serve": (_serve_parser, _serve),
    "sign": (_sign_parser, _sign),
    "verify": (_verify_parser, _verify),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneepain",
        description="Causes of pain behind the knee: synthetic data, a calibrated classifier and a "
                    "decision layer. Information only, not a diagnosis: seek professional advice.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    parser.add_argument("--version", action="version", version=f"kneepain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for make_parser, _ in COMMANDS.values():
        make_parser(sub)
    return parser


def _empty_value(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option of the command given as empty text (``--model ""``, ``-o ""``, ``--report ""``:
    a shell variable left unset), as its message; None when there is none. No option takes one:
    read as a path it was the current folder, an unexpected error, or silently nothing."""
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in command._actions:
        values = getattr(args, action.dest, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not value.strip():
                name = action.option_strings[-1] if action.option_strings else action.dest
                return f"{name} {value!r}: empty; give a value (see kneepain {args.command} --help)."
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 rows rejected, 2 fatal error). Its messages
    go to standard error, and are dropped where that cannot be written
    (:func:`pipeline.core.streams.messages_to_stderr`)."""
    from pipeline.core.streams import messages_to_stderr

    with messages_to_stderr():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (empty := _empty_value(parser, args)) is not None:
        return _fail(args.command, empty)
    if getattr(args, "out", None) == "-":  # every --out is a folder: "-" made one of that name
        return _fail(args.command, f"--out -: kneepain {args.command} writes a folder, not standard output; give its path.")
    from pipeline.core.config import ConfigError
    from pipeline.core.errors import (
        BatchInputError,
        CaseValidationError,
        ModelIntegrityError,
        StoppedAfterOutput,
        TrackingServerError,
    )
    from pipeline.core.knowledge import KnowledgeBaseError

    fatal: tuple[type[BaseException], ...] = (UsageError, ConfigError, KnowledgeBaseError, CaseValidationError,
                                              FileNotFoundError, FileExistsError, PermissionError, BatchInputError,
                                              ModelIntegrityError, StoppedAfterOutput, TrackingServerError)
    if getattr(args, "engine", None) == "dask" or getattr(args, "backend", None) == "dask":
        from pipeline.core.cluster import DaskJobError

        fatal += (DaskJobError,)
    try:
        return COMMANDS[args.command][1](args)
    except fatal as err:
        if args.debug:
            raise
        return _fail(args.command, str(err))
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGHUP during `score` (pipeline.serve.guard)
        if args.debug:
            raise
        told = ""
        if args.command == "score":
            told = (" (no file was written; standard output may hold the rows scored before the stop)"
                    if args.output == "-" else " (no output was written)")
        return _fail(args.command, f"{str(err) or 'interrupted'}{told}")
    except Exception as err:  # a bug or an environment problem: still one line, the traceback on --debug
        if args.debug:
            raise
        return _fail(args.command, f"unexpected {type(err).__name__}: {err} (run with --debug for the traceback)")


def _fail(command: str, message: str) -> int:
    """Print one line on stderr and return the fatal exit code."""
    line = " ".join(message.split())
    from pipeline.core.streams import messages_lost, silence

    print(f"kneepain {command}: error: {line}", file=sys.stderr, flush=True)
    if messages_lost():  # stderr closed too (`... 2>&1 | head`): the exit code still says fatal
        silence(sys.stdout, sys.stderr)
    return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
