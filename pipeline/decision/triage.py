"""Triage: red-flag rules on the answers, and an expected-cost decision on the probabilities.

The level is the one that minimises the expected cost written in configs/triage.yaml, except that
a same-day level resting only on unanswered questions is given as ``uncertain.level`` with the
safety net (:mod:`pipeline.decision.safety`); then an atypical case is raised to its floor and a
red flag or a screen rule raises the level to the rule's, whatever the model says. Reasons and
advice are looked up from small tables, so a million cases cost a few array lookups.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.core.config import LEVELS, Level, ScreenConfig, TriageConfig
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS
from pipeline.decision.costs import cost_levels, right_levels
from pipeline.decision.safety import Rule, SafetyNet, per_rule, rules_of

__all__ = ["COST_REASON", "SOFTENED_REASON", "UNCERTAIN_REASON", "UNDESCRIBED_PAIN_REASON", "advice_codes", "advice_index",
           "advice_table", "advice_written", "cost_levels", "expected_cost_levels", "leading_screen_rule",
           "lower_screen_rules", "named_advice_index", "raise_to_rules", "reason_codes", "reason_table", "red_flags",
           "right_levels", "screen_advice", "screen_advice_codes", "screen_advice_written", "screen_line_advice",
           "second_rule_advice", "second_screen_rule", "strongest_rule", "triage_levels", "undescribed_pain_advice",
           "undescribed_pain_advice_codes", "undescribed_pain_advice_written"]


def strongest_rule(fires: np.ndarray, levels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per case, the highest level among the rules that fire (-1 when none does) and the index of
    the first rule at that level (-1 when none). ``fires`` is (n_cases, n_rules)."""
    n = len(fires)
    if not levels:
        return np.full(n, -1, dtype=np.int8), np.full(n, -1, dtype=np.int16)
    hit = np.where(fires, np.array([LEVELS.index(lv) for lv in levels])[None, :], -1)
    rule = hit.argmax(axis=1).astype(np.int16)
    level = hit[np.arange(n), rule].astype(np.int8)
    rule[level < 0] = -1
    return level, rule


def red_flags(cfg: TriageConfig, codes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per case, the highest red-flag level (-1 when none fires) and the index of that rule."""
    return strongest_rule(per_rule(rules_of(cfg, None), Rule.fires, codes), [f.level for f in cfg.red_flags])


def _raise_to_rules(level: np.ndarray, reason: np.ndarray, rule_level: np.ndarray, rule: np.ndarray,
                    first_code: int) -> None:
    # a rule at or above the decided level decides it and is the reason given: it is the clearer one
    cite = (rule_level >= 0) & (rule_level >= level)
    level[cite] = rule_level[cite]
    reason[cite] = first_code + rule[cite]


COST_REASON, ATYPICAL_REASON, SOFTENED_REASON, FIRST_RULE_REASON = 0, 1, 2, 3  # reason codes of triage_levels
UNCERTAIN_REASON = ("the expected cost points to the same day, but only through questions not answered yet or "
                    "without a sign or risk of a clot answered yes: answer the questions asked next, and go the "
                    "same day if one of the safety-net signs is present")  # reason code 2
# shown for a cost decision (reason code 0) where nothing of the pain itself is known (no onset
# or symptom answer but the screen's signs: age, sex and history at most); the last of reason_table
UNDESCRIBED_PAIN_REASON = ("nothing is known of the pain itself, too little to tell its cause: the level with the "
                           "lowest expected cost for knee pain given the answers so far; answer the questions asked next")


def triage_levels(cfg: TriageConfig, codes: dict[str, np.ndarray], proba: np.ndarray,
                  atypical: np.ndarray | None = None, screen: ScreenConfig | None = None,
                  rule_fires: np.ndarray | None = None, net: SafetyNet | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Final level per case and a reason code: 0 cost decision, 1 atypical, 2 a same-day cost
    decision resting on unanswered questions (needs ``net``), 3 + k red flag k, then
    3 + n_red_flags + j screen rule j: :func:`expected_cost_levels`, then :func:`raise_to_rules`.
    ``rule_fires`` (the red flags, then the screen's rules, from :meth:`SafetyNet.fires`) saves
    computing them again. ``proba`` may be unnormalised (the levels depend on its ratios only)."""
    level, reason = expected_cost_levels(cfg, codes, proba, atypical, net)
    fires = per_rule(rules_of(cfg, screen), Rule.fires, codes) if rule_fires is None else rule_fires
    raise_to_rules(cfg, level, reason, fires, screen)
    return level, reason


def expected_cost_levels(cfg: TriageConfig, codes: dict[str, np.ndarray], proba: np.ndarray,
                         atypical: np.ndarray | None = None, net: SafetyNet | None = None,
                         rescore: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The level before the rules, with its reason code: the expected cost (0), a same day softened
    to ``uncertain.level`` where it rests on unanswered questions (2; needs ``net``), raised to the
    atypical floor (1).

    ``rescore`` (the model's probabilities of other codes) softens, too, a same day that a "no" to
    a sign of a clot completes while other such signs are still unanswered, where the case with
    its "no"s unanswered would be softened (:meth:`SafetyNet.denials_unanswered`): the model's
    probability can fall more slowly with a "no" than the knowledge base's likelihoods, which the
    softening applies, have it, so a "no" sent a case the same day that without it went within a
    day or two."""
    level = cost_levels(cfg, proba)
    reason = np.full(len(level), COST_REASON, dtype=np.int16)
    if net is not None:
        same_day = np.flatnonzero(level == LEVELS.index("emergency"))
        if len(same_day):
            taken, taken_proba = codes, proba
            if len(same_day) < len(level):  # (a case alone, or a batch all sent the same day, is taken whole)
                taken, taken_proba = {k: v[same_day] for k, v in codes.items()}, proba[same_day]
            softened = net.rests_on_unknowns(taken_proba, taken, lambda p: cost_levels(cfg, p))
            if rescore is not None and not softened.all():
                firm = same_day[~softened]
                rows, blanked = net.denials_unanswered({k: v[firm] for k, v in codes.items()})
                if len(rows):
                    softened[np.flatnonzero(~softened)[rows]] = net.rests_on_unknowns(
                        rescore(blanked), blanked, lambda p: cost_levels(cfg, p))
            soft = same_day[softened]
            level[soft] = LEVELS.index(cfg.uncertain.level)
            reason[soft] = SOFTENED_REASON
    if atypical is not None:
        floor = LEVELS.index(cfg.atypical.min_level)
        raise_ = atypical & (level < floor)
        level[raise_] = floor
        reason[raise_] = ATYPICAL_REASON
    return level, reason


def raise_to_rules(cfg: TriageConfig, level: np.ndarray, reason: np.ndarray, fires: np.ndarray,
                   screen: ScreenConfig | None = None) -> None:
    """Raise ``level`` (in place) to the red flags and screen rules that fire (``fires``: the red
    flags, then the screen's rules); a rule at or above the level is the ``reason`` given."""
    n_red = len(cfg.red_flags)
    _raise_to_rules(level, reason, *strongest_rule(fires[:, :n_red], [f.level for f in cfg.red_flags]),
                    FIRST_RULE_REASON)
    if screen is not None:
        _raise_to_rules(level, reason, *strongest_rule(fires[:, n_red:], [r.level for r in screen.rules]),
                        FIRST_RULE_REASON + n_red)


def reason_table(cfg: TriageConfig, screen: ScreenConfig | None = None) -> np.ndarray:
    """Text for each reason code (see :func:`triage_levels`)."""
    return np.array(["the level with the lowest expected cost under the predicted probabilities",
                     "atypical case: it fits none of the documented profiles well, so it needs a professional look",
                     UNCERTAIN_REASON,
                     *[f"red flag ({f.name}): {f.reason}" for f in cfg.red_flags],
                     *[f"screen ({r.name}): rule out {r.rule_out}: {r.reason}" for r in (screen.rules if screen else [])],
                     UNDESCRIBED_PAIN_REASON], dtype=object)


def reason_codes(cfg: TriageConfig, screen: ScreenConfig | None = None) -> list[str]:
    """A short code for each reason of :func:`reason_table`, in the same order."""
    return ["expected_cost", "atypical", "same_day_unanswered", *[f"red_flag:{f.name}" for f in cfg.red_flags],
            *[f"screen:{r.name}" for r in (screen.rules if screen else [])], "pain_not_described"]


def advice_codes() -> np.ndarray:
    """(n_levels, n_conditions, 1 + n_conditions) short codes of :func:`advice_table`:
    ``<level>:<condition>``, then ``<level>:<condition>+<other>`` for each other condition."""
    return np.array([[[f"{lv}:{c}", *(f"{lv}:{c}+{d}" for d in CONDITIONS)] for c in CONDITIONS] for lv in LEVELS],
                    dtype=object)


def _opening(condition: str | None) -> str:
    """A condition's label to open a sentence ("" for none): "Deep vein thrombosis"."""
    label = CONDITION_LABELS[condition] if condition else ""
    return f"{label[:1].upper()}{label[1:]}"


def _not_ruled_out(cfg: TriageConfig, lv: Level, d: str) -> str:
    """Why a less likely condition ``d`` is named at level ``lv``: the level is for it, or (a same
    day softened to within a day or two, a swollen calf) it calls for more, so its signs
    would send the case sooner ("within a day or two" is never a clot's own level)."""
    if LEVELS.index(cfg.right_level[d]) <= LEVELS.index(lv):
        return "which this level is for"
    when = "the same day" if cfg.right_level[d] == "emergency" else "sooner"
    return f"which would call for {when} if its signs appear or grow worse"


def advice_table(cfg: TriageConfig, also: str = "") -> np.ndarray:
    """(n_levels, n_conditions, 1 + n_conditions) advice: the level's instruction, the likely
    condition's advice and the closing; at ``1 + d``, first that a less likely condition ``d`` is
    not ruled out (:func:`_not_ruled_out`), with its advice (a clot's "Do not massage the leg"),
    and, where ``d`` calls for the same day, the likely condition's care only once ``d`` is ruled
    out: a cramp's "stretch the muscle gently" or osteoarthritis's exercise is not for a leg that
    may hold a clot (beside an ACL injury, a hamstring injury's RICE is care for both, now).
    ``also``: a sentence before the closing (:func:`screen_line_advice`). :func:`advice_index`
    picks the cell of each case."""
    def text(lv: Level, c: str, d: str | None) -> str:
        first = (f"{_opening(d)}, {_not_ruled_out(cfg, lv, d)}, is less likely than {CONDITION_LABELS[c]} "
                 f"but not ruled out: {cfg.advice[d]} ") if d else ""
        once = f"; once {CONDITION_LABELS[d]} is ruled out" if d and cfg.right_level[d] == LEVELS[-1] else ""
        return f"{cfg.level_text[lv]} {first}Most likely {CONDITION_LABELS[c]}{once}: {cfg.advice[c]} {also}{cfg.closing}"

    return np.array([[[text(lv, c, None), *(text(lv, c, d) for d in CONDITIONS)] for c in CONDITIONS]
                     for lv in LEVELS], dtype=object)


def undescribed_pain_advice(cfg: TriageConfig) -> np.ndarray:
    """(n_levels, 1 + n_conditions) advice of a case that says nothing of the pain itself (no onset
    or symptom answer but the screen's signs), whose level, below the same day, rests on the
    expected cost: the level's instruction, that too little is known to tell the cause (no
    condition's advice: "Most likely ACL injury ... usually needs reconstructive surgery" for an
    18-year-old who gave only her age was a guess), then (at ``1 + d``) that condition ``d`` is
    not ruled out (:func:`_not_ruled_out`), and the closing."""
    def text(lv: Level, d: str | None) -> str:
        other = f"Not ruled out: {CONDITION_LABELS[d]}, {_not_ruled_out(cfg, lv, d)}. " if d else ""
        return (f"{cfg.level_text[lv]} Nothing is known of the pain itself yet, which is too little to tell its cause: "
                f"the answers to the questions asked next would tell more. {other}{cfg.closing}")

    return np.array([[text(lv, None), *(text(lv, d) for d in CONDITIONS)] for lv in LEVELS], dtype=object)


def undescribed_pain_advice_codes() -> np.ndarray:
    """Short codes of :func:`undescribed_pain_advice`: ``<level>:pain_not_described``, then
    ``<level>:pain_not_described+<condition>``."""
    return np.array([[f"{lv}:pain_not_described", *(f"{lv}:pain_not_described+{d}" for d in CONDITIONS)]
                     for lv in LEVELS], dtype=object)


def undescribed_pain_advice_written(cfg: TriageConfig) -> np.ndarray:
    """The cells of :func:`undescribed_pain_advice` a case can get: below the same day, a
    condition named where it calls for the level (above self-care, which every condition calls
    for) or, at ``uncertain.level``, for the same day (a softened one)."""
    right, level = right_levels(cfg)[None, :], np.arange(len(LEVELS))[:, None]
    same_day = len(LEVELS) - 1
    named = (((right >= level) & (level > 0)) | ((level == LEVELS.index(cfg.uncertain.level)) & (right == same_day)))
    return np.concatenate([np.ones((len(LEVELS), 1), dtype=bool), named], axis=1) & (level < same_day)


def advice_written(cfg: TriageConfig) -> np.ndarray:
    """(n_levels, n_conditions, 1 + n_conditions) mask of the cells of :func:`advice_table` a case
    can get: the likely condition alone, or with a less likely one that calls for the level where
    the likely one does not (the same day, for a level softened to ``uncertain.level``), or that a
    red flag at the level is for and calls for more than the likely one."""
    right = right_levels(cfg)
    level = np.arange(len(LEVELS))[:, None, None]
    likely, other = right[None, :, None], right[None, None, :]
    softened = (level == LEVELS.index(cfg.uncertain.level)) & (likely < len(LEVELS) - 1) & (other == len(LEVELS) - 1)
    named = ((likely < level) & (level <= other)) | softened
    for flag in cfg.red_flags:  # a red flag's condition, where it calls for more than the likely one
        if flag.condition is not None:
            d = CONDITIONS.index(flag.condition)
            named[LEVELS.index(flag.level), right < right[d], d] = True
    return np.concatenate([np.ones((len(LEVELS), len(CONDITIONS), 1), dtype=bool), named], axis=2)


def screen_advice(cfg: TriageConfig, screen: ScreenConfig) -> np.ndarray:
    """(n_rules, 1 + n_conditions) advice of a case whose level a screen rule sets: the level's
    instruction, what to rule out first and why, then (at ``1 + d``) that condition ``d``, which
    calls for the level too, is not ruled out either, and the closing. No condition's own advice:
    for a cold, pale foot named as a cramp it read "stretch the muscle gently"."""
    return _screen_advice(cfg, screen, "")


def _screen_advice(cfg: TriageConfig, screen: ScreenConfig, also: str) -> np.ndarray:
    """:func:`screen_advice` with ``also`` (a sentence) before the closing."""
    def text(r, d: str | None) -> str:
        # a condition named beside the rule calls for its level, or (a same day softened to it, a
        # clot's) for more: said as the advice of a condition below says it (_not_ruled_out)
        why = "which calls for this level too" if d and cfg.right_level[d] == r.level else d and _not_ruled_out(cfg, r.level, d)
        other = f"{_opening(d)}, {why}, is not ruled out either. " if d else ""
        return f"{cfg.level_text[r.level]} First rule out {r.rule_out}: {r.reason}. {other}{also}{cfg.closing}"

    return np.array([[text(r, None), *(text(r, d) for d in CONDITIONS)] for r in screen.rules], dtype=object)


def _too(rule) -> str:
    """The sentence that names a second screen rule: what it rules out, and why."""
    return f"Rule out {rule.rule_out} too: {rule.reason}. "


def second_rule_advice(cfg: TriageConfig, screen: ScreenConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per second rule ``a``, :func:`screen_advice` with what ``a`` rules out and why before the
    closing, for a case where two named screen rules fire (a pulmonary embolism and a hot, swollen
    knee: "First rule out a pulmonary embolism ... Rule out a septic joint too ..."), its codes
    (``screen:<rule>[+<condition>]+screen:<a>``) and written cells (``a`` another rule at a level
    no higher than the leading one's): each (n_rules (the second), n_rules (the leading),
    1 + n_conditions)."""
    levels = _screen_levels(screen)
    texts = np.array([_screen_advice(cfg, screen, _too(a)) for a in screen.rules], dtype=object)
    codes = np.array([screen_advice_codes(screen) + f"+screen:{a.name}" for a in screen.rules], dtype=object)
    can = (levels[:, None] <= levels[None, :]) & ~np.eye(len(levels), dtype=bool)  # (second, leading)
    return texts, codes, screen_advice_written(cfg, screen)[None] & can[:, :, None]


def screen_advice_codes(screen: ScreenConfig) -> np.ndarray:
    """Short codes of :func:`screen_advice`: ``screen:<rule>``, then ``screen:<rule>+<condition>``."""
    return np.array([[f"screen:{r.name}", *(f"screen:{r.name}+{d}" for d in CONDITIONS)] for r in screen.rules],
                    dtype=object)


def screen_advice_written(cfg: TriageConfig, screen: ScreenConfig) -> np.ndarray:
    """The cells of :func:`screen_advice` a case can get: a condition named where it calls for the
    rule's level (the most likely one), or where a case at that level can have it named as a
    less likely one (:func:`advice_written`)."""
    named = np.asarray(advice_written(cfg)[:, :, 1:].any(axis=1))  # (level, condition)
    named |= right_levels(cfg)[None, :] >= np.arange(len(LEVELS))[:, None]
    at = _screen_levels(screen)
    return np.concatenate([np.ones((len(at), 1), dtype=bool), named[at]], axis=1)


def lower_screen_rules(screen: ScreenConfig) -> list[int]:
    """The screen rules below the top level: the only ones that can fire on a case whose level is
    set by something else (a red flag, the expected cost) and is higher than theirs."""
    return [i for i, r in enumerate(screen.rules) if r.level != LEVELS[-1]]


def screen_line_advice(cfg: TriageConfig, screen: ScreenConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rule of :func:`lower_screen_rules`, :func:`advice_table` with what that rule rules out
    and why, for a case sent sooner than the rule asks by something else (a hot, swollen knee in a
    likely clot, sent the same day for the clot: the joint must be ruled out too), and its codes
    (``<level>:<condition>+screen:<rule>``, after any other condition) and written cells (above the
    rule's level): each (n_lower_rules, n_levels, n_conditions, 1 + n_conditions)."""
    lower = [screen.rules[i] for i in lower_screen_rules(screen)]
    texts = [advice_table(cfg, _too(r)) for r in lower]
    codes = [advice_codes() + f"+screen:{r.name}" for r in lower]
    above = [np.arange(len(LEVELS))[:, None, None] > LEVELS.index(r.level) for r in lower]
    shape = (len(lower), len(LEVELS), len(CONDITIONS), len(CONDITIONS) + 1)
    return (np.array(texts, dtype=object).reshape(shape), np.array(codes, dtype=object).reshape(shape),
            (advice_written(cfg)[None] & np.array(above, dtype=bool)).reshape(shape))


def second_screen_rule(named: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per case, the first rule the screen names (``named``, n_cases x n_rules: :func:`pipeline.decision.screen.named_rules`)
    other than its leading one ``first`` (-1: none), which its advice names too; -1 where none."""
    rows = np.flatnonzero(first >= 0)
    if len(rows):
        named = named.copy()
        named[rows, first[rows]] = False
    return _first(named)


def _first(mask: np.ndarray) -> np.ndarray:
    """Per row of ``mask``, its first True column; -1 where there is none."""
    return np.where(mask.any(axis=1), mask.argmax(axis=1), -1)


def _screen_levels(screen: ScreenConfig) -> np.ndarray:
    """Each screen rule's level, as an index into :data:`LEVELS`."""
    return np.array([LEVELS.index(r.level) for r in screen.rules])


def leading_screen_rule(screen: ScreenConfig, level: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """Per case, the first screen rule (in the config's order) that fires (``matches``, n_cases x
    n_rules) at the case's own ``level``, which its advice leads with; -1 where none does."""
    return _first(matches & (_screen_levels(screen)[None, :] == level[:, None]))


def named_advice_index(row: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """Per case, the flat index of its cell of a ``(n_rows, 1 + n_conditions)`` advice table:
    :func:`screen_advice` (``row``: its leading screen rule) or :func:`undescribed_pain_advice`
    (``row``: its level); ``condition``: the one named, -1 for none."""
    return row.astype(np.int64) * (len(CONDITIONS) + 1) + condition + 1


def advice_index(level: np.ndarray, likely: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """Per case, the flat index of its cell of :func:`advice_table`: ``driver`` (-1: none) names
    the condition the level is for where the likely one does not call for it."""
    n = len(CONDITIONS)
    return (level.astype(np.int64) * n + likely) * (n + 1) + np.where(driver == likely, -1, driver) + 1
