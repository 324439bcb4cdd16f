"""Evaluation plots as PNG files: confusion matrix, reliability diagrams, robustness curve.

Figures are built with :class:`matplotlib.figure.Figure` directly, not through ``pyplot``: they
are never registered with a GUI backend or pyplot's global figure list, so nothing depends on
``MPLBACKEND`` and nothing leaks between calls (PNG output goes through the Agg canvas).
Matplotlib is imported inside the functions so ``import pipeline`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.schema import CONDITION_LABELS, CONDITIONS

__all__ = ["figure", "plot_classwise_reliability", "plot_confusion_matrix", "plot_reliability",
           "plot_robustness", "reliability_bins", "save"]

_DPI = 110


def load_matplotlib() -> None:
    """Import what :func:`figure` and a PNG's ``savefig`` need now. Their compiled modules fail
    their import for good when a stop signal lands in it ("initialization failed"): a command
    that draws after writing its output (``kneepain score --report``) imports them before."""
    import matplotlib.backends.backend_agg  # noqa: F401  (what savefig draws a PNG with)
    from matplotlib.figure import Figure  # noqa: F401


def figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    fig.clear()  # frees the artists now rather than at garbage collection
    return path


def reliability_bins(confidence: np.ndarray, hit: np.ndarray, n_bins: int = 15
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, observed frequency and count per equal-width bin.

    The binning is that of :func:`pipeline.core.metrics.ece_top_label` (a confidence of exactly 1 falls
    in the last bin), so the diagram shows the bins the ECE sums over.

    Parameters
    ----------
    confidence : ndarray of shape (n_cases,)
        Predicted probabilities in [0, 1].
    hit : ndarray of shape (n_cases,)
        1 where the predicted event happened, else 0.
    n_bins : int, default=15

    Returns
    -------
    mean_confidence, frequency, count : ndarrays of shape (n_bins,)
        ``mean_confidence`` and ``frequency`` are NaN in empty bins.
    """
    bins = np.minimum((np.asarray(confidence) * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        freq = np.bincount(bins, weights=np.asarray(hit, dtype=float), minlength=n_bins) / count
    return mean_conf, freq, count


def _class_names(n: int) -> list[str]:
    return [CONDITION_LABELS[c] for c in CONDITIONS[:n]]


def plot_confusion_matrix(y: np.ndarray, proba: np.ndarray, path: str | Path, *,
                          title: str = "Confusion matrix") -> Path:
    """Confusion matrix normalised over each true class (rows sum to 1; the diagonal is recall).

    Parameters
    ----------
    y : ndarray of shape (n_cases,)
        True class indices into :data:`pipeline.core.schema.CONDITIONS`.
    proba : ndarray of shape (n_cases, n_conditions)
        Predicted probabilities; the prediction is the most probable class.
    path : str or Path
        The PNG to write.
    """
    from sklearn.metrics import confusion_matrix

    k = proba.shape[1]
    cm = confusion_matrix(y, proba.argmax(axis=1), labels=np.arange(k), normalize="true")
    names = _class_names(k)
    fig = figure(8.5, 7.5)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            if cm[i, j] >= 0.005:
                ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > 0.5 else "black")
    ax.set_xticks(np.arange(k), names, rotation=45, ha="right")
    ax.set_yticks(np.arange(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {len(y):,}; rows sum to 1)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return save(fig, path)


def _series(proba: np.ndarray, proba_uncalibrated: np.ndarray | None) -> list[tuple[str, np.ndarray, str]]:
    """The curves of a reliability diagram: the calibrated probabilities and the same model's before
    calibration, or one curve where they are the same (training kept no calibration: two curves
    named "calibrated" and "uncalibrated" on one line read as a step applied and compared)."""
    if proba_uncalibrated is None:
        return [("calibrated", proba, "tab:blue")]
    if np.array_equal(proba, proba_uncalibrated):
        return [("the model (no calibration kept)", proba, "tab:blue")]
    return [("calibrated", proba, "tab:blue"), ("uncalibrated", proba_uncalibrated, "tab:orange")]


def plot_reliability(y: np.ndarray, proba: np.ndarray, path: str | Path, *,
                     proba_uncalibrated: np.ndarray | None = None, n_bins: int = 15,
                     title: str = "Top-label reliability") -> Path:
    """Top-label reliability diagram, calibrated and uncalibrated on the same axes (one curve where
    they are the same: no calibration kept), with counts.

    The upper panel plots, per confidence bin, the accuracy against the mean confidence (on the
    diagonal is perfect calibration); the lower panel the number of cases per bin (log scale).

    Parameters
    ----------
    y : ndarray of shape (n_cases,)
    proba : ndarray of shape (n_cases, n_conditions)
        The model's (calibrated) probabilities.
    path : str or Path
    proba_uncalibrated : ndarray of shape (n_cases, n_conditions), optional
        The same model's probabilities before calibration.
    n_bins : int, default=15
    """
    from pipeline.core.metrics import ece_top_label

    series = _series(proba, proba_uncalibrated)
    fig = figure(6.5, 7.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    width = (edges[1] - edges[0]) / (len(series) + 1)
    for i, (name, p, colour) in enumerate(series):
        conf, freq, count = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
        ece = ece_top_label(p, y, n_bins)
        keep = count > 0
        top.plot(conf[keep], freq[keep], marker="o", color=colour, label=f"{name} (ECE {ece:.4f})")
        bottom.bar(edges[:-1] + (i + 0.5) * width, count, width=width, align="edge", color=colour,
                   label=name)
    top.set_ylabel("accuracy in bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"{title} (n = {len(y):,}, {n_bins} bins)")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence of the top label")
    bottom.set_ylabel("cases")
    return save(fig, path)


def plot_classwise_reliability(y: np.ndarray, proba: np.ndarray, path: str | Path, *,
                               proba_uncalibrated: np.ndarray | None = None, n_bins: int = 15,
                               title: str = "Per-class reliability") -> Path:
    """One-vs-rest reliability diagram of each condition, in a 3 x 3 grid.

    Each panel plots the observed frequency of the class against the mean predicted probability
    of the class, per equal-width bin; marker area grows with the bin's count.

    Parameters
    ----------
    y : ndarray of shape (n_cases,)
    proba : ndarray of shape (n_cases, n_conditions)
    path : str or Path
    proba_uncalibrated : ndarray of shape (n_cases, n_conditions), optional
    n_bins : int, default=15
    """
    k = proba.shape[1]
    names = _class_names(k)
    series = _series(proba, proba_uncalibrated)
    fig = figure(10.0, 10.0)
    axes = fig.subplots(3, 3, sharex=True, sharey=True).ravel()
    for c, ax in enumerate(axes):
        if c >= k:
            ax.set_visible(False)
            continue
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for name, p, colour in series:
            conf, freq, count = reliability_bins(p[:, c], y == c, n_bins)
            keep = count > 0
            ax.plot(conf[keep], freq[keep], color=colour, linewidth=1, label=name)
            ax.scatter(conf[keep], freq[keep], s=4 + 60 * np.sqrt(count[keep] / len(y)), color=colour)
        ax.set_title(f"{names[c]} ({int((y == c).sum()):,} cases)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.supxlabel("predicted probability of the class")
    fig.supylabel("observed frequency of the class")
    fig.suptitle(f"{title} (n = {len(y):,}, {n_bins} bins; marker area ~ cases in bin)")
    return save(fig, path)


def plot_robustness(curve: Sequence[dict], path: str | Path, *,
                    title: str = "Robustness to unanswered questions") -> Path:
    """Accuracy and log loss against the share of optional answers blanked, model vs oracle.

    Parameters
    ----------
    curve : sequence of dict
        The output of :func:`pipeline.report.evaluate.robustness_curve`.
    path : str or Path
    """
    share = [row["blanked_share"] for row in curve]
    fig = figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    for ax, key, label in ((left, "accuracy", "accuracy"), (right, "log_loss", "log loss")):
        ax.plot(share, [row[key] for row in curve], marker="o", color="tab:blue", label="model")
        ax.plot(share, [row[f"oracle_{key}"] for row in curve], marker="s", linestyle="--",
                color="black", label="oracle (best possible)")
        ax.set_xlabel("share of optional answers blanked")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)
