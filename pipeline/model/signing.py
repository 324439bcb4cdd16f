"""Authenticity of a model folder: signed with a private key, verified with a trusted public key.

Checksums (:mod:`pipeline.model.integrity`) catch a changed file; anyone can write new ones.
A signature made with a private key that only the model's producer holds proves where the folder
came from. Signing and verifying use the OpenSSF ``model-signing`` library (the ``signing``
extra) in its private-key mode, which works offline: it hashes every file of the folder into an
in-toto statement and signs it (a Sigstore bundle in ``model.sig``), so a changed, added or
removed file breaks the signature. Keys are elliptic-curve (P-256, P-384 or P-521) PEM files::

    openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem
    openssl ec -in signing-key.pem -pubout -out signing-key.pub

When a trusted public key is configured (``KNEEPAIN_TRUSTED_KEY``, or ``trusted_key=``), every
model folder must carry a valid signature by it, or it is refused before anything in it is read.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pipeline.core.errors import ModelIntegrityError
from pipeline.model.integrity import read_folder_file

__all__ = ["MAX_FOLDER_DEPTH", "SIGNATURE_FILE", "TRUSTED_KEY_ENV", "sign_folder", "snapshot_folder", "trusted_key",
           "verify_signature"]

SIGNATURE_FILE = "model.sig"
TRUSTED_KEY_ENV = "KNEEPAIN_TRUSTED_KEY"
#: the deepest nesting of folders a signed model folder may hold
MAX_FOLDER_DEPTH = 16


def trusted_key(key: str | Path | None = None) -> Path | None:
    """The trusted public key: ``key``, else ``$KNEEPAIN_TRUSTED_KEY``, else None (no signature required)."""
    chosen = key if key is not None else os.environ.get(TRUSTED_KEY_ENV)
    if chosen is None:
        return None
    where = f"${TRUSTED_KEY_ENV}" if key is None else "the trusted key"
    if not str(chosen).strip():  # set from an empty variable, say: not a silent "sign nothing"
        raise ModelIntegrityError(f"{where} is set but empty: give the PEM public key models must be signed with, or "
                                  f"unset it to load folders that are not signed.")
    path = Path(chosen)
    if not path.is_file():
        raise ModelIntegrityError(f"{path} ({where}) is not a file; give the PEM public key models must be signed with.")
    return path


def _library():
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as err:
        raise ModelIntegrityError("signing and verifying model folders needs the `signing` extra: "
                                  "pip install 'kneepain[signing]'") from err
    return hashing, signing, verifying


def _hashing(hashing):
    # relative to the folder, as the library reads an ignored path (it joins it to the folder and
    # drops one outside it: ``models/model.sig`` became ``models/models/model.sig``)
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def sign_folder(folder: str | Path, private_key: str | Path, *, password: str | bytes | None = None) -> Path:
    """Sign every file of ``folder`` with ``private_key`` (``password``: an encrypted key's, as text
    or bytes); the signature goes to ``folder/model.sig``. A link to the folder signs the folder."""
    folder = Path(folder).resolve()
    hashing, signing, _ = _library()
    signature = folder / SIGNATURE_FILE
    secret = password.encode("utf-8") if isinstance(password, str) else password
    with tempfile.TemporaryDirectory(prefix="kneepain-sign-") as scratch:
        try:  # what loading refuses (folders nested too deep, a FIFO) is not signed either
            snapshot_folder(folder, Path(scratch) / "model")
        except ModelIntegrityError as err:
            raise ModelIntegrityError(f"cannot sign {folder}, which loading would refuse: {err}") from err
    try:
        _check_elliptic(Path(private_key), secret)
        (signing.Config().use_elliptic_key_signer(private_key=Path(private_key), password=secret)
         .set_hashing_config(_hashing(hashing)).sign(folder, signature))
    except (ValueError, OSError, TypeError) as err:
        raise ModelIntegrityError(f"cannot sign {folder} with {private_key}: {err}") from err
    return signature


def _check_elliptic(private_key: Path, password: bytes | None) -> None:
    """Raise ``ValueError`` unless ``private_key`` is an elliptic-curve private key (an RSA key
    failed deep in the signing library, on a missing attribute)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_key.read_bytes(), password=password)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise ValueError(f"the key is {kind}, not elliptic-curve (P-256, P-384 or P-521: see docs/model-files.md)")


def snapshot_folder(folder: Path, into: Path) -> None:
    """Copy the model folder ``folder`` to ``into`` (which must not exist), each file read once:
    regular files and folders as they are, a link as a link (which the signature refuses), and
    anything else (a FIFO, a device) refused, since reading it could block or never end. Folders
    nested more than ``MAX_FOLDER_DEPTH`` deep are refused (a model folder needs none: ``kneepain
    train`` writes files only), and the walk keeps a list of the folders left rather than
    recursing, so that no nesting raises a ``RecursionError``, here or in removing the copy.

    Raises
    ------
    ModelIntegrityError
        A file is not a regular file, folders are nested too deep, or the folder cannot be read or
        copied; the message names the path.
    """
    left = [(folder, into, 0)]
    while left:
        source_dir, target_dir, depth = left.pop()
        if depth > MAX_FOLDER_DEPTH:
            raise ModelIntegrityError(f"{source_dir} is nested more than {MAX_FOLDER_DEPTH} folders deep; "
                                      f"refusing to load {folder}.")
        try:
            target_dir.mkdir(mode=0o700)
            with os.scandir(source_dir) as entries:
                for entry in entries:
                    source, target = Path(entry.path), target_dir / entry.name
                    if entry.is_symlink():
                        os.symlink(os.readlink(source), target)
                    elif entry.is_dir(follow_symlinks=False):
                        left.append((source, target, depth + 1))
                    else:
                        target.write_bytes(read_folder_file(source, folder, follow_links=False))
        except OSError as err:
            where = err.filename if err.filename is not None else source_dir
            raise ModelIntegrityError(f"{where}: cannot copy to check its signature: {err.strerror or err}; "
                                      f"refusing to load {folder}.") from err


def verify_signature(folder: str | Path, public_key: str | Path) -> None:
    """Refuse ``folder`` unless ``model.sig`` is a valid signature of all its files by ``public_key``.

    Raises
    ------
    ModelIntegrityError
        The signature is missing, made with another key, or a file was changed, added or removed
        since signing (the message names it).
    """
    folder = Path(folder).resolve()  # a link to the folder (current -> models-v3) is the folder
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        raise ModelIntegrityError(f"{signature} is missing: model folders must be signed by the trusted key "
                                  f"{public_key} (`kneepain sign`); refusing to load {folder}.")
    hashing, _, verifying = _library()
    try:
        (verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
         .set_hashing_config(_hashing(hashing)).verify(folder, signature))
    except Exception as err:  # the library raises ValueError and others: each means "not verified"
        raise ModelIntegrityError(f"{folder} is not verified by the trusted key {public_key}: "
                                  f"{_summary(str(err))}; refusing to load it.") from err


def _summary(message: str) -> str:
    """The library's message without digests: which files were changed, added or removed, or why it failed."""
    found = {"changed": re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", message),
             "removed": re.findall(r"Missing files in model [^:]*: ([^\"\]]+)", message),
             "added": re.findall(r"Extra files found in model [^:]*: ([^\"\]]+)", message)}
    parts = [f"{what} since signing: {', '.join(sorted(n.strip() for n in names))}" for what, names in found.items() if names]
    return "; ".join(parts) if parts else " ".join(message.split())[:300]
