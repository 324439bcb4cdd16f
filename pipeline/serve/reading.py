"""Reading case files in chunks: CSV (every cell as text) and Parquet, with a background read-ahead."""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import BatchInputError
from pipeline.core.schema import ID_COLUMN, normalise_header
from pipeline.serve import CHUNK_ROWS

__all__ = ["has_case_ids", "iter_chunks", "prefetch"]

_CSV_BLOCK = 1 << 20  # small blocks keep pyarrow's read-ahead, and so peak memory, small


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{path}: the header is not valid UTF-8 ({err.reason} at byte {err.start}).") from err
    except OSError as err:
        raise BatchInputError(f"{path}: cannot read: {err.strerror or err}.") from err
    if not header or all(not h.strip() for h in header):
        raise BatchInputError(f"{path}: the file is empty (no header line); expected a CSV header with at least "
                              "the required columns age and sex.")
    return header


def iter_chunks(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """DataFrames of about ``chunk_rows`` rows from a CSV (all cells as text) or Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BatchInputError(f"{path}: no such file.")
    try:
        if suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _ids_as_text(pa.Table.from_batches([batch])).to_pandas()
            return
        if suffix != ".csv":
            raise BatchInputError(f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet.")
        header = _csv_header(path)
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        pending, size, yielded = [], 0, False
        for batch in reader:
            pending.append(batch)
            size += batch.num_rows
            if size >= chunk_rows:
                yield pa.Table.from_batches(pending).to_pandas()
                pending, size, yielded = [], 0, True
        if pending or not yielded:  # a header-only file still yields its (empty) columns once
            yield pa.Table.from_batches(pending, schema=reader.schema).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        message = str(err).strip().splitlines()[0]
        if "invalid UTF8" in message or "UTF8" in message:
            message = "not valid UTF-8 text (save the file as UTF-8)"
        raise BatchInputError(f"{path}: cannot read: {message}") from err


def _ids_as_text(table: pa.Table) -> pa.Table:
    """A numeric ``case_id`` column as text in Arrow (in pandas, integers with nulls become floats: "123.0")."""
    names = [normalise_header(n) for n in table.column_names]
    if ID_COLUMN in names:
        i = names.index(ID_COLUMN)
        if not pa.types.is_string(table.schema.types[i]) and not pa.types.is_large_string(table.schema.types[i]):
            table = table.set_column(i, table.column_names[i], pc.cast(table.column(i), pa.string()))
    return table


def prefetch(chunks: Iterator[pd.DataFrame], depth: int = 2) -> Iterator[pd.DataFrame]:
    """Read ahead ``depth`` chunks on a background thread (parsing CSV in Arrow releases the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone: drop the item rather than block forever

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)
        finally:
            close = getattr(chunks, "close", None)  # a generator: the reader and its file are released
            if close is not None:  # even if the consumer stopped early
                close()

    thread = threading.Thread(target=produce, name="kneepain-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def has_case_ids(path: Path) -> bool:
    """Whether the file's header (CSV) or schema (Parquet) has a ``case_id`` column."""
    return ID_COLUMN in {normalise_header(h) for h in _peek_columns(path)}


def _peek_columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet" and path.is_file():
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise BatchInputError(f"{path}: cannot read: {err}") from err
    if path.suffix.lower() == ".csv" and path.is_file():
        return _csv_header(path)
    return []
