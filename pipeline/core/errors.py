"""The errors a user can cause, in one leaf module that imports nothing of the project.

Each subclasses a built-in (``ValueError`` for bad input, ``RuntimeError`` for a model that
cannot be trusted, ``ConnectionError`` for a tracking server out of reach, ``KeyboardInterrupt``
for a stop that came once the output was complete) and says what is wrong and where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BatchInputError", "CaseValidationError", "ConfigError", "KnowledgeBaseError", "ModelIntegrityError",
           "StoppedAfterOutput", "TrackingServerError", "error_lines"]


class CaseValidationError(ValueError):
    """Cases that break the schema. ``errors`` is a DataFrame: row, column, value, reason (and
    ``index``, the caller's row labels, from :meth:`with_index`)."""

    max_listed = 20

    def __init__(self, errors: pd.DataFrame, n_rows: int | None = None):
        self.n_rows = n_rows
        self.errors = errors.reset_index(drop=True)
        if len(self.errors) and (self.errors["row"] < 0).all():  # about the input as a whole, not a row
            super().__init__("; ".join((f"column {r.column!r}" + (f" ({r.value})" if r.value else "") + ": "
                                        if r.column else "") + str(r.reason) for r in self.errors.itertuples()))
            return
        lines = error_lines(self.errors, self.max_listed)
        bad_rows = self.errors["row"].nunique() if len(self.errors) else 0
        of = f" of {n_rows}" if n_rows is not None else ""
        super().__init__(f"{bad_rows}{of} case(s) are invalid:\n  " + "\n  ".join(lines))

    def with_index(self, index: pd.Index) -> CaseValidationError:
        """This error with each row's label in ``index`` (a DataFrame's own, whose rows are
        numbered by position here) beside its number: ``row 2 (index 'p7')``."""
        rows = self.errors["row"].to_numpy()
        labels = [index[r] if 0 <= r < len(index) else None for r in rows.tolist()]
        return CaseValidationError(self.errors.assign(index=labels), self.n_rows)


def error_lines(errors: pd.DataFrame, max_listed: int) -> list[str]:
    """The first ``max_listed`` problems of ``errors`` (row, column, value, reason; with a
    ``case_id`` or ``index`` column, each row named by it too), a line each ("row 3, column 'sex',
    value 'x': not allowed; ..."), then how many more there are."""
    labelled = "index" in errors.columns
    named = "case_id" in errors.columns

    def where(r: Any) -> str:
        if labelled and r.index is not None:
            return f"row {r.row} (index {r.index!r})"
        return f"row {r.row} (case_id {r.case_id!r})" if named and isinstance(r.case_id, str) else f"row {r.row}"

    lines = [f"{where(r)}, column {r.column!r}, value {r.value!r}: {r.reason}" if r.column else f"{where(r)}: {r.reason}"
             for r in errors.head(max_listed).itertuples()]
    if len(errors) > len(lines):
        lines.append(f"... and {len(errors) - len(lines)} more")
    return lines


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the key path."""


class KnowledgeBaseError(ValueError):
    """The knowledge base file is invalid; the message names the key path."""


class ModelIntegrityError(RuntimeError):
    """A model folder that cannot be trusted: a file missing or changed, a foreign or older format."""


class TrackingServerError(ConnectionError):
    """The MLflow tracking server that ``MLFLOW_TRACKING_URI`` names cannot be reached."""


class StoppedAfterOutput(KeyboardInterrupt):
    """A stop (a signal, Ctrl-C) that came once a scoring job's output was complete: ``"<stop>
    after <what was written>"``, where a plain stop's caller says that nothing was. ``stop`` is
    the stop's own words ("stopped by SIGTERM"); ``summary``, what the job reported when its output
    was in place (a :class:`pipeline.serve.batch.ScoreSummary`: rows scored and rejected), or None."""

    def __init__(self, stop: str, written: str, summary: Any = None):
        super().__init__(f"{stop} after {written}")
        self.stop, self.written, self.summary = stop, written, summary

    def __reduce__(self):  # pickled and copied with every argument
        return type(self), (self.stop, self.written, self.summary)


class BatchInputError(ValueError):
    """An input cannot be scored at all (unreadable, not CSV, a required column missing)."""

    def naming(self, path: str, label: str) -> BatchInputError:
        """This error with the file read at ``path`` named ``label``, as the user gave it."""
        return BatchInputError(str(self).replace(path, label))
