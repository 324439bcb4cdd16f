"""The screen for same-day emergencies that are none of the nine conditions.

Pulmonary embolism, acute limb ischaemia, a popliteal aneurysm, a septic joint or cellulitis, and a
fracture (Ottawa knee rule) are not among the conditions the model tells apart, but each can sit
behind the same complaint. A case that screens positive is still scored over the nine; its output
names what must be ruled out (``screen``), and the triage sends it no later than the rule's level.
The rules are data (``configs/screen.yaml``), stored with the model like the rest of the decision layer.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from pipeline.core.config import ScreenConfig, ScreenRule
from pipeline.core.parsing import unanswered
from pipeline.core.schema import SEX_MALE, UNKNOWN, field
from pipeline.core.textcols import join_ranked

__all__ = ["answer_matches", "rule_counts", "rule_fires", "rule_open", "rule_state", "screen_matches", "screen_names",
           "state_of_counts"]


@cache
def _wanted(name: str, answers: tuple[str, ...]) -> tuple[bool, tuple]:
    """What ``answers`` of field ``name`` match, found once per rule rather than per call: for a
    number (True, its (test, bound) pairs: "unknown", ">=", "<="), for a yes/no or category field
    (False, its codes)."""
    f = field(name)
    if f.kind in ("integer", "float"):
        return True, tuple(("unknown", np.nan) if a == "unknown" else (a[:2], float(a[2:])) for a in answers)
    values = ("no", "yes") if f.kind == "tristate" else f.allowed  # tri-state codes: 0 no, 1 yes
    return False, tuple(UNKNOWN if a == "unknown" else values.index(a) for a in answers)


def _matches(name: str, answers: list[str], codes: dict[str, np.ndarray]) -> np.ndarray:
    number, wanted = _wanted(name, tuple(answers))
    c = codes[name]
    if number:
        hit = np.zeros(len(c), dtype=bool)
        known = ~np.isnan(c)
        for test, bound in wanted:
            if test == "unknown":
                hit |= ~known
            elif test == "<=":
                hit |= known & (c <= bound)
            else:
                hit |= known & (c >= bound)
        return hit
    hit = c == wanted[0]  # a few comparisons: np.isin costs ~30x more on the short arrays of one case
    for w in wanted[1:]:
        hit |= c == w
    return hit


def answer_matches(name: str, answers: list[str], code: int) -> bool:
    """Whether one answer of yes/no or category field ``name`` (its code; :data:`UNKNOWN` for
    unanswered) is among ``answers``, matched as every case is."""
    return bool(_matches(name, answers, {name: np.array([code], dtype=np.int8)})[0])


def rule_fires(all_: dict[str, list[str]], any_: dict[str, list[str]], codes: dict[str, np.ndarray]) -> np.ndarray:
    """Per case, whether every ``all_`` field matches and (if given) at least one ``any_`` field does
    (the matching of screen rules and of the triage's red flags): :func:`rule_state`'s first half."""
    return rule_state(all_, any_, codes)[0]


def rule_counts(all_: dict[str, list[str]], any_: dict[str, list[str]],
                codes: dict[str, np.ndarray]) -> np.ndarray:
    """(4, n_cases) int8, per case: how many ``all_`` fields do not match, how many ``any_`` fields
    match, how many ``all_`` fields neither match nor are unanswered, and how many ``any_`` fields
    match or are unanswered. :func:`state_of_counts` reads :func:`rule_state`'s fires and open
    from them; a case that answers one more question changes each count by at most one, so the
    variants of ask_next are counted from their case."""
    out = np.zeros((4, len(codes["age"])), dtype=np.int8)
    if "pregnant" in all_ or "pregnant" in any_:
        codes = _pregnancy_as_known(codes)
    for name, answers in all_.items():
        hit = _matches(name, answers, codes)
        out[0] += ~hit
        out[2] += ~(hit | unanswered(name, codes))
    for name, answers in any_.items():
        hit = _matches(name, answers, codes)
        out[1] += hit
        out[3] += hit | unanswered(name, codes)
    return out


_NOT_PREGNANT = 0  # the tri-state code of "no"


def _pregnancy_as_known(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``codes`` with a male's pregnancy answered "no". The parser keeps it unanswered (a man who
    gave only age, sex and "not pregnant" has answered nothing), but no rule can still fire, or
    stay open, through it."""
    male = codes["sex"] == SEX_MALE
    if not male.any():
        return codes
    return {**codes, "pregnant": np.where(male, np.int8(_NOT_PREGNANT), codes["pregnant"]).astype(codes["pregnant"].dtype)}


def state_of_counts(counts: np.ndarray, has_any: np.ndarray | bool) -> tuple[np.ndarray, np.ndarray]:
    """(fires, open) from :func:`rule_counts` (the counts first, any trailing shape; ``has_any``:
    whether the rule has ``any`` fields, broadcast against the rest)."""
    fires = (counts[0] == 0) & ((counts[1] > 0) | ~np.asarray(has_any))
    possible = (counts[2] == 0) & ((counts[3] > 0) | ~np.asarray(has_any))
    return fires, possible & ~fires


def rule_state(all_: dict[str, list[str]], any_: dict[str, list[str]],
               codes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per case, whether the rule fires and whether it is open: it does
    not fire, but could once unanswered fields are answered (every ``all`` field matches or is
    unanswered, and so does one ``any`` field, if given). Each field is matched once for both,
    through :func:`rule_counts`."""
    return state_of_counts(rule_counts(all_, any_, codes), bool(any_))


def rule_open(all_: dict[str, list[str]], any_: dict[str, list[str]], codes: dict[str, np.ndarray]) -> np.ndarray:
    """Per case, whether a rule that does not fire could still fire once unanswered fields are
    answered (:func:`rule_state`'s second half)."""
    return rule_state(all_, any_, codes)[1]


def _rule(rule: ScreenRule, codes: dict[str, np.ndarray]) -> np.ndarray:
    return rule_fires(rule.all, rule.any, codes)


def screen_matches(cfg: ScreenConfig, codes: dict[str, np.ndarray]) -> np.ndarray:
    """(n_cases, n_rules) boolean: which screen rules each case meets."""
    if not len(codes["age"]):
        return np.zeros((0, len(cfg.rules)), dtype=bool)
    return np.column_stack([_rule(r, codes) for r in cfg.rules])


def screen_names(cfg: ScreenConfig, matches: np.ndarray):
    """Per case, what must be ruled out: the matched rules' ``rule_out``, ``|``-separated ("" if none)."""
    order = np.tile(np.arange(len(cfg.rules)), (len(matches), 1))
    return join_ranked([r.rule_out for r in cfg.rules], order, matches)
