"""A scored batch at a glance (`kneepain score --report FILE.html`): one self-contained HTML page.

It shows the rows scored and rejected (with the commonest reasons), the triage mix, the batch's
estimated case mix (:mod:`pipeline.decision.priors`), the atypical rate, and the drift of every
case field against the population the model was trained on, unknown answers included. Drift is
the population stability index (PSI) over the answers of a field (numbers in ten bins cut at the
training deciles), with the unknown answer as one more bin; by the usual rule of thumb a PSI
above 0.1 is a moderate shift and above 0.25 a large one.

Written here rather than with Evidently: Evidently's data-drift report would need its own
dependency tree (a web dashboard stack) for a table and three bar charts, and it knows nothing of
this schema's unknown answers, the case mix or the triage levels; the page here needs nothing but
matplotlib, which the project has, and is one file with the plots embedded as PNG.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.config import LEVELS
from pipeline.core.files import arrow_file, file_label, is_parquet, link_target, write_report_json, write_text_atomic
from pipeline.core.parsing import codes_to_text_frame, parse_cases
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, FIELDS, UNKNOWN
from pipeline.data.generate import generate_codes
from pipeline.decision.priors import PriorEstimate, estimate_prior
from pipeline.report.plots import figure
from pipeline.serve import CHUNK_ROWS
from pipeline.serve.adapt import MIN_ADAPT_ROWS, prior_report, scored_cases, training_prior
from pipeline.serve.batch import rejects_file
from pipeline.serve.loading import LoadedModel
from pipeline.serve.rejectreasons import reason_texts, reject_reasons

__all__ = ["REFERENCE_CASES", "field_drift", "summarise_batch", "write_batch_report"]

REFERENCE_CASES = 20_000
TOP_REASONS = 8  # the commonest reject reasons shown
_EPS = 1e-4


def _bins(reference: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """Inner bin edges of the numeric fields (the reference's deciles); None for coded fields."""
    edges: dict[str, np.ndarray | None] = {}
    for f in FIELDS:
        if f.kind in ("integer", "float"):
            values = reference[f.name][~np.isnan(reference[f.name])]
            edges[f.name] = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9))) if len(values) else np.array([])
        else:
            edges[f.name] = None
    return edges


def _counts(codes: dict[str, np.ndarray], edges: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """Per field, the count of each answer (or number bin); the last entry counts unknown answers."""
    out = {}
    for f in FIELDS:
        c = codes[f.name]
        cut = edges[f.name]
        if cut is None:
            n_codes = len(f.allowed) if f.kind == "category" else 2
            known = c != UNKNOWN
            out[f.name] = np.append(np.bincount(c[known].astype(np.int64), minlength=n_codes), (~known).sum())
        else:
            known = ~np.isnan(c)
            out[f.name] = np.append(np.bincount(np.searchsorted(cut, c[known], side="right"), minlength=len(cut) + 1),
                                    (~known).sum())
    return out


def _psi(batch: np.ndarray, reference: np.ndarray) -> float:
    p = np.maximum(batch / max(batch.sum(), 1), _EPS)
    q = np.maximum(reference / max(reference.sum(), 1), _EPS)
    return float(np.sum((p - q) * np.log(p / q)))


def field_drift(batch: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per field: ``psi``, ``unknown_batch`` and ``unknown_training`` (shares), sorted by PSI."""
    rows = [{"field": f.name, "psi": _psi(batch[f.name], reference[f.name]),
             "unknown_batch": float(batch[f.name][-1] / max(batch[f.name].sum(), 1)),
             "unknown_training": float(reference[f.name][-1] / max(reference[f.name].sum(), 1))} for f in FIELDS]
    return pd.DataFrame(rows).sort_values("psi", ascending=False, ignore_index=True)


def _read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    if is_parquet(path):
        with arrow_file(path) as source:
            return pd.read_parquet(source, columns=columns)
    return pd.read_csv(path, usecols=lambda c: c in columns)


def summarise_batch(inputs: list[str | Path], output: str | Path, model: LoadedModel, *,
                    estimate: PriorEstimate | None = None, chunk_rows: int = CHUNK_ROWS,
                    rejects: str | Path | None = None) -> dict[str, Any]:
    """Everything the page shows, JSON-ready, from the inputs, the scored output and its rejects file
    (``rejects``, default ``<output>.rejects.csv``).

    ``estimate``: the case mix found by ``--adapt-priors``; without it, the mix is estimated from
    the output's probabilities. The predicted mix counts the output's ``prediction`` column, which
    was chosen on the full numbers.
    """
    output = Path(output)
    scored = _read_columns(output, [f"p_{c}" for c in CONDITIONS] + ["prediction", "triage", "atypical"])
    rejects_path = rejects_file(output, rejects)
    # in the rejects file's own format (--rejects x.parquet writes Parquet), one text per rejected row
    rejected = pa.chunked_array(list(reason_texts(rejects_path)) if rejects_path.exists() else [],
                                pa.string()).to_pandas()
    reasons = reject_reasons(rejected)
    proba = scored[[f"p_{c}" for c in CONDITIONS]].to_numpy(dtype=np.float64)
    if estimate is None and len(proba) >= MIN_ADAPT_ROWS:  # fewer rows: shares of noise (as --adapt-priors refuses)
        estimate = estimate_prior(proba, training_prior(model))
    summary: dict[str, Any] = {
        "inputs": [file_label(p) for p in inputs], "output": file_label(output), "rows_scored": len(scored),
        "rows_rejected": len(rejected),  # one line per rejected row (an input given twice has each row twice)
        "top_reject_reasons": {str(k): int(v) for k, v in reasons.head(TOP_REASONS).items()},
        "reject_reason_kinds": len(reasons),
        # shares of the scored rows (none when no row was scored, as the case mix)
        "predicted": {c: float((scored["prediction"] == c).mean()) for c in CONDITIONS} if len(scored) else None,
        "case_mix": prior_report(estimate) if estimate is not None else None,
    }
    if estimate is None:
        summary["case_mix_note"] = (f"not estimated: {_were_scored(len(proba))}, and the case mix is estimated "
                                    f"from {MIN_ADAPT_ROWS:,} or more (as --adapt-priors needs)")
    if "triage" in scored and len(scored):  # no rows scored: no shares to show
        shares = scored["triage"].value_counts(normalize=True)
        summary["triage"] = {lv: float(shares.get(lv, 0.0)) for lv in LEVELS}
        summary["atypical_rate"] = float(scored["atypical"].astype(str).str.lower().isin(("true", "1")).mean())
        assert model.decision is not None
        summary["atypical_expected"] = float(model.decision.atypical["quantile"])
    if model.kb is not None and len(scored) < MIN_ADAPT_ROWS:  # a few rows' answers are shares of noise
        summary["drift_note"] = (f"not measured: {_were_scored(len(scored))}, and drift is measured on "
                                 f"{MIN_ADAPT_ROWS:,} or more")
    elif model.kb is not None:
        ref_codes = parse_cases(codes_to_text_frame(generate_codes(model.kb, REFERENCE_CASES, seed=0)[0])).codes
        edges = _bins(ref_codes)
        reference = _counts(ref_codes, edges)
        batch = {name: np.zeros_like(c) for name, c in reference.items()}
        for parsed in scored_cases(inputs, chunk_rows=chunk_rows):  # the rows scored, repeated ids left out
            for name, c in _counts(parsed.codes, edges).items():
                batch[name] += c
        summary["drift"] = field_drift(batch, reference).to_dict(orient="records")
    return summary


def _were_scored(n: int) -> str:
    return "1 row was scored" if n == 1 else f"{n:,} rows were scored"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(summary: dict[str, Any]) -> dict[str, str]:
    figs = {}
    if "triage" in summary:
        fig = figure(6, 2.6)
        ax = fig.subplots()
        ax.barh(list(LEVELS), [summary["triage"][lv] for lv in LEVELS], color="#4c72b0")
        ax.set_xlabel("share of scored cases")
        ax.set_title("Triage mix")
        figs["triage"] = _png(fig)
    mix = summary.get("case_mix")
    if mix:
        c = mix["conditions"]
        fig = figure(7, 3.4)
        ax = fig.subplots()
        x = np.arange(len(CONDITIONS))
        est = np.array([c[k]["estimated"] for k in CONDITIONS])
        err = np.array([[est[i] - c[k]["low"], c[k]["high"] - est[i]] for i, k in enumerate(CONDITIONS)]).T
        ax.bar(x - 0.2, [c[k]["training"] for k in CONDITIONS], 0.4, label="training", color="#bbbbbb")
        ax.bar(x + 0.2, est, 0.4, yerr=err, capsize=2, label="this batch (estimated)", color="#dd8452")
        ax.set_xticks(x, [CONDITION_LABELS[k] for k in CONDITIONS], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("share")
        ax.set_title("Case mix")
        ax.legend(fontsize=8)
        figs["case_mix"] = _png(fig)
    if summary.get("drift"):
        drift = pd.DataFrame(summary["drift"])
        fig = figure(7, 0.18 * len(drift) + 1.2)
        ax = fig.subplots()
        ax.barh(drift["field"][::-1], drift["psi"][::-1], color=np.where(drift["psi"][::-1] > 0.25, "#c44e52",
                                                                          np.where(drift["psi"][::-1] > 0.1, "#dd8452",
                                                                                   "#55a868")))
        ax.axvline(0.1, color="#888888", lw=0.8, ls="--")
        ax.axvline(0.25, color="#888888", lw=0.8, ls=":")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("population stability index against the training population")
        ax.set_title("Drift per field")
        figs["drift"] = _png(fig)
    return figs


def _table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(figs: dict[str, str], name: str, alt: str) -> str:
    return f'<img id="plot-{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{figs[name]}">' \
        if name in figs else ""


def render_html(summary: dict[str, Any]) -> str:
    """The page, self-contained (plots embedded, no script)."""
    figs = _figures(summary)
    s = summary
    parts = [f"<h1>Scored batch: {html.escape(', '.join(Path(p).name for p in s['inputs']))}</h1>",
             '<p class="note">Information, not a diagnosis. Seek professional medical advice.</p>',
             '<section id="rows"><h2>Rows</h2>',
             _table(["scored", "rejected", "output"], [[f"{s['rows_scored']:,}", f"{s['rows_rejected']:,}", s["output"]]])]
    if not s["rows_scored"]:
        parts.append('<p class="note">No row was scored: there is no triage, case mix or drift to show.</p>')
    if s["top_reject_reasons"]:
        parts.append("<h3>Commonest reasons for rejected rows</h3>"
                     + _table(["column: reason", "rows"], [[r, n] for r, n in s["top_reject_reasons"].items()]))
        if (left := s["reject_reason_kinds"] - len(s["top_reject_reasons"])) > 0:
            parts.append(f'<p class="note">{left:,} other kind{"s" if left > 1 else ""} of reason not shown: every '
                         "rejected row and its reasons are in the rejects file.</p>")
    parts.append("</section>")
    if "triage" in s:
        parts += ['<section id="triage"><h2>Triage mix</h2>', _img(figs, "triage", "triage mix"),
                  _table(["level", "share"], [[lv, f"{s['triage'][lv]:.1%}"] for lv in LEVELS]),
                  f"<p>Atypical cases (unlike anything in training): <b id=\"atypical-rate\">{s['atypical_rate']:.2%}"
                  f"</b>, against {s['atypical_expected']:.2%} expected in the training population.</p></section>"]
    mix = s.get("case_mix")
    if mix:
        rows = [[CONDITION_LABELS[c], f"{v['training']:.3f}", f"{v['estimated']:.3f}",
                 f"{v['low']:.3f} to {v['high']:.3f}", f"{s['predicted'][c]:.3f}"] for c, v in mix["conditions"].items()]
        parts += ['<section id="case-mix"><h2>Estimated case mix</h2>', _img(figs, "case_mix", "case mix"),
                  _table(["condition", "training", "this batch", mix["interval"], "top prediction share"], rows),
                  f"<p class=\"note\">{html.escape(mix['method'])}; assumes {html.escape(mix['assumption'])}.</p>"
                  "</section>"]
    elif s.get("case_mix_note") and s["rows_scored"]:
        parts += ['<section id="case-mix"><h2>Estimated case mix</h2>',
                  f"<p class=\"note\">{html.escape(s['case_mix_note'])}.</p></section>"]
    if s.get("drift"):
        rows = [[d["field"], f"{d['psi']:.3f}", f"{d['unknown_training']:.1%}", f"{d['unknown_batch']:.1%}",
                 "large" if d["psi"] > 0.25 else "moderate" if d["psi"] > 0.1 else ""] for d in s["drift"]]
        parts += ['<section id="drift"><h2>Drift per field against the training population</h2>',
                  _img(figs, "drift", "drift per field"),
                  _table(["field", "PSI", "unknown in training", "unknown in batch", "shift"], rows, "drift"),
                  "<p class=\"note\">PSI over each field's answers (numbers in ten bins at the training deciles) with "
                  "unknown as its own answer; above 0.1 moderate, above 0.25 large.</p></section>"]
    elif s.get("drift_note") and s["rows_scored"]:
        parts += ['<section id="drift"><h2>Drift per field against the training population</h2>',
                  f"<p class=\"note\">{html.escape(s['drift_note'])}.</p></section>"]
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
             "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .6rem;"
             "text-align:left}th{background:#f3f3f3}.note{color:#555;font-size:.9rem}img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kneepain batch report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_batch_report(inputs: list[str | Path], output: str | Path, model: LoadedModel, path: str | Path, *,
                       estimate: PriorEstimate | None = None, chunk_rows: int = CHUNK_ROWS,
                       rejects: str | Path | None = None) -> dict[str, Any]:
    """Write the HTML page to ``path`` and its numbers to ``path`` with ``.json``; return the numbers."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{path}: the batch report is an .html file.")
    summary = summarise_batch(inputs, output, model, estimate=estimate, chunk_rows=chunk_rows, rejects=rejects)
    write_text_atomic(link_target(path), render_html(summary))  # through a link, as the output is written
    write_report_json(link_target(path.with_suffix(".json")), summary)
    return summary
