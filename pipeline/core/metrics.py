"""Scores of probabilistic predictions: accuracy, top-k, log loss, Brier, calibration error."""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "top_k_accuracy", "log_loss", "brier", "ece_top_label", "ece_classwise", "summary"]

_EPS = 1e-15


def accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(proba.argmax(axis=1) == y))


def top_k_accuracy(proba: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    top = np.argpartition(-proba, kth=min(k, proba.shape[1]) - 1, axis=1)[:, :k]
    return float(np.mean((top == y[:, None]).any(axis=1)))


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], _EPS, 1.0))))


def brier(proba: np.ndarray, y: np.ndarray) -> float:
    """Multiclass Brier score: mean over cases of the squared distance to the one-hot label."""
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def _ece(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=hit, minlength=n_bins) - np.bincount(bins, weights=conf, minlength=n_bins))
    return float(gap.sum() / max(len(conf), 1)) if count.sum() else 0.0


def ece_top_label(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top label, equal-width bins."""
    return _ece(proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float), n_bins)


def ece_classwise(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Mean over classes of the ECE of each class's one-vs-rest probability."""
    return float(np.mean([_ece(proba[:, k], (y == k).astype(float), n_bins) for k in range(proba.shape[1])]))


def summary(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(proba, y), "top3_accuracy": top_k_accuracy(proba, y, 3),
            "log_loss": log_loss(proba, y)}
