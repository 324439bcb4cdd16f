"""The decision layer: triage, red flags, conformal sets and the atypical flag."""

import numpy as np
import pandas as pd
import pytest

from pipeline import generate_cases, oracle_posterior, predict
from pipeline.core.config import LEVELS, TriageConfig, load_config
from pipeline.core.parsing import parse_cases
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS, SYMPTOMS
from pipeline.data.datasets import labels
from pipeline.decision.atypical import fit_atypical, flag_atypical
from pipeline.decision.conformal import fit_conformal, prediction_sets
from pipeline.decision.triage import cost_levels, red_flags, triage_levels

DVT = CONDITIONS.index("dvt")


@pytest.fixture(scope="module")
def cfg():
    return load_config(TriageConfig, config_path("triage.yaml"))


def _codes(cases):
    return parse_cases(pd.DataFrame(cases)).codes


QUIET = {"age": 30, "sex": "female", "activity": "running", "grinding": "yes", "onset": "gradual"}


@pytest.mark.parametrize("rule", range(4))
def test_each_red_flag_escalates(cfg, rule):
    flag = cfg.red_flags[rule]
    case = {**QUIET, **flag.all, **dict(list(flag.any.items())[:1])}
    codes = _codes([QUIET, case])
    runner = np.zeros((2, len(CONDITIONS)))
    runner[:, CONDITIONS.index("runners_knee")] = 1.0  # the model is sure it is runner's knee
    level, reason = triage_levels(cfg, codes, runner)
    assert LEVELS[level[0]] == "self_care"
    assert level[1] >= LEVELS.index(flag.level) and reason[1] >= 2


def test_any_part_of_a_rule_is_required(cfg):
    flag = cfg.red_flags[0]  # possible_dvt: a swollen leg alone is not enough for it
    level, rule = red_flags(cfg, _codes([{**QUIET, **flag.all}]))
    assert rule[0] != 0


def test_a_ruptured_bakers_cyst_is_escalated_like_a_dvt(cfg, trained):
    models, _ = trained
    case = {"age": 58, "sex": "female", "onset": "sudden", "swelling_behind_knee": "yes", "pressure_behind_knee": "yes",
            "leg_swelling": "yes", "skin_warm": "yes", "knee_swelling": "yes", "inflammatory_arthritis": "yes"}
    out = predict(case, model=models)
    assert out["triage"][0] == "emergency"
    assert "red flag" in out["triage_reason"][0]


def test_cost_decision_follows_the_cost_matrix(cfg):
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, DVT], proba[0, CONDITIONS.index("leg_cramp")] = 0.05, 0.95
    base = LEVELS[cost_levels(cfg, proba)[0]]
    cheap = cfg.model_copy(update={"costs": {**cfg.costs, "dvt": {"self_care": 1, "see_doctor": 1,
                                                                  "see_doctor_soon": 1, "emergency": 0}}})
    dear = cfg.model_copy(update={"costs": {**cfg.costs, "dvt": {"self_care": 5000, "see_doctor": 5000,
                                                                 "see_doctor_soon": 5000, "emergency": 0}}})
    assert LEVELS.index(LEVELS[cost_levels(cheap, proba)[0]]) <= LEVELS.index(base)
    assert LEVELS[cost_levels(cheap, proba)[0]] == "self_care"
    assert LEVELS[cost_levels(dear, proba)[0]] == "emergency"
    # more probability on DVT never lowers the level
    levels = [cost_levels(cfg, np.array([[1 - p] + [0] * 6 + [p, 0]]))[0] for p in np.linspace(0, 1, 21)]
    assert all(a <= b for a, b in zip(levels, levels[1:]))


def test_dvt_cases_are_triaged_urgently(trained, kb):
    models, _ = trained
    cases = generate_cases(kb, 30_000, seed=21)
    dvt = cases["condition"] == "dvt"
    out = predict(cases[dvt].drop(columns=["condition", "severity"]), model=models)
    urgent = out["triage"].isin(["emergency", "see_doctor_soon"]).mean()
    assert dvt.sum() > 1000 and urgent >= 0.99


def test_advice_always_ends_with_seeking_professional_advice(trained, kb):
    models, _ = trained
    out = predict(generate_cases(kb, 2000, seed=3).drop(columns=["condition", "severity"]), model=models)
    assert out["advice"].str.endswith("seek advice from a doctor or another qualified medical professional.").all()
    assert set(out["triage"]) <= set(LEVELS)


@pytest.mark.parametrize("mondrian", [False, True])
def test_conformal_coverage_with_true_probabilities(kb, mondrian):
    """With the exact posterior as the model, coverage on fresh cases meets the target."""
    calib, test = generate_cases(kb, 20_000, seed=31), generate_cases(kb, 30_000, seed=32)
    fitted = fit_conformal(oracle_posterior(kb, calib).to_numpy(), labels(calib), coverage=0.9, mondrian=mondrian)
    sets = prediction_sets(oracle_posterior(kb, test).to_numpy(), fitted)
    y = labels(test)
    hit = sets[np.arange(len(y)), y]
    if not mondrian:
        assert abs(hit.mean() - 0.9) < 0.015
    else:
        # every condition gets its coverage; a condition whose top-1 accuracy is above the target
        # is over-covered (its set is never empty), so the average can exceed the target
        assert hit.mean() > 0.9 - 0.015
        for k in range(len(CONDITIONS)):
            assert hit[y == k].mean() > 0.9 - 0.03, CONDITIONS[k]


def test_atypical_flag_is_rare_on_typical_cases_and_fires_on_impossible_ones(kb):
    calib, test = generate_cases(kb, 20_000, seed=41), generate_cases(kb, 20_000, seed=42)
    fitted = fit_atypical(kb, parse_cases(calib), 0.005)
    flags, _, _ = flag_atypical(kb, parse_cases(test), fitted)
    assert flags.mean() <= 0.01
    rng = np.random.default_rng(0)
    impossible = pd.DataFrame([{
        "age": int(rng.integers(15, 30)), "sex": "female", "pregnant": "yes", "inflammatory_arthritis": "yes",
        "smoker": "yes", "sedentary": "yes", "recent_dehydration": "yes", "stretches_before_exercise": "yes",
        "activity": "sprint_pivot_sport", "onset": "sudden", "injury_event": "fall_onto_knee", "heard_pop": "yes",
        "pain_delayed_onset": "yes", "symptom_duration_days": float(rng.uniform(2000, 5000)), "bmi": 45,
        **{s: "yes" for s in SYMPTOMS}} for _ in range(50)])
    flags, _, _ = flag_atypical(kb, parse_cases(impossible), fitted)
    assert flags.mean() >= 0.95
    sparse = parse_cases(test[["age", "sex"]])  # typical people who answered only age and sex
    flags, _, _ = flag_atypical(kb, sparse, fitted)
    assert flags.mean() <= 0.01


def test_atypical_cases_are_scored_and_never_triaged_lower(trained):
    models, _ = trained
    case = {"age": 22, "sex": "female", "pregnant": "yes", "inflammatory_arthritis": "yes",
            "injury_event": "fall_onto_knee", "symptom_duration_days": 4000, **{s: "yes" for s in SYMPTOMS}}
    out = predict(case, model=models)
    assert bool(out["atypical"][0]) and "fit none of the documented profiles" in out["atypical_reason"][0]
    assert np.isclose(out.filter(like="p_").sum(axis=1)[0], 1.0)
    assert LEVELS.index(out["triage"][0]) >= LEVELS.index("see_doctor")


def test_differential_lists_the_set_most_likely_first(trained, kb):
    models, _ = trained
    out = predict(generate_cases(kb, 500, seed=5).drop(columns=["condition", "severity"]), model=models)
    first = out["differential"].str.split("|").str[0]
    assert (first == out["prediction"]).all()
    assert (out["differential"].str.count(r"\|") + 1 == out["differential_size"]).all()


def test_conformal_threshold_is_the_right_order_statistic():
    # scores 0.01, 0.02, ..., 1.00 (the true class is never the top one); n=100, coverage 0.9:
    # k = ceil(101 * 0.9) = 91, so the threshold is the 91st smallest score
    n = 100
    proba = np.zeros((n, len(CONDITIONS)))
    proba[:, 0] = 1.0 - np.arange(1, n + 1) / 100
    proba[:, 1] = 1.0 - proba[:, 0]
    y = np.zeros(n, dtype=int)
    fitted = fit_conformal(proba, y, coverage=0.9, mondrian=False)
    scores = np.where(proba.argmax(axis=1) == y, 0.0, 1.0 - proba[:, 0])
    assert fitted["thresholds"][0] == pytest.approx(np.sort(scores)[90])
    assert fit_conformal(proba[:5], y[:5], coverage=0.9, mondrian=False)["thresholds"][0] == 1.0  # k > n
