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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.oracle import field_log_likelihoods
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, field
from pipeline.core.wording import span
from pipeline.interact.questions import answer_text, one_case, resolve_kb
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model

__all__ = ["Explanation", "explain"]

_MAX_LISTED = 3
_FIXED_PHRASES = {"age": "age {}", "sex": "{}", "bmi": "BMI {}", "symptom_duration_days": "symptoms began {} ago"}


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


def _answer(name: str, code: float) -> str:
    f = field(name)
    if f.kind == "integer":
        return str(int(code))
    if f.kind == "float":
        return f"{code:g}"
    return answer_text(name, int(code))


def _phrase(name: str, answer: str) -> str:
    """A short human phrase for an answer, from the field's meaning."""
    f = field(name)
    if name in _FIXED_PHRASES:  # a duration as a person says it: "4 minutes ago", not "0.003 days ago"
        return _FIXED_PHRASES[name].format(span(float(answer)) if name == "symptom_duration_days" else answer)
    meaning = f.meaning.split(" (")[0].split(":")[0]
    if f.kind == "tristate":
        return meaning if answer == "yes" else f"{meaning}: no"  # a meaning is a statement: "no the knee ..." misread
    return f"{meaning}: {answer.replace('_', ' ')}"


def _sentence(lead: str, phrases: list[str], none: str) -> str:
    return f"{lead}: {', '.join(phrases)}." if phrases else none


def explain(case: Any, model: str | Path | LoadedModel | None = None) -> Explanation:
    """Explain one case's prediction: each known answer's weight for the top condition vs the runner-up.

    Parameters
    ----------
    case : dict, one-row DataFrame, or anything :func:`pipeline.core.cases.as_frame` takes
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
    for name, loglik in field_log_likelihoods(kb, parsed).items():
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
