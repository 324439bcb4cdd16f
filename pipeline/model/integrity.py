"""The model folder's checksums: every file that changes an output, verified before any is used.

``checksums.json`` lists the SHA-256 of each file of the folder that scoring reads: the model
file, ``manifest.json`` (with the decision layer: triage costs, red flags, advice, conformal and
atypical thresholds, and the screen) and the knowledge-base snapshot. :func:`verify_folder` reads
each listed file once, checks it, and hands back those same bytes, so what is used is what was
checked. A missing or changed file is refused with :class:`ModelIntegrityError` naming it.

Checksums catch a changed or damaged file, not a deliberate one whose writer also rewrote
``checksums.json``: for that, sign the folder (:mod:`pipeline.model.signing`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.errors import ModelIntegrityError
from pipeline.core.files import load_json, read_regular_file, sha256_file, write_json_atomic

__all__ = ["CHECKSUMS_FILE", "read_folder_file", "seal_folder", "verify_folder"]

CHECKSUMS_FILE = "checksums.json"
_FORMAT = "kneepain-model-checksums"
_SHA256_HEX = re.compile("[0-9a-fA-F]{64}")
# no file a model folder holds comes near this (the largest, a gradient-boosting model, is a few
# MB); a file over it is refused before it is read, not hashed whole first
FOLDER_FILE_MAX_BYTES = 256 * 2**20


def seal_folder(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """Write ``checksums.json`` for the files ``names`` of ``folder``; return {name: SHA-256}."""
    files = {name: sha256_file(folder / name) for name in sorted(set(names))}
    write_json_atomic(folder / CHECKSUMS_FILE, {"format": _FORMAT, "algorithm": "sha256", "files": files})
    return files


def _listed(folder: Path) -> dict[str, str]:
    path = folder / CHECKSUMS_FILE
    if not path.exists() and not path.is_symlink():
        raise ModelIntegrityError(f"{path} is missing: a model folder is loaded only with the checksums written "
                                  "when it was trained; retrain with `kneepain train` (or `make run`).")
    try:  # a regular file, as every file of the folder is read (a folder or a FIFO named so is refused)
        data = load_json(read_folder_file(path, folder))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{path} is not valid JSON ({err}); refusing to load the model folder.") from err
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("algorithm") != "sha256" \
            or not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelIntegrityError(f"{path} is not a kneepain checksums file; refusing to load the model folder.")
    for name, digest in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or "\x00" in name:
            raise ModelIntegrityError(f"{path} lists {name!r}, which is not a file name inside the folder.")
        if _SHA256_HEX.fullmatch(digest) is None:
            raise ModelIntegrityError(f"{path} gives {digest[:80]!r} for {name}, which is not a SHA-256 (64 hexadecimal "
                                      "digits); refusing to load the model folder.")
    return {name: digest.lower() for name, digest in files.items()}  # hexadecimal is read in either case


def read_folder_file(path: Path, folder: Path, *, follow_links: bool = True) -> bytes:
    """The bytes of the file ``path`` of the model folder ``folder``.

    Raises
    ------
    ModelIntegrityError
        ``path`` is missing, cannot be read, is not a regular file (a FIFO, whose reading would
        block the load for good; a link, unless ``follow_links``), or is larger than
        ``FOLDER_FILE_MAX_BYTES`` (checked before reading). The message names it.
    """
    try:
        return read_regular_file(path, follow_links=follow_links, max_bytes=FOLDER_FILE_MAX_BYTES)
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path} is missing from the model folder; refusing to load {folder}.") from None
    except OSError as err:
        raise ModelIntegrityError(f"{path}: cannot read: {err.strerror or err}; refusing to load {folder}.") from err
    except ValueError as err:
        raise ModelIntegrityError(f"{path} is {err}; refusing to load {folder}.") from err


def verify_folder(folder: Path, required: Iterable[str] = ()) -> dict[str, bytes]:
    """The bytes of every file ``checksums.json`` lists, each checked against its SHA-256.

    Raises
    ------
    ModelIntegrityError
        ``checksums.json`` is missing or invalid, does not list a ``required`` file, or a listed
        file is missing or has changed. The message names the file.
    """
    files = _listed(folder)
    for name in required:
        if name not in files:
            raise ModelIntegrityError(f"{folder / CHECKSUMS_FILE} does not cover {name}; refusing to load the "
                                      "model folder.")
    contents = {}
    for name, expected in files.items():
        path = folder / name
        data = read_folder_file(path, folder)
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise ModelIntegrityError(
                f"{path} has changed since the model was saved (SHA-256 {digest[:16]}..., {CHECKSUMS_FILE} expects "
                f"{expected[:16]}...); refusing to load the model folder.")
        contents[name] = data
    return contents
