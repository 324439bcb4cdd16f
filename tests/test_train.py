import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from pipeline import generate_cases, oracle_posterior
from pipeline.core.config import TrainConfig, load_config
from pipeline.core.metrics import ece_top_label, log_loss, summary
from pipeline.core.schema import CONDITIONS
from pipeline.data.datasets import labels, read_split
from pipeline.model.features import CaseFeaturizer
from pipeline.model.train import CandidateResult, calibrate, select_candidate, train_model
from pipeline.serve.loading import load_model


@pytest.fixture(scope="module")
def config(small_config_path):
    return load_config(TrainConfig, small_config_path)


def test_features_keep_unknown_distinct_from_no():
    import pandas as pd

    frame = pd.DataFrame({"age": [30, 30, 30], "sex": ["male"] * 3, "locking": ["yes", "no", ""]})
    fz = CaseFeaturizer().fit(frame)
    X = fz.transform(frame)
    names = list(fz.get_feature_names_out())
    yes, no = names.index("locking=yes"), names.index("locking=no")
    assert X[:, [yes, no]].tolist() == [[1, 0], [0, 1], [0, 0]]
    assert X.shape[1] == len(names) == fz.n_features_out_


def test_trained_model_beats_dummy_and_nears_the_oracle(kb, small_data, config):
    train, valid, test = (read_split(s, small_data) for s in ("train", "valid", "test"))
    result = train_model(config, train, valid, log=lambda *_: None)
    y = labels(test)
    model_acc = summary(result.model.predict_proba(test), y)["accuracy"]
    dummy = DummyClassifier(strategy="stratified", random_state=0).fit(train, labels(train))
    dummy_acc = float(np.mean(dummy.predict(test) == y))
    oracle_acc = summary(oracle_posterior(kb, test).to_numpy(), y)["accuracy"]
    assert model_acc > dummy_acc + 0.5
    assert model_acc > oracle_acc - 0.05
    assert {c.name for c in result.candidates} == {"logistic", "hist_gradient_boosting", "mlp"}


def test_selection_prefers_the_faster_of_near_equals():
    a = CandidateResult("slow", 0.300, 0, 0.9, 10, 1_000)
    b = CandidateResult("fast", 0.302, 0, 0.9, 1, 100_000)
    c = CandidateResult("bad", 0.500, 0, 0.8, 1, 1_000_000)
    assert select_candidate([a, b, c], tolerance=0.003).name == "fast"
    assert select_candidate([a, b, c], tolerance=0.001).name == "slow"


def test_selection_does_not_turn_on_speeds_the_machines_load_could_swap():
    """With two candidates within the tolerance, the winner was the faster by a measured speed:
    four identical runs gave logistic, logistic, MLP, logistic (225,548 against 198,273 rows/s in
    the third). Speeds within `speed_ratio` of each other count as one; the lower log loss wins."""
    logistic = CandidateResult("logistic", 0.452, 0, 0.7, 1, 198_273)
    mlp = CandidateResult("mlp", 0.455, 0, 0.7, 1, 225_548)
    assert select_candidate([logistic, mlp], tolerance=0.05, speed_ratio=1.5).name == "logistic"
    assert select_candidate([mlp, logistic], tolerance=0.05, speed_ratio=1.5).name == "logistic"
    assert select_candidate([logistic, mlp], tolerance=0.05, speed_ratio=1.0).name == "mlp"  # speed alone
    slow_mlp = CandidateResult("mlp", 0.450, 0, 0.7, 1, 98_000)  # half the speed: the faster wins
    assert select_candidate([logistic, slow_mlp], tolerance=0.05, speed_ratio=1.5).name == "logistic"


def _overconfident(kb):
    """A logistic model fitted on few cases with almost no regularisation: overconfident."""
    small = generate_cases(kb, 400, seed=1)
    return Pipeline([("f", CaseFeaturizer()), ("m", LogisticRegression(C=1e4, max_iter=2000))]).fit(small, labels(small))


def test_calibration_lowers_ece_on_held_out_data(kb):
    model = _overconfident(kb)
    valid, test = generate_cases(kb, 5000, seed=2), generate_cases(kb, 5000, seed=3)
    calibrated, report = calibrate(model, valid, labels(valid), "temperature", seed=0)
    assert report["kept"]
    y = labels(test)
    assert ece_top_label(calibrated.predict_proba(test), y) < ece_top_label(model.predict_proba(test), y)
    assert log_loss(calibrated.predict_proba(test), y) < log_loss(model.predict_proba(test), y)


def test_a_calibration_that_hurts_is_not_kept(kb):
    # one-vs-rest sigmoid on a multinomial logistic model's logits distorts it badly
    train, valid = generate_cases(kb, 4000, seed=4), generate_cases(kb, 3000, seed=5)
    model = Pipeline([("f", CaseFeaturizer()), ("m", LogisticRegression(max_iter=500))]).fit(train, labels(train))
    kept, report = calibrate(model, valid, labels(valid), "sigmoid", seed=0)
    assert not report["kept"] and kept is model
    assert report["valid_log_loss_calibrated_heldout"] > report["valid_log_loss_uncalibrated"]


def test_missing_model_says_to_run_make_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make run"):
        load_model(tmp_path)


def test_manifest_records_lineage(trained):
    models, _ = trained
    manifest = json.loads((models / "manifest.json").read_text())
    for key in ("model_file", "library_versions", "schema_version", "classes", "data_sha256", "metrics",
                "mlflow_run_id", "mlflow_model_uri", "winner", "calibration"):
        assert key in manifest, key
    assert set(manifest["data_sha256"]) == {"train", "valid", "calib", "extra"}  # the fixture adds real cases


def test_a_cross_validation_sample_too_small_for_its_folds_names_the_setting(small_data, small_config_path):
    """`cv.max_rows` small enough that a condition has fewer cases than folds gave scikit-learn's
    warnings, a log loss of NaN, then "max() arg is an empty sequence"; it is refused before the
    fits, naming cv.max_rows and cv.folds."""
    from pipeline.core.config import ConfigError
    from pipeline.model.train import evaluate_candidates

    train = read_split("train", small_data)
    config = load_config(TrainConfig, small_config_path)
    config = TrainConfig.model_validate(config.model_dump() | {"cv": {"folds": 5, "max_rows": 100, "n_jobs": 1}})
    with pytest.raises(ConfigError, match=r"^cv: the 100 cases cross-validated \(cv\.max_rows 100; 0: all 4,000\) hold "
                                          r"\d of \w+, fewer than the 5 folds \(cv\.folds\) need; raise cv\.max_rows"):
        evaluate_candidates(config, train, labels(train), train.head(10))


def test_a_valid_split_too_small_to_calibrate_on_is_refused_before_training(small_data, small_config_path, tmp_path,
                                                                           capsys, monkeypatch):
    """A `valid` split of 30 cases trained every candidate, then failed in calibration's own folds
    with "unexpected IndexError"; it is refused before the fits, naming the split, what it needs and
    the conditions too rare in it."""
    import shutil

    from pipeline.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = Path(shutil.copytree(small_data, tmp_path / "data"))
    valid = read_split("valid", small_data).head(30)
    valid.to_parquet(data / "valid.parquet")
    assert main(["train", "--config", str(small_config_path), "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    captured = capsys.readouterr()
    assert "CV log loss" not in captured.out and not (tmp_path / "m").exists()
    assert captured.err.startswith("kneepain train: error: valid: 30 cases, and calibration needs at least 10 of each "
                                   "condition (its two halves, each in 5 folds); it holds "), captured.err
    counts = valid["condition"].astype(str).value_counts()
    rare = ", ".join(f"{c} {counts.get(c, 0)}" for c in CONDITIONS if counts.get(c, 0) < 10)
    assert f"it holds {rare}. Generate a larger valid split (splits.valid.n" in captured.err, captured.err
