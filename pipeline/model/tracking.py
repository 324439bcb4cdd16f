"""MLflow tracking and the model registry for `kneepain train` and `kneepain evaluate`.

The embedded default is ``sqlite:///mlflow.db`` in the project folder with artifacts in
``mlartifacts/`` beside it; ``MLFLOW_TRACKING_URI`` overrides it (a server such as
``http://127.0.0.1:5000``). How the model itself is logged is the serving room's business
(:func:`pipeline.serve.mlflow_model.log_pyfunc`): :func:`log_training` takes it as a callable.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.core.config import TrainConfig, flatten
from pipeline.core.files import sha256_file
from pipeline.core.paths import default_tracking_uri, project_root, sqlite_store
from pipeline.core.schema import LABEL_COLUMN
from pipeline.core.tracking_server import tracking_uri
from pipeline.core.wording import two_numbers
from pipeline.model.mlflow_hints import quiet_schema_hints
from pipeline.model.persist import library_versions
from pipeline.model.train import TrainResult

__all__ = ["use_tracking", "log_training", "log_evaluation", "log_holdout", "log_text", "log_labelled_evaluation",
           "promote_champion", "CHAMPION_WHY", "VALID_DIGEST_TAG", "champion_note", "git_commit", "source_tags", "log_dataset"]


def use_tracking(experiment: str) -> str:
    """Point MLflow at the tracking URI and the experiment; return the experiment id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    store = sqlite_store(uri)  # keep artifacts beside the database, not in the working directory
    location = (store.resolve().parent / "mlartifacts").as_uri() if store is not None else None
    return mlflow.create_experiment(experiment, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_tags(command: str) -> dict[str, str]:
    """MLflow's standard source tags (``mlflow.source.*``) for a run started by ``command``."""
    commit = git_commit()
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": command,
            "kneepain.git_dirty": str(commit.endswith("-dirty")).lower()}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def log_dataset(frame: pd.DataFrame, source: str | Path, name: str, context: str) -> None:
    """Record ``frame`` (read from ``source``) as an input of the active run (``context``: training,
    validation, evaluation...). MLflow keeps its name, digest, schema and row count, not the rows."""
    from mlflow.data.pandas_dataset import from_pandas

    target = LABEL_COLUMN if LABEL_COLUMN in frame.columns else None
    # categorical columns as text: MLflow's schema inference has no categorical type
    plain = frame.astype({c: "string" for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})
    with quiet_schema_hints():
        mlflow.log_input(from_pandas(plain, source=str(source), targets=target, name=name), context=context)


# the registered version's tag with the digest of the cases its valid log loss was measured on
VALID_DIGEST_TAG = "valid_cases_digest"

# why a version took the alias where no comparison was won (:func:`promote_champion` also says
# "first", no version held it, and "better", no worse on valid log loss)
CHAMPION_WHY = {
    "forced": "--force-champion",
    "other cases": "the one before was measured on another valid split, so the two were not compared",
    "unmeasured": "the one before has no recorded valid log loss, so the two were not compared",
}


def champion_note(why: str | None, alias: str = "champion", valid_log_loss: float | None = None,
                  holder_log_loss: float | None = None) -> str:
    """What `kneepain train` says after the version it registered: whether it took ``alias``, and
    where that was not a comparison won, why (:func:`promote_champion`'s answer); where it did
    not, the two valid log losses compared."""
    if why is None:
        compared = ": valid log loss {}, not better than its {}".format(*two_numbers(valid_log_loss, holder_log_loss, 4, 8)) \
            if valid_log_loss is not None and holder_log_loss is not None else ": not better on valid log loss"
        return f" ({alias} unchanged{compared})"
    return f" (now {alias}: {CHAMPION_WHY[why]})" if why in CHAMPION_WHY else f" (now {alias})"


def promote_champion(client: MlflowClient, name: str, alias: str, version: str, valid_log_loss: float,
                     *, force: bool = False, valid_sha256: str | None = None,
                     valid_digest: str | None = None) -> str | None:
    """Move ``alias`` to ``version`` if it is no worse than the current holder on valid log loss
    (or ``force``), and say why ("first", "better", or a key of :data:`CHAMPION_WHY`); None where
    it stays. A tie goes to
    the new version: retraining on the same cases after an upgrade gives the same model, and the
    new version carries the code and decision layer of the upgrade (a served model runs the code it
    was logged with).

    Log losses compare only on the same cases: a holder measured on another ``valid`` split
    (say, trained before the knowledge base changed, and perhaps unable to read today's cases) is
    replaced, whatever its number. The cases are compared by ``valid_digest``
    (:func:`pipeline.data.fingerprints.cases_digest`, the same for the same cases in any file),
    and with a holder that did not record one, by the file's ``valid_sha256``: the same cases
    written again by another pyarrow have other bytes.

    The alias's holder is the version whose run has a tag named as the alias (``champion``) set to
    "True": the tag moves off the run of the version that held the alias before (left as it is
    where that run is deleted). A holder with no recorded valid log loss (registered by hand, say)
    is replaced, as "unmeasured"."""
    client.set_model_version_tag(name, version, "valid_log_loss", repr(valid_log_loss))
    for key, value in ((VALID_DIGEST_TAG, valid_digest), ("valid_data_sha256", valid_sha256)):
        if value is not None:
            client.set_model_version_tag(name, version, key, value)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        # only "no such alias yet" means there is no champion; a server error must not move it
        if err.error_code != "INVALID_PARAMETER_VALUE" or "not found" not in err.message:
            raise
        current = None
    compared = current is not None and (current.tags.get(VALID_DIGEST_TAG) == valid_digest
                                        if VALID_DIGEST_TAG in current.tags and valid_digest is not None
                                        else current.tags.get("valid_data_sha256") == valid_sha256)
    best = float(current.tags.get("valid_log_loss", "inf")) if current is not None else math.inf
    measured = current is None or "valid_log_loss" in current.tags
    if compared and measured and not force and not valid_log_loss <= best:
        return None
    client.set_registered_model_alias(name, alias, version)
    if current is not None and current.run_id and current.run_id != client.get_model_version(name, version).run_id:
        _untag_holder(client, current.run_id, alias)
    return "first" if current is None else "forced" if force else "unmeasured" if not measured else \
        "better" if compared else "other cases"


def _untag_holder(client: MlflowClient, run_id: str, alias: str) -> None:
    """Set the ``alias`` tag of the run whose version gave up the alias to "False", unless that
    run is deleted (MLflow refuses a tag on a deleted run) or gone."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return
    if run.info.lifecycle_stage == "active":
        client.set_tag(run_id, alias, "False")


def log_training(result: TrainResult, config: TrainConfig, data_files: dict[str, Path],
                 save: Callable[[str], dict], log_model: Callable[[str], Any], *,
                 force_champion: bool = False, datasets: dict[str, tuple[pd.DataFrame, str, Path]] | None = None,
                 valid_digest: str | None = None) -> dict[str, Any]:
    """Log one `kneepain train` to MLflow: a parent run, a nested run per candidate, the model.

    ``save(run_id) -> manifest`` writes the model folder; it is called inside the run so the
    manifest carries the run id. ``log_model(registered_model_name) -> ModelInfo`` then logs and
    registers the model in the active run. ``datasets`` maps a dataset name to ``(frame,
    context, file)``; each is logged as a run input. The registered model and the new version get descriptions (the model card).
    ``valid_digest`` (the ``valid`` cases' :func:`pipeline.data.fingerprints.cases_digest`) says
    which champion's log loss compares (:func:`promote_champion`).
    """
    shas = {name: sha256_file(path) for name, path in data_files.items()}
    store = sqlite_store(default_tracking_uri())
    new_store = store is not None and not store.exists()  # said: a mistyped file name starts an empty registry
    exp_id = use_tracking(config.tracking.experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{result.winner}",
                          tags=source_tags("kneepain train")) as run:
        mlflow.log_params(flatten(config.model_dump(), "config."))
        for name, (frame, context, source) in (datasets or {}).items():
            log_dataset(frame, source, name, context)
        mlflow.set_tags({"winner": result.winner,
                         **{f"data_sha256.{k}": sha for k, sha in shas.items()},
                         **{f"version.{k}": v for k, v in library_versions().items()},
                         "version.mlflow": metadata.version("mlflow")})
        for cand in result.candidates:
            with mlflow.start_run(experiment_id=exp_id, run_name=cand.name, nested=True,
                                  tags=source_tags("kneepain train")):
                mlflow.log_params({f"model.{k}": v for k, v in cand.params.items()})
                mlflow.log_metrics({"cv_log_loss": cand.cv_log_loss, "cv_log_loss_std": cand.cv_log_loss_std,
                                    "cv_accuracy": cand.cv_accuracy, "fit_seconds": cand.fit_seconds,
                                    "rows_per_second": cand.rows_per_second})
                mlflow.set_tag("selected", str(cand.name == result.winner))
        mlflow.log_metrics({**result.metrics, **{f"calibration.{k}": float(v) for k, v in result.calibration.items()
                                                 if isinstance(v, (int, float))}})
        mlflow.set_tag("calibration.kept", str(result.calibration["kept"]))
        manifest = save(run.info.run_id)
        info = log_model(config.tracking.registered_model)
        version = str(info.registered_model_version)
        client = MlflowClient()
        moved = promote_champion(client, config.tracking.registered_model, config.tracking.alias, version,
                                 result.metrics["valid_log_loss"], force=force_champion,
                                 valid_sha256=shas.get("valid"),
                                 valid_digest=valid_digest)
        mlflow.set_tag(config.tracking.alias, str(moved is not None))
        holder_log_loss = None if moved is not None else float(client.get_model_version_by_alias(
            config.tracking.registered_model, config.tracking.alias).tags["valid_log_loss"])
        client.update_registered_model(config.tracking.registered_model, description=REGISTERED_MODEL_DESCRIPTION)
        client.update_model_version(config.tracking.registered_model, version, description=_version_description(
            result, run.info.run_id, datasets))
    return {"mlflow_run_id": run.info.run_id, "mlflow_model_uri": info.model_uri,
            "registered_model": config.tracking.registered_model, "registered_version": version,
            "champion": moved is not None, "champion_why": moved, "champion_valid_log_loss": holder_log_loss,
            "tracking_uri": default_tracking_uri(), "new_store": new_store,
            "manifest": manifest}


def log_evaluation(run_id: str | None, metrics: dict[str, Any], paths: list[Path], reports_dir: Path,
                   model_card: str | None = None, datasets: dict[str, tuple[pd.DataFrame, Path]] | None = None) -> bool:
    """Add evaluation metrics and reports to the training run; False if that run is not in this store.

    ``model_card`` (markdown) becomes the description of the model versions registered from that run;
    ``datasets`` (name to frame and file) are logged as its evaluation inputs.
    """
    if not run_id:
        return False
    mlflow.set_tracking_uri(tracking_uri())
    try:
        MlflowClient().get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    keys = ("test", "shift", "triage", "conformal", "atypical")
    flat = {k: float(v) for k, v in flatten({s: metrics[s] for s in keys if s in metrics}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and ".per_class" not in k}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k.replace("/", "_"): v for k, v in flat.items()})
        for name, (frame, source) in (datasets or {}).items():
            log_dataset(frame, source, name, "evaluation")
        for path in paths:
            rel = Path(path).resolve().relative_to(reports_dir.resolve()).parent
            mlflow.log_artifact(str(path), artifact_path=str(Path("reports") / rel).rstrip("/."))
    if model_card:
        client = MlflowClient()
        for version in client.search_model_versions(f"run_id = '{run_id}'"):
            client.update_model_version(version.name, version.version, description=model_card)
    return True


def _loggable(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a labelled evaluation, with interval bounds as ``<name>_ci_low``/``_ci_high``."""
    flat = {k: float(v) for k, v in flatten({k: v for k, v in metrics.items() if k != "confusion_matrix"}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    flat.update({f"{k}_ci_low": v[0] for k, v in _intervals(metrics).items()})
    flat.update({f"{k}_ci_high": v[1] for k, v in _intervals(metrics).items()})
    return {k.replace("/", "_"): v for k, v in flat.items() if v == v}  # NaN: no such cases


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """``text`` as the artifact ``artifact_file`` of run ``run_id``."""
    MlflowClient().log_text(run_id, text, artifact_file)


def log_holdout(run_id: str, metrics: dict[str, Any], prefix: str) -> None:
    """Add a labelled evaluation (held-out real cases) to the training run, its names under ``prefix``."""
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({prefix + k: v for k, v in _loggable(metrics).items()})


def log_labelled_evaluation(model_manifest: dict, metrics: dict[str, Any], paths: list[Path], out_dir: Path,
                            frame: pd.DataFrame, source: str | Path, *, experiment: str = "kneepain") -> str:
    """Log `kneepain evaluate --data FILE` as its own run: the cases as an evaluation dataset input,
    the headline figures with their interval bounds, the reports; linked to the model's training run.

    Returns the run id.
    """
    exp_id = use_tracking(experiment)
    tags = {**source_tags("kneepain evaluate"), "kneepain.kind": "evaluation",
            "kneepain.model_run_id": str(model_manifest.get("mlflow_run_id", "")),
            "kneepain.model_winner": str(model_manifest.get("winner", ""))}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"evaluate-{Path(source).stem}", tags=tags) as run:
        log_dataset(frame, Path(source).resolve() if Path(source).exists() else source, Path(source).stem, "evaluation")
        mlflow.log_metrics(_loggable(metrics))
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    return run.info.run_id


def _intervals(metrics: dict[str, Any]) -> dict[str, list[float]]:
    return {k[:-3]: v for k, v in metrics.items() if k.endswith("_ci") and isinstance(v, list)}


REGISTERED_MODEL_DESCRIPTION = (
    "kneepain classifier: a probability for each of nine causes of pain behind the knee, with a decision "
    "layer (triage level, conformal differential set, atypical flag). Trained on synthetic cases from "
    "configs/knowledge_base.yaml, plus real labelled cases when `kneepain train --extra-data` is used. "
    "Information, not a diagnosis; not a medical device and not validated on real patients. Each version's "
    "description is its model card (replaced by reports/model_card.md when `kneepain evaluate` runs).")


def _version_description(result: TrainResult, run_id: str, datasets: dict[str, tuple[pd.DataFrame, str, Path]] | None
                         ) -> str:
    lines = [f"Model card (training run {run_id})", "",
             f"- model: {result.winner}; calibration kept: {result.calibration.get('kept')}",
             *(f"- {k}: {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float)),
             *(f"- {context} data `{name}`: {len(frame):,} cases" for name, (frame, context, _) in (datasets or {}).items()),
             "", "Information, not a diagnosis; not validated on real patients."]
    return "\n".join(lines)
