"""The exact Bayes posterior of the generator: the best any classifier can do on generated data.

P(condition | known fields) is computed under the knowledge base's own model, summing over the
latent severity. Unknown fields are missing at random (the generator hides answers independently
of the condition), so they drop out of the likelihood rather than counting as "no".
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd

from pipeline.core.answertables import answer_tables
from pipeline.core.cases import as_parsed, in_blocks
from pipeline.core.knowledge import AGES, KnowledgeBase, duration_log_pdf, duration_mass_below
from pipeline.core.parsing import ParsedCases
from pipeline.core.rowwise import logsumexp_rows, softmax_rows
from pipeline.core.schema import CATEGORY_FIELDS, CONDITIONS, FIELDS, SYMPTOMS, field, max_duration_days
from pipeline.core.special import norm_logpdf

__all__ = ["oracle_posterior", "oracle_log_joint", "log_density", "field_log_likelihoods"]

# rows at a time: every row is computed alone, and the blocks of sums stay a few MB (a 16k-row
# chunk's peak: 4 MB; 7 MB, and 20% slower on one thread, in blocks of 8,192)
_CHUNK = 1 << 12
DURATION_FLOOR_DAYS = 1e-5  # a duration of 0 days is read as this (its log must be finite)
_FEMALE = field("sex").allowed.index("female")


class _Tables:
    """Log-probability lookup tables; the last row of each is 0 (an unknown answer adds nothing)."""

    def __init__(self, kb: KnowledgeBase):
        self.log_prior = np.log(kb.prior)
        self.log_severity = np.log(kb.severity)
        self.symptom = {s: _tri(kb.tristate[s]) for s in SYMPTOMS}  # (3, 9, 3)
        self.context = {f: _tri(t[:, 0]) for f, t in kb.tristate.items()
                        if f not in SYMPTOMS and f != "hormonal_therapy"}  # (3, 9)
        # hormonal therapy: a woman's rates and a man's (3, 9) each
        self.hormonal = (_tri(kb.tristate["hormonal_therapy"][:, 0]), _tri(kb.hormonal_men))
        self.category = {f: np.vstack([np.log(kb.category[f]).T, np.zeros(len(CONDITIONS))])
                         for f in CATEGORY_FIELDS if f != "sex"}
        self.sex = np.vstack([np.log(kb.female), np.log1p(-kb.female), np.zeros(len(CONDITIONS))])
        self.age = np.vstack([np.log(kb.age_pmf).T, np.zeros(len(CONDITIONS))])  # (n_ages + 1, 9)
        self.pregnant = _tri(kb.pregnant)
        self.pregnant_other = np.log([1 - kb.pregnant_other, kb.pregnant_other, 1.0])
        self.fertile_max = kb.fertile_age[1]
        self.bmi = kb.bmi
        self.duration = kb.duration
        self.duration_episode = kb.duration_episode
        # the duration is truncated at the patient's age (max_duration_days): log 1/P(duration <= bound)
        # per (age, condition), added where the duration is known; the last row is 0 (no age)
        self.duration_norm = np.vstack([
            -np.log(duration_mass_below(kb.duration, kb.duration_episode, max_duration_days(AGES)[:, None])),
            np.zeros(len(CONDITIONS))])
        # the discrete answers as sums of table rows (pipeline.core.answertables): symptoms per
        # (severity, condition), so each severity's block is a contiguous slice; the rest per condition
        self.symptom_sums = answer_tables([(s, self.symptom[s].transpose(0, 2, 1).reshape(3, -1)) for s in SYMPTOMS])
        self.log_severity_blocks = [self.log_severity[:, j] for j in range(self.log_severity.shape[1])]
        self.context_sums = answer_tables([*self.context.items(), *self.category.items(), ("sex", self.sex)])


def _tri(p: np.ndarray) -> np.ndarray:
    """Rows: no, yes, unknown (code -1 indexes the last row)."""
    return np.stack([np.log1p(-p), np.log(p), np.zeros_like(p)])


@lru_cache(maxsize=8)
def _tables(kb: KnowledgeBase) -> _Tables:
    return _Tables(kb)


def _normal_logpdf(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(n, 9) log N(x; mean_k, sd_k), 0 where x is NaN."""
    return np.where(np.isnan(x)[:, None], 0.0, norm_logpdf(x, params))


def _logsumexp(parts: list[np.ndarray]) -> np.ndarray:
    """log(sum(exp(p))) over a few same-shaped arrays, element by element (contiguous, so fast:
    scipy's logsumexp over a short trailing axis took 5x longer here)."""
    top = parts[0]
    for p in parts[1:]:
        top = np.maximum(top, p)
    total = np.zeros_like(top)
    for p in parts:
        total += np.exp(p - top)
    return top + np.log(total)


def _log_joint_chunk(t: _Tables, codes: dict[str, np.ndarray]) -> np.ndarray:
    # symptoms: codes 0 (no) and 1 (yes) select rows 0 and 1 of each table; per severity a block
    sev = t.symptom_sums.sum(codes)
    k = len(CONDITIONS)
    blocks = [sev[:, j * k:(j + 1) * k] + t.log_severity_blocks[j] for j in range(len(t.log_severity_blocks))]
    ctx = _logsumexp(blocks) + t.log_prior
    ctx += t.context_sums.sum(codes)
    age = codes["age"]
    age_idx = np.where(np.isnan(age), len(AGES), age - AGES[0]).astype(np.intp)
    ctx += t.age[age_idx]
    female = codes["sex"] == field("sex").allowed.index("female")
    fertile = female & ~(age > t.fertile_max)
    preg = codes["pregnant"]
    ctx += np.where(fertile[:, None], t.pregnant[preg], 0.0)
    ctx += np.where(female & ~fertile, t.pregnant_other[preg], 0.0)[:, None]
    hormonal = codes["hormonal_therapy"]
    ctx += np.where(female[:, None], t.hormonal[0][hormonal], t.hormonal[1][hormonal])
    ctx += _normal_logpdf(codes["bmi"], t.bmi)
    days = np.maximum(codes["symptom_duration_days"], DURATION_FLOOR_DAYS)
    known = ~np.isnan(days)
    ctx += np.where(known[:, None], duration_log_pdf(t.duration, t.duration_episode, np.where(known, days, 1.0))
                    + t.duration_norm[age_idx], 0.0)
    return ctx


def oracle_log_joint(kb: KnowledgeBase, cases) -> np.ndarray:
    """log P(condition, known fields) for each case, shape (n_cases, n_conditions).

    ``cases`` is anything :func:`pipeline.serve.predict` accepts, or parsed cases.
    """
    t = _tables(kb)
    return in_blocks(lambda codes: _log_joint_chunk(t, codes), as_parsed(cases).codes, _CHUNK)


def oracle_posterior(kb: KnowledgeBase, cases) -> pd.DataFrame:
    """Exact P(condition | known fields): one column per condition, each row sums to 1.

    Parameters
    ----------
    kb : KnowledgeBase
        The model that generated the cases (use ``kb.shifted()`` for the ``shift`` split).
    cases : DataFrame, dict, list of dicts, path, or ParsedCases
        Cases in the schema; invalid cases raise :class:`pipeline.CaseValidationError`.

    Returns
    -------
    DataFrame of shape (n_cases, n_conditions)
    """
    return pd.DataFrame(softmax_rows(oracle_log_joint(kb, cases)), columns=list(CONDITIONS))


def log_density(kb: KnowledgeBase, cases) -> np.ndarray:
    """log p(known fields) under the knowledge base's model, shape (n_cases,)."""
    return logsumexp_rows(oracle_log_joint(kb, cases))


def _log_tri(p_yes: np.ndarray, code: int) -> np.ndarray:
    return np.log(p_yes) if code == 1 else np.log1p(-p_yes)


def field_log_likelihoods(kb: KnowledgeBase, parsed: ParsedCases) -> dict[str, np.ndarray]:
    """log P(answer | condition) of every known answer of one case, each an array of shape (9,).

    Each answer is taken on its own, as the oracle scores a case with only that answer besides
    the others it is independent of: a symptom's probability is summed over the latent severity
    with P(severity | condition); age, BMI and duration use the oracle's densities; pregnancy its
    rules (a condition-specific rate for a woman of fertile age, one rate for all conditions
    outside it, nothing for a man); hormonal therapy a woman's or a man's rates. Unknown answers
    are left out. :func:`pipeline.explain` weighs
    answers with these.
    """
    codes = {k: v[0] for k, v in parsed.codes.items()}
    female = codes["sex"] == _FEMALE
    t = _tables(kb)
    out: dict[str, np.ndarray] = {}
    for f in FIELDS:
        c = codes[f.name]
        if (f.kind in ("integer", "float") and math.isnan(c)) or (f.kind not in ("integer", "float") and c < 0):
            continue
        if f.name == "sex":
            out[f.name] = np.log(kb.female) if female else np.log1p(-kb.female)
        elif f.name == "age":
            out[f.name] = t.age[int(c) - AGES[0]]
        elif f.name == "bmi":
            out[f.name] = _normal_logpdf(np.array([c]), kb.bmi)[0]
        elif f.name == "symptom_duration_days":
            days = max(c, DURATION_FLOOR_DAYS)
            out[f.name] = (duration_log_pdf(kb.duration, kb.duration_episode, np.array([days]))[0]
                           + t.duration_norm[int(codes["age"]) - AGES[0]])
        elif f.name == "pregnant":
            if not female:  # the oracle adds nothing for a man
                out[f.name] = np.zeros(len(CONDITIONS))
            elif not codes["age"] > kb.fertile_age[1]:
                out[f.name] = _log_tri(kb.pregnant, c)
            else:
                out[f.name] = np.full(len(CONDITIONS), _log_tri(np.array(kb.pregnant_other), c))
        elif f.name == "hormonal_therapy":
            out[f.name] = _log_tri(kb.tristate[f.name][:, 0] if female else kb.hormonal_men, c)
        elif f.kind == "category":
            out[f.name] = np.log(kb.category[f.name][:, c])
        else:  # a symptom summed over the severity; context and onset tri-states do not depend on it
            out[f.name] = _log_tri(kb.p_yes(f.name), c)
    return out
