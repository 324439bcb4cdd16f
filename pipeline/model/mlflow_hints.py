"""MLflow's advice that does not apply to what kneepain logs, kept out of the commands' output.

A module of its own, light to import: the MLflow model imports it when it is served."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

__all__ = ["quiet_mlflow", "quiet_schema_hints"]

PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def quiet_schema_hints() -> Iterator[None]:
    """MLflow's advice on the schemas it infers, which does not apply to the ones kneepain logs:
    that a path matches two of its source schemes ("" and "file", the same class), and that an
    integer column cannot hold a missing value where a schema is enforced (a dataset's schema is a
    record, and the model logs outputs only, never an input schema), given four times per
    ``kneepain train`` and twice per ``kneepain evaluate``, in full, above the results."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        yield


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's artifact progress bars (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``) and INFO lines
    ("Creating initial MLflow database tables...", "Validating input example against model
    signature") off while inside: in a command's output, between its own lines, and in a server's
    log. Its warnings and errors still show. MLflow sets its logger's level when first imported, so
    it is imported here first."""
    import mlflow  # noqa: F401

    logger = logging.getLogger("mlflow")
    before_level, before_env = logger.level, os.environ.get(PROGRESS_BAR_ENV)
    logger.setLevel(max(logging.WARNING, before_level))
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        logger.setLevel(before_level)
        if before_env is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = before_env
