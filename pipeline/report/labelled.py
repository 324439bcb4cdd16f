"""Evaluate a model on a user's own labelled cases (`kneepain evaluate --data FILE`).

The figures are those of the DVC stage (:func:`pipeline.report.evaluate.evaluate_split` and
:func:`pipeline.report.decision_metrics.evaluate_decision`, without the oracle, which only exists
for generated cases), each with a 95% confidence interval (:mod:`pipeline.report.intervals`),
because real labelled sets are small. Rows that fail validation are listed, not fatal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import metrics as M
from pipeline.core.csvrecords import reason_kind
from pipeline.core.errors import BatchInputError, error_lines
from pipeline.core.files import reclaim_stale_temps, tmp_path, write_report_json, write_text_atomic
from pipeline.core.parsing import ParsedCases
from pipeline.core.paths import ENV_HOME
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS
from pipeline.core.wording import counted
from pipeline.data.datasets import labels
from pipeline.data.fingerprints import FittedRows, case_fingerprints
from pipeline.data.real import REFERENCE_COLUMN, rejects_csv, validate_labelled
from pipeline.decision.conformal import prediction_sets
from pipeline.report.decision_metrics import evaluate_decision, figure, measured
from pipeline.report.evaluate import N_BINS, evaluate_split
from pipeline.report.intervals import LEVEL, MIN_BOOTSTRAP_CASES, bootstrap_interval, calibrated_range, wilson_interval
from pipeline.serve.guard import signals_deferred
from pipeline.serve.loading import LoadedModel
from pipeline.serve.rejectreasons import marker_advice, markers_among

__all__ = ["EVALUATION_FILES", "evaluate_labelled", "format_labelled", "no_valid_rows_error", "with_interval",
           "write_labelled_reports"]

_SPLIT = "cases"
# below this many cases a bootstrap interval held the 50k-case figure in clearly fewer than 95% of
# sets (docs/own-cases.md gives the figures); the report says so
_FEW_FOR_BOOTSTRAP = 50
_LISTED_PROBLEMS = 3  # in the message of a file without a valid row (its rejects are not written)


def _macro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    """The mean F1 over the conditions among the labels or the predictions (scikit-learn's macro
    F1): a condition a file neither holds nor is predicted to hold is no failure."""
    k = len(CONDITIONS)
    tp = np.bincount(y[pred == y], minlength=k)
    denominator = np.bincount(pred, minlength=k) + np.bincount(y, minlength=k)
    present = denominator > 0
    return float((2 * tp[present] / denominator[present]).mean())


def no_valid_rows_error(where: str, n_rows: int, rejects: pd.DataFrame, *, then: str) -> BatchInputError:
    """The error for a file of labelled cases none of whose rows is valid: its first problems, each
    with its row, column and value, and what to write for a missing answer where the file has
    another tool's marker for one (R's ``NA``); ``then``: what to do once the file is mended. A
    file of a header only has no problems to list, and says so."""
    if n_rows == 0:
        return BatchInputError(f"{where}: the file has no rows (a header only): add its cases, then {then}.")
    advice = marker_advice(markers_among(rejects), then=then)
    return BatchInputError(f"{where}: no valid labelled row among {n_rows:,}; the first problems: "
                           + "; ".join(error_lines(rejects, _LISTED_PROBLEMS)) + (f". The {advice}" if advice else ""))


def _rate(successes: np.ndarray) -> dict[str, Any]:
    n = int(len(successes))
    k = int(np.sum(successes))
    return {"value": k / n if n else float("nan"), "ci": wilson_interval(k, n), "n": n}


def evaluate_labelled(model: LoadedModel, frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                      where: str = "cases", malformed: dict[int, str] | None = None,
                      fitted: FittedRows | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], pd.DataFrame]:
    """Evaluate ``model`` on labelled cases, with a 95% interval next to every figure.

    Parameters
    ----------
    model : LoadedModel
    frame : DataFrame
        Cases in the case schema with ``condition`` and optionally ``reference_level``.
    n_boot : int, default=1000
        Bootstrap resamples for the figures that are not proportions.
    seed : int, default=0
    where : str, default="cases"
        The file's name, for error messages.
    malformed : dict, optional
        Rows that are CSV records of the wrong number of fields, and why
        (:func:`pipeline.core.casefiles.read_case_records`): rejected with the invalid rows.
    fitted : FittedRows, optional
        The rows the model was fitted on (:func:`pipeline.data.fingerprints.fitted_fingerprints`):
        valid rows with the same answers and condition are left out (their figures would not be
        held out), counted in ``fitted_rows``.

    Returns
    -------
    metrics : dict
        JSON-ready: ``n_rows``, ``n`` (valid rows evaluated), ``n_rejected``, ``top_reject_reasons`` (of
        ``reject_reason_kinds`` kinds); ``repeated_rows`` (rows evaluated that repeat another's case);
        ``accuracy``, ``top3_accuracy``, ``log_loss``, ``brier``, ``macro_f1``, each with
        ``<name>_ci``; ``ece`` (top label) with ``ece_if_calibrated``
        (:func:`pipeline.report.intervals.calibrated_range`); ``per_condition``; ``confusion_matrix``; ``triage``,
        ``differential`` and ``atypical`` (with a decision layer).
    arrays : dict of ndarray
        ``y``, ``proba`` and ``proba_uncalibrated`` for the plots.
    rejects : DataFrame
        The reject lines of :func:`validate_labelled`.

    Raises
    ------
    BatchInputError
        No ``condition`` column, no valid row, or every valid row one the model was fitted on.
    """
    valid, reference, rejects, ignored, valid_rows, parsed = validate_labelled(frame, where=where, malformed=malformed)
    if len(valid) == 0:
        raise no_valid_rows_error(where, len(frame), rejects, then="evaluate again")
    markers = markers_among(rejects)
    seen = np.zeros(len(valid), dtype=bool)
    same = case_fingerprints(parsed, labels(valid))
    if fitted is not None:
        seen = np.isin(same, fitted.fingerprints)
        if seen.all():
            raise BatchInputError(f"{where}: every valid row ({len(valid):,}) has the answers and condition of a row the "
                                  "model was fitted on, so figures on them would not be held out; evaluate on cases "
                                  "the model has not seen.")
        valid, reference, parsed = valid[~seen].reset_index(drop=True), reference[~seen], parsed[~seen]
    # cases repeated under other ids (a double entry, a repeat visit): each counted, and said
    repeats = int(pd.Series(same[~seen]).duplicated().sum())
    scores, arrays = evaluate_split(model, None, valid, return_arrays=True)
    y, proba = arrays["y"], arrays["proba"]
    n = len(y)
    pred = proba.argmax(axis=1)
    top3 = np.argsort(-proba, axis=1, kind="stable")[:, :3]
    losses = -np.log(np.clip(proba[np.arange(n), y], 1e-15, 1.0))
    sq = ((proba - np.eye(len(CONDITIONS))[y]) ** 2).sum(axis=1)

    def boot(statistic, ceiling: float | None = None) -> list[float]:  # every figure booted here is >= 0
        return bootstrap_interval(statistic, n, n_boot=n_boot, seed=seed, floor=0.0, ceiling=ceiling)

    firsts = rejects.drop_duplicates(["row", "column"])
    kinds = reason_kind(firsts["reason"])
    reasons = (firsts["column"].astype(str) + ": " + kinds).where(firsts["column"].astype(str) != "", kinds)
    out: dict[str, Any] = {
        "n_rows": len(frame), "n": n, "n_rejected": int(rejects["row"].nunique()),
        # rows left out as the model's own fitting rows, and the fitting splits looked at or not
        "fitted_rows": {"left_out": int(seen.sum()), "rows": valid_rows[seen].tolist(),
                        "checked_against": list(fitted.found) if fitted else [],
                        "not_checked": list(fitted.not_found) if fitted else [],
                        "folder": fitted.folder if fitted else ""},
        "repeated_rows": repeats,
        "top_reject_reasons": {str(k): int(v) for k, v in reasons.value_counts().head(5).items()},
        "reject_reason_kinds": int(reasons.nunique()),
        # rejected answers another tool wrote for a missing one (R's NA): said with how to write them
        "missing_markers": {str(k): int(v) for k, v in markers.items()},
        # read as neither case fields nor labels: an answer under a misspelt name is unknown
        "ignored_columns": list(ignored),
        "confidence_level": LEVEL,
        "intervals": f"Wilson score for proportions, bias-corrected percentile bootstrap ({n_boot} resamples) otherwise"
                     + (f" (none: fewer than {MIN_BOOTSTRAP_CASES} cases)" if n < MIN_BOOTSTRAP_CASES else ""),
    }
    for key, hits in (("accuracy", pred == y), ("top3_accuracy", (top3 == y[:, None]).any(axis=1))):
        out[key], out[f"{key}_ci"] = float(hits.mean()), wilson_interval(int(hits.sum()), n)
    out["log_loss"], out["log_loss_ci"] = scores["log_loss"], boot(lambda i: float(losses[i].mean()))
    out["brier"], out["brier_ci"] = scores["brier"], boot(lambda i: float(sq[i].mean()), ceiling=2.0)
    # no interval (a bootstrap covers the binned estimate's bias at this size, not the model's error):
    # the range a perfectly calibrated model's ECE takes on these cases
    out["ece"] = scores["ece_top_label"]
    out["ece_if_calibrated"] = calibrated_range(lambda labels: M.ece_top_label(proba, labels, N_BINS), proba,
                                                n_draws=n_boot, seed=seed)
    out["macro_f1"], out["macro_f1_ci"] = scores["macro_f1"], boot(lambda i: _macro_f1(pred[i], y[i]), ceiling=1.0)
    out["uncalibrated_log_loss"] = scores["uncalibrated_log_loss"]
    out["per_condition"] = {c: {"support": int((y == k).sum()),
                                "recall": _rate(pred[y == k] == k), "precision": _rate(y[pred == k] == k)}
                            for k, c in enumerate(CONDITIONS)}
    counts = np.zeros((len(CONDITIONS), len(CONDITIONS)), dtype=int)
    np.add.at(counts, (y, pred), 1)
    out["confusion_matrix"] = {"rows_true_columns_predicted": list(CONDITIONS), "counts": counts.tolist()}
    if model.decision is not None:
        out.update(_decision_figures(model, parsed, arrays, reference, boot))
    return out, arrays, rejects


def _decision_figures(model: LoadedModel, parsed: ParsedCases, arrays: dict[str, np.ndarray], reference: np.ndarray,
                      boot) -> dict[str, Any]:
    """The decision layer's figures on the evaluated cases (``parsed``: their answers as parsed)."""
    assert model.decision is not None
    y, proba = arrays["y"], arrays["proba"]
    shown_by_split: dict[str, np.ndarray] = {}  # the differential as the `differential` column shows it
    found = evaluate_decision(model, {_SPLIT: parsed}, {_SPLIT: arrays}, reference_levels={_SPLIT: reference},
                              shown_out=shown_by_split)
    t, c, a = found["triage"][_SPLIT], found["conformal"][_SPLIT], found["atypical"][_SPLIT]
    n, dvt = len(y), int(t["n_dvt"])

    def ci(rate: float, n_of: int) -> dict[str, Any]:
        """``rate`` (a share of ``n_of`` cases) with its interval and ``n_of``."""
        k = int(round(rate * n_of)) if n_of else 0
        if abs(rate * n_of - k) > 1e-6:  # a rate of other cases would get another's interval and count
            raise ValueError(f"a rate of {rate!r} is no share of {n_of} cases")
        return {"value": rate, "ci": wilson_interval(k, n_of), "n": n_of}

    def mean_size(sets: np.ndarray) -> dict[str, Any]:
        """The mean number of conditions of ``sets`` (n, K), with its interval."""
        sizes = sets.sum(axis=1)
        return {"value": float(sizes.mean()), "ci": boot(lambda i: float(sizes[i].mean()), ceiling=float(len(CONDITIONS)))}

    # the differential as the `differential` column shows it (the conformal set with the condition
    # that drives the level added), and the conformal set alone, whose target the coverage is for
    shown = shown_by_split[_SPLIT]
    return {
        "triage": {"reference": f"{REFERENCE_COLUMN} where given ({int((reference >= 0).sum())} rows), else the "
                                "triage config's level for the true condition raised by any red flag or screen rule "
                                "the answers meet",
                   "under_triage_rate": ci(t["under_triage_rate"], n), "under_triage_ucb95": t["under_triage_ucb95"],
                   "dvt_urgent_rate": ci(t["dvt_urgent_rate"], dvt), "dvt_emergency_rate": ci(t["dvt_emergency_rate"], dvt),
                   # each rate with the cases it is a share of: every non-DVT case, or every case
                   "non_dvt_emergency_rate": ci(t["non_dvt_emergency_rate"], n - dvt),
                   "over_triage_emergency_rate": ci(t["over_triage_emergency_rate"], n),
                   "safe_advice_rate": ci(t["safe_advice_rate"], n), "exact_level_rate": ci(t["exact_rate"], n),
                   "level_shares": t["level_shares"], "n_dvt": dvt},
        # the conformal set's figures under their earlier names (its target is for them), and the
        # differential as shown beside them
        "differential": {"target": c["target"], "coverage": ci(c["coverage"], n),
                         "mean_set_size": mean_size(prediction_sets(proba, parsed.codes, model.decision.conformal)),
                         "per_condition_coverage": c["per_class_coverage"],
                         "shown": {"coverage": ci(c["shown"]["coverage"], n),
                                   "mean_set_size": mean_size(shown)}},
        "atypical": {"flag_rate": ci(a["flag_rate"], n)},
    }


def with_interval(value: float, ci: list[float], digits: int = 3) -> str:
    """``0.842 [0.801, 0.877]``; ``[no interval]`` where there is none (too few cases)."""
    spec = f".{digits}f"
    return f"{figure(value, spec)} [{_between(ci, spec, ', ', 'no interval')}]"


def _between(ci: list[float], spec: str, sep: str = " to ", none: str = "n/a") -> str:
    """An interval as the report writes it: ``low to high``, or ``none`` where there is none."""
    return f"{figure(ci[0], spec)}{sep}{figure(ci[1], spec)}" if measured(ci[0]) else none


def _caveat_lines(m: dict[str, Any]) -> list[str]:
    """What the figures rest on that a reader must know: most rows rejected, columns ignored (their
    answers unknown in every case), rows left out as the model was fitted on them, and what the
    evaluation could not check."""
    from pipeline.core.parsing import ignored_columns_message
    from pipeline.core.schema import LABELLED_COLUMNS

    f = m.get("fitted_rows") or {}
    lines = []
    if repeats := m.get("repeated_rows", 0):
        lines.append(f"{counted(repeats, 'row')} of the {m['n']:,} evaluated repeat{'s' if repeats == 1 else ''} the "
                     "answers and condition of another row (a double entry, or a repeat visit under another id?): "
                     f"each is counted, so the figures weigh those cases more and the intervals are those of "
                     f"{m['n']:,} cases, narrower than the {m['n'] - repeats:,} distinct ones would give.")
    if m["n_rejected"] * 2 > m["n_rows"]:
        lines.append(f"Most rows were rejected ({m['n_rejected']:,} of {m['n_rows']:,}): the figures are on the "
                     f"{m['n']:,} left, which need not be like the rest; mend the rejected rows (their reasons are "
                     "listed) and evaluate again.")
    if m.get("ignored_columns"):
        said = ignored_columns_message(m["ignored_columns"], also=LABELLED_COLUMNS)
        lines.append(f"{said[0].upper()}{said[1:]}: every case's answer under them is read as unknown, which lowers "
                     "the figures where they are answers under another name.")
    if f.get("left_out"):
        shown = ", ".join(map(str, f["rows"][:10])) + (", ..." if f["left_out"] > 10 else "")
        lines.append(f"Left out {f['left_out']:,} rows with the answers and condition of a row the model was fitted on "
                     f"(rows {shown}; all in metrics.json; checked against: {', '.join(f['checked_against'])}): figures "
                     "on them would not be held out.")
    splits = [s for s in f.get("not_checked") or [] if s != "extra"]
    if splits:
        lines.append(f"Not checked row by row against: {', '.join(splits)} (not found in {f['folder']} with the bytes "
                     f"the model's manifest records; run from the project folder, or set {ENV_HOME}).")
    if "extra" in (f.get("not_checked") or []):
        lines.append("Not checked row by row against the labelled cases the model was trained on (--extra-data): "
                     "those among these rows cannot be left out, and figures on them would not be held out.")
    return lines


def _rough_intervals(m: dict[str, Any]) -> str:
    """The warning that the bootstrap intervals are too narrow, where there are some and the
    cases are fewer than :data:`_FEW_FOR_BOOTSTRAP` (else '')."""
    if not MIN_BOOTSTRAP_CASES <= m["n"] < _FEW_FOR_BOOTSTRAP:
        return ""
    return (f"On fewer than {_FEW_FOR_BOOTSTRAP} cases the bootstrap intervals of log loss, Brier score and macro "
            "F1 are too narrow: read them as rough.")


def format_labelled(metrics: dict[str, Any]) -> str:
    """A plain-text summary: the headline figures with their intervals, then triage safety."""
    m = metrics
    pct = f"{m['confidence_level']:.0%}"
    lines = [f"{m['n']:,} labelled cases evaluated ({m['n_rejected']:,} of {m['n_rows']:,} rows rejected); "
             f"figures with {pct} intervals", *_caveat_lines(m),
             *(f"  {label:<24}{with_interval(m[key], m[key + '_ci'], 4)}" for label, key in (
                 ("accuracy", "accuracy"), ("top-3 accuracy", "top3_accuracy"), ("log loss", "log_loss"),
                 ("Brier score", "brier"), ("macro F1", "macro_f1"))),
             f"  {'ECE (top label)':<24}{figure(m['ece'], '.4f')} (a calibrated model's on these cases: "
             f"{_between(m['ece_if_calibrated'], '.4f')})"]
    if rough := _rough_intervals(m):
        lines.append(f"  {rough}")
    if "triage" in m:
        t, d = m["triage"], m["differential"]
        lines += [f"  {label:<24}{with_interval(r['value'], r['ci'])}  (n={r['n']})" for label, r in (
            ("DVT urgent or sooner", t["dvt_urgent_rate"]), ("safe advice", t["safe_advice_rate"]),
            ("non-DVT to emergency", t["non_dvt_emergency_rate"]),
            ("over-triage: emergency", t["over_triage_emergency_rate"]),
            ("differential coverage", d["shown"]["coverage"]),
            ("atypical flagged", m["atypical"]["flag_rate"]))]
    if m["top_reject_reasons"]:
        lines += ["Top reasons for rejected rows:"] + [f"  {n:>6,}  {r}" for r, n in m["top_reject_reasons"].items()]
        if (left := m.get("reject_reason_kinds", 0) - len(m["top_reject_reasons"])) > 0:
            lines.append(f"  and {left:,} other kind{'s' if left > 1 else ''} of reason: every rejected row and its "
                         "reasons are in rejects.csv")
    if advice := marker_advice(m.get("missing_markers", {}), then="evaluate again"):
        lines.append(f"  {advice[0].upper()}{advice[1:]}")
    return "\n".join(lines)


def _report_markdown(metrics: dict[str, Any], source: str, plots: list[Path]) -> str:
    m = metrics
    lines = [f"# Evaluation on `{source}`", "",
             "**Information, not a diagnosis.** Figures on your cases, with "
             f"{m['confidence_level']:.0%} confidence intervals ({m['intervals']}).", "",
             f"- rows read: {m['n_rows']:,}; evaluated: {m['n']:,}; rejected: {m['n_rejected']:,}"
             + (" (see `rejects.csv`)" if m["n_rejected"] else ""),
             *(f"- {line}" for line in _caveat_lines(m)), "",
             "| figure | value | interval |", "|---|---|---|"]
    for label, key in (("accuracy", "accuracy"), ("top-3 accuracy", "top3_accuracy"), ("log loss", "log_loss"),
                       ("Brier score", "brier"), ("macro F1", "macro_f1")):
        lines.append(f"| {label} | {figure(m[key], '.4f')} | {_between(m[key + '_ci'], '.4f')} |")
    lines += [f"| ECE (top label, {N_BINS} bins) | {figure(m['ece'], '.4f')} | a calibrated model's: "
              f"{_between(m['ece_if_calibrated'], '.4f')} |", "",
              "The binned ECE is biased upwards on few cases, so it has no interval: beside it is the range "
              f"({m['confidence_level']:.0%}) a perfectly calibrated model's ECE takes on these cases (labels drawn "
              "from the model's own probabilities). Inside that range, these cases show no miscalibration; above it, "
              "they do."]
    lines += ["", "Macro F1 is the mean F1 over the conditions among the labels or the predictions (scikit-learn's): "
                  "a condition this file lacks but the model predicted counts with an F1 of 0."]
    if rough := _rough_intervals(m):
        lines += ["", rough]
    lines += ["", "## Recall per condition", "", "| condition | cases | recall | interval |", "|---|---|---|---|"]
    for c, r in m["per_condition"].items():
        rec = r["recall"]
        lines.append(f"| {CONDITION_LABELS[c]} | {r['support']} | {figure(rec['value'], '.3f')} | "
                     f"{_between(rec['ci'], '.3f')} |")
    if "triage" in m:
        lines += ["", "## Triage safety and the differential", "", f"Reference: {m['triage']['reference']}.", "",
                  "| figure | value | interval | cases |", "|---|---|---|---|"]
        for label, r in (("DVT sent urgent or emergency", m["triage"]["dvt_urgent_rate"]),
                         ("DVT sent to emergency", m["triage"]["dvt_emergency_rate"]),
                         ("non-DVT sent to emergency", m["triage"]["non_dvt_emergency_rate"]),
                         ("sent to emergency, the reference lower (over-triage)",
                          m["triage"]["over_triage_emergency_rate"]),
                         ("safe advice (at least the reference level)", m["triage"]["safe_advice_rate"]),
                         ("the differential shown holds the true condition", m["differential"]["shown"]["coverage"]),
                         (f"its conformal set alone holds it (target {m['differential']['target']:.0%})",
                          m["differential"]["coverage"]),
                         ("atypical flagged", m["atypical"]["flag_rate"])):
            lines.append(f"| {label} | {figure(r['value'], '.3f')} | {_between(r['ci'], '.3f')} | {r['n']} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"- `{p.name}`" for p in plots]
    return "\n".join(lines) + "\n"


#: what an evaluation of a labelled file writes in its folder (``rejects.csv`` only when rows were rejected)
EVALUATION_FILES = ("metrics.json", "rejects.csv", "confusion_matrix.png", "reliability.png", "report.md")


def write_labelled_reports(metrics: dict[str, Any], arrays: dict[str, np.ndarray], rejects: pd.DataFrame,
                           out_dir: str | Path, *, source: str) -> list[Path]:
    """Write ``metrics.json``, ``rejects.csv`` (when rows were rejected), the plots and ``report.md``
    (:data:`EVALUATION_FILES`) into ``out_dir``, whole: each is written in a temporary folder inside
    it first (:func:`pipeline.core.files.tmp_path`; one a killed run left is removed by the next)
    and renamed into place once all are, so that a stop while they are drawn leaves the
    earlier evaluation as it was (not a broken plot beside its report), and an earlier
    ``rejects.csv`` is removed only then."""
    import shutil

    from pipeline.report import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y, proba = arrays["y"], arrays["proba"]
    # named after report.md as any temporary of the project is after its file: one a killed run left
    # is found and removed here, by the next run into the folder
    reclaim_stale_temps(out_dir / "report.md")
    work = tmp_path(out_dir / "report.md", unique=True)
    work.mkdir()
    try:
        drawn = [plots.plot_confusion_matrix(y, proba, work / "confusion_matrix.png", title="Confusion matrix"),
                 plots.plot_reliability(y, proba, work / "reliability.png",
                                        proba_uncalibrated=arrays["proba_uncalibrated"], n_bins=N_BINS,
                                        title="Top-label reliability")]
        write_report_json(work / "metrics.json", metrics)
        if len(rejects):
            write_text_atomic(work / "rejects.csv", rejects_csv(rejects))
        write_text_atomic(work / "report.md", _report_markdown(metrics, source, drawn))
        written = [out_dir / name for name in EVALUATION_FILES if (work / name).exists()]
        with signals_deferred():  # a stop waits for the last rename: one evaluation or the other, not a mix
            for path in written:
                os.replace(work / path.name, path)
            if not len(rejects):
                (out_dir / "rejects.csv").unlink(missing_ok=True)  # an earlier evaluation's
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written
