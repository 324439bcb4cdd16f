"""Evaluation: metrics on cases with known answers, the model beside the oracle, written reports."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from pipeline import generate_cases, oracle_posterior
from pipeline.core.config import TrainConfig, load_config
from pipeline.core.metrics import accuracy
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS
from pipeline.data.datasets import labels
from pipeline.model.candidates import make_candidate
from pipeline.report.evaluate import (
    evaluate_model,
    evaluate_split,
    format_metrics_table,
    robustness_curve,
    uncalibrated_estimator,
    write_reports,
)
from pipeline.serve.loading import LoadedModel

SPLIT_KEYS = {
    "n", "accuracy", "top3_accuracy", "macro_f1", "log_loss", "brier", "ece_top_label", "ece_classwise",
    "oracle_accuracy", "oracle_top3_accuracy", "oracle_log_loss", "oracle_brier",
    "accuracy_gap_to_oracle", "log_loss_ratio_to_oracle", "uncalibrated_log_loss",
    "uncalibrated_ece_top_label", "per_class",
}
CURVE_KEYS = {"blanked_share", "accuracy", "log_loss", "oracle_accuracy", "oracle_log_loss"}


class _Fixed:
    """A stand-in estimator returning given probabilities (rows in the order the cases come)."""

    def __init__(self, proba):
        self.proba = proba

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba


@pytest.fixture(scope="module")
def splits(kb):
    return {"train": generate_cases(kb, 10_000, seed=101), "valid": generate_cases(kb, 2000, seed=102),
            "test": generate_cases(kb, 3000, seed=103), "shift": generate_cases(kb.shifted(), 2000, seed=104)}


@pytest.fixture(scope="module")
def fitted(splits):
    from pipeline.model.train import calibrate

    config = load_config(TrainConfig, config_path("train.yaml"))
    pipe = make_candidate("logistic", config)
    # One BLAS thread: on this small problem a second thread only adds synchronisation, and when
    # the other core is busy it made the fit ~100x slower (20 s instead of 0.2 s).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(splits["train"], labels(splits["train"]))
    model, report = calibrate(pipe, splits["valid"], labels(splits["valid"]), "temperature", seed=0)
    return LoadedModel(model, {"winner": "logistic", "calibration": report})


@pytest.fixture(scope="module")
def evaluated(fitted, kb, splits):
    return evaluate_model(fitted, kb, splits, return_arrays=True)


def test_perfect_and_perfectly_wrong_models_have_known_scores(kb, splits):
    frame = splits["test"]
    y = labels(frame)
    onehot = np.eye(len(CONDITIONS))[y]
    right = evaluate_split(LoadedModel(_Fixed(onehot)), kb, frame)
    assert right["accuracy"] == right["top3_accuracy"] == right["macro_f1"] == 1.0
    assert right["log_loss"] == pytest.approx(0.0, abs=1e-12)
    assert right["brier"] == right["ece_top_label"] == right["ece_classwise"] == 0.0
    assert right["uncalibrated_log_loss"] == right["log_loss"]  # nothing to uncalibrate
    wrong = evaluate_split(LoadedModel(_Fixed(np.eye(len(CONDITIONS))[(y + 1) % len(CONDITIONS)])), kb, frame)
    assert wrong["accuracy"] == 0.0 and wrong["ece_top_label"] == 1.0 and wrong["brier"] == 2.0
    assert wrong["log_loss"] == pytest.approx(-np.log(1e-15))  # clipped, not infinite
    # the oracle's scores do not depend on the model and agree with the posterior used directly
    assert right["oracle_log_loss"] == wrong["oracle_log_loss"]
    # a file without some conditions: perfect on the ones it holds is a macro F1 of 1, not 8/9
    few = frame[y != CONDITIONS.index("pcl_injury")]
    only = evaluate_split(LoadedModel(_Fixed(np.eye(len(CONDITIONS))[labels(few)])), kb, few)
    assert only["macro_f1"] == 1.0
    assert right["oracle_accuracy"] == accuracy(oracle_posterior(kb, frame).to_numpy(), y)


def test_constant_prior_model_scores_the_class_shares(kb, splits):
    frame = splits["test"]
    y = labels(frame)
    share = np.bincount(y, minlength=len(CONDITIONS)) / len(y)
    prior = DummyClassifier(strategy="prior").fit(np.zeros((len(y), 1)), y)
    m = evaluate_split(LoadedModel(prior), kb, frame)
    assert m["accuracy"] == pytest.approx(share.max())
    assert m["log_loss"] == pytest.approx(-np.sum(share * np.log(share)))  # the labels' entropy
    assert m["ece_top_label"] == pytest.approx(0.0, abs=1e-12)  # confidence max share, hit rate max share
    assert m["per_class"][CONDITIONS[share.argmax()]]["recall"] == 1.0
    assert sum(c["support"] for c in m["per_class"].values()) == len(y)


def test_uncalibrated_estimator_unwraps_a_frozen_calibrator(fitted):
    inner = uncalibrated_estimator(fitted.estimator)
    assert isinstance(inner, Pipeline)
    assert uncalibrated_estimator(inner) is inner


def test_metrics_have_every_key_for_test_and_shift(evaluated):
    metrics, arrays = evaluated
    for split in ("test", "shift"):
        assert SPLIT_KEYS <= set(metrics[split]), SPLIT_KEYS - set(metrics[split])
        assert set(metrics[split]["per_class"]) == set(CONDITIONS)
        assert {"precision", "recall", "f1", "support"} <= set(metrics[split]["per_class"]["dvt"])
        a = arrays[split]
        for key in ("proba", "proba_uncalibrated", "proba_oracle"):
            assert a[key].shape == (metrics[split]["n"], len(CONDITIONS))
            np.testing.assert_allclose(a[key].sum(axis=1), 1.0, atol=1e-6)
    assert len(metrics["robustness"]) == 4 and all(CURVE_KEYS <= set(r) for r in metrics["robustness"])
    assert metrics["split_sizes"]["test"] == 3000


def test_model_is_near_the_oracle_and_far_above_chance(evaluated, kb, splits):
    """On 3,000 test cases (standard error of accuracy ~0.6 points) a logistic model fitted on
    10,000 cases is within a few points of the oracle (measured: 1.8 points, log loss 1.12x the
    oracle's); a stratified guess scores ~13%."""
    m = evaluated[0]["test"]
    assert m["accuracy_gap_to_oracle"] < 0.04
    assert m["log_loss_ratio_to_oracle"] < 1.25
    frame = splits["test"]
    guess = DummyClassifier(strategy="stratified", random_state=0).fit(np.zeros((len(frame), 1)), labels(frame))
    chance = evaluate_split(LoadedModel(guess), kb, frame)
    assert m["accuracy"] > chance["accuracy"] + 0.5
    assert m["log_loss"] < 0.5 * chance["uncalibrated_log_loss"]


def test_robustness_oracle_never_gains_from_blanking(fitted, kb, splits):
    frame = splits["test"]
    before = frame.copy()
    curve = robustness_curve(fitted, kb, frame, shares=(0.0, 0.2, 0.4, 0.6, 1.0), seed=3)
    pd.testing.assert_frame_equal(frame, before)  # the input is not modified
    oracle = [r["oracle_accuracy"] for r in curve]
    # nested blanking only removes information; 0.005 absorbs sampling noise between shares
    assert all(b <= a + 0.005 for a, b in zip(oracle, oracle[1:])), oracle
    assert oracle[-1] < oracle[0] - 0.2
    # share 0 is the split as given; share 1 leaves exactly the required age and sex
    assert curve[0]["accuracy"] == evaluate_split(fitted, kb, frame)["accuracy"]
    y = labels(frame)
    assert curve[-1]["oracle_accuracy"] == accuracy(oracle_posterior(kb, frame[["age", "sex"]]).to_numpy(), y)
    assert curve == robustness_curve(fitted, kb, frame, shares=(0.0, 0.2, 0.4, 0.6, 1.0), seed=3)
    with pytest.raises(ValueError, match="must be within"):
        robustness_curve(fitted, kb, frame, shares=(0.5, 1.5))


def test_write_reports_round_trip(evaluated, fitted, tmp_path):
    metrics, arrays = evaluated
    written = write_reports(metrics, arrays, tmp_path / "reports", fitted.manifest)
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    loaded = json.loads((tmp_path / "reports" / "metrics_detail.json").read_text())
    for split in ("test", "shift"):
        assert SPLIT_KEYS <= set(loaded[split])
        assert loaded[split]["accuracy"] == metrics[split]["accuracy"]
    assert loaded["robustness"] == metrics["robustness"]
    headline = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    numbers = [v for group in headline.values() for v in group.values()]
    assert 8 <= len(numbers) <= 15 and headline["test"]["accuracy"] == metrics["test"]["accuracy"]
    series = tmp_path / "reports" / "series"
    assert list(pd.read_csv(series / "reliability_shift.csv").columns) == ["confidence", "frequency", "count"]
    assert pd.read_csv(series / "robustness.csv")["blanked_share"].tolist() == [0, 0.2, 0.4, 0.6]
    pngs = sorted((tmp_path / "reports" / "plots").glob("*.png"))
    assert {p.name for p in pngs} >= {"confusion_matrix_test.png", "reliability_test.png",
                                      "reliability_per_class_test.png", "robustness.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    card = (tmp_path / "reports" / "model_card.md").read_text().lower()
    assert "not a medical device" in card and "seek professional medical advice" in card
    assert "synthetic" in card and "logistic" in card and "temperature" in card
    table = format_metrics_table(metrics)
    assert table.splitlines()[1].startswith("test") and table.splitlines()[2].startswith("shift")
    assert f"{metrics['test']['accuracy']:.4f}" in table


def test_evaluate_model_names_missing_splits(fitted, kb, splits):
    with pytest.raises(KeyError, match="shift"):
        evaluate_model(fitted, kb, {"test": splits["test"]})


def test_a_reliability_diagram_draws_one_curve_where_no_calibration_was_kept(tmp_path, monkeypatch):
    """A model whose training kept no calibration has the same probabilities before and after: the
    diagram showed "calibrated" and "uncalibrated" curves on one line, as if a step had been applied
    and compared. Where they differ, both are drawn."""
    from pipeline.report import plots

    legends = []

    def keep_legend(fig, path):
        legends.append(sorted({t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}))
        return path

    monkeypatch.setattr(plots, "save", keep_legend)
    rng = np.random.default_rng(0)
    y, proba = rng.integers(0, 9, 300), rng.dirichlet(np.ones(9), 300)
    for draw in (plots.plot_reliability, plots.plot_classwise_reliability):
        draw(y, proba, tmp_path / "same.png", proba_uncalibrated=proba.copy())
        draw(y, proba, tmp_path / "two.png", proba_uncalibrated=np.sqrt(proba) / np.sqrt(proba).sum(1, keepdims=True))
    names = [[t.split(" (ECE")[0] for t in legend if t != "perfect calibration"] for legend in legends]
    assert names == [["the model (no calibration kept)"], ["calibrated", "uncalibrated"]] * 2
