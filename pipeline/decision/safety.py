"""Triage under unanswered questions: the safety net, the softened emergency and what to ask next.

A case seldom answers everything. Three things follow from what is still unknown:

- **the safety net**: the red flags and screen rules that would raise the level and that the
  unanswered questions could still fire, and a clot's same-day red flags for someone who has the
  history they read, whatever the signs' answers today, in plain words (``safety_net``);
- **the uncertain emergency**: when the expected cost points to the same day but a plain "no" to
  the unanswered safety-net signs of a clot (:func:`points_to_same_day`) would not, the emergency
  rests on what is unknown (with only age and sex, on the prior alone, which is never enough); so
  does one without a "yes" to a reason to suspect a clot (``uncertain.reasons_to_suspect``) where
  the clot is not the likeliest cause, however the signs were answered. The case is sent at the
  configured ``uncertain.level`` with the safety net instead, as clinicians safety-net a routine
  appointment. Red flags and the screen still send a case the same day whenever they fire;
- **what to ask next**: the unanswered questions whose plausible answers would change the level
  (``ask_next``): first those an answer to which would send the case the same day, then the
  others, each group most likely to change the level first; then, below the same day, those a
  same-day red flag the case leaves open needs answered (whether the leg is swollen).

An answer's effect on the probabilities is taken from the knowledge base: P(answer | condition),
summed over the latent severity, multiplies the model's probabilities (Bayes' rule with the
answer independent of the other answers given the condition, as in the knowledge base's model
but for the shared severity). Every product is element-wise or :func:`dot_exact_columns`, so the levels
are the same in every process.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.core.blas import dot_exact_columns
from pipeline.core.config import LEVELS, SafetyNetLine, ScreenConfig, TriageConfig
from pipeline.core.knowledge import KnowledgeBase, duration_mass_below
from pipeline.core.parsing import code_rows, premise_denied, unanswered_matrix
from pipeline.core.schema import CONDITIONS, FIELDS, SCREEN_SIGNS, SYMPTOMS, UNKNOWN, field, is_sign, max_duration_days
from pipeline.core.sizes import FEW_CASES
from pipeline.core.textcols import join_ranked, join_variants
from pipeline.core.wording import SPAN_QUESTION, question
from pipeline.decision.conformal import known_share
from pipeline.decision.costs import cost_levels_of_columns, right_levels
from pipeline.decision.netlines import NetLines
from pipeline.decision.screen import CountTable, add_field_counts, answer_matches, rule_fires, rule_open, state_of_counts

__all__ = ["PAIN_FIELDS", "Rule", "SafetyNet", "answer_likelihoods", "pain_described", "per_rule", "points_to_same_day",
           "rules_of"]

_EMERGENCY = LEVELS.index("emergency")
DURATION = "symptom_duration_days"  # asked by ask_next where `ask_next.duration_edges` gives its spans
_DURATION_BLOCK = 16_384  # cases whose duration's variants are made at once (about 10 MB of working memory)
_RANK_DECIMALS = 9  # ask_next's chances are ranked to this many decimals
# up to this many variants (a bound of its own, beside pipeline.core.sizes.FEW_CASES for cases),
# they are taken whole, where more are taken a slot or a field at a time: fewer array steps,
# where each step costs more than its arithmetic
_FEW_VARIANTS = 256


@dataclass(frozen=True)
class Rule:
    """A red flag or a screen rule, in one form."""

    all: dict[str, list[str]]
    any: dict[str, list[str]]
    level: int
    line: SafetyNetLine  # its line in the safety net, and the variants fitted to the answers (netlines)
    name: str
    # (all, any) of the signs that suggest a same-day screen rule (config.ScreenSuggestion), or None
    suggested_by: tuple[dict[str, list[str]], dict[str, list[str]]] | None = None
    watch_always: bool = False  # config.RedFlag.watch_always

    def fires(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return rule_fires(self.all, self.any, codes)

    def open(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """Per case, whether unanswered questions could still make the rule fire (it does not yet)."""
        return rule_open(self.all, self.any, codes)

    @property
    def fields(self) -> list[str]:
        return [*self.all, *self.any]


def rules_of(cfg: TriageConfig, screen: ScreenConfig | None) -> list[Rule]:
    """The red flags, then the screen rules."""
    rules = [Rule(dict(f.all), dict(f.any), LEVELS.index(f.level), f.safety_net, f.name, watch_always=f.watch_always)
             for f in cfg.red_flags]
    return rules + [Rule(dict(r.all), dict(r.any), LEVELS.index(r.level), r.safety_net, r.name,
                         None if r.suggested_by is None else (dict(r.suggested_by.all), dict(r.suggested_by.any)),
                         r.watch_always)
                    for r in (screen.rules if screen else [])]


def per_rule(rules: list[Rule], test, codes: dict[str, np.ndarray]) -> np.ndarray:
    """(n_cases, n_rules): ``test(rule, codes)`` (:meth:`Rule.fires` or :meth:`Rule.open`) of each rule."""
    n = len(codes["age"])
    return np.column_stack([test(r, codes) for r in rules]) if rules else np.zeros((n, 0), bool)


# what the pain itself is like: the onset and symptoms but the screen's signs
PAIN_FIELDS = [f.name for f in FIELDS if f.group in ("onset", "symptom") and f.name not in SCREEN_SIGNS]


def pain_described(codes: dict[str, np.ndarray], rows: np.ndarray | None = None,
                   denials: Collection[str] = ()) -> np.ndarray:
    """Per case (of ``rows``, if given), whether anything of the pain itself is answered
    (:data:`PAIN_FIELDS`), a "no" to one of ``denials`` not counted (it says what the pain is not)."""
    unanswered = unanswered_matrix(codes, PAIN_FIELDS)
    for name in denials:
        if name in _PAIN_AT:
            unanswered[:, _PAIN_AT[name]] |= codes[name] == 0
    return np.asarray(~(unanswered if rows is None else unanswered[rows]).all(axis=1))


_PAIN_AT = {name: k for k, name in enumerate(PAIN_FIELDS)}


def points_to_same_day(cfg: TriageConfig, kb: KnowledgeBase, name: str) -> bool:
    """Whether a yes/no sign is at least as common in each condition that calls for the same day
    (``cfg.right_level``: a DVT) as in the other conditions together, mixed by the prior: a
    swollen calf is (0.59 in a DVT, 0.13 in the others); a knee that cannot bend is not (0.19
    against 0.43), nor a pulsating lump (0.025 against 0.028)."""
    yes = answer_likelihoods(kb, name)[1]
    same_day = right_levels(cfg) == _EMERGENCY
    prior = kb.prior[~same_day]
    return bool((yes[same_day] >= yes[~same_day] @ prior / prior.sum()).all())


def answer_likelihoods(kb: KnowledgeBase, name: str) -> np.ndarray:
    """(n_answers, n_conditions) P(answer | condition) of a yes/no (no, yes) or category field,
    summed over the latent severity with P(severity | condition); hormonal therapy's are a woman's
    and pregnancy's a woman's of fertile age (the questions are not offered to anyone else:
    :func:`pipeline.core.parsing.premise_denied`)."""
    f = field(name)
    if f.kind == "category":
        return np.ascontiguousarray(kb.category[name].T)
    if f.kind != "tristate":
        raise ValueError(f"{name!r}: only yes/no and category questions have likelihoods here")
    yes = kb.pregnant if name == "pregnant" else kb.p_yes(name)
    return np.stack([1.0 - yes, yes])


class SafetyNet:
    """The rules, the knowledge base's answer likelihoods and the questions ``ask_next`` considers."""

    def __init__(self, cfg: TriageConfig, screen: ScreenConfig | None, kb: KnowledgeBase):
        self.cfg = cfg
        self.rules = rules_of(cfg, screen)
        # the lines of the safety net, each rule's variants fitted to the answers (netlines)
        self.lines = NetLines(self.rules)
        # the rules with a sign to watch for (a yes/no symptom or screen sign): the others fire on the
        # history, age and how the pain began, which do not appear later (a clot before with cancer
        # is asked, not watched for: "or had surgery" read as met by someone just operated on)
        self._watched = np.array([any(is_sign(n) for n in r.fields) for r in self.rules], dtype=bool)
        # the yes/no signs of the same-day rules: answered "no", would the emergency stand? (A risk
        # in the person's history, such as recent surgery, is no sign to look for: unanswered, it
        # does not soften an emergency; nor is a sign of the other conditions, such as a knee that
        # cannot bend: its "no" would make a clot likelier, not the same day less sure; nor are the
        # signs of a rule that needs one: a recently hot, swollen knee that cannot bend (a septic
        # joint) would have a swollen knee read "no" to soften a clot's same day.)
        signs = list(dict.fromkeys(n for r in self.rules if r.level == _EMERGENCY for n in r.fields
                                   if field(n).kind == "tristate" and n in SYMPTOMS))
        points = {n: points_to_same_day(cfg, kb, n) for n in signs}
        hiding = [r.level == _EMERGENCY and all(points.get(n, True) for n in r.all) for r in self.rules]
        self.no_fields = [n for n in signs if points[n] and any(h and n in r.fields for h, r in zip(hiding, self.rules))]
        self.log_no = {n: np.log(answer_likelihoods(kb, n)[0]) for n in self.no_fields}
        # asked about: the rules' fields, `ask_next.fields`, and the clot's risks no rule reads
        # (`uncertain.risks`), whose "yes" can let a same day stand
        candidates = [n for r in self.rules for n in r.fields] + list(cfg.ask_next.fields) + list(cfg.uncertain.risks)
        self.candidates = list(dict.fromkeys(n for n in candidates if field(n).kind in ("tristate", "category")))
        self._fertile_max = kb.fertile_age[1]
        self.likelihood = {n: answer_likelihoods(kb, n) for n in self.candidates}
        self.questions = [question(n) for n in self.candidates]
        # how long the pain has lasted (`ask_next.duration_edges`), asked after the yes/no and category
        # questions' places in the ranking's columns: its answers the spans between the edges, each
        # taken at its middle (on a log scale; a quarter of the first edge below it, twice the last above)
        edges = np.asarray(cfg.ask_next.duration_edges, dtype=np.float64)
        self._duration_bounds = np.r_[0.0, edges, np.inf]
        self._duration_values = np.r_[edges[:1] / 4, np.sqrt(edges[:-1] * edges[1:]), edges[-1:] * 2] \
            if len(edges) else np.zeros(0)
        self._kb_duration = (kb.duration, kb.duration_episode)
        # the rules that read the duration (the others' counts are a case's whatever its duration)
        self._duration_rules = np.array([k for k, r in enumerate(self.rules) if DURATION in r.fields], dtype=np.intp)
        self._duration_table = CountTable([(self.rules[k].all, self.rules[k].any) for k in self._duration_rules])
        self._same_day_not_duration = np.array([r.level == _EMERGENCY and DURATION not in r.fields for r in self.rules],
                                               dtype=bool)
        self.asked = self.candidates + ([DURATION] if len(edges) else [])
        self.asked_questions = self.questions + ([SPAN_QUESTION] if len(edges) else [])
        self._count_table = CountTable([(r.all, r.any) for r in self.rules])
        self._rule_levels = np.array([r.level for r in self.rules], dtype=np.int8)
        self._has_any = np.array([bool(r.any) for r in self.rules], dtype=bool)
        self._n_all = np.array([len(r.all) for r in self.rules], dtype=np.int16)
        # which rules ask each candidate; every (candidate, answer) likelihood row, and where it is
        self._asks = np.array([[n in r.fields for r in self.rules] for n in self.candidates], dtype=bool
                              ).reshape(len(self.candidates), len(self.rules))
        pairs = [(j, a) for j, name in enumerate(self.candidates) for a in range(len(self.likelihood[name]))]
        self._likelihood_rows = np.array([self.likelihood[self.candidates[j]][a] for j, a in pairs]
                                         ).reshape(len(pairs), -1)
        self._likelihood_columns = np.ascontiguousarray(self._likelihood_rows.T)  # by condition, then pair
        self._pair_candidate = np.array([j for j, _ in pairs], dtype=np.int64)
        # what answering an unanswered candidate with the pair's answer adds to each rule's counts,
        # by (pair, rule), and each candidate's asking rules in slots (-1: no more)
        # (each (pair, rule)'s four counts read as one int32: gathered whole, they are taken 10x faster)
        self._pair_counts = _packed(np.array([_count_change(rule, self.candidates[j], a) for j, a in pairs
                                              for rule in self.rules], dtype=np.int8).reshape(len(pairs) * len(self.rules), 4))
        slots = max((int(row.sum()) for row in self._asks), default=0)
        self._asking_slots = np.full((slots, len(self.candidates)), -1, dtype=np.int64)
        for j, row in enumerate(self._asks):
            asking = np.flatnonzero(row)
            self._asking_slots[:len(asking), j] = asking
        # per same-day red flag (the nine conditions' rules: a clot's), the pairs whose answer matches
        # one of its `all` fields, which it cannot fire without. Not a screen rule's: the nine's
        # likelihoods say nothing of a condition outside them, whose questions come first where one
        # answer would complete a rule the case shows (_completes_rule); otherwise "does the
        # knee bend?" of a hot swollen knee's rule took the place of the calf for a clot's cases
        unpacked = _unpacked(self._pair_counts).reshape(len(pairs), len(self.rules), 4)
        same_day_rules = [k for k, r in enumerate(self.rules) if r.level == _EMERGENCY]
        self._same_day_needs = [(k, np.flatnonzero(unpacked[:, k, 0] < 0)) for k in same_day_rules
                                if k < len(cfg.red_flags)]
        # the steps towards a same-day screen rule (a condition outside the nine, whose likelihoods
        # say nothing of its signs), or towards a same-day red flag through a question asked at any
        # chance (`ask_next.at_any_chance`: pregnancy, whose rate in the knowledge base is the
        # population's, not the one woman's, beside signs of a clot): each a (pair, rule) whose answer
        # matches one more of the rule's fields, sorted by pair; per step its count changes; and the
        # pairs that step, with where each one's steps start
        any_chance = np.isin(self._pair_candidate, [j for j, n in enumerate(self.candidates)
                                                    if n in cfg.ask_next.at_any_chance])
        steps = sorted((int(pair), k) for k in same_day_rules
                       for pair in np.flatnonzero(((unpacked[:, k, 0] < 0) | (unpacked[:, k, 1] > 0))
                                                  & (k >= len(cfg.red_flags) or any_chance)))
        self._step_pair = np.array([pair for pair, _ in steps], dtype=np.intp)
        self._step_rule = np.array([k for _, k in steps], dtype=np.intp)
        self._step_change = unpacked[self._step_pair, self._step_rule].astype(np.int16).T.reshape(4, 1, len(steps))
        self._step_pairs, self._step_starts = np.unique(self._step_pair, return_index=True)
        # the yes/no fields of the red flags for a condition that calls for the same day (a clot's
        # signs and risks), the clot's risks no such rule reads (`uncertain.risks`: smoking, sitting
        # most of the day, ...), and the signs of the screen's same-day rules that are likelier in
        # such a condition (a leg that cannot take four steps, a swollen knee; not a knee that
        # cannot bend): a "yes" to one is a reason to suspect it; per pair, whether its answer is
        # one; and each condition's own level
        self._right = right_levels(cfg)
        # the weights of the same-day conditions' share and of the total, by condition (_stands)
        self._share_rows = np.stack([self._right == _EMERGENCY, np.ones(len(CONDITIONS), dtype=bool)]).astype(np.float64)
        suspect = {n for f in cfg.red_flags if f.condition is not None and self._right[CONDITIONS.index(f.condition)]
                   == _EMERGENCY for n in [*f.all, *f.any] if field(n).kind == "tristate"}
        suspect |= {n for r in self.rules[len(cfg.red_flags):] if r.level == _EMERGENCY for n in r.fields
                    if is_sign(n) and points_to_same_day(cfg, kb, n)}
        self._suspect_fields = sorted(suspect | set(cfg.uncertain.risks))
        # the clot's same-day red flags whose signs are watched for by someone who has the history
        # they read beside them (pregnancy, surgery, cancer, an earlier clot), and that history: the
        # (all, any) of each one's fields that are no sign. Not the rules below the same day: a
        # pregnant woman's "the calf or leg swells" within a day or two (a swollen calf's rule) would stand
        # beside the pregnancy rule's same day for the same sign
        self._risk_rules = np.array([k for k, f in enumerate(cfg.red_flags) if f.level == "emergency"
                                     and f.condition is not None and self._right[CONDITIONS.index(f.condition)] == _EMERGENCY
                                     and self._watched[k] and not all(is_sign(n) for n in self.rules[k].fields)],
                                    dtype=np.intp)
        history = [({n: a for n, a in r.all.items() if not is_sign(n)}, {n: a for n, a in r.any.items() if not is_sign(n)})
                   for r in (self.rules[k] for k in self._risk_rules)]
        self._risk_table = CountTable(history)
        self._risk_has_any = np.array([bool(any_) for _, any_ in history], dtype=bool)
        # the rules watched for whatever today's answers to their signs (`watch_always`), and those signs
        self._always = np.array([k for k, r in enumerate(self.rules) if r.watch_always and self._watched[k]], dtype=np.intp)
        self._always_signs = sorted({n for k in self._always for n in self.rules[k].fields if is_sign(n)})
        # the rules with a sign to watch for that a longer duration can still meet (a leg that cannot
        # take four steps for an hour or more): the pain lasts on, so one not met yet is watched for
        self._waiting = np.array([k for k, r in enumerate(self.rules) if self._watched[k] and _waits_for_time(r)],
                                 dtype=np.intp)
        self._waiting_table = CountTable([(self.rules[k].all, self.rules[k].any) for k in self._waiting])
        self._pair_suspects = np.array([self.candidates[j] in self._suspect_fields and a == 1 for j, a in pairs],
                                       dtype=bool)
        # the answers that give a reason to suspect a clot (`uncertain.reasons_to_suspect`), and per
        # pair whether its answer is a "yes" to one
        self._reasons = list(cfg.uncertain.reasons_to_suspect)
        self._pair_reasons = np.array([self.candidates[j] in self._reasons and a == 1 for j, a in pairs], dtype=bool)
        # whether its answer describes the pain, for a same day to stand (a "no" to a sign of a clot
        # does not: it says what the pain is not)
        self._pair_pain = np.array([self.candidates[j] in PAIN_FIELDS and not (self.candidates[j] in self.no_fields
                                                                              and a == 0) for j, a in pairs], dtype=bool)
        # per pair, its candidate's column among the "no" fields (-1: not one of them)
        self._pair_no_field = np.array([self.no_fields.index(self.candidates[j]) if self.candidates[j] in self.no_fields
                                        else -1 for j, _ in pairs], dtype=np.int64)
        # candidates that ask the same rules share the level of the rules that do not ask them
        self._ask_sets, ask_set_of = np.unique(self._asks, axis=0, return_inverse=True)
        self._pair_ask_set = np.ravel(ask_set_of)[self._pair_candidate]  # per pair, its candidate's set

    def open_rules(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules): which rules the unanswered questions could still fire."""
        return per_rule(self.rules, Rule.open, self._past_fertile_age_as_no(codes))

    def fires(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules): which rules fire (the red flags, then the screen's rules)."""
        return per_rule(self.rules, Rule.fires, self._past_fertile_age_as_no(codes))

    def counts(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(4, n_cases, n_rules) int8: each rule's :func:`pipeline.decision.screen.rule_counts`."""
        return self._count_table.counts(self._past_fertile_age_as_no(codes))

    def _past_fertile_age_as_no(self, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``codes`` with the unanswered pregnancy of anyone past the knowledge base's fertile ages
        answered "no", as the rules read a man's (:mod:`pipeline.decision.screen`): the question is
        not offered to her (:func:`pipeline.core.parsing.premise_denied`), and no rule stays open
        through it ("you are pregnant or gave birth in the last six weeks, and the calf swells" is no
        line for a woman of 70). Her "yes" is kept."""
        past = (codes["pregnant"] == UNKNOWN) & (codes["age"] > self._fertile_max)
        if not past.any():
            return codes
        return {**codes, "pregnant": np.where(past, np.int8(0), codes["pregnant"]).astype(codes["pregnant"].dtype)}

    def fires_and_open(self, codes: dict[str, np.ndarray], counts: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fires` and :meth:`open_rules` with every rule matched once (from :meth:`counts`,
        if the caller has them)."""
        return state_of_counts(self.counts(codes) if counts is None else counts, self._has_any)

    def rests_on_unknowns(self, proba: np.ndarray, codes: dict[str, np.ndarray], cost_level_of) -> np.ndarray:
        """Per case, whether the same day rests on what is unknown: nothing but age and sex is
        answered (the prior alone), or the expected-cost level would drop below the same day if
        every unanswered sign of a clot (:attr:`no_fields`: the signs a same-day rule looks for that
        point to it, :func:`points_to_same_day`) were answered "no", whether or not a rule reading
        it could still fire (a sign no open rule reads still moves the probability), unless the
        same day stands (:meth:`_stands`: a condition that calls for it is the likeliest, or at
        least ``uncertain.stands_at`` likely, with a reason to suspect one, in a case that
        describes its pain). (A clot that is the
        likeliest cause, or as likely as a Wells "DVT likely" patient's behind another, with a "yes"
        to a sign or risk a clot's red flags read, of a pain described (after surgery, sudden pain
        on standing, a tender calf) is not sent within a day or two for signs not asked yet: a
        suspected DVT is assessed within hours, NICE NG158 recommendations 1.1.3-1.1.4. On age, sex
        and history alone it is.) Nor does a same day that does not so stand hold where nothing
        gives a reason to suspect a clot (:meth:`_softened`), whatever is unanswered: on age, sex,
        a duration and denials. (Where a sign or risk of a clot is answered "yes" and the clot is
        not likely enough to stand, the same day still holds once no unasked sign could lower it, so
        a "no" to the last such sign can complete it: the model's probability falls more slowly
        with a "no" than the knowledge base's likelihoods have it.)"""
        # with only the signs of open rules hidden, a tender calf with the leg not swollen, then a
        # "no" to fever, was sent the same day, where the same case with fever unanswered was not
        hide = unanswered_matrix(codes, self.no_fields)
        proba = np.asarray(proba)
        drops = self._drops_if_no(proba.T, hide, lambda c: cost_level_of(c.T))
        return self._softened(drops, proba.T, codes) | (known_share(codes) == 0)

    def denials_unanswered(self, codes: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The cases that answer "no" to a sign of a clot (:attr:`no_fields`) and leave another such
        sign unanswered, and their codes with those "no"s unanswered
        (:func:`pipeline.decision.triage.expected_cost_levels` asks whether those would be softened)."""
        answered_no = (code_rows(codes, self.no_fields) == 0).T if self.no_fields else \
            np.zeros((len(codes["age"]), 0), dtype=bool)
        rows = np.flatnonzero(answered_no.any(axis=1) & unanswered_matrix(codes, self.no_fields).any(axis=1))
        blanked = {k: v[rows] for k, v in codes.items()}
        for j, name in enumerate(self.no_fields):
            blanked[name] = np.where(answered_no[rows, j], np.asarray(UNKNOWN, dtype=blanked[name].dtype),
                                     blanked[name])
        return rows, blanked

    def _any_yes(self, fields: list[str], pair_yes: np.ndarray, codes: dict[str, np.ndarray],
                 rows: np.ndarray | None, pairs: np.ndarray | None) -> np.ndarray:
        """Per case (of ``rows``, if given, each with its variant's answer of ``pairs``: a "yes" to
        one of ``fields`` where ``pair_yes``), whether one of ``fields`` is answered "yes"."""
        n = len(codes["age"]) if rows is None else len(rows)
        out = np.zeros(n, dtype=bool)
        for name in fields:
            out |= (codes[name] if rows is None else codes[name][rows]) == 1
        if pairs is not None:
            out |= pair_yes[pairs]
        return out

    def _softened(self, drops: np.ndarray, columns: np.ndarray, codes: dict[str, np.ndarray],
                  rows: np.ndarray | None = None, pairs: np.ndarray | None = None) -> np.ndarray:
        """Per case (as in :meth:`_stands`), whether a same day on the expected cost is softened: it
        rests on unasked signs (``drops``, from :meth:`_drops_if_no`) or nothing gives a reason to
        suspect a condition that calls for it (no "yes" to ``uncertain.reasons_to_suspect``: a Wells
        item, warm or red skin, pregnancy; and none of those conditions the likeliest), and it does
        not stand. Without a reason it is softened however the signs were answered: a "no" lowers
        P(DVT), so it never sends such a case sooner than the sign left unanswered. The case and
        each of ``ask_next``'s variants are judged by this one test."""
        first = self._right[columns.argmax(axis=0)] == _EMERGENCY
        unsuspected = ~first & ~self._any_yes(self._reasons, self._pair_reasons, codes, rows, pairs)
        return (drops | unsuspected) & ~self._stands(columns, codes, first, rows, pairs)

    def _stands(self, columns: np.ndarray, codes: dict[str, np.ndarray], first: np.ndarray,
                rows: np.ndarray | None = None, pairs: np.ndarray | None = None) -> np.ndarray:
        """Per case (of ``rows``, if given, each with its variant's (question, answer) of ``pairs``),
        whether a same day stands however the unasked signs are answered (:meth:`rests_on_unknowns`;
        ``first``: whether a condition that calls for it is the likeliest):
        the conditions that call for it are the likeliest or hold at least ``uncertain.stands_at``
        of the probability (``columns``: by condition, ``proba.T``, normalised or not), a sign or
        risk of a same-day condition's red flags is answered "yes", and something of the pain is
        described, other than a "no" to a sign of a clot (:attr:`no_fields`): with a clot before at
        80, a "no" to warm skin let the clot's same day stand, where the sign unanswered softened it
        to within a day or two. The share as well as the rank: on the rank alone a clot at 0.37
        behind a cramp went within a day or two while one at 0.35 ranked first went the same day; on the share
        alone a clot ranked first at 0.25 would go within a day or two as "Most likely deep vein
        thrombosis". The sums are :func:`dot_exact_columns`, over the conditions in their order
        whatever the array's layout, so the same probabilities are judged alike in every caller and
        process."""
        share, total = dot_exact_columns(columns, self._share_rows)
        likely = (share >= self.cfg.uncertain.stands_at * total) | first
        suspected = self._any_yes(self._suspect_fields, self._pair_suspects, codes, rows, pairs)
        described = pain_described(codes, rows, denials=self.no_fields)
        if pairs is not None:  # the variant's one more answer
            described |= self._pair_pain[pairs]
        return likely & suspected & described

    def _drops_if_no(self, columns: np.ndarray, hide: np.ndarray, cost_level_of_columns) -> np.ndarray:
        """Per case, whether the expected-cost level drops below the same day once the "no" fields
        ``hide`` (n_cases, n_no_fields) are answered "no" (``columns``: the cases' probabilities by
        condition, ``proba.T``; ``cost_level_of_columns`` takes them so)."""
        log_p = np.log(np.maximum(columns, 1e-300))
        hidden = np.flatnonzero(hide.any(axis=0))
        if len(hidden):  # in the float64 of the "no" rows, whatever the probabilities' type
            log_p = log_p.astype(np.float64, copy=False)
            by_field = np.ascontiguousarray(hide.T)
        few = log_p.shape[1] <= _FEW_VARIANTS
        for k in hidden:  # in field order; a field adds nothing where it is not hidden
            if few:  # every case, the sum kept where the field is hidden (one array step)
                np.add(log_p, self.log_no[self.no_fields[k]][:, None], out=log_p, where=by_field[k])
            else:  # only the cases where it is (less to add)
                at = np.flatnonzero(by_field[k])
                log_p[:, at] += self.log_no[self.no_fields[k]][:, None]
        p_no = np.exp(log_p - log_p.max(axis=0, keepdims=True))  # unnormalised: the level is scale-free
        return cost_level_of_columns(p_no) < _EMERGENCY

    def to_watch(self, codes: dict[str, np.ndarray], fires: np.ndarray, open_: np.ndarray) -> np.ndarray:
        """(n_cases, n_rules): the rules whose signs the safety net names (``fires`` and ``open_``
        from :meth:`fires_and_open`): those the unanswered questions could still fire, a clot's
        same-day red flags that do not fire for someone who has the history they read (pregnant or
        just given birth, after surgery or immobilisation, with cancer, after an earlier clot),
        whatever the signs' answers today: a calf that is not swollen now can swell, and in
        pregnancy the risk lasts for months; and the rules marked ``watch_always`` (a swollen, tender,
        warm or red calf; breathlessness) that do not fire, whatever their signs' answers today,
        where the rest of the rule can still match; and the rules a longer duration can still meet
        (being unable to take four steps for an hour or more, 15 minutes in)."""
        watch = open_.copy()
        if len(self._risk_rules):  # their history matched as the rules are (CountTable: a few cases at once)
            met = state_of_counts(self._risk_table.counts(self._past_fertile_age_as_no(codes)), self._risk_has_any)[0]
            watch[:, self._risk_rules] |= met & ~fires[:, self._risk_rules]
        if len(self._always):  # open with their signs unanswered: whatever the signs today, while the rest can match
            blank = {**codes, **{n: np.full_like(codes[n], UNKNOWN) for n in self._always_signs}}
            could = per_rule([self.rules[k] for k in self._always], Rule.open, self._past_fertile_age_as_no(blank))
            watch[:, self._always] |= could & ~fires[:, self._always]
        if len(self._waiting) and DURATION in codes and not np.isnan(codes[DURATION]).all():
            # open, or firing, were the pain to last longer (its duration unanswered)
            later = self._past_fertile_age_as_no({**codes, DURATION: np.full(len(codes[DURATION]), np.nan)})
            fire_later, open_later = state_of_counts(self._waiting_table.counts(later), self._has_any[self._waiting])
            watch[:, self._waiting] |= (fire_later | open_later) & ~fires[:, self._waiting]
        return watch

    def safety_net(self, level: np.ndarray, open_: np.ndarray, answers: dict[str, np.ndarray], codes: bool = False):
        """Per case, the plain-language signs of the rules ``open_`` keeps (:meth:`to_watch`'s, or
        the open rules) above its level that have a sign to watch for, ``|``-separated, the most
        urgent first, each line fitted to the case's ``answers`` (its codes; :mod:`netlines`), a line
        another shown line covers left out; with ``codes``, the lines' codes (a rule's name, or its
        name and the variant's)."""
        levels = self._rule_levels
        keep = open_ & (levels[None, :] > level[:, None]) & self._watched[None, :]
        hit, could = self.lines.conditions(self._past_fertile_age_as_no(answers))
        variants = self.lines.variants(hit, could)
        keep = self.lines.uncovered(keep, hit)  # not a line another shown line says
        order = np.argsort(-levels, kind="stable")
        tables = self.lines.names if codes else self.lines.texts
        return join_variants([tables[k] for k in order], variants[:, order], keep[:, order])

    def ask_next(self, proba: np.ndarray, codes: dict[str, np.ndarray], level: np.ndarray, atypical: np.ndarray,
                 fires: np.ndarray, block_rows: int = 2048, codes_out: bool = False,
                 counts: np.ndarray | None = None) -> np.ndarray:
        """Per case, the unanswered questions whose plausible answers would change ``level``,
        ``|``-separated (at most ``ask_next.max_questions``): first those with a plausible answer
        that would send the case the same day from below it (those completing a screen rule, or a
        red flag through a question asked at any chance, first), then the others, each group the
        most likely to change the level first; in the places left, below the same day, the questions
        a same-day red flag the case leaves open needs answered (its ``all`` fields: for the DVT
        rules, whether the calf is swollen or tender, veins stand out or the whole leg is swollen;
        not the screen's, whose questions come first where one answer completes a rule), the
        likeliest answer first, and where the questions that change the level fill every place
        without one of these or one that completes a rule (a screen rule, or a red flag through a
        question asked at any chance), the last place goes to the likeliest of them (a young adult
        given only age and sex is asked about the calf, not only what happened, whether the knee
        gave way and whether it swelled within hours); never one whose premise the case denies
        (:func:`pipeline.core.parsing.premise_denied`). A swollen calf after a sprain is asked
        whether the skin is warm (a sign of a DVT) before whether the knee swelled within hours.
        How long ago the pain started is one of the questions where ``ask_next.duration_edges`` gives
        its answers' spans and something of the pain is described, or a rule that reads the duration
        fires (:meth:`_duration_changes`), in the last column of the ranking.

        An answer is plausible when its predictive probability is at least
        ``ask_next.min_answer_probability``, or when it would make a same-day screen rule fire that the
        case already meets in part (fever with a hot, swollen knee) or shows the signs of (its
        ``suggested_by``: a cold, pale foot with sudden pain and weakness): the screen is for
        conditions outside the nine, whose likelihoods say nothing of it; and likewise for a question
        of ``ask_next.at_any_chance`` that would make a same-day red flag fire that the case meets in
        part (pregnancy, for a woman of fertile age with a swollen leg). Each plausible (question, answer) of
        a case is a variant of it: the case with that answer,
        its probabilities re-weighted by the answer's likelihood, triaged as
        :func:`pipeline.decision.triage.triage_levels` would triage it (``atypical`` and ``fires``,
        from :meth:`fires`, are the case's own). A variant differs from its case in one answer, so
        only the rules that ask it can change: their state is the case's :meth:`counts` plus that
        answer's change; the others keep the case's result. Cases are taken ``block_rows`` at a time
        (each case's questions depend on its own row only, and a block's variants hold a few arrays
        of about ten values per variant: a 16k-row chunk's working memory peaks at 7 MB in blocks of
        2,048, 14 MB in blocks of 4,096; ``kneepain score`` on 1M rows, on two threads, peaks about
        15 MiB lower for about 3% more time). With ``codes_out``, the questions' field names;
        ``counts``: ``self.counts(codes)``, if the caller has them.
        """
        n = len(proba)
        counts = self.counts(codes) if counts is None else counts
        if counts.shape != (4, n, len(self.rules)):
            raise ValueError(f"counts has shape {counts.shape}, not (4, {n}, {len(self.rules)}): pass "
                             "SafetyNet.counts(codes) of the same cases.")
        # the first max_questions of each case's questions by change, ranked only where one changes
        # the level; elsewhere nothing is kept, and join_ranked reads no order where nothing is kept
        top = min(self.cfg.ask_next.max_questions, len(self.asked))
        order = np.zeros((n, top), dtype=np.intp)
        keep_ = np.zeros((n, top), dtype=bool)
        # the duration's variants once for the batch (a few per case, where it is unanswered), the
        # blocks below taking their rows of it
        duration = self._duration_changes(proba, codes, level, atypical, fires, counts) \
            if len(self.asked) > len(self.candidates) else None
        for start in range(0, n, block_rows):
            b = slice(start, start + block_rows)
            block = codes if n <= block_rows else {k: v[b] for k, v in codes.items()}  # (one block: the codes as they are)
            change, same_day, needs = self._level_changes(proba[b], block, level[b], atypical[b], fires[b], counts[:, b])
            if duration is not None:  # how long it has lasted, in the last column
                change, same_day = np.c_[change, duration[0][b]], np.c_[same_day, duration[1][b]]
                needs = np.c_[needs, np.zeros(len(change))]
            # rounded, so that equal chances rank in the questions' order rather than by the last
            # bits of their sums (a question that changes the level on either answer has a chance
            # of 1 give or take a rounding error). Chances are at most 1: a question that changes
            # the level ranks from 4 (7 if an answer sends the case the same day, 8 if that answer
            # completes a screen rule, whose chance the nine conditions cannot tell, or a red flag
            # through a question asked at any chance), and one that only gives a same-day rule
            # what it needs ranks at most 1
            some = np.flatnonzero(change.any(axis=1) | needs.any(axis=1))
            if len(some):
                moved = np.round(change[some], _RANK_DECIMALS)
                urgent = same_day[some]
                needed = np.round(needs[some], _RANK_DECIMALS)
                rank = np.where(moved > 0, 4.0 + 3.0 * (urgent > 0) + (urgent > 1) + moved, needed)
                ranked = np.argsort(-rank, axis=1, kind="stable")[:, :top]
                if top > 1:  # the last place is kept for what an open red flag needs, or a rule's completion
                    listed = (np.take_along_axis(needed, ranked, axis=1) > 0) | (np.take_along_axis(urgent, ranked, axis=1) > 1)
                    left_out = (needed > 0).any(axis=1) & ~listed.any(axis=1)
                    ranked[left_out, -1] = needed[left_out].argmax(axis=1)
                order[some + start] = ranked
                keep_[some + start] = np.take_along_axis(rank, ranked, axis=1) > 0
        return join_ranked(self.asked if codes_out else self.asked_questions, order, keep_)

    def _duration_changes(self, proba: np.ndarray, codes: dict[str, np.ndarray], level: np.ndarray,
                          atypical: np.ndarray, fires: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per case, the probability that the answer to how long the pain has lasted changes
        ``level``, and 1 where a plausible answer would send the case the same day from below it
        (``ask_next``'s ``change`` and ``same_day`` of the question), where the duration is
        unanswered and something of the pain is described (:func:`pain_described`) or a rule that
        reads the duration fires. Each span of
        ``ask_next.duration_edges`` is an answer, plausible when its predictive probability is at
        least ``ask_next.min_answer_probability``: P(span | condition) from the knowledge base's
        durations (truncated at the person's age, as the oracle reads them) re-weights the
        probabilities, and the case with the span's middle as its duration is triaged as
        :func:`pipeline.decision.triage.triage_levels` would (its rules matched again: several read
        the duration; ``fires`` and ``counts``: the cases' :meth:`fires` and :meth:`counts`, of which
        only those rules' change)."""
        change = np.zeros(len(proba))
        same_day = np.zeros(len(proba), dtype=np.int8)
        # once something of the pain is described (on age, sex and history alone, what happened and the
        # calf, which a same-day rule waits on, keep the places), or where a rule that reads the
        # duration fires (a clot before with cancer, up to 90 days: the only question left)
        asked = np.isnan(codes[DURATION]) & (pain_described(codes) | fires[:, self._duration_rules].any(axis=1))
        # a case sent the same day by a rule that does not read the duration stays there, whatever it is
        asked &= ~(fires & self._same_day_not_duration).any(axis=1)
        proba = np.asarray(proba, dtype=np.float64)
        for start in range(0, len(proba), _DURATION_BLOCK):  # a block at a time: the variants' memory stays flat
            rows = start + np.flatnonzero(asked[start:start + _DURATION_BLOCK])
            if len(rows):
                self._duration_block(proba[rows], codes, rows, level, atypical, counts[:, rows], change, same_day)
        return change, same_day

    def _duration_block(self, columns: np.ndarray, codes: dict[str, np.ndarray], rows: np.ndarray, level: np.ndarray,
                        atypical: np.ndarray, base: np.ndarray, change: np.ndarray, same_day: np.ndarray) -> None:
        """:meth:`_duration_changes` of the cases ``rows`` (``columns``: their probabilities; ``base``:
        their counts), added to ``change`` and ``same_day`` in place."""
        cfg = self.cfg
        ages, age_of = np.unique(codes["age"][rows], return_inverse=True)  # the spans' masses once per age
        with np.errstate(divide="ignore"):  # the first bound, 0 days: log 0 is -inf, and no mass lies below it
            below = duration_mass_below(*self._kb_duration, self._duration_bounds[:, None, None].clip(
                max=max_duration_days(ages)[None, :, None]))  # (bound, age, condition)
        by_age = np.diff(below, axis=0) / below[-1]  # P(span | condition, age): (span, age, condition)
        weighted = columns[None, :, :] * by_age[:, np.ravel(age_of), :]  # (span, case, condition)
        p_answer = weighted[:, :, 0].copy()  # summed over the conditions in their order: the same in every process
        for c in range(1, weighted.shape[2]):
            p_answer += weighted[:, :, c]
        # every plausible (span, case) at once, span by span: one pass of array steps for all of them
        span, which = np.nonzero(p_answer >= cfg.ask_next.min_answer_probability)
        if not len(span):
            return
        at = rows[which]
        weighted, p_answer = weighted[span, which], p_answer[span, which]
        variant = {k: v[at] for k, v in codes.items()}
        variant[DURATION] = self._duration_values[span]
        case = base[:, which].copy()
        case[:, :, self._duration_rules] = self._duration_table.counts(self._past_fertile_age_as_no(variant))
        fires = state_of_counts(case, self._has_any)[0]
        after = cost_levels_of_columns(cfg, np.ascontiguousarray(weighted.T))
        same = np.flatnonzero(after == _EMERGENCY)
        if len(same):
            soft = self.rests_on_unknowns(weighted[same], {k: v[same] for k, v in variant.items()},
                                          lambda p: cost_levels_of_columns(cfg, np.ascontiguousarray(p.T)))
            after[same[soft]] = LEVELS.index(cfg.uncertain.level)
        after = np.where(atypical[at], np.maximum(after, LEVELS.index(cfg.atypical.min_level)), after)
        after = np.maximum(after, np.where(fires, self._rule_levels[None, :], -1).max(axis=1, initial=-1))
        moved = np.flatnonzero(after != level[at])
        np.add.at(change, at[moved], p_answer[moved])  # in span order per case, as one span at a time would add
        same_day[at[moved[after[moved] == _EMERGENCY]]] = 1

    def _level_changes(self, proba: np.ndarray, codes: dict[str, np.ndarray], level: np.ndarray, atypical: np.ndarray,
                       fires: np.ndarray, counts: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n_cases, n_candidates) three times: per case and question, the probability that its
        answer changes ``level``; whether a plausible answer would send the case the same day from
        a lower level (1; 2 where that answer completes a same-day screen rule, or a red flag through a
        question asked at any chance); and, below the
        same day, the probability of a plausible answer that a same-day red flag the case leaves
        open needs (one of the rule's ``all`` fields, which it cannot fire without)."""
        change = np.zeros((len(proba), len(self.candidates)))
        same_day = np.zeros(change.shape, dtype=np.int8)
        needs = np.zeros(change.shape)
        if not self.candidates:
            return change, same_day, needs
        # P(answer | what is known) of every (question, answer) at once; plausible ones of unanswered
        # questions whose premise the case has not denied (no pop question after "no injury")
        asked = unanswered_matrix(codes, self.candidates) & ~premise_denied(codes, self.candidates, self._fertile_max)
        columns = np.ascontiguousarray(proba.T)  # by condition, then case
        p_answer = dot_exact_columns(columns, self._likelihood_rows)  # (pair, case)
        completes = self._completes_rule(counts, self._shown(counts, codes))
        plausible = asked.T[self._pair_candidate] & ((p_answer >= self.cfg.ask_next.min_answer_probability) | completes)
        # the answers a same-day red flag needs (one of its `all` fields) that a case below the same day
        # leaves open (by pair, then case), and by question, then case, their summed probability
        below = level < _EMERGENCY
        open_ = state_of_counts(counts, self._has_any)[1]
        needed = np.zeros_like(plausible)
        for k, pairs in self._same_day_needs:
            needed[pairs] |= open_[:, k] & below
        needed &= plausible
        needs_t = np.zeros((len(self.candidates), len(proba)))
        some = np.flatnonzero(needed.any(axis=1))  # added to their questions in pair order, as a loop would
        np.add.at(needs_t, self._pair_candidate[some], np.where(needed[some], p_answer[some], 0.0))
        needs = needs_t.T
        # by question, then answer, then case (np.nonzero's order; its 2-D form took eight times as long)
        flat = np.flatnonzero(plausible)
        pair = flat // len(proba)
        rows = flat - pair * len(proba)
        if not len(rows):
            return change, same_day, needs
        # per variant, the highest level of the rules that fire and do not ask its question
        others = self._levels_without(fires).ravel().take(self._pair_ask_set[pair] * len(proba) + rows)
        # a case already sent the same day by a rule that does not ask the question stays there
        kept = np.flatnonzero(~((others == _EMERGENCY) & (level.take(rows) == _EMERGENCY)))
        rows, pair, others = rows.take(kept), pair.take(kept), others.take(kept)
        which, p = self._pair_candidate[pair], p_answer.ravel().take(pair * len(proba) + rows)
        after = self._variant_levels(columns, codes, counts, rows, pair, atypical, others)
        changed = after != level[rows]
        flat = rows[changed] * len(self.candidates) + which[changed]
        change += np.bincount(flat, weights=p[changed], minlength=change.size).reshape(change.shape)
        # changed, so from below the same day; 2 where the answer completes a screen rule, or a red
        # flag through a question asked at any chance
        hit = after[changed] == _EMERGENCY
        same_day.ravel()[flat[hit]] = 1
        screen = completes.ravel().take(pair[changed] * len(proba) + rows[changed]) & hit
        same_day.ravel()[flat[screen]] = 2
        return change, same_day, needs

    def _shown(self, counts: np.ndarray, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules): whether the case shows the rule: meets it in part (a field of it
        matches: a hot, swollen knee for fever) or shows the signs that suggest it (its
        ``suggested_by``: sudden pain with weakness for a cold foot)."""
        out = (self._n_all - counts[0] + counts[1]) > 0
        for k, rule in enumerate(self.rules):
            if rule.suggested_by is not None:
                out[:, k] |= rule_fires(*rule.suggested_by, codes)
        return out

    def _completes_rule(self, counts: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """(n_pairs, n_cases): whether the pair's answer would make a same-day screen rule fire that
        the case shows (``shown``, from :meth:`_shown`), or a same-day red flag through a question
        asked at any chance (``ask_next.at_any_chance``: pregnancy beside a swollen leg). Such an
        answer is asked however unlikely the nine conditions make it: the screen is there for
        conditions the model does not know, and a woman's pregnancy is hers to say, not the rate of
        pregnancy among women with leg pain."""
        completes = np.zeros((len(self._pair_candidate), counts.shape[1]), dtype=bool)
        if counts.shape[1] <= FEW_CASES and len(self._step_rule):  # every step at once
            case = counts[:2].take(self._step_rule, axis=2).astype(np.int16)  # (2, n_cases, n_steps)
            in_part = shown.take(self._step_rule, axis=1)
            fires = (case[0] + self._step_change[0] == 0) & ((case[1] + self._step_change[1] > 0)
                                                             | ~self._has_any[self._step_rule])
            # a pair completes a rule if one of its steps does
            completes[self._step_pairs] = np.logical_or.reduceat(in_part & fires, self._step_starts, axis=1).T
            return completes
        for i, (pair, k) in enumerate(zip(self._step_pair, self._step_rule)):  # a step at a time
            case = counts[:2, :, k].astype(np.int16)
            in_part = shown[:, k]
            fires = (case[0] + self._step_change[0, 0, i] == 0) & ((case[1] + self._step_change[1, 0, i] > 0)
                                                                  | ~self._has_any[k])
            completes[pair] |= in_part & fires
        return completes

    def _levels_without(self, fires: np.ndarray) -> np.ndarray:
        """(n_ask_sets, n_cases): the highest level among the rules that fire and are not in the set
        of rules that ask a candidate (-1 when none), for each distinct such set (a candidate's:
        ``_pair_ask_set``). Rules by row, so each maximum runs along the cases."""
        levels = np.where(fires.T, self._rule_levels[:, None], -1).astype(np.int8)  # (rule, case)
        if len(fires) <= FEW_CASES:  # every set at once
            return np.where(self._ask_sets[:, :, None], np.int8(-1), levels[None]).max(axis=1, initial=-1)
        return np.stack([levels[~asks].max(axis=0, initial=-1) for asks in self._ask_sets]).reshape(-1, len(fires))

    def _variant_levels(self, columns: np.ndarray, codes: dict[str, np.ndarray], case: np.ndarray, rows: np.ndarray,
                        pair: np.ndarray, atypical: np.ndarray, others: np.ndarray) -> np.ndarray:
        """The triage level of case ``rows[i]`` with (question, answer) ``pair[i]`` (``columns``: the
        cases' probabilities by condition, ``proba.T``): the expected cost on the re-weighted
        probabilities (softened as in :meth:`rests_on_unknowns`), raised to the atypical floor and to
        the rules that fire (``case``: the cases' :meth:`counts`; ``others``: per variant, the
        highest level of the rules that fire and do not ask its question).

        A variant answers one question its case left unanswered, so only the rules that ask it can
        change, and their counts (:func:`pipeline.decision.screen.rule_counts`) are the case's plus
        that answer's change, found once per (question, answer) and rule."""
        cfg = self.cfg
        which = self._pair_candidate[pair]
        # each variant's probabilities times its answer's likelihoods, element by element, by condition
        weighted = columns.take(rows, axis=1)
        weighted *= self._likelihood_columns.take(pair, axis=1)
        level = cost_levels_of_columns(cfg, weighted)
        n_rules = len(self.rules)
        by_case_rule = _packed(case.transpose(1, 2, 0).reshape(-1, 4))

        def asking_state(v: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(fires, open) of rule ``k[i]`` for variant ``v[i]``, one of the rules that ask its question."""
            counts = (_unpacked(by_case_rule.take(rows[v] * n_rules + k))
                      + _unpacked(self._pair_counts.take(pair[v] * n_rules + k)))
            return state_of_counts(counts.T, self._has_any[k])

        def asking(v: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
            """The rules that ask the question of each variant ``v[i]``, as (positions in ``v``,
            rules, whether each position is there once): for a few variants all at once, for more
            a slot at a time (fewer rows to gather, and plain assignments: 15% less time)."""
            slots = self._asking_slots[:, which[v]]  # (slot, variant), -1 where no more rules ask it
            if len(v) <= _FEW_VARIANTS:
                slot, at = np.nonzero(slots >= 0)
                yield at, slots[slot, at], False
                return
            for k in slots:
                at = np.flatnonzero(k >= 0)
                yield at, k[at], True

        same_day = np.flatnonzero(level == _EMERGENCY)
        if len(same_day):
            # a variant has one more answer than its case, so it never rests on age and sex alone
            hide = unanswered_matrix(codes, self.no_fields)[rows[same_day]]
            now_answered = self._pair_no_field[pair[same_day]]
            at = np.flatnonzero(now_answered >= 0)
            hide[at, now_answered[at]] = False
            columns_ = weighted.take(same_day, axis=1)
            drops = self._drops_if_no(columns_, hide, lambda c: cost_levels_of_columns(cfg, c))
            soft = same_day[self._softened(drops, columns_, codes, rows[same_day], pair[same_day])]
            level[soft] = LEVELS.index(cfg.uncertain.level)
        level = np.where(atypical[rows], np.maximum(level, LEVELS.index(cfg.atypical.min_level)), level)
        level = np.maximum(level, others)
        # the asking rules that fire raise the level to theirs (looked at only where one would raise it)
        for at, k, once in asking(np.arange(len(rows))):
            up = np.flatnonzero(self._rule_levels[k] > level[at])
            at, k = at[up], k[up]
            fires = asking_state(at, k)[0]
            hit, raised = at[fires], self._rule_levels[k[fires]]
            if once:
                level[hit] = np.maximum(level[hit], raised)
            else:
                np.maximum.at(level, hit, raised)  # the highest, where several fire
        return level.astype(np.int8)


def _waits_for_time(rule: Rule) -> bool:
    """Whether ``rule`` reads how long the pain has lasted with lower bounds alone (``>=x``, or
    unknown): a pain too recent for it now can meet it later, where one past an upper bound cannot."""
    answers = [*rule.all.get(DURATION, ()), *rule.any.get(DURATION, ())]
    return any(a.startswith(">=") for a in answers) and all(a == "unknown" or a.startswith(">=") for a in answers)


def _packed(counts: np.ndarray) -> np.ndarray:
    """(m, 4) int8 counts as m int32s, each holding its row's four bytes."""
    return np.ascontiguousarray(counts, dtype=np.int8).view(np.int32).ravel()


def _unpacked(packed: np.ndarray) -> np.ndarray:
    """:func:`_packed`'s int32s back as (m, 4) int8 counts."""
    return packed.view(np.int8).reshape(-1, 4)


def _count_change(rule: Rule, name: str, answer: int) -> np.ndarray:
    """What answering ``name`` (unanswered until now) with ``answer`` adds to each of ``rule``'s
    :func:`pipeline.decision.screen.rule_counts`."""
    before, after = np.zeros(4, dtype=np.int8), np.zeros(4, dtype=np.int8)
    for part, in_all in ((rule.all, True), (rule.any, False)):
        if name in part:
            add_field_counts(before, np.bool_(answer_matches(name, part[name], UNKNOWN)), np.True_, in_all)
            add_field_counts(after, np.bool_(answer_matches(name, part[name], answer)), np.False_, in_all)
    return after - before
