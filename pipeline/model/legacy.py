"""Model folders written before the pickle-free format: a joblib ``model.joblib`` and no checksums.

A pickle runs code when it is loaded, and a hash written beside it proves only that the two
files agree, not who wrote them. Such a folder is therefore refused with a message to retrain,
unless the caller passes ``trust_pickle=True`` (``kneepain score --trust-pickle``) for a folder
they produced themselves; then the old checks run (the model's SHA-256 against the manifest and
the knowledge-base snapshot's) before it is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import load_json

__all__ = ["LEGACY_MODEL_FILE", "load_legacy"]

LEGACY_MODEL_FILE = "model.joblib"


def _check(path: Path, data: bytes, expected: Any, manifest_path: Path) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ModelIntegrityError(f"{path} has SHA-256 {digest[:16]}..., but {manifest_path} expects "
                                  f"{str(expected)[:16]}...: the file was changed or belongs to another model; "
                                  "refusing to load it.")


def load_legacy(folder: Path, manifest_file: str, kb_file: str, *, trust_pickle: bool
                ) -> tuple[Any, dict, dict[str, bytes]]:
    """(estimator, manifest, {file: bytes}) of an older, pickled folder; only with ``trust_pickle``."""
    model_path, manifest_path = folder / LEGACY_MODEL_FILE, folder / manifest_file
    if not trust_pickle:
        raise ModelIntegrityError(
            f"{model_path} is a pickle from an older version of kneepain, and a pickle can run code when it is "
            "loaded; it is not loaded. Retrain with `kneepain train` (or `make run`), or, for a folder you produced "
            "yourself, pass --trust-pickle (trust_pickle=True).")
    try:
        manifest = load_json(manifest_path.read_bytes())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{manifest_path} is missing or not valid JSON ({err}).") from err
    data = model_path.read_bytes()  # hashed and unpickled from the same bytes: no swap in between
    _check(model_path, data, manifest.get("sha256"), manifest_path)
    contents = {manifest_file: manifest_path.read_bytes(), LEGACY_MODEL_FILE: data}
    if "decision" in manifest:
        kb_path = folder / kb_file
        kb = kb_path.read_bytes() if kb_path.exists() else b""
        _check(kb_path, kb, manifest.get("knowledge_base_sha256"), manifest_path)
        contents[kb_file] = kb
    import joblib

    try:
        estimator = joblib.load(io.BytesIO(data))
    except (ModuleNotFoundError, AttributeError) as err:  # classes that moved or are gone
        raise ModelIntegrityError(f"{model_path} was written by an older version of kneepain ({err}); retrain it "
                                  "with `kneepain train` (or `make run`).") from err
    return estimator, manifest, contents
