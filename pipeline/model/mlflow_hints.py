"""MLflow's advice that does not apply to what kneepain logs, kept out of the commands' output.

A module of its own, light to import: the MLflow model imports it when it is served."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["quiet_schema_hints"]


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
