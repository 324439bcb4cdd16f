"""The fitted model as a file that cannot run code when it is loaded.

- The logistic model and the MLP (the usual winners) are written as their arrays in JSON,
  ``model.json``: the featuriser's centres and scales, each layer's weights and intercepts, the
  activation and the inverse temperature. Loading builds an :class:`ArrayScorer` from numbers;
  Python's JSON floats round-trip exactly, so the loaded model gives the saved model's bits.
- Any other estimator (gradient boosting) is written with skops, ``model.skops``, and loaded
  with an explicit list of trusted types (:data:`SKOPS_TRUSTED`): skops builds only those, and a
  file that needs any other type is refused. A model that would need another type is refused at
  saving time, so a folder is never written that cannot be loaded safely. What it holds is
  checked before anything is scored (:mod:`pipeline.model.skopscheck`): only the types training
  writes, and trees scikit-learn can score within their arrays.

No pickle is written or read here (an older folder's ``model.joblib`` is
:mod:`pipeline.model.legacy`'s business).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import load_json
from pipeline.core.schema import CONDITIONS, FIELDS
from pipeline.model import integrity
from pipeline.model.arrays import ACTIVATIONS, ArrayScorer, array_scorer
from pipeline.model.codefeatures import CodeFeatures, checked_knots
from pipeline.model.skopscheck import check_skops_archive, check_skops_model

__all__ = ["ARRAYS_FILE", "SKOPS_FILE", "SKOPS_TRUSTED", "model_file_bytes", "read_model_file", "scorer_from_dict",
           "scorer_to_dict"]

ARRAYS_FILE = "model.json"
SKOPS_FILE = "model.skops"
_FORMAT = "kneepain-array-scorer"
_VERSION = 2  # 2: the duration's hinge features (``features.duration_knots_days``); 1 had none
_READS = (1, 2)
# every type beyond skops' defaults that a project model needs (found with skops.io.get_untrusted_types)
SKOPS_TRUSTED = ["pipeline.model.features.CaseFeaturizer", "sklearn.calibration._CalibratedClassifier",
                 "sklearn.calibration._SigmoidCalibration", "sklearn.calibration._TemperatureScaling",
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                 "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
                 "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"]
_NUMERIC = [f.name for f in FIELDS if f.kind in ("integer", "float")]


def scorer_to_dict(scorer: ArrayScorer) -> dict[str, Any]:
    f = scorer.featurizer
    return {"format": _FORMAT, "version": _VERSION, "classes": list(CONDITIONS),
            "features": {"dtype": f.dtype, "center": dict(f.center_), "scale": dict(f.scale_),
                         "duration_knots_days": list(f.duration_knots)},
            "layers": [{"weights": w.tolist(), "intercept": b.tolist()} for w, b in zip(scorer.weights, scorer.intercepts)],
            "activation": scorer.activation, "beta": scorer.beta, "from_proba": scorer.from_proba}


def _numbers(value: Any, where: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} is not an array of numbers") from err
    if array.ndim != ndim or not np.isfinite(array).all():
        raise ValueError(f"{where} must be a {ndim}-d array of finite numbers")
    return np.ascontiguousarray(array)


def scorer_from_dict(data: dict[str, Any]) -> ArrayScorer:
    """An :class:`ArrayScorer` from :func:`scorer_to_dict`'s output, checked against the schema.

    Raises
    ------
    ValueError
        Naming the first part that is missing, of another shape or not a finite number.
    """
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") not in _READS:
        raise ValueError(f"not a {_FORMAT} file of version {' or '.join(map(str, _READS))}")
    if data.get("classes") != list(CONDITIONS):
        raise ValueError(f"classes {data.get('classes')} differ from this code's {list(CONDITIONS)}")
    features = data.get("features") or {}
    center, scale = features.get("center"), features.get("scale")
    if not isinstance(center, dict) or not isinstance(scale, dict) or sorted(center) != sorted(_NUMERIC) \
            or sorted(scale) != sorted(_NUMERIC):
        raise ValueError(f"features.center and features.scale must give the numeric fields {_NUMERIC}")
    for name in _NUMERIC:
        for what, table in (("center", center), ("scale", scale)):
            v = table[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or (what == "scale" and v <= 0):
                raise ValueError(f"features.{what}.{name} == {v!r}, must be a finite number"
                                 + (" > 0" if what == "scale" else ""))
    dtype = features.get("dtype", "float64")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"features.dtype == {dtype!r}, must be float64 or float32")
    if data["version"] >= 2 and "duration_knots_days" not in features:
        raise ValueError("features.duration_knots_days is missing (a version 2 file lists the duration's knots)")
    knots = features["duration_knots_days"] if data["version"] >= 2 else []  # version 1 had no hinges
    try:  # a list of finite, positive, strictly increasing days
        featurizer = CodeFeatures({k: float(center[k]) for k in _NUMERIC}, {k: float(scale[k]) for k in _NUMERIC},
                                  dtype, checked_knots(knots))
    except ValueError as err:
        raise ValueError(f"features.duration_knots_days: {err}") from None
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("layers must be a non-empty list")
    weights, intercepts, n_in = [], [], featurizer.n_features_out_
    for i, layer in enumerate(layers):
        w = _numbers(layer.get("weights") if isinstance(layer, dict) else None, f"layers[{i}].weights", 2)
        b = _numbers(layer.get("intercept") if isinstance(layer, dict) else None, f"layers[{i}].intercept", 1)
        if w.shape[1] != n_in or b.shape != (w.shape[0],):
            raise ValueError(f"layers[{i}] has weights {w.shape} and intercept {b.shape}; expected weights "
                             f"(n, {n_in}) and intercept (n,)")
        weights.append(w)
        intercepts.append(b)
        n_in = w.shape[0]
    if n_in != len(CONDITIONS):
        raise ValueError(f"the last layer has {n_in} outputs; expected one per condition ({len(CONDITIONS)})")
    activation, beta, from_proba = data.get("activation"), data.get("beta"), data.get("from_proba")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation == {activation!r}, must be one of {sorted(ACTIVATIONS)}")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta)
                             or beta <= 0):
        # an inverse temperature: 0 makes every probability 1/9, a negative one turns them over
        raise ValueError(f"beta == {beta!r}, must be a finite number above 0 or null")
    if not isinstance(from_proba, bool):
        raise ValueError(f"from_proba == {from_proba!r}, must be true or false")
    return ArrayScorer(featurizer, tuple(weights), tuple(intercepts), activation=activation,
                       beta=None if beta is None else float(beta), from_proba=from_proba)


def model_file_bytes(estimator: Any) -> tuple[str, bytes]:
    """``estimator`` as the file a model folder holds: its name (:data:`ARRAYS_FILE` or
    :data:`SKOPS_FILE`) and its bytes, checked as loading checks them, so that no folder is
    written that loading would refuse.

    Raises
    ------
    ModelIntegrityError
        If the estimator is neither scorable from its arrays nor made only of trusted types, or its
        file would be larger than a model folder's file may be (``FOLDER_FILE_MAX_BYTES``).
    """
    scorer = array_scorer(estimator)
    if scorer is not None:
        name = ARRAYS_FILE
        data = (json.dumps(scorer_to_dict(scorer), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    else:
        import skops.io as sio

        name, data = SKOPS_FILE, sio.dumps(estimator)
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(SKOPS_TRUSTED))
        if untrusted:
            raise ModelIntegrityError(f"cannot save a {type(estimator).__name__} safely: it needs the types {untrusted}, "
                                      "which are not in pipeline.model.modelfile.SKOPS_TRUSTED.")
    if len(data) > integrity.FOLDER_FILE_MAX_BYTES:
        raise ModelIntegrityError(f"cannot save a {type(estimator).__name__}: its {name} would be {len(data):,} bytes, "
                                  f"over the {integrity.FOLDER_FILE_MAX_BYTES:,} a model folder's file may be, so "
                                  "loading would refuse it; train a smaller model (fewer or shallower trees, "
                                  "smaller hidden layers).")
    if name == SKOPS_FILE:
        read_model_file(Path(name), data)  # loading's own checks on what skops would build
    return name, data


def read_model_file(path: Path, data: bytes) -> Any:
    """The estimator in ``data`` (the verified bytes of ``path``), built without running code from it.

    Raises
    ------
    ModelIntegrityError
        Naming the file, if it is of an unknown kind or not a valid model of that kind.
    """
    if path.name == ARRAYS_FILE:
        try:
            return scorer_from_dict(load_json(data.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as err:
            raise ModelIntegrityError(f"{path} is not a valid kneepain model file: {err}; retrain with "
                                      "`kneepain train`.") from err
    if path.name == SKOPS_FILE:
        import skops.io as sio

        check_skops_archive(data, path)  # before skops unpacks anything
        try:
            untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(SKOPS_TRUSTED))
            if untrusted:
                raise ModelIntegrityError(f"{path} needs types that are not trusted: {untrusted}; refusing to load it.")
            estimator = sio.loads(data, trusted=SKOPS_TRUSTED)
        except ModelIntegrityError:
            raise
        except Exception as err:  # any failure to build the object means the file is not a model of ours
            raise ModelIntegrityError(f"{path} is not a valid skops model file: {type(err).__name__}: {err}") from err
        try:  # a crafted object can recurse for good on an attribute (a FrozenEstimator without its estimator)
            scores = callable(getattr(estimator, "predict_proba", None))
            fitted = getattr(estimator, "classes_", None)
        except RecursionError as err:
            raise ModelIntegrityError(f"{path} is not a valid skops model file: its attributes recurse; refusing to "
                                      "load it.") from err
        if not scores:  # trusted types that are no estimator: a dict
            raise ModelIntegrityError(f"{path} holds a {type(estimator).__name__}, not a fitted classifier; retrain "
                                      "with `kneepain train`.")
        classes = None if fitted is None else [str(c) for c in fitted]
        if classes is not None and classes != [str(k) for k in range(len(CONDITIONS))]:
            # its probability columns are read as the conditions' indices, in order: others would be misread
            raise ModelIntegrityError(f"{path} predicts the classes {classes[:12]}, not the "
                                      f"conditions' indices 0-{len(CONDITIONS) - 1} in order; refusing to load it.")
        check_skops_model(estimator, path)  # only what training writes: scikit-learn trusts some arrays unchecked
        return estimator
    raise ModelIntegrityError(f"{path}: unknown model file; expected {ARRAYS_FILE} or {SKOPS_FILE}.")
