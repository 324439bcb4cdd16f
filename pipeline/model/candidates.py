"""Candidate models: factories that return unfitted ``Pipeline(features, model)``."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from pipeline.core.config import TrainConfig
from pipeline.model.features import CaseFeaturizer

__all__ = ["make_candidate", "make_candidates"]


def make_candidate(name: str, config: TrainConfig) -> Pipeline:
    """An unfitted pipeline for candidate ``name`` with its parameters from ``config.models``."""
    m = config.models
    if name == "logistic":
        model = LogisticRegression(C=m.logistic.C, max_iter=m.logistic.max_iter, tol=m.logistic.tol)
    elif name == "hist_gradient_boosting":
        hgb = m.hist_gradient_boosting
        model = HistGradientBoostingClassifier(
            max_iter=hgb.max_iter, learning_rate=hgb.learning_rate, max_leaf_nodes=hgb.max_leaf_nodes,
            l2_regularization=hgb.l2_regularization, early_stopping=hgb.early_stopping, random_state=config.seed)
    elif name == "mlp":
        mlp = m.mlp
        model = MLPClassifier(hidden_layer_sizes=tuple(mlp.hidden_layer_sizes), alpha=mlp.alpha,
                              learning_rate_init=mlp.learning_rate_init, max_iter=mlp.max_iter,
                              early_stopping=mlp.early_stopping, random_state=config.seed)
    else:
        raise ValueError(f"unknown candidate {name!r}; known: logistic, hist_gradient_boosting, mlp.")
    return Pipeline([("features", CaseFeaturizer()), ("model", model)])


def make_candidates(config: TrainConfig) -> dict[str, Pipeline]:
    return {name: make_candidate(name, config) for name in config.candidates}
