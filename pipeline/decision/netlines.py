"""The safety net's lines, fitted to what the person has said.

A rule's line names the signs that would fire it. Where the configuration gives a rule's line
variants (:class:`pipeline.core.config.SafetyNetLine`), a case reads the one that fits it:

- ``met``, where one of the rule's ``any`` fields already matches: the rest of the rule alone
  ("the calf or leg swells" after surgery, where the full line lists surgery, a cast, cancer and
  an earlier clot);
- ``without``, where settled histories or an age among them are answered otherwise ("or are 55 or
  older" left out at 30; "after an earlier clot" for someone who never had one); a sign said "no"
  stays in its line, since it can appear later, and so does a history that can still come (a
  cast, an operation);
- the full line otherwise.

Each variant has a code of its own for ``texts="codes"`` outputs: the rule's name for the full
line, ``name:met``, and ``name:without_<fields>`` (``+``-joined) for the others.

A line is not shown where its rule, were it to fire, would fire another rule shown at its level
or above, given the settled answers the case has given: a history, an age, a pregnancy, not a
sign (which can pass) nor a blank (:meth:`NetLines.uncovered`). The other line names the line's
sign and the level it calls for: in pregnancy, a swollen calf's "the calf or leg swells" within a
day or two is the pregnancy line's same day; after surgery, "the calf or leg swells" the same day
says what "the calf or leg swells and is tender, warm or red, ..." does. Of two lines that say
each other, the earlier rule's stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.core.config import SafetyNetLine
from pipeline.core.schema import is_settled, is_sign
from pipeline.core.sizes import FEW_CASES
from pipeline.decision.screen import CountTable, field_matches

__all__ = ["LineRule", "NetLines"]


class LineRule(Protocol):
    """What :class:`NetLines` reads of a rule (:class:`pipeline.decision.safety.Rule`)."""

    @property
    def name(self) -> str: ...
    @property
    def level(self) -> int: ...
    @property
    def all(self) -> dict[str, list[str]]: ...
    @property
    def any(self) -> dict[str, list[str]]: ...
    @property
    def line(self) -> SafetyNetLine: ...


class NetLines:
    """The safety-net lines of ``rules``: per rule, its variants' codes (:attr:`names`) and texts
    (:attr:`texts`), the full line first; which variant each case reads; which lines another says."""

    def __init__(self, rules: Sequence[LineRule]):
        self.names: list[list[str]] = []
        self.texts: list[list[str]] = []
        self._met = np.full(len(rules), -1, dtype=np.int64)  # per rule, its `met` variant (-1: none)
        # the single-field conditions the lines read, each (field, answers) once
        conditions: dict[tuple[str, tuple[str, ...]], int] = {}

        def at(part: dict[str, list[str]]) -> list[int]:
            return [conditions.setdefault((n, tuple(v)), len(conditions)) for n, v in part.items()]

        # (rule, its settled fields' conditions): the variant where the fields of mask m (bit j for
        # the j-th) are answered otherwise is m, the full line 0; (rule, its `any` fields' conditions)
        # of those with a `met` variant
        self._settled: list[tuple[int, list[int]]] = []
        self._any_parts: list[tuple[int, list[int]]] = []
        for k, rule in enumerate(rules):
            line, settled = rule.line, rule.line.settled
            by_fields = {frozenset(key.split("+")): text for key, text in line.without.items()}
            gone = [[f for j, f in enumerate(settled) if m >> j & 1] for m in range(1, 1 << len(settled))]
            names = [rule.name] + [f"{rule.name}:without_{'+'.join(g)}" for g in gone]
            texts = [line.text] + [by_fields[frozenset(g)] for g in gone]
            if settled:
                self._settled.append((k, at({f: rule.any[f] for f in settled})))
            if line.met is not None:
                self._met[k] = len(names)
                names.append(f"{rule.name}:met")
                texts.append(line.met)
                self._any_parts.append((k, at(rule.any)))
            self.names.append(names)
            self.texts.append(texts)
        # (a, b, all, any): rule a, at rule b's level or above, fires whenever b does where the case
        # matches every condition of `all` and, if `any` is not empty, one of `any` (a's fields that
        # b's `all` part does not settle)
        self._covers = [(a, b, at(rest[0]), at(rest[1])) for a, ra in enumerate(rules) for b, rb in enumerate(rules)
                        if a != b and ra.level >= rb.level and (rest := _rest_once_met(ra, rb.all)) is not None]
        self._conditions = [(n, list(v)) for n, v in conditions]
        self._table = CountTable([({}, {n: list(v)}) for n, v in conditions])  # each condition as a rule's `any`
        # the same pairs as arrays, for a few cases at once: per pair its rules, and the conditions
        # it needs all of and one of (none: a has no `any` left to meet)
        self._pair_a = np.array([a for a, *_ in self._covers], dtype=np.intp)
        self._pair_b = np.array([b for _, b, *_ in self._covers], dtype=np.intp)
        self._needs_all = np.zeros((len(self._covers), len(conditions)), dtype=bool)
        self._needs_any = np.zeros_like(self._needs_all)
        for p, (_, _, all_, any_) in enumerate(self._covers):
            self._needs_all[p, all_] = True
            self._needs_any[p, any_] = True
        self._no_any = ~self._needs_any.any(axis=1)

    def all_lines(self) -> list[tuple[int, str, str]]:
        """Every variant of every rule: (its rule's index, its code, its text)."""
        return [(k, name, text) for k, (names, texts) in enumerate(zip(self.names, self.texts))
                for name, text in zip(names, texts)]

    def conditions(self, codes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(hit, could), each (n_conditions, n_cases) bool: whether each condition the lines read
        matches the case's answers (``codes``), and whether it matches or is unanswered; for a few
        cases looked up at once (:class:`CountTable`), for more matched one by one (ten times faster
        at 16k cases)."""
        n = len(codes["age"])
        if n <= FEW_CASES:
            counts = self._table.counts(codes)  # (4, n_cases, n_conditions)
            return counts[1].T > 0, counts[3].T > 0
        hit = np.empty((len(self._conditions), n), dtype=bool)
        could = np.empty_like(hit)
        for j, (name, answers) in enumerate(self._conditions):
            matched, unknown = field_matches(name, answers, codes)
            hit[j] = matched
            np.logical_or(matched, unknown, out=could[j])
        return hit, could

    def variants(self, hit: np.ndarray, could: np.ndarray) -> np.ndarray:
        """(n_cases, n_rules) int64: the variant (an index into its rule's :attr:`names` and
        :attr:`texts`) each case reads of each rule, from its :meth:`conditions`."""
        out = np.zeros((hit.shape[1], len(self.names)), dtype=np.int64)
        for k, settled in self._settled:
            for bit, j in enumerate(settled):
                out[~could[j], k] += 1 << bit
        for k, any_ in self._any_parts:
            out[hit[any_].any(axis=0), k] = self._met[k]
        return out

    def uncovered(self, keep: np.ndarray, hit: np.ndarray) -> np.ndarray:
        """``keep`` (n_cases, n_rules: the lines a case shows) without a line whose rule, were it to
        fire, would fire a rule shown at its level or above, given the case's settled answers (its
        :meth:`conditions`' ``hit``): that line names its sign, at the level it calls for."""
        if not self._covers:
            return keep
        # a pair at a time, in order, against the lines still shown: of two rules that cover each
        # other, the earlier one's line stays
        if len(keep) <= FEW_CASES:  # the pairs' conditions for every pair at once, then the few that apply
            cases = hit.T[:, None, :]
            fires = ~(~cases & self._needs_all).any(axis=2) & ((cases & self._needs_any).any(axis=2) | self._no_any)
            out = keep.copy()
            for row, pair in zip(*np.nonzero(fires & keep[:, self._pair_a] & keep[:, self._pair_b])):
                if out[row, self._pair_a[pair]]:
                    out[row, self._pair_b[pair]] = False
            return out
        out = np.ascontiguousarray(keep.T)  # a row per rule, read whole
        some = np.asarray(out.any(axis=1))
        for a, b, all_, any_ in self._covers:
            if not (some[a] and some[b]):
                continue
            fires = out[a] & out[b]
            if all_:
                fires &= hit[all_].all(axis=0)
            if any_:
                fires &= hit[any_].any(axis=0)
            out[b] &= ~fires
        return out.T


def _rest_once_met(rule: LineRule, met: dict[str, list[str]]) -> tuple[dict, dict] | None:
    """What else ``rule`` needs to fire once a rule part ``met`` (an ``all`` part) matches, in
    settled answers the case has given (:func:`pipeline.core.schema.is_settled`; a blank does not
    count): its ``all`` fields and, where ``met`` meets none of them, one of its ``any`` fields,
    that ``met`` does not name. None where it cannot be known to fire through ``met``: ``met``
    names none of its fields, matches an answer of its ``all`` part that the rule does not, or it
    needs a sign (which can pass: a warm calf today is no reason to drop tomorrow's swollen calf's
    line) or the duration (which grows), or ``met`` has a sign the rule does not read (its line
    would not name it)."""
    if not met.keys() & (rule.all.keys() | rule.any.keys()):
        return None
    if any(is_sign(name) and name not in rule.all and name not in rule.any for name in met):
        return None
    if any(name in met and not set(met[name]) <= set(answers) for name, answers in rule.all.items()):
        return None
    met_any = any(name in met and set(met[name]) <= set(answers) for name, answers in rule.any.items())
    rest_all = {n: _given(a) for n, a in rule.all.items() if n not in met}
    rest_any = {} if met_any or not rule.any else \
        {n: _given(a) for n, a in rule.any.items() if n not in met and is_settled(n) and _given(a)}
    if (rule.any and not met_any and not rest_any) or not all(is_settled(n) and a for n, a in rest_all.items()):
        return None
    return rest_all, rest_any


def _given(answers: list[str]) -> list[str]:
    """``answers`` without "unknown": the answers a case has given that match."""
    return [a for a in answers if a != "unknown"]
