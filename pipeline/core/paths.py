"""Where kneepain's files are: every default path in one place.

Work happens in a *project folder*: ``KNEEPAIN_HOME`` if it is set, else the nearest folder at or
above the current one that holds ``dvc.yaml`` and ``configs/`` (a clone of this repository), else
the current folder. Inside it: ``configs/``, ``data/synthetic/``, ``models/``, ``reports/`` and the
MLflow store ``mlflow.db``. The default configs also ship inside the package
(``pipeline/defaults/``), so a plain ``pip install`` works outside a clone: a config that the
project folder does not have is read from the package.

These are functions, not constants, so they follow the current folder and environment at the
time of the call. Library functions take paths as arguments; the command line and the public
entry points (``predict``, ``load_model``, ``load_knowledge_base``) fill in these defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_HOME", "PACKAGE_DEFAULTS", "config_path", "data_dir", "default_tracking_uri", "experiment_origin",
           "models_dir", "project_root", "reports_dir", "seed_path", "sqlite_store"]

ENV_HOME = "KNEEPAIN_HOME"
PACKAGE_DEFAULTS = Path(__file__).resolve().parent.parent / "defaults"
SEED_FILE = "seed/pain-behind-the-knee.txt"


def project_root() -> Path:
    """The project folder (see the module docstring)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "configs").is_dir():
            return folder
    return here


def config_path(name: str) -> Path:
    """``configs/<name>`` of the project folder, or the packaged default when it has none."""
    local = project_root() / "configs" / name
    return local if local.exists() else PACKAGE_DEFAULTS / name


def seed_path() -> Path:
    """The source article whose quotes the knowledge base cites."""
    return config_path(SEED_FILE)


def data_dir() -> Path:
    return project_root() / "data" / "synthetic"


def models_dir() -> Path:
    return project_root() / "models"


def reports_dir() -> Path:
    return project_root() / "reports"


def experiment_origin(root: Path) -> Path:
    """The project a DVC experiment runs for, where ``root`` is the temporary copy of it that `dvc
    exp run --temp` and `--queue` run in (``<project>/.dvc/tmp/exps/...``, removed afterwards);
    else ``root``."""
    parts = root.parts
    for i in range(1, len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps") and (Path(*parts[:i]) / "dvc.yaml").is_file():
            return Path(*parts[:i])
    return root


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the embedded default: ``mlflow.db`` in the project folder (the
    project's own for a DVC experiment run in a temporary copy, whose store would go with it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{experiment_origin(project_root()) / 'mlflow.db'}"


def sqlite_store(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for any other URI)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
