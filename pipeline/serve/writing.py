"""Writing scoring outputs and rejects: Arrow tables of one schema, written on a background thread
to a temporary file that is renamed into place only when the job completes."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import BatchInputError
from pipeline.core.files import tmp_path
from pipeline.core.schema import ID_COLUMN
from pipeline.serve.predict import OUTPUT_TYPES, output_columns

__all__ = ["REJECT_COLUMNS", "REJECT_SCHEMA", "Writer", "output_schema", "output_table", "reject_table"]

REJECT_COLUMNS = ["file", "row", "column", "value", "reason"]
REJECT_SCHEMA = pa.schema([pa.field("file", pa.string()), pa.field("row", pa.int64()), pa.field("column", pa.string()),
                           pa.field("value", pa.string()), pa.field("reason", pa.string())])


def output_schema(id_column: str, multi: bool, decision: bool) -> pa.Schema:
    """The Arrow schema of a scoring output: ``file`` (several inputs), ``row``, ``case_id`` (when
    the input has one), then :func:`pipeline.serve.predict.output_columns` with their types."""
    names = (["file"] if multi else []) + ["row"] + (output_columns(decision=decision) if id_column == ID_COLUMN
                                                       else output_columns(decision=decision)[1:])
    types = {"file": "string", "row": "int64", ID_COLUMN: "string", **OUTPUT_TYPES}
    return pa.schema([pa.field(name, pa.type_for_alias(types[name])) for name in names])


def output_table(scored: pd.DataFrame, schema: pa.Schema, *, file: str | None = None) -> pa.Table:
    """Scored rows as an Arrow table of the output ``schema`` (adding ``file``, and a blank
    ``case_id`` for an input without one when the output has that column)."""
    if file is not None and "file" in schema.names:
        scored = scored.assign(file=file)
    if ID_COLUMN in schema.names and ID_COLUMN not in scored:
        scored = scored.assign(**{ID_COLUMN: ""})
    return pa.Table.from_pandas(scored[schema.names], schema=schema, preserve_index=False)


def reject_table(bad: pd.DataFrame) -> pa.Table:
    """Reject lines as an Arrow table of :data:`REJECT_SCHEMA`."""
    return pa.Table.from_pandas(bad.astype({"file": str, "value": str, "reason": str, "column": str})[REJECT_COLUMNS],
                                schema=REJECT_SCHEMA, preserve_index=False)


class Writer:
    """Writes a CSV or Parquet output to a temporary file next to the target.

    Each chunk is encoded and written on a background thread (Arrow releases the GIL there)
    while the next chunk is scored; chunks stay in order, and an error surfaces on the next call.
    """

    def __init__(self, target: Path, schema: pa.Schema):
        self.target, self.schema = target, schema
        self.tmp = tmp_path(target)
        try:
            if target.suffix.lower() == ".parquet":
                self._w = pq.ParquetWriter(self.tmp, schema, compression="zstd")
            else:
                self._w = pacsv.CSVWriter(self.tmp, schema)
        except OSError as err:
            raise BatchInputError(f"{target}: cannot write: {err.strerror or err}.") from err
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kneepain-writer")
        self._pending: Future | None = None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def write(self, table: pa.Table) -> None:
        self._wait()
        self._pending = self._pool.submit(self._w.write_table, table)

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self._w.close()
