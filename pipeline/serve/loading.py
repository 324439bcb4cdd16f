"""A scoring model: the verified estimator of a model folder with its decision layer.

:func:`load_model` takes a models folder, an MLflow model URI or ``None`` (the project's
``models/``); :func:`get_model` loads once and caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import sha256_file
from pipeline.core.knowledge import KnowledgeBase, load_knowledge_base
from pipeline.core.parsing import ParsedCases
from pipeline.core.paths import models_dir
from pipeline.core.schema import CONDITIONS
from pipeline.decision.layer import Decision
from pipeline.model.arrays import ArrayScorer, array_scorer, predict_proba
from pipeline.model.persist import KB_FILE, MANIFEST_FILE, load_estimator

__all__ = ["LoadedModel", "clear_model_cache", "get_model", "is_model_uri", "load_model"]


@dataclass
class LoadedModel:
    """A fitted estimator over case features plus its manifest. Classes are :data:`CONDITIONS`."""

    estimator: Any
    manifest: dict = field(default_factory=dict)
    source: str = ""
    kb: KnowledgeBase | None = None  # the snapshot the decision layer uses (None for a bare model)
    decision: Decision | None = None  # None for a bare model
    scorer: ArrayScorer | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # the logistic model and the MLP are scored from their arrays without BLAS (pipeline.model.arrays)
        self.scorer = array_scorer(self.estimator)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("classes", CONDITIONS))

    def predict_proba(self, parsed: ParsedCases) -> np.ndarray:
        """Probabilities, shape (n_cases, n_conditions), for valid parsed cases."""
        if len(parsed) == 0:
            return np.empty((0, len(self.classes)))
        return predict_proba(self.estimator, parsed, self.scorer)  # the same numbers in every process


def is_model_uri(source: object) -> bool:
    """An MLflow model URI (``models:/...``, ``runs:/...``) rather than a path."""
    return isinstance(source, str) and ":/" in source and not Path(source).exists()


def load_model(source: str | Path | LoadedModel | None = None) -> LoadedModel:
    """Load a model: a models folder, an MLflow model URI (``models:/...``, ``runs:/...``) or the
    project's ``models/``.

    Raises
    ------
    ModelIntegrityError
        If a file of the folder differs from the manifest (checked before unpickling), or the
        manifest belongs to another schema or class list.
    FileNotFoundError
        If there is no model; the message says to run ``make run``.
    """
    if isinstance(source, LoadedModel):
        return source
    if is_model_uri(source):
        return _load_from_mlflow(str(source))
    folder = models_dir() if source is None else Path(source)
    if folder.is_file():
        folder = folder.parent
    estimator, manifest = load_estimator(folder)
    kb = decision = None
    if "decision" in manifest:
        kb_file = folder / KB_FILE
        if not kb_file.exists() or sha256_file(kb_file) != manifest.get("knowledge_base_sha256"):
            raise ModelIntegrityError(f"{kb_file} is missing or does not match the manifest's knowledge_base_sha256.")
        kb, decision = load_knowledge_base(kb_file), Decision(manifest["decision"])
    return LoadedModel(estimator, manifest, str(folder), kb, decision)


def _load_from_mlflow(uri: str) -> LoadedModel:
    """The project's model behind an MLflow model URI; the pyfunc loads its folder with
    :func:`load_model`, so the same checks apply. MLflow stays out of the default import path."""
    import mlflow

    from pipeline.core.paths import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())
    model = mlflow.pyfunc.load_model(uri).unwrap_python_model().model
    if not isinstance(model, LoadedModel):
        raise ModelIntegrityError(f"{uri} is not a kneepain model (its pyfunc holds {type(model).__name__}).")
    return model


_CACHE: dict[tuple, LoadedModel] = {}


def get_model(model: str | Path | LoadedModel | None = None) -> LoadedModel:
    """Load a model once and cache it (a models folder is reloaded if its manifest changes)."""
    if isinstance(model, LoadedModel):
        return model
    if is_model_uri(model):
        key: tuple = ("uri", model)
    else:
        folder = Path(model) if model is not None else models_dir()
        manifest = folder / MANIFEST_FILE
        stamp = manifest.stat().st_mtime_ns if manifest.exists() else None
        key = ("dir", str(folder.resolve()), stamp)
    if key not in _CACHE:
        _CACHE[key] = load_model(model)
    return _CACHE[key]


def clear_model_cache() -> None:
    _CACHE.clear()
