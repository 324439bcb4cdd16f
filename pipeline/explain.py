"""Why the model prefers its top condition to the runner-up: the weight of each known answer.

The weight of an answer is its log likelihood ratio between the two conditions under the
knowledge base, log P(answer | top) - log P(answer | runner-up): positive answers point to the
top condition, negative ones to the runner-up. P(answer | condition) is the knowledge base's,
taken one answer at a time: a symptom's probability is summed over the latent severity with
P(severity | condition); age uses the knowledge base's age distribution, BMI its normal density
and the symptom duration its log-normal density, as the oracle does; pregnancy follows the
oracle's rules (a condition-specific rate for a woman of fertile age, one rate for all
conditions outside it, nothing for a man). The two conditions are the model's top two; the
weights are the knowledge base's, so an explanation never contradicts the generator.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .knowledge import AGES, KnowledgeBase
from .model_io import LoadedModel
from .predict import get_model
from .questions import answer_text, one_case, resolve_kb
from .schema import CONDITION_LABELS, CONDITIONS, FIELDS, SYMPTOMS, ParsedCases, field

__all__ = ["Explanation", "answer_log_likelihoods", "explain"]

_MAX_LISTED = 3
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_FEMALE = field("sex").allowed.index("female")
_FIXED_PHRASES = {"age": "age {}", "sex": "{}", "bmi": "BMI {}", "symptom_duration_days": "symptoms for {} days"}


@dataclass(frozen=True)
class Explanation:
    """An explanation of one case's prediction (from :func:`explain`).

    Attributes
    ----------
    top, runner_up : str
        The model's two most likely conditions (names in :data:`pipeline.CONDITIONS`).
    probabilities : Series
        The model's probability of every condition.
    table : DataFrame
        One row per known answer: ``field``, ``answer``, ``weight`` (log likelihood ratio, top vs
        runner-up, in nats), ``direction``; sorted by absolute weight, largest first.
    text : str
        Two sentences: the answers that point to the top condition, then those that point to the
        runner-up (up to three each).
    """

    top: str
    runner_up: str
    probabilities: pd.Series
    table: pd.DataFrame
    text: str

    def __repr__(self) -> str:
        head = (f"{CONDITION_LABELS[self.top]} ({self.probabilities[self.top]:.0%}) vs "
                f"{CONDITION_LABELS[self.runner_up]} ({self.probabilities[self.runner_up]:.0%})")
        return f"{head}\n{self.text}\n\n{self.table.round({'weight': 3}).to_string(index=False)}"

    def _repr_html_(self) -> str:
        return (f"<p><b>{html.escape(CONDITION_LABELS[self.top])}</b> ({self.probabilities[self.top]:.0%}) vs "
                f"<b>{html.escape(CONDITION_LABELS[self.runner_up])}</b> "
                f"({self.probabilities[self.runner_up]:.0%})</p><p>{html.escape(self.text)}</p>"
                + self.table.round({"weight": 3}).to_html(index=False))


def _normal_logpdf(x: float, params: np.ndarray) -> np.ndarray:
    """log N(x; mean_k, sd_k) for params of shape (9, 2), as the oracle computes it."""
    z = (x - params[:, 0]) / params[:, 1]
    return -0.5 * z * z - np.log(params[:, 1]) - _LOG_SQRT_2PI


def _log_tri(p_yes: np.ndarray, code: int) -> np.ndarray:
    return np.log(p_yes) if code == 1 else np.log1p(-p_yes)


def answer_log_likelihoods(kb: KnowledgeBase, parsed: ParsedCases) -> dict[str, np.ndarray]:
    """log P(answer | condition) of every known answer of one case, each an array of shape (9,).

    Each answer is taken on its own (see the module docstring); unknown answers are left out.
    """
    codes = {k: v[0] for k, v in parsed.codes.items()}
    female = codes["sex"] == _FEMALE
    out: dict[str, np.ndarray] = {}
    for f in FIELDS:
        c = codes[f.name]
        if (f.kind in ("integer", "float") and math.isnan(c)) or (f.kind not in ("integer", "float") and c < 0):
            continue
        if f.name == "sex":
            out[f.name] = np.log(kb.female) if female else np.log1p(-kb.female)
        elif f.name == "age":
            out[f.name] = np.log(kb.age_pmf[:, int(c) - AGES[0]])
        elif f.name == "bmi":
            out[f.name] = _normal_logpdf(c, kb.bmi)
        elif f.name == "symptom_duration_days":
            days = max(c, 1e-5)  # the oracle's floor; the log-normal's Jacobian cancels in a ratio
            out[f.name] = _normal_logpdf(math.log(days), kb.duration) - math.log(days)
        elif f.name == "pregnant":
            if not female:  # the oracle adds nothing for a man
                out[f.name] = np.zeros(len(CONDITIONS))
            elif not codes["age"] > kb.fertile_age[1]:
                out[f.name] = _log_tri(kb.pregnant, c)
            else:
                out[f.name] = np.full(len(CONDITIONS), _log_tri(np.array(kb.pregnant_other), c))
        elif f.kind == "category":
            out[f.name] = np.log(kb.category[f.name][:, c])
        elif f.name in SYMPTOMS:
            out[f.name] = _log_tri((kb.severity * kb.tristate[f.name]).sum(axis=1), c)
        else:  # context and onset tri-states do not depend on severity
            out[f.name] = _log_tri(kb.tristate[f.name][:, 0], c)
    return out


def _answer(name: str, code: float) -> str:
    f = field(name)
    if f.kind == "integer":
        return str(int(code))
    if f.kind == "float":
        return f"{code:g}"
    return answer_text(name, code)


def _phrase(name: str, answer: str) -> str:
    """A short human phrase for an answer, from the field's meaning."""
    f = field(name)
    if name in _FIXED_PHRASES:
        return _FIXED_PHRASES[name].format(answer)
    meaning = f.meaning.split(" (")[0].split(":")[0]
    if f.kind == "tristate":
        return meaning if answer == "yes" else f"no {meaning}"
    return f"{meaning}: {answer.replace('_', ' ')}"


def _sentence(lead: str, phrases: list[str], none: str) -> str:
    return f"{lead}: {', '.join(phrases)}." if phrases else none


def explain(case: Any, model: str | Path | LoadedModel | None = None) -> Explanation:
    """Explain one case's prediction: each known answer's weight for the top condition vs the runner-up.

    Parameters
    ----------
    case : dict, one-row DataFrame, or anything :func:`pipeline.cases.as_frame` takes
        Exactly one case.
    model : models folder, MLflow model URI, LoadedModel, or None (the project's ``models/``)
        Picks the top two conditions. The weights come from its knowledge-base snapshot
        (``model.kb``), else from the project's knowledge base.

    Returns
    -------
    Explanation
        ``.table`` (field, answer, weight, direction) and ``.text`` (two sentences).

    Raises
    ------
    ValueError
        If ``case`` is not exactly one case; :class:`pipeline.CaseValidationError` if it is invalid.

    Examples
    --------
    >>> explain({"age": 24, "sex": "male", "heard_pop": "yes", "giving_way": "yes"}).text  # doctest: +SKIP
    'Points to ACL injury rather than meniscus tear: heard a pop when it happened, ...'
    """
    parsed = one_case(case)
    loaded = get_model(model)
    kb = resolve_kb(loaded, None)
    proba = loaded.predict_proba(parsed)[0]
    top, runner = (int(i) for i in np.argsort(-proba, kind="stable")[:2])
    top_label, runner_label = CONDITION_LABELS[CONDITIONS[top]], CONDITION_LABELS[CONDITIONS[runner]]
    rows = []
    for name, loglik in answer_log_likelihoods(kb, parsed).items():
        weight = float(loglik[top] - loglik[runner])
        direction = f"for {top_label}" if weight > 0 else f"for {runner_label}" if weight < 0 else "neither"
        rows.append((name, _answer(name, parsed.codes[name][0]), weight, direction))
    table = pd.DataFrame(rows, columns=["field", "answer", "weight", "direction"])
    table = table.iloc[np.argsort(-table["weight"].abs().to_numpy(), kind="stable")].reset_index(drop=True)
    phrases = [_phrase(r.field, r.answer) for r in table.itertuples()]
    pro = [p for p, w in zip(phrases, table["weight"]) if w > 0][:_MAX_LISTED]
    con = [p for p, w in zip(phrases, table["weight"]) if w < 0][:_MAX_LISTED]
    text = " ".join([
        _sentence(f"Points to {top_label} rather than {runner_label}", pro,
                  f"No answer points to {top_label} rather than {runner_label}."),
        _sentence(f"Points to {runner_label} instead", con, f"No answer points to {runner_label} instead."),
    ])
    return Explanation(CONDITIONS[top], CONDITIONS[runner],
                       pd.Series(proba, index=list(CONDITIONS), name="probability"), table, text)
