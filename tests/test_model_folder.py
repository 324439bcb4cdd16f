"""A model folder is used only if every file that changes an output is the one written at training,
nothing on the load path can run code, and with a trusted key only a folder signed by it loads."""

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from pipeline import generate_cases
from pipeline.cli import main
from pipeline.core.errors import ModelIntegrityError
from pipeline.core.parsing import parse_cases
from pipeline.data.datasets import labels
from pipeline.model.arrays import array_scorer
from pipeline.model.features import CaseFeaturizer
from pipeline.model.integrity import CHECKSUMS_FILE, seal_folder
from pipeline.model.persist import save_model
from pipeline.serve.loading import load_model

CASE = {"age": 71, "sex": "female", "sedentary": "yes", "leg_swelling": "yes", "skin_warm": "yes", "skin_red": "yes",
        "calf_tenderness": "yes"}
FILES = ["model.json", "manifest.json", "knowledge_base.yaml"]


def _copy(trained, tmp_path, name="models") -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / name))


@pytest.fixture
def save(trained):
    """``save_model`` with what every folder needs to load besides its model: the trained folder's
    decision layer (the triage, red flags and advice) and knowledge base."""
    decision = json.loads((trained[0] / "manifest.json").read_text())["decision"]
    return lambda estimator, folder, manifest: save_model(estimator, folder, {**manifest, "decision": decision},
                                                          kb_path=trained[0] / "knowledge_base.yaml")


def _reseal(folder: Path) -> None:
    """What someone who edits a file and rewrites the checksums does (only a signature stops them)."""
    names = json.loads((folder / CHECKSUMS_FILE).read_text())["files"]
    seal_folder(folder, names)


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("how", ["changed", "deleted"])
def test_every_file_that_changes_an_output_is_verified(trained, tmp_path, name, how):
    folder = _copy(trained, tmp_path)
    if how == "deleted":
        (folder / name).unlink()
    else:
        with open(folder / name, "ab") as fh:
            fh.write(b"\n ")
    with pytest.raises(ModelIntegrityError, match=f"{name} (has changed since the model was saved|is missing)"):
        load_model(folder)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("given", ["folder", "a file in it"])
@pytest.mark.parametrize("edit", ["appended", "same size and time"])
def test_a_file_edited_after_the_folder_was_loaded_is_refused_at_the_next_call(trained, tmp_path, name, given, edit):
    """Also an edit that keeps the file's size and sets its modification time back, as ``cp -p``,
    ``rsync -a`` and ``tar x`` do: the folder's cache key once held only sizes and those times."""
    from pipeline import predict

    folder = _copy(trained, tmp_path)
    source = folder if given == "folder" else folder / "model.json"  # a file stands for its folder
    predict({"age": 40, "sex": "male"}, model=source)  # loaded and cached
    path = folder / name
    if edit == "appended":
        with open(path, "ab") as fh:
            fh.write(b"\n ")
    else:
        before, data = path.stat(), path.read_bytes()
        path.write_bytes(data[:-1] + (b" " if data[-1:] != b" " else b"\n"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(ModelIntegrityError, match=f"{name} has changed since the model was saved"):
        predict({"age": 40, "sex": "male"}, model=source)


@pytest.mark.parametrize("attack", ["no red flags", "flat costs", "new advice", "no decision layer"])
def test_editing_the_decision_layer_in_the_manifest_is_refused(trained, tmp_path, capsys, attack):
    folder = _copy(trained, tmp_path)

    def change(m):
        d = m["decision"]
        if attack == "no decision layer":
            del m["decision"]
        elif attack == "no red flags":
            d["triage"]["red_flags"] = []
        elif attack == "flat costs":
            d["triage"]["costs"] = {c: {k: 0 for k in v} for c, v in d["triage"]["costs"].items()}
        else:
            d["triage"]["advice"] = {c: "rest at home" for c in d["triage"]["advice"]}

    _edit_manifest(folder, change)
    with pytest.raises(ModelIntegrityError, match="manifest.json has changed"):
        load_model(folder)
    cases = tmp_path / "cases.csv"
    pd.DataFrame([CASE]).to_csv(cases, index=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "out.csv"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json has changed" in err and not (tmp_path / "out.csv").exists()


def test_a_data_folder_given_as_the_model_is_named_as_one(trained, small_data):
    """``model=data/synthetic`` (whose manifest.json is the generator's) said its checksums were
    missing and to retrain; it is named as a data folder."""
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is not a model's \(a data folder's\?\)"):
        load_model(small_data)


def test_checksums_are_read_in_either_case_and_a_digest_that_is_not_one_is_named(trained, tmp_path, capsys):
    """Hexadecimal digits in upper case (as some tools write them) are the same digest, where they were
    refused as "has changed"; a value that is no SHA-256 at all is named as such."""
    folder = _copy(trained, tmp_path)
    checksums = json.loads((folder / CHECKSUMS_FILE).read_text())
    upper = {**checksums, "files": {name: digest.upper() for name, digest in checksums["files"].items()}}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(upper))
    assert load_model(folder).predict_proba is not None
    assert main(["verify", str(folder)]) == 0
    short = {**checksums, "files": {**checksums["files"], "model.json": checksums["files"]["model.json"][:40]}}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(short))
    with pytest.raises(ModelIntegrityError, match=r"for model\.json, which is not a SHA-256 \(64 hexadecimal digits\)"):
        load_model(folder)


def test_a_folder_without_checksums_or_with_foreign_ones_is_refused(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    (folder / CHECKSUMS_FILE).write_text(json.dumps({"format": "kneepain-model-checksums", "algorithm": "sha256",
                                                     "files": {"manifest.json": "0" * 64, "../x": "0" * 64}}))
    with pytest.raises(ModelIntegrityError, match="not a file name inside the folder"):
        load_model(folder)
    (folder / CHECKSUMS_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match="checksums.json is missing"):
        load_model(folder)


_DEEP = {"checksums.json": "[" * 100_000 + "]" * 100_000, "manifest.json": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
         "model.json": "[" * 100_000 + "]" * 100_000, "knowledge_base.yaml": "a: " + "[" * 100_000 + "]" * 100_000 + "\n"}


@pytest.mark.parametrize("name", sorted(_DEEP))
def test_a_file_nested_past_the_parsers_depth_is_refused_by_name(trained, tmp_path, name):
    """JSON or YAML nested deeper than Python's recursion allows is a ModelIntegrityError naming
    the file, as any other file that is not what it should be, not a RecursionError."""
    folder = _copy(trained, tmp_path)
    (folder / name).write_text(_DEEP[name])
    if name != CHECKSUMS_FILE:
        _reseal(folder)
    with pytest.raises(ModelIntegrityError, match=rf"{re.escape(str(folder / name))} is not (a )?valid"):
        load_model(folder)


def test_a_listed_name_with_a_nul_is_refused_as_no_file_name(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    listed = json.loads((folder / CHECKSUMS_FILE).read_text())
    listed["files"]["model\x00.json"] = "0" * 64
    (folder / CHECKSUMS_FILE).write_text(json.dumps(listed))
    with pytest.raises(ModelIntegrityError, match=r"lists 'model\\x00.json', which is not a file name inside"):
        load_model(folder)


def test_a_corrupt_model_file_that_passes_its_checksum_is_refused_by_name(trained, tmp_path, capsys):
    folder = _copy(trained, tmp_path)
    model = json.loads((folder / "model.json").read_text())
    model["layers"][-1]["weights"] = model["layers"][-1]["weights"][:-1]  # one condition short
    (folder / "model.json").write_text(json.dumps(model))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError,
                       match=r"model.json is not a valid kneepain model file: layers\[\d\] has weights \(8, \d+\)"):
        load_model(folder)
    (folder / "model.json").write_text("{not json")
    _reseal(folder)
    cases = tmp_path / "cases.csv"
    pd.DataFrame([CASE]).to_csv(cases, index=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "out.csv"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.json is not a valid kneepain model file" in err


def test_loading_and_scoring_unpickle_nothing(trained, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("something was unpickled on the load path")

    for target, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (joblib, "load")):
        monkeypatch.setattr(target, name, boom)
    model = load_model(trained[0])
    assert model.predict_proba(parse_cases(pd.DataFrame([CASE]))).shape == (1, 9)
    assert not [p for p in trained[0].iterdir() if p.suffix in (".joblib", ".pkl", ".pickle")]


@pytest.fixture(scope="module")
def cases(kb):
    train, valid = generate_cases(kb, 1500, seed=21), generate_cases(kb, 800, seed=22)
    return train, valid


def _fit(kind, cases):
    train, valid = cases
    model = {"logistic": LogisticRegression(max_iter=300), "mlp": MLPClassifier((8,), max_iter=30, random_state=0),
             "hgb": HistGradientBoostingClassifier(max_iter=5, random_state=0)}[kind]
    with pytest.warns() if kind == "mlp" else _nothing():
        pipe = Pipeline([("features", CaseFeaturizer()), ("model", model)]).fit(train, labels(train))
    return CalibratedClassifierCV(FrozenEstimator(pipe), method="temperature").fit(valid, labels(valid))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("kind", ["logistic", "mlp", "hgb"])
def test_saved_models_load_without_pickle_and_give_the_same_probabilities(save, kind, cases, tmp_path):
    estimator = _fit(kind, cases)
    manifest = save(estimator, tmp_path / "m", {"note": kind})
    assert manifest["model_file"] == ("model.skops" if kind == "hgb" else "model.json")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([CHECKSUMS_FILE, "manifest.json",
                                                                        "knowledge_base.yaml", manifest["model_file"]])
    parsed = parse_cases(cases[1])
    loaded = load_model(tmp_path / "m").predict_proba(parsed)
    np.testing.assert_allclose(loaded, estimator.predict_proba(parsed), rtol=1e-9, atol=1e-12)
    scorer = array_scorer(estimator)
    if scorer is not None:  # the arrays round-trip exactly through JSON
        np.testing.assert_array_equal(loaded, scorer.predict_proba(parsed))


@pytest.mark.parametrize("kind", ["logistic", "hgb"])
def test_a_model_file_loading_would_refuse_for_its_size_is_not_saved_and_the_folder_is_kept(save, kind, cases, tmp_path,
                                                                                          monkeypatch):
    """Loading refuses a model folder's file over ``FOLDER_FILE_MAX_BYTES``; saving wrote one all
    the same (and first removed the folder's checksums, so the model there before could no longer
    be loaded either). It is refused before the folder is touched."""
    from pipeline.model import integrity

    estimator = _fit(kind, cases)
    save(estimator, tmp_path / "m", {"note": "before"})
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    name = "model.skops" if kind == "hgb" else "model.json"
    limit = len(before[name]) - 1
    monkeypatch.setattr(integrity, "FOLDER_FILE_MAX_BYTES", limit)
    with pytest.raises(ModelIntegrityError, match=re.escape(f"its {name} would be {limit + 1:,} bytes, over the "
                                                            f"{limit:,} a model folder's file may be")):
        save(estimator, tmp_path / "m", {"note": "after"})
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    monkeypatch.undo()
    assert load_model(tmp_path / "m").manifest["note"] == "before"


@pytest.mark.parametrize("kind", ["logistic", "hgb"])
def test_a_model_saved_before_the_duration_hinges_loads_and_scores_as_fitted(save, kind, cases, tmp_path):
    """A model.json of version 1 (no `duration_knots_days`) and a skops featuriser without the
    attribute, as earlier versions wrote them, score with the features they were fitted on."""
    train, valid = cases
    model = LogisticRegression(max_iter=300) if kind == "logistic" else HistGradientBoostingClassifier(
        max_iter=5, random_state=0)
    pipe = Pipeline([("features", CaseFeaturizer(duration_knots=())), ("model", model)]).fit(train, labels(train))
    parsed = parse_cases(valid)
    expected = pipe.predict_proba(parsed)
    if kind == "hgb":
        del pipe.steps[0][1].__dict__["duration_knots"]
    manifest = save(pipe, tmp_path / "m", {})
    if kind == "logistic":
        path = tmp_path / "m" / manifest["model_file"]
        data = json.loads(path.read_text())
        assert data["version"] == 2 and data["features"].pop("duration_knots_days") == []
        path.write_text(json.dumps({**data, "version": 1}))
        _reseal(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(parsed), expected, rtol=1e-9, atol=1e-12)
    with_hinges = Pipeline([("features", CaseFeaturizer()), ("model", LogisticRegression(max_iter=300))])
    assert with_hinges.fit(train, labels(train))[0].n_features_out_ == pipe[0].n_features_out_ + 4


@pytest.mark.parametrize("knots,message", [
    ([1, 7, 7, 180], "strictly increasing"), ([180, 30, 7, 1], "strictly increasing"), ([0, 7, 30, 180], "positive"),
    ([1, 7, "30", 180], "numbers of days"), ([1, 7, 30], r"layers\[0\] has weights"), (None, "is missing")])
def test_a_model_file_whose_duration_knots_are_wrong_is_refused_by_name(trained, tmp_path, knots, message):
    """The hinge columns follow the knots in order: knots out of order, repeated, not positive, not
    numbers, fewer than the weights' or missing are refused when the folder loads, not at scoring."""
    folder = _copy(trained, tmp_path)
    model = json.loads((folder / "model.json").read_text())
    if knots is None:
        del model["features"]["duration_knots_days"]
    else:
        model["features"]["duration_knots_days"] = knots
    (folder / "model.json").write_text(json.dumps(model))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match=f"model.json is not a valid kneepain model file: .*{message}"):
        load_model(folder)


def test_a_featuriser_refuses_knots_that_are_not_increasing_positive_days(cases):
    for knots in ((7.0, 1.0), (0.0, 1.0), (1.0, float("nan")), 7.0):
        with pytest.raises(ValueError, match="duration knots must be"):
            CaseFeaturizer(duration_knots=knots).fit(cases[0])


class _Untrusted:
    pass


def test_a_skops_file_that_needs_an_untrusted_type_is_refused(save, cases, tmp_path):
    import skops.io as sio

    with pytest.raises(ModelIntegrityError, match="cannot save a _Untrusted safely"):
        save(_Untrusted(), tmp_path / "m", {})
    estimator = _fit("hgb", cases)
    save(estimator, tmp_path / "m", {})
    (tmp_path / "m" / "model.skops").write_bytes(sio.dumps({"model": _Untrusted()}))
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=r"model.skops needs types that are not trusted: .*_Untrusted"):
        load_model(tmp_path / "m")
    # trusted types that are no classifier (a dict of arrays) are refused by name too, not at scoring
    (tmp_path / "m" / "model.skops").write_bytes(sio.dumps({"weights": np.zeros(3)}))
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=r"model.skops holds a dict, not a fitted classifier"):
        load_model(tmp_path / "m")


def _rewrite_schema(folder: Path, change, extra: dict[str, bytes] = {}) -> None:  # noqa: B006 - read only
    """The folder's model.skops with its schema changed by ``change`` and ``extra`` files added, resealed."""
    import io
    import zipfile

    original = zipfile.ZipFile(io.BytesIO((folder / "model.skops").read_bytes()))
    schema = json.loads(original.read("schema.json"))
    change(schema)
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in original.namelist():
            z.writestr(name, json.dumps(schema) if name == "schema.json" else original.read(name))
        for name, data in extra.items():
            z.writestr(name, data)
    (folder / "model.skops").write_bytes(crafted.getvalue())
    _reseal(folder)


def _many_copies(schema):
    node = {"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy",
            "file": "zeros.npy"}
    schema["content"]["content"]["extra_"] = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                                              "content": [{**node, "__id__": 10**6 + i} for i in range(1100)],
                                              "__id__": 2 * 10**6}
    schema["content"]["key_types"]["content"].append({"__class__": "str", "__module__": "builtins",
                                                      "__loader__": "TypeNode", "__id__": 2 * 10**6 + 1})


def _huge_seed_pool(schema):
    found = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__loader__") == "RandomGeneratorNode":
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    found[0]["content"]["seed_seq"]["content"]["pool_size"]["content"] = json.dumps(200_000)


def test_a_skops_file_that_would_take_unbounded_memory_or_time_to_unpack_is_refused_first(save, cases, tmp_path):
    """skops unpacks an array once per schema entry that names it, and sets a random generator's
    seed pool up in time growing with its square, before any check of the model: a small file
    naming one array 10 times took 2.2 GB to load, a pool of 200,000 took a minute. Both are
    refused before skops reads anything."""
    import io

    save(_fit("hgb", cases), tmp_path / "m", {})
    zeros = io.BytesIO()
    np.save(zeros, np.zeros(1 << 17))  # 1 MiB, named 1,100 times: 1.1 GiB to unpack
    _rewrite_schema(tmp_path / "m", _many_copies, {"zeros.npy": zeros.getvalue()})
    assert (tmp_path / "m" / "model.skops").stat().st_size < 2 << 20
    with pytest.raises(ModelIntegrityError, match=r"model.skops is not a valid skops model file: its arrays unpack to "
                                                  r"1,1\d\d,\d{3},\d{3} bytes \(at most 1,073,741,824\)"):
        load_model(tmp_path / "m")
    save(_fit("hgb", cases), tmp_path / "n", {})
    _rewrite_schema(tmp_path / "n", _huge_seed_pool)
    with pytest.raises(ModelIntegrityError, match=r"a random generator's seed pool has size '200000' \(at most 64\)"):
        load_model(tmp_path / "n")


def test_a_skops_model_whose_attributes_recurse_is_refused_by_name(save, cases, tmp_path):
    """A FrozenEstimator saved without its estimator passes every attribute to that missing one,
    for good: asking whether it can score raised a RecursionError out of the loader."""
    import io
    import zipfile

    import skops.io as sio

    save(_fit("hgb", cases), tmp_path / "m", {})
    original = zipfile.ZipFile(io.BytesIO(sio.dumps(FrozenEstimator(1))))
    schema = json.loads(original.read("schema.json"))
    del schema["content"]["content"]["estimator"]  # the attribute dropped from the file
    schema["content"]["key_types"]["content"] = schema["content"]["key_types"]["content"][:len(schema["content"]["content"])]
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as z:
        for name in original.namelist():
            z.writestr(name, json.dumps(schema) if name == "schema.json" else original.read(name))
    (tmp_path / "m" / "model.skops").write_bytes(crafted.getvalue())
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=r"model.skops is not a valid skops model file: its attributes recurse"):
        load_model(tmp_path / "m")


def test_a_skops_model_whose_classes_are_not_the_conditions_in_order_is_refused(save, cases, tmp_path):
    """Its probability columns are read as the conditions' indices in order: a classifier fitted on
    the names (alphabetical columns) would have its P(DVT) read from another condition's column."""
    import skops.io as sio

    train, valid = cases
    pipe = Pipeline([("features", CaseFeaturizer()), ("model", HistGradientBoostingClassifier(max_iter=5, random_state=0))])
    save(_fit("hgb", cases), tmp_path / "m", {})
    load_model(tmp_path / "m")  # the conditions' indices, in order
    (tmp_path / "m" / "model.skops").write_bytes(sio.dumps(pipe.fit(train, train["condition"].astype(str))))
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=r"predicts the classes \['acl_injury', 'bakers_cyst'"):
        load_model(tmp_path / "m")


def _split(nodes) -> int:
    return int(np.flatnonzero(nodes["is_leaf"] == 0)[0])


_TREE_ATTACKS = {  # a change to one tree's nodes, and how the refusal names it
    "a child outside the tree": (lambda n: n["left"].__setitem__(_split(n), 10_000_000),
                                 r"node \d+ has children 10000000 and \d+; a split's children come after it"),
    "a child that loops back": (lambda n: n["right"].__setitem__(_split(n), _split(n)),
                                r"node \d+ has children \d+ and \d+; a split's children come after it"),
    "a feature outside the data": (lambda n: n["feature_idx"].__setitem__(_split(n), 5_000),
                                   r"node \d+ splits on feature 5000; the model has features 0-\d+"),
    "a categorical split": (lambda n: n["is_categorical"].__setitem__(_split(n), 1),
                            r"node \d+ is a categorical split"),
    "a leaf that is not a number": (lambda n: n["value"].__setitem__(int(np.flatnonzero(n["is_leaf"])[0]), np.nan),
                                    r"leaf \d+ has the value nan"),
}


@pytest.mark.parametrize("attack", sorted(_TREE_ATTACKS))
def test_a_gradient_boosting_tree_scored_outside_its_arrays_is_refused_at_loading(save, cases, tmp_path, attack):
    """scikit-learn follows a tree's nodes in compiled code that does not check them: a child
    outside the tree crashed the process, one that loops back never returned. A resealed (or
    unsigned) model.skops with such a tree is refused by name before anything is scored."""
    import skops.io as sio

    estimator = _fit("hgb", cases)
    save(estimator, tmp_path / "m", {})
    change, message = _TREE_ATTACKS[attack]
    change(_hgb_of(estimator)._predictors[1][2].nodes)
    (tmp_path / "m" / "model.skops").write_bytes(sio.dumps(estimator))
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=r"model.skops is not a valid skops model file: the tree of "
                                                  rf"iteration 1, class 2, {message}"):
        load_model(tmp_path / "m")


def _hgb_of(estimator):
    return estimator.calibrated_classifiers_[0].estimator.estimator.steps[-1][1]


def _in_object_array(estimator):
    features = estimator.calibrated_classifiers_[0].estimator.estimator.steps[0][1]
    features.spare = np.array([_hgb_of(estimator), None], dtype=object)  # skops rebuilds object arrays of any trusted object


def _one_vs_rest(estimator):
    from sklearn.multiclass import OneVsRestClassifier  # trusted by skops' defaults, and scores what it holds

    pipe = estimator.calibrated_classifiers_[0].estimator.estimator
    ovr = OneVsRestClassifier(HistGradientBoostingClassifier(max_iter=2))
    ovr.estimators_, ovr.classes_ = [_hgb_of(estimator)], pipe.classes_
    pipe.steps[-1] = ("model", ovr)


def _masked_nodes(estimator):
    tree = _hgb_of(estimator)._predictors[1][2]
    nodes = np.ma.masked_array(tree.nodes.copy(), mask=np.zeros(len(tree.nodes), dtype=bool))
    split = int(np.flatnonzero(tree.nodes["is_leaf"] == 0)[0])
    nodes["left"][split] = 50_000_000
    nodes.mask[split] = True  # the check's .any() would skip it; compiled code reads it
    tree.nodes = nodes


def _repeated_iteration(estimator):
    hgb = _hgb_of(estimator)
    hgb._predictors = hgb._predictors + [hgb._predictors[0]] * 3  # a small file, and every repeat scored
    hgb.max_iter = 100  # within its own max_iter


def _crafted_generator(estimator):
    twister = np.random.MT19937(0)
    state = twister.state
    state["state"]["pos"] = 10_000_000  # numpy takes it, and reads past its 624 words at the next draw
    twister.state = state
    _hgb_of(estimator)._feature_subsample_rng = np.random.Generator(twister)


_FOREIGN = {  # a change to a fitted model, and how the refusal names it
    "a random generator whose next draw reads outside it": (
        _crafted_generator, r"a random generator's state is out of range \(a Mersenne Twister at position 10000000 "
                            r"of 624 words; at most 624\)"),
    "a masked array of tree nodes": (_masked_nodes, r"it holds a numpy.ma.MaskedArray, where kneepain's models hold "
                                                    r"plain arrays"),
    "an iteration given twice": (_repeated_iteration, r"iteration 5 of a gradient-boosting model repeats an earlier one"),
    "an estimator in an object array": (_in_object_array, r"it holds an array of object"),
    "an estimator training never writes": (_one_vs_rest, r"it holds a sklearn.multiclass.OneVsRestClassifier, which no "
                                                         r"model kneepain writes holds"),
    "a model marked as still being fitted": (lambda e: setattr(_hgb_of(e), "_in_fit", True),
                                             r"a gradient-boosting model is marked as being fitted \(_in_fit\)"),
    "a featuriser of bytes": (lambda e: setattr(e.calibrated_classifiers_[0].estimator.estimator.steps[0][1], "dtype",
                                                "uint8"), r"the featuriser's dtype is 'uint8'"),
}


@pytest.mark.parametrize("attack", sorted(_FOREIGN))
def test_a_skops_model_holding_what_training_never_writes_is_refused_at_loading_and_saving(save, cases, tmp_path, attack):
    """skops' defaults trust every scikit-learn estimator: a tree hidden in an object array or
    behind another estimator, or a model marked as still being fitted (scikit-learn then skips
    the input's width check), was scored unchecked and crashed the process."""
    import skops.io as sio

    estimator = _fit("hgb", cases)
    save(estimator, tmp_path / "m", {})
    change, message = _FOREIGN[attack]
    change(estimator)
    (tmp_path / "m" / "model.skops").write_bytes(sio.dumps(estimator))
    _reseal(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=rf"model.skops is not a valid skops model file: {message}"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelIntegrityError, match=message):  # nor is such a folder written
        save(estimator, tmp_path / "n", {})
    assert not (tmp_path / "n" / "model.skops").exists()


@pytest.mark.parametrize("method", [None, "temperature", "sigmoid", "isotonic"])
@pytest.mark.parametrize("kind", ["logistic", "mlp", "hgb"])
def test_every_candidate_with_every_calibration_saves_and_loads_as_fitted(save, kind, method, cases, tmp_path):
    """What the checks of a skops file allow covers every model training can write: each
    candidate, calibrated by each method `calibration.method` accepts, or not calibrated."""
    train, valid = cases
    model = {"logistic": LogisticRegression(max_iter=300), "mlp": MLPClassifier((8,), max_iter=30, random_state=0),
             "hgb": HistGradientBoostingClassifier(max_iter=5, random_state=0)}[kind]
    with pytest.warns() if kind == "mlp" else _nothing():
        estimator = Pipeline([("features", CaseFeaturizer()), ("model", model)]).fit(train, labels(train))
    if method is not None:
        estimator = CalibratedClassifierCV(FrozenEstimator(estimator), method=method).fit(valid, labels(valid))
    save(estimator, tmp_path / "m", {})
    parsed = parse_cases(valid)
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(parsed), estimator.predict_proba(parsed),
                               rtol=1e-9, atol=1e-12)


def test_an_isotonic_calibration_of_scores_all_equal_saves_and_loads(save, cases, tmp_path):
    """Where a class's calibration scores are all equal (a gradient-boosting model too small to
    split: every case scores the same), scikit-learn's isotonic calibrator keeps a function of its
    own in place of an interpolation; the check refused it, so training could not save its model."""
    train, valid = cases
    stump = HistGradientBoostingClassifier(max_iter=1, min_samples_leaf=len(train))  # one leaf: no split
    pipe = Pipeline([("features", CaseFeaturizer()), ("model", stump)]).fit(train, labels(train))
    estimator = CalibratedClassifierCV(FrozenEstimator(pipe), method="isotonic").fit(valid, labels(valid))
    save(estimator, tmp_path / "m", {})
    parsed = parse_cases(valid)
    expected = estimator.predict_proba(parsed)
    assert np.ptp(expected, axis=0).max() == 0  # every case scored the same, as the stump does
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(parsed), expected, rtol=1e-12, atol=0)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _legacy_folder(trained, tmp_path, payload) -> Path:
    """A folder as an older version wrote it: a joblib pickle whose hash the manifest records."""
    folder = _copy(trained, tmp_path, "old")
    (folder / "model.json").unlink()
    (folder / CHECKSUMS_FILE).unlink()
    joblib.dump(payload, folder / "model.joblib")
    digest = hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()
    kb = hashlib.sha256((folder / "knowledge_base.yaml").read_bytes()).hexdigest()
    _edit_manifest(folder, lambda m: m.update(sha256=digest, knowledge_base_sha256=kb, model_file="model.joblib"))
    return folder


def test_an_old_pickled_folder_is_refused_with_retrain_and_nothing_runs(trained, tmp_path):
    sentinel = tmp_path / "pwned"
    folder = _legacy_folder(trained, tmp_path, _Evil(str(sentinel)))  # its hash is consistent
    with pytest.raises(ModelIntegrityError, match=r"pickle .* Retrain with `kneepain train`.*--trust-pickle"):
        load_model(folder)
    assert not sentinel.exists()


def test_an_old_pickled_folder_loads_only_behind_trust_pickle(trained, cases, tmp_path, capsys):
    folder = _legacy_folder(trained, tmp_path, _fit("logistic", cases))
    src = tmp_path / "cases.csv"
    pd.DataFrame([CASE]).to_csv(src, index=False)
    assert main(["score", str(src), "-o", str(tmp_path / "a.csv"), "--model", str(folder)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(["score", str(src), "-o", str(tmp_path / "a.csv"), "--model", str(folder), "--trust-pickle"]) == 0
    assert pd.read_csv(tmp_path / "a.csv")["triage"].tolist() == ["emergency"]
    said = capsys.readouterr().err.splitlines()[0]  # no checksums to speak of
    assert said.endswith(f"model {folder} (an older pickled folder, trusted with --trust-pickle)"), said
    # the dask engine's workers would each run the pickle: refused before any cluster, not ignored
    assert main(["score", "--engine", "dask", str(src), "-o", str(tmp_path / "d"), "--model", str(folder),
                 "--trust-pickle"]) == 2
    assert "--trust-pickle works with --engine pandas only" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    with open(folder / "model.joblib", "ab") as fh:  # the old hash check still holds behind the flag
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="SHA-256 .* refusing to load"):
        load_model(folder, trust_pickle=True)


def test_a_decision_layer_from_another_version_is_refused_clearly(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    _edit_manifest(folder, lambda m: m["decision"].update(atypical={"threshold": 1.0}))  # an older release's layout
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match="another version of kneepain; retrain"):
        load_model(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["conformal"].update(thresholds=[[0.5]]), "conformal.thresholds has shape (1, 1), not (4, 5)"),
    (lambda d: d["atypical"].update(thresholds_by_n_known=[1.0, 2.0]), "atypical.thresholds_by_n_known has shape (2,)"),
    (lambda d: d["atypical"].update(thresholds_by_n_known="x"), "thresholds and band edges must be numbers"),
    (lambda d: d["triage"]["red_flags"][0].update(level="urgent"), "triage.red_flags.0.level"),
    (lambda d: d["triage"]["costs"].pop("dvt"), "costs"),
    # a model trained before the rules carried their provenance
    (lambda d: d["triage"]["red_flags"][0].pop("source"), "(triage.red_flags.0.source: Field required); retrain"),
    (lambda d: d["screen"]["rules"][1].update(source="docs/evidence"), "(screen.rules.1.source: source must be 'seed: "),
    (lambda d: d.clear(), "lacks triage.uncertain"),
    # a NaN cost passed ">= 0" and sent every case the same day; an infinite one, an emergency within a day or two
    (lambda d: d["triage"]["costs"]["dvt"].update(see_doctor=float("nan")),
     "triage.costs.dvt.see_doctor: Input should be a finite number"),
    (lambda d: d["triage"]["costs"]["dvt"].update(emergency=float("inf")),
     "triage.costs.dvt.emergency: Input should be a finite number"),
    (lambda d: d["conformal"]["thresholds"][0].__setitem__(0, float("nan")), "must be finite numbers, not NaN or infinite"),
])
def test_a_decision_layer_of_the_wrong_shape_is_refused_by_name_before_scoring(trained, tmp_path, edit, message):
    """An unsigned folder whose checksums were rewritten: whatever its decision layer holds, loading
    names what is wrong (in one line, no validation dump) rather than scoring failing later."""
    folder = _copy(trained, tmp_path)
    _edit_manifest(folder, lambda m: edit(m["decision"]))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match="decision layer") as err:
        load_model(folder)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_manifest_for_another_schema_is_refused(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    _edit_manifest(folder, lambda m: m.update(schema_version="0"))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match="is for schema 0"):
        load_model(folder)


@pytest.fixture
def champion_copy(trained, tmp_path, monkeypatch):
    """The registered champion's MLflow model, copied to a local folder (a file:/// URI)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained[1])
    mlflow.set_tracking_uri(trained[1])
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/kneepain-classifier@champion",
                                                dst_path=str(tmp_path / "download"))
    return Path(shutil.copytree(local, tmp_path / "mlmodel"))


def test_an_mlflow_model_uri_is_verified_before_anything_in_it_is_used(champion_copy, trained):
    from pipeline import predict

    uri = champion_copy.as_uri()
    expected = predict(CASE, model=trained[0])
    pd.testing.assert_frame_equal(predict(CASE, model=uri), expected)
    _edit_manifest(champion_copy / "artifacts" / "models", lambda m: m["decision"]["triage"].update(red_flags=[]))
    # named by the URI given, not by the temporary folder it was fetched into and is removed
    with pytest.raises(ModelIntegrityError, match=re.escape(f"{uri}, file artifacts/models/manifest.json has changed")):
        load_model(uri)


def test_scoring_with_an_alias_names_the_version_that_scored(trained, tmp_path, monkeypatch, capsys):
    """The alias is read once, as the version it names now: that version scores every row, and
    the summary names it, not an alias that may since have moved."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained[1])
    src = tmp_path / "cases.csv"
    pd.DataFrame([CASE]).to_csv(src, index=False)
    assert main(["score", str(src), "-o", str(tmp_path / "a.csv"), "--model", "models:/kneepain-classifier@champion"]) == 0
    said = capsys.readouterr().err.splitlines()[0]
    assert re.search(r", model models:/kneepain-classifier/\d+ \(checksums checked; ", said), said


def test_an_mlflow_model_with_a_pickled_python_model_is_not_unpickled(tmp_path):
    import yaml

    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "python_model.pkl").write_bytes(pickle.dumps(_Evil(str(sentinel))))
    (evil / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {
        "loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl", "python_version": "3.11"}}}))
    with pytest.raises(ModelIntegrityError, match="is not a kneepain model"):
        load_model(evil.as_uri())
    assert not sentinel.exists()


def test_a_figure_too_few_cases_give_is_null_in_the_manifest(trained, tmp_path):
    """Two held-out real cases give no log-loss interval: the manifest held a bare NaN, which
    strict JSON readers refuse, and training printed `[nan, nan]`."""
    from pipeline.model.persist import update_manifest
    from pipeline.report.labelled import with_interval

    folder = _copy(trained, tmp_path)
    update_manifest(folder, {"extra_holdout": {"n": 2, "log_loss": 0.004, "log_loss_ci": [float("nan"), float("nan")]}})

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    manifest = json.loads((folder / "manifest.json").read_text(), parse_constant=refuse)
    assert manifest["extra_holdout"]["log_loss_ci"] == [None, None]
    load_model(folder)  # sealed again, and verified
    assert with_interval(0.004, [float("nan"), float("nan")]) == "0.004 [no interval]"
    assert with_interval(0.5, [0.25, 0.75]) == "0.500 [0.250, 0.750]"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("decision"), "manifest.json holds no decision layer"),
    (lambda m: [f.update(level="self_care") for f in m["decision"]["triage"]["red_flags"]],
     "'self_care' raises no case's level"),
])
def test_a_resealed_manifest_that_drops_the_triage_is_refused(trained, tmp_path, capsys, edit, message):
    """Without a trusted key, checksums rewritten after an edit pass (only a signature stops a
    consistent rewrite), but an edit that leaves a folder scoring probabilities alone, with no
    triage column and no word of it, or that sends every red flag to self-care, is no folder
    `kneepain train` writes: refused at load, in one line."""
    folder = _copy(trained, tmp_path)
    _edit_manifest(folder, edit)
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match=message):
        load_model(folder)
    cases = tmp_path / "cases.csv"
    pd.DataFrame([CASE]).to_csv(cases, index=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "out.csv"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("beta", [0, -1.0])
def test_a_temperature_that_flattens_or_turns_over_the_probabilities_is_refused(trained, tmp_path, beta):
    """An inverse temperature of 0 gives every condition 1/9; a negative one turned a pop with a
    knee giving way from P(DVT) 0.0004 into 0.765."""
    folder = _copy(trained, tmp_path)
    data = json.loads((folder / "model.json").read_text())
    if data.get("beta") is None:
        pytest.skip("the trained model is not temperature-calibrated")
    data["beta"] = beta
    (folder / "model.json").write_text(json.dumps(data))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match=rf"beta == {beta!r}, must be a finite number above 0 or null"):
        load_model(folder)


@pytest.mark.parametrize("edit", ["beta", "scale"])
def test_a_model_whose_numbers_give_no_probabilities_stops_the_job(trained, tmp_path, capsys, edit):
    """Numbers that load (finite) but that training never gives, the checksums rewritten: every
    case was scored as NaN, "leg_cramp" predicted and NaN triaged, with exit 0. Now the job stops
    with one line, and nothing is written."""
    from pipeline import predict

    folder = _copy(trained, tmp_path)
    data = json.loads((folder / "model.json").read_text())
    if edit == "beta":
        if data.get("beta") is None:
            pytest.skip("the trained model is not temperature-calibrated")
        data["beta"] = 1e308
    else:
        data["features"]["scale"]["age"] = 1e-300
    (folder / "model.json").write_text(json.dumps(data))
    _reseal(folder)
    with pytest.raises(ModelIntegrityError, match="gave probabilities that are not numbers for 1 of 1 cases"):
        predict(CASE, model=load_model(folder))
    cases = tmp_path / "cases.csv"
    pd.DataFrame([CASE, CASE]).to_csv(cases, index=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "out.csv"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not numbers for 2 of 2 cases" in err and not (tmp_path / "out.csv").exists()


def test_a_checksums_file_that_is_a_folder_is_refused_as_the_folder_s_fault(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    (folder / CHECKSUMS_FILE).unlink()
    (folder / CHECKSUMS_FILE).mkdir()
    with pytest.raises(ModelIntegrityError, match=r"checksums.json: cannot read: .*; refusing to load"):
        load_model(folder)


@pytest.mark.parametrize("where", ["listed file", "link out of the folder"])
def test_a_file_larger_than_any_model_folder_holds_is_refused_before_it_is_read(trained, tmp_path, where):
    """A listed file of gigabytes (or a link to one outside the folder) was read whole and hashed
    before its mismatch was refused (a 3 GB file: 24.6 s and its size in memory); its size is
    checked first. The sparse file here takes no disk."""
    from pipeline.model import integrity

    folder = _copy(trained, tmp_path)
    big = folder / "knowledge_base.yaml" if where == "listed file" else tmp_path / "elsewhere.bin"
    with open(big, "r+b" if big.exists() else "wb") as fh:
        fh.truncate(integrity.FOLDER_FILE_MAX_BYTES + 1)
    if where != "listed file":
        (folder / "knowledge_base.yaml").unlink()
        (folder / "knowledge_base.yaml").symlink_to(big)
    with pytest.raises(ModelIntegrityError, match=r"knowledge_base.yaml is 268,435,457 bytes, larger than the "
                                                  r"268,435,456 allowed; refusing to load"):
        load_model(folder)
