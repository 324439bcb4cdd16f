"""The model folder on disk: the fitted model, its manifest, the knowledge-base snapshot and their checksums.

Nothing in a folder written here runs code when it is loaded: the model is arrays in JSON or a
skops file read with an explicit list of trusted types (:mod:`pipeline.model.modelfile`).
``checksums.json`` covers every file scoring reads (:mod:`pipeline.model.integrity`), and
:func:`load_estimator` verifies them all before it uses any. A folder from an older version
(a pickled ``model.joblib``) is refused with a message to retrain, or loaded behind an explicit
``trust_pickle`` (:mod:`pipeline.model.legacy`). Turning a folder into a scoring model (with its
decision layer) is :func:`pipeline.serve.loading.load_model`.
"""

from __future__ import annotations

import json
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import load_json, write_bytes_atomic, write_report_json, write_text_atomic
from pipeline.core.schema import CONDITIONS, SCHEMA_VERSION
from pipeline.model.integrity import CHECKSUMS_FILE, seal_folder, verify_folder
from pipeline.model.legacy import LEGACY_MODEL_FILE, load_legacy
from pipeline.model.modelfile import ARRAYS_FILE, SKOPS_FILE, model_file_bytes, read_model_file

__all__ = ["KB_FILE", "MANIFEST_FILE", "ModelIntegrityError", "VerifiedModel", "data_folder", "foreign_manifest",
           "holds_model", "library_versions", "load_estimator", "save_model", "update_manifest"]

MANIFEST_FILE = "manifest.json"
KB_FILE = "knowledge_base.yaml"
_MODEL_FILES = (ARRAYS_FILE, SKOPS_FILE)
_TRACKED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "skops")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        versions[name] = metadata.version(name)
    return versions


def _sealed_files(folder: Path, manifest: dict) -> list[str]:
    return [MANIFEST_FILE, manifest["model_file"], *([KB_FILE] if (folder / KB_FILE).exists() else [])]


def save_model(estimator: Any, out_dir: str | Path, manifest: dict, *, kb_path: str | Path) -> dict:
    """Write the model file, ``manifest.json`` and ``checksums.json`` into ``out_dir``.

    ``manifest`` holds the decision layer (``decision``), and ``kb_path``'s knowledge base is copied
    beside the model (the decision layer scores atypicality with it): loading refuses a folder
    without either. Every file is written under a temporary name and renamed, and the checksums
    last, so a reader never sees a folder whose checksums match a half-written one.
    """
    if "decision" not in manifest:
        raise ValueError("manifest has no 'decision': a model folder is loaded only with its decision layer "
                         "(the triage, red flags and advice).")
    out_dir = Path(out_dir)
    model_file, data = model_file_bytes(estimator)  # refused before the folder is touched
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CHECKSUMS_FILE).unlink(missing_ok=True)  # the folder is not loadable until it is sealed again
    write_text_atomic(out_dir / KB_FILE, Path(kb_path).read_text(encoding="utf-8"))
    write_bytes_atomic(out_dir / model_file, data)
    for other in (*_MODEL_FILES, LEGACY_MODEL_FILE):
        if other != model_file:
            (out_dir / other).unlink(missing_ok=True)
    full = {"model_file": model_file, "schema_version": SCHEMA_VERSION, "classes": list(CONDITIONS),
            "library_versions": library_versions(), **manifest}
    write_report_json(out_dir / MANIFEST_FILE, full)
    seal_folder(out_dir, _sealed_files(out_dir, full))
    return full


def update_manifest(folder: str | Path, extra: dict) -> dict:
    """Add keys to a verified model folder's manifest and seal the folder again."""
    folder = Path(folder)
    contents = verify_folder(folder, [MANIFEST_FILE])
    manifest = {**json.loads(contents[MANIFEST_FILE]), **extra}
    write_report_json(folder / MANIFEST_FILE, manifest)  # strict JSON: a figure too few cases give is null
    seal_folder(folder, _sealed_files(folder, manifest))
    return manifest


def _manifest(path: Path, data: bytes) -> dict:
    try:
        manifest = load_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise ModelIntegrityError(f"{path} is not a kneepain model manifest.")
    for key in ("model_file", "classes", "schema_version"):
        if key not in manifest:
            raise ModelIntegrityError(f"{path} has no {key!r}: not a kneepain model manifest.")
    return manifest


class VerifiedModel:
    """A model folder after its checks: the estimator, the manifest and the verified bytes of each file."""

    def __init__(self, estimator: Any, manifest: dict, contents: dict[str, bytes]):
        self.estimator, self.manifest, self.contents = estimator, manifest, contents


def holds_model(folder: Path) -> bool:
    """Whether ``folder`` holds a model of some kind, whole or not (a broken one is refused by
    :func:`load_estimator`, saying what is wrong, rather than said to be missing)."""
    return _holds_model_file(folder) or (folder / MANIFEST_FILE).exists()


def data_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like a data folder, not a model's: a ``manifest.json`` that is no
    model's (:func:`foreign_manifest`), and no checksums or model file beside it."""
    return foreign_manifest(folder) and not _holds_model_file(folder)


def _holds_model_file(folder: Path) -> bool:
    """Whether ``folder`` holds a checksums file or a model file (of any format)."""
    return any((folder / name).exists() for name in (CHECKSUMS_FILE, LEGACY_MODEL_FILE, *_MODEL_FILES))


def foreign_manifest(folder: Path) -> bool:
    """Whether ``folder`` holds a ``manifest.json`` that is no model's (a data folder's record of how
    its splits were generated, most often): one a model's would replace, or that makes the folder
    look like a model's to :func:`holds_model`."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        found = load_json(manifest.read_bytes())
    except (OSError, ValueError):
        found = None
    return not (isinstance(found, dict) and "model_file" in found)


def load_estimator(folder: Path, *, trust_pickle: bool = False) -> VerifiedModel:
    """The fitted model of a folder, its manifest and its files' bytes, all verified before use.

    Raises
    ------
    ModelIntegrityError
        If ``checksums.json`` is missing or a file it covers is missing or changed, the manifest
        belongs to another schema or class list, the model file is not a valid model, or the folder
        is an older, pickled one and ``trust_pickle`` is false. The message names the file.
    FileNotFoundError
        If there is no model; the message says to run ``make run``.
    """
    if not (folder / CHECKSUMS_FILE).exists():
        if (folder / LEGACY_MODEL_FILE).exists():
            estimator, manifest, contents = load_legacy(folder, MANIFEST_FILE, KB_FILE, trust_pickle=trust_pickle)
            _check_schema(folder, manifest)
            warn_on_other_versions(manifest, ("scikit-learn", "numpy", "joblib"))
            return VerifiedModel(estimator, manifest, contents)
        if data_folder(folder):
            raise FileNotFoundError(f"no model at {folder}: its {MANIFEST_FILE} is not a model's (a data folder's?); "
                                    "give a models folder (`--model DIR`, `predict(..., model=DIR)`).")
        if not holds_model(folder):
            raise FileNotFoundError(f"no model at {folder}: run `make run` (or `kneepain train`) first, restore the "
                                    "last one DVC recorded (`dvc checkout models`), or give a models folder "
                                    "(`--model DIR`, `predict(..., model=DIR)`).")
    contents = verify_folder(folder, [MANIFEST_FILE])
    manifest = _manifest(folder / MANIFEST_FILE, contents[MANIFEST_FILE])
    model_file = manifest["model_file"]
    if model_file not in _MODEL_FILES or model_file not in contents:
        raise ModelIntegrityError(f"{folder / MANIFEST_FILE} names the model file {model_file!r}, which is not a "
                                  f"checked model file ({' or '.join(_MODEL_FILES)}); refusing to load it.")
    if "decision" in manifest and KB_FILE not in contents:
        raise ModelIntegrityError(f"{folder / CHECKSUMS_FILE} does not cover {KB_FILE}, which the decision layer "
                                  "needs; refusing to load the model folder.")
    _check_schema(folder, manifest)
    if model_file == SKOPS_FILE:  # arrays do not depend on library versions; a skops object does
        warn_on_other_versions(manifest, ("scikit-learn", "numpy", "skops"))
    return VerifiedModel(read_model_file(folder / model_file, contents[model_file]), manifest, contents)


def _check_schema(folder: Path, manifest: dict) -> None:
    if manifest.get("schema_version") != SCHEMA_VERSION or list(manifest.get("classes", [])) != list(CONDITIONS):
        raise ModelIntegrityError(
            f"{folder / MANIFEST_FILE} is for schema {manifest.get('schema_version')} with classes "
            f"{manifest.get('classes')}; this code has schema {SCHEMA_VERSION} with classes {list(CONDITIONS)}.")


def warn_on_other_versions(manifest: dict, libraries: tuple[str, ...]) -> None:
    now = library_versions() | {k: metadata.version(k) for k in libraries if k not in _TRACKED_LIBRARIES}
    then = manifest.get("library_versions", {})
    differ = {k: (then[k], now[k]) for k in libraries if k in then and then[k] != now.get(k)}
    if differ:
        warnings.warn("the model was saved with other library versions ("
                      + ", ".join(f"{k} {a}, now {b}" for k, (a, b) in differ.items())
                      + "); predictions may differ or fail. Retrain with `kneepain train`.", UserWarning, stacklevel=4)
