"""The DVC stages' recipes: each wires library functions together for one `kneepain` command.

Every function takes its inputs (configs already validated, folders) and returns what the
command prints; :mod:`pipeline.cli` parses arguments, fills in the default paths and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import GenerateConfig, ProbesConfig, ScreenConfig, TrainConfig, TriageConfig
from pipeline.core.files import sha256_file, write_json_atomic
from pipeline.core.knowledge import KnowledgeBase, load_knowledge_base
from pipeline.data.datasets import class_shares, kb_for_split, labels, oracle_summary, read_split, split_table
from pipeline.data.generate import write_splits

__all__ = ["EvaluateResult", "evaluate_file", "evaluate_stage", "generate_stage", "sensitivity_stage", "train_stage"]


def generate_stage(kb: KnowledgeBase, config: GenerateConfig, out: Path) -> tuple[dict[str, int], dict]:
    """Write the splits and ``summary.json`` (class counts, the oracle's scores) into ``out``.

    Returns the split sizes and the summary.
    """
    frames = write_splits(kb, config, out)
    summary = {"class_counts": split_table(frames).to_dict(),
               "oracle": {name: oracle_summary(kb_for_split(kb, name), frames[name])
                          for name in ("test", "shift") if name in frames}}
    write_json_atomic(out / "summary.json", summary)
    return {k: len(v) for k, v in frames.items()}, summary


def train_stage(config: TrainConfig, triage: TriageConfig, screen: ScreenConfig, kb_path: Path, data: Path, out: Path, *,
                backend: str = "loky", scheduler: str | None = None, force_champion: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare candidates, calibrate, fit the decision layer on ``calib``, save ``out`` and log to
    MLflow (registering the model and moving the champion alias if it is better).

    Returns what :func:`pipeline.model.tracking.log_training` returns.
    """
    from pipeline.decision.layer import fit_decision_on
    from pipeline.model.persist import save_model, update_manifest
    from pipeline.model.tracking import git_commit, log_training
    from pipeline.model.train import train_model
    from pipeline.serve.mlflow_model import log_pyfunc

    kb = load_knowledge_base(kb_path)
    train, valid, calib = read_split("train", data), read_split("valid", data), read_split("calib", data)
    files = {name: data / f"{name}.parquet" for name in ("train", "valid", "calib")}
    log(f"Training on {len(train):,} cases ({config.cv.folds}-fold CV on up to "
        f"{config.cv.max_rows or len(train):,}), calibrating on {len(valid):,}")
    if backend == "dask":
        from pipeline.core.cluster import dask_client

        with dask_client(scheduler):
            result = train_model(config, train, valid, backend="dask", log=log)
    else:
        result = train_model(config, train, valid, log=log)
    decision = fit_decision_on(result.model, kb, calib, triage, screen)
    log(f"  decision layer fitted on calib ({len(calib):,}): conformal thresholds "
        f"{sorted(set(round(t, 4) for t in decision['conformal']['thresholds']))}, "
        f"atypical thresholds by number of answers {min(decision['atypical']['thresholds_by_n_known']):.2f}"
        f"..{max(decision['atypical']['thresholds_by_n_known']):.2f}")

    def save(run_id: str) -> dict:
        return save_model(result.model, out, {
            "winner": result.winner, "calibration": result.calibration, "metrics": result.metrics,
            "candidates": [asdict(c) for c in result.candidates], "git_commit": git_commit(),
            "data_sha256": {k: sha256_file(p) for k, p in files.items()}, "mlflow_run_id": run_id,
            "split_sizes": {"train": len(train), "valid": len(valid), "calib": len(calib)},
            # the case mix the posteriors are calibrated under (`kneepain score --adapt-priors` starts from it)
            "class_prior": class_shares(labels(train)),
            "decision": decision}, kb_path=kb_path)

    info = log_training(result, config, files, save, lambda name: log_pyfunc(out, valid.head(5), name),
                        force_champion=force_champion,
                        datasets={"train": (train, "training"), "valid": (valid, "validation"),
                                  "calib": (calib, "calibration")})
    update_manifest(out, {k: v for k, v in info.items() if k != "manifest"})
    return info


@dataclass
class EvaluateResult:
    metrics: dict[str, Any]
    paths: list[Path]
    logged_to_mlflow: bool


def evaluate_stage(model_source: str | Path | None, kb: KnowledgeBase, data: Path, out: Path) -> EvaluateResult:
    """Score ``test`` and ``shift`` against the oracle, write ``out`` (metrics, plots, model card)
    and add them to the model's MLflow run when it is in this tracking store."""
    from pipeline.model.tracking import log_evaluation
    from pipeline.report.evaluate import evaluate_model, write_reports
    from pipeline.serve.loading import load_model

    model = load_model(model_source)
    splits = {name: read_split(name, data) for name in ("test", "shift", "calib")}
    metrics, arrays = evaluate_model(model, kb, splits, return_arrays=True)
    paths = write_reports(metrics, arrays, out, model.manifest)
    card = next((p for p in paths if p.name == "model_card.md"), None)
    logged = log_evaluation(model.manifest.get("mlflow_run_id"), metrics, paths, out,
                            model_card=card.read_text(encoding="utf-8") if card else None)
    return EvaluateResult(metrics, paths, logged)


def evaluate_file(model_source: str | Path | None, path: Path, out: Path, *, track: bool = True,
                  n_boot: int = 1000) -> EvaluateResult:
    """`kneepain evaluate --data FILE`: the stage's evaluation on a user's labelled cases, with
    confidence intervals; writes ``out`` (metrics.json, rejects.csv, plots, report.md) and, with
    ``track``, logs a run with the file as its evaluation dataset."""
    from pipeline.core.cases import read_case_file
    from pipeline.report.labelled import evaluate_labelled, write_labelled_reports
    from pipeline.serve.loading import load_model

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file of labelled cases.")
    model = load_model(model_source)
    frame = read_case_file(path)
    metrics, arrays, rejects = evaluate_labelled(model, frame, n_boot=n_boot, where=str(path))
    paths = write_labelled_reports(metrics, arrays, rejects, out, source=path.name)
    if track:
        from pipeline.model.tracking import log_labelled_evaluation

        metrics["mlflow_run_id"] = log_labelled_evaluation(model.manifest, metrics, paths, out, frame, path)
        write_json_atomic(out / "metrics.json", metrics)  # with the run id, to find the run again
    return EvaluateResult(metrics, paths, track)


def sensitivity_stage(kb_path: Path, triage: TriageConfig, probes: ProbesConfig, out: Path, *, draws: int,
                      n: int, seed: int = 0) -> dict[str, Any]:
    """Write ``out/sensitivity.json`` and ``out/tornado.png``; return the result."""
    from pipeline.core.knowledge import read_knowledge_base_yaml
    from pipeline.report.sensitivity import plot_tornado, sensitivity

    result = sensitivity(read_knowledge_base_yaml(kb_path), triage, probes, draws=draws, n=n, seed=seed)
    write_json_atomic(out / "sensitivity.json", result)
    plot_tornado(result, out / "tornado.png")
    return result
