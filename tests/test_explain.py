"""explain(): each known answer's weight, top condition vs runner-up, agrees with the knowledge base."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline import generate_cases
from pipeline.core.oracle import field_log_likelihoods, oracle_log_joint
from pipeline.core.parsing import codes_to_text_frame, parse_cases
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, FIELDS, SYMPTOMS
from pipeline.interact.explain import Explanation, explain
from pipeline.serve.predict import get_model

ACL_LIKE = {"age": 24, "sex": "male", "activity": "sprint_pivot_sport", "injury_event": "twist_or_direction_change",
            "heard_pop": "yes", "giving_way": "yes", "knee_swelling": "yes", "bmi": 23.5,
            "symptom_duration_days": 2, "pregnant": "no"}
DVT_LIKE = {"age": 68, "sex": "female", "sedentary": "yes", "leg_swelling": "yes", "skin_warm": "yes",
            "skin_red": "yes", "pregnant": "no", "onset": "gradual"}


@pytest.fixture(scope="module")
def model(trained):
    return get_model(trained[0])


def _kb_log_lik(kb, name: str, answer: str, case: dict) -> np.ndarray:
    """log P(answer | condition) of one answer of ``case``: the oracle's, checked below against
    the oracle's exact joint."""
    return field_log_likelihoods(kb, parse_cases(pd.DataFrame([case])))[name]


@pytest.mark.parametrize("base", [{"age": 45, "sex": "female"}, {"age": 70, "sex": "male"},
                                  {"age": 30, "sex": "female", "pregnant": "yes"}])
def test_each_answers_log_likelihood_is_what_it_adds_to_the_oracles_joint(kb, base):
    """An answer independent of the others given the condition adds exactly its log likelihood to
    log P(condition, answers): context answers always, a symptom when it is the only one known."""
    lj_base = oracle_log_joint(kb, base)[0]
    cases = [{**base, "bmi": 31.5}, {**base, "symptom_duration_days": 0}, {**base, "symptom_duration_days": 40},
             {**base, "activity": "running"}, {**base, "injury_event": "fall_onto_knee"}, {**base, "smoker": "yes"},
             {**base, "heard_pop": "no"}, *[{**base, s: a} for s in SYMPTOMS for a in ("yes", "no")]]
    for case in cases:
        (name,) = set(case) - set(base)
        added = oracle_log_joint(kb, case)[0] - lj_base
        np.testing.assert_allclose(field_log_likelihoods(kb, parse_cases(pd.DataFrame([case])))[name], added,
                                   rtol=1e-9, atol=1e-9, err_msg=name)
    full = field_log_likelihoods(kb, parse_cases(pd.DataFrame([base])))
    np.testing.assert_allclose(sum(full.values()) + np.log(kb.prior), lj_base, rtol=1e-9)


def _check_signs(e: Explanation, kb, case: dict) -> None:
    t, r = CONDITIONS.index(e.top), CONDITIONS.index(e.runner_up)
    for row in e.table.itertuples():
        ll = _kb_log_lik(kb, row.field, row.answer, case)
        expected = ll[t] - ll[r]
        assert np.sign(row.weight) == np.sign(expected), (row.field, row.answer, row.weight, expected)
        assert row.weight == pytest.approx(expected, abs=1e-9)
        label = CONDITION_LABELS[e.top] if expected > 0 else CONDITION_LABELS[e.runner_up]
        assert row.direction == (f"for {label}" if expected != 0 else "neither")


def test_acl_like_answers_count_the_way_the_knowledge_base_says(model):
    e = explain(ACL_LIKE, model)
    top_two = np.argsort(-model.predict_proba(parse_cases(pd.DataFrame([ACL_LIKE])))[0])[:2]
    assert (e.top, e.runner_up) == (CONDITIONS[top_two[0]], CONDITIONS[top_two[1]])
    _check_signs(e, model.kb, ACL_LIKE)
    weights = dict(zip(e.table["field"], e.table["weight"]))
    assert {"heard_pop", "giving_way"} <= set(weights)
    if {e.top, e.runner_up} == {"acl_injury", "meniscus_tear"}:
        # the knowledge base makes a pop likelier in an ACL tear than in a meniscus tear
        kb = model.kb
        sign = 1 if e.top == "acl_injury" else -1
        acl, men = CONDITIONS.index("acl_injury"), CONDITIONS.index("meniscus_tear")
        assert np.sign(weights["heard_pop"]) == sign * np.sign(
            kb.tristate["heard_pop"][acl, 0] - kb.tristate["heard_pop"][men, 0])


def test_signs_agree_with_the_knowledge_base_on_generated_cases(model, kb):
    frame = codes_to_text_frame(parse_cases(generate_cases(kb, 25, seed=3)).codes)
    for case in [DVT_LIKE, *frame.to_dict("records")]:
        case = {k: v for k, v in case.items() if not (v == "" or (isinstance(v, float) and math.isnan(v)))}
        _check_signs(explain(case, model), model.kb, case)


def test_table_is_sorted_and_lists_every_known_answer_and_no_unknown_one(model):
    case = {**ACL_LIKE, "tingling": "unknown", "locking": "", "bmi": None, "onset": "unknown"}
    e = explain(case, model)
    # a man's "not pregnant" is no answer: it tells nothing, and predict() reads it as unknown
    known = {k for k, v in case.items() if v not in ("unknown", "", None)} - {"pregnant"}
    assert set(e.table["field"]) == known
    assert list(e.table.columns) == ["field", "answer", "weight", "direction"]
    assert (np.diff(e.table["weight"].abs().to_numpy()) <= 0).all()
    assert e.table.set_index("field").loc["heard_pop", "answer"] == "yes"
    assert e.table.set_index("field").loc["activity", "answer"] == "sprint_pivot_sport"


def test_text_has_a_sentence_for_each_condition(model):
    for case in (ACL_LIKE, DVT_LIKE, {"age": 40, "sex": "male"}):
        e = explain(case, model)
        first, second = e.text.split(". ", 1)
        assert CONDITION_LABELS[e.top] in first and CONDITION_LABELS[e.runner_up] in first
        assert CONDITION_LABELS[e.runner_up] in second and second.endswith(".")
        assert "\n" not in e.text
    assert e.text in repr(e) and e.text.replace("'", "&#x27;") in e._repr_html_()


def test_a_no_answer_is_phrased_as_no(model):
    e = explain({"age": 30, "sex": "male", "locking": "no", "leg_swelling": "no", "muscle_spasm": "no",
                 "heard_pop": "no", "knee_swelling": "no"}, model)
    assert "the knee itself is swollen: no" in e.text and "the lower leg / calf is swollen: no" in e.text
    assert "no the " not in e.text  # a statement with "no" before it read as ungrammatical


def test_a_key_that_is_no_field_is_named_in_a_warning(model):
    with pytest.warns(UserWarning, match="ignoring columns that are not case fields: heard_popp"):
        explain({**ACL_LIKE, "heard_popp": "yes"}, model)


def test_exactly_one_case_is_required(model):
    with pytest.raises(ValueError, match="exactly one case, got 2"):
        explain([ACL_LIKE, DVT_LIKE], model)
    with pytest.raises(ValueError, match="exactly one case, got 0"):
        explain(pd.DataFrame(columns=["age", "sex"]), model)


def test_every_field_kind_can_be_explained(model):
    case = {"age": 30, "sex": "female", "pregnant": "yes", "bmi": 31, "symptom_duration_days": 0.001,
            **{f.name: "yes" for f in FIELDS if f.kind == "tristate" and f.name != "pregnant"},
            **{f.name: f.allowed[-1] for f in FIELDS if f.kind == "category" and f.name != "sex"}}
    e = explain(case, model)
    assert len(e.table) == len(FIELDS)
    assert np.isfinite(e.table["weight"]).all()


@pytest.mark.parametrize("days, said", [(0.003, "4 minutes"), (1 / 24, "1 hour"), (1, "24 hours"), (2, "2 days"),
                                        (1 / 86400, "under a minute"), (120, "4 months")])
def test_how_long_ago_it_began_reads_as_a_person_says_it(model, days, said):
    """"symptoms began 0.003 days ago" for a cramp of four minutes, "1 days ago" for one of a day:
    the span is said in minutes, hours, days or months, as the vignettes say it too."""
    from pipeline.core.wording import span
    from pipeline.interact.explain import _phrase

    assert span(days) == said
    row = explain({"age": 30, "sex": "male", "symptom_duration_days": days}, model).table.set_index("field")
    assert _phrase("symptom_duration_days", row.loc["symptom_duration_days", "answer"]) == f"symptoms began {said} ago"
