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

Each rule has a line per such variant, with a code of its own for ``texts="codes"`` outputs: the
rule's name for the full line, ``name:a+b`` for a line naming the ``any`` fields ``a`` and ``b``
only, ``name:met`` for the rest of the rule alone. A case's variant of each rule is found in a few
whole-row array steps per fitted rule (:meth:`NetLines.variants`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.config import SafetyNetLine
from pipeline.core.schema import SCREEN_SIGNS, SYMPTOMS, field
from pipeline.decision.screen import field_matches

__all__ = ["NetLines", "is_sign"]


def is_sign(name: str) -> bool:
    """Whether a field is a sign a person can notice (a yes/no symptom or a screen sign), not the
    history, age or how the pain began."""
    return name in SCREEN_SIGNS or (name in SYMPTOMS and field(name).kind == "tristate")


class NetLines:
    """The safety-net lines of ``rules`` (each ``(name, any, line)``: the rule's name, its ``any``
    part and its :class:`SafetyNetLine`): per rule, its variants' codes (:attr:`names`) and texts
    (:attr:`texts`), the full line first, and which variant each case reads."""

    def __init__(self, rules: Sequence[tuple[str, dict[str, list[str]], SafetyNetLine]]):
        self.names: list[list[str]] = []
        self.texts: list[list[str]] = []
        options: list[tuple[int, str, list[str]]] = []  # (rule, field, answers) of each fitted line's `any` field
        bits: list[int] = []  # per such field, its bit in its rule's mask of the fields left out (0: a sign, never)
        self._n_masks = np.zeros(len(rules), dtype=np.int64)  # per rule, its "met" variant (0: one variant)
        for k, (name, any_, line) in enumerate(rules):
            if not line.any:  # the whole line, whatever the answers
                self.names.append([name])
                self.texts.append([line.text])
                continue
            fields = list(line.any)  # in the line's order
            droppable = [f for f in fields if not is_sign(f)]
            # per mask of the droppable fields left out, the fields the line names (mask 0: all)
            listed = [[f for f in fields if f not in droppable or not mask >> droppable.index(f) & 1]
                      for mask in range(1 << len(droppable))]
            self.names.append([name] + [f"{name}:{'+'.join(f) or 'met'}" for f in listed[1:]] + [f"{name}:met"])
            self.texts.append([line.fitted(f) for f in listed] + [line.fitted([])])
            self._n_masks[k] = 1 << len(droppable)
            options += [(k, f, any_[f]) for f in fields]
            bits += [1 << droppable.index(f) if f in droppable else 0 for f in fields]
        # the pairs of rules with a line in common ("the calf or leg swells": a swollen calf's rule, and
        # a swollen leg's with the history met), and each variant's text as a number, by rule
        text_id = {t: i for i, t in enumerate(dict.fromkeys(t for texts in self.texts for t in texts))}
        self._text_id = [np.array([text_id[t] for t in texts], dtype=np.int64) for texts in self.texts]
        ids = [set(row.tolist()) for row in self._text_id]
        self._clashes = [(a, b) for a in range(len(rules)) for b in range(a + 1, len(rules)) if ids[a] & ids[b]]
        # the distinct (field, answers) the fitted lines' `any` fields match (an earlier clot's "yes" is
        # four rules' field); per fitted rule, its fields' places among them, and those of the fields
        # a "no" leaves out with their bits
        distinct = list(dict.fromkeys((f, tuple(answers)) for _, f, answers in options))
        self._matched = [(f, list(answers)) for f, answers in distinct]
        self._fitted: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for k in dict.fromkeys(r for r, _, _ in options):
            mine = [(distinct.index((f, tuple(answers))), bit) for (r, f, answers), bit in zip(options, bits) if r == k]
            self._fitted.append((k, np.array([j for j, _ in mine], dtype=np.intp),
                                 np.array([j for j, bit in mine if bit], dtype=np.intp),
                                 np.array([bit for _, bit in mine if bit], dtype=np.int64)))

    def all_lines(self) -> list[tuple[int, str, str]]:
        """Every variant of every rule: (its rule's index, its code, its text)."""
        return [(k, name, text) for k, (names, texts) in enumerate(zip(self.names, self.texts))
                for name, text in zip(names, texts)]

    def variants(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """(n_cases, n_rules) int64: the variant (an index into its rule's :attr:`names` and
        :attr:`texts`) each case reads of each rule."""
        out = np.zeros((len(codes["age"]), len(self.names)), dtype=np.int64)
        if not self._fitted:
            return out
        hit = np.empty((len(self._matched), len(out)), dtype=bool)  # a row per (field, answers)
        answered_otherwise = np.empty_like(hit)
        for j, (name, answers) in enumerate(self._matched):
            matched, unknown = field_matches(name, answers, codes)
            hit[j] = matched
            np.logical_not(matched | unknown, out=answered_otherwise[j])
        for k, fields, droppable, bits in self._fitted:  # a few rules, each in a few whole-row steps
            met = hit[fields].any(axis=0)
            gone = bits @ answered_otherwise[droppable]  # the mask of the fields answered otherwise
            out[:, k] = np.where(met, self._n_masks[k], gone)
        return out

    def unrepeated(self, variants: np.ndarray, keep: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """``keep`` (n_cases, n_rules: the lines a case shows, of its ``variants``) without a line
        whose text a line kept of a rule at a higher level (``levels``, per rule), or of an earlier
        one at the same level, has: one line, at its most urgent."""
        if not self._clashes:
            return keep
        keep = keep.copy()
        for a, b in self._clashes:
            same = keep[:, a] & keep[:, b] & (self._text_id[a][variants[:, a]] == self._text_id[b][variants[:, b]])
            keep[same, b if levels[a] >= levels[b] else a] = False
        return keep
