"""The decision layer: triage, red flags, conformal sets and the atypical flag."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import generate_cases, oracle_posterior, predict
from pipeline.core.blas import dot_exact
from pipeline.core.config import LEVELS, ConfigError, ScreenConfig, TriageConfig, load_config
from pipeline.core.parsing import parse_cases, premise_denied, unanswered
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, SCREEN_SIGNS, SYMPTOMS, UNKNOWN
from pipeline.data.datasets import labels
from pipeline.decision.atypical import fit_atypical, flag_atypical
from pipeline.decision.conformal import blank_at_random, credible_sets, fit_conformal, prediction_sets, set_cells
from pipeline.decision.layer import calibration_copies, decision_columns, driving_condition, with_driving_condition
from pipeline.decision.safety import SafetyNet
from pipeline.decision.screen import CountTable, answer_matches, rule_counts, rule_fires
from pipeline.decision.triage import FIRST_RULE_REASON, cost_levels, expected_cost_levels, red_flags, triage_levels

DVT = CONDITIONS.index("dvt")


@pytest.fixture(scope="module")
def cfg():
    return load_config(TriageConfig, config_path("triage.yaml"))


def _codes(cases):
    return parse_cases(pd.DataFrame(cases)).codes


QUIET = {"age": 30, "sex": "female", "activity": "running", "grinding": "yes", "onset": "gradual"}


@pytest.mark.parametrize("rule", range(len(load_config(TriageConfig, config_path("triage.yaml")).red_flags)))
def test_each_red_flag_escalates(cfg, rule):
    flag = cfg.red_flags[rule]
    case = {**QUIET, **{k: _meeting(v) for k, v in flag.all.items()},
            **{k: _meeting(v) for k, v in list(flag.any.items())[:1]}}
    codes = _codes([QUIET, case])
    runner = np.zeros((2, len(CONDITIONS)))
    runner[:, CONDITIONS.index("runners_knee")] = 1.0  # the model is sure it is runner's knee
    level, reason = triage_levels(cfg, codes, runner)
    assert LEVELS[level[0]] == "self_care"
    assert level[1] >= LEVELS.index(flag.level) and reason[1] >= FIRST_RULE_REASON


@pytest.mark.parametrize("item", ["calf_tenderness", "whole_leg_swollen", "visible_veins", "previous_vte",
                                  "active_cancer", "recent_surgery", "recent_immobilisation"])
def test_a_swollen_leg_and_a_second_wells_item_go_the_same_day_whatever_the_model_says(cfg, item):
    """Two Wells points make a DVT likely (NICE NG158: a scan within 4 hours): a swollen leg with
    any second item is sent the same day even where the model is sure of a cramp (a duration of
    0 days once took P(DVT) to 1e-13 and the case to self-care)."""
    swollen = {**QUIET, "leg_swelling": "yes", "symptom_duration_days": 0}
    codes = _codes([swollen, {**swollen, item: "yes"}])
    cramp = np.zeros((2, len(CONDITIONS)))
    cramp[:, CONDITIONS.index("leg_cramp")] = 1.0
    level, reason = triage_levels(cfg, codes, cramp)
    assert LEVELS[level[1]] == "emergency" and reason[1] >= FIRST_RULE_REASON
    assert level[0] < level[1]  # a swollen leg alone is not two points


def _meeting(answers: list[str]) -> str:
    """An answer that matches a rule's list: the first one, a comparison's bound as the number."""
    return answers[0][2:] if answers[0][:2] in ("<=", ">=") else answers[0]


@pytest.mark.parametrize("rule", range(len(load_config(ScreenConfig, config_path("screen.yaml")).rules)))
def test_each_screen_rule_raises_the_level_of_a_case_the_model_calls_runners_knee(cfg, rule):
    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    r = screen.rules[rule]
    case = {**QUIET, **{k: _meeting(v) for k, v in r.all.items()},
            **{k: _meeting(v) for k, v in list(r.any.items())[:1]}}
    codes = _codes([QUIET, case])
    runner = np.zeros((2, len(CONDITIONS)))
    runner[:, CONDITIONS.index("runners_knee")] = 1.0
    level, reason = triage_levels(cfg, codes, runner, screen=screen)
    assert LEVELS[level[0]] == "self_care"
    assert LEVELS[level[1]] == r.level and reason[1] >= FIRST_RULE_REASON, (r.name, case)


def test_the_differential_holds_the_condition_an_expected_cost_level_is_for(cfg):
    cyst, dvt, cramp = (CONDITIONS.index(c) for c in ("bakers_cyst", "dvt", "leg_cramp"))
    proba = np.zeros((4, len(CONDITIONS)))
    proba[:, cyst], proba[:, dvt], proba[:, cramp] = 0.84, 0.075, 0.085
    sets = np.zeros_like(proba, dtype=bool)
    sets[:, cyst] = True  # a Baker's cyst alone
    emergency, soon = LEVELS.index("emergency"), LEVELS.index("see_doctor_soon")
    level = np.array([emergency, soon, emergency, LEVELS.index("see_doctor")])
    reason = np.array([0, 2, FIRST_RULE_REASON, 0])  # the cost; the cost, softened; a red flag; the cost
    shown = with_driving_condition(sets, proba, level, reason, cfg)
    assert shown[0, dvt] and shown[0].sum() == 2  # the same day by the cost: DVT is what it is for
    assert shown[1, dvt] and shown[1].sum() == 2  # a softened same day: still for DVT
    assert shown[2, dvt] and shown[2].sum() == 2  # possible_dvt's level is for its condition, DVT
    assert shown[3].sum() == 1  # a Baker's cyst calls for seeing a doctor already
    assert sets.sum() == 4  # the conformal sets are left as they were
    _, driver = driving_condition(proba, level, reason, cfg)
    assert driver.tolist() == [dvt, dvt, dvt, cyst]
    # a red flag for none of the nine conditions names none: its reason says what it is for
    flags = [cfg.red_flags[0].model_copy(update={"condition": None}), *cfg.red_flags[1:]]
    bare = cfg.model_copy(update={"red_flags": flags})
    assert with_driving_condition(sets, proba, level, reason, bare)[2].sum() == 1
    assert driving_condition(proba, level, reason, bare)[1].tolist() == [dvt, dvt, -1, cyst]


def test_an_expected_cost_level_is_for_the_condition_whose_cost_it_lowers_most_or_the_flag_shown(trained):
    """An urgent level is for what makes it urgent. A cramp-like case sent within a day or two by
    the cost: a 1.2% chance of DVT sets that level (within a day or two saves the clot 170 units
    against the coming days, the ligament 3), yet the advice named a 3.2% ACL injury "which this
    level is for", and no clot (82 of 20,000 `test` cases; 2,617 with most answers blank). And
    where a swollen calf's red flag ("it can be a clot") is the reason shown at the level the cost
    gave, the clot is what the level is for, not a more likely ACL injury that saves less (64
    `test` cases: the clot in neither advice nor differential)."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    cramp, ham, acl, dvt = (CONDITIONS.index(c) for c in ("leg_cramp", "hamstring_injury", "acl_injury", "dvt"))
    base = {"age": 40, "sex": "female", "muscle_spasm": "yes", "symptom_duration_days": 1}
    cases = [base, {**base, "leg_swelling": "yes", "calf_tenderness": "no", "skin_warm": "no", "skin_red": "no",
                    "visible_veins": "no", "whole_leg_swollen": "no"}]
    proba = np.zeros((2, len(CONDITIONS)))
    proba[0, [cramp, ham, acl, dvt]] = 0.9, 0.056, 0.032, 0.012
    proba[1, [cramp, ham, acl, dvt]] = 0.6, 0.096, 0.3, 0.004  # the ligament saves 0.9 units, the clot 0.68
    columns = decision_columns(model.decision, model.kb, parse_cases(pd.DataFrame(cases)), proba, codes=True)
    assert list(columns["triage"]) == ["see_doctor_soon", "see_doctor_soon"]
    assert list(columns["triage_reason"]) == ["expected_cost", "red_flag:swollen_calf_or_leg"]
    assert list(columns["advice"]) == ["see_doctor_soon:leg_cramp+dvt", "see_doctor_soon:leg_cramp+dvt"]
    assert all("dvt" in d.split("|") for d in columns["differential"])
    # a torn ligament's red flag shown at the level the clot sets does not displace the clot from
    # the advice (the review's case: the flag's condition took the advice, the clot left it); the
    # ligament is in the differential beside it
    ham, meniscus = CONDITIONS.index("hamstring_injury"), CONDITIONS.index("meniscus_tear")
    popped = {**base, "heard_pop": "yes", "giving_way": "yes", "knee_swelling": "yes", "leg_swelling": "no",
              "calf_tenderness": "no"}
    p = np.zeros((1, len(CONDITIONS)))
    p[0, [ham, meniscus, acl, dvt]] = 0.61, 0.32, 0.03, 0.04
    out = decision_columns(model.decision, model.kb, parse_cases(pd.DataFrame([popped])), p, codes=True)
    assert (out["triage"][0], out["triage_reason"][0]) == ("see_doctor_soon", "red_flag:ligament_tear_signs")
    assert out["advice"][0] == "see_doctor_soon:hamstring_injury+dvt"
    assert {"dvt", "acl_injury"} <= set(out["differential"][0].split("|"))
    # but an ACL injury that holds the level without the clot keeps its own advice
    both = np.zeros((1, len(CONDITIONS)))
    both[0, [cramp, acl, dvt]] = 0.55, 0.35, 0.01  # the clot saves 1.7 units, the ligament 1.05
    _, driver = driving_condition(both, np.array([LEVELS.index("see_doctor_soon")]), np.array([0]),
                                  model.decision.config)
    assert driver.tolist() == [acl]
    # a visit in the coming days is for the most probable condition that calls for it: a 0.5% clot
    # would save the most there (1 unit against the cyst's 0.7), but is no reason to wait for days
    runner, cyst = CONDITIONS.index("runners_knee"), CONDITIONS.index("bakers_cyst")
    routine = np.zeros((1, len(CONDITIONS)))
    routine[0, [runner, cyst, dvt]] = 0.645, 0.35, 0.005
    _, driver = driving_condition(routine, np.array([LEVELS.index("see_doctor")]), np.array([0]),
                                  model.decision.config)
    assert driver.tolist() == [cyst]
    # where the likely condition calls for the level itself, it is the one the level is for
    proba[0, [cramp, acl]] = proba[0, [acl, cramp]]
    _, driver = driving_condition(proba[:1], np.array([LEVELS.index("see_doctor_soon")]), np.array([0]),
                                  model.decision.config)
    assert driver.tolist() == [acl]


def test_a_red_flags_condition_is_shown_behind_another_rules_reason_and_whenever_the_advice_names_it(cfg):
    """possible_dvt fires at the same day where the pulmonary-embolism screen rule is the reason
    shown: DVT is still what the level is for. And a flag's condition less likely than a condition
    of the set that already calls for the level is added where the advice names it."""
    cramp, dvt, acl, meniscus = (CONDITIONS.index(c) for c in ("leg_cramp", "dvt", "acl_injury", "meniscus_tear"))
    proba = np.zeros((2, len(CONDITIONS)))
    proba[0, cramp] = 1.0
    proba[1, meniscus], proba[1, acl], proba[1, dvt] = 0.6, 0.39, 0.01
    sets = np.zeros_like(proba, dtype=bool)
    sets[0, cramp] = True
    sets[1, [meniscus, acl]] = True
    level = np.array([LEVELS.index("emergency"), LEVELS.index("see_doctor_soon")])
    risk = [f.name for f in cfg.red_flags].index("swollen_calf_or_leg")
    reason = np.array([FIRST_RULE_REASON + len(cfg.red_flags), FIRST_RULE_REASON + risk])  # a screen rule; the calf's flag
    fires = np.zeros((2, len(cfg.red_flags)), dtype=bool)
    fires[0, 0] = True  # possible_dvt, behind the screen rule's reason
    fires[1, risk] = True
    driving = driving_condition(proba, level, reason, cfg, fires)
    assert driving[1].tolist() == [dvt, dvt]
    shown = with_driving_condition(sets, proba, level, reason, cfg, driving=driving)
    assert shown[0].tolist() == [c in (cramp, dvt) for c in range(len(CONDITIONS))]
    assert shown[1, dvt] and shown[1].sum() == 3


def test_no_advice_below_the_same_day_tells_to_go_sooner_than_its_level(cfg):
    """The level's text says when to go; a condition's advice after it must not say sooner (a DVT
    softened to "within a day or two" read "needs medical assistance as soon as possible"), but
    when its signs would send the case sooner: "which would call for the same day if its signs
    appear or grow worse" (not "which this level is for": within a day or two is no clot's level)."""
    from pipeline.decision.triage import advice_table, advice_written

    texts, written = advice_table(cfg), advice_written(cfg)
    urgent = re.compile(r"as soon as possible|immediate|right away|straight away|at once|urgent|\bnow\b|same day|"
                        r"emergency|within \d+ hours|ambulance|999|112", re.IGNORECASE)
    if_signs = "which would call for the same day if its signs appear or grow worse"
    # the clot's advice says what to do if it reaches the lungs: only on those signs
    if_lungs = re.compile(r"If you become short of breath, have chest pain when breathing in or cough up blood, "
                          r"call an ambulance \(999 in the UK, 112 in Europe\): a clot may have reached the lungs\.")
    conditional = 0
    for level in range(LEVELS.index("emergency")):
        for text in texts[level][written[level]]:
            after = text.removeprefix(cfg.level_text[LEVELS[level]])
            conditional += if_signs in after
            assert not urgent.search(if_lungs.sub("", after.replace(if_signs, ""))), text
            assert "Deep vein thrombosis, which this level is for" not in after, text
    assert conditional
    assert if_lungs.search(cfg.advice["dvt"])


def test_where_the_advice_names_a_clot_or_a_pulmonary_embolism_it_says_to_call_an_ambulance_on_its_signs(cfg):
    """A case sent the same day for a clot has no safety net above its level, so the clot's advice
    says that breathlessness, chest pain or coughing blood means an ambulance (an NHS trust's DVT
    leaflet: "telephone 999 immediately and ask for an ambulance"), at every level it is shown;
    the pulmonary embolism rule's reason, which the advice gives where it fires, says the same."""
    from pipeline.decision.triage import advice_table, advice_written, screen_advice

    texts, written = advice_table(cfg), advice_written(cfg)
    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    pe = [r.name for r in screen.rules].index("pulmonary_embolism")
    shown = [t for level in range(len(LEVELS)) for t in texts[level][written[level]] if "blood clot (DVT)" in t]
    shown += list(screen_advice(cfg, screen)[pe])
    assert len(shown) > len(CONDITIONS)  # at every level, beside each condition
    for text in shown:
        assert "call an ambulance (999 in the UK, 112 in Europe)" in text, text


def test_a_cold_pale_foot_is_sent_to_an_emergency_department_or_an_ambulance_not_urgent_care(cfg):
    """Acute limb ischaemia is treated in hospital within hours: where the rule sets the level, its
    advice (the same day's text says "urgent care or an emergency department") sends the person to
    an emergency department or an ambulance, in every advice that leads with it."""
    from pipeline.decision.triage import screen_advice

    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    ischaemia = [r.name for r in screen.rules].index("limb_ischaemia")
    led = list(screen_advice(cfg, screen)[ischaemia])
    assert led
    for text in led:
        assert "go to an emergency department, or call an ambulance (999 in the UK, 112 in Europe), not to urgent " \
               "care or a GP" in text, text
        # and the same day's own words leave the place to the rule: they sent it to "urgent care or an
        # emergency department" just before the rule said not to urgent care
        assert text.startswith(cfg.level_text["emergency"]) and "unless told below where to go" in text, text


def test_a_screen_rule_is_covered_only_by_another_rule_as_urgent():
    from pydantic import ValidationError

    data = load_config(ScreenConfig, config_path("screen.yaml")).model_dump()
    by_name = {r["name"]: r for r in data["rules"]}
    by_name["hot_swollen_knee"]["covered_by"] = ["septic_joint"]
    with pytest.raises(ValidationError, match="hot_swollen_knee.covered_by: 'septic_joint' is not another rule"):
        ScreenConfig.model_validate(data)
    by_name["hot_swollen_knee"]["covered_by"] = []
    by_name["septic_joint_or_cellulitis"]["covered_by"] = ["hot_swollen_knee"]
    with pytest.raises(ValidationError, match="'hot_swollen_knee' is at level 'see_doctor_soon', below 'emergency'"):
        ScreenConfig.model_validate(data)
    by_name["septic_joint_or_cellulitis"]["covered_by"] = []
    by_name["pulmonary_embolism"]["covered_by"] = ["limb_ischaemia"]
    by_name["limb_ischaemia"]["covered_by"] = ["popliteal_aneurysm"]
    ScreenConfig.model_validate(data)  # a chain: where all three fire, the aneurysm is named
    by_name["popliteal_aneurysm"]["covered_by"] = ["pulmonary_embolism"]
    with pytest.raises(ValidationError, match="pulmonary_embolism, limb_ischaemia, popliteal_aneurysm cover each other"):
        ScreenConfig.model_validate(data)


def test_a_red_flags_condition_must_call_for_the_flags_level(cfg):
    from pydantic import ValidationError

    data = cfg.model_dump()
    data["red_flags"][-1]["condition"] = "leg_cramp"  # ligament_tear_signs sends within a day or two
    with pytest.raises(ValidationError, match="'leg_cramp' calls for self_care, below the flag's see_doctor_soon"):
        TriageConfig.model_validate(data)
    data["red_flags"][-1]["condition"] = "flu"
    with pytest.raises(ValidationError, match="'flu' is not one of"):
        TriageConfig.model_validate(data)


@pytest.mark.parametrize("config, model, edit, expected", [
    ("triage.yaml", TriageConfig, lambda d: d["red_flags"][0].pop("source"), r"red_flags\.0\.source: Field required"),
    ("triage.yaml", TriageConfig, lambda d: d["red_flags"][2].update(source="NICE says so"),
     r"red_flags\.2\.source: source must be 'seed: \"<quote>\"', 'ref: <author \(year\) title>' or 'assumption: <reason>', "
     r"got 'NICE says so'"),
    ("triage.yaml", TriageConfig, lambda d: d["cost_sources"].update(dvt="ref: NICE NG158"),
     r"cost_sources\.dvt: source must be"),
    ("triage.yaml", TriageConfig, lambda d: d["red_flags"][0].update(source='seed: "a clot in the leg is harmless"'),
     r"red_flags\.0\.source: seed quote not found in the seed article"),
    ("screen.yaml", ScreenConfig, lambda d: d["rules"][1]["suggested_by"].update(source="docs/evidence/x.md"),
     r"rules\.1\.suggested_by\.source: source must be"),
    ("triage.yaml", TriageConfig, lambda d: d["uncertain"].pop("risks_source"),
     r"uncertain: .*risks: give risks_source"),
    ("triage.yaml", TriageConfig, lambda d: d["uncertain"].update(risks=["bmi"]),
     r"uncertain: .*'bmi' must be a yes/no question"),
])
def test_a_rule_or_cost_without_provenance_is_refused_at_load(tmp_path, config, model, edit, expected):
    """Every red flag, screen rule, suggestion and cost says where it comes from, as a knowledge-base
    number does: a file that leaves one out, or gives one that is not a ref, a seed quote or an
    assumption, is refused with the key named."""
    data = yaml.safe_load(config_path(config).read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / config
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_config(model, path)


@pytest.mark.parametrize("edit, expected", [
    # a case certain to be a clot was sent within a day or two
    (lambda d: d["costs"]["dvt"].update(see_doctor_soon=30, emergency=50),
     r"costs\.dvt: must be 0 at its right_level \(emergency\) and above 0 at every other level"),
    (lambda d: d["costs"]["leg_cramp"].update(see_doctor=0), r"costs\.leg_cramp: must be 0 at its right_level \(self_care\)"),
    # a suspected clot softened to self-care
    (lambda d: d["uncertain"].update(level="self_care"),
     r"uncertain\.level: must be one of \['see_doctor', 'see_doctor_soon'\] .*, got 'self_care'"),
    (lambda d: d["uncertain"].update(level="emergency"), r"uncertain\.level: must be one of"),
    # YAML's unquoted yes is true: said so, where "Input should be a valid list" was all
    (lambda d: d["red_flags"][0]["all"].update({next(iter(d["red_flags"][0]["all"])): True}),
     r"red_flags\.0\.all\.\w+.*, got True \(YAML reads an unquoted yes, no, on or off as true or false: quote it"),
    # two rules with one name: one reason code for two texts
    (lambda d: d["red_flags"][1].update(name=d["red_flags"][0]["name"]),
     r"red_flags: each name must be one rule's .*; repeated: \['\w+'\]"),
    # accepted, and acted on as nothing: a threshold no case meets, an empty text
    (lambda d: d["red_flags"][0]["all"].update(age=[">=500"]),
     r"red_flags\[0\]\.all\.age: '>=500' matches no case \(age is a whole number >= 12 and <= 100\)"),
    (lambda d: d["red_flags"][0]["all"].update(age=["<=5"]), r"red_flags\[0\]\.all\.age: '<=5' matches no case"),
    (lambda d: d["advice"].update(dvt=" "), r"advice\.dvt: String should match pattern"),
    (lambda d: d["red_flags"][0].update(safety_net=""), r"red_flags\.0\.safety_net\.text: String should match pattern"),
    # a fitted line: a text for each combination of its settled fields, none for a sign or a rule
    # with no `any` part
    (lambda d: d["red_flags"][1]["safety_net"]["without"].pop("active_cancer"),
     r"red_flags\.1: safety_net\.without: give one text for each combination of previous_vte\+active_cancer answered "
     r"otherwise; missing: active_cancer"),
    (lambda d: d["red_flags"][2]["safety_net"]["without"].update(visible_veins="x"),
     r"red_flags\.2: safety_net\.without: 'visible_veins': a sign said \"no\" can appear later"),
    (lambda d: d["red_flags"][2]["safety_net"]["without"].update(active_cancr="x"),
     r"red_flags\.2: safety_net\.without: 'active_cancr' is not one of the rule's `any` fields .* \(did you mean "
     r"active_cancer\?\)"),
    (lambda d: next(f for f in d["red_flags"] if f["name"] == "swollen_calf_or_leg").update(
        safety_net={"text": "x", "met": "y"}), r"red_flags\.\d+: safety_net: the rule has no `any` part"),
])
def test_a_triage_config_that_would_send_a_case_to_the_wrong_level_is_refused_at_load(tmp_path, edit, expected):
    data = yaml.safe_load(config_path("triage.yaml").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"triage.yaml: invalid TriageConfig:\n  {expected}"):
        load_config(TriageConfig, path)


def test_the_advice_names_the_less_likely_condition_the_level_is_for(cfg):
    from pipeline.decision.triage import advice_codes, advice_index, advice_table, advice_written

    cyst, dvt = CONDITIONS.index("bakers_cyst"), CONDITIONS.index("dvt")
    level = np.array([LEVELS.index("see_doctor_soon")] * 3)
    likely = np.array([cyst, cyst, dvt])
    at = advice_index(level, likely, np.array([dvt, -1, dvt]))
    codes, texts = advice_codes().ravel()[at], advice_table(cfg).ravel()[at]
    assert codes.tolist() == ["see_doctor_soon:bakers_cyst+dvt", "see_doctor_soon:bakers_cyst", "see_doctor_soon:dvt"]
    first = ("Deep vein thrombosis, which would call for the same day if its signs appear or grow worse, is less "
             "likely than Baker's cyst but not ruled out")
    assert texts[0].index(first) < texts[0].index("Most likely Baker's cyst")
    assert "ruled out" not in texts[1] and "ruled out" not in texts[2]
    assert all(t.startswith(cfg.level_text["see_doctor_soon"]) and t.endswith(cfg.closing) for t in texts)
    # the texts lookup lists only the cells a case can get
    written = advice_written(cfg)
    assert written[:, :, 0].all() and written.ravel()[at].all()
    assert not written[:, cyst, 1 + cyst].any()  # never "Baker's cyst ... not ruled out: Baker's cyst"
    assert not written[LEVELS.index("self_care"), :, 1:].any()  # every condition calls for self-care at least


def test_every_expected_cost_level_has_a_condition_in_the_differential_that_calls_for_it(trained, kb):
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    cases = blank_at_random(parse_cases(generate_cases(kb, 3000, seed=41).drop(columns=["condition", "severity"])),
                            0.6, seed=3)
    proba = model.predict_proba(cases)
    columns = decision_columns(model.decision, model.kb, cases, proba, codes=True)
    right = {c: LEVELS.index(model.decision.config.right_level[c]) for c in CONDITIONS}
    level = pd.Categorical(columns["triage"], categories=list(LEVELS)).codes
    reason = pd.Series(columns["triage_reason"])
    # the level rests on the expected cost where the rules left it as the cost gave it (a rule at
    # that level may be the reason shown)
    before, basis = expected_cost_levels(model.decision.config, cases.codes, proba, columns["atypical"],
                                         model.decision.safety(model.kb))
    cost = np.isin(basis, [0, 2]) & (before == level)
    assert cost.sum() > 1000, reason.value_counts()
    assert (cost & ~reason.isin(["expected_cost", "same_day_unanswered"])).sum() > 0  # a rule shown, at that level
    needed = np.where(basis == 2, LEVELS.index("emergency"), level)
    top = np.array([max(right[c] for c in d.split("|")) for d in columns["differential"]])
    assert (top[cost] >= needed[cost]).all()
    # the advice names the condition the level is for (the cost's, or a red flag's own condition)
    # exactly where the most likely one does not call for it, and that condition is in the differential
    likely = np.array([right[CONDITIONS[i]] for i in model.predict_proba(cases).argmax(axis=1)])
    advice = pd.Series(columns["advice"]).str.replace(r"\+screen:\w+$", "", regex=True)  # a lower rule's (tested below)
    named = advice.str.contains("+", regex=False).to_numpy()
    # a red flag with a condition that fires at the final level, shown or behind another rule's reason
    flags = model.decision.config.red_flags
    fires = model.decision.safety(model.kb).fires(cases.codes)[:, :len(flags)]
    by_rule = ~cost & np.any([fires[:, i] & (level == LEVELS.index(f.level)) for i, f in enumerate(flags)
                              if f.condition], axis=0)
    assert by_rule.sum() > 10 and (named & by_rule).sum() > 0, (by_rule.sum(), (named & by_rule).sum())
    # (where a screen rule leads, the most likely condition is named too when it calls for the level)
    led = advice.str.startswith("screen:").to_numpy()
    # and where the red flag shown as the reason has a condition that calls for more than the likely one
    flagged = reason.map({f"red_flag:{f.name}": right[f.condition] for f in flags if f.condition}).fillna(-1).to_numpy()
    expected = ((cost | by_rule) & (likely < needed)) | (led & (likely >= level)) | (flagged > likely)
    assert ((flagged > likely) & (likely >= needed)).sum() > 0  # named beside a likely one that calls for the level
    assert (named == expected).all() and named.sum() > 100, named.sum()
    for code, shown, need in zip(advice[named], pd.Series(columns["differential"])[named], np.where(led, level, needed)[named]):
        driver = code.split("+")[1]
        assert driver in shown.split("|") and right[driver] >= need, (code, shown)
    # the advice leads with what to rule out exactly where a screen rule fires at the case's level
    rules = model.decision.screen.rules
    screened = model.decision.safety(model.kb).fires(cases.codes)[:, len(flags):]
    at_level = screened & (np.array([LEVELS.index(r.level) for r in rules])[None, :] == level[:, None])
    assert (led == at_level.any(axis=1)).all() and led.sum() > 10, led.sum()


def test_a_screened_emergency_is_advised_as_what_to_rule_out_not_as_a_condition(trained):
    """A cold, pale foot read as a cramp was advised to "stretch the muscle gently", a pulsing lump
    as a Baker's cyst that "can be left alone": where a screen rule sets the level, the advice
    leads with what to rule out and why, and gives no condition's own advice."""
    from pipeline import predict
    from pipeline.serve.predict import get_model

    models, _ = trained
    decision = get_model(models).decision
    cases = [{"age": 74, "sex": "male", "smoker": "yes", "onset": "sudden", "injury_event": "none",
              "foot_cold_or_pale": "yes", "symptom_duration_days": 0.1},
             {"age": 70, "sex": "male", "onset": "gradual", "swelling_behind_knee": "yes", "pulsating_lump": "yes",
              "symptom_duration_days": 30},
             {"age": 40, "sex": "male", "muscle_spasm": "yes", "breathless_or_chest_pain": "yes"},
             # a likely DVT beside the screen's PE is named too (the condition that calls for the level)
             {"age": 55, "sex": "female", "recent_surgery": "yes", "leg_swelling": "yes", "calf_tenderness": "yes",
              "skin_warm": "yes", "breathless_or_chest_pain": "yes"}]
    out = predict(cases, model=models)
    assert out["triage"].tolist() == ["emergency"] * 4 and out["prediction"][3] == "dvt"
    assert "Deep vein thrombosis, which calls for this level too, is not ruled out either." in out["advice"][3]
    assert "cramp" not in out["advice"][0].lower()
    first = {"limb_ischaemia": 0, "popliteal_aneurysm": 1, "pulmonary_embolism": 2}
    for rule in decision.screen.rules:
        if rule.name in first:
            advice = out["advice"][first[rule.name]]
            assert advice.startswith(f"{decision.config.level_text['emergency']} First rule out {rule.rule_out}: "
                                     f"{rule.reason}."), advice
            assert advice.endswith(decision.config.closing)
            assert not any(decision.config.advice[c] in advice for c in CONDITIONS), advice
    # as codes (a CSV output's), each restored to its text by the texts lookup
    loaded = get_model(models)
    parsed = parse_cases(pd.DataFrame(cases))
    coded = decision_columns(decision, loaded.kb, parsed, loaded.predict_proba(parsed), codes=True)["advice"]
    assert list(coded) == ["screen:limb_ischaemia", "screen:popliteal_aneurysm", "screen:pulmonary_embolism",
                           "screen:pulmonary_embolism+dvt"]
    texts = decision.text_codes(loaded.kb)["advice"]
    assert [texts[c] for c in coded] == out["advice"].tolist()


def test_a_screen_rule_below_the_level_is_named_after_the_condition_it_is_sent_for(trained, kb):
    """A hot, swollen knee that bends, in a likely clot, goes the same day for the clot; the advice
    named only the clot, and the joint that must be ruled out too was in the screen column alone.
    Where a screen rule fires below a level set by something else, the advice says what it rules
    out and why, before the closing; where the rule sets the level, it leads as before."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    decision = model.decision
    rules = {r.name: r for r in decision.screen.rules}
    knee = {"age": 72, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes", "injury_event": "none",
            "reduced_range_of_motion": "no", "symptom_duration_days": 3}
    child = {"age": 14, "sex": "male", "injury_event": "none", "leg_swelling": "yes", "calf_tenderness": "yes"}
    parsed = parse_cases(pd.DataFrame([knee, knee, child]))
    proba = np.full((3, len(CONDITIONS)), 0.01)
    proba[0, DVT] = proba[2, CONDITIONS.index("hamstring_injury")] = 0.92  # the same day by the cost; by a red flag
    proba[1, CONDITIONS.index("osteoarthritis")] = 0.92  # the screen rule sets the level
    coded = decision_columns(decision, model.kb, parsed, proba, codes=True)
    written = decision_columns(decision, model.kb, parsed, proba)
    assert list(coded["triage"]) == ["emergency", "see_doctor_soon", "emergency"]
    assert coded["advice"][0] == "emergency:dvt+screen:hot_swollen_knee"
    assert coded["advice"][1].startswith("screen:hot_swollen_knee")  # with the condition the level is for
    assert coded["advice"][2] == "emergency:hamstring_injury+dvt+screen:slipped_femoral_epiphysis"
    for i, name in ((0, "hot_swollen_knee"), (2, "slipped_femoral_epiphysis")):
        line = f"Rule out {rules[name].rule_out} too: {rules[name].reason}. {decision.config.closing}"
        assert written["advice"][i].endswith(line) and rules[name].rule_out in written["screen"][i]
    assert written["advice"][0].index("Most likely deep vein thrombosis") < written["advice"][0].index("Rule out")
    assert "too:" not in written["advice"][1]
    texts = decision.text_codes(model.kb)["advice"]
    assert [texts[c] for c in coded["advice"]] == list(written["advice"])
    # a clot named beside a rule at a softened level calls for more than the level, and says so
    soft = parse_cases(pd.DataFrame([{"age": 60, "sex": "female", "symptom_duration_days": 20, "knee_swelling": "yes",
                                      "injury_event": "none", "skin_red": "yes"}]))
    columns = decision_columns(decision, model.kb, soft, _dvt_at(0.2))
    assert columns["triage"][0] == "see_doctor_soon" and "First rule out a septic joint" in columns["advice"][0]
    assert "Deep vein thrombosis, which would call for the same day if its signs appear or grow worse, is not ruled " \
           "out either." in columns["advice"][0], columns["advice"][0]
    # beside a rule that sets the level: "First rule out a pulmonary embolism ... Rule out a septic joint too"
    both = parse_cases(pd.DataFrame([{**knee, "breathless_or_chest_pain": "yes"}]))
    code = decision_columns(decision, model.kb, both, proba[1:2], codes=True)["advice"][0]
    assert code.startswith("screen:pulmonary_embolism") and code.endswith("+screen:hot_swollen_knee"), code
    assert texts[code].index("First rule out pulmonary embolism") < texts[code].index("Rule out a septic joint too")
    # on generated cases: wherever the screen names something, the advice says to rule it out; where
    # it names two, one of them at the case's level (it sets the level), the advice names both
    cases = generate_cases(kb, 5000, seed=8).drop(columns=["condition", "severity"])
    cases.loc[::7, ["knee_swelling", "skin_warm"]] = True
    cases.loc[::7, "injury_event"] = "none"
    cases.loc[::11, "breathless_or_chest_pain"] = True
    out = predict(cases, model=trained[0])
    screened = (out["screen"].fillna("") != "").to_numpy()
    level_of = {r.rule_out: r.level for r in decision.screen.rules}
    said = [[f"rule out {n}".lower() in advice.lower() for n in names.split("|")]
            for advice, names in zip(out["advice"][screened], out["screen"][screened])]
    assert all(any(s) for s in said)
    two = [(s, names.split("|"), level) for s, names, level in zip(said, out["screen"][screened], out["triage"][screened])
           if names.count("|") == 1 and level in [level_of[n] for n in names.split("|")]]
    assert len(two) > 50 and all(all(s) for s, _, _ in two), [t for t in two if not all(t[0])][:3]


def test_a_rule_at_the_softened_level_keeps_the_condition_the_level_rests_on(trained):
    """A same day softened because it rests on unanswered questions, where a rule at that softened
    level also fires (a swollen leg): the rule is the reason shown, but the level still
    rests on the DVT's expected cost, so DVT stays in the differential and the advice, as it does
    when the rule does not fire."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    case = {"age": 35, "sex": "female", "onset": "gradual", "leg_swelling": "yes"}  # warm, red skin unanswered
    parsed = parse_cases(pd.DataFrame([case, {**case, "leg_swelling": ""}]))
    proba = np.zeros((2, len(CONDITIONS)))
    proba[:, CONDITIONS.index("bakers_cyst")], proba[:, DVT] = 0.93, 0.07  # the same day, by the cost
    columns = decision_columns(model.decision, model.kb, parsed, proba, codes=True)
    assert list(columns["triage_reason"]) == ["red_flag:swollen_calf_or_leg", "same_day_unanswered"]
    assert list(columns["triage"]) == ["see_doctor_soon"] * 2
    assert list(columns["advice"]) == ["see_doctor_soon:bakers_cyst+dvt"] * 2
    assert all("dvt" in d.split("|") for d in columns["differential"])


def test_with_nothing_of_the_pain_known_the_advice_names_no_condition_and_says_too_little_is_known(trained):
    """Age, sex and history tell too little to name a cause: no "Most likely ACL injury: ... usually
    needs reconstructive surgery" for an 18-year-old who said nothing of the pain, but the condition
    the level is for, not ruled out (a softened same day's DVT, however likely). At the same day the
    condition's advice stands ("Do not massage the leg"), as it does after one answer about the
    pain, and a rule keeps its own reason."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    acl, cramp, osteoarthritis = (CONDITIONS.index(c) for c in ("acl_injury", "leg_cramp", "osteoarthritis"))
    young, old = {"age": 18, "sex": "female"}, {"age": 80, "sex": "male"}
    cases = [(young, {acl: 1.0}, "pain_not_described", "see_doctor_soon:pain_not_described+acl_injury"),
             ({**old, "smoker": "yes", "pregnant": "no"}, {acl: 0.9, DVT: 0.1}, "same_day_unanswered",
              "see_doctor_soon:pain_not_described+dvt"),
             ({**old, "long_travel": "yes"}, {acl: 0.25, cramp: 0.2, osteoarthritis: 0.25, DVT: 0.3}, "same_day_unanswered",
              "see_doctor_soon:pain_not_described+dvt"),
             ({**young, "activity": "running", "previous_vte": "no"}, {cramp: 1.0}, "pain_not_described",
              "self_care:pain_not_described"),
             ({**old, "smoker": "no"}, {DVT: 1.0}, "expected_cost", "emergency:dvt"),  # the same day, not softened
             ({**old, "previous_vte": "yes", "active_cancer": "yes"}, {DVT: 1.0},
              "red_flag:clot_before_with_wells_history", "emergency:dvt"),
             ({**young, **dict.fromkeys(SCREEN_SIGNS, "no")}, {acl: 1.0}, "pain_not_described",
              "see_doctor_soon:pain_not_described+acl_injury"),  # no fever, no chest pain: nothing of the knee
             ({**old, "giving_way": "no"}, {acl: 0.9, DVT: 0.1}, "same_day_unanswered", "see_doctor_soon:acl_injury+dvt"),
             ({**young, "onset": "sudden"}, {acl: 1.0}, "expected_cost", "see_doctor_soon:acl_injury"),
             ({**young, "fever": "yes", "skin_red": "yes"}, {acl: 1.0}, "screen:septic_joint_or_cellulitis",
              "screen:septic_joint_or_cellulitis")]
    parsed = parse_cases(pd.DataFrame([c for c, *_ in cases]))
    proba = np.zeros((len(cases), len(CONDITIONS)))
    for i, (_, p, *_) in enumerate(cases):
        proba[i, list(p)] = list(p.values())
    coded = decision_columns(model.decision, model.kb, parsed, proba, codes=True)
    assert list(coded["triage_reason"]) == [r for *_, r, _ in cases]
    assert list(coded["advice"]) == [a for *_, a in cases]
    texts = decision_columns(model.decision, model.kb, parsed, proba)
    lookup = model.decision.text_codes(model.kb)
    assert [lookup["advice"][c] for c in coded["advice"]] == list(texts["advice"])  # the lookup file has them
    assert [lookup["triage_reason"][c] for c in coded["triage_reason"]] == list(texts["triage_reason"])
    for advice in texts["advice"][:4]:
        assert "Nothing is known of the pain itself yet" in advice and "Most likely" not in advice
        assert "reconstructive" not in advice and advice.endswith(model.decision.config.closing)
    assert "Not ruled out: ACL injury, which this level is for" in texts["advice"][0]
    assert "Not ruled out: deep vein thrombosis" in texts["advice"][1] and "Not ruled out" not in texts["advice"][3]
    assert "Do not massage the leg" in texts["advice"][4] and "Do not massage the leg" in texts["advice"][5]
    assert texts["advice"][8].startswith("See a doctor soon (within a day or two). Most likely ACL injury")
    assert texts["triage_reason"][0].startswith("nothing is known of the pain itself")


def test_a_child_without_an_injury_is_told_to_have_the_hip_checked_whatever_the_knee_looks_like(trained):
    """A slipped upper femoral epiphysis shows as knee pain: at 15 or younger without an injury the
    advice leads with it, whether the model's own level is below the rule's or at it; a child who
    cannot walk goes the same day."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    child = {"age": 13, "sex": "male", "bmi": 32, "onset": "gradual", "injury_event": "none", "symptom_duration_days": 20}
    parsed = parse_cases(pd.DataFrame([child, child, {**child, "unable_to_bear_weight": "yes"}]))
    proba = np.zeros((3, len(CONDITIONS)))
    proba[[0, 2], CONDITIONS.index("runners_knee")] = 1.0  # self-care by the cost
    proba[1, CONDITIONS.index("acl_injury")] = 1.0  # within a day or two by the cost
    coded = decision_columns(model.decision, model.kb, parsed, proba, codes=True)
    assert list(coded["triage"]) == ["see_doctor_soon", "see_doctor_soon", "emergency"]
    assert list(coded["advice"]) == ["screen:slipped_femoral_epiphysis", "screen:slipped_femoral_epiphysis+acl_injury",
                                     "screen:unstable_slipped_femoral_epiphysis"]
    texts = decision_columns(model.decision, model.kb, parsed, proba)
    assert all("First rule out a slipped upper femoral epiphysis" in t for t in texts["advice"])


def test_no_rule_stays_open_through_a_mans_pregnancy(net):
    """The parser keeps a man's pregnancy unanswered; the rules read it as "no", so the safety net
    never lists a sign that could only fire through it."""
    rest = {"age": 40, "calf_tenderness": "yes", "leg_swelling": "no", "whole_leg_swollen": "no"}
    codes = _codes([{**rest, "sex": "male"}, {**rest, "sex": "male", "pregnant": "no"}, {**rest, "sex": "female"}])
    rule = _at(net, "clot_signs_in_pregnancy")
    assert net.open_rules(codes)[:, rule].tolist() == [False, False, True]  # a woman may still be pregnant
    assert not net.fires(codes)[:, rule].any()
    level = np.zeros(3, dtype=np.int8)
    shown = net.safety_net(level, net.open_rules(codes), codes)
    assert [net.rules[rule].line.text in t.split("|") for t in shown] == [False, False, True]


# the Wells items the schema asks but a swollen calf, each one point; surgery and immobilisation
# share one (bed rest or surgery), so together they are not two
WELLS_ITEMS = ["calf_tenderness", "visible_veins", "whole_leg_swollen", "previous_vte", "active_cancer",
               "recent_surgery", "recent_immobilisation"]


@pytest.mark.parametrize("pair", [(a, b) for i, a in enumerate(WELLS_ITEMS) for b in WELLS_ITEMS[i + 1:]
                                  if {a, b} != {"recent_surgery", "recent_immobilisation"}])
@pytest.mark.parametrize("swelling", ["unknown", "no"])
def test_two_wells_items_go_the_same_day_without_a_swollen_calf(cfg, pair, swelling):
    """Two Wells items are two points, a likely DVT in a painful leg (NICE NG158: a scan within 4
    hours), whether the calf is swollen or not: the same day even where the model is sure of a
    cramp. One item alone, or surgery with immobilisation, stays with the model."""
    case = {**QUIET, **({} if swelling == "unknown" else {"leg_swelling": swelling})}
    first, second = pair
    codes = _codes([{**case, first: "yes"}, {**case, second: "yes"}, {**case, first: "yes", second: "yes"}])
    cramp = np.zeros((3, len(CONDITIONS)))
    cramp[:, CONDITIONS.index("leg_cramp")] = 1.0
    level, reason = triage_levels(cfg, codes, cramp)
    assert [LEVELS[v] == "emergency" for v in level] == [False, False, True]
    assert reason[2] >= FIRST_RULE_REASON


def test_surgery_with_immobilisation_is_one_wells_item(cfg):
    codes = _codes([{**QUIET, "recent_surgery": "yes", "recent_immobilisation": "yes"}])
    cramp = np.zeros((1, len(CONDITIONS)))
    cramp[:, CONDITIONS.index("leg_cramp")] = 1.0
    level, reason = triage_levels(cfg, codes, cramp)
    assert LEVELS[level[0]] == "self_care" and reason[0] < FIRST_RULE_REASON


def test_any_part_of_a_rule_is_required(cfg):
    flag = cfg.red_flags[0]  # possible_dvt: a swollen leg alone is not enough for it
    level, rule = red_flags(cfg, _codes([{**QUIET, **{k: _meeting(v) for k, v in flag.all.items()}}]))
    assert rule[0] != 0


def test_a_ruptured_bakers_cyst_is_escalated_like_a_dvt(cfg, trained):
    models, _ = trained
    case = {"age": 58, "sex": "female", "onset": "sudden", "swelling_behind_knee": "yes", "pressure_behind_knee": "yes",
            "leg_swelling": "yes", "skin_warm": "yes", "knee_swelling": "yes", "inflammatory_arthritis": "yes"}
    out = predict(case, model=models)
    assert out["triage"][0] == "emergency"
    assert "red flag" in out["triage_reason"][0]


def test_equally_costly_levels_go_to_the_more_urgent(cfg):
    cramp, cyst = CONDITIONS.index("leg_cramp"), CONDITIONS.index("bakers_cyst")
    flat = {c: {lv: 1.0 for lv in LEVELS} for c in CONDITIONS}
    two = {**flat, "leg_cramp": {"self_care": 0.0, "see_doctor": 1.0, "see_doctor_soon": 1.0, "emergency": 1.0},
           "bakers_cyst": {"self_care": 1.0, "see_doctor": 0.0, "see_doctor_soon": 1.0, "emergency": 1.0}}
    proba = np.zeros((3, len(CONDITIONS)))
    proba[0, cramp] = proba[1, cyst] = 1.0
    proba[2, [cramp, cyst]] = 0.5  # self care and seeing a doctor cost the same: 0.5
    levels = cost_levels(cfg.model_copy(update={"costs": two}), proba)
    assert [LEVELS[lv] for lv in levels] == ["self_care", "see_doctor", "see_doctor"]
    assert LEVELS[cost_levels(cfg.model_copy(update={"costs": flat}), proba[:1])[0]] == "emergency"


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


def _with_blanked(cases, rate: float, seed: int):
    parsed = parse_cases(cases)
    return [parsed, blank_at_random(parsed, rate, seed)]


def test_conformal_coverage_holds_in_every_band_with_true_probabilities(kb, cfg):
    """With the exact posterior as the model, fitted as training fits it (calib and its copies
    blanked at the configured rates), coverage on fresh cases and a mostly blank copy (blanked
    with another seed) is the target overall and at least 0.85 in every band of confidence and of
    answers known that holds 300 cases or more."""
    calib, test = generate_cases(kb, 15_000, seed=31), generate_cases(kb, 15_000, seed=32)
    fit_parts, test_parts = calibration_copies(parse_cases(calib), cfg), _with_blanked(test, 0.8, 2)

    def stack(parts):
        codes = {k: np.concatenate([p.codes[k] for p in parts]) for k in parts[0].codes}
        return np.concatenate([oracle_posterior(kb, p).to_numpy() for p in parts]), codes

    proba, codes = stack(fit_parts)
    fitted = fit_conformal(proba, np.tile(labels(calib), len(fit_parts)), codes, cfg.conformal)
    proba, codes = stack(test_parts)
    y = np.tile(labels(test), 2)
    sets = prediction_sets(proba, codes, fitted)
    hit = sets[np.arange(len(y)), y]
    assert abs(hit.mean() - cfg.conformal.coverage) < 0.015
    for band in set_cells(proba, codes, fitted):
        for b in np.unique(band):
            if (band == b).sum() >= 300:
                assert hit[band == b].mean() >= 0.85, (b, (band == b).sum(), hit[band == b].mean())
    # no larger than the oracle's own 90% credible sets, case by case on average
    assert sets.sum(axis=1).mean() <= 1.15 * credible_sets(proba, 0.9).sum(axis=1).mean()


def test_credible_sets_are_the_smallest_reaching_the_mass():
    post = np.array([[0.5, 0.3, 0.15, 0.05, 0, 0, 0, 0, 0], [0.95, 0.05, 0, 0, 0, 0, 0, 0, 0]])
    sets = credible_sets(post, 0.9)
    assert sets[0].tolist()[:4] == [True, True, True, False] and sets[1].sum() == 1


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


def test_conformal_threshold_is_the_right_order_statistic(cfg):
    # scores 0.01, 0.02, ..., 1.00 (the true class is never the top one); n=100, coverage 0.9:
    # k = ceil(101 * 0.9) = 91, so the threshold is the 91st smallest score
    n = 100
    proba = np.zeros((n, len(CONDITIONS)))
    proba[:, 0] = 1.0 - np.arange(1, n + 1) / 100
    proba[:, 1] = 1.0 - proba[:, 0]
    y = np.zeros(n, dtype=int)
    one_band = cfg.conformal.model_copy(update={"confidence_edges": [0.01], "known_edges": [0.99], "min_band_cases": 1,
                                                "min_band_coverage": 0.9})
    codes = _codes([{"age": 30, "sex": "male"}] * n)
    fitted = fit_conformal(proba, y, codes, one_band)
    scores = np.where(proba.argmax(axis=1) == y, 0.0, 1.0 - proba[:, 0])
    assert fitted["thresholds"][0][1] == pytest.approx(np.sort(scores)[90])
    assert fit_conformal(proba[:5], y[:5], {k: v[:5] for k, v in codes.items()}, one_band)["thresholds"][0][1] == 1.0


@pytest.fixture(scope="module")
def net(cfg, kb):
    return SafetyNet(cfg, load_config(ScreenConfig, config_path("screen.yaml")), kb)


def _at(net: SafetyNet, name: str) -> int:
    """The index of the rule called ``name`` among ``net``'s."""
    return [r.name for r in net.rules].index(name)


def _dvt_at(p: float, n: int = 1) -> np.ndarray:
    proba = np.zeros((n, len(CONDITIONS)))
    proba[:, DVT], proba[:, CONDITIONS.index("leg_cramp")] = p, 1 - p
    return proba


def test_a_same_day_level_resting_on_unanswered_questions_is_softened_with_a_safety_net(cfg, net):
    """P(DVT) 0.2 with nothing answered: the expected cost says the same day, a plain "no" to the
    DVT questions would not; the case goes at `uncertain.level` and says what would send it now."""
    sparse = _codes([{"age": 70, "sex": "female"}])
    assert LEVELS[cost_levels(cfg, _dvt_at(0.2))[0]] == "emergency"
    level, reason = triage_levels(cfg, sparse, _dvt_at(0.2), net=net)
    assert LEVELS[level[0]] == cfg.uncertain.level and reason[0] == 2
    nets = net.safety_net(level, net.open_rules(sparse), sparse)[0].split("|")
    assert cfg.red_flags[0].safety_net.text in nets  # the swollen, warm, red calf
    # the same probabilities after every safety-net question was answered "no": nothing gives a
    # reason to suspect a clot, which is not the likeliest cause, so the "no"s do not send it sooner
    answered = _codes([{"age": 70, "sex": "female", **{f: "no" for f in net.no_fields}}])
    level, reason = triage_levels(cfg, answered, _dvt_at(0.2), net=net)
    assert LEVELS[level[0]] == cfg.uncertain.level and reason[0] == 2
    # with a reason to suspect one (a clot before, which fires no rule alone), the emergency stands
    history = _codes([{"age": 70, "sex": "female", "previous_vte": "yes", **{f: "no" for f in net.no_fields}}])
    level, reason = triage_levels(cfg, history, _dvt_at(0.2), net=net)
    assert LEVELS[level[0]] == "emergency" and reason[0] == 0
    assert net.safety_net(level, net.open_rules(history), history)[0] == ""


def test_a_no_to_a_sign_of_a_clot_never_sends_a_case_sooner(cfg, net):
    """A 70-year-old runner with five days of pain behind the knee, osteoarthritis the likeliest,
    answers the clot's signs "no" one by one, with the P(DVT) the shipped model gave after each
    (it falls more slowly than the knowledge base's likelihoods would have it): the level never
    rises. Before, the softening held only while a sign it reads was unanswered, so "no" to the
    tender calf (P(DVT) 0.217 -> 0.158) and to warm skin sent the case the same day, where the
    same case with the sign unanswered went within a day or two."""
    case = {"age": 70, "sex": "male", "activity": "running", "onset": "gradual", "injury_event": "none",
            "knee_swelling": "no", "symptom_duration_days": 5}
    signs = ["leg_swelling", "calf_tenderness", "visible_veins", "skin_warm", "skin_red", "whole_leg_swollen",
             "pain_on_standing"]
    p_dvt = [0.217, 0.158, 0.137, 0.110, 0.099, 0.081, 0.066]
    levels = []
    for sign, p in zip(signs, p_dvt):
        case[sign] = "no"
        proba = np.zeros((1, len(CONDITIONS)))
        proba[0, DVT], proba[0, CONDITIONS.index("osteoarthritis")] = p, 1 - p
        codes = _codes([case])
        level, _ = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
        levels.append(LEVELS[level[0]])
    assert all(LEVELS.index(b) <= LEVELS.index(a) for a, b in zip(levels, levels[1:])), levels
    assert "emergency" not in levels, levels  # nothing gives a reason to suspect a clot
    # a reason to suspect one keeps the same day the expected cost gives (a clot before, no rule
    # alone; P(DVT) 0.158, as after the calf's "no")
    codes = _codes([{**case, "previous_vte": "yes"}])
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, DVT], proba[0, CONDITIONS.index("osteoarthritis")] = 0.158, 1 - 0.158
    level, reason = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
    assert LEVELS[level[0]] == "emergency" and reason[0] == 0


def test_a_no_that_closes_a_rule_does_not_send_the_same_day_what_other_unanswered_signs_would_lower(cfg, net):
    """A tender calf, the leg and knee not swollen, a meniscus tear the likeliest: then "no" to
    fever, then to red skin, with the shipped model's probabilities after each (P(DVT) 0.130,
    0.113, 0.097). Before, only the unanswered signs of a same-day rule still open were taken as
    "no": the fever's "no" closed the last such rule, so the case went the same day at 0.113, where
    with fever unanswered it went within a day or two at 0.130. Every unanswered sign of a clot
    counts now, and the level stays within a day or two, by the softening."""
    case = {"age": 34, "sex": "male", "activity": "none", "onset": "sudden", "symptom_duration_days": 12.15,
            "muscle_spasm": "no", "knee_swelling": "no", "leg_swelling": "no", "weakness": "no",
            "calf_tenderness": "yes"}
    steps = [({}, [0.182, 0.239, 0.014, 0.051, 0.246, 0.011, 0.126, 0.130, 0.001]),
             ({"fever": "no"}, [0.177, 0.241, 0.014, 0.065, 0.254, 0.011, 0.125, 0.113, 0.001]),
             ({"skin_red": "no"}, [0.177, 0.223, 0.014, 0.063, 0.264, 0.012, 0.149, 0.097, 0.001])]
    for answer, p in steps:
        case.update(answer)
        codes, proba = _codes([case]), np.array([p]) / sum(p)
        assert LEVELS[cost_levels(cfg, proba)[0]] == "emergency"  # what the softening is for
        level, reason = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
        assert (LEVELS[level[0]], reason[0]) == (cfg.uncertain.level, 2), answer


def test_a_no_to_a_sign_of_a_clot_is_no_description_of_the_pain_that_lets_a_same_day_stand(cfg, net):
    """At 80, with a clot before and nothing else said, the same day rests on the signs not asked
    (P(DVT) 0.445, the shipped model's). A "no" to warm skin (0.381) counted as describing the pain,
    so the same day stood: the "no" sent the case sooner than the sign unanswered. A denial says
    what the pain is not; a "yes" to a sign, or an onset, still describes it."""
    case = {"age": 80, "sex": "female", "previous_vte": "yes"}
    steps = [({}, [0.078, 0.045, 0.0, 0.0, 0.016, 0.0, 0.0, 0.445, 0.416], cfg.uncertain.level),
             ({"skin_warm": "no"}, [0.095, 0.047, 0.0, 0.0, 0.018, 0.0, 0.0, 0.381, 0.46], cfg.uncertain.level),
             ({"onset": "sudden"}, [0.095, 0.047, 0.0, 0.0, 0.018, 0.0, 0.0, 0.381, 0.46], "emergency")]
    for answer, p, expected in steps:
        case.update(answer)
        codes, proba = _codes([case]), np.array([p]) / sum(p)
        level, _ = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
        assert LEVELS[level[0]] == expected, answer


def test_a_same_day_a_no_completes_is_softened_where_the_case_without_its_nos_is(cfg, net):
    """At 80 with a clot before, a "no" to a tender calf took the model's P(DVT) from 0.445 to 0.346,
    less than the knowledge base's likelihood has it, so the other signs' "no"s no longer lowered the
    level: the "no" sent the case the same day, where without it the case went within a day or two.
    Given the model (``rescore``), the case is judged with its "no"s unanswered too. Where no sign
    is left unanswered, the "no"s are all in, and the same day the expected cost gives stands."""
    from pipeline.decision.triage import expected_cost_levels

    before = np.array([[0.078, 0.045, 0.0, 0.0, 0.016, 0.0, 0.0, 0.445, 0.416]])
    after = np.array([[0.078, 0.047, 0.0, 0.0, 0.019, 0.0, 0.0, 0.346, 0.511]])
    case = {"age": 80, "sex": "female", "previous_vte": "yes", "calf_tenderness": "no"}
    seen = []

    def rescore(codes):
        seen.append({k: v.copy() for k, v in codes.items()})
        return np.repeat(before / before.sum(), len(codes["age"]), axis=0)

    codes = _codes([case, {**case, **{n: "no" for n in net.no_fields}}])
    proba = np.repeat(after / after.sum(), 2, axis=0)
    assert [LEVELS[v] for v in expected_cost_levels(cfg, codes, proba, net=net)[0]] == ["emergency"] * 2
    level, reason = expected_cost_levels(cfg, codes, proba, net=net, rescore=rescore)
    assert [LEVELS[v] for v in level] == [cfg.uncertain.level, "emergency"] and reason.tolist() == [2, 0]
    assert len(seen) == 1 and len(seen[0]["age"]) == 1 and seen[0]["calf_tenderness"][0] == UNKNOWN


def test_a_likely_clot_with_a_risk_still_stands_where_no_reason_to_suspect_is_configured(cfg, net):
    """Pain on standing and a sedentary life are no `reasons_to_suspect`, but with the clot at 0.49
    behind a hamstring injury, in a described pain, the same day stands (`_stands`), as the docs
    say: the first version of the softening without a reason overrode it."""
    case = {"age": 55, "sex": "male", "onset": "sudden", "injury_event": "none", "symptom_duration_days": 3,
            "pain_on_standing": "yes", "sedentary": "yes"}
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, DVT], proba[0, CONDITIONS.index("hamstring_injury")] = 0.49, 0.51
    codes = _codes([case])
    level, reason = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
    assert LEVELS[level[0]] == "emergency" and reason[0] == 0


def net_screen() -> ScreenConfig:
    return load_config(ScreenConfig, config_path("screen.yaml"))


POST_OP = {"age": 62, "sex": "male", "recent_surgery": "yes", "onset": "sudden", "cramp_calf_or_thigh": "yes",
           "pain_on_standing": "yes", "symptom_duration_days": 3}


@pytest.mark.parametrize("case, p_dvt, level", [
    (POST_OP, 0.55, "emergency"),  # the clot likeliest, after surgery: the same day stands
    # behind a cramp, as likely as a Wells "DVT likely" patient's clot or more: it stands too (it
    # was softened while a clot at 0.35 ranked first went the same day); less likely, softened
    (POST_OP, 0.37, "emergency"),
    (POST_OP, 0.2, "see_doctor_soon"),
    ({"age": 62, "sex": "male", "recent_surgery": "yes"}, 0.55, "see_doctor_soon"),  # history alone: nothing of the pain
    # no sign or risk a clot's rules read: age, sex, a duration and denials (a "no" to a meniscus sign
    # tipped the likeliest condition), or a cramp
    ({"age": 80, "sex": "female", "symptom_duration_days": 3}, 0.55, "see_doctor_soon"),
    ({"age": 60, "sex": "female", "symptom_duration_days": 7, "locking": "no"}, 0.55, "see_doctor_soon"),
    ({**POST_OP, "recent_surgery": None, "pain_on_standing": None}, 0.55, "see_doctor_soon"),
    # a leg that cannot take four steps, what happened not yet said: a sign a same-day screen rule
    # reads that a clot makes likelier, so the same day stands; a knee that cannot bend makes a
    # clot less likely, so it is no reason to suspect one
    ({"age": 60, "sex": "female", "onset": "gradual", "symptom_duration_days": 2, "unable_to_bear_weight": "yes"},
     0.55, "emergency"),
    ({"age": 60, "sex": "female", "onset": "gradual", "symptom_duration_days": 2, "reduced_range_of_motion": "yes"},
     0.55, "see_doctor_soon"),
    # a risk of a clot no red flag reads (`uncertain.risks`: smoking) counts as their signs and risks do
    ({"age": 50, "sex": "male", "onset": "gradual", "smoker": "yes"}, 0.37, "emergency"),
    ({"age": 50, "sex": "male", "onset": "gradual"}, 0.37, "see_doctor_soon"),
])
def test_a_likely_clot_with_a_reason_to_suspect_it_is_not_softened(cfg, net, case, p_dvt, level):
    """A man of 62 three days after surgery with sudden cramp-like pain on standing, his calf not
    yet asked about: where the clot is at least ``uncertain.stands_at`` likely (the likeliest cause,
    or behind another) and the case gives a reason to suspect it
    (a "yes" to a sign or risk a clot's red flags read, or to a sign of a same-day screen rule
    that a clot makes likelier), the same day stands ("Most likely deep vein
    thrombosis" within a day or two contradicted NICE's assessment within hours) where the pain is
    described; otherwise the same day that rests on the unasked signs is softened, as before (an
    80-year-old who gave a duration alone went the same day, with nothing in the safety net)."""
    codes = _codes([case])
    proba = _dvt_at(p_dvt)  # the rest a cramp
    assert LEVELS[cost_levels(cfg, proba)[0]] == "emergency"
    got, reason = triage_levels(cfg, codes, proba, net=net)
    assert (LEVELS[got[0]], reason[0]) == (level, 0 if level == "emergency" else 2)


def test_a_likely_clot_stands_whether_or_not_it_ranks_first(cfg, net):
    """Whether a same day stands read only which condition ranked first: a clot at 0.37 behind a
    cramp went within a day or two, one at 0.35 ahead of eight conditions the same day (a lump behind
    the knee with a tender calf, a day old against two). At or above ``uncertain.stands_at`` the
    order no longer matters; below it, a clot ranked first still stands (within a day or two it
    would read "Most likely deep vein thrombosis"), and one behind a cramp is softened."""
    assert cfg.uncertain.stands_at == pytest.approx(0.28)

    def ahead(p: float) -> np.ndarray:  # the clot first, the rest shared by the eight others
        row = np.full(len(CONDITIONS), (1 - p) / (len(CONDITIONS) - 1))
        row[DVT] = p
        return row

    rows = {"0.37 behind a cramp": (_dvt_at(0.37)[0], "emergency"), "0.29 behind a cramp": (_dvt_at(0.29)[0], "emergency"),
            "0.35 first": (ahead(0.35), "emergency"), "0.25 first": (ahead(0.25), "emergency"),
            "0.27 behind a cramp": (_dvt_at(0.27)[0], cfg.uncertain.level)}
    proba = np.stack([p for p, _ in rows.values()])
    assert (proba[:, DVT].argmax() >= 0) and (cost_levels(cfg, proba) == LEVELS.index("emergency")).all()
    level = triage_levels(cfg, _codes([POST_OP] * len(rows)), proba, net=net)[0]
    assert dict(zip(rows, (LEVELS[v] for v in level))) == {k: want for k, (_, want) in rows.items()}
    # the same probabilities, unnormalised and in another memory layout, are judged alike
    scaled = np.asfortranarray(proba * 3.7)
    assert (triage_levels(cfg, _codes([POST_OP] * len(rows)), scaled, net=net)[0] == level).all()


def test_the_safety_net_lists_signs_to_watch_for_not_history_to_ask(cfg, net):
    """A man just operated on, his pain softened to within a day or two: "you have had a clot before
    and also ... had surgery ... in the last 12 weeks" read as a same-day sign he already has. The
    rules on history and age alone are asked (``ask_next``), not watched for; the signs are listed."""
    codes = _codes([{"age": 62, "sex": "male", "recent_surgery": "yes"}])
    level = np.array([LEVELS.index("see_doctor_soon")])
    listed = net.safety_net(level, net.open_rules(codes), codes, codes=True)[0].split("|")
    # (his surgery meets the swollen leg's and the tender calf's second Wells item: their lines name
    # the sign alone, and "the calf or leg swells" covers the swollen, tender, warm or red calf's)
    assert {"swollen_leg_with_wells_history:met", "tender_calf_with_wells_item:met", "pulmonary_embolism"} <= set(listed)
    assert not {"clot_before_with_wells_history", "cancer_with_wells_history"} & set(listed)
    # still open, so still what ask_next may ask where an answer would change the level
    assert net.open_rules(codes)[0, [_at(net, "clot_before_with_wells_history")]].all()


def test_a_safety_net_line_leaves_out_a_settled_history_or_age_answered_otherwise_and_one_met(net):
    """The Ottawa line's "or are 55 or older" is not shown at 30, and at 60 the line is the injury
    alone (his age meets it); "after an earlier clot" is not shown to someone who said they never
    had one; a history said "yes" leaves the sign alone ("the calf or leg swells"). A sign said "no"
    stays in its line (it can appear later), and so does a cast or an operation said "no" (one can
    come next week). The codes name each line, and the lookup gives its text."""
    cases = [{"age": 30, "sex": "male", "injury_event": "unknown"},
             {"age": 60, "sex": "male", "injury_event": "unknown"},
             {"age": 45, "sex": "female", "previous_vte": "no", "active_cancer": "no"},
             {"age": 45, "sex": "female", "active_cancer": "yes"},
             {"age": 45, "sex": "female", "visible_veins": "no", "whole_leg_swollen": "no"},
             {"age": 45, "sex": "female"}]
    codes = _codes(cases)
    level = np.zeros(len(cases), dtype=np.int8)
    watch = net.to_watch(codes, *net.fires_and_open(codes))
    shown = [t.split("|") for t in net.safety_net(level, watch, codes)]
    listed = [t.split("|") for t in net.safety_net(level, watch, codes, codes=True)]
    injury = "the pain comes from a fall, a twist or a blow to the knee in the last week"
    assert f"{injury}, and you cannot take four steps on it" in shown[0]
    assert "fracture_ottawa:without_age" in listed[0] and not any("55 or older" in line for line in shown[0])
    assert injury in shown[1] and "fracture_ottawa:met" in listed[1]
    rest = "after an operation, a cast or brace, or bed rest in the last 12 weeks"
    # an operation or a cast can still come: their words stay
    assert f"the calf or leg swells {rest}" in shown[2]
    assert "swollen_leg_with_wells_history:without_previous_vte+active_cancer" in listed[2]
    assert not any("earlier clot" in line or "cancer" in line for line in shown[2])
    assert "the calf or leg swells" in shown[3] and "swollen_leg_with_wells_history:met" in listed[3]
    assert f"the calf or leg swells {rest}, while you have cancer, or after an earlier clot" in shown[5]
    assert "swollen_leg_with_wells_history" in listed[4] and "swollen_leg_with_wells_history" in listed[5]
    # the veins and the whole leg said "no" today are kept
    assert "tender_calf_with_wells_item" in listed[4]
    assert net.rules[_at(net, "tender_calf_with_wells_item")].line.text in shown[4]
    # every code's text is the line shown in its place
    lookup = {code: text for _, code, text in net.lines.all_lines()}
    assert [[lookup[c] for c in row] for row in listed] == shown


def test_a_line_another_shown_line_covers_is_not_shown(net):
    """After surgery, "the calf or leg swells" sends a man the same day: a swollen calf's own "the
    calf or leg swells" within a day or two, and "the calf or leg swells and is tender, warm or red,
    ..." the same day, say nothing more, nor does "the calf hurts when pressed, after an earlier
    clot" beside "the calf hurts when pressed". Without the history each is shown."""
    codes = _codes([{"age": 60, "sex": "male", "recent_surgery": "yes"}, {"age": 60, "sex": "male"}])
    level = np.full(2, LEVELS.index("see_doctor"), dtype=np.int8)
    watch = net.to_watch(codes, *net.fires_and_open(codes))
    listed = [t.split("|") for t in net.safety_net(level, watch, codes, codes=True)]
    shown = [t.split("|") for t in net.safety_net(level, watch, codes)]
    assert shown[0].count("the calf or leg swells") == 1 and shown[0].count("the whole leg swells") == 1
    assert {"swollen_leg_with_wells_history:met", "whole_leg_swollen_with_wells_history:met",
            "tender_calf_with_wells_item:met", "veins_with_wells_item:met"} <= set(listed[0])
    covered = {"swollen_calf_or_leg", "swollen_whole_leg", "possible_dvt", "tender_calf_after_a_clot",
               "veins_after_a_clot"}
    assert not covered & set(listed[0])
    assert {"swollen_leg_with_wells_history", "swollen_calf_or_leg", "possible_dvt", "tender_calf_after_a_clot"} \
        <= set(listed[1])


def test_a_line_whose_sign_would_fire_a_more_urgent_shown_rule_is_left_to_that_rules_line(net):
    """In pregnancy a swollen leg goes the same day (the pregnancy line names it): "the calf or leg
    swells" within a day or two (a swollen calf's rule) told a pregnant woman to wait, and is left
    out, for one case and for many alike. Only settled answers leave a line out: with warm skin a
    swollen leg is also the same day, but the warmth can pass, and the swollen calf's own line
    then still applies; nor does a blank count as an answer."""
    cases = [{"age": 29, "sex": "female", "pregnant": "yes", "onset": "gradual", "symptom_duration_days": 60},
             {"age": 39, "sex": "female", "skin_warm": "yes", "symptom_duration_days": 200},
             {"age": 29, "sex": "female", "onset": "gradual", "symptom_duration_days": 60}]
    codes = _codes(cases)
    level = np.full(len(cases), LEVELS.index("see_doctor"), dtype=np.int8)
    watch = net.to_watch(codes, *net.fires_and_open(codes))
    listed = [t.split("|") for t in net.safety_net(level, watch, codes, codes=True)]
    assert "clot_signs_in_pregnancy" in listed[0] and "swollen_calf_or_leg" not in listed[0]
    assert {"possible_dvt", "swollen_calf_or_leg"} <= set(listed[1])
    assert {"clot_signs_in_pregnancy", "swollen_calf_or_leg"} <= set(listed[2])  # pregnancy unanswered
    # many cases (a pair at a time) as one (every pair at once)
    many = {k: np.repeat(v, 40) for k, v in codes.items()}
    assert list(net.safety_net(np.repeat(level, 40), np.repeat(watch, 40, axis=0), many, codes=True)[::40]) \
        == ["|".join(row) for row in listed]


def test_of_two_lines_that_say_each_other_one_stays(net):
    """Two rules can each fire whenever the other does (a clot before with cancer, and cancer with
    a clot before; an operation's fever and a fever with a hot knee after it): the pairs are taken
    one at a time against the lines still shown, so the earlier rule's line stays. Before, each
    was checked against the lines shown at first, and both went."""
    lines = net.lines
    rules = [r.name for r in net.rules]
    pairs = {(rules[a], rules[b]) for a, b, *_ in lines._covers}
    assert {("clot_before_with_wells_history", "cancer_with_wells_history"),
            ("cancer_with_wells_history", "clot_before_with_wells_history")} <= pairs
    both = [rules.index("clot_before_with_wells_history"), rules.index("cancer_with_wells_history")]
    codes = _codes([{"age": 60, "sex": "male", "previous_vte": "yes", "active_cancer": "yes", "recent_surgery": "yes"}])
    hit, _ = lines.conditions(codes)
    for n in (1, 100):  # every pair at once, and a pair at a time
        keep = np.zeros((n, len(rules)), dtype=bool)
        keep[:, both] = True
        out = lines.uncovered(keep, np.repeat(hit, n, axis=1))
        assert out[:, both].tolist() == [[True, False]] * n


def test_a_swollen_calf_or_leg_is_never_left_to_self_care_or_the_coming_days(trained):
    """"Get an urgent GP appointment if you have DVT symptoms: swelling and pain in the leg" (the
    NHS's DVT page): a swollen calf, or a whole leg swollen, goes within a day or two whatever the
    model makes of it, and the advice names the clot. Before, it did only beside a risk of a clot
    (155 `test` cases with one were told self-care, a cramp's "stretch the muscle" among them).
    Someone whose calf is not swollen, or not asked about yet, is told to go within a day or two if
    it swells (as the NHS tells everyone); a "no" leaves the model's level."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    base = {"age": 30, "sex": "male", "muscle_spasm": "yes", "symptom_duration_days": 0.01}
    cases = [{**base, "leg_swelling": "yes"}, {**base, "whole_leg_swollen": "yes"},
             {**base, "leg_swelling": "no", "whole_leg_swollen": "no"}, base]
    proba = np.zeros((len(cases), len(CONDITIONS)))
    proba[:, CONDITIONS.index("leg_cramp")] = 1.0
    columns = decision_columns(model.decision, model.kb, parse_cases(pd.DataFrame(cases)), proba, codes=True)
    assert list(columns["triage"]) == ["see_doctor_soon", "see_doctor_soon", "self_care", "self_care"]
    assert list(columns["triage_reason"])[:2] == ["red_flag:swollen_calf_or_leg", "red_flag:swollen_whole_leg"]
    assert all("dvt" in a.split(":")[1].split("+") for a in columns["advice"][:2])
    nets = [n.split("|") for n in columns["safety_net"]]
    assert "swollen_calf_or_leg" in nets[3] and "swollen_calf_or_leg" in nets[2]  # named whatever today's answer
    assert not {"swollen_calf_or_leg", "swollen_whole_leg"} & {*nets[0], *nets[1]}


def test_the_safety_net_says_which_answer_to_a_question_would_send_a_leg_that_cannot_walk_the_same_day(cfg, net):
    """An 84-year-old who cannot take four steps on a swollen knee, what happened not yet said:
    every answer but a sprint sends her the same day, and the safety net says which, each line
    with the history it needs (no injury; a fall, a twist or a blow; a deep bend or squat), since
    "you cannot take four steps on the leg" alone read as met by someone who cannot."""
    codes = _codes([{"age": 84, "sex": "female", "knee_swelling": "yes", "unable_to_bear_weight": "yes"}])
    level = np.array([LEVELS.index("see_doctor_soon")])
    listed = net.safety_net(level, net.open_rules(codes), codes, codes=True)[0].split("|")
    # (the Ottawa rule's line without its "cannot take four steps or are 55 or older": she meets both)
    walk = ("fracture_ottawa:met", "fracture_after_a_squat", "unable_to_walk_without_injury")
    assert set(walk) <= set(listed)
    lookup = {code: text for _, code, text in net.lines.all_lines()}
    lines = [lookup[code] for code in walk]
    assert lines[0] == "the pain comes from a fall, a twist or a blow to the knee in the last week"
    assert "squat" in lines[1] and "no injury" in lines[2]
    assert all("four steps" in line for line in lines[1:])


def test_ask_next_lists_the_questions_that_would_change_the_level(cfg, net):
    codes = _codes([{"age": 70, "sex": "female"}, {"age": 70, "sex": "female", **{f: "no" for f in net.candidates
                                                                                  if f != "injury_event"}}])
    proba = _dvt_at(0.005, 2)  # in the coming days; a swollen calf would raise that
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert LEVELS[level[0]] == "see_doctor"
    asked = net.ask_next(proba, codes, level, np.zeros(2, dtype=bool), net.fires(codes))
    first = asked[0].split("|")
    assert 1 <= len(first) <= cfg.ask_next.max_questions
    assert "Is your lower leg or calf swollen?" in first
    assert all("_" not in q for q in first)  # plain questions, never field names
    assert "swollen" not in asked[1]  # answered questions are never asked again


def test_ask_next_asks_how_long_the_pain_has_lasted_where_the_answer_would_change_the_level(cfg, net, kb):
    """A 62-year-old with a sudden spasm who answered every question asked "no" was left within a
    day or two with nothing more to ask: how long it has lasted, which tells a cramp of minutes
    from a week of pain, was never asked. Answered, it is not asked again."""
    case = {"age": 62, "sex": "male", "onset": "sudden", "muscle_spasm": "yes", "cramp_calf_or_thigh": "no",
            "injury_event": "none", "leg_swelling": "no", "calf_tenderness": "no", "skin_warm": "no",
            "knee_swelling": "no", "unable_to_bear_weight": "no", "recent_immobilisation": "no", "skin_red": "no"}
    asked = "How long ago did the pain start: minutes, hours, days, weeks or months?"
    for answered, expected in ((None, True), (0.01, False), (5, False)):
        parsed = parse_cases(pd.DataFrame([case if answered is None else {**case, "symptom_duration_days": answered}]))
        proba = oracle_posterior(kb, parsed).to_numpy()
        codes = parsed.codes
        level, _ = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
        got = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes))[0].split("|")
        assert (asked in got) is expected, (answered, LEVELS[level[0]], got)
        codes_out = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes), codes_out=True)[0]
        assert ("symptom_duration_days" in codes_out.split("|")) is expected


def test_ask_next_asks_the_duration_where_a_rule_that_reads_it_sends_the_case(cfg, net, kb):
    """A clot before with cancer and nothing of the pain described goes the same day by a rule that
    reads pain of up to 90 days: how long it has lasted is the one question that could change it."""
    parsed = parse_cases(pd.DataFrame([{"age": 60, "sex": "male", "previous_vte": "yes", "active_cancer": "yes"}]))
    proba = oracle_posterior(kb, parsed).to_numpy()
    codes = parsed.codes
    level, _ = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=net.fires(codes))
    assert LEVELS[level[0]] == "emergency"
    assert "symptom_duration_days" in net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes),
                                                   codes_out=True)[0].split("|")


def test_ask_next_never_asks_about_an_injury_a_case_says_it_did_not_have(cfg, net):
    """A pop would complete the ligament-tear signs (giving way, a swollen knee): asked after a
    twist, never after "no injury"."""
    signs = {"age": 25, "sex": "male", "giving_way": "yes", "knee_swelling": "yes"}
    codes = _codes([{**signs, "injury_event": "twist_or_direction_change"}, {**signs, "injury_event": "none"}])
    meniscus = np.zeros((2, len(CONDITIONS)))
    meniscus[:, CONDITIONS.index("meniscus_tear")] = 1.0  # a pop is likely, and it would raise the level
    level, _ = triage_levels(cfg, codes, meniscus, net=net)
    asked = net.ask_next(meniscus, codes, level, np.zeros(2, dtype=bool), net.fires(codes), codes_out=True)
    assert "heard_pop" in asked[0].split("|")
    assert not {"heard_pop", "swelling_within_hours"} & set(asked[1].split("|"))


def test_a_swollen_leg_goes_within_a_day_or_two_and_the_pill_that_would_send_it_sooner_is_asked_of_a_woman(cfg, net):
    """A swollen leg with a clot at 0.2 behind a cramp goes within a day or two (the NHS's urgent GP
    appointment), a woman's as a man's; on the pill or HRT the clot would be likely enough for the
    same day to stand (a risk of `uncertain.risks`), so a woman is asked that, among the questions
    that would change the level; a man is not. The rule that read the pill went with the swollen
    leg's new rule, and the question with it, while its "yes" still changed the level."""
    base = {"age": 35, "leg_swelling": "yes", "onset": "gradual", "smoker": "no", "sedentary": "no",
            "pain_on_standing": "no"}
    codes = _codes([{**base, "sex": "female", "pregnant": "no"}, {**base, "sex": "male"}])
    proba = _dvt_at(0.2, 2)
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert [LEVELS[v] for v in level] == ["see_doctor_soon", "see_doctor_soon"]
    change, same_day, _ = net._level_changes(proba, codes, level, np.zeros(2, dtype=bool), net.fires(codes),
                                             net.counts(codes))
    pill = net.candidates.index("hormonal_therapy")
    assert change[0, pill] > 0 and same_day[0, pill] and change[1, pill] == 0


def test_no_rule_stays_open_through_the_pregnancy_of_a_woman_past_the_fertile_ages(net, kb):
    """Past the knowledge base's fertile ages a woman's unanswered pregnancy is read "no", as a
    man's: the pregnancy rule's line ("you are pregnant or gave birth ...") is not shown to a woman of 70,
    nor does it stay open; her "yes" still fires it, and at the last fertile age it stays open."""
    rest = {"sex": "female", "leg_swelling": "yes"}
    cases = [{**rest, "age": kb.fertile_age[1]}, {**rest, "age": kb.fertile_age[1] + 1}, {**rest, "age": 70},
             {**rest, "age": 70, "pregnant": "yes"}]
    codes = _codes(cases)
    rule = _at(net, "clot_signs_in_pregnancy")
    open_ = net.open_rules(codes)
    assert open_[:, rule].tolist() == [True, False, False, False]
    assert net.fires(codes)[:, rule].tolist() == [False, False, False, True]
    fires, opened = net.fires_and_open(codes)  # the counts the decision layer reads agree
    np.testing.assert_array_equal(opened, open_)
    np.testing.assert_array_equal(fires, net.fires(codes))
    shown = net.safety_net(np.zeros(4, dtype=np.int8), open_, codes)
    assert [net.rules[rule].line.text in t.split("|") for t in shown] == [True, False, False, False]
    assert codes["pregnant"].tolist() == [UNKNOWN] * 3 + [1]  # her answers themselves are as given


def test_the_safety_net_keeps_a_clots_signs_for_someone_with_its_history_though_answered_no_today(cfg, net, trained):
    """A pregnant woman, or a man after surgery, whose leg is not swollen today is still told to go
    if it swells: a clot's red flags stay in the safety net for someone who has the history they
    read, whatever the signs' answers now (they can appear later). Without that history, a "no"
    closes them as before, and a rule that fires is no line."""
    from pipeline import predict

    no_signs = {"leg_swelling": "no", "calf_tenderness": "no", "whole_leg_swollen": "no", "visible_veins": "no",
                "skin_warm": "no", "skin_red": "no"}
    cases = [{"age": 30, "sex": "female", "pregnant": "yes", **no_signs},
             {"age": 30, "sex": "female", "pregnant": "no", **no_signs},
             {"age": 60, "sex": "male", "recent_surgery": "yes", **no_signs},
             {"age": 60, "sex": "male", "recent_surgery": "no", "recent_immobilisation": "no", "active_cancer": "no",
              "previous_vte": "no", "smoker": "no", "sedentary": "no", **no_signs},
             {"age": 30, "sex": "female", "pregnant": "yes", "leg_swelling": "yes"}]
    level, watch, open_, codes = _watched(cfg, net, cases, "acl_injury")
    shown = [t.split("|") for t in net.safety_net(level, watch, codes)]
    pregnancy = net.rules[_at(net, "clot_signs_in_pregnancy")].line.text
    # his surgery meets the rule's history: the line names the sign alone ("the calf or leg swells")
    surgery = net.rules[_at(net, "swollen_leg_with_wells_history")].line.met
    assert [pregnancy in s for s in shown] == [True, False, False, False, False]
    assert [surgery in s for s in shown] == [False, False, True, False, False]
    assert [pregnancy in s for s in net.safety_net(level, open_, codes)][0] is False  # a "no" closed it before
    models, _ = trained
    out = predict(cases[:3], model=models)["safety_net"]
    assert [pregnancy in s.split("|") for s in out] == [True, False, False]
    assert surgery in out[2].split("|")


def test_the_safety_net_names_a_rule_that_waits_for_time_before_it_is_met(cfg, net):
    """Unable to take four steps with no injury, 15 minutes in: the screen's rule waits for an hour
    (a cramp passes in minutes), so the case goes at its level, and the safety net says to go if it
    lasts an hour. Before, the rule, not met yet by the duration, was no line, and nothing said when
    to go. A rule past an upper bound of the duration (a clot's history rules, up to 90 days) is not
    watched for: time does not bring it back."""
    walk = {"age": 40, "sex": "female", "injury_event": "none", "unable_to_bear_weight": "yes"}
    clot = {"age": 60, "sex": "male", "previous_vte": "yes", "active_cancer": "yes"}
    cases = [{**walk, "symptom_duration_days": 0.01},
             {**walk, "symptom_duration_days": 0.01, "injury_event": "twist_or_direction_change"},
             {**clot, "symptom_duration_days": 120}, {**clot, "symptom_duration_days": 30}]
    level, watch, _, codes = _watched(cfg, net, cases, "leg_cramp")
    shown = [t.split("|") for t in net.safety_net(level, watch, codes)]
    walking = net.rules[_at(net, "unable_to_walk_without_injury")].line.text
    assert [walking in s for s in shown[:2]] == [True, False]  # an injury explains it
    history = net.rules[_at(net, "clot_before_with_wells_history")].line.text
    assert history not in shown[2] and LEVELS[level[3]] == "emergency"  # past 90 days; within them it fires


def _watched(cfg, net, cases, condition):
    """The cases' levels with ``condition`` certain, the rules their safety net watches for and
    the open rules: the watch holds every open rule and no rule that fires."""
    codes = _codes(cases)
    fires, open_ = net.fires_and_open(codes)
    watch = net.to_watch(codes, fires, open_)
    assert (watch >= open_).all() and not (watch & fires).any()
    proba = np.zeros((len(cases), len(CONDITIONS)))
    proba[:, CONDITIONS.index(condition)] = 1.0
    level, _ = triage_levels(cfg, codes, proba, net=net, screen=net_screen(), rule_fires=fires)
    return level, watch, open_, codes


def test_the_safety_net_names_a_clots_and_an_embolisms_signs_whatever_todays_answers(cfg, net):
    """A cramp whose calf is not swollen or tender today, and who is not breathless, is still told
    to go the same day if the calf swells, is tender, warm or red, or breath or chest trouble comes
    (the `watch_always` rules): before, a "no" today took those lines out of the safety net. A
    rule that fires is no line, and a "yes" elsewhere does not add one at the same day."""
    clot = net.rules[_at(net, "possible_dvt")].line.text
    embolism = net.rules[_at(net, "pulmonary_embolism")].line.text
    lump = net.rules[_at(net, "calf_and_back_of_knee_swelling")].line.text
    cramp = {"age": 45, "sex": "female", "onset": "sudden", "muscle_spasm": "yes", "cramp_calf_or_thigh": "yes",
             "symptom_duration_days": 0.003, "injury_event": "none"}
    cases = [cramp, {**cramp, "leg_swelling": "no", "calf_tenderness": "no", "breathless_or_chest_pain": "no",
                     "swelling_behind_knee": "no"},
             {**cramp, "leg_swelling": "yes", "calf_tenderness": "yes"}]
    level, watch, open_, codes = _watched(cfg, net, cases, "leg_cramp")
    shown = [t.split("|") if t else [] for t in net.safety_net(level, watch, codes)]
    assert [clot in s for s in shown] == [True, True, False]  # the third is sent the same day by it
    assert [embolism in s for s in shown] == [True, True, False]
    assert [lump in s for s in shown] == [True, True, False]
    assert not any(clot in t.split("|") for t in net.safety_net(level, open_, codes)[1:2])  # "no" closed it before


def test_ask_next_asks_a_woman_of_fertile_age_with_a_clot_sign_whether_she_is_pregnant(cfg, net, kb):
    """A swollen leg, or a calf that hurts when pressed, with every other sign and risk "no" and
    most likely an ACL injury: a "yes" to pregnancy would send her the same day (RCOG 37b), and the
    knowledge base's rate of pregnancy puts that "yes" under `min_answer_probability`; it is asked
    first all the same (`ask_next.at_any_chance`), as a screen rule's question is. Not of a woman
    past the fertile ages, a man, one who said "no", nor one with no clot sign."""
    no = ("smoker", "sedentary", "pain_on_standing", "skin_warm", "visible_veins", "skin_red", "whole_leg_swollen",
          "fever", "hormonal_therapy", "previous_vte", "recent_surgery", "recent_immobilisation", "active_cancer")
    base = {"sex": "female", **{f: "no" for f in no}}
    cases = [{**base, "age": 30, "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "age": 30, "leg_swelling": "no", "calf_tenderness": "yes"},
             {**base, "age": kb.fertile_age[1], "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "age": kb.fertile_age[1] + 1, "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "age": 30, "sex": "male", "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "age": 30, "pregnant": "no", "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "age": 30, "leg_swelling": "no", "calf_tenderness": "no"}]
    codes = _codes(cases)
    proba = np.zeros((len(cases), len(CONDITIONS)))
    proba[:, CONDITIONS.index("acl_injury")], proba[:, DVT] = 0.95, 0.05
    assert (proba @ kb.pregnant < cfg.ask_next.min_answer_probability).all()  # under the bar by its chance
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert (level < LEVELS.index("emergency")).all()
    asked = net.ask_next(proba, codes, level, np.zeros(len(cases), dtype=bool), net.fires(codes), codes_out=True)
    assert [a.split("|")[0] == "pregnant" for a in asked] == [True, True, True, False, False, False, False]
    assert not any("pregnant" in a.split("|") for a in asked[3:])
    pregnant = _codes([{**cases[0], "pregnant": "yes"}])
    assert LEVELS[triage_levels(cfg, pregnant, proba[:1], net=net)[0][0]] == "emergency"  # the answer it asks for


def test_the_pregnancy_question_and_rule_cover_the_six_weeks_after_a_birth(cfg, net):
    """RCOG 37b covers the puerperium, when a clot is likeliest (Heit 2005: 511.2 per 100,000
    woman-years after a delivery against 95.8 in pregnancy): a woman two weeks after a birth must
    answer "yes" to the question the pregnancy rule reads (she answered "no" to "Are you
    pregnant?" and was told nothing of a clot), and the rule's reason and line say so."""
    from pipeline.core.schema import field

    assert net.questions[net.candidates.index("pregnant")].endswith("or have you given birth in the last six weeks?")
    assert "gave birth in the last six weeks" in field("pregnant").meaning
    flag = next(f for f in cfg.red_flags if f.name == "clot_signs_in_pregnancy")
    assert "the six weeks after a birth" in flag.reason and "gave birth in the last six weeks" in flag.safety_net.text

def test_at_any_chance_takes_only_questions_and_asks_nothing_without_a_red_flag_that_reads_them(cfg, kb):
    """A question asked at any chance must be a yes/no or category question of the schema (the
    error names it); without a same-day red flag that reads it (a config may drop the red flags)
    it asks nothing more."""
    raw = cfg.model_dump()
    for name, message in (("age", "'age' must be a yes/no or category question"), ("pregnancy", "not a case field")):
        raw["ask_next"]["at_any_chance"] = [name]
        with pytest.raises(ValueError, match=rf"ask_next.at_any_chance: .*{message}"):
            TriageConfig.model_validate(raw)
    raw["ask_next"]["at_any_chance"] = ["pregnant"]
    # pregnancy stays a question (a within-a-day-or-two rule reads it), but no same-day flag does
    soon = next(f for f in raw["red_flags"] if f["name"] == "swollen_calf_or_leg")
    raw["red_flags"] = [{**soon, "any": {"pregnant": ["yes"], "smoker": ["yes"]}}]
    bare = SafetyNet(TriageConfig.model_validate(raw), None, kb)
    assert "pregnant" in bare.candidates and not len(bare._step_pair)
    codes = _codes([{"age": 30, "sex": "female", "leg_swelling": "yes", "calf_tenderness": "yes", "sedentary": "no",
                     "smoker": "no", "hormonal_therapy": "no", "pain_on_standing": "no"}])
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, CONDITIONS.index("acl_injury")] = 1.0
    level, _ = triage_levels(bare.cfg, codes, proba, net=bare)
    assert "pregnant" not in bare.ask_next(proba, codes, level, np.zeros(1, dtype=bool), bare.fires(codes),
                                           codes_out=True)[0].split("|")


def test_the_pill_or_hrt_is_not_asked_in_pregnancy_and_a_swollen_leg_in_pregnancy_goes_the_same_day(cfg, net):
    """A pregnant woman is not asked whether she takes the pill or HRT; with a swollen leg or a calf
    that hurts when pressed she goes the same day whatever else she answers (RCOG: every suspected
    clot in pregnancy tested promptly and treated until ruled out), where outside pregnancy a
    swollen leg with every other sign "no" goes within a day or two, waiting for a second item."""
    no = ("smoker", "sedentary", "pain_on_standing", "skin_warm", "visible_veins", "skin_red", "whole_leg_swollen",
          "fever", "hormonal_therapy")
    base = {"age": 30, "sex": "female", **{f: "no" for f in no}}
    cases = [{**base, "pregnant": "yes", "leg_swelling": "yes", "calf_tenderness": "no"},
             {**base, "pregnant": "yes", "leg_swelling": "no", "calf_tenderness": "yes"},
             {**base, "pregnant": "no", "leg_swelling": "yes", "calf_tenderness": "no"},
             {"age": 30, "sex": "female", "pregnant": "yes"}]
    codes = _codes(cases)
    flags = red_flags(cfg, codes)
    assert [LEVELS[v] if v >= 0 else None for v in flags[0]][:3] == ["emergency", "emergency", "see_doctor_soon"]
    assert premise_denied(codes, ["hormonal_therapy"])[:, 0].tolist() == [True, True, False, True]


def test_warm_or_red_skin_in_pregnancy_goes_the_same_day_and_asks_whether_she_is_pregnant(cfg, net, kb):
    """Warm or red skin at the back of the leg is one of a clot's symptoms the NHS names: in
    pregnancy, or six weeks after a birth, it goes the same day as a swollen or tender calf does
    (RCOG 37b), and a woman of fertile age with it who has not said is asked whether she is
    pregnant. Before, a pregnant woman with a warm, red calf went within a day or two."""
    no = ("smoker", "sedentary", "pain_on_standing", "visible_veins", "whole_leg_swollen", "leg_swelling",
          "calf_tenderness", "fever", "hormonal_therapy", "previous_vte", "recent_surgery", "recent_immobilisation",
          "active_cancer")
    base = {"age": 30, "sex": "female", **{f: "no" for f in no}}
    cases = [{**base, "pregnant": "yes", "skin_warm": "yes", "skin_red": "no"},
             {**base, "pregnant": "yes", "skin_warm": "no", "skin_red": "yes"},
             {**base, "pregnant": "no", "skin_warm": "yes", "skin_red": "yes"},
             {**base, "pregnant": "yes", "skin_warm": "no", "skin_red": "no"},
             {**base, "skin_warm": "yes", "skin_red": "yes"}]
    codes = _codes(cases)
    rule = _at(net, "clot_signs_in_pregnancy")
    assert net.fires(codes)[:, rule].tolist() == [True, True, False, False, False]
    proba = np.zeros((len(cases), len(CONDITIONS)))
    proba[:, CONDITIONS.index("acl_injury")], proba[:, DVT] = 0.95, 0.05
    level, reason = triage_levels(cfg, codes, proba, net=net)
    assert [LEVELS[v] for v in level[:2]] == ["emergency", "emergency"]
    assert (level[2:] < LEVELS.index("emergency")).all()
    asked = net.ask_next(proba, codes, level, np.zeros(len(cases), dtype=bool), net.fires(codes), codes_out=True)
    assert asked[4].split("|")[0] == "pregnant"


def test_ask_next_asks_first_what_would_send_a_swollen_leg_the_same_day(cfg, net):
    """A pop in sport with a swollen knee after an earlier clot, most likely a hamstring injury: the
    questions whose "yes" would send it the same day (a swollen or tender calf, veins standing out:
    signs of a DVT) come before those that would only move it to within a day or two (the knee
    giving way, a torn ligament's sign), however much likelier those are."""
    case = {"age": 41, "sex": "male", "activity": "sprint_pivot_sport", "onset": "sudden",
            "injury_event": "overstretch_or_sprint", "heard_pop": "yes", "knee_swelling": "yes", "previous_vte": "yes"}
    codes = _codes([case])
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, CONDITIONS.index("hamstring_injury")], proba[0, CONDITIONS.index("acl_injury")] = 0.77, 0.23
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert LEVELS[level[0]] == "see_doctor"
    asked = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes), codes_out=True)[0].split("|")
    assert len(asked) == cfg.ask_next.max_questions
    for name in asked:  # each one's "yes" fires a same-day red flag
        fires = red_flags(cfg, _codes([{**case, name: "yes"}]))[0]
        assert LEVELS[fires[0]] == "emergency", name
    change, same_day, _ = net._level_changes(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes),
                                             net.counts(codes))
    likeliest = net.candidates[int(np.argmax(change[0]))]
    assert not same_day[0, net.candidates.index(likeliest)] and likeliest not in asked  # ranked after them


def test_ask_next_asks_about_fever_for_a_hot_swollen_knee_however_unlikely_the_nine_make_it(cfg, net):
    """A hot, red, swollen knee, injury unanswered: a fever would make it a possible septic joint
    (the screen's same-day rule). None of the nine conditions makes a fever likely (under 5% here,
    `min_answer_probability`), but the screen is there for what the nine do not cover, so the
    question is asked, and first, since the nine cannot say how likely it is; without the knee
    signs it is not. So is an operation in the last 12 weeks (the screen's rule for a hot, swollen
    knee after one), and whether the knee is hard to bend (the rule for a recent hot, swollen, stiff
    knee, which an injury left unanswered does not close), beside it: of such questions, the
    likelier "yes" by the knowledge base first."""
    knee = {"age": 35, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes", "skin_red": "yes"}
    codes = _codes([knee, {"age": 35, "sex": "male"}])
    proba = np.zeros((2, len(CONDITIONS)))
    for c, p in (("acl_injury", 0.5), ("meniscus_tear", 0.3), ("osteoarthritis", 0.2)):
        proba[:, CONDITIONS.index(c)] = p
    p_fever = proba[0] @ net.likelihood["fever"][1]
    assert p_fever < cfg.ask_next.min_answer_probability
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert LEVELS[level[0]] != "emergency"
    asked = net.ask_next(proba, codes, level, np.zeros(2, dtype=bool), net.fires(codes), codes_out=True)
    screened = asked[0].split("|")
    assert set(screened) == {"fever", "recent_surgery", "reduced_range_of_motion"}  # ahead of likelier ones
    assert "fever" not in asked[1].split("|")
    p_yes = [float(proba[0] @ net.likelihood[name][1]) for name in screened]
    assert p_yes == sorted(p_yes, reverse=True), (screened, p_yes)
    change, same_day, _ = net._level_changes(proba, codes, level, np.zeros(2, dtype=bool), net.fires(codes),
                                             net.counts(codes))
    fever = net.candidates.index("fever")
    assert ((same_day[0] > 0) & (change[0] > change[0, fever])).any()  # a likelier same-day question it goes before


@pytest.mark.parametrize("case, asked", [
    # sudden pain with weakness or tingling is how an acute limb ischaemia comes on: is the foot cold?
    ({"age": 74, "sex": "male", "onset": "sudden", "tingling": "yes", "weakness": "yes"}, "foot_cold_or_pale"),
    ({"age": 74, "sex": "male", "onset": "sudden", "weakness": "yes"}, "foot_cold_or_pale"),
    ({"age": 74, "sex": "male", "onset": "gradual", "weakness": "yes"}, None),
    ({"age": 74, "sex": "male", "onset": "sudden"}, None),
    # a lump behind the knee at 50 or older: does it pulse (a popliteal aneurysm)?
    ({"age": 73, "sex": "male", "swelling_behind_knee": "yes", "onset": "gradual"}, "pulsating_lump"),
    ({"age": 73, "sex": "female", "swelling_behind_knee": "yes", "onset": "gradual"}, "pulsating_lump"),
    ({"age": 35, "sex": "male", "swelling_behind_knee": "yes", "onset": "gradual"}, None),
])
def test_ask_next_asks_first_about_a_same_day_screen_sign_the_case_suggests(cfg, net, case, asked):
    """A screen rule's `suggested_by` signs make its one sign worth asking however unlikely the
    nine conditions make it (a cramp or a Baker's cyst here), and first (no injury: the Ottawa
    rule's question, which would come first at 55, is not open), after only the other question
    that completes a same-day rule here: whether the leg takes four steps, which with no injury
    and a duration not given would send it the same day; without them it is not asked (the
    safety net still names it)."""
    codes = _codes([{**case, "injury_event": "none"}])
    proba = np.zeros((1, len(CONDITIONS)))
    proba[0, CONDITIONS.index("leg_cramp" if "weakness" in case or "tingling" in case else "bakers_cyst")] = 0.98
    proba[0, CONDITIONS.index("meniscus_tear")] = 0.02
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert LEVELS[level[0]] != "emergency"
    questions = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes), codes_out=True)[0]
    screen_signs = [q for q in questions.split("|") if q in ("foot_cold_or_pale", "pulsating_lump")]
    assert screen_signs == ([asked] if asked else [])
    if asked:
        listed = questions.split("|")
        assert set(listed[:listed.index(asked)]) <= {"unable_to_bear_weight"}


def test_a_screen_rules_suggesting_signs_are_checked_and_only_for_a_same_day_rule():
    from pydantic import ValidationError

    data = load_config(ScreenConfig, config_path("screen.yaml")).model_dump()
    by_name = {r["name"]: r for r in data["rules"]}
    by_name["limb_ischaemia"]["suggested_by"] = {"any": {"tingle": ["yes"]}, "source": "assumption: a test rule"}
    with pytest.raises(ValidationError, match="any.tingle: not a case field"):
        ScreenConfig.model_validate(data)
    by_name["limb_ischaemia"]["suggested_by"] = {"source": "assumption: a test rule"}
    with pytest.raises(ValidationError, match="give the signs in `all`, `any` or both"):
        ScreenConfig.model_validate(data)
    by_name["limb_ischaemia"]["suggested_by"] = {"all": {"onset": []}, "source": "assumption: a test rule"}  # would never match
    with pytest.raises(ValidationError, match="all.onset: give at least one answer that matches"):
        ScreenConfig.model_validate(data)
    by_name["limb_ischaemia"]["suggested_by"] = None
    by_name["hot_swollen_knee"]["suggested_by"] = {"all": {"fever": ["no"]}, "source": "assumption: a test rule"}
    with pytest.raises(ValidationError, match="only a same-day rule's signs .* 'hot_swollen_knee' is at 'see_doctor_soon'"):
        ScreenConfig.model_validate(data)


def test_ask_next_asks_what_a_same_day_rule_waits_on_when_no_one_answer_changes_the_level(cfg, net):
    """Age and sex alone at P(DVT) 0.03: no single answer changes the level (every DVT rule needs
    two answers: a swollen or tender calf, veins, a whole leg swollen or a Wells item of the
    history, and a second), yet the questions those rules wait on are listed, the swollen calf
    among them; once every one of them is answered "no", none is waited on."""
    codes = _codes([{"age": 40, "sex": "female"}])
    proba = np.full((1, len(CONDITIONS)), 0.97 / (len(CONDITIONS) - 1))
    proba[0, CONDITIONS.index("dvt")] = 0.03
    level, _ = triage_levels(cfg, codes, proba, net=net)
    assert LEVELS[level[0]] != "emergency"
    change, _, needs = net._level_changes(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes),
                                          net.counts(codes))
    leg = net.candidates.index("leg_swelling")
    assert change[0, leg] == 0 and needs[0, leg] > 0
    asked = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes), codes_out=True)[0].split("|")
    assert "leg_swelling" in asked and len(asked) == cfg.ask_next.max_questions
    denied = _codes([{"age": 40, "sex": "female", **{f: "no" for r in net.rules if r.level == LEVELS.index("emergency")
                                                     for f in r.fields if f in net.candidates and f != "injury_event"},
                      "injury_event": "twist_or_direction_change"}])
    level, _ = triage_levels(cfg, denied, proba, net=net)
    assert not net.open_rules(denied)[0][[r.level == LEVELS.index("emergency") for r in net.rules]].any()
    _, _, needs = net._level_changes(proba, denied, level, np.zeros(1, dtype=bool), net.fires(denied),
                                     net.counts(denied))
    assert not needs.any()


def _ask_next_by_definition(cfg, net, screen, proba, codes, atypical, fertile_max, kb):
    """ask_next as its docstring defines it: every plausible (question, answer) variant of every
    case triaged in full by triage_levels, one variant at a time (an answer that makes a same-day
    screen rule fire which the case meets in part is plausible however unlikely, and so is one of a
    question asked at any chance that makes a same-day red flag fire so); then, below the same day,
    the answers that match an `all` field of an open same-day rule which did not match unanswered
    (of a red flag's, not the screen's)."""
    level, _ = triage_levels(cfg, codes, proba, atypical, screen, None, net)
    same_day_rules = [r for r in net.rules if r.level == LEVELS.index("emergency")]
    screen_rules = [r for r in same_day_rules if net.rules.index(r) >= len(cfg.red_flags)]
    out = []
    for i in range(len(proba)):
        change, same_day = np.zeros(len(net.candidates)), np.zeros(len(net.candidates), dtype=int)
        needs = np.zeros(len(net.candidates))
        case = {k: v[i:i + 1] for k, v in codes.items()}
        waiting = [r for r in same_day_rules if r.open(case)[0] and r not in screen_rules
                   ] if level[i] < LEVELS.index("emergency") else []
        for j, name in enumerate(net.candidates):
            if not unanswered(name, case)[0] or premise_denied(case, [name], fertile_max)[0, 0]:
                continue
            completing = screen_rules + (same_day_rules if name in cfg.ask_next.at_any_chance else [])
            for a, likelihood in enumerate(net.likelihood[name]):
                p_answer = float(dot_exact(proba[i:i + 1], likelihood[None, :])[0, 0])  # as ask_next sums
                variant = {**case, name: np.array([a], dtype=case[name].dtype)}
                completes = any(r.fires(variant)[0] and _meets_in_part(r, case) for r in completing)
                if p_answer < cfg.ask_next.min_answer_probability and not completes:
                    continue
                after, _ = triage_levels(cfg, variant, proba[i:i + 1] * likelihood, atypical[i:i + 1], screen, None,
                                         net)
                change[j] += p_answer * (after[0] != level[i])
                if after[0] != level[i] and after[0] == LEVELS.index("emergency"):
                    same_day[j] = max(same_day[j], 2 if completes else 1)
                needs[j] += p_answer * any(name in r.all and not answer_matches(name, r.all[name], UNKNOWN)
                                           and answer_matches(name, r.all[name], a) for r in waiting)
        if cfg.ask_next.duration_edges:  # how long it has lasted, last: each span of the edges an answer
            moved, urgent = _duration_by_definition(cfg, net, screen, kb, proba[i], case, atypical[i], level[i])
            change, same_day, needs = np.r_[change, moved], np.r_[same_day, urgent], np.r_[needs, 0.0]
        change, needs = np.round(change, 9), np.round(needs, 9)  # equal chances rank in the questions' order
        rank = [4 + 3 * (same_day[j] > 0) + (same_day[j] > 1) + change[j] if change[j] > 0 else needs[j]
                for j in range(len(change))]
        ranked = sorted((j for j in range(len(change)) if rank[j] > 0), key=lambda j: -rank[j])
        listed = ranked[:cfg.ask_next.max_questions]
        if len(listed) > 1 and needs.max() > 0 and not any(needs[j] > 0 or same_day[j] > 1 for j in listed):  # the last place
            listed[-1] = int(np.argmax(needs))  # to the likeliest answer a red flag needs
        out.append("|".join(net.asked_questions[j] for j in listed))
    return level, out


def _duration_by_definition(cfg, net, screen, kb, proba, case, atypical, level):
    """The duration question of one case as ask_next defines it: where the duration is unanswered,
    each span between `ask_next.duration_edges` is an answer with P(span | condition) from the
    knowledge base's durations truncated at the person's age, plausible at
    `min_answer_probability`; the case with the span's middle as its duration and its
    probabilities re-weighted is triaged in full. Returns (chance of a change, 1 if to the same day)."""
    from pipeline.core.knowledge import duration_mass_below
    from pipeline.core.schema import max_duration_days
    from pipeline.decision.safety import pain_described

    reads_it = [r for r in net.rules if "symptom_duration_days" in r.fields]
    if not np.isnan(case["symptom_duration_days"][0]) or not (
            pain_described(case)[0] or any(r.fires(case)[0] for r in reads_it)):
        return 0.0, 0
    edges = cfg.ask_next.duration_edges
    values = [edges[0] / 4, *np.sqrt(np.multiply(edges[:-1], edges[1:])), edges[-1] * 2]
    longest = max_duration_days(case["age"][0])
    with np.errstate(divide="ignore"):
        below = [duration_mass_below(kb.duration, kb.duration_episode, min(bound, longest))
                 for bound in [0.0, *edges, np.inf]]
    moved, urgent = 0.0, 0
    for span, value in enumerate(values):
        likelihood = (below[span + 1] - below[span]) / below[-1]
        p_answer = 0.0
        for c in range(len(likelihood)):  # in the conditions' order, as ask_next sums
            p_answer += proba[c] * likelihood[c]
        if p_answer < cfg.ask_next.min_answer_probability:
            continue
        variant = {**case, "symptom_duration_days": np.array([value])}
        after, _ = triage_levels(cfg, variant, (proba * likelihood)[None, :], np.array([atypical]), screen, None, net)
        if after[0] != level:
            moved += p_answer
            urgent = max(urgent, int(after[0] == LEVELS.index("emergency")))
    return moved, urgent


def _meets_in_part(rule, case):
    """Whether one field of ``rule`` matches, as its counts match them (the `all` fields that are
    not unmatched, the `any` fields that match), or the case shows the signs that suggest it."""
    counts = rule_counts(rule.all, rule.any, case)[:, 0]
    suggested = rule.suggested_by is not None and rule_fires(*rule.suggested_by, case)[0]
    return len(rule.all) - counts[0] + counts[1] > 0 or suggested


@pytest.mark.parametrize("block_rows", [97, 9])  # variants of a block: several hundred, or a few dozen (taken at once)
def test_ask_next_matches_its_definition_on_generated_and_blanked_cases(cfg, net, kb, block_rows):
    """The batched ask_next (only the rules that ask the changed answer re-counted) gives what
    triaging each variant in full gives, on cases with many and with few answers."""
    _assert_ask_next_as_defined(cfg, net, load_config(ScreenConfig, config_path("screen.yaml")), kb, seed=11,
                                blank=0.7, atypical_every=7, block_rows=block_rows)


def _assert_ask_next_as_defined(cfg, net, screen, kb, *, seed, blank, atypical_every, block_rows):
    """ask_next against :func:`_ask_next_by_definition` on generated cases, whole and blanked."""
    parsed = parse_cases(generate_cases(kb, 150, seed=seed))
    for cases in (parsed, blank_at_random(parsed, blank, seed=seed + 1)):
        proba = oracle_posterior(kb, cases).to_numpy()
        atypical = np.arange(len(proba)) % atypical_every == 0
        level, expected = _ask_next_by_definition(cfg, net, screen, proba, cases.codes, atypical, kb.fertile_age[1], kb)
        got = net.ask_next(proba, cases.codes, level, atypical, net.fires(cases.codes), block_rows=block_rows)
        assert list(got) == expected
        assert any(expected)  # the comparison covers cases with questions to ask
        if cases is not parsed:  # and, blanked, cases asked how long the pain has lasted
            assert any(net.asked_questions[-1] in e.split("|") for e in expected)


def _assert_counts_by_table_as_by_rule(net, kb):
    """The counts a ``predict()`` of a few cases looks up (:class:`CountTable`) are each rule's
    :func:`rule_counts`: on generated cases, whole and blanked, and on edge rows (an age or a
    duration at a rule's bound or unknown, a male, whose unanswered pregnancy and hormonal therapy
    count as "no")."""
    parsed = parse_cases(generate_cases(kb, 400, seed=21))
    blanked = blank_at_random(parsed, 0.6, seed=22)
    edges = {**{k: v[:6].copy() for k, v in blanked.codes.items()}}
    edges["age"][:] = [55, 54, np.nan, 12, 100, 55]
    edges["symptom_duration_days"][:] = [7, 7.5, np.nan, 0.001, 6.999, np.nan]
    edges["sex"][:] = [0, 1, 0, 1, 0, 1]
    edges["pregnant"][:] = UNKNOWN
    edges["hormonal_therapy"][:] = [UNKNOWN, UNKNOWN, 1, 1, 0, UNKNOWN]
    for codes in (parsed.codes, blanked.codes, edges):
        by_rule = np.stack([rule_counts(r.all, r.any, codes) for r in net.rules], axis=-1)
        for few in (1, 10**9):  # rule by rule, then looked up
            got = CountTable([(r.all, r.any) for r in net.rules], few=few).counts(codes)
            assert got.dtype == np.int8 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, by_rule)
        assert (by_rule != 0).any()


def test_counts_by_table_are_each_rules_counts(net, kb):
    _assert_counts_by_table_as_by_rule(net, kb)


def test_ask_next_matches_its_definition_under_rules_that_match_unknown_and_share_fields(cfg, kb):
    """Rules the shipped screen does not have: a yes/no or category answer of "unknown", a field in
    both ``all`` and ``any``, a rule without ``any``, a number in both that unknown does not match,
    an answer that steps towards two same-day rules, signs that suggest a rule (one of them a number,
    another "unknown"). Answering such a field changes each count in either direction; ask_next
    still gives what triaging each variant in full gives."""
    def rule(name, level, all_, any_=None, suggested_by=None):
        return {"name": name, "rule_out": name, "level": level, "all": all_, "any": any_ or {}, "reason": "a test rule",
                "safety_net": f"signs of {name}", "source": "assumption: a test rule",
                "suggested_by": suggested_by and {**suggested_by, "source": "assumption: a test rule"}}

    screen = ScreenConfig.model_validate({"rules": [
        rule("red_knee", "emergency", {"knee_swelling": ["yes"], "skin_red": ["yes", "unknown"]},
             {"skin_red": ["yes"], "calf_tenderness": ["yes", "unknown"]}),
        rule("unknown_fall", "see_doctor_soon", {"injury_event": ["fall_onto_knee", "unknown"]}),
        rule("no_pop", "emergency", {"heard_pop": ["no"]}, {"giving_way": ["unknown"], "fever": ["yes"]},
             {"any": {"locking": ["yes"], "age": [">=50"]}}),
        rule("old_short", "see_doctor_soon", {"age": [">=60"], "symptom_duration_days": ["<=3"]},
             {"age": [">=80"], "fever": ["yes"]}),
        rule("hot_calf", "emergency", {"skin_warm": ["yes"]}, {"fever": ["yes"], "calf_tenderness": ["yes"]},
             {"all": {"onset": ["sudden"], "injury_event": ["none", "unknown"]}}),
    ]})
    net = SafetyNet(cfg, screen, kb)
    # more cases a block than FEW_CASES (a rule, a step at a time), several hundred variants, or a few dozen
    for block_rows in (97, 61, 7):
        _assert_ask_next_as_defined(cfg, net, screen, kb, seed=12, blank=0.6, atypical_every=5, block_rows=block_rows)
    _assert_counts_by_table_as_by_rule(net, kb)
    codes = parse_cases(generate_cases(kb, 5, seed=1)).codes
    with pytest.raises(ValueError, match="counts has shape"):  # another batch's counts
        net.ask_next(_dvt_at(0.2, 5), codes, np.zeros(5, dtype=np.int8), np.zeros(5, dtype=bool), net.fires(codes),
                     counts=net.counts(codes)[:, :3])


def test_answering_ask_next_sends_a_hidden_dvt_the_same_day_and_moves_nothing_already_known(trained):
    """ask_next_follow_up, as the evaluation reports it: a swollen leg after a sprint that is a DVT
    (its calf tender, warm, red, its veins standing out) reaches the same day once the questions
    listed are answered truly; cases whose answers are all known already stay where they were."""
    from pipeline.core.parsing import parse_records
    from pipeline.report.decision_metrics import ask_next_follow_up
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    pop = {"age": 41, "sex": "male", "activity": "sprint_pivot_sport", "onset": "sudden",
           "injury_event": "overstretch_or_sprint", "heard_pop": "yes", "leg_swelling": "yes"}
    signs = {f: "yes" for f in ("calf_tenderness", "skin_warm", "skin_red", "visible_veins", "whole_leg_swollen",
                                "swelling_behind_knee")}
    blanked, full = parse_records([pop, {"age": 70, "sex": "female"}]), parse_records([{**pop, **signs},
                                                                                      {"age": 70, "sex": "female"}])
    y = np.array([CONDITIONS.index("dvt"), CONDITIONS.index("osteoarthritis")])
    assert LEVELS.index(predict([pop], model=model)["triage"].iloc[0]) < LEVELS.index("emergency")
    f = ask_next_follow_up(model, blanked, full, y)
    assert (f["dvt_below"], f["dvt_same_day_after"]) == (1, 1.0)
    assert (f["non_dvt_below"], f["non_dvt_same_day_after"]) == (1, 0.0)  # nothing hidden, so nothing changes
    assert 0 < f["questions_per_case"] <= model.decision.config.ask_next.max_questions


def test_age_and_sex_alone_never_send_anyone_to_emergency(trained, kb):
    from pipeline.core.wording import question
    from pipeline.decision.safety import rules_of
    from pipeline.serve.predict import get_model

    models, _ = trained
    cases = [{"age": a, "sex": s} for a in range(12, 101) for s in ("female", "male")]
    out = predict(cases, model=models)
    assert (out["triage"] != "emergency").all(), out.loc[out["triage"] == "emergency", ["triage_reason", "p_dvt"]].to_string()
    assert (out["safety_net"] != "").all()  # each is told what would send them the same day
    calf = out["ask_next"].str.contains("Is your lower leg or calf swollen?", regex=False)  # and what to answer: the
    tender = out["ask_next"].str.contains("Does your calf hurt when you press along the back of it?", regex=False)
    child = out.index[[c["age"] <= 15 for c in cases]]
    # each is asked something an open same-day rule needs, for which ask_next keeps a place: the
    # calf, veins or a whole leg swollen (the DVT rules, with a second sign), what happened (the
    # Ottawa knee rule); most adults, about the calf
    decision = get_model(models).decision
    candidates = decision.safety(kb).candidates
    needed = {question(n) for r in rules_of(decision.config, decision.screen) if LEVELS[r.level] == "emergency"
              for n in r.all if n in candidates}
    asks_needed = out["ask_next"].str.split("|").map(lambda qs: bool(needed & set(qs)))
    assert asks_needed.drop(child).all() and (calf | tender).drop(child).mean() > 0.5
    # at 15 or younger, first whether the child can walk (an unstable slip of the hip goes the same day)
    assert out.loc[child, "ask_next"].str.startswith("Are you unable to take four steps on that leg?").all()


def _state_by_definition(rule, case, fertile_max):
    """(fires, open) of one rule for one case (a dict of scalars), field by field in plain Python;
    a man is not pregnant, nor on the pill or HRT unless he says so (the parser leaves his "no"
    unknown), and a woman past ``fertile_max`` is not pregnant unless she says so."""
    if case["sex"] == 1:  # male
        case = {**case, "pregnant": 0, "hormonal_therapy": 1 if case["hormonal_therapy"] == 1 else 0}
    if case["age"] > fertile_max and case["pregnant"] == UNKNOWN:
        case = {**case, "pregnant": 0}

    def matches(name, answers):
        return bool(rule_fires({name: answers}, {}, {k: np.array([v]) for k, v in case.items()})[0])

    def unknown(name):
        return bool(unanswered(name, {name: np.array([case[name]])})[0])

    fires = all(matches(n, a) for n, a in rule.all.items()) and (
        not rule.any or any(matches(n, a) for n, a in rule.any.items()))
    could = all(matches(n, a) or unknown(n) for n, a in rule.all.items()) and (
        not rule.any or any(matches(n, a) or unknown(n) for n, a in rule.any.items()))
    return fires, could and not fires


def test_rules_fire_and_stay_open_as_defined_on_generated_and_blanked_cases(net, kb):
    """fires_and_open (each field matched once for both, as counts) agrees with matching each field
    of each rule on its own, case by case, with many answers and with few."""
    parsed = parse_cases(generate_cases(kb, 120, seed=5))
    for cases in (parsed, blank_at_random(parsed, 0.6, seed=2)):
        fires, open_ = net.fires_and_open(cases.codes)
        assert np.array_equal(fires, net.fires(cases.codes))  # rule_fires, matched on its own
        for i in range(len(parsed)):
            case = {k: v[i] for k, v in cases.codes.items()}
            assert [(bool(fires[i, k]), bool(open_[i, k])) for k in range(len(net.rules))] == \
                [_state_by_definition(rule, case, kb.fertile_age[1]) for rule in net.rules]
        assert open_.any() and fires.any()  # both sides of the comparison are exercised


def test_unanswered_matrix_is_each_fields_unanswered_in_the_order_asked(kb):
    from pipeline.core.parsing import unanswered_matrix
    from pipeline.core.schema import FIELD_NAMES

    cases = blank_at_random(parse_cases(generate_cases(kb, 200, seed=8)), 0.5, seed=4)
    names = tuple(reversed(FIELD_NAMES))  # numbers and coded fields interleaved, not in schema order
    got = unanswered_matrix(cases.codes, names)
    assert got.shape == (200, len(names))
    for k, name in enumerate(names):
        assert np.array_equal(got[:, k], unanswered(name, cases.codes)), name
    assert got.any() and not got.all()
    assert unanswered_matrix(cases.codes, ()).shape == (200, 0)


def test_a_decision_layer_without_rules_still_triages_and_asks(cfg, kb):
    """No red flags and no screen (a config may drop them): nothing fires or stays open, and the
    softened emergency and ask_next still run."""
    bare = SafetyNet(cfg.model_copy(update={"red_flags": []}), None, kb)
    codes = _codes([{"age": 70, "sex": "female"}, QUIET])
    fires, open_ = bare.fires_and_open(codes)
    assert fires.shape == open_.shape == (2, 0)
    level, _ = triage_levels(bare.cfg, codes, _dvt_at(0.2, 2), net=bare)
    asked = bare.ask_next(_dvt_at(0.2, 2), codes, level, np.zeros(2, dtype=bool), fires)
    assert len(asked) == 2


def test_chosen_decision_columns_are_those_of_the_whole_layer_and_cost_only_what_they_rest_on(trained, kb,
                                                                                              monkeypatch):
    """`kneepain score --columns case_id,prediction,p_dvt,triage` makes only the triage: the same
    values, bit for bit, as with every column, without searching for the questions to ask next."""
    from pipeline.decision import layer
    from pipeline.decision.layer import DECISION_COLUMNS
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    cases = generate_cases(kb, 600, seed=11).drop(columns=["condition", "severity"])
    cases.loc[:20, list(SYMPTOMS)] = True  # answers no profile fits: atypical
    parsed = blank_at_random(parse_cases(cases), 0.5, seed=3)
    proba = model.predict_proba(parsed)
    full = decision_columns(model.decision, model.kb, parsed, proba)
    assert list(full) == DECISION_COLUMNS and full["atypical"].any()
    for chosen in [[c] for c in DECISION_COLUMNS] + [["screen", "triage"], ["differential_size", "advice"], []]:
        got = decision_columns(model.decision, model.kb, parsed, proba, columns=chosen)
        assert list(got) == [c for c in DECISION_COLUMNS if c in chosen]
        for c in got:
            assert np.array_equal(np.asarray(got[c]), np.asarray(full[c])), c

    def not_needed(*args, **kwargs):
        raise AssertionError("computed for a column nobody asked for")

    monkeypatch.setattr(SafetyNet, "ask_next", not_needed)
    monkeypatch.setattr(layer, "prediction_sets", not_needed)
    assert (decision_columns(model.decision, model.kb, parsed, proba, columns=["triage"])["triage"]
            == full["triage"]).all()
    monkeypatch.setattr(layer, "flag_atypical", not_needed)
    assert (decision_columns(model.decision, model.kb, parsed, proba, columns=["screen"])["screen"]
            == full["screen"]).all()


def test_a_screen_rule_that_needs_a_sign_of_other_conditions_changes_no_level_on_history(cfg, kb):
    """A same day is softened when it rests on unanswered signs, read as "no". A knee that cannot
    bend (which the hot swollen knee's same-day screen rule needs) is a sign of the knee injuries
    and osteoarthritis, not of a clot: read as "no", it would make a clot likelier (a 72-year-old
    with cancer went the same day). Nor does that rule, open, have a swollen knee read "no" where
    no rule looking for a clot asks it (with no fever, no injury: a 70-year-old with a clot before
    went within a day or two). So the rule changes no level of a case that said nothing of the
    knee; the clot's own signs are read so."""
    from pipeline.decision.safety import points_to_same_day

    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    without = screen.model_copy(update={"rules": [r for r in screen.rules if r.name != "recent_hot_swollen_knee"]})
    assert len(without.rules) == len(screen.rules) - 1
    history = [{}, {"smoker": "yes"}, {"long_travel": "yes"}, {"active_cancer": "yes"}, {"recent_surgery": "yes"},
               {"sedentary": "yes"}, {"bmi": 34}, {"previous_vte": "yes"}]
    said = [{}, {"fever": "no"}, {"fever": "no", "injury_event": "none"}]
    cases = parse_cases(pd.DataFrame([{"age": a, "sex": s, **h, **more} for a in range(16, 101, 3)
                                      for s in ("female", "male") for h in history for more in said]))
    proba = oracle_posterior(kb, cases).to_numpy()
    atypical = np.zeros(len(proba), dtype=bool)
    levels = [triage_levels(cfg, cases.codes, proba, atypical, s, None, SafetyNet(cfg, s, kb))[0] for s in (screen, without)]
    assert (levels[0] == LEVELS.index("emergency")).any() and (levels[0] < LEVELS.index("emergency")).any()
    np.testing.assert_array_equal(levels[0], levels[1])
    assert not points_to_same_day(cfg, kb, "reduced_range_of_motion")
    assert all(points_to_same_day(cfg, kb, n) for n in ("leg_swelling", "calf_tenderness", "skin_warm", "whole_leg_swollen"))
    assert "reduced_range_of_motion" not in SafetyNet(cfg, screen, kb).no_fields


@pytest.mark.parametrize("days, first", [(3, "reduced_range_of_motion"), (30, None)])
def test_ask_next_asks_first_whether_a_recently_hot_swollen_knee_bends(cfg, net, days, first):
    """A hot, swollen knee without an injury or a fever for three days: whether it bends decides
    between within a day or two and the same day (a septic joint, by the hot swollen joint
    guideline), so it is asked first; after a month the answer changes nothing and is not."""
    case = {"age": 66, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes", "injury_event": "none",
            "fever": "no", "symptom_duration_days": days}
    codes = _codes([case])
    proba = np.zeros((1, len(CONDITIONS)))
    for c, p in (("osteoarthritis", 0.6), ("meniscus_tear", 0.3), ("bakers_cyst", 0.1)):
        proba[0, CONDITIONS.index(c)] = p
    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    level, _ = triage_levels(cfg, codes, proba, screen=screen, net=net)
    assert LEVELS[level[0]] == "see_doctor_soon"
    asked = net.ask_next(proba, codes, level, np.zeros(1, dtype=bool), net.fires(codes), codes_out=True)[0].split("|")
    assert (asked[0] == first) if first else ("reduced_range_of_motion" not in asked)
    bends_not = _codes([{**case, "reduced_range_of_motion": "yes"}])
    after = LEVELS[triage_levels(cfg, bends_not, proba, screen=screen, net=net)[0][0]]
    assert after == ("emergency" if first else "see_doctor_soon")


def test_advice_leads_with_the_condition_the_level_is_for_where_the_likeliest_does_not_call_for_it(cfg):
    """Sent the same day for a clot less likely than osteoarthritis, a person reads first that the
    clot is not ruled out and not to massage the leg, then osteoarthritis's exercise and hot packs
    for once the clot is ruled out; where the likeliest condition calls for the level, its advice
    alone."""
    from pipeline.decision.triage import advice_table

    table = advice_table(cfg)
    oa, dvt = CONDITIONS.index("osteoarthritis"), CONDITIONS.index("dvt")
    text = table[LEVELS.index("emergency"), oa, 1 + dvt]
    assert text.startswith(cfg.level_text["emergency"] + " Deep vein thrombosis, which this level is for, is less "
                           "likely than osteoarthritis but not ruled out: " + cfg.advice["dvt"])
    # osteoarthritis's exercise and hot packs are for once the clot is ruled out, not before
    assert text.index(cfg.advice["dvt"]) < text.index("Most likely osteoarthritis; once deep vein thrombosis is ruled "
                                                      "out: " + cfg.advice["osteoarthritis"])
    assert text.endswith(cfg.closing)
    alone = table[LEVELS.index("emergency"), dvt, 0]
    assert alone == f"{cfg.level_text['emergency']} Most likely deep vein thrombosis: {cfg.advice['dvt']} {cfg.closing}"


def test_no_written_advice_gives_the_likeliest_conditions_care_before_the_other_is_ruled_out(cfg):
    """In every advice a case can get that names a less likely condition that calls for the same
    day (a clot beside a cramp: "Do not massage the leg"), the likeliest's care (the cramp's
    "stretch the muscle gently") is given only for once that condition is ruled out, in the plain
    advice and in the advice that rules out a screen rule's condition too; beside a condition that
    does not (an ACL injury beside a hamstring injury), its care stands as it is (RICE, now)."""
    from pipeline.decision.triage import advice_table, advice_written, screen_line_advice

    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    lower_texts, _, lower_written = screen_line_advice(cfg, screen)
    tables = [(advice_table(cfg), advice_written(cfg)), *zip(lower_texts, lower_written)]
    checked = set()
    for table, written in tables:
        for lv, c, d in zip(*np.nonzero(written[:, :, 1:])):
            likely, other = CONDITIONS[c], CONDITIONS[d]
            text = table[lv, c, 1 + d]
            once = cfg.right_level[other] == "emergency"
            care = (f"Most likely {CONDITION_LABELS[likely]}; once {CONDITION_LABELS[other]} is ruled out: " if once
                    else f"Most likely {CONDITION_LABELS[likely]}: ")
            assert text.count(cfg.advice[likely]) == 1 and text.index(care) + len(care) == text.index(cfg.advice[likely])
            assert text.index(cfg.advice[other]) < text.index(care) and ("ruled out: " + cfg.advice[likely] in text) == once
            checked.add((LEVELS[lv], likely, other))
    assert {("emergency", "leg_cramp", "dvt"), ("see_doctor_soon", "leg_cramp", "dvt"),
            ("see_doctor_soon", "hamstring_injury", "acl_injury")} <= checked


def test_a_yes_to_a_knee_that_cannot_bend_never_lowers_a_hot_swollen_knees_level(cfg, kb, net):
    """A hot, swollen knee without an injury: "it cannot bend" is the guideline's sign of a septic
    joint, yet it makes a clot less likely; answered "yes", the level must not drop below what it
    was unanswered or "no", whether or not the person said how long (ask_next cannot ask a number)."""
    screen = load_config(ScreenConfig, config_path("screen.yaml"))
    base = [{"age": a, "sex": s, "knee_swelling": "yes", "injury_event": "none", "fever": "no", "onset": o, **skin, **days}
            for a in (30, 50, 62, 80) for s in ("female", "male") for o in ("sudden", "gradual")
            for skin in ({"skin_warm": "yes"}, {"skin_red": "yes"}, {"skin_warm": "yes", "skin_red": "yes"})
            for days in ({}, {"symptom_duration_days": 3}, {"symptom_duration_days": 10})]
    levels = []
    for answer in ("", "no", "yes"):
        cases = parse_cases(pd.DataFrame([{**c, "reduced_range_of_motion": answer} for c in base]))
        proba = oracle_posterior(kb, cases).to_numpy()
        levels.append(triage_levels(cfg, cases.codes, proba, np.zeros(len(base), dtype=bool), screen, None, net)[0])
    unanswered, no, yes = levels
    assert (yes == LEVELS.index("emergency")).all() and (yes >= no).all()
    assert (unanswered < LEVELS.index("emergency")).any()  # the question decides something


@pytest.mark.parametrize("rule, signs", [("veins_after_a_clot", {"visible_veins": "yes", "previous_vte": "yes"}),
                                         ("tender_calf_after_a_clot", {"calf_tenderness": "yes", "previous_vte": "yes"})])
@pytest.mark.parametrize("days, fires", [(None, True), (3, True), (90, True), (400, False), (1500, False)])
def test_a_post_thrombotic_leg_with_months_of_pain_is_not_sent_the_same_day_by_its_lasting_signs(cfg, rule, signs, days,
                                                                                                 fires):
    """Veins that stand out, or a tender calf, after an earlier clot are two Wells points, sent the
    same day for recent pain; but they are also the lasting signs of a post-thrombotic leg, and a
    66-year-old with four years of grinding, stiff knee pain went to the emergency department each
    time. A swollen leg (possible_dvt), or the sign with a recent risk, still sends the case
    whatever the time."""
    case = {"age": 66, "sex": "female", "grinding": "yes", "stiffness": "yes", "onset": "gradual",
            "symptom_duration_days": days, **signs}
    names = [f.name for f in cfg.red_flags]
    fired = {names[k] for k in np.flatnonzero(per_rule_fires(cfg, case))}
    assert fired == ({rule} if fires else set())
    assert "possible_dvt" in {names[k] for k in np.flatnonzero(per_rule_fires(cfg, {**case, "leg_swelling": "yes"}))}
    # with a recent risk the signs send the case whatever the time: the duration asked is the knee
    # pain's (years of osteoarthritis, then knee surgery and a tender calf)
    operated = {**case, "previous_vte": None, "recent_surgery": "yes"}
    assert rule.replace("after_a_clot", "with_wells_item") in {names[k] for k in np.flatnonzero(per_rule_fires(cfg, operated))}


def per_rule_fires(cfg, case) -> np.ndarray:
    """Which red flags fire on ``case``."""
    codes = _codes([case])
    return np.array([rule_fires(f.all, f.any, codes)[0] for f in cfg.red_flags])


@pytest.mark.parametrize("days, fires", [(None, True), (30, True), (90, True), (91, False), (400, False)])
def test_a_clot_on_history_alone_is_for_pain_of_at_most_three_months(cfg, days, fires):
    """A clot before with cancer is two Wells points, sent the same day on history alone; but not
    for a year of pain with grinding and stiffness (a clot's pain is recent, and Wells takes two
    points off where another diagnosis is as likely)."""
    case = {"age": 68, "sex": "male", "grinding": "yes", "stiffness": "yes", "onset": "gradual",
            "previous_vte": "yes", "active_cancer": "yes", "symptom_duration_days": days}
    _, rule = red_flags(cfg, _codes([case]))
    names = [f.name for f in cfg.red_flags]
    assert (rule[0] == names.index("clot_before_with_wells_history")) == fires
    data = cfg.model_dump()
    data["red_flags"][names.index("clot_before_with_wells_history")]["all"]["symptom_duration_days"] = ["<90"]
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match=r"red_flags\[\d+\]\.all\.symptom_duration_days: '<90' must be"):
        TriageConfig.model_validate(data)


def test_the_clot_a_swollen_calf_is_sent_for_is_named_beside_a_likely_condition_that_calls_for_the_level(trained):
    """A pop and a knee giving way after a twist, with a swollen calf: an ACL injury, which calls for
    within a day or two itself, is the most likely; the reason shown is the swollen calf's rule ("it
    can be a clot"), so the clot is in the differential and the advice names it before the ACL
    injury's care (it was in neither)."""
    from pipeline.serve.predict import get_model

    model = get_model(trained[0])
    acl = CONDITIONS.index("acl_injury")
    pop = {"age": 30, "sex": "male", "heard_pop": "yes", "giving_way": "yes", "injury_event": "twist_or_direction_change"}
    parsed = parse_cases(pd.DataFrame([{**pop, "leg_swelling": "yes"}, {**pop, "leg_swelling": "no"}]))
    proba = np.zeros((2, len(CONDITIONS)))
    proba[:, acl], proba[:, DVT] = 0.999, 0.001
    columns = decision_columns(model.decision, model.kb, parsed, proba, codes=True)
    assert list(columns["triage"]) == ["see_doctor_soon"] * 2
    assert columns["triage_reason"][0] == "red_flag:swollen_calf_or_leg"
    assert columns["advice"][0] == "see_doctor_soon:acl_injury+dvt" and columns["advice"][1] == "see_doctor_soon:acl_injury"
    assert set(columns["differential"][0].split("|")) == {"acl_injury", "dvt"}


def test_an_atypical_reason_shows_its_score_and_threshold_in_decimals_that_tell_them_apart(trained, monkeypatch):
    """A score just over its threshold read "surprise per answer 1.02 > 1.02" (both at two decimals)."""
    import pipeline.decision.layer as layer
    from pipeline.core.cases import as_parsed
    from pipeline.serve.loading import load_model

    model = load_model(trained[0])
    parsed = as_parsed([{"age": 40, "sex": "male"}, {"age": 50, "sex": "female"}])
    monkeypatch.setattr(layer, "flag_atypical", lambda kb, parsed, cfg: (
        np.array([True, True]), np.array([1.02149, 1.5]), np.array([1.01951, 1.2])))
    got = decision_columns(model.decision, model.kb, parsed, model.predict_proba(parsed), columns=["atypical_reason"])
    assert [r.split("surprise per answer ")[1] for r in got["atypical_reason"]] == ["1.021 > 1.020", "1.50 > 1.20"]
