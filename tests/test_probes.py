"""The knowledge base concludes what the clinical literature does, checked on its exact oracle.

Probe cases (configs/probes.yaml) with the conclusion the literature supports; every Wells item and
VTE risk factor raises P(DVT); the emergency screen (configs/screen.yaml) fires where it must and
not on ordinary cases; the oracle stays calibrated although answers are missing at random.
"""

import numpy as np
import pandas as pd
import pytest

from pipeline import oracle_posterior, predict
from pipeline.core.config import LEVELS, ProbesConfig, ScreenConfig, load_config
from pipeline.core.metrics import ece_top_label
from pipeline.core.parsing import parse_cases
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS
from pipeline.core.wording import question
from pipeline.data.generate import generate_cases
from pipeline.decision.screen import screen_matches, screen_names

PROBES = load_config(ProbesConfig, config_path("probes.yaml")).probes
SCREEN = load_config(ScreenConfig, config_path("screen.yaml"))
RULES = [r.name for r in SCREEN.rules]
DVT = CONDITIONS.index("dvt")


def _screened(case: dict) -> list[str]:
    matches = screen_matches(SCREEN, parse_cases(pd.DataFrame([case])).codes)[0]
    return [name for name, hit in zip(RULES, matches) if hit]


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_cases_reach_the_conclusion_the_literature_supports(kb, probe):
    post = oracle_posterior(kb, probe.case).iloc[0]
    e = probe.expect
    if e.top is not None:
        assert post.idxmax() == e.top, f"{probe.why}\n{post.round(3).to_dict()}"
    if e.not_top is not None:
        assert post.idxmax() != e.not_top, f"{probe.why}\n{post.round(3).to_dict()}"
    if e.dvt_at_least is not None:
        assert post["dvt"] >= e.dvt_at_least, f"{probe.why}: P(DVT) {post['dvt']:.3f}"
    if e.dvt_at_most is not None:
        assert post["dvt"] <= e.dvt_at_most, f"{probe.why}: P(DVT) {post['dvt']:.3f}"
    if e.screen is not None:
        assert set(e.screen) <= set(_screened(probe.case)), f"{probe.why}: screen gave {_screened(probe.case)}"


TRIAGE_PROBES = [p for p in PROBES if p.expect.triage_at_least or p.expect.triage_at_most or p.expect.asks]


def test_triage_probes_get_the_level_the_guidance_gives(trained):
    """Screen-positive probes go the same day; sparse probes (age and sex only) do not; a probe's
    questions are asked (a woman of fertile age with a swollen leg, whether she is pregnant)."""
    from pipeline import predict

    models, _ = trained
    out = predict([p.case for p in TRIAGE_PROBES], model=models)
    for probe, level, asked in zip(TRIAGE_PROBES, out["triage"], out["ask_next"]):
        e = probe.expect
        for name in e.asks or []:
            assert question(name) in asked.split("|"), f"{probe.name}: asks {asked!r}; {probe.why}"
        if e.triage_at_least:
            assert LEVELS.index(level) >= LEVELS.index(e.triage_at_least), f"{probe.name}: {level}; {probe.why}"
        if e.triage_at_most:
            assert LEVELS.index(level) <= LEVELS.index(e.triage_at_most), f"{probe.name}: {level}; {probe.why}"


WELLS_AND_RISK_FACTORS = ["recent_surgery", "recent_immobilisation", "long_travel", "previous_vte", "active_cancer",
                          "hormonal_therapy", "calf_tenderness", "whole_leg_swollen", "leg_swelling", "smoker",
                          "sedentary", "inflammatory_arthritis"]
BASES = [{"age": 55, "sex": "female"}, {"age": 35, "sex": "male", "injury_event": "twist_or_direction_change"},
         {"age": 70, "sex": "male", "leg_swelling": "yes"}]


@pytest.mark.parametrize("item", WELLS_AND_RISK_FACTORS)
def test_each_wells_item_and_vte_risk_factor_raises_dvt(kb, item):
    for base in BASES:
        if item in base:
            continue
        yes, no = oracle_posterior(kb, [{**base, item: "yes"}, {**base, item: "no"}])["dvt"]
        assert yes > no, f"{item}=yes gives P(DVT) {yes:.4f}, not above {no:.4f} for {base}"


@pytest.mark.parametrize("event", ["overstretch_or_sprint", "twist_or_direction_change", "fall_onto_knee", "direct_blow"])
def test_a_recent_injury_does_not_make_dvt_impossible(kb, event):
    case = {"age": 50, "sex": "male", "injury_event": event, "leg_swelling": "yes", "calf_tenderness": "yes",
            "symptom_duration_days": 7}
    assert oracle_posterior(kb, case)["dvt"].iloc[0] > 0.05


def test_single_dvt_signs_are_weak_as_in_the_literature(kb):
    """Goodacre et al. 2005: single clinical signs carry likelihood ratios of about 1.5-2; the
    risk factors carry the weight. Among people with pain behind the knee the implied ratio of a
    sign (P(sign | DVT) / P(sign | not DVT)) stays well below the 6-8 of the first knowledge base."""
    not_dvt = np.delete(kb.prior, DVT) / np.delete(kb.prior, DVT).sum()
    for sign in ("leg_swelling", "visible_veins", "skin_warm", "skin_red", "calf_tenderness"):
        yes = (kb.severity * kb.tristate[sign]).sum(axis=1)
        ratio = yes[DVT] / (not_dvt @ np.delete(yes, DVT))
        assert 1.0 < ratio < 5.0, f"{sign}: implied likelihood ratio {ratio:.1f}"


def test_the_screen_is_quiet_on_ordinary_cases(kb):
    cases = generate_cases(kb, 20_000, seed=5)
    codes = parse_cases(cases.drop(columns=["condition", "severity"])).codes
    rate = screen_matches(SCREEN, codes).any(axis=1).mean()
    assert rate < 0.25, f"{rate:.1%} of generated cases screen positive"


# a hot, swollen knee without an injury or a fever
HOT = {"age": 66, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes", "injury_event": "none", "fever": "no"}


@pytest.mark.parametrize("rule,case,fires", [
    ("fracture_ottawa", {"age": 60, "sex": "male", "injury_event": "fall_onto_knee", "symptom_duration_days": 1}, True),
    ("fracture_ottawa", {"age": 60, "sex": "male", "injury_event": "fall_onto_knee", "symptom_duration_days": 30}, False),
    ("fracture_ottawa", {"age": 30, "sex": "male", "injury_event": "fall_onto_knee"}, False),
    ("fracture_ottawa", {"age": 30, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes"}, False),
    ("fracture_ottawa", {"age": 30, "sex": "male", "injury_event": "direct_blow", "unable_to_bear_weight": "yes"}, True),
    ("fracture_ottawa", {"age": 60, "sex": "male", "injury_event": "overstretch_or_sprint"}, False),
    # a deep squat with no blow, fall or twist: a degenerative meniscus tear, not a fracture to X-ray
    ("fracture_ottawa", {"age": 58, "sex": "male", "injury_event": "deep_bend_or_squat", "locking": "yes",
                         "symptom_duration_days": 3}, False),
    ("fracture_ottawa", {"age": 58, "sex": "male", "injury_event": "twist_or_direction_change", "symptom_duration_days": 3},
     True),
    # unable to take four steps after a squat: the Ottawa rule's item, whatever the mechanism
    ("fracture_after_a_squat", {"age": 70, "sex": "female", "injury_event": "deep_bend_or_squat", "unable_to_bear_weight": "yes",
                                "symptom_duration_days": 1}, True),
    ("fracture_after_a_squat", {"age": 58, "sex": "male", "injury_event": "deep_bend_or_squat", "locking": "yes",
                                "symptom_duration_days": 3}, False),
    # unable to take four steps with no injury: an hour or more (or not said), never a cramp's minutes
    ("unable_to_walk_without_injury", {"age": 45, "sex": "female", "injury_event": "none", "unable_to_bear_weight": "yes",
                                       "symptom_duration_days": 0.1}, True),
    ("unable_to_walk_without_injury", {"age": 86, "sex": "female", "knee_swelling": "yes", "injury_event": "none",
                                       "unable_to_bear_weight": "yes", "symptom_duration_days": 3}, True),
    ("unable_to_walk_without_injury", {"age": 40, "sex": "male", "onset": "sudden", "injury_event": "none",
                                       "unable_to_bear_weight": "yes", "symptom_duration_days": 1}, True),
    ("unable_to_walk_without_injury", {"age": 70, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes"},
     True),  # how long: unanswered
    ("unable_to_walk_without_injury", {"age": 40, "sex": "male", "muscle_spasm": "yes", "injury_event": "none",
                                       "unable_to_bear_weight": "yes", "symptom_duration_days": 0.003}, False),
    ("unable_to_walk_without_injury", {"age": 70, "sex": "male", "unable_to_bear_weight": "yes",
                                       "symptom_duration_days": 3}, False),  # what happened: asked first
    ("unable_to_walk_without_injury", {"age": 30, "sex": "male", "injury_event": "overstretch_or_sprint",
                                       "unable_to_bear_weight": "yes", "symptom_duration_days": 2}, False),
    ("unable_to_walk_without_injury", {"age": 70, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "no",
                                       "symptom_duration_days": 3}, False),
    # a fever within 12 weeks of an operation: an infection of the wound or the joint, with no
    # local sign needed; with one, the septic rule names it
    ("fever_after_surgery", {"age": 64, "sex": "male", "recent_surgery": "yes", "fever": "yes"}, True),
    ("fever_after_surgery", {"age": 64, "sex": "male", "recent_surgery": "no", "fever": "yes"}, False),
    ("fever_after_surgery", {"age": 64, "sex": "male", "recent_surgery": "yes", "fever": "no"}, False),
    ("fever_after_surgery", {"age": 64, "sex": "male", "recent_surgery": "yes", "fever": "yes", "knee_swelling": "yes"},
     True),  # it fires, and the screen names the septic rule only (below)
    # a swollen knee, hot or red, within 12 weeks of an operation, fever or not: the wound or the
    # joint may be infected; swelling alone is what a knee operation leaves for weeks
    ("hot_swollen_knee_after_surgery", {"age": 68, "sex": "male", "recent_surgery": "yes", "knee_swelling": "yes",
                                        "skin_warm": "yes", "fever": "no"}, True),
    ("hot_swollen_knee_after_surgery", {"age": 68, "sex": "male", "recent_surgery": "yes", "knee_swelling": "yes",
                                        "skin_red": "yes", "injury_event": "fall_onto_knee"}, True),
    ("hot_swollen_knee_after_surgery", {"age": 68, "sex": "male", "recent_surgery": "yes", "knee_swelling": "yes"}, False),
    ("hot_swollen_knee_after_surgery", {"age": 68, "sex": "male", "recent_surgery": "yes", "skin_warm": "yes"}, False),
    ("hot_swollen_knee_after_surgery", {"age": 68, "sex": "male", "recent_surgery": "no", "knee_swelling": "yes",
                                        "skin_warm": "yes"}, False),
    ("septic_joint_or_cellulitis", {"age": 30, "sex": "male", "fever": "yes"}, False),
    ("septic_joint_or_cellulitis", {"age": 30, "sex": "male", "fever": "yes", "skin_red": "yes"}, True),
    ("septic_joint_or_cellulitis", {"age": 30, "sex": "male", "fever": "yes", "leg_swelling": "yes"}, True),
    ("hot_swollen_knee", {"age": 50, "sex": "female", "knee_swelling": "yes", "skin_warm": "yes", "injury_event": "none"},
     True),
    ("hot_swollen_knee", {"age": 50, "sex": "female", "knee_swelling": "yes", "skin_red": "yes", "injury_event": "none"},
     True),
    ("hot_swollen_knee", {"age": 50, "sex": "female", "knee_swelling": "yes", "skin_warm": "yes",
                          "injury_event": "direct_blow"}, False),
    # an injury left unanswered: the rule stays (a blank injury question left a hot, swollen knee unscreened)
    ("hot_swollen_knee", {"age": 50, "sex": "female", "knee_swelling": "yes", "skin_warm": "yes"}, True),
    ("hot_swollen_knee", {"age": 50, "sex": "female", "knee_swelling": "no", "skin_warm": "yes", "injury_event": "none"},
     False),
    ("recent_hot_swollen_knee", {**HOT, "reduced_range_of_motion": "yes", "symptom_duration_days": 3}, True),
    ("recent_hot_swollen_knee", {**HOT, "reduced_range_of_motion": "yes", "symptom_duration_days": 14}, True),
    ("recent_hot_swollen_knee", {**HOT, "reduced_range_of_motion": "yes", "symptom_duration_days": 30},
     False),  # longer: seen within a day or two
    ("recent_hot_swollen_knee", {**HOT, "reduced_range_of_motion": "yes"}, True),  # how long: unanswered
    ("recent_hot_swollen_knee", {**HOT, "symptom_duration_days": 3}, False),  # movement: unanswered
    ("recent_hot_swollen_knee", {**HOT, "reduced_range_of_motion": "no", "symptom_duration_days": 3}, False),
    ("recent_hot_swollen_knee", {"age": 60, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes",
                                 "reduced_range_of_motion": "yes"}, True),  # the injury unanswered too
    ("recent_hot_swollen_knee", {"age": 60, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes",
                                 "reduced_range_of_motion": "yes", "injury_event": "twist_or_direction_change"}, False),
    ("hot_swollen_knee", {**HOT, "reduced_range_of_motion": "no", "symptom_duration_days": 3}, True),
    ("pulmonary_embolism", {"age": 30, "sex": "male", "breathless_or_chest_pain": "no"}, False),
    ("limb_ischaemia", {"age": 30, "sex": "male", "foot_cold_or_pale": ""}, False),
    ("slipped_femoral_epiphysis", {"age": 13, "sex": "male", "injury_event": "none"}, True),
    ("slipped_femoral_epiphysis", {"age": 15, "sex": "female"}, True),  # no injury said: the hip stays to rule out
    ("slipped_femoral_epiphysis", {"age": 16, "sex": "male", "injury_event": "none"}, False),
    ("slipped_femoral_epiphysis", {"age": 13, "sex": "male", "injury_event": "fall_onto_knee"}, False),
    ("unstable_slipped_femoral_epiphysis", {"age": 14, "sex": "male", "unable_to_bear_weight": "yes"}, True),
    ("unstable_slipped_femoral_epiphysis", {"age": 14, "sex": "male", "injury_event": "none"}, False),
    ("unstable_slipped_femoral_epiphysis", {"age": 16, "sex": "male", "unable_to_bear_weight": "yes"}, False),
])
def test_each_screen_rule_fires_exactly_when_it_should(rule, case, fires):
    assert (rule in _screened(case)) == fires


def test_screen_names_list_what_to_rule_out():
    codes = parse_cases(pd.DataFrame([{"age": 60, "sex": "male", "fever": "yes", "knee_swelling": "yes",
                                       "breathless_or_chest_pain": "yes"}, {"age": 30, "sex": "female"}])).codes
    names = screen_names(SCREEN, screen_matches(SCREEN, codes))
    assert names[0] == "pulmonary embolism|a septic joint or cellulitis" and names[1] == ""
    assert all(r.level in LEVELS for r in SCREEN.rules)


def test_a_leg_that_cannot_take_weight_without_an_injury_is_named_once_as_what_explains_it():
    """A child's is a slipped epiphysis, a fever's an infection; an adult's, without either, the
    rule for a leg that cannot take weight."""
    matches = screen_matches(SCREEN, parse_cases(pd.DataFrame([
        {"age": 14, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes"},
        {"age": 60, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes", "fever": "yes",
         "knee_swelling": "yes"},
        {"age": 60, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes"}])).codes)
    assert matches[:, RULES.index("unable_to_walk_without_injury")].all()
    assert screen_names(SCREEN, matches).tolist() == [
        "a slipped upper femoral epiphysis (a hip problem of growing children)", "a septic joint or cellulitis",
        "a serious cause of being unable to walk (an infected joint, a fracture or a clot)"]


def test_a_child_who_cannot_walk_without_an_injury_is_told_of_the_hip_first(trained):
    """The triage reason names the first same-day rule that fires: for a child who cannot walk and
    reports no injury, the hip (as the screen column does), not the adults' rule."""
    models, _ = trained
    out = predict({"age": 15, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes",
                   "symptom_duration_days": 2}, model=models)
    assert out["triage"][0] == "emergency" and "unstable_slipped_femoral_epiphysis" in out["triage_reason"][0]
    assert out["screen"][0] == "a slipped upper femoral epiphysis (a hip problem of growing children)"


def test_a_fever_after_an_operation_with_a_swollen_knee_is_named_as_the_septic_joint():
    codes = parse_cases(pd.DataFrame([{"age": 64, "sex": "male", "recent_surgery": "yes", "fever": "yes"},
                                      {"age": 64, "sex": "male", "recent_surgery": "yes", "fever": "yes",
                                       "knee_swelling": "yes"}])).codes
    assert screen_names(SCREEN, screen_matches(SCREEN, codes)).tolist() == [
        "an infection after the operation (of the wound or the joint)", "a septic joint or cellulitis"]


def test_a_hot_swollen_knee_after_an_operation_is_named_as_the_operations_infection():
    """Within 12 weeks of an operation a hot, swollen knee names the wound or the joint (not "a
    septic joint" alone, which a stiff one without an injury also matched), and with a fever the
    fever's rule as before."""
    after = {"age": 68, "sex": "male", "recent_surgery": "yes", "knee_swelling": "yes", "skin_warm": "yes",
             "skin_red": "yes", "injury_event": "none", "reduced_range_of_motion": "yes", "symptom_duration_days": 3}
    codes = parse_cases(pd.DataFrame([{**after, "fever": "no"}, {**after, "fever": "yes"},
                                      {**after, "recent_surgery": "no"}])).codes
    assert screen_names(SCREEN, screen_matches(SCREEN, codes)).tolist() == [
        "an infection after the operation (of the wound or the joint)", "a septic joint or cellulitis", "a septic joint"]


def test_a_child_who_cannot_walk_names_the_hip_once():
    matches = screen_matches(SCREEN, parse_cases(pd.DataFrame([
        {"age": 14, "sex": "male", "injury_event": "none", "unable_to_bear_weight": "yes"}])).codes)
    assert matches[0, RULES.index("slipped_femoral_epiphysis")] and matches[0, RULES.index("unstable_slipped_femoral_epiphysis")]
    assert screen_names(SCREEN, matches)[0] == "a slipped upper femoral epiphysis (a hip problem of growing children)"


@pytest.mark.parametrize("fever, named", [("yes", "a septic joint or cellulitis"), ("no", "a septic joint"),
                                          ("unknown", "a septic joint")])
def test_screen_names_a_covered_rule_only_where_its_cover_does_not_fire(fever, named):
    """A hot, swollen knee without an injury is named "a septic joint"; with a fever the same-day
    rule's "a septic joint or cellulitis" already says it, and once is enough."""
    case = {"age": 50, "sex": "female", "knee_swelling": "yes", "skin_warm": "yes", "injury_event": "none",
            "fever": fever}
    matches = screen_matches(SCREEN, parse_cases(pd.DataFrame([case])).codes)
    assert matches[0, RULES.index("hot_swollen_knee")]  # the covered rule still fires: its level stands
    assert screen_names(SCREEN, matches)[0] == named


def test_the_oracle_stays_calibrated_with_answers_missing_at_random(kb):
    """Missingness that depends on a reported answer (the pop question left unasked without an
    injury) is ignorable: the oracle, which never models it, still matches label frequencies."""
    assert kb.missingness_given, "the knowledge base has no answer-dependent missingness to test"
    cases = generate_cases(kb, 200_000, seed=31)
    y = pd.Categorical(cases["condition"], categories=list(CONDITIONS)).codes
    post = oracle_posterior(kb, cases.drop(columns=["condition", "severity"])).to_numpy()
    for k in range(len(CONDITIONS)):
        mean_p, freq = post[:, k].mean(), np.mean(y == k)
        assert abs(mean_p - freq) < 5 * np.sqrt(freq * (1 - freq) / len(y)) + 1e-3, CONDITIONS[k]
    assert ece_top_label(post, y) < 0.01


def test_wells_like_scores_separate_dvt_as_the_wells_categories_do(kb):
    """Wells et al.: DVT in about 5% / 17% / 53% of the low / moderate / high groups among people in
    whom it is suspected. Here: generated cases with a swollen or tender calf, scored on the Wells
    items the schema asks (the "alternative diagnosis as likely" item cannot be), by 1, 2, >= 3 points."""
    from pipeline.data.generate import generate_codes

    codes, cond, _ = generate_codes(kb, 400_000, seed=3)
    items = ("active_cancer", "recent_immobilisation", "recent_surgery", "calf_tenderness", "whole_leg_swollen",
             "leg_swelling", "previous_vte", "visible_veins")
    score = sum((codes[f] == 1).astype(int) for f in items)
    suspected = (codes["leg_swelling"] == 1) | (codes["calf_tenderness"] == 1)
    dvt = cond == DVT
    share = [dvt[suspected & (score == 1)].mean(), dvt[suspected & (score == 2)].mean(), dvt[suspected & (score >= 3)].mean()]
    assert 0.02 <= share[0] <= 0.12 and 0.10 <= share[1] <= 0.35 and 0.40 <= share[2] <= 0.80, share
    assert share[0] < share[1] < share[2]
