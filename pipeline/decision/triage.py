"""Triage: red-flag rules on the answers, and an expected-cost decision on the probabilities.

The level is the one that minimises the expected cost written in configs/triage.yaml; a red flag
raises it to the rule's level whatever the model says; nothing here ever lowers a level.
Reasons and advice are looked up from small tables, so a million cases cost a few array lookups.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.blas import dot_exact
from pipeline.core.config import LEVELS, TriageConfig
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS
from pipeline.decision.screen import rule_fires

__all__ = ["red_flags", "cost_levels", "triage_levels", "advice_table"]



def red_flags(cfg: TriageConfig, codes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per case, the highest red-flag level (-1 when none fires) and the index of that rule."""
    n = len(codes["sex"])
    level = np.full(n, -1, dtype=np.int8)
    rule = np.full(n, -1, dtype=np.int16)
    for i, flag in enumerate(cfg.red_flags):
        fires = rule_fires({k: [v] for k, v in flag.all.items()}, {k: [v] for k, v in flag.any.items()}, codes)
        higher = fires & (LEVELS.index(flag.level) > level)
        level[higher] = LEVELS.index(flag.level)
        rule[higher] = i
    return level, rule


def cost_matrix(cfg: TriageConfig) -> np.ndarray:
    """(n_conditions, n_levels) cost of each level when the condition is the true one."""
    return np.array([[cfg.costs[c][lv] for lv in LEVELS] for c in CONDITIONS], dtype=np.float64)


def cost_levels(cfg: TriageConfig, proba: np.ndarray) -> np.ndarray:
    """The level minimising expected cost under ``proba``; ties go to the more urgent level."""
    expected = dot_exact(proba, cost_matrix(cfg).T)  # no BLAS: the same level in every process
    # reversed argmin picks the most urgent of equally costly levels
    return (len(LEVELS) - 1 - np.argmin(expected[:, ::-1], axis=1)).astype(np.int8)


def triage_levels(cfg: TriageConfig, codes: dict[str, np.ndarray], proba: np.ndarray,
                  atypical: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Final level per case and a reason code: 0 cost decision, 1 atypical, 2 + k red flag k."""
    level = cost_levels(cfg, proba)
    reason = np.zeros(len(level), dtype=np.int16)
    if atypical is not None:
        floor = LEVELS.index(cfg.atypical.min_level)
        raise_ = atypical & (level < floor)
        level[raise_] = floor
        reason[raise_] = 1
    flag_level, rule = red_flags(cfg, codes)
    # a red flag at or above the decided level is the reason given: it is the clearer one
    cite = (flag_level >= 0) & (flag_level >= level)
    level[cite] = flag_level[cite]
    reason[cite] = 2 + rule[cite]
    return level, reason


def reason_table(cfg: TriageConfig) -> np.ndarray:
    """Text for each reason code (see :func:`triage_levels`)."""
    return np.array(["the level with the lowest expected cost under the predicted probabilities",
                     "atypical case: it fits none of the documented profiles well, so it needs a professional look",
                     *[f"red flag ({f.name}): {f.reason}" for f in cfg.red_flags]], dtype=object)


def advice_table(cfg: TriageConfig) -> np.ndarray:
    """(n_levels, n_conditions) advice: the level's instruction, the likely condition's advice, the closing."""
    return np.array([[f"{cfg.level_text[lv]} Most likely {CONDITION_LABELS[c]}: {cfg.advice[c]} {cfg.closing}"
                      for c in CONDITIONS] for lv in LEVELS], dtype=object)
