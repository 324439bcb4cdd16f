"""Training: compare candidates by cross-validation, refit the winner, calibrate, persist.

The library function :func:`train_model` does the work and returns a :class:`TrainResult`;
MLflow logging is in :mod:`pipeline.model.tracking` and the command line only wires them together.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import StratifiedKFold, cross_validate, train_test_split

from pipeline.core.blas import one_blas_thread
from pipeline.core.config import TrainConfig
from pipeline.core.errors import BatchInputError, ConfigError
from pipeline.core.metrics import ece_top_label, log_loss
from pipeline.core.parsing import parse_cases
from pipeline.core.schema import CONDITIONS
from pipeline.core.wording import two_numbers
from pipeline.data.datasets import labels
from pipeline.model.candidates import make_candidates

__all__ = ["CandidateResult", "TrainResult", "train_model", "select_candidate", "calibrate"]


@dataclass
class CandidateResult:
    name: str
    cv_log_loss: float
    cv_log_loss_std: float
    cv_accuracy: float
    fit_seconds: float
    rows_per_second: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    model: Any  # the final estimator (calibrated or not)
    uncalibrated: Any
    winner: str
    candidates: list[CandidateResult]
    calibration: dict[str, Any]
    metrics: dict[str, float]


def _throughput(estimator, X: pd.DataFrame, repeats: int = 2) -> float:
    """Rows per second of ``predict_proba`` from a DataFrame (parsing and features included)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        estimator.predict_proba(X)
        best = min(best, time.perf_counter() - start)
    return len(X) / best


def _cv_sample(X: pd.DataFrame, y: np.ndarray, max_rows: int, seed: int, weight: np.ndarray | None = None
               ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    if max_rows == 0 or len(X) <= max_rows:
        return X, y, weight
    idx, _ = train_test_split(np.arange(len(X)), train_size=max_rows, stratify=y, random_state=seed)
    idx = np.sort(idx)
    return X.iloc[idx].reset_index(drop=True), y[idx], None if weight is None else weight[idx]


def _fit_params(weight: np.ndarray | None) -> dict[str, Any]:
    return {} if weight is None else {"model__sample_weight": weight}


def evaluate_candidates(config: TrainConfig, X: pd.DataFrame, y: np.ndarray, X_speed: pd.DataFrame,
                        *, n_jobs: int | None = None, sample_weight: np.ndarray | None = None) -> list[CandidateResult]:
    """Stratified k-fold CV log loss and scoring throughput of every configured candidate
    (``sample_weight`` weights the fits; the folds are scored unweighted)."""
    Xs, ys, ws = _cv_sample(X, y, config.cv.max_rows, config.seed, sample_weight)
    counts = np.bincount(ys, minlength=len(CONDITIONS))
    if counts.min() < config.cv.folds:  # a fold would lack the condition: scikit-learn's warnings, then a NaN log loss
        raise ConfigError(f"cv: the {len(Xs):,} cases cross-validated (cv.max_rows {config.cv.max_rows}; 0: all "
                          f"{len(X):,}) hold {counts.min()} of {CONDITIONS[int(counts.argmin())]}, fewer than the "
                          f"{config.cv.folds} folds (cv.folds) need; raise cv.max_rows or lower cv.folds.")
    folds = StratifiedKFold(config.cv.folds, shuffle=True, random_state=config.seed)
    results = []
    for name, pipe in make_candidates(config).items():
        with warnings.catch_warnings():
            # an MLP or logistic fold that stops at max_iter is still a valid, scored candidate
            warnings.simplefilter("ignore", ConvergenceWarning)
            cv = cross_validate(pipe, Xs, ys, cv=folds, scoring=("neg_log_loss", "accuracy"),
                                n_jobs=n_jobs or config.cv.n_jobs, return_estimator=True, params=_fit_params(ws))
        results.append(CandidateResult(
            name=name,
            cv_log_loss=float(-cv["test_neg_log_loss"].mean()),
            cv_log_loss_std=float(cv["test_neg_log_loss"].std()),
            cv_accuracy=float(cv["test_accuracy"].mean()),
            fit_seconds=float(np.mean(cv["fit_time"])),
            rows_per_second=_throughput(cv["estimator"][0], X_speed),
            params={k: v for k, v in pipe.named_steps["model"].get_params().items()
                    if isinstance(v, (int, float, str, bool, tuple)) or v is None},
        ))
    return results


def select_candidate(results: list[CandidateResult], tolerance: float, speed_ratio: float = 1.5) -> CandidateResult:
    """Among candidates within ``tolerance`` of the best CV log loss, the fastest scorer; where
    others score within ``speed_ratio`` of its speed (measured, so they may swap from one run to
    the next), the lowest CV log loss among them, so that the same configs and data pick the same
    winner on a busy machine and a quiet one."""
    best = min(r.cv_log_loss for r in results)
    near = [r for r in results if r.cv_log_loss <= best + tolerance]
    fastest = max(r.rows_per_second for r in near)
    return min((r for r in near if r.rows_per_second * speed_ratio >= fastest), key=lambda r: r.cv_log_loss)


CALIBRATION_FOLDS = 5  # CalibratedClassifierCV's own, within each half of `valid` (:func:`calibrate`)


def check_calibration_cases(y_valid: np.ndarray) -> None:
    """Refuse a ``valid`` split with a condition too rare to calibrate on: :func:`calibrate` fits on
    each half and scores on the other, and each fit stratifies its half into
    :data:`CALIBRATION_FOLDS` folds, so each condition needs two cases per fold; with fewer, a fold
    lacks the condition, and the calibration failed after the whole training."""
    need = 2 * CALIBRATION_FOLDS
    counts = np.bincount(y_valid, minlength=len(CONDITIONS))
    if counts.min() < need:
        rare = ", ".join(f"{CONDITIONS[i]} {counts[i]}" for i in np.flatnonzero(counts < need))
        raise BatchInputError(f"valid: {len(y_valid):,} cases, and calibration needs at least {need} of each "
                              f"condition (its two halves, each in {CALIBRATION_FOLDS} folds); it holds {rare}. "
                              "Generate a larger valid split (splits.valid.n in the generate config).")


def calibrate(model, X_valid: pd.DataFrame, y_valid: np.ndarray, method: str, *, seed: int,
              min_improvement: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """Calibrate ``model`` on ``valid``; keep it only if it helps on held-out halves.

    The decision is cross-fitted: the calibrator is fitted on one half of ``valid`` and scored on
    the other, both ways, so a calibrator that overfits (isotonic) or distorts the classes
    (one-vs-rest sigmoid on a multinomial model) is caught. The kept calibrator is refitted on all
    of ``valid``.
    """
    parsed = parse_cases(X_valid)
    raw = model.predict_proba(parsed)
    halves = StratifiedKFold(2, shuffle=True, random_state=seed).split(np.zeros(len(y_valid)), y_valid)
    calibrated = np.empty_like(raw)
    for fit_idx, score_idx in halves:
        cal = CalibratedClassifierCV(FrozenEstimator(model), method=method, cv=CALIBRATION_FOLDS)
        cal.fit(parsed[fit_idx], y_valid[fit_idx])
        calibrated[score_idx] = cal.predict_proba(parsed[score_idx])
    before, after = log_loss(raw, y_valid), log_loss(calibrated, y_valid)
    keep = after < before - min_improvement
    report = {"method": method, "kept": bool(keep),
              "valid_log_loss_uncalibrated": before, "valid_log_loss_calibrated_heldout": after,
              "valid_ece_uncalibrated": ece_top_label(raw, y_valid),
              "valid_ece_calibrated_heldout": ece_top_label(calibrated, y_valid)}
    if not keep:
        return model, report
    final = CalibratedClassifierCV(FrozenEstimator(model), method=method, cv=CALIBRATION_FOLDS).fit(parsed, y_valid)
    return final, report


def train_model(config: TrainConfig, train: pd.DataFrame, valid: pd.DataFrame, *,
                backend: str = "loky", log=print, sample_weight: np.ndarray | None = None) -> TrainResult:
    """Compare candidates, refit the winner on ``train``, calibrate on ``valid``.

    Parameters
    ----------
    backend : {"loky", "dask"}
        The joblib backend for cross-validation ("dask" needs a running ``distributed.Client``).
    sample_weight : ndarray of shape (len(train),), optional
        Weights of the ``train`` rows in every fit (real cases beside synthetic ones).
    """
    if sample_weight is not None and len(sample_weight) != len(train):
        raise ValueError(f"sample_weight has {len(sample_weight)} values for {len(train)} training rows.")
    y_train, y_valid = labels(train), labels(valid)
    check_calibration_cases(y_valid)
    speed_rows = valid.head(10_000)
    # one BLAS thread per process: parallel CV folds already use the cores, and on 2 cores a
    # multi-threaded logistic fit was measured slower than a single-threaded one
    with joblib.parallel_backend(backend), one_blas_thread():
        results = evaluate_candidates(config, train, y_train, speed_rows, sample_weight=sample_weight)
    for r in results:
        log(f"  {r.name:<24} CV log loss {r.cv_log_loss:.4f} ± {r.cv_log_loss_std:.4f}  "
            f"accuracy {r.cv_accuracy:.4f}  fit {r.fit_seconds:.1f}s  {r.rows_per_second:,.0f} rows/s")
    winner = select_candidate(results, config.selection.log_loss_tolerance, config.selection.speed_ratio)
    log(f"  winner: {winner.name}")
    pipe = make_candidates(config)[winner.name]
    with warnings.catch_warnings(), one_blas_thread():  # and the same fit in every process
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(train, y_train, **_fit_params(sample_weight))
        model, cal = calibrate(pipe, valid, y_valid, config.calibration.method, seed=config.seed,
                               min_improvement=config.calibration.min_improvement)
    before, after = two_numbers(cal["valid_log_loss_uncalibrated"], cal["valid_log_loss_calibrated_heldout"], 4, 8)
    log(f"  calibration ({cal['method']}): valid log loss {before} -> {after} held out; "
        f"{'kept' if cal['kept'] else 'not kept'}")
    valid_ll = cal["valid_log_loss_calibrated_heldout"] if cal["kept"] else cal["valid_log_loss_uncalibrated"]
    metrics = {"valid_log_loss": valid_ll, "cv_log_loss": winner.cv_log_loss,
               "rows_per_second": winner.rows_per_second}
    return TrainResult(model=model, uncalibrated=pipe, winner=winner.name, candidates=results,
                       calibration=cal, metrics=metrics)
