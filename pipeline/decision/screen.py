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
from pipeline.core.parsing import code_rows, unanswered
from pipeline.core.schema import MALE_NOT_ASKED, NUMERIC_FIELDS, SEX_MALE, UNKNOWN, field
from pipeline.core.sizes import FEW_CASES
from pipeline.core.textcols import join_ranked

__all__ = ["CountTable", "add_field_counts", "answer_matches", "field_matches", "named_rules", "rule_counts",
           "rule_fires", "rule_open", "rule_state", "screen_matches", "screen_names", "state_of_counts"]


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


def field_matches(name: str, answers: list[str], codes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per case, whether field ``name`` matches ``answers`` and whether it is unanswered, as a
    rule's field is matched (a man's pregnancy and hormonal therapy read "no")."""
    if name in _MALE_NO:
        codes = _male_answers_as_known(codes)
    return _matches(name, answers, codes), unanswered(name, codes)


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
    for part, in_all in ((all_, True), (any_, False)):
        for name, answers in part.items():
            add_field_counts(out, *field_matches(name, answers, codes), in_all)
    return out


def add_field_counts(out: np.ndarray, hit: np.ndarray | np.bool_, unknown: np.ndarray | np.bool_, in_all: bool) -> None:
    """Add one field of a rule to :func:`rule_counts`' four counts ``out`` (the counts first, any
    trailing shape), in place: whether it matches (``hit``) and whether it is unanswered
    (``unknown``), both boolean, as an ``all`` field (``in_all``) or an ``any`` field. The one place
    the counts are defined: :class:`CountTable` and ask_next's count changes add through it too."""
    if in_all:
        out[0] += ~hit
        out[2] += ~(hit | unknown)
    else:
        out[1] += hit
        out[3] += hit | unknown


class CountTable:
    """:func:`rule_counts` of several rules at once, looked up rather than matched: each yes/no or
    category answer's contribution to every rule's counts is found once, here, and so is each
    number's, by where it falls among the rules' bounds for it (below, at or between them, or
    unknown); a case's counts are the sum of its answers' rows. The same counts in a few array
    operations, where matching rule by rule takes some twenty per rule: for the few cases of a
    ``predict()`` call; a large block's lookups would hold a row per answered field and case, so
    :meth:`counts` takes the rules one at a time above ``few`` cases
    (:data:`pipeline.core.sizes.FEW_CASES`)."""

    def __init__(self, rules: list[tuple[dict[str, list[str]], dict[str, list[str]]]], few: int = FEW_CASES):
        self.rules, self.few = rules, few
        names = list(dict.fromkeys(n for all_, any_ in rules for n in [*all_, *any_]))
        self._coded = [n for n in names if n not in NUMERIC_FIELDS]
        # per number, its rules' bounds, sorted: a value's row is where it falls among them
        self._bounds = [(n, np.array(sorted({b for all_, any_ in rules for part in (all_, any_) if n in part
                                             for test, b in _wanted(n, tuple(part[n]))[1] if test != "unknown"}),
                                    dtype=np.float64)) for n in names if n in NUMERIC_FIELDS]
        blocks: list[np.ndarray] = []
        for name in self._coded:
            f = field(name)
            answers = [*range(2 if f.kind == "tristate" else len(f.allowed)), UNKNOWN]  # the unknown code's row last
            blocks.append(self._block(name, np.array(answers, dtype=np.int8), np.array(answers) == UNKNOWN))
        for name, bounds in self._bounds:
            values = np.array([*_between(bounds), np.nan])  # the unknown value's row last
            blocks.append(self._block(name, values, np.isnan(values)))
        offsets = np.cumsum([0] + [len(b) for b in blocks])
        self._table = np.concatenate(blocks) if blocks else np.zeros((0, 4 * len(rules)), dtype=np.int8)
        self._offset = offsets[:-1, None].astype(np.intp)
        self._unknown_row = (offsets[1:, None] - 1).astype(np.intp)

    def _block(self, name: str, values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        """(len(values), 4 * n_rules) int8: what each value of field ``name`` adds to each rule's counts."""
        block = np.zeros((len(values), 4, len(self.rules)), dtype=np.int8)
        for k, (all_, any_) in enumerate(self.rules):
            for part, in_all in ((all_, True), (any_, False)):
                if name in part:
                    add_field_counts(block[:, :, k].T, _matches(name, part[name], {name: values}), unknown, in_all)
        return block.reshape(len(values), -1)

    def counts(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(4, n_cases, n_rules) int8: each rule's :func:`rule_counts`."""
        n, n_rules = len(codes["age"]), len(self.rules)
        if n > self.few or not len(self._table):
            return np.stack([rule_counts(all_, any_, codes) for all_, any_ in self.rules], axis=-1) if n_rules \
                else np.zeros((4, n, 0), dtype=np.int8)
        if _MALE_NO & set(self._coded):
            codes = _male_answers_as_known(codes)
        answer = code_rows(codes, self._coded).astype(np.intp) if self._coded else np.zeros((0, n), dtype=np.intp)
        at = [_place(codes[name], bounds) for name, bounds in self._bounds]  # a number's place, -1 unknown
        answer = np.concatenate([answer, np.array(at, dtype=np.intp).reshape(len(at), n)])
        rows = np.where(answer == UNKNOWN, self._unknown_row, answer + self._offset)
        out = self._table.take(rows, axis=0).sum(axis=0, dtype=np.int8).reshape(n, 4, n_rules)
        return np.ascontiguousarray(out.transpose(1, 0, 2))


def _between(bounds: np.ndarray) -> np.ndarray:
    """A value for each place on the number line that ``bounds`` (sorted, distinct) cut: below the
    first, at each, between each two, above the last (one value, 0, for no bounds)."""
    if not len(bounds):
        return np.zeros(1)
    inner = (bounds[:-1] + bounds[1:]) / 2
    return np.array([bounds[0] - 1, *np.ravel(np.column_stack([bounds, np.r_[inner, bounds[-1] + 1]]))])


def _place(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Each value's place among ``bounds`` (:func:`_between`'s order): 2i below the i-th bound
    (or above the last), 2i + 1 at it; :data:`UNKNOWN` for a missing value."""
    below = np.searchsorted(bounds, values, side="left")
    at = (below < len(bounds)) & (bounds[np.minimum(below, len(bounds) - 1)] == values) if len(bounds) else False
    return np.where(np.isnan(values), UNKNOWN, 2 * below + at)


_NO = 0  # the tri-state code of "no"
_MALE_NO = frozenset(MALE_NOT_ASKED)  # a male's unanswered reads "no" to the rules


def _male_answers_as_known(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``codes`` with a male's pregnancy, and his hormonal therapy unless he said yes, answered
    "no". The parser keeps a man's "no" to either unanswered (a man who gave only age, sex and
    "not pregnant" has answered nothing; a man's rate of the pill or HRT is a tenth of a percent
    or so), but no rule can still fire, or stay open, through them."""
    male = codes["sex"] == SEX_MALE
    if not male.any():
        return codes
    hormonal = codes["hormonal_therapy"]
    return {**codes, "pregnant": np.where(male, np.int8(_NO), codes["pregnant"]).astype(codes["pregnant"].dtype),
            "hormonal_therapy": np.where(male & (hormonal == UNKNOWN), np.int8(_NO), hormonal).astype(hormonal.dtype)}


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


def named_rules(cfg: ScreenConfig, matches: np.ndarray) -> np.ndarray:
    """(n_cases, n_rules): the matched rules the screen names, all but those a matched rule covers
    (``covered_by``: it rules out the same and more)."""
    index = {r.name: k for k, r in enumerate(cfg.rules)}
    shown = matches.copy()
    for k, r in enumerate(cfg.rules):
        for name in r.covered_by:
            shown[:, k] &= ~matches[:, index[name]]
    return shown


def screen_names(cfg: ScreenConfig, matches: np.ndarray):
    """Per case, what must be ruled out: the :func:`named_rules`' ``rule_out``, ``|``-separated
    ("" if none)."""
    order = np.tile(np.arange(len(cfg.rules)), (len(matches), 1))
    return join_ranked([r.rule_out for r in cfg.rules], order, named_rules(cfg, matches))
