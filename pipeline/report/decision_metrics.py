"""How the decision layer performs on labelled data: DVT safety, conformal coverage, atypical rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import LEVELS
from pipeline.core.parsing import ParsedCases
from pipeline.core.schema import CONDITIONS
from pipeline.decision.conformal import fit_conformal, oracle_set_size, prediction_sets
from pipeline.decision.layer import decide
from pipeline.serve.loading import LoadedModel

__all__ = ["evaluate_decision", "decision_card_section", "format_decision_table"]

_DVT = CONDITIONS.index("dvt")


def _triage_metrics(levels: np.ndarray, y: np.ndarray, model: LoadedModel, right: np.ndarray | None = None
                    ) -> dict[str, Any]:
    assert model.decision is not None  # only called for a model with a decision layer
    if right is None:  # the level the triage config calls right for the true condition
        cfg = model.decision.config
        right = np.array([LEVELS.index(cfg.right_level[c]) for c in CONDITIONS])[y]
    dvt = y == _DVT
    urgent = levels >= LEVELS.index("see_doctor_soon")
    emergency = levels == LEVELS.index("emergency")
    return {
        "dvt_urgent_rate": float(urgent[dvt].mean()) if dvt.any() else float("nan"),
        "dvt_emergency_rate": float(emergency[dvt].mean()) if dvt.any() else float("nan"),
        "over_triage_rate": float(emergency[~dvt].mean()),
        "safe_advice_rate": float((levels >= right).mean()),
        "exact_level_rate": float((levels == right).mean()),
        "level_shares": {lv: float((levels == i).mean()) for i, lv in enumerate(LEVELS)},
        "n_dvt": int(dvt.sum()),
    }


CONFIDENCE_BANDS = (0.0, 0.5, 0.7, 0.9)


def _coverage_by_band(sets: np.ndarray, y: np.ndarray, proba: np.ndarray) -> list[dict[str, float]]:
    """Coverage and mean set size of the differential within bands of the top probability: where
    the model is unsure, the set must grow to keep its coverage."""
    hit = sets[np.arange(len(y)), y]
    band = np.searchsorted(CONFIDENCE_BANDS, proba.max(axis=1), side="right") - 1
    rows = []
    for b, start in enumerate(CONFIDENCE_BANDS):
        inside = band == b
        rows.append({"confidence_from": start, "n": int(inside.sum()),
                     "coverage": float(hit[inside].mean()) if inside.any() else float("nan"),
                     "mean_set_size": float(sets[inside].sum(axis=1).mean()) if inside.any() else float("nan")})
    return rows


def _coverage(sets: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, float]]:
    hit = sets[np.arange(len(y)), y]
    per_class = {c: float(hit[y == k].mean()) if (y == k).any() else float("nan") for k, c in enumerate(CONDITIONS)}
    return float(hit.mean()), per_class


def evaluate_decision(model: LoadedModel, parsed: dict[str, ParsedCases], arrays: dict[str, dict[str, np.ndarray]],
                      calib: tuple[ParsedCases, np.ndarray] | None = None,
                      reference_levels: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Decision-layer metrics on each labelled split of ``parsed`` (probabilities from ``arrays``).

    With ``calib`` (parsed cases and labels), the other conformal variant (Mondrian if the model
    uses the marginal one, or the reverse) is fitted there and reported beside the configured one.
    ``reference_levels`` (per split, indices into :data:`LEVELS`, -1 where not given) replaces the
    triage config's right level of the true condition wherever it is given (a clinician's level
    for a real case).
    """
    if model.decision is None:
        return {}
    out: dict[str, dict[str, Any]] = {"triage": {}, "conformal": {}, "atypical": {}}
    fitted = model.decision.conformal
    other = None
    if calib is not None:
        proba_calib = model.predict_proba(calib[0])
        other = fit_conformal(proba_calib, calib[1], coverage=fitted["coverage"], mondrian=not fitted["mondrian"])
    for name, cases in parsed.items():
        a = arrays[name]
        y, proba = a["y"], a["proba"]
        columns = decide(model.decision, model.kb, cases, proba)  # type: ignore[arg-type]  # both set together
        levels = pd.Categorical(columns["triage"], categories=list(LEVELS)).codes
        right = None
        if reference_levels is not None and name in reference_levels:
            cfg = model.decision.config
            right = np.array([LEVELS.index(cfg.right_level[c]) for c in CONDITIONS])[y]
            right = np.where(reference_levels[name] >= 0, reference_levels[name], right)
        out["triage"][name] = _triage_metrics(levels, y, model, right)
        sets = prediction_sets(proba, fitted)
        coverage, per_class = _coverage(sets, y)
        out["conformal"][name] = {
            "target": fitted["coverage"], "mondrian": fitted["mondrian"], "coverage": coverage,
            "mean_set_size": float(sets.sum(axis=1).mean()),
            "per_class_coverage": per_class,
            "coverage_by_band": _coverage_by_band(sets, y, proba),
        }
        if "proba_oracle" in a:  # the true posterior's smallest sets reaching the coverage the model reached here
            out["conformal"][name]["oracle_mean_set_size"] = oracle_set_size(a["proba_oracle"], y, coverage)
        if other is not None:
            o_sets = prediction_sets(proba, other)
            o_cov, o_per = _coverage(o_sets, y)
            key = "mondrian_variant" if other["mondrian"] else "marginal_variant"
            out["conformal"][name][key] = {"coverage": o_cov, "mean_set_size": float(o_sets.sum(axis=1).mean()),
                                           "per_class_coverage": o_per}
        out["atypical"][name] = {"flag_rate": float(columns["atypical"].mean()),
                                 "quantile": model.decision.atypical["quantile"]}
    return out


def decision_card_section(metrics: dict[str, Any]) -> str:
    """Markdown for the model card: triage safety, conformal coverage and atypical rate."""
    if "triage" not in metrics:
        return ""
    lines = ["## Decision layer (triage, differential set, atypical flag)", "",
             "| split | DVT sent urgent or emergency | DVT sent to emergency | non-DVT sent to emergency | "
             "safe advice | set coverage (target) | mean set size (oracle) | atypical flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for s in metrics["triage"]:
        t, c, a = metrics["triage"][s], metrics["conformal"][s], metrics["atypical"][s]
        lines.append(f"| {s} | {t['dvt_urgent_rate']:.4f} | {t['dvt_emergency_rate']:.4f} | {t['over_triage_rate']:.4f} | "
                     f"{t['safe_advice_rate']:.4f} | {c['coverage']:.4f} ({c['target']:.2f}) | "
                     f"{c['mean_set_size']:.3f} ({c['oracle_mean_set_size']:.3f}) | {a['flag_rate']:.4f} |")
    lines += ["", "Red flags on the answers (a swollen leg with warm or red skin or visible veins, swelling behind "
              "the knee spreading to the calf, ...) escalate triage whatever the model says; see configs/triage.yaml.", ""]
    if metrics.get("questioning"):
        lines += ["## Asking the next question", "", _questioning_line(metrics).strip() + ".", ""]
    return "\n".join(lines)


def format_decision_table(metrics: dict[str, Any]) -> str:
    """Plain-text summary of the decision layer for the command line ('' if there is none)."""
    if "triage" not in metrics:
        return ""
    rows = {s: {"DVT urgent": metrics["triage"][s]["dvt_urgent_rate"],
                "DVT emergency": metrics["triage"][s]["dvt_emergency_rate"],
                "over-triage": metrics["triage"][s]["over_triage_rate"],
                "safe advice": metrics["triage"][s]["safe_advice_rate"],
                "set coverage": metrics["conformal"][s]["coverage"],
                "set size": metrics["conformal"][s]["mean_set_size"],
                "oracle set size": metrics["conformal"][s]["oracle_mean_set_size"],
                "atypical": metrics["atypical"][s]["flag_rate"]} for s in metrics["triage"]}
    text = "\nDecision layer\n" + pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.4f}")
    return text + _questioning_line(metrics)


def _questioning_line(metrics: dict[str, Any]) -> str:
    q = metrics.get("questioning")
    if not q:
        return ""
    acc = {s: q[s]["accuracy"] for s in ("chosen", "random", "fixed")}
    return (f"\n\nAsking questions from age and sex only ({q['n_cases']:,} test cases): top-1 accuracy after 5 "
            f"questions chosen {acc['chosen']['5']:.3f}, random {acc['random']['5']:.3f}, fixed order "
            f"{acc['fixed']['5']:.3f}; after 10: {acc['chosen']['10']:.3f} / {acc['random']['10']:.3f} / "
            f"{acc['fixed']['10']:.3f}")
