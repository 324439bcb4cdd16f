"""Held-out evaluation beside the oracle: metrics, robustness to unanswered questions, reports.

:func:`evaluate_model` scores a model on ``test`` and ``shift`` next to the exact Bayes
posterior (the best any model can do on generated data) and traces how both degrade as optional
answers are blanked; :func:`write_reports` writes the headline ``metrics.json``, the full
``metrics_detail.json``, the curves as data series, the plots and a model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pipeline.core import metrics as M
from pipeline.core.files import write_report_json, write_text_atomic
from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.oracle import oracle_posterior
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, FIELDS, LABEL_COLUMN
from pipeline.data.datasets import kb_for_split, labels
from pipeline.model.arrays import ArrayScorer
from pipeline.report.decision_metrics import decision_card_section, evaluate_decision
from pipeline.serve.loading import LoadedModel

__all__ = ["REQUIRED_SPLITS", "evaluate_model", "evaluate_split", "format_metrics_table",
           "robustness_curve", "uncalibrated_estimator", "write_reports"]

REQUIRED_SPLITS = ("test", "shift")
N_BINS = 15
_OPTIONAL = tuple(f for f in FIELDS if not f.required)


def uncalibrated_estimator(estimator: Any) -> Any:
    """The pipeline under a fitted ``CalibratedClassifierCV(FrozenEstimator(pipeline))``.

    An :class:`ArrayScorer` (a model loaded from its arrays) loses its temperature. Any other
    estimator (an uncalibrated pipeline, or a calibrator fitted without a frozen estimator, which
    has no single underlying model) is returned unchanged.
    """
    if isinstance(estimator, ArrayScorer):
        return estimator.uncalibrated()
    if (isinstance(estimator, CalibratedClassifierCV) and hasattr(estimator, "calibrated_classifiers_")
            and isinstance(estimator.estimator, FrozenEstimator)):
        return estimator.estimator.estimator
    return estimator


def _scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"accuracy": M.accuracy(proba, y), "top3_accuracy": M.top_k_accuracy(proba, y, 3),
            "log_loss": M.log_loss(proba, y), "brier": M.brier(proba, y),
            "ece_top_label": M.ece_top_label(proba, y, N_BINS), "ece_classwise": M.ece_classwise(proba, y, N_BINS)}


def _checked_proba(proba: Any, n: int, what: str) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, len(CONDITIONS)):
        raise ValueError(f"{what} gave probabilities of shape {proba.shape}, expected ({n}, {len(CONDITIONS)}): "
                         "was the model trained on all conditions?")
    return proba


def _labelled(frame: pd.DataFrame) -> tuple[ParsedCases, np.ndarray]:
    y = labels(frame)
    if (y < 0).any():
        bad = frame[LABEL_COLUMN].iloc[np.flatnonzero(y < 0)[:3]].tolist()
        raise ValueError(f"condition values {bad} are not among {', '.join(CONDITIONS)}.")
    return parse_cases(frame), y


@overload
def evaluate_split(model: LoadedModel, kb: KnowledgeBase | None, frame: pd.DataFrame, *,
                   return_arrays: Literal[False] = ...) -> dict[str, Any]: ...
@overload
def evaluate_split(model: LoadedModel, kb: KnowledgeBase | None, frame: pd.DataFrame, *,
                   return_arrays: Literal[True]) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
def evaluate_split(model: LoadedModel, kb: KnowledgeBase | None, frame: pd.DataFrame, *,
                   return_arrays: bool = False) -> dict[str, Any] | tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``model`` on one labelled split, beside the oracle when the generating model is known.

    The DVC stage (generated splits) and ``kneepain evaluate --data FILE`` (a user's labelled
    cases, where no oracle exists) both go through this function.

    Parameters
    ----------
    model : LoadedModel
    kb : KnowledgeBase or None
        The model that generated ``frame`` (``kb_for_split(kb, "shift")`` for ``shift``); ``None``
        for cases that were not generated (real cases): no ``oracle_*`` keys then.
    frame : DataFrame of shape (n_cases, n_columns)
        Cases with their ``condition``.
    return_arrays : bool, default=False
        Also return the probabilities the plots need.

    Returns
    -------
    metrics : dict
        JSON-ready: ``n``; ``accuracy``, ``top3_accuracy``, ``macro_f1``, ``log_loss``, ``brier``,
        ``ece_top_label``, ``ece_classwise`` (15 equal-width bins); the same with an ``oracle_``
        prefix; ``accuracy_gap_to_oracle`` (oracle minus model), ``log_loss_ratio_to_oracle``;
        ``uncalibrated_log_loss``, ``uncalibrated_ece_top_label``; ``per_class``:
        ``{condition: {precision, recall, f1, support}}``.
    arrays : dict of ndarray, only if ``return_arrays``
        ``y`` (n_cases,), and ``proba``, ``proba_uncalibrated``,
        ``proba_oracle`` (n_cases, 9; the last only with ``kb``).
    """
    parsed, y = _labelled(frame)
    n = len(y)
    proba = _checked_proba(model.predict_proba(parsed), n, "the model")
    raw = _checked_proba(uncalibrated_estimator(model.estimator).predict_proba(parsed), n,
                         "the uncalibrated model")
    ours, before = _scores(proba, y), _scores(raw, y)
    classes = np.arange(len(CONDITIONS))
    pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    out: dict[str, Any] = {"n": n, **ours,
                           # over the conditions among the labels or predictions, as scikit-learn's default
                           "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}
    arrays = {"y": y, "proba": proba, "proba_uncalibrated": raw}
    if kb is not None:
        oracle = oracle_posterior(kb, parsed).to_numpy()
        best = _scores(oracle, y)
        out.update({f"oracle_{k}": v for k, v in best.items()})
        out["oracle_macro_f1"] = float(f1_score(y, oracle.argmax(axis=1), average="macro", zero_division=0))
        out["accuracy_gap_to_oracle"] = best["accuracy"] - ours["accuracy"]
        out["log_loss_ratio_to_oracle"] = ours["log_loss"] / best["log_loss"]
        arrays["proba_oracle"] = oracle
    out.update({f"uncalibrated_{k}": before[k] for k in ("accuracy", "log_loss", "brier", "ece_top_label")})
    out["per_class"] = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, c in enumerate(CONDITIONS)}
    return (out, arrays) if return_arrays else out


def robustness_curve(model: LoadedModel, kb: KnowledgeBase, frame: pd.DataFrame,
                     shares: Sequence[float] = (0.0, 0.2, 0.4, 0.6), seed: int = 0) -> list[dict[str, float]]:
    """Model and oracle scores as a growing share of optional answers is blanked to unknown.

    Every optional cell (never ``age`` or ``sex``) is blanked independently with probability
    ``share``. One uniform draw per cell is shared by all shares, so the cells blanked at a
    smaller share stay blanked at a larger one: each step only removes information. Answers that
    were unknown already stay unknown. Blanking is at random, as in the generator, so the oracle
    stays the exact posterior of what is left.

    Parameters
    ----------
    model : LoadedModel
    kb : KnowledgeBase
        The model that generated ``frame``.
    frame : DataFrame
        Labelled cases; it is not modified.
    shares : sequence of float in [0, 1], default=(0, 0.2, 0.4, 0.6)
    seed : int, default=0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of dict
        One per share: ``blanked_share``, ``accuracy``, ``log_loss``, ``oracle_accuracy``,
        ``oracle_log_loss``.
    """
    bad = [s for s in shares if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"shares == {bad}, must be within [0, 1].")
    parsed, y = _labelled(frame)
    rng = np.random.default_rng(seed)
    u = {f.name: rng.random(len(y)) for f in _OPTIONAL}
    curve = []
    for share in shares:
        cases = parsed.blanked({f.name: u[f.name] < float(share) for f in _OPTIONAL})
        proba = _checked_proba(model.predict_proba(cases), len(y), "the model")
        oracle = oracle_posterior(kb, cases).to_numpy()
        curve.append({"blanked_share": float(share), "accuracy": M.accuracy(proba, y),
                      "log_loss": M.log_loss(proba, y), "oracle_accuracy": M.accuracy(oracle, y),
                      "oracle_log_loss": M.log_loss(oracle, y)})
    return curve


@overload
def evaluate_model(model: LoadedModel, kb: KnowledgeBase, splits: dict[str, pd.DataFrame], *,
                   return_arrays: Literal[False] = ..., seed: int = ..., questioning_cases: int = ...
                   ) -> dict[str, Any]: ...
@overload
def evaluate_model(model: LoadedModel, kb: KnowledgeBase, splits: dict[str, pd.DataFrame], *,
                   return_arrays: Literal[True], seed: int = ..., questioning_cases: int = ...
                   ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]: ...
def evaluate_model(model: LoadedModel, kb: KnowledgeBase, splits: dict[str, pd.DataFrame], *,
                   return_arrays: bool = False, seed: int = 0, questioning_cases: int = 1500
                   ) -> dict[str, Any] | tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Evaluate on ``test`` and ``shift`` and trace robustness on ``test``.

    Parameters
    ----------
    model : LoadedModel
    kb : KnowledgeBase
        The default population's knowledge base; ``shift`` is scored against ``kb.shifted()``.
    splits : dict of str to DataFrame
        Must hold ``test`` and ``shift``; other splits only contribute their sizes.
    return_arrays : bool, default=False
        Also return ``{split: arrays}`` (see :func:`evaluate_split`) for :func:`write_reports`.
    seed : int, default=0
        Seed of the robustness curve's blanking and of the questioning simulation.
    questioning_cases : int, default=1500
        Cases of ``test`` on which asking questions is simulated (``pipeline.report.questioning``); 0 skips it.

    Returns
    -------
    metrics : dict
        ``{"test": {...}, "shift": {...}, "robustness": [...], "split_sizes": {...}, ...}``; the same
        model and data give the same file (no timings), so a changed metrics.json means a change.
    arrays : dict, only if ``return_arrays``
    """
    missing = [s for s in REQUIRED_SPLITS if s not in splits]
    if missing:
        raise KeyError(f"splits lacks {missing}; it must hold {list(REQUIRED_SPLITS)}, got {list(splits)}.")
    metrics: dict[str, Any] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name in REQUIRED_SPLITS:
        metrics[name], arrays[name] = evaluate_split(model, kb_for_split(kb, name), splits[name], return_arrays=True)
    metrics["robustness"] = robustness_curve(model, kb, splits["test"], seed=seed)
    calib = (parse_cases(splits["calib"]), labels(splits["calib"])) if "calib" in splits else None
    metrics.update(evaluate_decision(model, {n: parse_cases(splits[n]) for n in REQUIRED_SPLITS}, arrays, calib))
    if questioning_cases:
        from pipeline.report.questioning import simulate_questioning

        metrics["questioning"] = simulate_questioning(model, model.kb or kb, splits["test"].head(questioning_cases),
                                                      k_max=10, seed=seed)
    metrics["split_sizes"] = {name: len(frame) for name, frame in splits.items()}
    return (metrics, arrays) if return_arrays else metrics


_TABLE_COLUMNS = (("accuracy", "accuracy"), ("top-3", "top3_accuracy"), ("log loss", "log_loss"),
                  ("ECE", "ece_top_label"), ("oracle accuracy", "oracle_accuracy"),
                  ("oracle log loss", "oracle_log_loss"))


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A plain-text table: rows ``test`` and ``shift``, model scores beside the oracle's."""
    rows = [name for name in REQUIRED_SPLITS if name in metrics]
    table = pd.DataFrame({head: [metrics[r][key] for r in rows] for head, key in _TABLE_COLUMNS}, index=rows)
    return table.to_string(float_format=lambda v: f"{v:.4f}")


def _calibration_text(manifest: dict) -> str:
    cal = manifest.get("calibration")
    if isinstance(cal, dict):
        kept = cal.get("kept")
        state = "" if kept is None else (" (kept: it lowered held-out log loss on valid)" if kept
                                         else " (not kept: it did not lower held-out log loss on valid)")
        return f"{cal.get('method', 'unknown')}{state}"
    return str(cal) if cal is not None else "not recorded"


def _model_card(metrics: dict[str, Any], manifest: dict | None, plots: list[Path]) -> str:
    manifest = manifest or {}
    sizes = {**manifest.get("split_sizes", {}), **metrics.get("split_sizes", {})}
    rows = [("accuracy", "accuracy"), ("top-3 accuracy", "top3_accuracy"), ("macro F1", "macro_f1"),
            ("log loss", "log_loss"), ("Brier score", "brier"), ("ECE (top label)", "ece_top_label"),
            ("ECE (class-wise)", "ece_classwise")]
    splits = [s for s in REQUIRED_SPLITS if s in metrics]
    n_real = int(sizes.get("extra_train", 0))
    trained_on = (f"synthetic data and {n_real:,} real labelled cases (`extra_data` in the train config)" if n_real
                  else "synthetic data only")
    lines = [
        "# Model card: kneepain classifier", "",
        "**Information, not a diagnosis.** This model is **not a medical device**, has **not been "
        f"validated on real patients** and was trained on {trained_on}. Anyone with pain behind "
        "the knee should **seek professional medical advice** from a doctor or another qualified "
        "medical professional; a swollen, warm, red calf or leg needs medical attention as soon as possible.",
        "", "## What the model is", "",
        "A classifier that gives a probability for each of nine causes of pain behind the knee: "
        + ", ".join(CONDITION_LABELS[c] for c in CONDITIONS) + ".", "",
        f"- model: `{manifest.get('winner', 'not recorded')}` (the candidate chosen by cross-validated log loss)",
        f"- calibration: {_calibration_text(manifest)}",
    ]
    if "schema_version" in manifest:
        lines.append(f"- case schema version: {manifest['schema_version']}")
    lines += ["", "## Data", "",
              "Synthetic cases sampled from the knowledge base `configs/knowledge_base.yaml` (built from a "
              "public article on the causes of pain behind the knee, with a stated source or assumption for "
              "every number). `shift` is a documented population shift: older, more osteoarthritis, "
              "Baker's cysts and DVT, fewer sports injuries, more unanswered questions.", ""]
    lines += [f"- `{name}`: {n:,} cases" for name, n in sizes.items()]
    lines += ["", "## Performance beside the oracle", "",
              "The oracle is the exact Bayes posterior of the generator: the best any model can do on this data.", "",
              "| metric | " + " | ".join(f"{s} model | {s} oracle" for s in splits) + " |",
              "|---|" + "---|---|" * len(splits)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{metrics[s][key]:.4f} | {metrics[s]['oracle_' + key]:.4f}"
                                                  for s in splits) + " |")
    lines += ["", "## Calibration before and after", "",
              "| split | log loss before | log loss after | ECE before | ECE after |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {metrics[s]['uncalibrated_log_loss']:.4f} | {metrics[s]['log_loss']:.4f} | "
              f"{metrics[s]['uncalibrated_ece_top_label']:.4f} | {metrics[s]['ece_top_label']:.4f} |" for s in splits]
    if metrics.get("robustness"):
        lines += ["", "## Robustness to unanswered questions (test)", "",
                  "| optional answers blanked | accuracy | oracle accuracy | log loss | oracle log loss |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['blanked_share']:.0%} | {r['accuracy']:.4f} | {r['oracle_accuracy']:.4f} | "
                  f"{r['log_loss']:.4f} | {r['oracle_log_loss']:.4f} |" for r in metrics["robustness"]]
    lines += ["", decision_card_section(metrics)] if "triage" in metrics else []
    lines += ["", "## Limits", "",
              f"- Trained on {trained_on} and evaluated on synthetic data; its scores say how well it recovers "
              "the knowledge base, not how it would do on real patients"
              + (f" (the {sizes['extra_holdout']:,} held-out real cases are in the manifest's `extra_holdout`)."
                 if sizes.get("extra_holdout") else "."),
              "- Not a medical device and not validated on real patients.",
              "- It gives information, not a diagnosis; other causes of pain behind the knee exist that it "
              "does not know about.",
              "- Seek professional medical advice for any knee or leg pain.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"- `plots/{p.name}`" for p in plots] + [""]
    return "\n".join(lines)


def write_reports(metrics: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]] | None,
                  out_dir: str | Path, manifest: dict | None = None) -> list[Path]:
    """Write into ``out_dir``: ``metrics.json`` (the headline numbers of
    :func:`pipeline.report.views.headline_metrics`), ``metrics_detail.json`` (all of ``metrics``),
    the curves as CSV in ``series/``, the plots (``plots/*.png``) and ``model_card.md``.

    Parameters
    ----------
    metrics : dict
        From :func:`evaluate_model`.
    arrays : dict or None
        The arrays from ``evaluate_model(..., return_arrays=True)``; without them only the
        robustness plot is drawn.
    out_dir : str or Path
    manifest : dict, optional
        The model's manifest: ``winner``, ``calibration`` and ``split_sizes`` feed the model card.

    Returns
    -------
    list of Path
        Every file written.
    """
    from pipeline.report import plots, views

    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    written: list[Path] = []
    for name, a in (arrays or {}).items():
        written.append(plots.plot_confusion_matrix(a["y"], a["proba"], plot_dir / f"confusion_matrix_{name}.png",
                                                   title=f"Confusion matrix, {name}"))
        written.append(plots.plot_reliability(a["y"], a["proba"], plot_dir / f"reliability_{name}.png",
                                              proba_uncalibrated=a.get("proba_uncalibrated"), n_bins=N_BINS,
                                              title=f"Top-label reliability, {name}"))
        written.append(plots.plot_classwise_reliability(
            a["y"], a["proba"], plot_dir / f"reliability_per_class_{name}.png",
            proba_uncalibrated=a.get("proba_uncalibrated"), n_bins=N_BINS, title=f"Per-class reliability, {name}"))
    if metrics.get("questioning"):
        from pipeline.report.questioning import plot_questioning

        written.append(plot_questioning(metrics["questioning"], plot_dir / "questioning.png"))
    if metrics.get("robustness"):
        written.append(plots.plot_robustness(metrics["robustness"], plot_dir / "robustness.png",
                                             title="Robustness to unanswered questions, test"))
    series = views.write_series(metrics, arrays, out_dir / views.SERIES_DIR, n_bins=N_BINS)
    write_report_json(out_dir / views.HEADLINE_FILE, views.headline_metrics(metrics))
    write_report_json(out_dir / views.DETAIL_FILE, metrics)
    card = out_dir / "model_card.md"
    write_text_atomic(card, _model_card(metrics, manifest, [p for p in written if p.suffix == ".png"]))
    return [out_dir / views.HEADLINE_FILE, out_dir / views.DETAIL_FILE, *written, *series, card]
