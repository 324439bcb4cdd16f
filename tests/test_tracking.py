"""MLflow tracking, the registry and the champion alias, against real stores."""

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import BIN, free_port, running

from pipeline.cli import main
from pipeline.core.errors import ModelIntegrityError, TrackingServerError
from pipeline.core.tracking_server import check_reachable
from pipeline.core.wording import two_numbers
from pipeline.data.datasets import read_split
from pipeline.model.tracking import champion_note, git_commit
from pipeline.serve.loading import load_model, pinned_uri
from pipeline.serve.predict import predict

NAME = "kneepain-classifier"


def _logistic_only(config: Path, folder: Path, C: str = "1.0") -> Path:
    """The small training config with the logistic candidate alone (with inverse regularisation ``C``)."""
    path = folder / f"logistic-{C}.yaml"
    text = config.read_text().replace("candidates: [logistic, hist_gradient_boosting, mlp]", "candidates: [logistic]")
    path.write_text(text.replace("logistic: {C: 1.0", f"logistic: {{C: {C}"))
    return path


@contextlib.contextmanager
def _champion_kept(client):
    """Yield the champion's version; then give the alias and the run's ``champion`` tag back to it
    (other tests share this store and expect the original champion), and take the tag off every
    other run of the experiment."""
    holder = client.get_model_version_by_alias(NAME, "champion")
    try:
        yield holder
    finally:
        client.set_registered_model_alias(NAME, "champion", holder.version)
        experiment = client.get_run(holder.run_id).info.experiment_id
        for run in client.search_runs([experiment], filter_string="tags.champion = 'True'"):
            client.set_tag(run.info.run_id, "champion", "False")
        client.set_tag(holder.run_id, "champion", "True")


def _client(uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def test_training_run_is_recorded_with_params_metrics_and_lineage(trained):
    models, uri = trained
    manifest = json.loads((models / "manifest.json").read_text())
    client = _client(uri)
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.data.params["config.cv.folds"] == "3"
    assert run.data.params["config.models.logistic.C"] == "1.0"
    assert "valid_log_loss" in run.data.metrics and "cv_log_loss" in run.data.metrics
    assert run.data.tags["data_sha256.train"] == manifest["data_sha256"]["train"]
    assert run.data.tags["version.scikit-learn"]
    # the commit where git can say it (not in a tarball, nor where git refuses another user's checkout)
    commit = git_commit()
    assert run.data.tags.get("mlflow.source.git.commit") == (None if commit == "unknown" else commit.removesuffix("-dirty"))
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["hist_gradient_boosting", "logistic", "mlp"]
    assert all("cv_log_loss" in r.data.metrics and "rows_per_second" in r.data.metrics for r in children)
    # each candidate's run names the command, as its parent does (not the venv's script path)
    assert {r.data.tags.get("mlflow.source.name") for r in children} == {run.data.tags["mlflow.source.name"]}
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == manifest["registered_version"]
    assert "not a diagnosis" in client.get_registered_model(NAME).description.lower()
    assert "Model card" in version.description and "extra" in version.description


def test_the_training_record_names_the_run_and_version_of_the_models_folder(trained):
    """`kneepain train --record FILE` (the DVC stage's) writes the run, the registered version and
    whether it took the alias, the same as the model folder's manifest and the registry say."""
    models, uri = trained
    record = json.loads((models.parent / "training.json").read_text())
    manifest = json.loads((models / "manifest.json").read_text())
    assert (record["mlflow_run_id"], record["registered_version"]) == (manifest["mlflow_run_id"], manifest["registered_version"])
    assert record["model_file"] == manifest["model_file"] and record["models"] == str(models)
    version = _client(uri).get_model_version(NAME, record["registered_version"])
    assert version.run_id == record["mlflow_run_id"] and record["champion"] is True  # the store's first took the alias


def test_dvcs_run_cache_is_off_for_the_stage_that_registers_models():
    """DVC restores a stage from its run cache without running its command (configs set back to
    an earlier state, say): for `train`, a model folder without its MLflow run and version, the
    champion alias left on the other folder. An output with ``cache: false`` turns the run cache
    off for the stage (dvc.org, user guide, "Run Cache"); the record is that output."""
    import yaml

    from pipeline.core.paths import project_root

    stage = yaml.safe_load((project_root() / "dvc.yaml").read_text())["stages"]["train"]
    uncached = [next(iter(o)) for o in stage["outs"] if isinstance(o, dict) and not next(iter(o.values())).get("cache", True)]
    assert uncached and all(f"--record {path}" in stage["cmd"] for path in uncached), stage


def test_dvc_keeps_the_model_folder_and_its_record_while_the_training_stage_runs():
    """DVC removes a stage's outputs before it runs its command: a typo in configs/train.yaml under
    `dvc repro` left no models/ at all once the command refused the config, and a refused `dvc exp
    run` removed reports/training.json, the record of the model left in place. Both persist."""
    import yaml

    from pipeline.core.paths import project_root

    stage = yaml.safe_load((project_root() / "dvc.yaml").read_text())["stages"]["train"]
    assert {"models": {"persist": True}} in stage["outs"], stage["outs"]
    assert {"reports/training.json": {"cache": False, "persist": True}} in stage["outs"], stage["outs"]


def test_training_run_records_its_datasets_and_the_held_out_real_cases(trained, small_data, tmp_path):
    models, uri = trained
    manifest = json.loads((models / "manifest.json").read_text())
    run = _client(uri).get_run(manifest["mlflow_run_id"])
    contexts = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
                for d in run.inputs.dataset_inputs}
    assert contexts == {"train": "training", "valid": "validation", "calib": "calibration", "extra": "training",
                        "extra_holdout": "evaluation"}
    assert manifest["split_sizes"]["extra_train"] == 300 and manifest["split_sizes"]["extra_holdout"] == 100
    assert manifest["split_sizes"]["train"] == 4300 and manifest["data_sha256"]["extra"]
    assert run.data.params["config.extra_data.weight"] == "2.0"
    held = manifest["extra_holdout"]
    assert held["n"] == 100 and held["accuracy_ci"][0] <= held["accuracy"] <= held["accuracy_ci"][1]
    assert run.data.metrics["extra_holdout.accuracy"] == pytest.approx(held["accuracy"])
    # the three rejected rows are named in the log, and every problem is kept in the run
    log = (models.parent / "train.log").read_text()
    assert "3 of 403 rows rejected" in log
    assert "row 100, column 'sex', value 'F': not allowed" in log and "row 102, column 'condition', value 'dvt?'" in log
    assert "ignoring columns that are not case fields: clinic" in log
    rejects = pd.read_csv(_client(uri).download_artifacts(run.info.run_id, "extra_rejects.csv", str(tmp_path)), dtype=str)
    assert rejects["row"].tolist() == ["100", "101", "102"]
    assert rejects["value"][1].startswith("'=HYPERLINK")  # shown by a spreadsheet, not run
    # real cases weigh twice: the recorded training mix moves towards the extra cases' older mix
    synthetic = (read_split("train", small_data)["condition"] == "osteoarthritis").mean()
    assert manifest["class_prior"]["osteoarthritis"] > synthetic + 0.005


def test_champion_predicts_like_the_models_folder(trained, small_data, monkeypatch):
    import mlflow

    models, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    cases = read_split("test", small_data).head(200)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    served = pyfunc.predict(cases.drop(columns=["condition", "severity"]))
    local = predict(cases, model=models)
    p_cols = [c for c in local.columns if c.startswith("p_")]
    np.testing.assert_allclose(served[p_cols].to_numpy(float), local[p_cols].to_numpy(float), rtol=1e-12)
    assert served["prediction"].tolist() == local["prediction"].tolist()
    via_uri = predict(cases, model=f"models:/{NAME}@champion")
    np.testing.assert_allclose(via_uri[p_cols].to_numpy(float), local[p_cols].to_numpy(float), rtol=1e-12)
    # names as the case schema matches them (MLflow would drop or refuse them), a red flag among
    # them; and top_k as predict() takes it
    shouted = pd.DataFrame([{"Age": 30, " Sex": "male", "Knee_Swelling": "yes", "skin_warm": "yes", "FEVER": "yes"}])
    with pytest.warns(UserWarning, match="fevers \\(did you mean fever\\?\\)"):
        pyfunc.predict(pd.DataFrame([{"age": 30, "sex": "male", "fevers": "yes"}]))
    got = pyfunc.predict(shouted, params={"top_k": 5})
    pd.testing.assert_frame_equal(got, predict(shouted, model=models, top_k=5), check_exact=True)
    chosen = pyfunc.predict(shouted, params={"columns": ["triage", "p_dvt", "top2"], "top_k": 2})
    pd.testing.assert_frame_equal(chosen, predict(shouted, model=models, top_k=2, columns=["triage", "p_dvt", "top2"]),
                                  check_exact=True)
    assert got.loc[0, "triage"] == "emergency" and got.loc[0, "screen"] == "a septic joint or cellulitis"


def test_every_request_form_of_mlflow_serving_scores_as_predict(trained, monkeypatch):
    """`mlflow models serve` hands ``inputs`` and ``instances`` over as numpy arrays (records of
    one-value arrays, one case's, or columns); each scores as the same cases given to predict()."""
    import mlflow
    from mlflow.pyfunc.scoring_server import infer_and_parse_data, predictions_to_json

    from pipeline.core.errors import BatchInputError, CaseValidationError

    models, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    cases = [{"case_id": "a1", "age": 30, "sex": "male", "heard_pop": "yes", "giving_way": "yes", "leg_swelling": ""},
             {"case_id": "b2", "age": 71, "sex": "female", "heard_pop": "", "giving_way": "no", "leg_swelling": "yes"}]
    columns = {k: [c[k] for c in cases] for k in cases[0]}
    for body, rows in [({"inputs": cases}, [0, 1]), ({"instances": cases}, [0, 1]), ({"inputs": cases[1]}, [1]),
                       ({"inputs": columns}, [0, 1]), ({"instances": columns}, [0, 1])]:
        got = pyfunc.predict(infer_and_parse_data(body))
        want = predict(pd.DataFrame([cases[i] for i in rows]), model=models)
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=str(body)[:40])
    # a field null in one case and set in another (MLflow makes it a column of one-value arrays)
    gaps = [{"case_id": None, "age": 40, "sex": "male", "bmi": None, "fever": "yes"},
            {"case_id": "c3", "age": 50, "sex": "female", "bmi": 25, "fever": None}]
    for body in ({"instances": gaps}, {"inputs": gaps}, {"inputs": {k: [c[k] for c in gaps] for k in gaps[0]}}):
        got, want = pyfunc.predict(infer_and_parse_data(body)), predict(gaps, model=models)
        assert got.pop("case_id").tolist() == [None, "c3"]  # None, not NaN: JSON's null in the answer
        pd.testing.assert_frame_equal(got, want.drop(columns="case_id"), check_exact=True, obj=str(body)[:40])
    # columns as lists, from a caller of the pyfunc, as the server's arrays
    pd.testing.assert_frame_equal(pyfunc.predict(columns), predict(pd.DataFrame(cases), model=models), check_exact=True)
    # a missing case id is JSON's null in the answer, not a bare NaN that parsers refuse
    answer = io.StringIO()
    predictions_to_json(pyfunc.predict(infer_and_parse_data({"dataframe_records": [
        {"case_id": 7, "age": 30, "sex": "male"}, {"age": 31, "sex": "male"}]})), answer)
    assert "NaN" not in answer.getvalue()
    assert [r["case_id"] for r in json.loads(answer.getvalue())["predictions"]] == [7, None]
    # as kneepain serve reads them: columns of different lengths, a value beside columns, no case
    for body, message in [({"inputs": {"age": [30, 40], "sex": ["male"]}}, "got lists of 1, 2 values"),
                          ({"inputs": {"age": [30, 40], "sex": "male"}}, "every value must be a list"),
                          ({"inputs": {"age": [], "sex": []}}, "no cases")]:
        with pytest.raises((BatchInputError, CaseValidationError), match=message):
            pyfunc.predict(infer_and_parse_data(body))


def test_a_retrained_model_as_good_as_the_champion_takes_the_alias(trained, monkeypatch):
    """Retraining the same data after an upgrade gives the same log loss: the new version, which
    carries the new code and decision layer, becomes the champion; a worse one does not."""
    from pipeline.model.tracking import promote_champion

    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    champion = client.get_model_version_by_alias(NAME, "champion")
    loss, sha = float(champion.tags["valid_log_loss"]), champion.tags["valid_data_sha256"]
    newer = client.create_model_version(NAME, champion.source, run_id=champion.run_id)
    try:
        assert not promote_champion(client, NAME, "champion", newer.version, loss + 1e-9, valid_sha256=sha)
        assert client.get_model_version_by_alias(NAME, "champion").version == champion.version
        assert promote_champion(client, NAME, "champion", newer.version, loss, valid_sha256=sha)
        assert client.get_model_version_by_alias(NAME, "champion").version == newer.version
    finally:  # other tests share this store and expect the original champion
        client.set_registered_model_alias(NAME, "champion", champion.version)
        client.delete_model_version(NAME, newer.version)


def test_loading_a_registered_model_writes_nothing_into_the_store(trained, monkeypatch):
    """A local store hands out its own folder; loading reads from it and writes into a folder of its own."""
    models, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    version = client.get_model_version_by_alias(NAME, "champion").version
    stored = Path(client.get_model_version_download_uri(NAME, version).removeprefix("file://"))
    assert stored.is_dir()

    def listing():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in stored.rglob("*"))

    before = listing()
    loaded = load_model(f"models:/{NAME}@champion")
    assert loaded.source == f"models:/{NAME}@champion" and loaded.decision is not None
    # the same model by every address MLflow gives it: the run's, the stored folder's, and that folder itself
    run = client.get_model_version(NAME, version).run_id
    for other in (f"runs:/{run}/model", stored.as_uri(), stored):
        assert load_model(other).manifest == loaded.manifest, other
    assert listing() == before


def test_a_registered_model_named_without_version_says_how_to_name_one(trained, monkeypatch):
    """MLflow reads ``models:/NAME`` as a logged model's id; the error says how to name the registered model."""
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ModelIntegrityError) as err:
        load_model(f"models:/{NAME}")
    assert f"models:/{NAME}/1 or models:/{NAME}@champion" in str(err.value)
    # a version that does not exist, or a logged model's id: MLflow's own words suffice
    for other in (f"models:/{NAME}/999", "models:/m-0123456789abcdef0123456789abcdef"):
        with pytest.raises(ModelIntegrityError) as err:
            load_model(other)
        assert "not found" in str(err.value) and "as in models:/" not in str(err.value), other


def test_a_registered_version_or_alias_not_found_names_the_store_and_what_it_holds(trained, monkeypatch):
    """A mistyped model name, alias or version is told which store was searched and what it has."""
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    version = _client(uri).get_model_version_by_alias(NAME, "champion").version
    holds = (rf"in the MLflow store {re.escape(uri)}, {NAME} has versions (\d+, )*{version} "
             rf"and the aliases @champion \(version {version}\)")
    for wrong in (f"models:/{NAME}/999", f"models:/{NAME}@champio"):
        with pytest.raises(ModelIntegrityError, match=holds):
            load_model(wrong)
    with pytest.raises(ModelIntegrityError, match=rf"the MLflow store {re.escape(uri)} holds the registered models {NAME}\)"):
        load_model(f"models:/{NAME}x@champion")
    with pytest.raises(ModelIntegrityError, match=rf"cannot find the version the alias names: .*{holds}"):
        pinned_uri(f"models:/{NAME}@champio")  # the alias pinned before a server's workers load it


def test_evaluate_writes_reports_and_logs_them(trained, small_data, tmp_path, monkeypatch):
    models, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["evaluate", "--data", str(small_data), "--model", str(models), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics_detail.json").read_text())
    for split in ("test", "shift"):
        for key in ("accuracy", "top3_accuracy", "macro_f1", "log_loss", "brier", "ece_top_label",
                    "oracle_accuracy", "oracle_top3_accuracy", "oracle_log_loss", "uncalibrated_log_loss",
                    "uncalibrated_ece_top_label", "per_class"):
            assert key in metrics[split], (split, key)
    assert [r["blanked_share"] for r in metrics["robustness"]] == [0, 0.2, 0.4, 0.6]
    client = _client(uri)
    run = client.get_run(json.loads((models / "manifest.json").read_text())["mlflow_run_id"])
    assert run.data.metrics["test.accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    evaluation = {d.dataset.name for d in run.inputs.dataset_inputs
                  if {t.key: t.value for t in d.tags}["mlflow.data.context"] == "evaluation"}
    assert {"test", "shift"} <= evaluation
    card = client.get_model_version(NAME, json.loads((models / "manifest.json").read_text())["registered_version"])
    assert card.description.startswith("# Model card")


def test_champion_alias_does_not_move_to_a_worse_model(trained, small_data, small_config_path, tmp_path, monkeypatch):
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    worse = _logistic_only(small_config_path, tmp_path, C="0.0001")
    out = tmp_path / "models"
    with _champion_kept(client) as holder:
        assert main(["train", "--config", str(worse), "--data", str(small_data), "--out", str(out)]) == 0
        new = json.loads((out / "manifest.json").read_text())
        assert new["champion"] is False
        assert client.get_model_version_by_alias(NAME, "champion").version == holder.version
        assert main(["train", "--config", str(worse), "--data", str(small_data), "--out", str(out),
                     "--force-champion"]) == 0
        forced = json.loads((out / "manifest.json").read_text())
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == forced["registered_version"] \
            != str(holder.version)
        # the runs tagged champion are the holder's alone, not every run that once held the alias
        experiment = client.get_run(holder.run_id).info.experiment_id
        tagged = client.search_runs([experiment], filter_string="tags.champion = 'True'")
        assert [r.info.run_id for r in tagged] == [forced["mlflow_run_id"]]
        assert client.get_run(holder.run_id).data.tags["champion"] == "False"


def test_a_champion_measured_on_other_cases_is_replaced(trained, small_data, small_config_path, tmp_path, monkeypatch,
                                                       capsys):
    """Log losses on different `valid` splits do not compare: a model trained on other data (an
    older knowledge base, say) gives way even to a worse-scoring one."""
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    valid = pd.read_parquet(data / "valid.parquet")
    valid.iloc[: len(valid) - 7].to_parquet(data / "valid.parquet")  # other cases to measure on
    worse = _logistic_only(small_config_path, tmp_path, C="0.0001")
    out = tmp_path / "models"
    with _champion_kept(client):
        assert main(["train", "--config", str(worse), "--data", str(data), "--out", str(out)]) == 0
        new = json.loads((out / "manifest.json").read_text())
        assert new["champion"] is True and new["champion_why"] == "other cases"
        # said, where it only said "now champion" though the worse model was compared with nothing
        assert f"version {new['registered_version']} (now champion: the one before was measured on another valid " \
               "split, so the two were not compared)" in capsys.readouterr().out
        version = client.get_model_version(NAME, new["registered_version"])
        assert version.tags["valid_data_sha256"] == new["data_sha256"]["valid"]


def test_the_valid_cases_digest_is_the_cases_not_the_files_bytes(small_data, tmp_path):
    """The digest that decides whether two log losses compare: the same for the same cases in
    another file (another compression, CSV, rows in another order), another for one answer changed."""
    from pipeline.data.fingerprints import cases_digest

    valid = pd.read_parquet(small_data / "valid.parquet")
    digest = cases_digest(valid)
    valid.to_parquet(tmp_path / "other.parquet", compression="gzip")
    valid.sample(frac=1, random_state=3).to_csv(tmp_path / "valid.csv", index=False)
    assert (tmp_path / "other.parquet").read_bytes() != (small_data / "valid.parquet").read_bytes()
    assert cases_digest(pd.read_parquet(tmp_path / "other.parquet")) == digest
    assert cases_digest(pd.read_csv(tmp_path / "valid.csv")) == digest
    changed = valid.copy()
    changed.loc[changed.index[5], "age"] = changed["age"].iloc[5] + 1
    assert cases_digest(changed) != digest
    assert cases_digest(valid.iloc[1:]) != digest


def test_a_champion_measured_on_the_same_cases_in_another_file_is_compared(trained, small_data, small_config_path,
                                                                          tmp_path, monkeypatch, capfd):
    """The `valid` split written again with other bytes (a pyarrow upgrade records another writer in
    the Parquet file; here, another compression) holds the same cases: a worse model is compared with
    the champion and does not take the alias, where it took it as measured on "another valid split".
    The command's output is its own lines: not MLflow's INFO lines and progress bars among them."""
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    pd.read_parquet(small_data / "valid.parquet").to_parquet(data / "valid.parquet", compression="gzip")
    assert (data / "valid.parquet").read_bytes() != (small_data / "valid.parquet").read_bytes()
    worse = _logistic_only(small_config_path, tmp_path, C="0.0001")
    out = tmp_path / "models"
    with _champion_kept(client) as holder:
        assert main(["train", "--config", str(worse), "--data", str(data), "--out", str(out)]) == 0
        new = json.loads((out / "manifest.json").read_text())
        assert new["champion"] is False and new["champion_why"] is None
        out_, err = capfd.readouterr()
        holder_loss = float(client.get_model_version(NAME, holder.version).tags["valid_log_loss"])
        shown = two_numbers(new["metrics"]["valid_log_loss"], holder_loss, 4, 8)
        assert f"(champion unchanged: valid log loss {shown[0]}, not better than its {shown[1]})" in out_
        assert "INFO" not in err and "Downloading artifacts" not in err, err
        assert client.get_model_version_by_alias(NAME, "champion").version == holder.version


def test_a_configured_alias_is_named_and_tagged_as_itself_and_a_new_store_is_said(small_data, small_config_path,
                                                                                tmp_path, monkeypatch, capsys):
    """With `tracking.alias: best` the output said "now champion" and the run was tagged champion,
    so a search for the champion's run found two; a store whose database did not exist is said to
    be new (a mistyped path starts an empty registry), and one in a folder that does not exist is
    refused before the training; a holder with no recorded valid log loss (registered by hand) is
    replaced, saying so rather than "measured on another valid split"."""
    import yaml
    from mlflow.tracking import MlflowClient

    config = yaml.safe_load(small_config_path.read_text())
    config["tracking"].update(alias="best", registered_model="alias-test")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    command = ["train", "--config", str(path), "--data", str(small_data), "--out", str(tmp_path / "m")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-such-folder' / 'mlflow.db'}")
    assert main(command) == 2
    assert "there is no folder" in capsys.readouterr().err and not (tmp_path / "no-such-folder").exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(command) == 0
    first = json.loads((tmp_path / "m" / "manifest.json").read_text())
    said = capsys.readouterr().out
    assert f"at {uri} (a new tracking store: the database file did not exist); registered alias-test version 1 " \
           "(now best)" in said
    client = MlflowClient(uri)
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.tags["best"] == "True" and "champion" not in run.data.tags
    # a version registered by hand, with no valid log loss, given the alias
    bare = client.create_model_version("alias-test", client.get_model_version("alias-test", "1").source)
    client.set_registered_model_alias("alias-test", "best", bare.version)
    assert main(command) == 0
    said = capsys.readouterr().out
    assert "(now best: the one before has no recorded valid log loss, so the two were not compared)" in said
    assert "a new tracking store" not in said


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]
    with running(cmd, f"{url}/health", tmp_path / "server.log"):
        yield url


@pytest.mark.slow
def test_training_against_a_real_mlflow_server(mlflow_server, small_data, small_config_path, tmp_path, monkeypatch):
    """Runs, the registry, the alias and artifacts through the server's proxy (one candidate: what
    is tracked is the same for each; the local store's tests cover several)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "models"
    config = _logistic_only(small_config_path, tmp_path)
    assert main(["train", "--config", str(config), "--data", str(small_data), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tracking_uri"] == mlflow_server
    client = _client(mlflow_server)
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "valid_log_loss" in run.data.metrics
    version = client.get_model_version(NAME, manifest["registered_version"])
    assert version.run_id == run.info.run_id
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == str(version.version)
    champion = load_model(f"models:/{NAME}@champion")  # fetched through the server's artifact proxy
    assert champion.source == f"models:/{NAME}@champion"
    cases = pd.read_parquet(small_data / "test.parquet").head(200)
    pd.testing.assert_frame_equal(predict(cases, model=champion), predict(cases, model=load_model(out)),
                                  check_exact=True)  # the same model, decision layer and all


@pytest.fixture
def unreachable(monkeypatch):
    """MLFLOW_TRACKING_URI naming a port nothing listens on. MLflow's own retries are turned off,
    so a command that did not check the server first would fail with MLflow's error, not hang."""
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                  "NO_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    return uri


def test_an_unreachable_tracking_server_is_named_before_any_work(unreachable, trained, small_data, tmp_path, capsys):
    models, _ = trained
    with pytest.raises(TrackingServerError) as err:
        load_model(f"models:/{NAME}/1")
    assert f"cannot reach the MLflow tracking server at {unreachable} (MLFLOW_TRACKING_URI)" in str(err.value)
    # training and evaluation stop before they start, with the same words and nothing written
    out = tmp_path / "models"
    assert main(["train", "--data", str(small_data), "--out", str(out)]) == 2
    told = capsys.readouterr()
    assert f"kneepain train: error: cannot reach the MLflow tracking server at {unreachable}" in told.err
    assert "Training on" not in told.out  # not after the training it would have recorded
    reports = tmp_path / "reports"
    assert main(["evaluate", "--data", str(small_data), "--model", str(models), "--out", str(reports)]) == 2
    assert f"kneepain evaluate: error: cannot reach the MLflow tracking server at {unreachable}" in capsys.readouterr().err
    assert not out.exists() and not reports.exists()
    # an evaluation that logs nothing needs no server
    labelled = tmp_path / "labelled.csv"
    read_split("test", small_data).head(50).to_csv(labelled, index=False)
    assert main(["evaluate", "--data", str(labelled), "--model", str(models), "--out", str(reports),
                 "--no-mlflow", "--bootstrap", "100"]) == 0


def test_the_server_check_passes_what_it_cannot_or_need_not_check(unreachable, monkeypatch, tmp_path):
    check_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a local store: nothing to connect to
    with pytest.raises(TrackingServerError, match="there is no folder nowhere for its database"):
        check_reachable("sqlite:///nowhere/mlflow.db")  # ... but a folder that is not there is a mistyped path
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # reached through a proxy: left to MLflow
    check_reachable(unreachable)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ... unless the proxy is bypassed for the host
    with pytest.raises(TrackingServerError, match="cannot reach"):
        check_reachable(unreachable)
    with pytest.raises(TrackingServerError, match="is not a valid server address"):
        check_reachable("http://127.0.0.1:99999")
    with pytest.raises(TrackingServerError, match="names no host"):
        check_reachable("http://:5000")


def test_logging_the_datasets_and_the_model_prints_none_of_mlflows_schema_advice(trained, small_data, tmp_path):
    """MLflow advises, whenever it infers a schema with integer columns, that a missing value would
    break the schema's enforcement, and that a path matches two of its source schemes: neither
    applies to what kneepain logs (no input schema is enforced), and `kneepain train` printed the
    first four times, in full, above its results."""
    import warnings

    import mlflow

    from pipeline.model.tracking import log_dataset
    from pipeline.serve.mlflow_model import log_pyfunc

    models, _ = trained
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    frame = read_split("train", small_data).head(50)
    assert any(pd.api.types.is_integer_dtype(t) for t in frame.dtypes)  # what the advice is about
    try:
        with warnings.catch_warnings(record=True) as seen, mlflow.start_run():
            warnings.simplefilter("always")
            log_dataset(frame, small_data / "train.parquet", "train", "training")
            log_pyfunc(models, frame.drop(columns=["condition"]), None)
    finally:
        mlflow.set_tracking_uri(before)
    advice = [str(w.message)[:80] for w in seen if "Inferred schema contains integer" in str(w.message)
              or "interpreted in multiple ways" in str(w.message)]
    assert advice == []


@pytest.mark.parametrize("status, refused", [(500, True), (503, True), (404, False), (401, False)])
def test_a_server_that_answers_with_server_errors_is_refused_before_any_work(status, refused, monkeypatch, small_data,
                                                                           trained, tmp_path, capsys):
    """A server that accepts connections and answers every request with 500: `kneepain evaluate
    --data FILE` wrote its reports, waited four minutes in silence and then failed with exit 2. The
    check now asks one REST question; an answer that is not a server error (a 404, a 401 without
    the credentials MLflow would send) passes."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(proxy, raising=False)
        if not refused:
            check_reachable(uri)
            return
        with pytest.raises(TrackingServerError, match=rf"at {uri} \(MLFLOW_TRACKING_URI\): it answers a request of "
                                                      rf"MLflow's REST API with HTTP {status}, a server error"):
            check_reachable(uri)
        if status != 500:  # the command's refusal once, for the commonest
            return
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        models, _ = trained
        labelled = tmp_path / "labelled.csv"
        read_split("test", small_data).head(50).to_csv(labelled, index=False)
        assert main(["evaluate", "--data", str(labelled), "--model", str(models), "--out",
                     str(tmp_path / "reports"), "--bootstrap", "100"]) == 2
        assert "HTTP 5" in capsys.readouterr().err and not (tmp_path / "reports").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_dvc_experiment_in_a_temporary_copy_records_to_the_projects_store(tmp_path, monkeypatch):
    """`dvc exp run --temp` (and `--queue`) run in a copy of the project under
    `.dvc/tmp/exps/`, removed afterwards: the MLflow run and the registered version went into
    the copy's own mlflow.db and were lost with it. They go to the project's."""
    from pipeline.core.paths import default_tracking_uri, experiment_origin

    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12cd"
    for folder in (project, copy):
        (folder / "configs").mkdir(parents=True)
        (folder / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KNEEPAIN_HOME", raising=False)
    monkeypatch.chdir(copy)
    assert default_tracking_uri() == f"sqlite:///{project.resolve() / 'mlflow.db'}"
    assert experiment_origin(project.resolve()) == project.resolve()  # the project itself is its own
    other = tmp_path / "elsewhere" / ".dvc" / "tmp" / "exps" / "x"  # no project above it: left as it is
    assert experiment_origin(other) == other


def test_a_champion_kept_on_a_difference_past_four_decimals_shows_the_difference():
    """The new version's 0.44302726 against the champion's 0.44297532 read "0.4430, not better than
    its 0.4430", as if a tie, which the docs say goes to the new version; and a score just over the
    atypical threshold read "1.02 > 1.02"."""
    assert champion_note(None, valid_log_loss=0.44302726, holder_log_loss=0.44297532) == \
        " (champion unchanged: valid log loss 0.44303, not better than its 0.44298)"
    assert champion_note(None, valid_log_loss=0.5, holder_log_loss=0.4) == \
        " (champion unchanged: valid log loss 0.5000, not better than its 0.4000)"
    assert two_numbers(1.02149, 1.01951) == ("1.021", "1.020") and two_numbers(1.0, 1.0) == ("1.00", "1.00")
