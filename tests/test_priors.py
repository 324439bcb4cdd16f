"""Prior-shift adaptation: the EM estimate of a batch's case mix, checked where the truth is known."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import generate_cases, oracle_posterior
from pipeline.cli import main
from pipeline.core.metrics import log_loss
from pipeline.core.parsing import parse_cases
from pipeline.core.schema import CONDITIONS
from pipeline.data.datasets import labels, read_split
from pipeline.decision.priors import adjust_posteriors, estimate_prior

N = 4000


def _batch(kb, population, seed):
    """Exact posteriors under the default population (a perfectly calibrated model of training) for
    cases drawn from ``population``, with their labels."""
    cases = generate_cases(population, N, seed=seed)
    return oracle_posterior(kb, parse_cases(cases)).to_numpy(), labels(cases)


def _truth(y):
    return np.bincount(y, minlength=9) / len(y)


def test_on_the_training_population_adaptation_changes_almost_nothing(kb):
    proba, y = _batch(kb, kb, seed=1)
    est = estimate_prior(proba, kb.prior)
    assert est.converged and np.abs(est.prior - kb.prior).sum() < 0.05
    assert abs(log_loss(adjust_posteriors(proba, kb.prior, est.prior), y) - log_loss(proba, y)) < 0.005


def test_under_prior_shift_the_mix_is_recovered_and_log_loss_drops(kb):
    only_mix = dataclasses.replace(kb, prior=kb.shifted().prior)  # the shift's case mix, nothing else
    proba, y = _batch(kb, only_mix, seed=2)
    est = estimate_prior(proba, kb.prior)
    truth = _truth(y)
    assert np.abs(est.prior - truth).sum() < 0.25 * np.abs(kb.prior - truth).sum()
    # 95% intervals, nine classes: at most two misses (family-wise, binomial tail < 0.1)
    assert ((est.low <= truth) & (truth <= est.high)).sum() >= 7
    assert log_loss(adjust_posteriors(proba, kb.prior, est.prior), y) < log_loss(proba, y) - 0.005


def test_on_the_shift_population_the_estimate_moves_towards_the_true_mix(kb):
    # `shift` also changes how conditions present (8 years older, less sport, more unknowns), so
    # prior shift is only part of it: the estimate still lands nearer the truth than the training mix
    proba, y = _batch(kb, kb.shifted(), seed=3)
    est = estimate_prior(proba, kb.prior)
    truth = _truth(y)
    assert np.abs(est.prior - truth).sum() < 0.6 * np.abs(kb.prior - truth).sum()


def test_adjusting_to_the_training_prior_is_the_identity_and_rows_sum_to_one(kb):
    proba, _ = _batch(kb, kb, seed=4)
    np.testing.assert_allclose(adjust_posteriors(proba, kb.prior, kb.prior), proba, rtol=1e-12)
    other = adjust_posteriors(proba, kb.prior, np.full(9, 1 / 9))
    np.testing.assert_allclose(other.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="expected \\(n_cases, 9\\)"):
        estimate_prior(proba[:, :5], kb.prior)


def test_score_adapt_priors_writes_the_mix_and_reweighted_rows(trained, small_data, tmp_path, capsys):
    models, _ = trained
    cases = read_split("shift", small_data).head(600).drop(columns=["condition", "severity"])
    src = tmp_path / "clinic.csv"
    cases.to_csv(src, index=False)
    assert main(["score", str(src), "-o", str(tmp_path / "plain.csv"), "--model", str(models)]) == 0
    assert main(["score", str(src), "-o", str(tmp_path / "adapted.csv"), "--model", str(models), "--adapt-priors"]) == 0
    captured = capsys.readouterr()
    assert "Estimated case mix of 600 cases" in captured.err and captured.out == ""  # messages on stderr
    mix = json.loads((tmp_path / "adapted.csv.priors.json").read_text())
    shares = {c: v["estimated"] for c, v in mix["conditions"].items()}
    assert sum(shares.values()) == pytest.approx(1.0) and mix["n_cases"] == 600
    assert all(v["low"] <= v["estimated"] <= v["high"] for v in mix["conditions"].values())
    plain, adapted = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "adapted.csv")
    p_cols = [c for c in plain.columns if c.startswith("p_")]
    np.testing.assert_allclose(adapted[p_cols].sum(axis=1), 1.0, atol=1e-5)  # CSV probabilities have 6 decimals
    assert not np.allclose(adapted[p_cols], plain[p_cols]) and list(adapted.columns) == list(plain.columns)
    # scored again without adapting: the earlier mix no longer describes the output, and goes
    assert main(["score", str(src), "-o", str(tmp_path / "adapted.csv"), "--model", str(models), "--quiet"]) == 0
    assert not (tmp_path / "adapted.csv.priors.json").exists()
    # a batch too small to estimate a mix from (none at all, or 499 valid rows): one line saying so, nothing written
    (tmp_path / "none.csv").write_text("age,sex\n")
    cases.head(499).to_csv(tmp_path / "few.csv", index=False)
    cases.head(1).to_csv(tmp_path / "one.csv", index=False)
    for name, rows in (("none", "0 valid rows"), ("one", "1 valid row"), ("few", "499 valid rows")):
        assert main(["score", str(tmp_path / f"{name}.csv"), "-o", str(tmp_path / f"{name}-out.csv"), "--model",
                     str(models), "--adapt-priors"]) == 2
        err = capsys.readouterr().err
        assert f"{rows}; --adapt-priors needs at least 500" in err and "unexpected" not in err
        assert not (tmp_path / f"{name}-out.csv").exists()


def test_the_mix_is_estimated_from_exactly_the_rows_that_are_scored(trained, small_data, tmp_path):
    """Rows rejected as repeated case ids (in a later input, or a later chunk) do not count towards
    the mix, whatever the chunk size: the same scored rows, the same estimate."""
    from pipeline.serve.adapt import estimate_batch_prior
    from pipeline.serve.loading import load_model

    model = load_model(trained[0])
    cases = read_split("shift", small_data).head(600).drop(columns=["condition", "severity"])
    first = tmp_path / "first.csv"
    cases.to_csv(first, index=False)
    again = cases.assign(age=75, sex="female", leg_swelling="yes", skin_warm="yes", skin_red="yes")  # the same ids
    second = tmp_path / "again.csv"
    again.to_csv(second, index=False)
    both = tmp_path / "both.csv"
    pd.concat([cases, again]).to_csv(both, index=False)
    alone = estimate_batch_prior([first], model)
    for inputs, chunk_rows in (([first, second], 16_384), ([both], 600), ([both], 256)):
        estimate = estimate_batch_prior(inputs, model, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(estimate.prior, alone.prior)


def test_a_share_that_collapses_is_warned_about(kb):
    from pipeline.serve.adapt import collapsed_conditions

    training = np.asarray(kb.prior, dtype=np.float64)
    proba = np.tile(training, (600, 1))
    k = list(CONDITIONS).index("dvt")
    proba[:, k] = 1e-9  # no case looks like DVT at all
    proba /= proba.sum(axis=1, keepdims=True)
    warnings = collapsed_conditions(estimate_prior(proba, training))
    assert len(warnings) == 1 and warnings[0].startswith("deep vein thrombosis: estimated share")
    assert collapsed_conditions(estimate_prior(np.tile(training, (600, 1)), training)) == []
