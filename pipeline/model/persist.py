"""The model folder on disk: the fitted estimator, its manifest and the knowledge-base snapshot.

A joblib file runs code when it is loaded, so :func:`load_estimator` checks the file's hash
against ``manifest.json`` *before* unpickling and refuses a file that does not match. Turning a
folder into a scoring model (with its decision layer) is :func:`pipeline.serve.loading.load_model`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import sha256_file, tmp_path, write_json_atomic, write_text_atomic
from pipeline.core.schema import CONDITIONS, SCHEMA_VERSION

__all__ = ["KB_FILE", "MANIFEST_FILE", "MODEL_FILE", "ModelIntegrityError", "library_versions", "load_estimator",
           "save_model", "update_manifest"]

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
KB_FILE = "knowledge_base.yaml"
_TRACKED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "joblib")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        versions[name] = metadata.version(name)
    return versions


def save_model(estimator: Any, out_dir: str | Path, manifest: dict, *, kb_path: str | Path | None = None) -> dict:
    """Write ``model.joblib`` and ``manifest.json`` (with the file's SHA-256) into ``out_dir``.

    With ``kb_path``, the knowledge base is copied beside the model (the decision layer scores
    atypicality with it) and its SHA-256 recorded. The model file is written under a temporary
    name and renamed; the manifest last, so a reader never sees a manifest that points at a
    half-written model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kb_path is not None:
        write_text_atomic(out_dir / KB_FILE, Path(kb_path).read_text(encoding="utf-8"))
        manifest = {**manifest, "knowledge_base_sha256": sha256_file(out_dir / KB_FILE)}
    tmp = tmp_path(out_dir / MODEL_FILE)
    joblib.dump(estimator, tmp, compress=3)
    full = {
        "model_file": MODEL_FILE,
        "sha256": sha256_file(tmp),
        "schema_version": SCHEMA_VERSION,
        "classes": list(CONDITIONS),
        "library_versions": library_versions(),
        **manifest,
    }
    os.replace(tmp, out_dir / MODEL_FILE)
    write_json_atomic(out_dir / MANIFEST_FILE, full)
    return full


def update_manifest(folder: str | Path, extra: dict) -> dict:
    """Add keys to a model's manifest (the model file and its hash are untouched)."""
    path = Path(folder) / MANIFEST_FILE
    manifest = {**json.loads(path.read_text(encoding="utf-8")), **extra}
    write_json_atomic(path, manifest)
    return manifest


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise ModelIntegrityError(f"{path} is missing: a model is loaded only with the manifest written "
                                  "when it was trained.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelIntegrityError(f"{path} is not valid JSON: {err}") from err
    for key in ("sha256", "classes", "schema_version"):
        if key not in manifest:
            raise ModelIntegrityError(f"{path} has no {key!r}: not a kneepain model manifest.")
    return manifest


def load_estimator(folder: Path) -> tuple[Any, dict]:
    """The fitted estimator of a model folder and its manifest, verified before unpickling.

    Raises
    ------
    ModelIntegrityError
        If the model file's SHA-256 differs from the manifest, or the manifest belongs to another
        schema or class list, or the file was written by an older layout of this package.
    FileNotFoundError
        If there is no model; the message says to run ``make run``.
    """
    model_path = folder / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(f"no model at {model_path}: run `make run` (or `kneepain train`) first.")
    manifest = read_manifest(folder)
    data = model_path.read_bytes()  # hashed and unpickled from the same bytes: no swap in between
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise ModelIntegrityError(
            f"{model_path} has SHA-256 {digest[:16]}..., but {folder / MANIFEST_FILE} expects "
            f"{manifest['sha256'][:16]}...: the file was changed or belongs to another model; refusing to load it.")
    if manifest["schema_version"] != SCHEMA_VERSION or list(manifest["classes"]) != list(CONDITIONS):
        raise ModelIntegrityError(
            f"{folder / MANIFEST_FILE} is for schema {manifest['schema_version']} with classes "
            f"{manifest['classes']}; this code has schema {SCHEMA_VERSION} with classes {list(CONDITIONS)}.")
    now = library_versions()
    then = manifest.get("library_versions", {})
    differ = {k: (then[k], now[k]) for k in ("scikit-learn", "numpy", "joblib") if k in then and then[k] != now.get(k)}
    if differ:
        warnings.warn("the model was saved with other library versions ("
                      + ", ".join(f"{k} {a}, now {b}" for k, (a, b) in differ.items())
                      + "); predictions may differ or fail. Retrain with `kneepain train`.", UserWarning, stacklevel=3)
    try:
        estimator = joblib.load(io.BytesIO(data))
    except (ModuleNotFoundError, AttributeError) as err:  # classes that moved or are gone
        raise ModelIntegrityError(
            f"{model_path} was written by an older version of kneepain ({err}); retrain it with "
            "`kneepain train` (or `make run`).") from err
    return estimator, manifest
