"""next_questions, the simulated questioning and the interactive session, as a user drives them."""

import io
from dataclasses import replace

import numpy as np
import pytest
from scipy.special import entr

from pipeline import generate_cases, oracle_posterior
from pipeline.core.config import ConfigError, TrainConfig, load_config
from pipeline.core.paths import config_path
from pipeline.data.datasets import labels
from pipeline.interact.ask import CLOSING, run_session
from pipeline.interact.questions import CANDIDATE_FIELDS, load_questions_config, next_questions
from pipeline.report.questioning import plot_questioning, simulate_questioning
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model

CASE = {"age": 24, "sex": "male", "heard_pop": "yes", "giving_way": "yes", "tingling": "unknown"}


@pytest.fixture(scope="module")
def model(trained):
    return get_model(trained[0])


@pytest.fixture(scope="module")
def cfg():
    return load_questions_config()


def test_only_unknown_questions_best_first(model):
    for case in (CASE, {"age": 70, "sex": "female", "leg_swelling": "no", "onset": "gradual"}):
        q = next_questions(case, model, k=4)
        assert list(q.columns) == ["field", "expected_information_gain", "score", "reason"]
        assert len(q) == 4
        assert not set(q["field"]) & {k for k, v in case.items() if v != "unknown"}
        assert not set(q["field"]) & {"age", "sex", "bmi", "symptom_duration_days"}
        assert (np.diff(q["score"].to_numpy()) <= 0).all()
        assert (q["expected_information_gain"] >= 0).all() and (q["score"] >= q["expected_information_gain"]).all()
        assert q["reason"].str.match(r"would change P\(.+\) from 0\.\d\d to ").all()
    every = next_questions(CASE, model, k=None)
    assert "tingling" in set(every["field"]) and "pregnant" not in set(every["field"])  # not asked of a man
    assert set(every["field"]) == set(CANDIDATE_FIELDS) - {"heard_pop", "giving_way", "pregnant"}
    assert "heard_pop" not in set(next_questions(CASE, model, k=None, exclude=["locking"])["field"])
    assert "locking" not in set(next_questions(CASE, model, k=None, exclude=["locking"])["field"])


def test_bad_arguments_are_value_errors(model, tmp_path):
    with pytest.raises(ValueError, match="k == 0"):
        next_questions(CASE, model, k=0)
    with pytest.raises(ValueError, match="exactly one case"):
        next_questions([CASE, CASE], model)
    with pytest.raises(ValueError, match="posterior"):
        next_questions(CASE, model, posterior="bayes")
    with pytest.raises(ValueError, match="unknown field"):
        next_questions(CASE, model, exclude=["limp"])
    bad = tmp_path / "q.yaml"
    bad.write_text((config_path("questions.yaml")).read_text().replace("dvt: 2.0", "gout: 2.0"))
    with pytest.raises(ConfigError, match="gout"):
        load_questions_config(bad)


def test_oracle_gain_is_the_mutual_information_from_the_knowledge_base(kb, cfg):
    """For a context field, P(answer | condition) does not depend on severity: EIG = I(answer; condition)."""
    case = {"age": 35, "sex": "female", "onset": "sudden"}
    q = next_questions(case, k=None, posterior="oracle", kb=kb, config=cfg).set_index("field")
    prior = oracle_posterior(kb, case).to_numpy()[0]
    for name in ("smoker", "sedentary", "heard_pop"):
        p_yes = kb.tristate[name][:, 0]
        joint = np.stack([prior * p_yes, prior * (1 - p_yes)])  # (answer, condition)
        p_answer = joint.sum(axis=1)
        mi = entr(prior).sum() - sum(p_answer[v] * entr(joint[v] / p_answer[v]).sum() for v in range(2))
        assert q.loc[name, "expected_information_gain"] == pytest.approx(mi, rel=1e-9, abs=1e-12)


def test_a_field_that_is_equally_likely_under_every_condition_gains_exactly_zero(kb, cfg):
    flat = replace(kb, tristate={**kb.tristate, "tingling": np.full((9, 3), 0.3)})
    for case in ({"age": 50, "sex": "female"}, {**CASE, "tingling": ""}, {"age": 70, "sex": "male", "leg_swelling": "yes"}):
        q = next_questions(case, k=None, posterior="oracle", kb=flat, config=cfg).set_index("field")
        assert q.loc["tingling", "expected_information_gain"] == 0.0
        assert q.loc["tingling", "score"] == 0.0
        assert (q["expected_information_gain"] >= 0).all() and q["expected_information_gain"].max() > 0.01


@pytest.fixture(scope="module")
def labelled(kb):
    return generate_cases(kb, 300, seed=21)


def test_simulation_is_reproducible_and_well_formed(model, kb, labelled, tmp_path):
    a = simulate_questioning(model, kb, labelled, k_max=3, seed=4)
    b = simulate_questioning(model, kb, labelled, k_max=3, seed=4)
    assert a == b
    assert a["n_cases"] == 300 and a["k_max"] == 3
    assert set(a) == {"chosen", "random", "fixed", "n_cases", "k_max"}
    for strategy in ("chosen", "random", "fixed"):
        assert set(a[strategy]) == {"accuracy", "dvt_sensitivity"}
        for curve in a[strategy].values():
            assert list(curve) == ["0", "1", "2", "3"] and all(0 <= v <= 1 for v in curve.values())
    assert a["chosen"]["accuracy"]["0"] == a["random"]["accuracy"]["0"] == a["fixed"]["accuracy"]["0"]
    path = plot_questioning(a, tmp_path / "q.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="start_fields"):
        simulate_questioning(model, kb, labelled, start_fields=("age",))


@pytest.mark.slow
def test_five_chosen_questions_beat_ten_in_schema_order(kb):
    """The target, on a logistic model like the default one. It needs enough training data: models
    trained on 20k cases are as accurate as the oracle on whole cases but not on cases with few
    answers, and there the target failed for one training seed in three (measured)."""
    from threadpoolctl import threadpool_limits

    from pipeline.model.candidates import make_candidate

    train = generate_cases(kb, 60_000, seed=101)
    config = load_config(TrainConfig, config_path("train.yaml"))
    with threadpool_limits(limits=1, user_api="blas"):  # many BLAS threads made this fit 10x slower on 2 cores
        estimator = make_candidate("logistic", config).fit(train, labels(train))
    model = LoadedModel(estimator)  # no decision layer: DVT sensitivity is prediction == dvt
    result = simulate_questioning(model, kb, generate_cases(kb, 1500, seed=102), k_max=10, seed=0)
    chosen, fixed, random = (result[s]["accuracy"] for s in ("chosen", "fixed", "random"))
    assert chosen["5"] >= fixed["10"]
    assert chosen["10"] > random["10"]


def _session(model, answers: str, **kwargs):
    out = io.StringIO()
    result = run_session(model, input=io.StringIO(answers), output=out, **kwargs)
    return result, out.getvalue()


def test_session_asks_age_and_sex_first_and_ends_with_the_advice(model):
    result, text = _session(model, "abc\n200\n34\nm\n" + "y\nn\nd\n1\n" * 20, max_questions=6)
    assert text.count("Age in years") == 3 and "Please enter a whole number from 12 to 100" in text
    assert text.index("Age in years") < text.index("Sex (female/male)") < text.index("Q1.")
    assert result["case"]["age"] == 34 and result["case"]["sex"] == "male"
    assert 1 <= len(result["answers"]) <= 6
    assert result["stopped_because"] and result["prediction"]["prediction"] in result["prediction"]["top3"]
    assert text.rstrip("\n").splitlines()[-1] == CLOSING
    assert "Summary" in text and "triage" in text.lower()


def test_session_stops_at_the_end_of_input_and_at_the_maximum(model):
    result, text = _session(model, "50\n")
    assert result["stopped_because"] == "the input ended" and result["prediction"] is None
    assert text.rstrip("\n").splitlines()[-1] == CLOSING
    result, text = _session(model, "50\nfemale\n" + "d\n" * 40, max_questions=3)
    assert [a for _, a in result["answers"]] == [None] * len(result["answers"]) and len(result["answers"]) <= 3
    assert len({name for name, _ in result["answers"]}) == len(result["answers"])  # never asked twice
    assert text.rstrip("\n").splitlines()[-1] == CLOSING


def test_session_works_without_a_decision_layer(model):
    bare = LoadedModel(model.estimator)
    result, text = _session(bare, "30\nfemale\n" + "y\n2\n" * 10, max_questions=2)
    assert "triage" not in result["prediction"] and len(result["answers"]) >= 1
    assert text.rstrip("\n").splitlines()[-1] == CLOSING
