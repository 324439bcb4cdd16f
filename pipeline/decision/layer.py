"""The decision layer: triage, differential set and atypical flag for every scored case.

:func:`fit_decision` runs in `kneepain train` on ``calib`` (a split the model never trained or
calibrated on) and returns a JSON-able dict stored in the model's manifest with the triage
configuration, so scoring and serving are self-contained. :func:`decide` adds the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pipeline.core.config import LEVELS, ScreenConfig, TriageConfig, error_lines
from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.parsing import ParsedCases
from pipeline.core.schema import CONDITIONS, FIELDS
from pipeline.core.textcols import lookup, text_array
from pipeline.core.wording import two_numbers
from pipeline.decision.atypical import fit_atypical, flag_atypical
from pipeline.decision.conformal import blank_at_random, fit_conformal, format_sets, prediction_sets
from pipeline.decision.costs import cost_levels, costs_by_level
from pipeline.decision.safety import SafetyNet, pain_described
from pipeline.decision.screen import named_rules, screen_names
from pipeline.decision.triage import (
    COST_REASON,
    FIRST_RULE_REASON,
    SOFTENED_REASON,
    advice_codes,
    advice_index,
    advice_table,
    advice_written,
    expected_cost_levels,
    leading_screen_rule,
    lower_screen_rules,
    named_advice_index,
    raise_to_rules,
    reason_codes,
    reason_table,
    right_levels,
    screen_advice,
    screen_advice_codes,
    screen_advice_written,
    screen_line_advice,
    second_rule_advice,
    second_screen_rule,
    undescribed_pain_advice,
    undescribed_pain_advice_codes,
    undescribed_pain_advice_written,
)

__all__ = ["DECISION_COLUMNS", "DECISION_COLUMN_DOCS", "DECISION_COLUMN_TYPES", "TEXT_CODE_COLUMNS",
           "Decision", "decide", "decision_columns", "driving_condition", "fit_decision", "fit_decision_on",
           "with_driving_condition"]

DECISION_COLUMN_DOCS = {
    "triage": "`emergency`, `see_doctor_soon`, `see_doctor` or `self_care`: the expected-cost level, raised by red flags",
    "triage_reason": "why: the red flag or screen rule that fired, the atypical flag, the expected-cost decision, or "
                     "that the same day rests on questions not answered yet or on no sign or risk of a clot; for an "
                     "expected-cost level below the "
                     "same day where nothing of the pain itself is known (age, sex, history and the screen's signs "
                     "at most), that this is too little to tell its cause",
    "safety_net": "the signs that would raise the level, in plain words, `|`-separated, the most urgent first: the red "
                  "flags and screen rules with a sign to watch for that unanswered questions could still fire, or a pain "
                  "that lasts longer (being unable to take four steps for an hour or more, 15 minutes in), and a clot's "
                  "same-day red flags for someone who has the history they read (pregnant or just given birth, after "
                  "surgery or immobilisation, with cancer or an earlier clot), and for everyone a swollen, tender, "
                  "warm or red calf and breathlessness or chest pain (`watch_always`), even where their signs are "
                  "answered no today, since they can appear later (if one is present, seek care as its rule says: "
                  "the same day for most, within a day or two for a swollen calf or leg or a pop with a knee "
                  "that swells and gives way; the rules on history and age alone are asked by `ask_next`, not listed); "
                  "each line fitted to what the case has said (\"or are 55 or older\" is not shown at 30, an earlier "
                  "clot or cancer said no is left out, after surgery the line is the sign alone; a sign said no, or a "
                  "cast or an operation, which can still come, stays named), and a line left out where, given a "
                  "history, an age or a pregnancy the case has said, its sign would fire another line's rule at "
                  "that line's level or above (in pregnancy, a swollen calf is the pregnancy line's same day, not "
                  "a day or two); empty when none could",
    "ask_next": "the unanswered questions whose plausible answers would change the level, `|`-separated (at most "
                "three): first those with an answer that would send the case the same day (a swollen leg after a "
                "sprain is asked whether the skin is warm before whether the knee swelled within hours), those that "
                "would complete a same-day screen rule the case meets in part or shows the signs of first (fever "
                "with a hot, swollen knee; a cold, pale foot with sudden pain and weakness or tingling; a lump that "
                "pulses, for a lump behind the knee at 50 or older: asked however unlikely the nine conditions make "
                "it, since the screen is for what they do not cover; and pregnancy, for a woman of fertile age with "
                "a swollen leg or a calf that hurts when pressed, whatever the rate of pregnancy), "
                "then the others, each group the most likely to change the level first (how long ago the pain "
                "started among them once something of the pain is described, its answers spans of minutes to "
                "months); in the places left, below "
                "the same day, the questions a same-day red flag the case leaves open needs answered (whether the "
                "leg is swollen, the calf tender, veins stand out or the whole leg is swollen, which the DVT rules "
                "need with a second sign, so that no one answer sends the case the same day), the likeliest answer "
                "first, and "
                "the last place when the others fill every place without one or one that completes a screen rule; "
                "empty when no answer would change the level and no same-day red flag needs one. "
                "An answer's effect is the "
                "knowledge base's likelihood applied to the model's probabilities, not the model run again, so a "
                "listed answer may leave the model's own level unchanged; no question whose premise the case "
                "denies (what happened at an injury, when it reports none; the pill or HRT, to a man or in "
                "pregnancy; pregnancy, to a man or past the knowledge base's fertile ages)",
    "advice": "what to do: the level's instruction; first, where the most likely condition does not call for that "
              "level (for a same day softened because it rests on unanswered questions: does not call for the same "
              "day), the less likely condition an expected-cost level or a red flag is for (of an expected-cost "
              "level, the red flag's condition where one at that level is shown as the reason, else at an urgent level "
              "the condition whose expected cost the level lowers most against the level below unless the most likely "
              "that calls for the level holds it without that one, at a visit in the "
              "coming days the most likely that calls for it or a sooner one), with its advice (a DVT "
              "that cannot be ruled out, most often); then advice for the most likely condition (beside a "
              "condition that calls for the same day, for once that one is ruled out: a cramp's stretching is "
              "not for a leg that may hold a clot); where a screen "
              "rule fires below a level set by something else, what it rules out too and why (a hot, swollen knee "
              "in a likely clot); where a screen rule sets the level, what to rule out first and why instead of a "
              "condition's advice, and a second rule the screen names beside it (any more are in `screen` only); "
              "where nothing "
              "of the pain itself is known (age, sex, history and the screen's signs at most) and the level, below "
              "the same day, rests on the expected cost, that this is too little to tell its cause and the "
              "condition the level is for, instead of a condition's advice; and always the advice to seek "
              "professional advice",
    "differential": "the conditions that remain possible, most likely first, `|`-separated: a conformal prediction "
                    "set fitted to hold the true condition for 90% of the calibration cases by default, and for at "
                    "least 87% within each band of confidence and of answers known (new cases land within sampling "
                    "error of that); where the level rests on the expected cost (a rule at that level may be the "
                    "reason shown) and no condition in the set calls for it, the condition that drives it is added "
                    "(as the advice names it; DVT, most often), as is a red flag's own condition where the flag raised the level",
    "differential_size": "how many conditions the differential holds",
    "screen": "what must be ruled out that is none of the nine (pulmonary embolism, acute limb ischaemia, popliteal "
              "aneurysm, a septic joint or cellulitis, a fracture by the Ottawa knee rule, a slipped upper femoral "
              "epiphysis at 15 or younger, a serious cause of a leg that cannot take four steps with no injury, an "
              "infection after an operation), `|`-separated; a rule "
              "that another one firing already covers is not named again (a hot, swollen knee's \"a septic joint\" "
              "beside a fever's \"a septic joint or cellulitis\"); empty if none",
    "atypical": "true when the answers fit none of the documented profiles well (the case is still scored)",
    "atypical_reason": "why the case was flagged (empty when it was not)",
}
DECISION_COLUMNS = list(DECISION_COLUMN_DOCS)
# the long text columns that can be written as short codes (:meth:`Decision.text_codes`)
TEXT_CODE_COLUMNS = ("triage_reason", "advice", "safety_net", "ask_next")
# the Arrow type of each column in file outputs (a column without one fails loudly there)
DECISION_COLUMN_TYPES = {"triage": "string", "triage_reason": "string", "safety_net": "string", "ask_next": "string",
                         "advice": "string", "differential": "string",
                         "differential_size": "int64", "screen": "string", "atypical": "bool", "atypical_reason": "string"}


class Decision:
    """Fitted decision layer: the triage config, conformal thresholds and atypical threshold."""

    def __init__(self, spec: dict):
        from pipeline.core.errors import ModelIntegrityError

        needed = {"triage": ("uncertain", "ask_next"), "screen": ("rules",),
                  "conformal": ("thresholds", "known_edges", "confidence_edges"), "atypical": ("thresholds_by_n_known",)}
        missing = [f"{k}.{sub}" if sub else k for k, subs in needed.items() for sub in (subs or ("",))
                   if not isinstance(spec, dict) or not isinstance(spec.get(k), dict) or (sub and sub not in spec[k])]
        if missing:
            raise ModelIntegrityError(f"the model's decision layer lacks {', '.join(missing)}: it was trained by "
                                      "another version of kneepain; retrain it with `kneepain train`.")
        self.spec = spec
        section = "triage"
        try:
            self.config = TriageConfig.model_validate(spec["triage"])
            section = "screen"
            self.screen = ScreenConfig.model_validate(spec["screen"])
        except ValidationError as err:  # each problem on one line, named by its place in the manifest
            lines = error_lines(err, TriageConfig if section == "triage" else ScreenConfig)
            where = "; ".join(f"{section}.{line}" for line in lines[:5])
            raise ModelIntegrityError(f"the model's decision layer is not valid ({where}); retrain it with "
                                      "`kneepain train`.") from None
        if (problem := _shape_problem(spec)) is not None:
            raise ModelIntegrityError(f"the model's decision layer is not valid: {problem}; retrain it with "
                                      "`kneepain train`.")
        self.conformal = spec["conformal"]
        self.atypical = spec["atypical"]
        self._reasons = reason_table(self.config, self.screen)
        self._reason_codes = np.array(reason_codes(self.config, self.screen), dtype=object)
        self._undescribed_pain_reason = len(self._reasons) - 1
        # every cell of advice_table, then every cell of screen_advice, then of undescribed_pain_advice
        parts = [(advice_table(self.config), advice_codes(), advice_written(self.config)),
                 (screen_advice(self.config, self.screen), screen_advice_codes(self.screen),
                  screen_advice_written(self.config, self.screen)),
                 (undescribed_pain_advice(self.config), undescribed_pain_advice_codes(),
                  undescribed_pain_advice_written(self.config)),
                 screen_line_advice(self.config, self.screen), second_rule_advice(self.config, self.screen)]
        self._advice, self._advice_codes, self._advice_written = (np.concatenate([p[i].ravel() for p in parts])
                                                                  for i in range(3))
        # where each part starts; screen_line_advice holds one advice_table per lower rule, and
        # second_rule_advice one screen_advice per second rule
        sizes = [p[0].size for p in parts]
        (self._screen_advice_start, self._undescribed_pain_advice_start, self._screen_line_advice_start,
         self._second_rule_advice_start) = np.cumsum(sizes[:4]).tolist()
        self._advice_table_size, self._screen_advice_size = sizes[0], sizes[1]
        # per screen rule, its place among lower_screen_rules (-1: a same-day rule, never below a level)
        lower = lower_screen_rules(self.screen)
        self._lower_place = np.full(len(self.screen.rules), -1, dtype=np.int64)
        self._lower_place[lower] = np.arange(len(lower))
        self._net: tuple[KnowledgeBase, SafetyNet] | None = None

    def safety(self, kb: KnowledgeBase) -> SafetyNet:
        """The safety net for this decision layer and knowledge base (built once, again only for
        another base object)."""
        if self._net is None or self._net[0] is not kb:
            self._net = (kb, SafetyNet(self.config, self.screen, kb))
        return self._net[1]

    def text_codes(self, kb: KnowledgeBase) -> dict[str, dict[str, str]]:
        """Per long text column, its short codes and their texts: ``triage_reason`` and ``advice`` by
        value, ``safety_net`` and ``ask_next`` by each ``|``-separated part (a rule's line or a field's
        name). A code has one text; a text can have two codes (two rules' lines alike)."""
        net = self.safety(kb)
        written = self._advice_written  # the advice a case can get
        pairs = [zip(self._reason_codes, self._reasons),
                 zip(self._advice_codes[written], self._advice[written]),
                 ((code, text) for _, code, text in net.lines.all_lines()), zip(net.asked, net.asked_questions)]
        return {column: dict(pair) for column, pair in zip(TEXT_CODE_COLUMNS, pairs)}


def _shape_problem(spec: dict) -> str | None:
    """What is wrong with the fitted thresholds' shapes (a grid per band of answers known and of
    confidence, one atypical threshold per number of answered fields), or None."""
    conformal, atypical = spec["conformal"], spec["atypical"]
    try:
        known = np.asarray(conformal["known_edges"], dtype=float)
        confidence = np.asarray(conformal["confidence_edges"], dtype=float)
        grid = np.asarray(conformal["thresholds"], dtype=float)
        by_known = np.asarray(atypical["thresholds_by_n_known"], dtype=float)
    except (TypeError, ValueError):
        return "its thresholds and band edges must be numbers"
    if not all(np.isfinite(a).all() for a in (known, confidence, grid, by_known)):  # fitted ones always are
        return "its thresholds and band edges must be finite numbers, not NaN or infinite"
    if known.ndim != 1 or confidence.ndim != 1 or grid.shape != (len(known) + 1, len(confidence) + 1):
        return (f"conformal.thresholds has shape {grid.shape}, not {(known.size + 1, confidence.size + 1)} for its "
                f"{known.size} answers-known and {confidence.size} confidence edges")
    if by_known.shape != (len(FIELDS) + 1,):
        return f"atypical.thresholds_by_n_known has shape {by_known.shape}, not ({len(FIELDS) + 1},): one per number of answers"
    return None


def calibration_copies(parsed: ParsedCases, config: TriageConfig) -> list[ParsedCases]:
    """``calib`` and its copies with answers blanked at the configured rates (the conformal fit's cases)."""
    rates = config.conformal.blank_rates
    return [parsed, *(blank_at_random(parsed, r, config.conformal.blank_seed + i) for i, r in enumerate(rates))]


def fit_decision(probas: list[np.ndarray], y_calib: np.ndarray, copies: list[ParsedCases], kb: KnowledgeBase,
                 config: TriageConfig, screen: ScreenConfig) -> dict:
    """Fit the conformal thresholds on ``calib`` and its blanked copies (``copies`` and their
    probabilities ``probas``, from :func:`calibration_copies`) and the atypical threshold on
    ``calib`` (the first copy); keep the configs."""
    codes = {k: np.concatenate([c.codes[k] for c in copies]) for k in copies[0].codes}
    return {
        "triage": config.model_dump(mode="json"),
        "screen": screen.model_dump(mode="json"),
        "conformal": fit_conformal(np.concatenate(probas), np.tile(y_calib, len(copies)), codes, config.conformal),
        "atypical": fit_atypical(kb, copies[0], config.atypical.quantile),
    }


def fit_decision_on(model, kb: KnowledgeBase, calib: pd.DataFrame, config: TriageConfig, screen: ScreenConfig) -> dict:
    """:func:`fit_decision` for a fitted estimator on the labelled ``calib`` split."""
    from pipeline.core.parsing import parse_cases
    from pipeline.data.datasets import labels
    from pipeline.model.arrays import array_scorer, predict_proba

    copies = calibration_copies(parse_cases(calib), config)
    scorer = array_scorer(model)
    # the scoring path's probabilities (pipeline.model.arrays), so thresholds and scores agree to the bit
    probas = [predict_proba(model, c, scorer) for c in copies]
    return fit_decision(probas, labels(calib), copies, kb, config, screen)


_EMERGENCY = LEVELS.index("emergency")
_URGENT = LEVELS.index("see_doctor_soon")  # from here up a level is urgent: within a day or two, the same day


def driving_condition(proba: np.ndarray, level: np.ndarray, reason: np.ndarray, cfg: TriageConfig,
                      fires: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per case, the level its condition must call for and the condition an expected-cost level is for.

    An expected-cost level (``reason`` :data:`COST_REASON`, or :data:`SOFTENED_REASON`: a same day
    softened because it rests on unanswered questions; the reason the level rests on, where a rule
    at that same level is the one shown) can stand above the right level
    (``cfg.right_level``) of the most likely condition: a 7% chance of DVT makes the same day the
    cheapest for a case that is most likely a Baker's cyst. The level it needs is the case's level
    (the same day, for a softened one); the condition is the most likely one where its right level
    reaches it, else, at an urgent level (within a day or two, the same day), the one among those
    whose right level reaches it whose expected cost the level lowers most against the level below
    it (its probability times the cost it saves): a 1% chance of DVT, not a 3% chance of an ACL
    injury, keeps a cramp-like case within a day or two (the clot saves 170 units there, the
    ligament 3), where the ligament, the more probable, was named; but the most probable of them
    still, where it holds the level without that one (the expected cost with its probability
    alone taken out still reaching the level: an ACL injury of 35% beside a clot of 1% keeps its
    own advice, which naming the clot had replaced). A visit in the coming days is
    for the most probable one that calls for it or a sooner one: there a clot of 0.4% would save the most, but it
    is no reason to see a doctor in days rather than today, and its line is in the safety net
    (-1 where the level is not an expected-cost one, or no condition reaches it). A level
    raised by a red flag with a ``condition`` is for that condition, however unlikely the model
    finds it (a swollen, tender calf after surgery is a DVT to rule out the same day); so is one
    where such a flag fires at the level another rule shown gave (``fires``: which red flags fire,
    (n, n_red_flags); the first in the config's order names it; without it, only the flag the
    reason names is known to fire). Such a flag's condition is also the one an expected-cost level
    is for where the likely one does not call for it and the flag's condition calls for more than
    the level: a swollen calf shown as the reason ("it can be a clot") beside advice that named an
    ACL injury only, and a cramp's stretching not held until the clot is ruled out. (A flag whose
    condition calls for the level itself, a torn ligament's, does not displace the clot that saves
    the most; :func:`with_driving_condition` adds its condition to the differential.)"""
    right = right_levels(cfg)
    needed = np.where(reason == SOFTENED_REASON, _EMERGENCY, level.astype(np.int64))
    reaches = right[None, :] >= needed[:, None]
    costs = costs_by_level(cfg)  # (n_levels, n_conditions)
    saved = np.where((needed >= _URGENT)[:, None], costs[np.maximum(needed - 1, 0)] - costs[needed], 1.0)
    weight = np.where(reaches, proba * np.maximum(saved, 0.0), -1.0)  # (a config's costs may not fall to a
    probable = np.where(reaches, proba, -1.0).argmax(axis=1)  # condition's right level: no saving is negative)
    driver = np.where(weight.max(axis=1) > 0, weight.argmax(axis=1), probable)
    likely = proba.argmax(axis=1)
    own = reaches[np.arange(len(likely)), likely]
    by_cost = ((reason == COST_REASON) | (reason == SOFTENED_REASON)) & reaches.any(axis=1)
    # (only where the result is kept: not where the likely one calls for the level, nor off the cost)
    other = np.flatnonzero((driver != probable) & ~own & by_cost)
    if len(other):  # the most probable stands where the level holds without the one that saves the most
        without = proba[other].copy()
        without[np.arange(len(other)), driver[other]] = 0.0
        holds = cost_levels(cfg, without) >= needed[other]
        driver[other[holds]] = probable[other[holds]]
    if fires is None:
        fires = reason[:, None] == FIRST_RULE_REASON + np.arange(len(cfg.red_flags))[None, :]
    flagged = np.full(len(level), -1, dtype=np.int64)
    for i in reversed(range(len(cfg.red_flags))):  # the first in the config's order to fire at the final level
        flag = cfg.red_flags[i]
        if flag.condition is not None:
            flagged[fires[:, i] & (level == LEVELS.index(flag.level))] = CONDITIONS.index(flag.condition)
    flag_above = (flagged >= 0) & (right[np.maximum(flagged, 0)] > needed)
    driver = np.where(own, likely, np.where(flag_above, flagged, driver))
    driver[~by_cost] = -1
    return needed, np.where(driver < 0, flagged, driver)


def shown_flag_condition(reason: np.ndarray, cfg: TriageConfig) -> np.ndarray:
    """Per case, the condition of the red flag its shown ``reason`` is (-1: none, or a reason that
    is no red flag's)."""
    table = np.array([CONDITIONS.index(f.condition) if f.condition else -1 for f in cfg.red_flags] + [-1],
                     dtype=np.int64)
    k = reason.astype(np.int64) - FIRST_RULE_REASON
    return table[np.where((k >= 0) & (k < len(cfg.red_flags)), k, -1)]


def named_condition(likely: np.ndarray, needed: np.ndarray, driver: np.ndarray, flagged: np.ndarray,
                    right: np.ndarray) -> np.ndarray:
    """Per case, the condition its advice names beside the most likely one (``likely``; -1: none):
    the condition its level is for (``driver``, from :func:`driving_condition`) where the likely
    one does not call for the level (``needed``); else the condition of the red flag shown as its
    reason (``flagged``, :func:`shown_flag_condition`) where that calls for more than the likely
    one: "a swollen calf ... can be a clot" was the reason shown beside an ACL injury's advice
    alone, the clot in neither the advice nor the differential (``right``: each condition's level)."""
    named = np.where(right[likely] < needed, driver, -1)
    beside = (named < 0) & (flagged >= 0) & (right[np.maximum(flagged, 0)] > right[likely])
    return np.where(beside, flagged, named)


def with_driving_condition(sets: np.ndarray, proba: np.ndarray, level: np.ndarray, reason: np.ndarray,
                           cfg: TriageConfig, *, driving: tuple[np.ndarray, np.ndarray] | None = None,
                           named: np.ndarray | None = None, flagged: np.ndarray | None = None) -> np.ndarray:
    """The differential ``sets`` (n, K) with the condition that drives an expected-cost level
    (:func:`driving_condition`) added where the set holds none whose right level reaches the level
    it needs, or where the advice names it (the most likely condition does not call for the
    level), so the conditions shown include the one the level is for (``driving``: that
    function's result, if the caller has it); and with the condition the advice names beside the
    likely one (``named``: :func:`named_condition`, -1 for none), which for the red flag shown as
    the reason may be another; and with the condition of the red flag shown as the reason
    (``flagged``: :func:`shown_flag_condition`), which a condition that saves more may have
    displaced from the advice (a torn ligament's beside a clot)."""
    needed, driver = driving_condition(proba, level, reason, cfg) if driving is None else driving
    right, likely = right_levels(cfg), proba.argmax(axis=1)
    shown = np.where(sets, right[None, :], -1).max(axis=1)
    lacking = np.flatnonzero((driver >= 0) & ((shown < needed) | (right[likely] < needed)))
    sets = sets.copy()
    sets[lacking, driver[lacking]] = True
    for extra in (named, flagged):  # the condition the advice names (the driver where lacking, as above),
        if extra is not None:  # and the shown red flag's
            rows = np.flatnonzero(extra >= 0)
            sets[rows, extra[rows]] = True
    return sets


def decide(decision: Decision, kb: KnowledgeBase, parsed: ParsedCases, proba: np.ndarray, *,
           codes: bool = False, rescore: Callable[[ParsedCases], np.ndarray] | None = None) -> pd.DataFrame:
    """The decision columns (:data:`DECISION_COLUMNS`) for valid parsed cases and their probabilities.

    With ``codes``, ``triage_reason``, ``advice``, ``safety_net`` and ``ask_next`` hold the short
    codes of :meth:`Decision.text_codes` instead of their texts (the same decisions). ``rescore``:
    as :func:`decision_columns`'."""
    return pd.DataFrame(decision_columns(decision, kb, parsed, proba, codes=codes, rescore=rescore))


def decision_columns(decision: Decision, kb: KnowledgeBase, parsed: ParsedCases, proba: np.ndarray, *,
                     codes: bool = False, columns: Collection[str] | None = None,
                     rescore: Callable[[ParsedCases], np.ndarray] | None = None) -> dict[str, Any]:
    """:func:`decide`'s columns as arrays, by name (a caller adding them to its own columns builds
    one frame); for no cases, empty columns of the types they have for some.

    ``columns``: only those of :data:`DECISION_COLUMNS` are made (default: all), and only what
    they rest on is computed (``triage`` alone does not search for ``ask_next``'s questions);
    each is the same, bit for bit, as when every column is made. ``rescore``: the model's
    probabilities of other parsed cases (``LoadedModel.predict_proba``), with which a same day
    completed by a "no" to a clot's sign is softened where the case without its "no"s would be
    (:func:`pipeline.decision.triage.expected_cost_levels`); every caller with a model gives it."""
    wanted = [c for c in DECISION_COLUMNS if columns is None or c in columns]
    if len(parsed) == 0:
        pandas_type = {"string": "str", "int64": "int64", "bool": "bool"}
        return {c: pd.Series(dtype=pandas_type[DECISION_COLUMN_TYPES[c]]) for c in wanted}
    cfg, screen, net = decision.config, decision.screen, decision.safety(kb)
    # each step computed once, when a wanted column first needs it

    @cache
    def rules() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = net.counts(parsed.codes)  # every rule matched once
        return (counts, *net.fires_and_open(parsed.codes, counts))

    @cache
    def atypical() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return flag_atypical(kb, parsed, decision.atypical)

    @cache
    def triage() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(level, reason, basis): the level's reason shown, and the one it rests on."""
        fires = rules()[1]
        level, reason = expected_cost_levels(cfg, parsed.codes, proba, atypical()[0], net, None if rescore is None else
                                             lambda blanked: rescore(ParsedCases.of_codes(blanked)))
        before_rules, basis = level.copy(), reason.copy()
        raise_to_rules(cfg, level, reason, fires, screen)
        # a rule at the level the expected cost gave is the reason shown (the clearer one), but the
        # level still rests on the cost: its condition stays in the differential and the advice
        return level, reason, np.where(level == before_rules, basis, reason)

    @cache
    def driving() -> tuple[np.ndarray, np.ndarray]:
        level, _, basis = triage()
        return driving_condition(proba, level, basis, cfg, rules()[1][:, :len(cfg.red_flags)])

    @cache
    def differential() -> np.ndarray:
        """(n, K) the conditions shown: the prediction set with the one the level is for."""
        level, _, basis = triage()
        return with_driving_condition(prediction_sets(proba, parsed.codes, decision.conformal), proba, level, basis,
                                      cfg, driving=driving(), named=beside(), flagged=flag_shown())

    @cache
    def flag_shown() -> np.ndarray:
        """Per case, the condition of the red flag shown as its reason (-1: none)."""
        return shown_flag_condition(triage()[1], cfg)

    @cache
    def beside() -> np.ndarray:
        """Per case, the condition the advice names beside the most likely one (-1: none): the one the
        level is for where the likely one does not call for it, or the condition of the red flag
        shown as the reason where that calls for more (:func:`named_condition`)."""
        needed, driver = driving()
        return named_condition(proba.argmax(axis=1), needed, driver, flag_shown(), right_levels(cfg))

    @cache
    def pain_undescribed() -> np.ndarray:
        """Per case, whether nothing of the pain itself is known (age, sex, history and the screen's
        signs at most) and its level, below the same day, rests on the expected cost (at the same
        day, the advice of the condition it is for stands: "Do not massage the leg" for a DVT)."""
        level, _, basis = triage()
        return (((basis == COST_REASON) | (basis == SOFTENED_REASON)) & (level < _EMERGENCY)
                & ~pain_described(parsed.codes))

    def triage_reason() -> pd.api.extensions.ExtensionArray:
        reason = triage()[1]
        shown = np.where((reason == COST_REASON) & pain_undescribed(), decision._undescribed_pain_reason, reason)
        return lookup(decision._reason_codes if codes else decision._reasons, shown)

    def advice() -> np.ndarray:
        driver = driving()[1]
        level, likely, right = triage()[0], proba.argmax(axis=1), right_levels(cfg)
        named = beside()
        # and leads with what to rule out where a screen rule sets the level (none of the nine),
        # naming beside it the condition that calls for the level too: that one, else the most likely
        shown = named_rules(screen, rules()[1][:, len(cfg.red_flags):])  # what the screen column names
        first = leading_screen_rule(screen, level, shown)
        also = np.where(named >= 0, named, np.where(right[likely] >= level, likely, -1))
        # with nothing of the pain known, no condition's advice: that too little is known, and the
        # condition the level is for (the most likely one where it calls for it, as driving_condition
        # says; none for self-care)
        little = decision._undescribed_pain_advice_start + named_advice_index(level, np.where(level > 0, driver, -1))
        # a second rule the screen names is named after the rest: beside the leading rule (a hot,
        # swollen knee beside a pulmonary embolism), or below a level set by something else (in a
        # likely clot); any more are in the screen column only
        second = second_screen_rule(shown, first)
        led = named_advice_index(first, also)
        led = np.where(second >= 0, decision._second_rule_advice_start + second * decision._screen_advice_size + led,
                       decision._screen_advice_start + led)
        plain = advice_index(level, likely, named)
        lower = decision._lower_place[second]
        plain = np.where((second >= 0) & (lower >= 0),
                         decision._screen_line_advice_start + lower * decision._advice_table_size + plain, plain)
        return lookup(decision._advice_codes if codes else decision._advice,
                      np.where(first >= 0, led, np.where(pain_undescribed(), little, plain)))

    def ask_next() -> np.ndarray:
        counts, fires, _ = rules()
        return net.ask_next(proba, parsed.codes, triage()[0], atypical()[0], fires, codes_out=codes, counts=counts)

    def atypical_reason() -> pd.api.extensions.ExtensionArray:
        flag, score, threshold = atypical()
        reasons = np.full(len(parsed), "", dtype=object)
        reasons[flag] = ["answers fit none of the documented profiles well: surprise per answer "
                         "{} > {}".format(*two_numbers(s, t)) for s, t in zip(score[flag], threshold[flag])]  # rare
        return text_array(reasons)

    made: dict[str, Callable[[], Any]] = {
        "triage": lambda: lookup(LEVELS, triage()[0]),
        "triage_reason": triage_reason,
        "safety_net": lambda: net.safety_net(triage()[0], net.to_watch(parsed.codes, rules()[1], rules()[2]), parsed.codes,
                                      codes),
        "ask_next": ask_next,
        "advice": advice,
        "differential": lambda: format_sets(proba, differential())[0],
        "differential_size": lambda: differential().sum(axis=1).astype(np.int64),
        "screen": lambda: screen_names(screen, rules()[1][:, len(cfg.red_flags):]),  # the screen's rules
        "atypical": lambda: atypical()[0],
        "atypical_reason": atypical_reason,
    }
    return {c: made[c]() for c in wanted}
