"""Triage under unanswered questions: the safety net, the softened emergency and what to ask next.

A case seldom answers everything. Three things follow from what is still unknown:

- **the safety net**: the red flags and screen rules that would raise the level and that the
  unanswered questions could still fire, in plain words (``safety_net``);
- **the uncertain emergency**: when the expected cost points to the same day but a plain "no" to
  the unanswered safety-net questions would not, the emergency rests on what is unknown (with only
  age and sex, on the prior alone, which is never enough). The case is sent at the configured ``uncertain.level`` with
  the safety net instead, as clinicians safety-net a routine appointment. Red flags and the screen
  still send a case the same day whenever they fire;
- **what to ask next**: the unanswered questions whose plausible answers would change the level
  (``ask_next``), most likely to change it first.

An answer's effect on the probabilities is taken from the knowledge base: P(answer | condition),
summed over the latent severity, multiplies the model's probabilities (Bayes' rule with the
answer independent of the other answers given the condition, as in the knowledge base's model
but for the shared severity). Every product is element-wise or :func:`dot_exact`, so the levels
are the same in every process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.blas import dot_exact
from pipeline.core.config import LEVELS, ScreenConfig, TriageConfig
from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.schema import field
from pipeline.core.textcols import join_ranked
from pipeline.core.wording import question
from pipeline.decision.conformal import known_share
from pipeline.decision.costs import cost_levels
from pipeline.decision.screen import rule_fires, rule_open, unanswered

__all__ = ["Rule", "SafetyNet", "answer_likelihoods"]

_EMERGENCY = LEVELS.index("emergency")


@dataclass(frozen=True)
class Rule:
    """A red flag or a screen rule, in one form."""

    all: dict[str, list[str]]
    any: dict[str, list[str]]
    level: int
    safety_net: str
    name: str

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
    rules = [Rule({k: [v] for k, v in f.all.items()}, {k: [v] for k, v in f.any.items()}, LEVELS.index(f.level),
                  f.safety_net, f.name) for f in cfg.red_flags]
    return rules + [Rule(dict(r.all), dict(r.any), LEVELS.index(r.level), r.safety_net, r.name)
                    for r in (screen.rules if screen else [])]


def answer_likelihoods(kb: KnowledgeBase, name: str) -> np.ndarray:
    """(n_answers, n_conditions) P(answer | condition) of a yes/no (no, yes) or category field,
    summed over the latent severity with P(severity | condition)."""
    f = field(name)
    if f.kind == "category":
        return np.ascontiguousarray(kb.category[name].T)
    if f.kind != "tristate" or name == "pregnant":
        raise ValueError(f"{name!r}: only yes/no questions other than pregnant and categories have likelihoods here")
    yes = kb.p_yes(name)
    return np.stack([1.0 - yes, yes])


class SafetyNet:
    """The rules, the knowledge base's answer likelihoods and the questions ``ask_next`` considers."""

    def __init__(self, cfg: TriageConfig, screen: ScreenConfig | None, kb: KnowledgeBase):
        self.cfg = cfg
        self.rules = rules_of(cfg, screen)
        self.texts = [r.safety_net for r in self.rules]
        self.names = [r.name for r in self.rules]
        # the yes/no questions of the same-day rules: answered "no", would the emergency stand?
        self.no_fields = list(dict.fromkeys(n for r in self.rules if r.level == _EMERGENCY for n in r.fields
                                            if field(n).kind == "tristate" and n != "pregnant"))
        self.log_no = {n: np.log(answer_likelihoods(kb, n)[0]) for n in self.no_fields}
        candidates = [n for r in self.rules for n in r.fields] + list(cfg.ask_next.fields)
        self.candidates = list(dict.fromkeys(n for n in candidates
                                             if field(n).kind in ("tristate", "category") and n != "pregnant"))
        self.likelihood = {n: answer_likelihoods(kb, n) for n in self.candidates}
        self.questions = [question(n) for n in self.candidates]
        self._rule_levels = np.array([r.level for r in self.rules], dtype=np.int8)
        # which rules ask each candidate; every (candidate, answer) likelihood row, and where it is
        self._asks = np.array([[n in r.fields for r in self.rules] for n in self.candidates], dtype=bool
                              ).reshape(len(self.candidates), len(self.rules))
        width = max((len(v) for v in self.likelihood.values()), default=0)
        self._pair = np.zeros((len(self.candidates), width), dtype=np.int64)
        rows_: list[np.ndarray] = []
        for j, name in enumerate(self.candidates):
            for a, row in enumerate(self.likelihood[name]):
                self._pair[j, a] = len(rows_)
                rows_.append(row)
        self._likelihood_rows = np.array(rows_).reshape(len(rows_), -1)

    def open_rules(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules): which rules the unanswered questions could still fire."""
        n = len(codes["age"])
        return np.column_stack([r.open(codes) for r in self.rules]) if self.rules else np.zeros((n, 0), bool)

    def rests_on_unknowns(self, proba: np.ndarray, codes: dict[str, np.ndarray], open_: np.ndarray,
                          cost_level_of) -> np.ndarray:
        """Per case, whether the same day rests on what is unknown: nothing but age and sex is
        answered (the prior alone), or the expected-cost level would drop below the same day if
        every unanswered question of a same-day rule that could still fire were answered "no"."""
        log_p = np.log(np.maximum(proba, 1e-300))
        for name in self.no_fields:
            asked_by_open = np.zeros(len(proba), dtype=bool)
            for j, r in enumerate(self.rules):
                if r.level == _EMERGENCY and name in r.fields:
                    asked_by_open |= open_[:, j]
            hide = unanswered(name, codes) & asked_by_open
            log_p = log_p + np.where(hide[:, None], self.log_no[name][None, :], 0.0)
        p_no = np.exp(log_p - log_p.max(axis=1, keepdims=True))  # unnormalised: the level is scale-free
        return (cost_level_of(p_no) < _EMERGENCY) | (known_share(codes) == 0)

    def safety_net(self, level: np.ndarray, open_: np.ndarray, codes: bool = False):
        """Per case, the plain-language signs of the open rules above its level, ``|``-separated,
        the most urgent first (with ``codes``, the rules' names)."""
        levels = np.array([r.level for r in self.rules])
        keep = open_ & (levels[None, :] > level[:, None])
        order = np.tile(np.argsort(-levels, kind="stable"), (len(keep), 1))
        return join_ranked(self.names if codes else self.texts, order, np.take_along_axis(keep, order, axis=1))

    def fires(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules): which rules fire."""
        n = len(codes["age"])
        return np.column_stack([r.fires(codes) for r in self.rules]) if self.rules else np.zeros((n, 0), bool)

    def ask_next(self, proba: np.ndarray, codes: dict[str, np.ndarray], level: np.ndarray, atypical: np.ndarray,
                 fires: np.ndarray, batch_rows: int = 100_000, codes_out: bool = False) -> np.ndarray:
        """Per case, the unanswered questions whose plausible answers would change ``level``,
        ``|``-separated, the most likely to change it first (at most ``ask_next.max_questions``).

        Each plausible (question, answer) of a case is a variant of it: the case with that answer,
        its probabilities re-weighted by the answer's likelihood, triaged as
        :func:`pipeline.decision.triage.triage_levels` would triage it (``atypical`` and ``fires``,
        from :meth:`fires`, are the case's own). Variants are triaged ``batch_rows`` at a time. A
        variant differs from its case in one answer, so only the rules that ask it are matched
        again; the others keep the case's result. With ``codes_out``, the questions' field names.
        """
        n = len(proba)
        floor = self.cfg.ask_next.min_answer_probability
        parts = []  # per candidate: (case rows, candidate, answer, P(answer | what is known))
        for j, name in enumerate(self.candidates):
            rows = np.flatnonzero(unanswered(name, codes))
            if not len(rows):
                continue
            p_answer = dot_exact(proba[rows], self.likelihood[name])
            for a in range(p_answer.shape[1]):
                keep = p_answer[:, a] >= floor
                if keep.any():
                    parts.append((rows[keep], j, a, p_answer[keep, a]))
        change = np.zeros((n, len(self.candidates)))
        if parts:
            rows = np.concatenate([r for r, _, _, _ in parts])
            which = np.concatenate([np.full(len(r), j, dtype=np.int16) for r, j, _, _ in parts])
            answer = np.concatenate([np.full(len(r), a, dtype=np.int8) for r, _, a, _ in parts])
            p = np.concatenate([q for _, _, _, q in parts])
            others = self._levels_without(fires)
            for at in range(0, len(rows), batch_rows):
                b = slice(at, at + batch_rows)
                after = self._variant_levels(proba, codes, rows[b], which[b], answer[b], atypical, others)
                changed = after != level[rows[b]]
                flat = rows[b][changed] * len(self.candidates) + which[b][changed]
                change += np.bincount(flat, weights=p[b][changed], minlength=change.size).reshape(change.shape)
        order = np.argsort(-change, axis=1, kind="stable")
        keep_ = np.take_along_axis(change > 0, order, axis=1)
        keep_[:, self.cfg.ask_next.max_questions:] = False
        return join_ranked(self.candidates if codes_out else self.questions, order, keep_)

    def _levels_without(self, fires: np.ndarray) -> np.ndarray:
        """(n_cases, n_candidates): the highest level among the rules that fire and do not ask the
        candidate (-1 when none)."""
        levels = np.where(fires, self._rule_levels[None, :], -1).astype(np.int8)
        out = np.empty((len(fires), len(self.candidates)), dtype=np.int8)
        for j in range(len(self.candidates)):
            out[:, j] = levels[:, ~self._asks[j]].max(axis=1, initial=-1)
        return out

    def _variant_levels(self, proba: np.ndarray, codes: dict[str, np.ndarray], rows: np.ndarray, which: np.ndarray,
                        answer: np.ndarray, atypical: np.ndarray, others: np.ndarray) -> np.ndarray:
        """The triage level of case ``rows[i]`` with candidate ``which[i]`` answered ``answer[i]``:
        the expected cost on the re-weighted probabilities (softened as in
        :meth:`rests_on_unknowns`), raised to the atypical floor and to the rules that fire."""
        cfg = self.cfg
        weighted = proba[rows] * self._likelihood_rows[self._pair[which, answer]]
        level = cost_levels(cfg, weighted)
        same_day = np.flatnonzero(level == _EMERGENCY)
        if len(same_day):
            sub = self._with_answers(codes, rows[same_day], which[same_day], answer[same_day], codes)
            soft = same_day[self.rests_on_unknowns(weighted[same_day], sub, self.open_rules(sub),
                                                   lambda q: cost_levels(cfg, q))]
            level[soft] = LEVELS.index(cfg.uncertain.level)
        level = np.where(atypical[rows], np.maximum(level, LEVELS.index(cfg.atypical.min_level)), level)
        level = np.maximum(level, others[rows, which])
        for j in np.unique(which):
            asking = np.flatnonzero(self._asks[j])
            if not len(asking):
                continue
            at = np.flatnonzero(which == j)
            fields = {"age", *(f for k in asking for f in self.rules[k].fields)}
            variant = self._with_answers(codes, rows[at], which[at], answer[at], fields)
            for k in asking:
                hit = at[self.rules[k].fires(variant)]
                level[hit] = np.maximum(level[hit], self.rules[k].level)
        return level.astype(np.int8)

    def _with_answers(self, codes: dict[str, np.ndarray], rows: np.ndarray, which: np.ndarray, answer: np.ndarray,
                      fields) -> dict[str, np.ndarray]:
        """The codes of ``fields`` for cases ``rows``, candidate ``which[i]`` set to ``answer[i]``."""
        out = {k: codes[k][rows] for k in fields}
        for j in np.unique(which):
            name = self.candidates[j]
            if name in out:
                at = which == j
                out[name][at] = answer[at]
        return out
