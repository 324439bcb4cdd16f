"""Small file helpers: hashes and atomic writes (a file is complete or absent, never half-written)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["process_alive", "sha256_file", "tmp_path", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tmp_path(path: str | Path) -> Path:
    """The hidden temporary name a file is written under before it is renamed into place
    (unique per process, so two writers never share one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process, and another user's, count as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a process id this system can have
        return False
    return True


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")
