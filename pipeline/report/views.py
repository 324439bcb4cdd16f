"""What DVC shows of an evaluation: a dozen headline numbers and the curves as data series.

``reports/metrics.json`` holds only :func:`headline_metrics` (what `dvc metrics show` and `dvc exp
show` put in columns); everything else is in ``reports/metrics_detail.json``. The curves are
written by :func:`write_series` as small CSV files in ``reports/series/``, declared under
``plots:`` in ``dvc.yaml``, so `dvc plots diff` draws two experiments' curves on one chart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.files import write_text_atomic
from pipeline.report.plots import reliability_bins

__all__ = ["DETAIL_FILE", "HEADLINE_FILE", "SERIES_DIR", "headline_metrics", "write_series"]

HEADLINE_FILE = "metrics.json"
DETAIL_FILE = "metrics_detail.json"
SERIES_DIR = "series"


def _get(metrics: dict[str, Any], *keys: str) -> Any:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def headline_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """About a dozen numbers from the full evaluation (those that are present)."""
    picks: dict[str, dict[str, tuple[str, ...]]] = {
        "test": {"accuracy": ("test", "accuracy"), "top3_accuracy": ("test", "top3_accuracy"),
                 "log_loss": ("test", "log_loss"), "ece": ("test", "ece_top_label"),
                 "gap_to_oracle": ("test", "accuracy_gap_to_oracle")},
        "shift": {"accuracy": ("shift", "accuracy"), "log_loss": ("shift", "log_loss"), "ece": ("shift", "ece_top_label")},
        "safety": {"dvt_urgent_rate": ("triage", "test", "dvt_urgent_rate"),
                   "under_triage_ucb95": ("triage", "test", "under_triage_ucb95"),
                   "over_triage_rate": ("triage", "test", "over_triage_emergency_rate")},
        "differential": {"coverage": ("conformal", "test", "coverage"),
                         "coverage_blanked": ("conformal", "test_blanked", "coverage"),
                         "mean_set_size": ("conformal", "test", "mean_set_size")},
        "questioning": {"accuracy_after_5": ("questioning", "chosen", "accuracy", "5")},
    }
    out: dict[str, dict[str, float]] = {}
    for group, keys in picks.items():
        found = {name: float(v) for name, path in keys.items() if (v := _get(metrics, *path)) is not None}
        if found:
            out[group] = found
    return out


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.6g"))
    return path


def write_series(metrics: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]] | None, out_dir: str | Path,
                 *, n_bins: int = 15) -> list[Path]:
    """Write the curves as CSV: ``reliability_<split>.csv``, ``robustness.csv``, ``questioning.csv``,
    ``coverage_by_band.csv`` (those the evaluation has). Returns the files written."""
    out_dir = Path(out_dir)
    written = []
    for split, a in (arrays or {}).items():
        conf, freq, count = reliability_bins(a["proba"].max(axis=1), (a["proba"].argmax(axis=1) == a["y"]).astype(float),
                                             n_bins)
        keep = count > 0
        written.append(_write_csv(out_dir / f"reliability_{split}.csv", pd.DataFrame(
            {"confidence": conf[keep], "frequency": freq[keep], "count": count[keep]})))
    if metrics.get("robustness"):
        written.append(_write_csv(out_dir / "robustness.csv", pd.DataFrame(metrics["robustness"])))
    q = metrics.get("questioning")
    if q:
        steps = sorted(int(k) for k in q["chosen"]["accuracy"])
        written.append(_write_csv(out_dir / "questioning.csv", pd.DataFrame(
            {"questions": steps, **{s: [q[s]["accuracy"][str(k)] for k in steps] for s in ("chosen", "random", "fixed")}})))
    bands = {s: c["by_confidence"] for s, c in metrics.get("conformal", {}).items() if "by_confidence" in c}
    if bands:
        rows = [{"split": s, "confidence_from": float(band["band"].split("-")[0]), "coverage": band["coverage"]}
                for s, by in bands.items() for band in by]
        frame = pd.DataFrame(rows).pivot(index="confidence_from", columns="split", values="coverage").reset_index()
        written.append(_write_csv(out_dir / "coverage_by_band.csv", frame.rename(columns=lambda c: str(c))))
    return written
