"""What a ``model.skops`` may hold, checked before anything in it is scored.

skops builds only trusted types, but its defaults trust every scikit-learn estimator, and
scikit-learn scores some of them in compiled code that trusts their arrays: a gradient-boosting
tree whose node points outside the tree was followed into memory that is not the model's (the
process crashed), and one that pointed back never returned; an estimator hidden in an object
array, or a model marked as still being fitted, was scored without the checks below. So
:func:`check_skops_model` refuses a loaded model unless

- every object in it is of a type kneepain's training writes (:data:`ALLOWED_TYPES`: the
  calibrated pipeline, the featuriser, gradient boosting, the logistic model and the MLP with
  their parts), every array is of numbers (or scikit-learn's tree nodes), and no function is in
  it but those an isotonic calibration builds when loaded;
- every array is a plain ``numpy.ndarray`` (a masked array's checks skip what compiled code reads);
- each gradient-boosting model is fitted and not marked as being fitted (``_in_fit``, which makes
  scikit-learn skip its input's checks), with at most ``max_iter`` iterations (at most 10,000),
  no iteration or tree given twice (a small file repeating one took minutes to score), no
  categorical feature (kneepain's features are numbers: categorical splits read further arrays
  unchecked), and each tree an array of
  scikit-learn's node records whose splits' children come after them and inside the tree (so
  every path moves forward and ends on a leaf), whose features are the model's
  ``n_features_in_`` (which scikit-learn checks each scored array's width against), and whose
  leaves are finite, one tree per class per iteration;
- the featuriser's dtype is a float;
- each random generator (kept from fitting, never drawn from in scoring) has a state numpy can
  draw from within its words.

:func:`pipeline.model.modelfile.model_file_bytes` runs the same check before writing, so no
folder is written that would be refused here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import load_json

__all__ = ["ALLOWED_TYPES", "check_skops_archive", "check_skops_model"]

# every type in a model kneepain's training saves with skops (each candidate with each
# calibration method, or none), by module and name
ALLOWED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.NoneType",
    "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    "pipeline.model.features.CaseFeaturizer",
    "scipy.interpolate._interpolate.interp1d",
    "sklearn._loss._loss.CyHalfMultinomialLoss", "sklearn._loss.link.Interval", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration", "sklearn.calibration._TemperatureScaling",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.frozen._frozen.FrozenEstimator", "sklearn.isotonic.IsotonicRegression",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.pipeline.Pipeline", "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
})
_BOOSTING = "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier"
_FEATURISER = "pipeline.model.features.CaseFeaturizer"
_GENERATORS = frozenset({"numpy.random._generator.Generator", "numpy.random.mtrand.RandomState"})
_MT19937_WORDS = 624  # a Mersenne Twister's state: 624 words, and the position of the next one drawn
# the functions an isotonic calibration holds once loaded (skops saves none: scikit-learn's
# IsotonicRegression drops its function when saved and builds it again when loaded): its
# interpolation's method, or, where the scores it calibrates were all equal, a function of its own
_FUNCTIONS = (("scipy.interpolate._interpolate", "interp1d._call_"),
              ("sklearn.isotonic", "IsotonicRegression._build_f.<locals>.<lambda>"))
_NUMBERS = "biuf"
_MAX_ITER = 10_000  # far above configs/train.yaml's max_iter
# what skops may unpack: its schema, and its arrays in all (a gradient-boosting model of 10,000
# iterations, the most allowed, holds about 400 MB of trees; the usual 200, about 7 MB)
_MAX_SCHEMA_BYTES = 64 << 20
_MAX_ARRAY_BYTES = 1 << 30
_MAX_POOL_SIZE = 64  # a random generator's seed pool (numpy's default 4): its set-up grows with its square


def check_skops_archive(data: bytes, path: Path) -> None:
    """Refuse the bytes of a ``model.skops`` (read from ``path``) that skops would spend unbounded
    memory or time on before :func:`check_skops_model` can look at the model: skops unpacks every
    array an entry of its schema names, once per entry, and builds a random generator's seed
    sequence at whatever pool size the schema gives. So the schema must be at most 64 MiB, its
    arrays unpack to at most 1 GiB in all (each counted as often as an entry names it), and no
    seed pool be above 64.

    Raises
    ------
    ModelIntegrityError
        Naming the file and what is wrong.
    """
    import io
    import json
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        if sizes.get("schema.json", 0) > _MAX_SCHEMA_BYTES:
            raise _refused(path, f"its schema unpacks to {sizes['schema.json']:,} bytes (at most {_MAX_SCHEMA_BYTES:,})")
        schema = load_json(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:  # (KeyError: no schema.json)
        raise _refused(path, f"it is not a skops archive with a readable schema ({type(err).__name__})") from err
    total = 0
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        member = node.get("file")
        if isinstance(member, str):  # unpacked once per entry that names it
            total += sizes.get(member, 0)
        pool = node.get("pool_size")
        if isinstance(pool, dict):
            try:
                size = int(json.loads(pool.get("content", "0")))
            except (TypeError, ValueError):
                size = _MAX_POOL_SIZE + 1
            if not 0 <= size <= _MAX_POOL_SIZE:
                raise _refused(path, f"a random generator's seed pool has size {pool.get('content')!r} (at most "
                                     f"{_MAX_POOL_SIZE})")
        stack.extend(node.values())
    if total > _MAX_ARRAY_BYTES:
        raise _refused(path, f"its arrays unpack to {total:,} bytes (at most {_MAX_ARRAY_BYTES:,})")


def check_skops_model(estimator: Any, path: Path) -> None:
    """Refuse ``estimator`` (read from ``path``) unless it holds only what kneepain's training
    writes, and trees scikit-learn can score within their arrays.

    Raises
    ------
    ModelIntegrityError
        Naming the file, and the type, the array or the tree and node at fault.
    """
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    boosted, featurisers = [], []
    for obj in _objects(estimator, path, PREDICTOR_RECORD_DTYPE):
        name = _type_name(obj)
        if name == _BOOSTING:
            boosted.append(obj)
        elif name == _FEATURISER:
            featurisers.append(obj)
        elif name in _GENERATORS:
            problem = _generator_problem(obj)
            if problem:
                raise _refused(path, problem)
    for f in featurisers:
        if str(getattr(f, "dtype", "float64")) not in ("float64", "float32"):
            raise _refused(path, f"the featuriser's dtype is {getattr(f, 'dtype', None)!r}, not float64 or float32")
    for model in boosted:
        _check_boosting(model, path, PREDICTOR_RECORD_DTYPE)


def _objects(root: Any, path: Path, record: np.dtype) -> list[Any]:
    """Every object reachable from ``root`` (through attributes, lists, tuples and dicts), each
    checked against :data:`ALLOWED_TYPES`; arrays checked to hold numbers or tree nodes."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, np.ndarray):
            if type(obj) is not np.ndarray:  # a MaskedArray's .any() skips what compiled code reads
                raise _refused(path, f"it holds a {_type_name(obj)}, where kneepain's models hold plain arrays")
            if obj.dtype.kind not in _NUMBERS and obj.dtype != record:
                raise _refused(path, f"it holds an array of {obj.dtype}, where kneepain's models hold numbers")
            continue
        if isinstance(obj, np.generic):
            if obj.dtype.kind not in _NUMBERS:
                raise _refused(path, f"it holds a {type(obj).__name__}, where kneepain's models hold numbers")
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        name = _type_name(obj)
        if name == "builtins.function":
            module, qualname = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "")
            if not any(module == m and qualname.startswith(q) for m, q in _FUNCTIONS):
                raise _refused(path, f"it holds the function {getattr(obj, '__qualname__', obj)!r}, which no model "
                                     "kneepain writes holds")
            continue
        if name not in ALLOWED_TYPES:
            raise _refused(path, f"it holds a {name}, which no model kneepain writes holds")
        found.append(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return found


def _check_boosting(model: Any, path: Path, record: np.dtype) -> None:
    """Refuse a gradient-boosting model scikit-learn would score outside its trees' arrays."""
    if "_predictors" not in vars(model):  # an unfitted template (a parameter): scikit-learn scores none
        return
    if "_in_fit" in vars(model):  # scikit-learn then scores unchecked input with the binned trees
        raise _refused(path, "a gradient-boosting model is marked as being fitted (_in_fit), which a saved model "
                             "never is")
    n_features = getattr(model, "n_features_in_", None)
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise _refused(path, f"a gradient-boosting model has n_features_in_ == {n_features!r}, not a positive integer")
    categorical = getattr(getattr(model, "_bin_mapper", None), "is_categorical_", None)
    if getattr(model, "_preprocessor", None) is not None or (categorical is not None and np.any(categorical)):
        raise _refused(path, "a gradient-boosting model has categorical features, which kneepain's models do not use")
    per_iteration = getattr(model, "n_trees_per_iteration_", None)
    iterations = model._predictors
    if not isinstance(iterations, list) or not iterations:
        raise _refused(path, "a gradient-boosting model has no list of trees")
    max_iter = vars(model).get("max_iter")  # (n_iter_ is a property: len(_predictors))
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or not len(iterations) <= max_iter <= _MAX_ITER:
        raise _refused(path, f"a gradient-boosting model has {len(iterations)} iterations (max_iter {max_iter!r}, "
                             f"at most {_MAX_ITER})")
    trees_seen: set[int] = set()
    for i, trees in enumerate(iterations):
        if not isinstance(trees, list) or len(trees) != per_iteration:
            raise _refused(path, f"iteration {i} of a gradient-boosting model does not hold one tree per class "
                                 f"({per_iteration!r})")
        if id(trees) in trees_seen:
            raise _refused(path, f"iteration {i} of a gradient-boosting model repeats an earlier one")
        trees_seen.add(id(trees))
        for k, tree in enumerate(trees):
            if id(tree) in trees_seen:
                raise _refused(path, f"iteration {i} of a gradient-boosting model repeats a tree")
            trees_seen.add(id(tree))
            problem = _tree_problem(getattr(tree, "nodes", None), int(n_features), record)
            if problem:
                raise _refused(path, f"the tree of iteration {i}, class {k}, {problem}")


def _tree_problem(nodes: Any, n_features: int, record: np.dtype) -> str:
    """What makes ``nodes`` a tree scikit-learn would score outside its arrays, or ""."""
    if type(nodes) is not np.ndarray or nodes.dtype != record or nodes.ndim != 1 or len(nodes) == 0:
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


def _generator_problem(generator: Any) -> str:
    """What makes a random generator's state one numpy would draw from outside it, or "". A
    generator is kept only for fitting (gradient boosting's feature subsampling, the MLP's
    shuffling), but numpy accepts a Mersenne Twister positioned past its 624 words and reads
    beyond them at the next draw (the process crashed)."""
    state = (generator.bit_generator.state if isinstance(generator, np.random.Generator)
             else generator.get_state(legacy=False))
    kind = state.get("bit_generator")
    if kind == "PCG64":  # two 128-bit numbers: every state is one
        return ""
    if kind != "MT19937":
        return f"it holds a random generator of kind {kind!r}, which no model kneepain writes holds"
    words, position = np.shape(state["state"]["key"]), int(state["state"]["pos"])
    if words != (_MT19937_WORDS,) or not 0 <= position <= _MT19937_WORDS:
        return (f"a random generator's state is out of range (a Mersenne Twister at position {position} of "
                f"{words[0] if words else 0} words; at most {_MT19937_WORDS})")
    return ""


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _refused(path: Path, problem: str) -> ModelIntegrityError:
    return ModelIntegrityError(f"{path} is not a valid skops model file: {problem}; refusing to load it.")
