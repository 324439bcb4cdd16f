"""A gradient-boosting model's trees checked before they are scored.

scikit-learn scores a ``HistGradientBoostingClassifier``'s trees in compiled code that trusts
their arrays: a node whose child or feature lies outside the tree or the data is followed into
memory that is not the model's, and the process reads it or crashes. A ``model.skops`` file holds
those arrays as data, so :func:`check_trees` checks every tree of a loaded model as scikit-learn
writes them, before anything is scored:

- each tree's nodes are a one-dimensional array of scikit-learn's node records;
- a split node's children come after it in the array and inside it (so every path down the tree
  moves forward and ends on a leaf), and its feature is one of the model's ``n_features_in_``,
  which scikit-learn checks every scored array's width against;
- no split is categorical and no feature is marked categorical (kneepain's features are numbers:
  categorical splits would read further arrays of the file the same unchecked way);
- every leaf's value is a finite number;
- each iteration has one tree per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelIntegrityError

__all__ = ["check_trees"]


def check_trees(estimator: Any, path: Path) -> None:
    """Refuse ``estimator`` (read from ``path``) if a gradient-boosting model in it has a tree
    scikit-learn would score outside its arrays.

    Raises
    ------
    ModelIntegrityError
        Naming the file, the tree (iteration and class) and the node.
    """
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting

    for model in _instances(estimator, BaseHistGradientBoosting):
        n_features = getattr(model, "n_features_in_", None)
        if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise _refused(path, f"a gradient-boosting model has n_features_in_ == {n_features!r}, not a "
                                 "positive integer")
        categorical = getattr(getattr(model, "_bin_mapper", None), "is_categorical_", None)
        if getattr(model, "_preprocessor", None) is not None or (categorical is not None and np.any(categorical)):
            raise _refused(path, "a gradient-boosting model has categorical features, which kneepain's models do "
                                 "not use")
        per_iteration = getattr(model, "n_trees_per_iteration_", None)
        iterations = getattr(model, "_predictors", None)
        if not isinstance(iterations, list) or not iterations:
            raise _refused(path, "a gradient-boosting model has no list of trees")
        for i, trees in enumerate(iterations):
            if not isinstance(trees, list) or len(trees) != per_iteration:
                raise _refused(path, f"iteration {i} of a gradient-boosting model does not hold one tree per "
                                     f"class ({per_iteration!r})")
            for k, tree in enumerate(trees):
                problem = _tree_problem(getattr(tree, "nodes", None), int(n_features), PREDICTOR_RECORD_DTYPE)
                if problem:
                    raise _refused(path, f"the tree of iteration {i}, class {k}, {problem}")


def _tree_problem(nodes: Any, n_features: int, record: np.dtype) -> str:
    """What makes ``nodes`` a tree scikit-learn would score outside its arrays, or ""."""
    if not isinstance(nodes, np.ndarray) or nodes.dtype != record or nodes.ndim != 1 or len(nodes) == 0:
        return "is not a non-empty array of scikit-learn's tree nodes"
    index = np.arange(len(nodes))
    split = nodes["is_leaf"] == 0
    bad = split & ~((nodes["left"] > index) & (nodes["left"] < len(nodes))
                    & (nodes["right"] > index) & (nodes["right"] < len(nodes)))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        return (f"node {j} has children {int(nodes['left'][j])} and {int(nodes['right'][j])}; a split's children "
                f"come after it in a tree of {len(nodes)} nodes")
    bad = split & ((nodes["feature_idx"] < 0) | (nodes["feature_idx"] >= n_features))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        return f"node {j} splits on feature {int(nodes['feature_idx'][j])}; the model has features 0-{n_features - 1}"
    bad = split & (nodes["is_categorical"] != 0)
    if bad.any():
        return f"node {int(np.flatnonzero(bad)[0])} is a categorical split, which kneepain's models do not use"
    bad = ~split & ~np.isfinite(nodes["value"])
    if bad.any():
        return f"leaf {int(np.flatnonzero(bad)[0])} has the value {float(nodes['value'][bad][0])}, not a finite number"
    return ""


def _instances(root: Any, kind: type) -> list[Any]:
    """Every object of type ``kind`` reachable from ``root`` through attributes, lists, tuples and
    dicts (a fitted model is a tree of such objects: a calibrated pipeline holds its steps)."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, np.generic)) or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, kind):
            found.append(obj)
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return found


def _refused(path: Path, problem: str) -> ModelIntegrityError:
    return ModelIntegrityError(f"{path} is not a valid skops model file: {problem}; refusing to load it.")
