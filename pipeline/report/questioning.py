"""How fast do answers help? Asking questions of generated cases in three orders.

Every answer but ``start_fields`` is hidden; then, one question per case at a time, the case's
true generated answer is revealed for the field chosen by each strategy:

- ``chosen``: the best-scoring question of :func:`pipeline.interact.questions.score_questions` (expected
  information gain on the model's posterior plus the weighted DVT term, ``configs/questions.yaml``);
- ``random``: a still-unasked discrete field drawn uniformly (seeded);
- ``fixed``: the discrete fields in the schema's order (the order of the case record, the way a
  form would ask them: context, then onset, then symptoms), or ``fixed_order``.

The candidates are those of :data:`pipeline.interact.questions.CANDIDATE_FIELDS` for all three (pregnancy
is never asked of a man). When the generated answer is itself unknown (the generator hides some),
the answer stays unknown and the question is still spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import CONDITIONS, FIELD_NAMES, FIELDS, SEX_MALE
from pipeline.data.datasets import labels
from pipeline.interact.questions import CANDIDATE_FIELDS, QuestionsConfig, load_questions_config, score_questions
from pipeline.serve.loading import LoadedModel

__all__ = ["STRATEGIES", "plot_questioning", "simulate_questioning"]

STRATEGIES = ("chosen", "random", "fixed")
_DVT = CONDITIONS.index("dvt")
_URGENT = ("emergency", "see_doctor_soon")
_PREGNANT = CANDIDATE_FIELDS.index("pregnant")


def _metrics(model: LoadedModel, state: ParsedCases, y: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy, and DVT sensitivity (see :func:`simulate_questioning`)."""
    proba = model.predict_proba(state)
    pred = proba.argmax(axis=1)
    caught = pred == _DVT
    if model.decision is not None and model.kb is not None:
        from pipeline.decision.layer import decide

        caught |= decide(model.decision, model.kb, state, proba, rescore=model.predict_proba)["triage"].isin(
            _URGENT).to_numpy()
    dvt = y == _DVT
    return float(np.mean(pred == y)), float(caught[dvt].mean()) if dvt.any() else float("nan")


def _choose_best(model: LoadedModel, kb: KnowledgeBase, state: ParsedCases, asked: np.ndarray,
                 config: QuestionsConfig, chunk: int, posterior: str) -> np.ndarray:
    out = np.empty(len(state), dtype=np.intp)
    for start in range(0, len(state), chunk):
        rows = np.arange(start, min(len(state), start + chunk))
        s = score_questions(state[rows], model, kb, config, posterior=posterior, asked=asked[rows])
        out[rows] = np.where(s.eligible.any(axis=1), np.argmax(s.score, axis=1), -1)
    return out


def simulate_questioning(model: LoadedModel, kb: KnowledgeBase, cases: pd.DataFrame, *, k_max: int = 10,
                         seed: int = 0, start_fields: Sequence[str] = ("age", "sex"),
                         config: QuestionsConfig | str | Path | None = None,
                         fixed_order: Sequence[str] | None = None, posterior: str = "model",
                         chunk_size: int = 256) -> dict[str, Any]:
    """Accuracy and DVT sensitivity after k = 0..k_max questions, for three question orders.

    Parameters
    ----------
    model : LoadedModel
        Scores the cases; with a decision layer, its triage counts towards DVT sensitivity.
    kb : KnowledgeBase
        Gives the chosen strategy's answer probabilities (the generating model of ``cases``).
    cases : DataFrame
        Labelled generated cases (a ``condition`` column); not modified.
    k_max : int, default=10
        Questions asked per case, at most.
    seed : int, default=0
        Seed of the random strategy's ``numpy.random.default_rng``; the result is a function of it.
    start_fields : sequence of str, default=("age", "sex")
        Fields known from the start; must include ``age`` and ``sex`` (required in every case).
    config : QuestionsConfig or path, optional
        Default ``configs/questions.yaml``.
    fixed_order : sequence of str, optional
        The fixed strategy's order (candidate fields; the others follow in schema order).
        Default: the schema's order.
    posterior : {"model", "oracle"}, default="model"
        Whose posterior the chosen strategy's gains are measured on (the metrics are the model's).
    chunk_size : int, default=256
        Cases scored per batch by the chosen strategy (about 70 candidate answers each).

    Returns
    -------
    dict
        ``{"chosen": {"accuracy": {"0": ..., ..., str(k_max): ...}, "dvt_sensitivity": {...}},
        "random": {...}, "fixed": {...}, "n_cases": n, "k_max": k_max}``. Accuracy is the model's
        top-1 accuracy. DVT sensitivity is the share of true DVT cases that the model predicts as
        DVT or (with a decision layer) triages ``emergency`` or ``see_doctor_soon``; NaN without
        DVT cases.
    """
    if not isinstance(k_max, (int, np.integer)) or k_max < 0:
        raise ValueError(f"k_max == {k_max!r}, must be a non-negative integer.")
    if not {"age", "sex"} <= set(start_fields) or not set(start_fields) <= set(FIELD_NAMES):
        raise ValueError(f"start_fields == {tuple(start_fields)}, must include 'age' and 'sex' and name "
                         f"only case fields ({', '.join(FIELD_NAMES)}).")
    order = list(fixed_order or [])
    bad = [f for f in order if f not in CANDIDATE_FIELDS]
    if bad:
        raise ValueError(f"fixed_order names {bad}, which are not questions; allowed: {', '.join(CANDIDATE_FIELDS)}")
    order += [f for f in CANDIDATE_FIELDS if f not in order]
    rank = np.array([order.index(f) for f in CANDIDATE_FIELDS])
    cfg = load_questions_config(config)
    truth = parse_cases(cases)
    y = labels(cases)
    n = len(y)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {}
    for strategy in STRATEGIES:
        state = truth.blanked({f.name: True for f in FIELDS if f.name not in start_fields})
        asked = np.zeros((n, len(CANDIDATE_FIELDS)), dtype=bool)
        asked[:, [j for j, f in enumerate(CANDIDATE_FIELDS) if f in start_fields]] = True
        asked[:, _PREGNANT] |= truth.codes["sex"] == SEX_MALE  # never asked of a man
        accuracy, sensitivity = {}, {}
        for k in range(k_max + 1):
            accuracy[str(k)], sensitivity[str(k)] = _metrics(model, state, y)
            if k == k_max:
                break
            if strategy == "chosen":
                pick = _choose_best(model, kb, state, asked, cfg, chunk_size, posterior)
            elif strategy == "random":
                u = np.where(asked, -1.0, rng.random(asked.shape))
                pick = np.where(asked.all(axis=1), -1, np.argmax(u, axis=1))
            else:
                r = np.where(asked, len(rank), rank[None, :])
                pick = np.where(asked.all(axis=1), -1, np.argmin(r, axis=1))
            for j, name in enumerate(CANDIDATE_FIELDS):
                rows = np.flatnonzero(pick == j)
                state.codes[name][rows] = truth.codes[name][rows]
                asked[rows, j] = True
        result[strategy] = {"accuracy": accuracy, "dvt_sensitivity": sensitivity}
    return {**result, "n_cases": int(n), "k_max": int(k_max)}


def plot_questioning(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy and DVT sensitivity against the number of questions, one line per strategy (PNG)."""
    from pipeline.report.plots import figure, save

    fig = figure(9.0, 3.6)
    axes = fig.subplots(1, 2)
    for ax, metric, title in zip(axes, ("accuracy", "dvt_sensitivity"), ("Top-1 accuracy", "DVT sensitivity")):
        for strategy in STRATEGIES:
            curve = result[strategy][metric]
            ks = sorted(curve, key=int)
            ax.plot([int(k) for k in ks], [curve[k] for k in ks], marker="o", markersize=3, label=strategy)
        ax.set_xlabel("questions asked")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(title="question order")
    fig.suptitle(f"Asking questions of {result['n_cases']:,} generated cases")
    return save(fig, path)
