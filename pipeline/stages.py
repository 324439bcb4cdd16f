"""The DVC stages' recipes: each wires library functions together for one `kneepain` command.

Every function takes its inputs (configs already validated, folders) and returns what the
command prints; :mod:`pipeline.cli` parses arguments, fills in the default paths and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.config import GenerateConfig, ProbesConfig, ScreenConfig, TrainConfig, TriageConfig
from pipeline.core.errors import BatchInputError, error_lines
from pipeline.core.files import sha256_file, write_report_json
from pipeline.core.knowledge import KnowledgeBase, load_knowledge_base
from pipeline.core.parsing import ignored_columns_message, parse_cases
from pipeline.core.schema import CONDITIONS, ID_COLUMN, LABEL_COLUMN, LABELLED_COLUMNS
from pipeline.core.tracking_server import tracking_uri
from pipeline.data.datasets import (
    check_generated_from,
    class_shares,
    kb_for_split,
    labels,
    oracle_summary,
    read_split,
    split_table,
)
from pipeline.data.generate import write_splits

if TYPE_CHECKING:
    from pipeline.data.real import LabelledCases

__all__ = ["EvaluateResult", "ExtraCases", "evaluate_file", "evaluate_stage", "generate_stage", "read_extra_cases",
           "refuse_model_out", "sensitivity_stage", "train_stage"]


def generate_stage(kb: KnowledgeBase, config: GenerateConfig, out: Path) -> tuple[dict[str, int], dict]:
    """Write the splits and ``summary.json`` (class counts, the oracle's scores) into ``out``.

    Returns the split sizes and the summary.
    """
    frames = write_splits(kb, config, out)
    summary = {"class_counts": split_table(frames).to_dict(),
               "oracle": {name: oracle_summary(kb_for_split(kb, name), frames[name])
                          for name in ("test", "shift") if name in frames}}
    write_report_json(out / "summary.json", summary)
    return {k: len(v) for k, v in frames.items()}, summary


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Cases in the canonical typed form with their labels, so synthetic and real ones concatenate."""
    return parse_cases(frame).to_frame().assign(**{LABEL_COLUMN: frame[LABEL_COLUMN].astype(str).to_numpy()})


EXTRA_REJECTS = "extra_rejects.csv"  # the training run's artifact of the extra cases' problems
_LISTED_REJECTS = 20  # of them, printed in the training log


@dataclass
class ExtraCases:
    """Real labelled cases for training: the part trained on, the part held out, what was rejected."""

    path: Path
    to_train: pd.DataFrame
    held_out: pd.DataFrame
    n_rows: int
    rejects: pd.DataFrame  # row, case_id (where the file has ids), column, value, reason of every problem (a row
    # may have several)
    ignored: tuple[str, ...]  # columns that are neither case fields nor labels
    weight: float

    @property
    def n_rejected(self) -> int:
        return int(self.rejects["row"].nunique())

    def summary_lines(self) -> list[str]:
        """What the training log says of them: how many are trained on, held out and rejected, the
        held-out share by condition, the conditions with no valid case, the columns ignored and
        the first rejected rows' problems (every one is in the training run's extra_rejects.csv)."""
        lines = [f"Extra cases from {self.path}: {len(self.to_train):,} to train on (weight {self.weight:g}), "
                 f"{len(self.held_out):,} held out, {self.n_rejected:,} of {self.n_rows:,} rows rejected"]
        if len(self.held_out):
            held = self.held_out[LABEL_COLUMN].astype(str).value_counts().sort_index()
            lines.append(f"  held out by condition: {', '.join(f'{c} {n:,}' for c, n in held.items())}")
        given = set(self.to_train[LABEL_COLUMN].astype(str)) | set(self.held_out[LABEL_COLUMN].astype(str))
        if absent := [c for c in CONDITIONS if c not in given]:
            spelt = " (a label spelt another way is among the rejected rows?)" if len(self.rejects) else ""
            lines.append(f"  warning: no valid case of {', '.join(absent)} in {self.path}: for them the model learns "
                         f"from the synthetic cases alone{spelt}")
        if self.ignored:
            lines.append(f"  warning: {ignored_columns_message(self.ignored, str(self.path), also=LABELLED_COLUMNS)}")
        if len(self.rejects):
            lines += [f"  {line}" for line in error_lines(self.rejects, _LISTED_REJECTS)]
        return lines


def _without_synthetic_rows(labelled: LabelledCases, data: Path) -> LabelledCases:
    """``labelled`` without the rows that are cases of a synthetic split in ``data``
    (:func:`pipeline.data.fingerprints.split_matches`), each a reject line saying which and why:
    rows of ``valid`` among the extra cases gave a validation log loss measured on rows trained
    on, which moved the champion alias; rows of ``train`` held out gave held-out figures on rows
    the model was fitted on."""
    from pipeline.data.fingerprints import HELD_OUT_SPLITS, split_matches

    split = split_matches(labelled.parsed, labels(labelled.valid), data, ("train", *HELD_OUT_SPLITS))
    hit = split != ""
    if not hit.any():
        return labelled
    why = {name: f"which {role}: trained on, that row would no longer be held out there"
           for name, role in HELD_OUT_SPLITS.items()}
    why["train"] = ("which the model is trained on already: a copy adds only weight there, and held out it would be "
                    "scored as a real case the model was not fitted on")
    lines = pd.DataFrame({"row": labelled.rows[hit], "column": "", "value": "", "reason": [
        f"the same case (every answer and the condition) as a row of the synthetic {name} split in {data}, "
        f"{why[name]}" for name in split[hit]]})
    if ID_COLUMN in labelled.rejects.columns and labelled.parsed.ids is not None:
        lines.insert(1, ID_COLUMN, labelled.parsed.ids.astype("string").to_numpy()[hit])
    rejects = pd.concat([labelled.rejects, lines], ignore_index=True).sort_values("row", kind="stable",
                                                                                 ignore_index=True)
    keep = np.flatnonzero(~hit)
    return labelled._replace(valid=labelled.valid.iloc[keep].reset_index(drop=True),
                             reference=labelled.reference[keep], rejects=rejects, rows=labelled.rows[keep],
                             parsed=labelled.parsed[keep])


def read_extra_cases(config: TrainConfig, data: Path | None = None) -> ExtraCases | None:
    """The ``extra_data`` of ``config``, validated and split (None when no path is set); with
    ``data``, the synthetic data folder, without its splits' cases (each rejected)."""
    from pipeline.core.casefiles import read_case_records
    from pipeline.core.paths import project_root
    from pipeline.data.real import holdout_split, validate_labelled

    extra = config.extra_data
    if not extra.path:
        return None
    path = Path(extra.path) if Path(extra.path).is_absolute() else project_root() / extra.path
    if not path.is_file():
        what = "is a folder, not a file of labelled cases" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"extra_data.path: {path} {what}.")
    raw, malformed = read_case_records(path)
    labelled = validate_labelled(raw, where=str(path), malformed=malformed)
    if data is not None:
        labelled = _without_synthetic_rows(labelled, data)
    cases, _, rejects, ignored, _, parsed = labelled
    if len(cases) == 0:
        from pipeline.report.labelled import no_valid_rows_error

        raise no_valid_rows_error(f"extra data {path}", len(raw), rejects, then="train again")
    try:
        to_train, held = holdout_split(cases, extra.holdout, seed=config.seed, parsed=parsed)
    except ValueError as err:  # a share that rounds to every case: said as the option's, not as a failure
        raise BatchInputError(f"--extra-holdout (extra_data.holdout) {extra.holdout:g}: {err}") from None
    return ExtraCases(path, to_train, held, len(raw), rejects, ignored, extra.weight)


def refuse_model_out(out: Path, data: Path) -> None:
    """Refuse (FileExistsError), before training, an ``--out`` the model cannot be saved in, or whose
    files are not a model's: a file (it failed after the training, naming no option), the
    ``--data`` folder, or a folder with a ``manifest.json`` that is no model's (the data's record of
    how it was generated was replaced by the model's, with no copy in git or DVC)."""
    from pipeline.model.persist import MANIFEST_FILE, foreign_manifest

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file; give a folder for the model (it is made if missing).")
    if out.is_dir() and data.is_dir() and os.path.samefile(out, data):
        raise FileExistsError(f"--out {out}: is the --data folder; the model's {MANIFEST_FILE} would replace the "
                              "data's. Give the model a folder of its own.")
    if foreign_manifest(out):
        raise FileExistsError(f"--out {out}: holds a {MANIFEST_FILE} that is not a model's (a data folder's?), "
                              "which saving the model would replace; give the model a folder of its own.")


def train_stage(config: TrainConfig, triage: TriageConfig, screen: ScreenConfig, kb_path: Path, data: Path, out: Path, *,
                backend: str = "loky", scheduler: str | None = None, force_champion: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare candidates, calibrate, fit the decision layer on ``calib``, save ``out`` and log to
    MLflow (registering the model and moving the champion alias if it is better).

    With ``config.extra_data.path``, real labelled cases join ``train`` (each weighing
    ``extra_data.weight``) but for a held-out share, which is evaluated with its intervals and
    recorded in the manifest and the MLflow run.

    Returns what :func:`pipeline.model.tracking.log_training` returns.
    """
    from pipeline.data.fingerprints import cases_digest
    from pipeline.data.real import rejects_csv
    from pipeline.decision.layer import fit_decision_on
    from pipeline.model.persist import save_model, update_manifest
    from pipeline.model.tracking import git_commit, log_holdout, log_text, log_training
    from pipeline.model.train import train_model
    from pipeline.serve.mlflow_model import log_pyfunc

    refuse_model_out(out, data)
    tracking_uri()  # an unreachable tracking server fails now, not after the training it would record
    kb = load_knowledge_base(kb_path)
    check_generated_from(kb, data, "the model would keep this knowledge base beside data drawn from another")
    train, valid, calib = read_split("train", data), read_split("valid", data), read_split("calib", data)
    files = {name: data / f"{name}.parquet" for name in ("train", "valid", "calib")}
    datasets = {"train": (train, "training", files["train"]), "valid": (valid, "validation", files["valid"]),
                "calib": (calib, "calibration", files["calib"])}
    extra = read_extra_cases(config, data)
    weight = None
    if extra is not None:
        log("\n".join(extra.summary_lines()))
        n_synthetic = len(train)
        train = pd.concat([_canonical(train), _canonical(extra.to_train)], ignore_index=True)
        weight = np.r_[np.ones(n_synthetic), np.full(len(extra.to_train), extra.weight)]
        files["extra"] = extra.path
        datasets.update(extra=(extra.to_train, "training", extra.path),
                        extra_holdout=(extra.held_out, "evaluation", extra.path))
    log(f"Training on {len(train):,} cases ({config.cv.folds}-fold CV on up to "
        f"{config.cv.max_rows or len(train):,}), calibrating on {len(valid):,}")
    if backend == "dask":
        from pipeline.core.cluster import dask_client

        with dask_client(scheduler):
            result = train_model(config, train, valid, backend="dask", log=log, sample_weight=weight)
    else:
        result = train_model(config, train, valid, log=log, sample_weight=weight)
    decision = fit_decision_on(result.model, kb, calib, triage, screen)
    thresholds = [t for row in decision["conformal"]["thresholds"] for t in row]
    log(f"  decision layer fitted on calib ({len(calib):,}) and {len(triage.conformal.blank_rates)} blanked copies: "
        f"conformal thresholds {min(thresholds):.3f}..{max(thresholds):.3f} over "
        f"{len(thresholds)} bands, "
        f"atypical thresholds by number of answers {min(decision['atypical']['thresholds_by_n_known']):.2f}"
        f"..{max(decision['atypical']['thresholds_by_n_known']):.2f}")
    sizes = {"train": len(train), "valid": len(valid), "calib": len(calib)}
    if extra is not None:
        sizes.update(extra_train=len(extra.to_train), extra_holdout=len(extra.held_out))

    def save(run_id: str) -> dict:
        return save_model(result.model, out, {
            "winner": result.winner, "calibration": result.calibration, "metrics": result.metrics,
            "candidates": [asdict(c) for c in result.candidates], "git_commit": git_commit(),
            "data_sha256": {k: sha256_file(p) for k, p in files.items()}, "mlflow_run_id": run_id,
            "split_sizes": sizes,
            # the case mix the posteriors are calibrated under (`kneepain score --adapt-priors` starts from it)
            "class_prior": class_shares(labels(train), weight),
            "decision": decision}, kb_path=kb_path)

    info = log_training(result, config, files, save, lambda name: log_pyfunc(out, valid.head(5), name),
                        force_champion=force_champion, datasets=datasets, valid_digest=cases_digest(valid))
    if extra is not None and len(extra.rejects):
        log_text(info["mlflow_run_id"], rejects_csv(extra.rejects), EXTRA_REJECTS)
        log(f"  the {extra.n_rejected:,} rejected rows' problems: artifact {EXTRA_REJECTS} of MLflow run "
            f"{info['mlflow_run_id']}")
    if extra is not None and len(extra.held_out):
        from pipeline.report.labelled import evaluate_labelled
        from pipeline.serve.loading import load_model

        held, _, _ = evaluate_labelled(load_model(out), extra.held_out, n_boot=500, seed=config.seed,
                                       where=f"{extra.path} (held out)")
        log_holdout(info["mlflow_run_id"], held, "extra_holdout.")
        info["extra_holdout"] = {k: held[k] for k in ("n", "accuracy", "accuracy_ci", "top3_accuracy", "log_loss",
                                                      "log_loss_ci", "ece", "repeated_rows")}
    update_manifest(out, {k: v for k, v in info.items() if k not in ("manifest", "new_store")})
    if extra is not None:  # not in the manifest: the command's exit code says it, as `score` and `evaluate` do
        info["extra_rejected"] = extra.n_rejected
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

    check_generated_from(kb, data, "its oracle is not the best possible on them (the model could seem to beat it)")
    model = load_model(model_source)
    if model.manifest.get("mlflow_run_id"):  # to be logged to: a server out of reach fails now, not after the work
        tracking_uri()
    splits = {name: read_split(name, data) for name in ("test", "shift", "calib")}
    metrics, arrays = evaluate_model(model, kb, splits, return_arrays=True)
    paths = write_reports(metrics, arrays, out, model.manifest)
    card = next((p for p in paths if p.name == "model_card.md"), None)
    logged = log_evaluation(model.manifest.get("mlflow_run_id"), metrics, paths, out,
                            model_card=card.read_text(encoding="utf-8") if card else None,
                            datasets={name: (splits[name], data / f"{name}.parquet") for name in ("test", "shift")})
    return EvaluateResult(metrics, paths, logged)


def evaluate_file(model_source: str | Path | None, path: Path, out: Path, *, track: bool = True,
                  n_boot: int = 1000, data: Path | None = None) -> EvaluateResult:
    """`kneepain evaluate --data FILE`: the stage's evaluation on a user's labelled cases, with
    confidence intervals; writes ``out`` (metrics.json, rejects.csv, plots, report.md) and, with
    ``track``, logs a run with the file as its evaluation dataset. An ``out`` that cannot take the
    files, or whose files would replace ``path``, is refused before any work; a file the model was
    fitted on is refused; rows of it found among the fitting splits in ``data`` (default
    ``data/synthetic``) by their answers and condition are left out and counted."""
    from pipeline.core.casefiles import read_case_records
    from pipeline.core.paths import data_dir
    from pipeline.data.fingerprints import fitted_fingerprints
    from pipeline.report.labelled import EVALUATION_FILES, evaluate_labelled, write_labelled_reports
    from pipeline.serve.batch import check_target
    from pipeline.serve.guard import refuse_same_file
    from pipeline.serve.loading import load_model

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file of labelled cases.")
    # before any work: each file it writes can be, and none is the input (a file named rejects.csv in
    # `out` was deleted or overwritten)
    written = [(f"evaluation's {name}", out / name) for name in EVALUATION_FILES]
    for what, target in written:
        check_target(target, what, make_folders=True)
    refuse_same_file([path], written, job="evaluating", advice="give --out another folder")
    if track:
        tracking_uri()
    model = load_model(model_source)
    refuse_fitted_data(path, model.manifest)
    frame, malformed = read_case_records(path)
    fitted = fitted_fingerprints(model.manifest, data_dir() if data is None else data)
    metrics, arrays, rejects = evaluate_labelled(model, frame, n_boot=n_boot, where=str(path), malformed=malformed,
                                                 fitted=fitted)
    metrics["source"] = str(path.resolve())  # which file a folder's evaluation is of (another may share its name)
    paths = write_labelled_reports(metrics, arrays, rejects, out, source=path.name)
    if track:
        from pipeline.model.tracking import log_labelled_evaluation

        metrics["mlflow_run_id"] = log_labelled_evaluation(model.manifest, metrics, paths, out, frame, path)
        write_report_json(out / "metrics.json", metrics)  # with the run id, to find the run again
    return EvaluateResult(metrics, paths, track)


_FITTED_ON = {"train": "trained on", "valid": "calibrated on", "calib": "given its decision layer by",
              "extra": "trained on (--extra-data)"}


def refuse_fitted_data(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse to evaluate a model on a file it was fitted on (the same bytes as one its manifest
    records): its figures there would not be held out."""
    recorded = manifest.get("data_sha256") or {}
    digest = sha256_file(path)
    used = [name for name, sha in recorded.items() if sha == digest]
    if used:
        held = " (the held-out share of that file is evaluated at training: see the manifest's extra_holdout and " \
               "the MLflow run)" if "extra" in used else ""
        raise BatchInputError(f"{path}: the model was {_FITTED_ON.get(used[0], f'fitted on ({used[0]})')} this file "
                              f"(the same SHA-256 as in its manifest), so figures on it would not be held out{held}; "
                              "evaluate on cases the model has not seen.")


def sensitivity_stage(kb_path: Path, triage: TriageConfig, probes: ProbesConfig, out: Path, *, draws: int,
                      n: int, seed: int = 0) -> dict[str, Any]:
    """Write ``out/sensitivity.json`` and ``out/tornado.png``; return the result."""
    from pipeline.core.knowledge import read_knowledge_base_yaml
    from pipeline.report.sensitivity import plot_tornado, sensitivity

    result = sensitivity(read_knowledge_base_yaml(kb_path), triage, probes, draws=draws, n=n, seed=seed)
    write_report_json(out / "sensitivity.json", result)
    plot_tornado(result, out / "tornado.png")
    return result
