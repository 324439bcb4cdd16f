"""Candidate models: factories that return unfitted ``Pipeline(features, model)``."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from .config import TrainConfig
from .features import CaseFeaturizer

__all__ = ["make_candidate", "make_candidates"]


def make_candidate(name: str, config: TrainConfig) -> Pipeline:
    """An unfitted pipeline for candidate ``name`` with its parameters from ``config.models``."""
    m = config.models
    if name == "logistic":
        model = LogisticRegression(C=m.logistic.C, max_iter=m.logistic.max_iter, tol=m.logistic.tol)
    elif name == "hist_gradient_boosting":
        p = m.hist_gradient_boosting
        model = HistGradientBoostingClassifier(
            max_iter=p.max_iter, learning_rate=p.learning_rate, max_leaf_nodes=p.max_leaf_nodes,
            l2_regularization=p.l2_regularization, early_stopping=p.early_stopping, random_state=config.seed)
    elif name == "mlp":
        p = m.mlp
        model = MLPClassifier(hidden_layer_sizes=tuple(p.hidden_layer_sizes), alpha=p.alpha,
                              learning_rate_init=p.learning_rate_init, max_iter=p.max_iter,
                              early_stopping=p.early_stopping, random_state=config.seed)
    else:
        raise ValueError(f"unknown candidate {name!r}; known: logistic, hist_gradient_boosting, mlp.")
    return Pipeline([("features", CaseFeaturizer()), ("model", model)])


def make_candidates(config: TrainConfig) -> dict[str, Pipeline]:
    return {name: make_candidate(name, config) for name in config.candidates}
