"""Persisting the model with a manifest, and loading it only when its SHA-256 matches.

A joblib file runs code when it is loaded, so :func:`load_model` checks the file's hash against
``manifest.json`` *before* unpickling and refuses a file that does not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from .linear import LinearScorer, linear_scorer, predict_proba
from .io import sha256_file, write_json_atomic, write_text_atomic
from .schema import CONDITIONS, SCHEMA_VERSION, ParsedCases

__all__ = ["LoadedModel", "ModelIntegrityError", "MODELS_DIR", "MODEL_FILE", "MANIFEST_FILE",
           "library_versions", "load_model", "save_model", "update_manifest"]

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
KB_FILE = "knowledge_base.yaml"
_TRACKED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "joblib")


class ModelIntegrityError(RuntimeError):
    """The model file does not match its manifest (or the manifest is missing or foreign)."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        versions[name] = metadata.version(name)
    return versions


@dataclass
class LoadedModel:
    """A fitted estimator over case features plus its manifest. Classes are :data:`CONDITIONS`."""

    estimator: Any
    manifest: dict = field(default_factory=dict)
    source: str = ""
    kb: Any = None  # the KnowledgeBase snapshot the decision layer uses (None for a bare model)
    decision: Any = None  # pipeline.decision.Decision, or None for a bare model
    scorer: LinearScorer | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # the logistic model is scored from its arrays without BLAS (pipeline.linear)
        self.scorer = linear_scorer(self.estimator)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("classes", CONDITIONS))

    def predict_proba(self, parsed: ParsedCases) -> np.ndarray:
        """Probabilities, shape (n_cases, n_conditions), for valid parsed cases."""
        if len(parsed) == 0:
            return np.empty((0, len(self.classes)))
        return predict_proba(self.estimator, parsed, self.scorer)  # the same numbers in every process


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
    tmp = out_dir / (MODEL_FILE + ".tmp")
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


def _read_manifest(folder: Path) -> dict:
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


def load_model(source: str | Path | LoadedModel | None = None) -> LoadedModel:
    """Load a model: a models folder, an MLflow model URI (``models:/...``, ``runs:/...``) or the
    project's ``models/``.

    Raises
    ------
    ModelIntegrityError
        If the model file's SHA-256 differs from the manifest (checked before unpickling), or the
        manifest belongs to another schema or class list.
    FileNotFoundError
        If there is no model; the message says to run ``make run``.
    """
    if isinstance(source, LoadedModel):
        return source
    if source is None:
        folder = MODELS_DIR
    elif isinstance(source, str) and ":/" in source and not Path(source).exists():
        from .serving import load_from_mlflow  # MLflow stays out of the default import path

        return load_from_mlflow(source)
    else:
        folder = Path(source)
    if folder.is_file():
        folder = folder.parent
    model_path = folder / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(f"no model at {model_path}: run `make run` (or `kneepain train`) first.")
    manifest = _read_manifest(folder)
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
                      + "); predictions may differ or fail. Retrain with `kneepain train`.", UserWarning, stacklevel=2)
    kb = decision = None
    if "decision" in manifest:
        from .decision import Decision
        from .knowledge import load_knowledge_base

        kb_file = folder / KB_FILE
        if not kb_file.exists() or sha256_file(kb_file) != manifest.get("knowledge_base_sha256"):
            raise ModelIntegrityError(f"{kb_file} is missing or does not match the manifest's knowledge_base_sha256.")
        kb, decision = load_knowledge_base(kb_file), Decision(manifest["decision"])
    return LoadedModel(joblib.load(io.BytesIO(data)), manifest, str(folder), kb, decision)
