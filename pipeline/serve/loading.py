"""A scoring model: the verified estimator of a model folder with its decision layer.

:func:`load_model` takes a models folder, an MLflow model URI or ``None`` (the project's
``models/``); :func:`get_model` loads once and caches.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.core.errors import KnowledgeBaseError, ModelIntegrityError
from pipeline.core.files import load_yaml
from pipeline.core.knowledge import KnowledgeBase, knowledge_base_from_dict
from pipeline.core.parsing import ParsedCases
from pipeline.core.paths import models_dir
from pipeline.core.schema import CONDITIONS
from pipeline.decision.layer import Decision
from pipeline.model.arrays import ArrayScorer, array_scorer, predict_proba
from pipeline.model.integrity import CHECKSUMS_FILE
from pipeline.model.mlflow_hints import quiet_mlflow
from pipeline.model.persist import KB_FILE, MANIFEST_FILE, holds_model, load_estimator
from pipeline.model.signing import snapshot_folder, trusted_key, verify_signature

__all__ = ["ARTIFACT_KEY", "LoadedModel", "clear_model_cache", "get_model", "is_model_uri", "load_model", "pinned_uri"]


ARTIFACT_KEY = "model_dir"  # the model folder's name among the MLflow model's artifacts


@dataclass
class LoadedModel:
    """A fitted estimator over case features plus its manifest. Classes are :data:`CONDITIONS`."""

    estimator: Any
    manifest: dict = field(default_factory=dict)
    source: str = ""
    kb: KnowledgeBase | None = None  # the snapshot the decision layer uses (None for a bare model)
    decision: Decision | None = None  # None for a bare model
    # SHA-256 over the verified files that change an output ("" for a model not loaded from a folder):
    # two loads with one digest score alike (the Dask engine's workers check theirs against the driver's)
    digest: str = ""
    scorer: ArrayScorer | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # the logistic model and the MLP are scored from their arrays without BLAS (pipeline.model.arrays)
        self.scorer = array_scorer(self.estimator)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("classes", CONDITIONS))

    def predict_proba(self, parsed: ParsedCases) -> np.ndarray:
        """Probabilities, shape (n_cases, n_conditions), for valid parsed cases.

        Raises :class:`ModelIntegrityError` where one is not a number (NaN, infinite): a folder
        whose numbers training never gives (a weight of 1e308, its checksums rewritten) scored every
        case as NaN, and the decision layer triaged NaN."""
        if len(parsed) == 0:
            return np.empty((0, len(self.classes)))
        with np.errstate(over="ignore", invalid="ignore"):  # such numbers are told below, once, not as warnings
            proba = predict_proba(self.estimator, parsed, self.scorer)  # the same numbers in every process
        if not np.isfinite(proba).all():
            bad = np.flatnonzero(~np.isfinite(proba).all(axis=1))
            raise ModelIntegrityError(f"the model {self.source} gave probabilities that are not numbers for {len(bad):,} "
                                      f"of {len(proba):,} cases (the first is case {bad[0]:,} of the batch, counted "
                                      "from 0): its numbers are none training gives; retrain it with `kneepain train`.")
        return proba


def is_model_uri(source: object) -> bool:
    """An MLflow model URI (``models:/...``, ``runs:/...``) rather than a path."""
    return isinstance(source, str) and ":/" in source and not Path(source).exists()


def load_model(source: str | Path | LoadedModel | None = None, *, trust_pickle: bool = False,
               trusted: str | Path | None = None, check_signature: bool = True) -> LoadedModel:
    """Load a model: a models folder, an MLflow model URI (``models:/...``, ``runs:/...``,
    ``file:///...``) or the project's ``models/``.

    Every file that changes an output (the model, the manifest with the decision layer, the
    knowledge-base snapshot) is verified against ``checksums.json`` before any is used, and
    nothing is unpickled. With a trusted public key (``trusted``, or ``$KNEEPAIN_TRUSTED_KEY``) the
    folder must also be signed by it (:mod:`pipeline.model.signing`).

    Parameters
    ----------
    trust_pickle : bool, default=False
        Load a folder from an older version whose model is a pickle (``model.joblib``). Only for
        folders you produced yourself: a pickle runs code when loaded.
    trusted : path, optional
        PEM public key the folder must be signed with.
    check_signature : bool, default=True
        False: the checksums only, whatever key is trusted (to sign a folder that is not signed yet).

    Raises
    ------
    ModelIntegrityError
        If a file is missing or changed (named), the signature does not verify, the folder is an
        older pickled one (without ``trust_pickle``), or it belongs to another schema or class list.
    FileNotFoundError
        If there is no model; the message says to run ``make run``.
    """
    if isinstance(source, LoadedModel):
        return source
    _check_source(source)
    key = trusted_key(trusted) if check_signature else None
    if is_model_uri(source):
        # fetched into a folder of its own: from a local store MLflow would hand back (and write
        # into) the store's own folder; everything used is read before the folder is removed
        with tempfile.TemporaryDirectory(prefix="kneepain-mlflow-model-") as fetched, \
                _errors_naming(f"{fetched}{os.sep}", f"{source}, file "):  # the URI, not the removed download
            loaded = load_model(_mlflow_model_folder(str(source), Path(fetched)), trust_pickle=trust_pickle,
                                trusted=key, check_signature=check_signature)
        loaded.source = str(source)
        return loaded
    folder = models_dir() if source is None else Path(source)
    if source is not None and not folder.exists():  # a mistyped path is not a missing `make run`
        raise FileNotFoundError(f"{source}: no such models folder; give the folder `kneepain train` wrote, or a "
                                "models:/ URI of the registry.")
    folder = _folder_of(folder)
    if source is not None and Path(source).is_file() and not holds_model(folder):
        raise FileNotFoundError(f"{source}: is a file, not a models folder, and its folder {folder} holds no model; "
                                "give the folder `kneepain train` wrote (or a file in it), or a models:/ URI of the "
                                "registry.")
    if key is None:
        return _load_folder(folder, folder, trust_pickle)
    # signed: the signature is checked on a private copy of the folder, read once, and the model
    # loaded from that copy, so no file can change between its check and its use (a folder link
    # switched, or a file replaced, while the signature is checked)
    with tempfile.TemporaryDirectory(prefix="kneepain-signed-model-") as private:
        copy = Path(private).resolve() / "model"  # as the signature check names it
        with _errors_naming(str(copy), str(folder)):  # the folder, not the private copy
            snapshot_folder(folder.resolve(), copy)
            verify_signature(copy, key)
            return _load_folder(copy, folder, trust_pickle)


@contextmanager
def _errors_naming(temporary: str, name: str) -> Iterator[None]:
    """A model's integrity or knowledge-base error raised within, with the temporary folder it was
    read from (``temporary``, a path's prefix) named as ``name``, the source the caller gave."""
    try:
        yield
    except (ModelIntegrityError, KnowledgeBaseError) as err:
        raise type(err)(str(err).replace(temporary, name)) from err


def _load_folder(folder: Path, named: Path, trust_pickle: bool) -> LoadedModel:
    """:func:`load_model`'s verified load of the model folder ``folder``, known as ``named``."""
    verified = load_estimator(folder, trust_pickle=trust_pickle)
    manifest = verified.manifest
    if "decision" not in manifest:  # it would score probabilities alone, with no triage and no word of it
        raise ModelIntegrityError(f"{folder / MANIFEST_FILE} holds no decision layer (the triage, red flags and "
                                  "advice every folder `kneepain train` writes); refusing to load the model folder.")
    try:
        kb = knowledge_base_from_dict(load_yaml(verified.contents[KB_FILE]), where=str(folder / KB_FILE))
    except yaml.YAMLError as err:
        raise ModelIntegrityError(f"{folder / KB_FILE} is not valid YAML: {err}") from err
    decision = Decision(manifest["decision"])
    return LoadedModel(verified.estimator, manifest, str(named), kb, decision, contents_digest(verified.contents))


def contents_digest(contents: dict[str, bytes]) -> str:
    """One SHA-256 over a model folder's verified files, by name, each by its own SHA-256."""
    lines = "".join(f"{name}\t{hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(contents.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _registered_hint(uri: str, err: Exception) -> str:
    """For ``models:/NAME`` alone that MLflow did not find (it reads NAME as a logged model's id),
    how to name a registered model's version or alias instead; else nothing (a real logged
    model's id ``m-...``, or another failure such as an unreachable server)."""
    name = uri.removeprefix("models:/") if uri.startswith("models:/") else ""
    if not name or "/" in name or "@" in name or re.fullmatch(r"m-[0-9a-f]{32}", name) or "not found" not in str(err):
        return ""
    return f" (a registered model is named with its version or alias, as in models:/{name}/1 or models:/{name}@champion)"


def _store_holds(uri: str, err: Exception, listed: int = 10) -> str:
    """For a registered model's version or alias (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``)
    that MLflow did not find: the store searched, and what it holds: NAME's aliases and versions,
    or, where it has no NAME, the registered models it has (at most ``listed`` of each). Nothing
    for another URI or another failure."""
    from urllib.parse import urlsplit, urlunsplit

    import mlflow
    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"models:/([^/@]+)[/@][^/@]+", uri)
    if match is None or "not found" not in str(err).lower():
        return ""
    store = mlflow.get_tracking_uri()
    if (parts := urlsplit(store)).password:  # a password in the URI is not shown
        store = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""))
    client = mlflow.MlflowClient()
    try:
        try:
            model = client.get_registered_model(match[1])
        except MlflowException:
            names = sorted(m.name for m in client.search_registered_models(max_results=listed))
            held = f"the registered models {', '.join(names)}" if names else "no registered model"
            return f" (the MLflow store {store} holds {held})"
        aliases = ", ".join(f"@{alias} (version {version})" for alias, version in sorted(model.aliases.items())[:listed])
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{match[1]}'"))
    except MlflowException:  # the store fails now too: the first error said enough
        return ""
    shown = ", ".join(map(str, versions[-listed:])) or "none"
    if len(versions) > listed:
        shown += f" (the latest {listed} of {len(versions):,})"
    aliases = f"the aliases {aliases}" if aliases else "no alias"
    return f" (in the MLflow store {store}, {match[1]} has versions {shown} and {aliases})"


def _mlflow_model_folder(uri: str, into: Path) -> Path:
    """The project's model folder inside the MLflow model at ``uri``, downloaded, without loading the
    MLflow model: MLflow's loader would import its code and could unpickle a ``python_model.pkl``
    before any check. The folder is then loaded and verified like any other. MLflow stays out of
    the default import path."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    _use_tracking_store(uri)
    try:
        with quiet_mlflow():  # MLflow's progress bars would fill a server's log and a job's stderr
            repository = get_artifact_repository(uri)
            # only MLmodel and the model folder, not the code; where they land under ``into``
            # depends on the kind of URI (a run's adds the model's path), so MLmodel's own place is the root
            local = Path(repository.download_artifacts("MLmodel", str(into))).parent
            relative = _model_dir_relative(local)
            if relative is not None:
                repository.download_artifacts(relative, str(into))
    except (MlflowException, OSError) as err:
        raise ModelIntegrityError(f"{uri}: cannot fetch the MLflow model: {' '.join(str(err).split())[:300]}"
                                  f"{_registered_hint(uri, err) or _store_holds(uri, err)}") from err
    folder = model_folder_in(local) if local.resolve().is_relative_to(into.resolve()) else None
    if folder is None or not ((folder / CHECKSUMS_FILE).exists() or (folder / MANIFEST_FILE).exists()):
        raise ModelIntegrityError(f"{uri} is not a kneepain model (no {ARTIFACT_KEY} folder with a manifest in it).")
    return folder


def _use_tracking_store(uri: str) -> None:
    """Point MLflow at the project's tracking store, refusing a local store that does not exist
    (MLflow would create an empty one)."""
    import mlflow

    from pipeline.core.paths import sqlite_store
    from pipeline.core.tracking_server import tracking_uri

    tracking = tracking_uri()
    store = sqlite_store(tracking)
    if store is not None and uri.startswith(("models:/", "runs:/")) and not store.is_file():
        raise ModelIntegrityError(f"{uri}: no MLflow store at {store} (run `make run` in the project folder, or set "
                                  "MLFLOW_TRACKING_URI to your tracking server).")
    mlflow.set_tracking_uri(tracking)


def pinned_uri(uri: str) -> str:
    """``models:/<name>@<alias>`` as the version the alias names now (``models:/<name>/<version>``);
    any other source as it is. A server whose workers load the model again later (a worker that
    restarts) then loads the same version, wherever the alias has moved meanwhile."""
    match = re.fullmatch(r"models:/([^/@]+)@([^/@]+)", uri)
    if match is None:
        return uri
    import mlflow
    from mlflow.exceptions import MlflowException

    _use_tracking_store(uri)
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(match[1], match[2]).version
    except MlflowException as err:
        raise ModelIntegrityError(f"{uri}: cannot find the version the alias names: "
                                  f"{' '.join(str(err).split())[:300]}{_store_holds(uri, err)}") from err
    return f"models:/{match[1]}/{version}"


def _model_dir_relative(local: Path) -> str | None:
    """Where ``MLmodel`` in ``local`` says the project's model folder is, relative to it (read as
    data), or None when it says nothing of one or names a place outside ``local``."""
    try:
        mlmodel = load_yaml((local / "MLmodel").read_text(encoding="utf-8"))
        relative = str(mlmodel["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    inside = (local / relative).resolve()
    return relative if inside.is_relative_to(local.resolve()) and inside != local.resolve() else None


def model_folder_in(local: Path) -> Path | None:
    """The project's model folder inside a downloaded MLflow model (read from ``MLmodel`` as data,
    nothing imported or unpickled), or None when ``local`` is not a model logged by
    :func:`pipeline.serve.mlflow_model.log_pyfunc`."""
    relative = _model_dir_relative(local)
    folder = None if relative is None else (local / relative).resolve()
    return folder if folder is not None and folder.is_dir() else None


_CACHE: dict[tuple, LoadedModel] = {}


def get_model(model: str | Path | LoadedModel | None = None, *, trust_pickle: bool = False) -> LoadedModel:
    """Load a model once and cache it (a models folder is reloaded if one of its files changes)."""
    if isinstance(model, LoadedModel):
        return model
    _check_source(model)
    signer = trusted_key()
    if is_model_uri(model):
        key: tuple = ("uri", model, trust_pickle, signer)
    else:
        folder = _folder_of(Path(model) if model is not None else models_dir())
        key = ("dir", str(folder.resolve()), _stamps(folder), trust_pickle, signer)
    if key not in _CACHE:
        _CACHE[key] = load_model(model, trust_pickle=trust_pickle)
    return _CACHE[key]


def _folder_of(path: Path) -> Path:
    """The model folder a path names: a file of it stands for it, and an MLflow model's folder
    (with ``MLmodel``) for the model folder inside it."""
    folder = path.parent if path.is_file() else path
    if (folder / "MLmodel").is_file() and (inner := model_folder_in(folder)) is not None:
        return inner
    return folder


def _check_source(source) -> None:
    """Refuse a model source that is neither a path, a URI nor None, or an empty one."""
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"model must be a models folder, an MLflow model URI or a LoadedModel, got "
                        f"{type(source).__name__}.")
    if source is not None and not str(source).strip():
        raise ValueError("model == '': give a models folder or an MLflow model URI, or leave it out for the "
                         "project's models/.")


def _stamps(folder: Path) -> tuple | None:
    """Every file of a models folder with its size, inode and times: an edit to any of them is a new
    key, also one that keeps the size and sets the modification time back (``cp -p``, ``rsync -a``
    and ``tar x`` do): no tool sets the status-change time, which every write moves."""
    try:
        with os.scandir(folder) as entries:
            return tuple(sorted((e.name, e.inode(), (s := e.stat()).st_size, s.st_mtime_ns, s.st_ctime_ns)
                                for e in entries if e.is_file()))
    except OSError:  # no such folder: load_model says so
        return None


def clear_model_cache() -> None:
    _CACHE.clear()
