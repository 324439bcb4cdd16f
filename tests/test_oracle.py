import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

from pipeline import generate_cases, log_density, oracle_posterior
from pipeline.core.metrics import summary
from pipeline.core.oracle import oracle_log_joint
from pipeline.core.parsing import ParsedCases, parse_records
from pipeline.core.schema import CONDITIONS, max_duration_days


def _parsed(codes):
    return ParsedCases({k: v for k, v in codes.items()}, np.ones(len(codes["sex"]), bool), None)


def test_posterior_rows_sum_to_one_and_align(kb):
    cases = generate_cases(kb, 2000, seed=5)
    post = oracle_posterior(kb, cases)
    assert list(post.columns) == list(CONDITIONS) and len(post) == len(cases)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)


def test_posterior_matches_empirical_label_frequencies(kb, big_sample):
    """Among cases sharing a pattern of known fields, labels follow the posterior (chi-square)."""
    codes, cond, _ = big_sample
    # injury_event stays known: whether the pop question is answered depends on it (missing at
    # random given what is observed), so hiding it would make the test, not the oracle, wrong
    keep = ("sex", "onset", "injury_event", "heard_pop", "knee_swelling", "leg_swelling")
    hidden = {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else np.full_like(v, -1))
              for k, v in codes.items() if k not in keep}
    masked = {**codes, **hidden}
    post = oracle_posterior(kb, _parsed(masked)).to_numpy()
    pattern = np.column_stack([codes[k] for k in keep])  # one row of codes per case
    _, group = np.unique(pattern, axis=0, return_inverse=True)
    by_group = np.argsort(group.ravel(), kind="stable")
    groups = np.split(by_group, np.flatnonzero(np.diff(group.ravel()[by_group])) + 1)
    frequent = [idx for idx in groups if len(idx) >= 2000]
    assert len(frequent) >= 4
    for idx in frequent:
        p = post[idx[0]]
        np.testing.assert_allclose(post[idx], np.broadcast_to(p, post[idx].shape), atol=1e-12)
        observed = np.bincount(cond[idx], minlength=len(CONDITIONS))
        expected = p * len(idx)
        big = expected >= 5
        obs, exp = observed[big], expected[big]
        if (~big).any():  # the rare labels pooled in one bin
            obs, exp = np.append(obs, observed[~big].sum()), np.append(exp, expected[~big].sum())
        pvalue = stats.chisquare(obs, exp).pvalue
        assert pvalue > 1e-3 / len(frequent), f"pattern {dict(zip(keep, pattern[idx[0]]))}: p={pvalue:.2g}"


def test_the_duration_density_integrates_to_one_below_the_age_bound(kb):
    """Durations are log-normal, or a mixture with a recent episode, truncated at (age + 1) x 365.25
    days: for every condition, p(duration | condition, age, sex) integrates to 1 over (0, bound],
    whether the bound cuts the usual course, the episode or neither."""
    k = len(CONDITIONS)
    episode = np.column_stack([np.where(np.arange(k) % 3 == 0, 0.3, np.where(np.arange(k) % 3 == 1, 0.2, 0.0)),
                               np.log(np.where(np.arange(k) % 3 == 0, 50.0, 6000.0)), np.full(k, 0.7)])
    long = dataclasses.replace(kb, duration=np.column_stack(
        [np.log(np.geomspace(300, 3000, k)), np.linspace(0.8, 1.5, k)]), duration_episode=episode)
    base = parse_records([{"age": 19, "sex": "female"}])
    log_days = np.linspace(np.log(1e-2), np.log(max_duration_days(19)), 40_001)
    codes = {k: np.repeat(v, len(log_days)) for k, v in base.codes.items()}
    codes["symptom_duration_days"] = np.exp(log_days)
    density = np.exp(oracle_log_joint(long, _parsed(codes)) - oracle_log_joint(long, base))  # per day
    integral = np.trapezoid(density * np.exp(log_days)[:, None], log_days, axis=0)
    np.testing.assert_allclose(integral, 1.0, rtol=1e-6)


def test_unknown_is_marginalised_not_no(kb):
    case = {"age": 67, "sex": "male", "sedentary": "yes", "skin_warm": "yes"}
    lj = {v: oracle_log_joint(kb, {**case, "leg_swelling": v})[0] for v in ("yes", "no", "")}
    # p(known, unknown field) = sum over its values: the identity of marginalisation
    np.testing.assert_allclose(lj[""], np.logaddexp(lj["yes"], lj["no"]), rtol=1e-10)
    post = {v: oracle_posterior(kb, {**case, "leg_swelling": v}).iloc[0] for v in ("no", "")}
    assert not np.allclose(post[""], post["no"])


def test_log_density_is_a_normalised_mass_over_a_discrete_field(kb):
    case = {"age": 30, "sex": "female"}
    total = logsumexp([log_density(kb, {**case, "activity": a})[0]
                       for a in ("none", "running", "sprint_pivot_sport", "other_exercise")])
    np.testing.assert_allclose(total, log_density(kb, case)[0], rtol=1e-10)


@pytest.mark.parametrize("split", ["default", "shift"])
def test_task_is_neither_trivial_nor_hopeless(kb, split):
    model = kb if split == "default" else kb.shifted()
    cases = generate_cases(model, 50_000, seed=99)
    y = pd.Categorical(cases["condition"], categories=list(CONDITIONS)).codes
    s = summary(oracle_posterior(model, cases).to_numpy(), y)
    assert 0.70 <= s["accuracy"] <= 0.90  # no toy task, and no hopeless one
    assert s["top3_accuracy"] > 0.95


def test_a_case_scores_the_same_alone_as_in_a_batch(kb):
    """The oracle's sums run row by row: one case gets the same bits alone as among 300."""
    from pipeline.core.parsing import parse_cases
    from pipeline.decision.conformal import blank_at_random

    codes = blank_at_random(parse_cases(generate_cases(kb, 300, seed=6)), 0.4, seed=1).codes
    one = oracle_log_joint(kb, ParsedCases({k: v[7:8] for k, v in codes.items()}, np.ones(1, bool), None, None, ()))
    assert np.array_equal(one[0], oracle_log_joint(kb, ParsedCases(codes, np.ones(300, bool), None, None, ()))[7])
