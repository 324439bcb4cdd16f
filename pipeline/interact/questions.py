"""Which question to ask next: the unanswered field whose answer is expected to tell the most.

For a case and each still-unknown discrete field ``f`` (a tri-state or a category; never ``age``
or ``sex``, which every case has, and not ``bmi`` or ``symptom_duration_days``, whose answers are
numbers rather than a few values to sum over), every possible answer ``v`` is tried:

- its predictive probability P(f=v | known answers) is exact under the knowledge base, from
  :func:`pipeline.core.oracle.oracle_log_joint` of the case with ``f=v`` and as it is (unknown answers
  are marginalised, so the answers' probabilities sum to 1);
- the posterior over conditions after that answer is the model's (``posterior="model"``) or the
  knowledge base's exact one (``posterior="oracle"``);
- the expected information gain is EIG = H(posterior now) - sum_v P(v | known) H(posterior | v),
  in nats (natural logarithms). Under the oracle it is the mutual information between the answer
  and the condition, never negative; under the model it is an estimate and can come out negative
  when the model is not a consistent Bayesian, so negative values are set to 0 (as are values
  below 1e-12 nats, float error).

The score adds, for each serious condition ``c`` in ``configs/questions.yaml`` with weight ``w``,
``w`` times the expected reduction of the binary entropy of "c or not" (also clipped at 0).
All (case, field, answer) combinations are scored in one batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field as PydField
from pydantic import field_validator, model_validator
from scipy.special import entr

from pipeline.core.cases import as_frame
from pipeline.core.config import StrictModel, load_config
from pipeline.core.knowledge import KnowledgeBase, load_knowledge_base
from pipeline.core.oracle import oracle_log_joint
from pipeline.core.parsing import ParsedCases, ignored_columns_message, parse_cases, premise_denied
from pipeline.core.paths import config_path
from pipeline.core.rowwise import logsumexp_rows, softmax_rows
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, FIELD_NAMES, FIELDS, field, normalise_header
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model

__all__ = ["AskConfig", "CANDIDATE_FIELDS", "QuestionScores", "QuestionsConfig",
           "answer_text", "load_questions_config", "next_questions", "one_case", "resolve_kb",
           "score_questions"]

CANDIDATE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in FIELDS if f.kind in ("tristate", "category") and not f.required)
_F = len(CANDIDATE_FIELDS)
# one "slot" per (field, answer): yes before no for a tri-state, categories in schema order
_SLOTS = [(j, v) for j, name in enumerate(CANDIDATE_FIELDS)
          for v in ((1, 0) if field(name).kind == "tristate" else range(len(field(name).allowed)))]
_SLOT_FIELD = np.array([j for j, _ in _SLOTS], dtype=np.intp)
_SLOT_VALUE = np.array([v for _, v in _SLOTS], dtype=np.int8)
_ZERO_TOL = 1e-12  # nats; smaller gains are float error
SHORT_LABELS = {**CONDITION_LABELS, "dvt": "DVT"}


_RETIRED_ASK_KEYS = ("triage_check_questions", "negligible_answer_probability")  # read by nothing, now or before


class AskConfig(StrictModel):
    """When an interactive session stops (see ``configs/questions.yaml``)."""

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        """An older questions.yaml's two settings that nothing read: dropped, with a warning."""
        if isinstance(data, dict) and any(k in data for k in _RETIRED_ASK_KEYS):
            warnings.warn(f"ask: {', '.join(k for k in _RETIRED_ASK_KEYS if k in data)} had no effect and are no "
                          "longer read; remove them from questions.yaml", UserWarning, stacklevel=2)
            data = {k: v for k, v in data.items() if k not in _RETIRED_ASK_KEYS}
        return data

    min_score: float = PydField(ge=0)
    min_confidence: float = PydField(ge=0, le=1)
    min_questions: int = PydField(ge=0)


class QuestionsConfig(StrictModel):
    """``configs/questions.yaml``: weights of serious conditions and the session's stopping rules."""

    serious_conditions: dict[str, float] = {}
    ask: AskConfig

    @field_validator("serious_conditions")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
        negative = {k: w for k, w in v.items() if w < 0}
        if negative:
            raise ValueError(f"weights must be >= 0, got {negative}")
        return v


def load_questions_config(config: QuestionsConfig | str | Path | None = None) -> QuestionsConfig:
    """The config object itself, or one read from a YAML path (default ``configs/questions.yaml``)."""
    if isinstance(config, QuestionsConfig):
        return config
    return load_config(QuestionsConfig, config_path("questions.yaml") if config is None else config)


def resolve_kb(model: LoadedModel | None, kb: KnowledgeBase | None = None) -> KnowledgeBase:
    """``kb`` if given, else the model's knowledge-base snapshot, else the project's knowledge base."""
    if kb is not None:
        return kb
    if model is not None and model.kb is not None:
        return model.kb
    return load_knowledge_base()


def one_case(case: Any) -> ParsedCases:
    """Parse exactly one case (anything :func:`pipeline.core.cases.as_frame` takes); keys that
    are not case fields are ignored with one warning, as :func:`pipeline.predict` warns (a
    misspelt answer would otherwise be left out unnoticed)."""
    frame = as_frame(case)
    if len(frame) != 1:
        raise ValueError(f"expected exactly one case, got {len(frame)} rows.")
    parsed = parse_cases(frame)
    if parsed.ignored_columns:  # at the caller of explain() or next_questions()
        warnings.warn(ignored_columns_message(parsed.ignored_columns), UserWarning, stacklevel=3)
    return parsed


def answer_text(name: str, code: int) -> str:
    """The text of a tri-state or category answer code (``yes``, ``no``, a category name)."""
    f = field(name)
    return ("no", "yes")[int(code)] if f.kind == "tristate" else f.allowed[int(code)]


@dataclass
class QuestionScores:
    """Scores of every candidate question for ``n`` cases (from :func:`score_questions`).

    Fields are :data:`CANDIDATE_FIELDS`; a row of the answer arrays is one (case, field, answer).

    Attributes
    ----------
    proba : ndarray of shape (n, n_conditions)
        The posterior now (the model's or the oracle's, as asked).
    eligible : ndarray of shape (n, n_fields), bool
        The field is unknown, not excluded, and can be asked (pregnancy is not asked of a male).
    eig, score : ndarray of shape (n, n_fields)
        Expected information gain (nats) and score; NaN and ``-inf`` where not eligible.
    case, field_index, value : ndarray of shape (m,)
        Which case, field and answer code each answer row is.
    p_answer : ndarray of shape (m,)
        P(answer | known answers) under the knowledge base.
    proba_answer : ndarray of shape (m, n_conditions)
        The posterior after the answer.
    """

    proba: np.ndarray
    eligible: np.ndarray
    eig: np.ndarray
    score: np.ndarray
    case: np.ndarray
    field_index: np.ndarray
    value: np.ndarray
    p_answer: np.ndarray
    proba_answer: np.ndarray


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    return entr(p) + entr(1.0 - p)


def score_questions(parsed: ParsedCases, model: LoadedModel | None, kb: KnowledgeBase, config: QuestionsConfig, *,
                    posterior: str = "model", asked: np.ndarray | None = None) -> QuestionScores:
    """Score every unknown discrete field of every case in one batch (see the module docstring).

    Parameters
    ----------
    parsed : ParsedCases of length n
        Valid cases.
    model : LoadedModel or None
        Needed when ``posterior="model"``.
    kb : KnowledgeBase
        Gives the answers' predictive probabilities (and the posterior when ``posterior="oracle"``).
    config : QuestionsConfig
    posterior : {"model", "oracle"}, default="model"
    asked : ndarray of shape (n, n_fields), bool, optional
        Fields not to ask again (already asked, even if the answer was "don't know").

    Returns
    -------
    QuestionScores
    """
    if posterior not in ("model", "oracle"):
        raise ValueError(f"posterior == {posterior!r}, must be 'model' or 'oracle'.")
    if posterior == "model" and model is None:
        raise ValueError("posterior='model' needs a model.")
    n = len(parsed)
    eligible = np.stack([parsed.codes[f] < 0 for f in CANDIDATE_FIELDS], axis=1).reshape(n, _F)
    # no pop question after "no injury", and no pregnancy question to a male or past the fertile ages
    eligible &= ~premise_denied(parsed.codes, CANDIDATE_FIELDS, kb.fertile_age[1])
    if asked is not None:
        eligible &= ~asked
    case, slot = np.nonzero(eligible[:, _SLOT_FIELD])
    fi, value = _SLOT_FIELD[slot], _SLOT_VALUE[slot]
    both = parsed[np.concatenate([np.arange(n), case])]  # the cases as they are, then one row per answer
    for j, name in enumerate(CANDIDATE_FIELDS):
        rows = n + np.flatnonzero(fi == j)
        both.codes[name][rows] = value[rows - n]
    log_joint = oracle_log_joint(kb, both)
    log_known = logsumexp_rows(log_joint)
    p_answer = np.exp(log_known[n:] - log_known[case])
    group = case * _F + fi
    p_answer /= np.bincount(group, p_answer, minlength=n * _F)[group]  # sums to 1 but for float error
    post = softmax_rows(log_joint) if posterior == "oracle" else model.predict_proba(both)  # type: ignore[union-attr]
    now, after = post[:n], post[n:]

    def expected_drop(h_now: np.ndarray, h_after: np.ndarray) -> np.ndarray:
        # an impossible answer (probability 0 in a knowledge base) adds nothing, not 0 * NaN
        weighted = np.where(p_answer > 0, p_answer * h_after, 0.0)
        drop = h_now[:, None] - np.bincount(group, weighted, minlength=n * _F).reshape(n, _F)
        return np.where(drop > _ZERO_TOL, drop, 0.0)

    eig = np.where(eligible, expected_drop(entr(now).sum(axis=1), entr(after).sum(axis=1)), np.nan)
    score = eig.copy()
    for name, w in config.serious_conditions.items():
        c = CONDITIONS.index(name)
        score += w * expected_drop(_binary_entropy(now[:, c]), _binary_entropy(after[:, c]))
    score[~eligible] = -np.inf
    return QuestionScores(now, eligible, eig, score, case, fi, value, p_answer, after)


def _reason(s: QuestionScores, j: int, config: QuestionsConfig) -> str:
    """One line: how the probability of the condition that matters most here would move."""
    rows = np.flatnonzero(s.field_index == j)
    p, after, now = s.p_answer[rows], s.proba_answer[rows], s.proba[0]
    shift = (p[:, None] * np.abs(after - now)).sum(axis=0)  # expected movement per condition
    c = int(np.argmax(shift))
    serious = [CONDITIONS.index(k) for k, w in config.serious_conditions.items() if w > 0]
    if serious:  # a serious condition is named when its weighted part is most of the score
        k = max(serious, key=lambda i: shift[i])
        if config.serious_conditions[CONDITIONS[k]] * shift[k] >= shift[c]:
            c = k
    name = CANDIDATE_FIELDS[j]
    # as many decimals (2 to 4) as it takes for a change to show ("from 0.96 to 0.96" says nothing)
    digits = next((d for d in (2, 3) if all(round(a, d) != round(now[c], d) for a in after[:, c] if a != now[c])), 4)
    outcomes = " / ".join(f"{a[c]:.{digits}f} if {answer_text(name, v).replace('_', ' ')} ({q:.0%} likely)"
                          for a, v, q in zip(after, s.value[rows], p))
    return f"would change P({SHORT_LABELS[CONDITIONS[c]]}) from {now[c]:.{digits}f} to {outcomes}"


def next_questions(case: Any, model: str | Path | LoadedModel | None = None, k: int | None = 3, *,
                   config: QuestionsConfig | str | Path | None = None, posterior: str = "model",
                   kb: KnowledgeBase | None = None, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """The most useful questions to ask next about one case, best first.

    Only unknown discrete fields are candidates: never ``age`` or ``sex`` (required), and not the
    numeric ``bmi`` and ``symptom_duration_days`` (skipped: their answers are not a few values).

    Parameters
    ----------
    case : dict, one-row DataFrame, or anything :func:`pipeline.core.cases.as_frame` takes
        Exactly one case.
    model : models folder, MLflow model URI, LoadedModel, or None (the project's ``models/``)
    k : int or None, default=3
        How many questions to return; None returns every candidate.
    config : QuestionsConfig or path, optional
        Default ``configs/questions.yaml``.
    posterior : {"model", "oracle"}, default="model"
        Whose posterior the gain is measured on: the model's, or the knowledge base's exact one.
    kb : KnowledgeBase, optional
        Default: the model's snapshot (``model.kb``), else the project's knowledge base.
    exclude : str or iterable of str
        Fields not to ask (e.g. asked already and answered "don't know"), named as columns are
        (:func:`pipeline.core.schema.normalise_header`).

    Returns
    -------
    DataFrame with columns ``field``, ``expected_information_gain`` (nats, >= 0), ``score`` (the
    gain plus the serious conditions' weighted terms) and ``reason``, sorted by score descending.

    Raises
    ------
    ValueError
        If ``case`` is not exactly one case, ``k`` is not a positive integer, or ``exclude`` names
        an unknown field. :class:`pipeline.CaseValidationError` for an invalid case.
    """
    if k is not None and (not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k == {k!r}, must be a positive integer or None.")
    # one name is one field (not its letters); names are matched as columns are
    exclude = [normalise_header(f) for f in ([exclude] if isinstance(exclude, str) else exclude)]
    unknown = [f for f in exclude if f not in FIELD_NAMES]
    if unknown:
        raise ValueError(f"exclude names unknown field(s) {unknown}; known: {', '.join(FIELD_NAMES)}")
    parsed = one_case(case)
    cfg = load_questions_config(config)
    loaded = None if posterior == "oracle" and kb is not None else get_model(model)
    asked = np.array([[f in exclude for f in CANDIDATE_FIELDS]])
    s = score_questions(parsed, loaded, resolve_kb(loaded, kb), cfg, posterior=posterior, asked=asked)
    js = [j for j in np.argsort(-s.score[0], kind="stable") if s.eligible[0, j]][:k]
    return pd.DataFrame({
        "field": pd.Series([CANDIDATE_FIELDS[j] for j in js], dtype=object),
        "expected_information_gain": pd.Series([s.eig[0, j] for j in js], dtype=float),
        "score": pd.Series([s.score[0, j] for j in js], dtype=float),
        "reason": pd.Series([_reason(s, j, cfg) for j in js], dtype=object),
    })
