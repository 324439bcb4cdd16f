"""How the decision layer performs on labelled data: triage as symptom checkers are scored, the
differential's coverage by band, the atypical rate.

Triage is scored against a **reference level** per case, as in the evaluations of symptom checkers
(Semigran et al. 2015, BMJ 351:h3480; Gilbert et al. 2020, BMJ Open 10:e040269; Levine et al.
2024), where clinicians set the level a presentation calls for: here the level of the condition
(``right_level`` in configs/triage.yaml) raised to the level of any red flag or screen rule the
reported answers meet (each rule cites its guidance: a swollen, warm, red calf or a positive
Ottawa knee rule is seen the same day whatever the final diagnosis). The condition-only reference
is reported beside it. Under-triage (a level below the reference) carries a one-sided 95% upper
confidence bound (Clopper-Pearson).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta

from pipeline.core.config import LEVELS
from pipeline.core.oracle import oracle_posterior
from pipeline.core.parsing import ParsedCases
from pipeline.core.schema import CONDITIONS
from pipeline.decision.conformal import blank_at_random, credible_sets, prediction_sets, set_cells
from pipeline.decision.layer import decide, decision_columns
from pipeline.decision.safety import rules_of
from pipeline.decision.triage import right_levels
from pipeline.serve.loading import LoadedModel

__all__ = ["BLANKED_RATE", "ask_next_follow_up", "coverage_table", "decision_card_section", "evaluate_decision", "figure",
           "follow_up_line", "format_decision_table", "measured", "triage_table", "upper_bound"]

_DVT = CONDITIONS.index("dvt")
_EMERGENCY = LEVELS.index("emergency")
BLANKED_RATE = 0.8  # the copy of `test` with most answers blanked ("test_blanked")


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper confidence bound of a rate of ``k`` in ``n``."""
    return float("nan") if n == 0 else 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def _rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


def _reason_kind(reasons: pd.Series, model: LoadedModel) -> np.ndarray:
    """Per case, what decided its level: ``screen``, ``red_flag``, ``atypical`` or ``expected_cost``
    (from the reasons' short codes, e.g. ``red_flag:possible_dvt``)."""
    assert model.decision is not None and model.kb is not None  # set together
    by_text = {text: code for code, text in model.decision.text_codes(model.kb)["triage_reason"].items()}
    code = reasons.astype(str).map(by_text).str.split(":").str[0]
    return np.where(code.isin(["screen", "red_flag", "atypical"]), code, "expected_cost")


def _against(levels: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    under = int((levels < ref).sum())
    return {"exact_rate": _rate(levels == ref), "safe_rate": _rate(levels >= ref),
            "under_triage_rate": under / len(levels), "under_triage_ucb95": upper_bound(under, len(levels)),
            "over_triage_emergency_rate": _rate((levels == _EMERGENCY) & (ref < _EMERGENCY))}


def _triage_metrics(levels: np.ndarray, reasons: pd.Series, y: np.ndarray, codes: dict[str, np.ndarray],
                    model: LoadedModel, given: np.ndarray | None = None) -> dict[str, Any]:
    assert model.decision is not None  # only called for a model with a decision layer
    cfg = model.decision.config
    condition_ref = right_levels(cfg)[y]
    rules = rules_of(cfg, model.decision.screen)
    presentation = np.max([np.where(r.fires(codes), r.level, -1) for r in rules], axis=0) if rules else -1
    ref = np.maximum(condition_ref, presentation)
    if given is not None:  # a clinician's level where the user's file gives one
        ref = np.where(given >= 0, given, ref)
        condition_ref = np.where(given >= 0, given, condition_ref)
    dvt = y == _DVT
    emergency = levels == _EMERGENCY
    kind = _reason_kind(reasons, model)
    non_dvt_em = emergency & ~dvt
    return {
        **_against(levels, ref),
        "condition_reference": _against(levels, condition_ref),
        "dvt_same_day_rate": _rate(emergency[dvt]),
        "dvt_within_a_day_rate": _rate(levels[dvt] >= LEVELS.index("see_doctor_soon")),
        "non_dvt_emergency_rate": _rate(non_dvt_em[~dvt]),
        "non_dvt_emergency_by_reason": {k: float((non_dvt_em & (kind == k)).sum() / max(1, (~dvt).sum()))
                                        for k in ("screen", "red_flag", "expected_cost", "atypical")},
        "level_shares": {lv: _rate(levels == i) for i, lv in enumerate(LEVELS)},
        "n": int(len(levels)), "n_dvt": int(dvt.sum()),
        # the names of earlier versions, kept for comparisons across runs
        "dvt_urgent_rate": _rate(levels[dvt] >= LEVELS.index("see_doctor_soon")),
        "dvt_emergency_rate": _rate(emergency[dvt]),
        "over_triage_rate": _rate((levels == _EMERGENCY) & (ref < _EMERGENCY) & ~dvt),
        "safe_advice_rate": _rate(levels >= ref),
    }


def _bands(labels: list[str], band: np.ndarray, hit: np.ndarray, size: np.ndarray, oracle_size: np.ndarray
           ) -> list[dict[str, Any]]:
    out = []
    for i, label in enumerate(labels):
        m = band == i
        out.append({"band": label, "n": int(m.sum()), "coverage": _rate(hit[m]),
                    "mean_set_size": float(size[m].mean()) if m.any() else float("nan"),
                    "oracle_credible_set_size": float(oracle_size[m].mean()) if m.any() else float("nan")})
    return out


def _band_labels(edges: list[float], scale: float = 1.0) -> list[str]:
    cuts = [0.0, *edges, 1.0]
    return [f"{lo * scale:.2f}-{hi * scale:.2f}" for lo, hi in zip(cuts[:-1], cuts[1:])]


def _conformal_metrics(proba: np.ndarray, oracle: np.ndarray | None, y: np.ndarray, codes: dict[str, np.ndarray],
                       fitted: dict) -> dict[str, Any]:
    """Coverage and size overall and per band; beside the oracle's credible sets when there is an
    oracle (generated cases; a user's real cases have none)."""
    sets = prediction_sets(proba, codes, fitted)
    hit = sets[np.arange(len(y)), y]
    size = sets.sum(axis=1)
    cred = credible_sets(oracle, fitted["coverage"]) if oracle is not None else np.full_like(sets, np.nan, dtype=float)
    cred_size = cred.sum(axis=1)
    known, confidence = set_cells(proba, codes, fitted)
    out = {
        "target": fitted["coverage"], "band_coverage": fitted.get("band_coverage"), "coverage": _rate(hit),
        "mean_set_size": float(size.mean()),
        "by_confidence": _bands(_band_labels(fitted["confidence_edges"]), confidence, hit, size, cred_size),
        "by_answers_known": _bands(_band_labels(fitted["known_edges"]), known, hit, size, cred_size),
        "per_class_coverage": {c: _rate(hit[y == k]) for k, c in enumerate(CONDITIONS)},
    }
    if oracle is not None:  # the true posterior's smallest sets holding 90% of its mass, case by case
        out["oracle_mean_set_size"] = float(cred_size.mean())
        out["oracle_credible_coverage"] = _rate(cred[np.arange(len(y)), y])
    return out


def shown_sets(differential: pd.Series) -> np.ndarray:
    """(n, n_conditions) bool: the conditions of each ``differential`` column's value, as shown."""
    shown = differential.str.get_dummies(sep="|").reindex(columns=list(CONDITIONS), fill_value=0)
    return shown.to_numpy(dtype=bool)


def _shown_metrics(shown: np.ndarray, y: np.ndarray, conformal_size: float) -> dict[str, float]:
    """Coverage and size of the differential as shown (``shown``: :func:`shown_sets`; the
    conformal set, with the condition that drives an expected-cost level added where the set lacks
    it), and how often one was added."""
    size = shown.sum(axis=1)
    return {"coverage": _rate(shown[np.arange(len(y)), y]), "mean_set_size": float(size.mean()),
            "added_rate": float(size.mean() - conformal_size)}


def ask_next_follow_up(model: LoadedModel, blanked: ParsedCases, full: ParsedCases, y: np.ndarray,
                       proba: np.ndarray | None = None) -> dict[str, Any]:
    """What answering ``ask_next`` does for the cases of ``blanked`` below the same day: each gives
    the true answers (from ``full``, the same cases unblanked) to the questions it lists, once, and
    is triaged again (the model run again, not the likelihood shortcut). For the DVT cases: the
    share that reaches the same day; for the others: the share sent the same day by their answers
    (a red flag or screen rule they meet, or the expected cost); and the questions listed per case.
    ``proba``: the model's probabilities for ``blanked``, if the caller has them."""
    assert model.decision is not None and model.kb is not None  # set together
    proba = model.predict_proba(blanked) if proba is None else proba
    start = decision_columns(model.decision, model.kb, blanked, proba, codes=True, columns=["triage", "ask_next"],
                             rescore=model.predict_proba)
    below = pd.Categorical(start["triage"], categories=list(LEVELS)).codes < _EMERGENCY
    codes = {k: v.copy() for k, v in blanked.codes.items()}
    asked = np.zeros(len(y), dtype=np.int64)
    rows = np.flatnonzero(below)
    for i, listed in zip(rows, pd.Series(start["ask_next"]).iloc[rows]):
        for name in filter(None, listed.split("|")):
            codes[name][i] = full.codes[name][i]
            asked[i] += 1
    answered = ParsedCases(codes, blanked.valid, blanked.errors, blanked.ids, blanked.ignored_columns)
    after = decision_columns(model.decision, model.kb, answered, model.predict_proba(answered), columns=["triage"],
                             rescore=model.predict_proba)
    same_day = pd.Categorical(after["triage"], categories=list(LEVELS)).codes == _EMERGENCY
    dvt = y == _DVT
    return {"dvt_below": int((below & dvt).sum()), "dvt_same_day_after": _rate(same_day[below & dvt]),
            "non_dvt_below": int((below & ~dvt).sum()), "non_dvt_same_day_after": _rate(same_day[below & ~dvt]),
            "questions_per_case": float(asked[below].mean()) if below.any() else float("nan")}


def evaluate_decision(model: LoadedModel, parsed: dict[str, ParsedCases], arrays: dict[str, dict[str, np.ndarray]],
                      calib: tuple[ParsedCases, np.ndarray] | None = None,
                      reference_levels: dict[str, np.ndarray] | None = None,
                      shown_out: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Decision-layer metrics on each labelled split of ``parsed`` (probabilities from ``arrays``)
    and, when ``test`` has an oracle, on ``test_blanked``: a copy of ``test`` with each optional
    answer blanked at random with probability :data:`BLANKED_RATE`, as people leave them.
    ``reference_levels`` (per split, indices into :data:`LEVELS`, -1 where not given) replaces
    the reference level wherever it is given (a clinician's level for a real case). ``calib`` is
    accepted for compatibility and not used. ``shown_out``, if given, gets each split's
    differential as shown (:func:`shown_sets`), for intervals the caller draws on it."""
    if model.decision is None:
        return {}
    out: dict[str, dict[str, Any]] = {"triage": {}, "conformal": {}, "atypical": {}}
    views = {name: (cases, arrays[name]["y"], arrays[name]["proba"], arrays[name].get("proba_oracle"))
             for name, cases in parsed.items()}
    if "test" in parsed and "proba_oracle" in arrays["test"]:
        blanked = blank_at_random(parsed["test"], BLANKED_RATE, seed=0)
        kb = model.kb
        assert kb is not None  # set together with the decision layer
        proba_blanked = model.predict_proba(blanked)
        views["test_blanked"] = (blanked, arrays["test"]["y"], proba_blanked, oracle_posterior(kb, blanked).to_numpy())
        out["ask_next_follow_up"] = {"test_blanked": ask_next_follow_up(model, blanked, parsed["test"],
                                                                        arrays["test"]["y"], proba_blanked)}
    for name, (cases, y, proba, oracle) in views.items():
        columns = decide(model.decision, model.kb, cases, proba,  # type: ignore[arg-type]  # both set together
                         rescore=model.predict_proba)
        levels = pd.Categorical(columns["triage"], categories=list(LEVELS)).codes
        given = (reference_levels or {}).get(name)
        out["triage"][name] = _triage_metrics(levels, columns["triage_reason"], y, cases.codes, model, given)
        out["triage"][name]["safety_net_rate"] = _rate(columns["safety_net"].to_numpy() != "")
        out["triage"][name]["ask_next_rate"] = _rate(columns["ask_next"].to_numpy() != "")
        out["conformal"][name] = _conformal_metrics(proba, oracle, y, cases.codes, model.decision.conformal)
        shown = shown_sets(columns["differential"])
        out["conformal"][name]["shown"] = _shown_metrics(shown, y, out["conformal"][name]["mean_set_size"])
        if shown_out is not None:
            shown_out[name] = shown
        out["atypical"][name] = {"flag_rate": float(columns["atypical"].mean()),
                                 "quantile": model.decision.atypical["quantile"]}
    return out


def measured(value: float | None) -> bool:
    """Whether a figure was measured: not NaN in memory, nor ``null`` in a report's JSON (an empty
    band, a split without a DVT, an interval on too few cases)."""
    return value is not None and value == value


def figure(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``n/a`` for a figure that could not be :func:`measured`."""
    return format(value, spec) if measured(value) else "n/a"


REASONS = ("screen", "red_flag", "expected_cost")  # why a non-DVT case went to the same day, as the table lists them


def triage_table(metrics: dict[str, Any]) -> str:
    """Markdown: triage against the reference levels, per split."""
    lines = ["| split | exact | safe (at or above) | under-triage (95% UCB) | over-triage to emergency | "
             "DVT same day | DVT within a day | non-DVT to emergency: all (screen / red flag / expected cost) |",
             "|---|---|---|---|---|---|---|---|"]
    for s, t in metrics["triage"].items():
        r = t["non_dvt_emergency_by_reason"]
        row = [figure(t["exact_rate"], ".3f"), figure(t["safe_rate"], ".4f"),
               f"{figure(t['under_triage_rate'], '.4f')} ({figure(t['under_triage_ucb95'], '.4f')})",
               *(figure(t[k], ".4f") for k in ("over_triage_emergency_rate", "dvt_same_day_rate", "dvt_within_a_day_rate")),
               f"{figure(t['non_dvt_emergency_rate'], '.4f')} ({' / '.join(figure(r[k], '.4f') for k in REASONS)})"]
        lines.append(f"| {s} | {' | '.join(row)} |")
    return "\n".join(lines)


def coverage_table(metrics: dict[str, Any], split: str) -> str:
    """Markdown: the differential's coverage and size per band on ``split``, beside the oracle's
    90% credible sets."""
    c = metrics["conformal"][split]
    lines = [f"| `{split}` band | cases | coverage | mean size | oracle credible set size |", "|---|---|---|---|---|"]
    for title, key in (("confidence", "by_confidence"), ("answers known", "by_answers_known")):
        for b in c[key]:
            if b["n"]:
                lines.append(f"| {title} {b['band']} | {b['n']:,} | {figure(b['coverage'], '.3f')} | "
                             f"{figure(b['mean_set_size'], '.2f')} | {figure(b['oracle_credible_set_size'], '.2f')} |")
    lines.append(f"| all | {sum(b['n'] for b in c['by_confidence']):,} | {figure(c['coverage'], '.3f')} | "
                 f"{figure(c['mean_set_size'], '.2f')} | {figure(c['oracle_mean_set_size'], '.2f')} |")
    return "\n".join(lines)


def decision_card_section(metrics: dict[str, Any]) -> str:
    """Markdown for the model card: triage safety, conformal coverage and atypical rate."""
    if "triage" not in metrics:
        return ""
    lines = ["## Decision layer (triage, differential set, atypical flag)", "",
             "Triage against the reference level of each case (its condition's level, raised by any red flag or "
             "screen rule its answers meet; see `pipeline/report/decision_metrics.py`):", "", triage_table(metrics), "",
             "The differential's coverage by band:", ""]
    for split in ("test", "test_blanked"):
        if split in metrics["conformal"]:
            lines += [coverage_table(metrics, split), ""]
    lines += ["Red flags and the screen raise triage whatever the model says; see configs/triage.yaml and "
              "configs/screen.yaml.", ""]
    if metrics.get("questioning"):
        lines += ["## Asking the next question", "", _questioning_line(metrics).strip() + ".", ""]
    return "\n".join(lines)


def format_decision_table(metrics: dict[str, Any]) -> str:
    """Plain-text summary of the decision layer for the command line ('' if there is none)."""
    if "triage" not in metrics:
        return ""
    rows = {s: {"exact": metrics["triage"][s]["exact_rate"],
                "safe": metrics["triage"][s]["safe_rate"],
                "under-triage UCB": metrics["triage"][s]["under_triage_ucb95"],
                "DVT same day": metrics["triage"][s]["dvt_same_day_rate"],
                "DVT within a day": metrics["triage"][s]["dvt_within_a_day_rate"],
                "non-DVT emergency": metrics["triage"][s]["non_dvt_emergency_rate"],
                "by cost": metrics["triage"][s]["non_dvt_emergency_by_reason"]["expected_cost"],
                "set coverage": metrics["conformal"][s]["coverage"],
                "set size": metrics["conformal"][s]["mean_set_size"],
                "oracle set size": metrics["conformal"][s]["oracle_mean_set_size"],
                "atypical": metrics["atypical"][s]["flag_rate"]} for s in metrics["triage"]}
    text = "\nDecision layer\n" + pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.4f}")
    return text + follow_up_line(metrics) + _questioning_line(metrics)


def follow_up_line(metrics: dict[str, Any], *, markdown: bool = False) -> str:
    """One sentence on :func:`ask_next_follow_up` on ``test_blanked`` ('' where it was not measured)."""
    f = (metrics.get("ask_next_follow_up") or {}).get("test_blanked")
    if not f:
        return ""
    tick = "`" if markdown else ""
    return (f"\n\nAnswering {tick}ask_next{tick}'s questions once on {tick}test_blanked{tick} (the true answers where "
            f"the case has them; {figure(f['questions_per_case'], '.2f')} questions listed per case below the same day) "
            "sends to the same day "
            f"{figure(f['dvt_same_day_after'], '.1%')} of the {f['dvt_below']:,} DVT cases below it and "
            f"{figure(f['non_dvt_same_day_after'], '.1%')} of the {f['non_dvt_below']:,} other cases below it (by a "
            "red flag or screen rule their answers meet, or the expected cost)")


def _questioning_line(metrics: dict[str, Any]) -> str:
    q = metrics.get("questioning")
    if not q:
        return ""
    acc = {s: q[s]["accuracy"] for s in ("chosen", "random", "fixed")}
    return (f"\n\nAsking questions from age and sex only ({q['n_cases']:,} test cases): top-1 accuracy after 5 "
            f"questions chosen {figure(acc['chosen']['5'], '.3f')}, random {figure(acc['random']['5'], '.3f')}, "
            f"fixed order {figure(acc['fixed']['5'], '.3f')}; after 10: "
            + " / ".join(figure(acc[k]["10"], ".3f") for k in ("chosen", "random", "fixed")))
