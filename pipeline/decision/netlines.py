"""The safety net's lines, fitted to what the person has said.

A rule's line names the signs that would fire it. Where the rule fires on one of several things
(its ``any`` part: "after surgery, ..., with cancer, or after an earlier clot"; "cannot take four
steps on it or are 55 or older") and the configuration gives each its words
(:class:`pipeline.core.config.SafetyNetLine`), the line names only those that could still match:

- a history or an age answered otherwise is left out ("or are 55 or older" at 30, "after an earlier
  clot" for someone who never had one): it will not change;
- a sign answered "no" is kept: a calf that is not swollen today can swell tomorrow;
- where one of them already matches, the line names the rest of the rule alone ("you injure your
  knee in a fall, a twist or a blow" at 60).

Each rule has a line per such variant (an "item"), with a code of its own for ``texts="codes"``
outputs: the rule's name for the full line, ``name:a+b`` for a line naming the ``any`` fields ``a``
and ``b`` only, ``name:met`` for the rest of the rule alone. A case's item per rule is found in a
few array steps over all the rules at once (:meth:`NetLines.items`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.config import SafetyNetLine
from pipeline.core.schema import SCREEN_SIGNS, SYMPTOMS, field
from pipeline.decision.screen import CountTable

__all__ = ["NetLines", "is_sign"]


def is_sign(name: str) -> bool:
    """Whether a field is a sign a person can notice (a yes/no symptom or a screen sign), not the
    history, age or how the pain began."""
    return name in SCREEN_SIGNS or (name in SYMPTOMS and field(name).kind == "tristate")


class NetLines:
    """The safety-net lines of ``rules`` (each ``(name, any, line)``: the rule's name, its ``any``
    part and its :class:`SafetyNetLine`): every variant's text and code, and which one each case
    reads."""

    def __init__(self, rules: Sequence[tuple[str, dict[str, list[str]], SafetyNetLine]]):
        self.texts: list[str] = []
        self.names: list[str] = []
        self.rule_of: list[int] = []  # per item, its rule's index
        first = []
        options: list[tuple[int, str, list[str]]] = []  # (rule, field, answers) of each fitted line's `any` field
        bits: list[int] = []  # per such field, its bit in its rule's mask of the fields left out (0: a sign, never)
        self._n_masks = np.zeros(len(rules), dtype=np.int64)  # per rule, the "met" item's offset (0: one item)
        for k, (name, any_, line) in enumerate(rules):
            first.append(len(self.texts))
            if not line.any:  # the whole line, whatever the answers
                self._add(k, name, line.text)
                continue
            fields = list(line.any)  # in the line's order
            droppable = [f for f in fields if not is_sign(f)]
            for mask in range(1 << len(droppable)):
                gone = {f for bit, f in enumerate(droppable) if mask >> bit & 1}
                listed = [f for f in fields if f not in gone]
                self._add(k, name if not gone else f"{name}:{'+'.join(listed) or 'met'}", line.fitted(listed))
            self._add(k, f"{name}:met", line.fitted([]))
            self._n_masks[k] = 1 << len(droppable)
            options += [(k, f, any_[f]) for f in fields]
            bits += [1 << droppable.index(f) if f in droppable else 0 for f in fields]
        self._first = np.array(first, dtype=np.int64)
        # the pairs of rules with a line in common ("the calf or leg swells": a swollen calf's rule, and
        # a swollen leg's with the history met), and each item's text as a number
        text_id = {t: i for i, t in enumerate(dict.fromkeys(self.texts))}
        self._text_id = np.array([text_id[t] for t in self.texts], dtype=np.int64)
        ids = [{text_id[t] for t, r in zip(self.texts, self.rule_of) if r == k} for k in range(len(rules))]
        self._clashes = [(a, b) for a in range(len(rules)) for b in range(a + 1, len(rules)) if ids[a] & ids[b]]
        # each fitted line's `any` field as a rule of its own, matched and counted as the rules are:
        # counts[1] whether it matches, counts[3] whether it matches or is unanswered; a fitted
        # rule's fields are side by side, from its start
        self._options = CountTable([({}, {f: answers}) for _, f, answers in options])
        self._fitted = np.array(list(dict.fromkeys(k for k, _, _ in options)), dtype=np.intp)
        self._starts = np.array([[k for k, _, _ in options].index(k) for k in self._fitted], dtype=np.intp)
        self._bits = np.array(bits, dtype=np.int64)

    def _add(self, rule: int, code: str, text: str) -> None:
        self.rule_of.append(rule)
        self.names.append(code)
        self.texts.append(text)

    def items(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules) int64: the item (an index into :attr:`texts` and :attr:`names`) each
        case reads for each rule."""
        out = np.tile(self._first, (len(codes["age"]), 1))
        if not len(self._fitted):
            return out
        counts = self._options.counts(codes)  # (4, n_cases, n_fields)
        met = np.logical_or.reduceat(counts[1] > 0, self._starts, axis=1)
        gone = np.add.reduceat((counts[3] == 0) * self._bits, self._starts, axis=1)  # the fields answered otherwise
        out[:, self._fitted] += np.where(met, self._n_masks[self._fitted], gone)
        return out

    def unrepeated(self, items: np.ndarray, keep: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """``keep`` (n_cases, n_rules: the lines a case shows, its ``items``) without a line whose
        text a line kept of a rule at a higher level (``levels``, per rule), or of an earlier one at
        the same level, has: one line, at its most urgent."""
        if not self._clashes:
            return keep
        keep = keep.copy()
        for a, b in self._clashes:
            same = keep[:, a] & keep[:, b] & (self._text_id[items[:, a]] == self._text_id[items[:, b]])
            keep[same, b if levels[a] >= levels[b] else a] = False
        return keep
