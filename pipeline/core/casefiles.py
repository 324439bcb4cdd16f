"""Reading case files: CSV (every cell as text) and Parquet, in chunks, with no row lost.

The one reader behind ``kneepain score``, the Dask engine and :func:`pipeline.predict` on a path:

- chunks have exactly ``chunk_rows`` rows (the last fewer), so a file read in blocks of whole
  chunks (:class:`FileBlock`, planned by :mod:`pipeline.core.blocks`) gives the same chunks,
  row numbers and reasons as the file read whole;
- a CSV that is something else (Parquet, gzip, zip) or ends its lines in a bare CR is refused by
  its first bytes, with what it is and what to do; text that is not UTF-8 stops the read with its
  byte offset and line;
- a header that names one column twice as names are matched (``age`` and ``Age ``, ``leg_swelling``
  and ``Leg swelling``; :func:`pipeline.core.schema.normalise_header`) is refused: which of the two to read would be a guess;
- a CSV's records, malformed and overlong ones included, are read by :mod:`pipeline.core.csvrecords`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.csvrecords import MAX_RECORD_BYTES, BlockMismatchError, CaseChunk, csv_chunks
from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.files import FILE_TYPES_TEXT, arrow_file, file_state, is_case_file, is_parquet, is_pipe, refuse_changed
from pipeline.core.formulas import unguarded_names
from pipeline.core.parsing import ParsedCases, parse_cases, required_columns_error, utf8_or_bytes
from pipeline.core.schema import (
    ID_COLUMN,
    NAMED_COLUMNS,
    REJECT_META,
    TRISTATE_NO,
    TRISTATE_YES,
    field,
    normalise_header,
    repeated_columns,
)

__all__ = ["MAX_RECORD_BYTES", "PARQUET_FIX", "BlockMismatchError", "CaseChunk", "FileBlock", "check_columns",
           "complete_columns", "check_is_file", "csv_data_start", "file_columns", "has_case_ids", "iter_chunks",
           "open_parquet", "parquet_metadata", "parse_read", "read_case_file", "read_case_records",
           "unsupported_file_type", "url_problem"]

_HEADER_BYTES = 1 << 20  # a longer header is refused
_BOM = codecs.BOM_UTF8  # as Excel writes it
_SNIFF_BYTES = 4096  # read to tell what a file that is not what its name says is
# files given as CSV that are something else: (first bytes, what it is, what to do)
_DESCRIPTOR = re.compile(r"/dev/(stdin|fd/[0-9]+)|/proc/(self|[0-9]+)/fd/[0-9]+")  # names of a process's open files
PARQUET_FIX = "give it a .parquet name"  # standard input's own advice replaces it (it is read as CSV only)
_NOT_CSV = [(b"PAR1", "Parquet", PARQUET_FIX),
            (b"\x1f\x8b", "gzip-compressed", "decompress it first, for example: zcat FILE.gz > FILE.csv (or, with "
                                               "the pandas engine, zcat FILE.gz | kneepain score - -o OUTPUT)"),
            (b"PK\x03\x04", "zip (or Excel .xlsx)", "extract it, or save the sheet as 'CSV UTF-8'")]
_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]+):/+")  # a scheme (two letters at least: not a drive letter)
_BARE_CR = re.compile(rb"\r(?!\n)")  # a line ending of CR alone (LF and CR LF are read)


class FileBlock(NamedTuple):
    """Consecutive rows of one case file, read on their own (:func:`pipeline.core.blocks.plan_blocks`).

    ``rows`` None: every row from ``first_row`` to the end of the file (the whole file when
    ``first_row`` is 0; a later CSV block's records from the byte ``start`` on). Otherwise the
    rows ``first_row`` .. ``first_row + rows`` (0-based data rows); a CSV block's records are the
    bytes ``start`` .. ``end``, a Parquet block's rows lie in the row groups ``start`` .. ``end``.
    """

    first_row: int = 0
    rows: int | None = None
    start: int = 0
    end: int = 0


def check_columns(names: list[str], where: str) -> None:
    """Refuse a header that names one column twice after case and spaces are folded."""
    repeated = repeated_columns(names)
    if repeated:
        name, spellings = next(iter(repeated.items()))
        if not name:
            unnamed = [i + 1 for i, n in enumerate(names) if not str(n).strip()]
            raise BatchInputError(f"{where}: columns {', '.join(map(str, unnamed))} of the header have no name (a "
                                  "spreadsheet's empty columns, saved as ',,'); remove them or give each a name.")
        raise BatchInputError(f"{where}: the header repeats column {name!r} ({', '.join(map(repr, spellings))}); "
                              "column names are matched ignoring case, surrounding spaces, invisible characters and "
                              "the spaces or hyphens between a field's words, so each may appear once.")


def complete_columns(paths: Sequence[Path]) -> list[list[str]]:
    """Each file's columns (:func:`file_columns`), every file refused first if it lacks a required
    column, so a job stops before any of its rows is scored."""
    columns = [file_columns(p) for p in paths]
    for path, names in zip(paths, columns):
        if (unusable := _lacks_required(path, names)) is not None:
            raise unusable
    return columns


def _lacks_required(path: str | Path, names: Sequence[str]) -> BatchInputError | None:
    """The error for a file whose columns ``names`` lack a required one, named with the file (and
    the likely cause, another separator, when it is that), or None."""
    missing = required_columns_error(names)
    if missing is None:
        return None
    return _wrong_separator(path, names) or BatchInputError(f"{path}: {missing}")


def _wrong_separator(path: str | Path, names: Sequence[str]) -> BatchInputError | None:
    """The error for a header of one column holding another separator (the usual cause of a
    missing required column: a file separated by something other than commas), or None. Excel's
    separator hint as a first line (``sep=,``) is named as such."""
    if names and str(names[0]).strip().lower().startswith("sep=") and not any(str(n).strip() for n in names[1:]):
        line = ",".join(map(str, names)).strip()  # `sep=,` is read as two columns, `sep=` and one without a name
        return BatchInputError(f"{path}: the first line, {_clip(line)!r}, is a spreadsheet's separator hint, not the "
                               "header: remove that line (Excel's 'CSV UTF-8' writes none).")
    separator = next((sep for sep in (";", "\t", "|") if len(names) == 1 and sep in str(names[0])), None)
    if separator is None:
        return None
    return BatchInputError(f"{path}: the header is one column, {_clip(str(names[0]))!r}: the file looks separated by "
                           f"{separator!r}, and kneepain reads comma-separated CSV; save it with commas.")


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _headerless(path: str | Path, names: Sequence[str]) -> BatchInputError | None:
    """The error for a CSV saved without its header line: a first line of several fields that names
    none of the columns kneepain reads, where some of them are values a case would hold (a number,
    yes/no, true/false), or None. Such a line was reported as a header that repeats ``'false'``."""
    if len(names) < 2 or any(normalise_header(n) in NAMED_COLUMNS for n in names):
        return None
    values = [n for n in names if _NUMBER.fullmatch(n.strip()) or n.strip().lower() in TRISTATE_YES | TRISTATE_NO]
    if not values:
        return None
    return BatchInputError(f"{path}: the first line, {_clip(','.join(names))!r}, names none of the columns kneepain "
                           f"reads and holds values such as {values[0].strip()!r}: the file looks saved without its "
                           "header line (or has a title line above it). Its first line must name the columns "
                           "(case_id, age, sex, ...; with pandas, to_csv(path, index=False) writes them).")


def _title_above(path: Path, start: int, names: Sequence[str]) -> BatchInputError | None:
    """The error for a CSV whose first line is a title above the header (an export's "Patient
    export 2024-01-01"): a first line that names none of the columns kneepain reads, where the
    record after it (from byte ``start``) names some; or None. Such a line was reported as a header
    whose columns have no name, or that lacks the column age."""
    if any(normalise_header(n) in NAMED_COLUMNS for n in names) or str(names[0]).strip().lower().startswith("sep="):
        return None  # (a spreadsheet's separator hint is named as such: _wrong_separator)
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            raw, _, _ = _header_record(fh)
        second = next(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")), None) or []
    except (OSError, UnicodeDecodeError, csv.Error):  # the header's own problems are told as they were
        return None
    named = [n.strip() for n in second if normalise_header(n) in NAMED_COLUMNS]
    if not named:
        return None
    return BatchInputError(f"{path}: the first line, {_clip(','.join(names))!r}, names none of the columns kneepain "
                           f"reads, and the next names {', '.join(named[:3])}{', ...' if len(named) > 3 else ''}: "
                           "the file looks to have a title line above its header; remove the first line (the header "
                           "must be the file's first line).")


_UNNAMED_INDEX = "__index_level_0__"  # pandas' name for row labels it saves as a column


def range_index_columns(schema: pa.Schema, num_rows: int) -> list[tuple[str, int, int]]:
    """The named indexes pandas saved in a Parquet file's metadata only, as a range (``start``,
    ``stop``, ``step``) rather than a column: ``df.set_index("case_id")`` where the ids are evenly
    spaced (1, 2, 3 or 10, 20, 30). Each is read as the column ``pd.read_parquet`` rebuilds, after
    the schema's columns: (name, start, step). Like pandas, only a range of exactly the file's
    ``num_rows`` values is taken: rows filtered or appended after the metadata was written would
    get another row's id. An unnamed range from 0 by 1 is the frame's default row labels, and no
    column; another unnamed one (a filtered frame's labels that happen to be evenly spaced, 1, 2,
    3) is ``__index_level_0__``, as pandas names the labels it saves as a column. One whose name
    is a column's (in any case) is left to that column."""
    try:
        meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    except ValueError:  # metadata that is not pandas' to read: the schema's columns alone
        return []
    index = meta.get("index_columns") if isinstance(meta, dict) else None
    taken = {normalise_header(name) for name in schema.names}
    found = []
    for i in index if isinstance(index, list) else []:
        if not (isinstance(i, dict) and i.get("kind") == "range" and isinstance(i.get("name"), (str, type(None)))
                and all(type(i.get(k)) is int for k in ("start", "stop", "step")) and i["step"] != 0):
            continue
        if i["name"] is None and (i["start"], i["step"]) == (0, 1):  # the default labels
            continue
        name = _UNNAMED_INDEX if i["name"] is None else i["name"]
        values = range(i["start"], i["stop"], i["step"])
        ends = (values[0], values[-1]) if len(values) else ()  # every value an int64
        if (len(values) == num_rows and normalise_header(name) not in taken
                and all(-(1 << 63) <= v < (1 << 63) for v in ends)):
            found.append((name, i["start"], i["step"]))
            taken.add(normalise_header(name))
    return found


def with_range_columns(table: pa.Table, ranges: list[tuple[str, int, int]], first_row: int) -> pa.Table:
    """``table`` (the file's rows from ``first_row`` on) with the columns of :func:`range_index_columns`."""
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    for name, start, step in ranges:
        table = table.append_column(name, pa.array(start + step * rows, pa.int64()))
    return table


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


def parse_read(frame: pd.DataFrame, malformed: dict[int, str], *, row_offset: int = 0) -> ParsedCases:
    """:func:`pipeline.core.parsing.parse_cases` of rows as read (``raise_on_error=False``): each
    malformed record (row -> reason, from a :class:`CaseChunk`) is invalid for that reason alone,
    since its fields may be shifted, and its id counts as no id."""
    if malformed:
        frame = frame.copy()
        frame.iloc[list(malformed)] = None
    parsed = parse_cases(frame, row_offset=row_offset, raise_on_error=False)
    if malformed:
        rows = np.fromiter(malformed, dtype=np.int64, count=len(malformed)) + row_offset
        parsed.errors = pd.concat([parsed.errors[~parsed.errors["row"].isin(rows)], pd.DataFrame({
            "row": rows, "column": "", "value": "", "reason": list(malformed.values())})], ignore_index=True)
        parsed.valid[list(malformed)] = False
    return parsed


def _header_record(fh: BinaryIO) -> tuple[bytes, int, bool]:
    """(the header record's bytes, how many bytes of blank lines come before it, whether a quoted
    name is still open where the bytes end), read by CSV's rules: a quote opens a quoted name only
    at the start of a name (elsewhere it is a character of the name), and a line break inside a
    quoted name continues the record."""
    raw, skipped = b"", 0
    while len(raw) < _HEADER_BYTES:
        line = fh.readline(_HEADER_BYTES - len(raw))
        if not line:  # the end of the file
            return raw, skipped, b'"' in raw and _open_quote(raw)
        if not raw and not (line.removeprefix(_BOM) if not skipped else line).strip():
            # a blank line before the header, as CSV readers skip (after the byte-order mark, if any)
            skipped += len(line)
            continue
        raw += line
        if b'"' not in raw:  # the common header: one line
            return raw, skipped, False
        quoted = _open_quote(raw)
        if not quoted and raw.endswith(b"\n"):
            return raw, skipped, False
    return raw, skipped, _open_quote(raw)


def _open_quote(record: bytes) -> bool:
    """Whether ``record`` ends inside a quoted field (CSV's rules; ``""`` in one is a quote)."""
    state = "start"  # of a field; then "plain", "quoted", or "closed" (a quote just ended a quoted field)
    for byte in record:
        if state == "quoted":
            if byte == 0x22:
                state = "closed"
        elif byte == 0x22 and state in ("start", "closed"):  # a quoted field opens, or a "" pair goes on
            state = "quoted"
        else:
            state = "start" if byte in (0x2C, 0x0A) else "plain"  # after a comma or a line break, a field starts
    return state == "quoted"


def _csv_header(path: Path) -> tuple[list[str], int]:
    """The header's names and where the data records begin (the header's end, in bytes)."""
    try:
        with open(path, "rb") as fh:  # the header's bytes only: a bad byte further on is the reader's to report
            raw, skipped, unclosed = _header_record(fh)
        if (known := _known_kind(raw)) is not None:
            raise BatchInputError(f"{path}: is a {known[0]} file, not CSV text (by its first bytes); {known[1]}.")
        if _utf16_or_binary(raw):
            raise BatchInputError(f"{path}: the header holds NUL bytes: {_UTF16}.")
        if _BARE_CR.search(raw):
            raise BatchInputError(f"{path}: its lines end in a bare carriage return (CR), as old Mac programs save "
                                  "CSV; save it with LF or CR LF line endings (for example Excel's 'CSV UTF-8').")
        if len(raw) >= _HEADER_BYTES and not raw.endswith(b"\n"):
            raise BatchInputError(f"{path}: the header is longer than {_HEADER_BYTES >> 20} MB; is this a CSV file?")
        if unclosed:
            raise BatchInputError(f"{path}: the header opens a quoted column name that is never closed (a \" at the "
                                  "start of a name quotes it up to the next \"); close it, or remove the quote.")
        header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")), None)
        if header and not repeated_columns(unguarded := unguarded_names(header)):
            header = unguarded  # a header we wrote (a rejects file's) as it was read; another tool's
            # with both =x and '=x (which we never write: we would have written '=x and ''=x) as it is
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{path}: the header is not valid UTF-8 ({err.reason} at byte {skipped + err.start})."
                              ) from err
    except csv.Error as err:
        raise BatchInputError(f"{path}: cannot read the header: {err}.") from err
    except OSError as err:
        raise BatchInputError(f"{path}: cannot read: {err.strerror or err}.") from err
    if header and (title := _title_above(path, skipped + len(raw), header)) is not None:
        raise title  # (a first row of empty cells above the header too)
    if not header or all(not h.strip() for h in header):
        raise BatchInputError(f"{path}: the file is empty (no header line); expected a CSV header with at least "
                              "the required columns age and sex.")
    if (headerless := _headerless(path, header)) is not None:
        raise headerless
    check_columns(header, str(path))
    return header, skipped + len(raw)


def csv_data_start(path: str | Path) -> int:
    """The byte offset of a CSV file's first data record: the length of its header record."""
    return _csv_header(Path(path))[1]


def check_is_file(path: Path) -> None:
    """Raise :class:`BatchInputError` unless ``path`` is a regular file, saying what it is instead."""
    if path.is_dir():
        raise BatchInputError(f"{path}: is a folder; give the CSV or Parquet files in it (with --engine dask, a glob "
                              "such as 'folder/*.csv').")
    if not path.is_file():
        if is_pipe(path):  # a named pipe or <(...): read more than once here, it would give its rows once
            raise BatchInputError(f"{path}: is a pipe, not a file, and this reads an input file more than once (by "
                                  "name); save its rows to a file, or score it with `kneepain score` and its pandas "
                                  "engine (the default), which copies a pipe to a temporary file first.")
        if path.exists() and stat.S_ISSOCK(path.stat().st_mode):  # /dev/stdin of a job a server started
            raise BatchInputError(f"{path}: is a socket, not a file; give - if it is standard input, or save its rows "
                                  "to a file.")
        if path.exists():  # a device: /dev/zero would never end
            raise BatchInputError(f"{path}: is a device, not a file; save its rows to a file, or give them on standard "
                                  "input (... | kneepain score - -o OUT).")
        raise url_problem(path) or BatchInputError(f"{path}: no such file.")


def url_problem(path: str | Path) -> BatchInputError | None:
    """The error for an input that is no local file and reads as a URL (``s3://bucket/cases.csv``,
    ``https://...``, ``file:///data/cases.csv``), named as given, or None. A path folds the
    slashes (``s3:/bucket/...``), so ``s3:`` must not be a local folder, as ``ab:`` could be."""
    url = _URL.match(str(path))
    if url is None or os.path.lexists(url[1] + ":"):
        return None
    rest = str(path)[url.end():]
    if url[1].lower() == "file":
        return BatchInputError(f"{path}: a file URL; give the path itself (/{rest}).")
    return BatchInputError(f"{url[1]}://{rest}: looks like a URL, and kneepain reads local files only; download it "
                           "first (for example with `aws s3 cp`, `gsutil cp` or `curl -o`) and give the file.")


def file_columns(path: str | Path) -> list[str]:
    """The column names of a CSV (its header) or Parquet file (its schema), checked for repeats."""
    path = Path(path)
    check_is_file(path)
    if is_parquet(path):
        try:
            meta = parquet_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as err:
            raise BatchInputError(f"{path}: {_not_parquet(path) or 'cannot read: ' + _first_line(err)}") from err
        names = schema.names + [name for name, _, _ in range_index_columns(schema, meta.num_rows)]
        check_columns(names, str(path))
        return names
    if is_case_file(path):
        return _csv_header(path)[0]
    raise unsupported_file_type(path)


def unsupported_file_type(path: Path) -> BatchInputError:
    """The error of an input named neither .csv nor .parquet, saying how to mend it where its first
    bytes tell what it is (``cases.csv.gz``: decompress it first)."""
    message = f"{path}: unsupported file type {path.suffix.lower()!r}; expected {FILE_TYPES_TEXT}"
    if _DESCRIPTOR.fullmatch(str(path)):  # `/dev/stdin < cases.csv`: a name with no type, of a file that has one
        return BatchInputError(f"{message}: it names an open file (standard input, or another descriptor, "
                               "redirected from a file); give - for standard input, or the file's own name.")
    try:
        with open(path, "rb") as fh:
            known = _known_kind(fh.read(8))
    except OSError:
        known = None
    if known is not None:
        return BatchInputError(f"{message}: it is a {known[0]} file (by its first bytes); {known[1]}.")
    return BatchInputError(f"{message}.")


def _not_parquet(path: Path) -> str:
    """What a file named .parquet that Arrow cannot read is, where its first bytes say it is no
    Parquet file ("" otherwise: a damaged one, named in Arrow's words): CSV text saved under a
    .parquet name is common, and Arrow's "magic bytes not found in footer" does not say so."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return ""
    if not head:
        return "the file is empty (0 bytes); expected a Parquet file"
    if head.startswith(b"PAR1"):  # a damaged Parquet file: Arrow's words say how
        return ""
    known = _known_kind(head)
    if known is not None:
        return f"is a {known[0]} file, not Parquet (by its first bytes); {known[1]}"
    if _utf16_or_binary(head):
        return f"is not Parquet (by its first bytes), and {_UTF16}, with a .csv name if it is CSV"
    try:
        head.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not a character cut at the end of the bytes read
            return ""
    return "is text, not Parquet (by its first bytes); if it is CSV, give it a .csv name"


_UTF16 = "the file looks like UTF-16 text (or is not text); save it as UTF-8 (for example Excel's 'CSV UTF-8')"


def _utf16_or_binary(head: bytes) -> bool:
    """Whether a file's first bytes are UTF-16 text (a byte-order mark, or the NUL bytes of its
    ASCII letters) or hold NUL bytes as no UTF-8 text does."""
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head


def _known_kind(head: bytes) -> tuple[str, str] | None:
    """(what it is, what to do) for a file whose first bytes are one of :data:`_NOT_CSV`'s, else None."""
    return next(((kind, fix) for magic, kind, fix in _NOT_CSV if head.startswith(magic)), None)


def has_case_ids(path: str | Path) -> bool:
    """Whether the file's header (CSV) or schema (Parquet) has a ``case_id`` column."""
    return ID_COLUMN in {normalise_header(h) for h in file_columns(path)}


def iter_chunks(path: str | Path, chunk_rows: int, *, block: FileBlock | None = None,
                name: str | None = None) -> Iterator[CaseChunk]:
    """:class:`CaseChunk` of ``chunk_rows`` rows from a CSV (all cells as text) or Parquet file.

    Every chunk but the last has exactly ``chunk_rows`` rows, so the chunks of a file are the same
    whichever way it is read: whole, or ``block`` by block (:mod:`pipeline.core.blocks`).

    Parameters
    ----------
    path : path
        A ``.csv`` or ``.parquet`` file.
    chunk_rows : int
        Rows per chunk.
    block : FileBlock, optional
        Read only these rows (their chunks are the file's chunks ``block.first_row // chunk_rows``
        on). Default: the whole file.
    name : str, optional
        The file's name in the reasons of malformed records (default ``path``).

    Raises
    ------
    BatchInputError
        The file cannot be read at all: missing, empty, not UTF-8, another type, a repeated column.
    BlockMismatchError
        A CSV ``block`` does not hold the records it was planned to hold; read the file whole.
    """
    path = Path(path)
    file_columns(path)  # refuses a missing, empty or unsupported file, or a repeated column
    block = block or FileBlock()
    try:
        if is_parquet(path):
            read, tables = block.first_row, _parquet_tables(path, chunk_rows, block, name or str(path))
            while True:
                try:
                    table = next(tables, None)
                except pa.ArrowMemoryError:
                    raise  # no damage: said as any other failed read
                except (pa.ArrowException, OSError) as err:  # its schema was read: its data is damaged
                    raise BatchInputError(f"{path}: cannot read its rows from row {read:,} on: the file is damaged or "
                                          f"was not written in full (Arrow: {_first_line(err)}); write it again from "
                                          "its source.") from err
                if table is None:
                    return
                yield CaseChunk(_parquet_frame(table), {})
                read += table.num_rows
        header, data_start = _csv_header(path)
        if block.first_row == 0 and block.rows is None:  # the whole file
            block = FileBlock(start=data_start)
        yield from csv_chunks(path, header, chunk_rows, start=block.start, where=name or str(path),
                              end=None if block.rows is None else block.end, first_row=block.first_row, rows=block.rows,
                              looks_like_record=_looks_like_a_case(header))
    except (pa.ArrowException, OSError) as err:
        message = _first_line(err)
        if "UTF8" in message:
            message = f"not valid UTF-8 text{_where_not_utf8(path)} (save the file as UTF-8)"
        raise BatchInputError(f"{path}: cannot read: {message}") from err


def _looks_like_a_case(header: list[str]) -> Callable[[list[str]], bool] | None:
    """Whether a line's fields look like a record of the file: with the header's number of fields,
    a valid age or a valid sex in the header's places for them; with another number (a record a
    field too long or too short), a valid age (a whole number) and a valid sex both. A record that
    a quote left open swallowed does; a line of a quoted note seldom does (``left, right, both`` in
    a three-column file; ``flexion, 90`` or ``nurse, Jones, female`` under ``case_id,age,sex,note``).
    None for a header without both columns (refused later).

    In a rejects file (its :data:`REJECT_META` columns first), a line also looks like a record when it
    looks like one of the file it was rejected from (the header without those columns): a record
    rejected because a quote left open read the records after it into a field holds them as that
    file wrote them, and scored again unmended, that record was scored and the ones in it lost."""
    looks = _looks_like_a_record_of(header)
    names = [normalise_header(h) for h in header]
    if looks is None or not set(REJECT_META) <= set(names):
        return looks
    rejected_from = _looks_like_a_record_of([h for h, n in zip(header, names) if n not in REJECT_META])
    return looks if rejected_from is None else (lambda fields: looks(fields) or rejected_from(fields))


def _looks_like_a_record_of(header: list[str]) -> Callable[[list[str]], bool] | None:
    """:func:`_looks_like_a_case` for the file of ``header`` alone."""
    at = {normalise_header(h): i for i, h in enumerate(header)}
    if "age" not in at or "sex" not in at:
        return None
    age, sexes = field("age"), set(field("sex").allowed)

    def looks(fields: list[str]) -> bool:
        try:
            value = float(fields[at["age"]]) if at["age"] < len(fields) else math.nan
        except ValueError:
            value = math.nan
        aged = (age.minimum or 0) <= value <= (age.maximum or math.inf)
        sexed = at["sex"] < len(fields) and fields[at["sex"]].strip().lower() in sexes
        if len(fields) == len(header):
            return aged or sexed
        return aged and value.is_integer() and sexed

    return looks


def _where_not_utf8(path: Path) -> str:
    """`` at byte offset B (line L)`` of the file's first byte that is not UTF-8 ('' if none is found)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    # err.object is the bytes the decoder held back from the block before, then this block
                    at = offset - (len(err.object) - len(block)) + err.start
                    line = lines + block[:max(at - offset, 0)].count(b"\n") + 1
                    return f" at byte offset {at} (line {line})"
                if not block:
                    return ""
                lines += block.count(b"\n")
                offset += len(block)
    except OSError:
        return ""


def _first_line(err: BaseException) -> str:
    """An error's first line, its unprintable characters escaped (Arrow may quote a damaged file's bytes)."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def parquet_metadata(path: str | Path) -> pq.FileMetaData:
    """A Parquet file's footer (its schema, rows and row groups), whatever bytes its name holds."""
    with arrow_file(path) as source:
        return pq.read_metadata(source)


def open_parquet(path: str | Path | pa.NativeFile) -> pq.ParquetFile:
    """A Parquet file (its name, or the file opened) as its rows are read: old-style INT96
    timestamps (Spark, Hive, Impala) in microseconds, which hold any year to 9999 (read in
    nanoseconds, Arrow's default, a ``9999-12-31`` "no end date" wrapped round to 1816); Spark
    writes them to the microsecond, and an Impala value's nanoseconds are dropped."""
    source = path if isinstance(path, pa.NativeFile) else arrow_file(path)
    return pq.ParquetFile(source, coerce_int96_timestamp_unit="us")


def _parquet_tables(path: Path, chunk_rows: int, block: FileBlock, where: str) -> Iterator[pa.Table]:
    """The Parquet file's rows of ``block`` in tables of exactly ``chunk_rows`` rows (the last may be
    shorter), with the columns of :func:`range_index_columns` made for their rows.

    A file that changes while it is read (rewritten in place: its size or modification time
    moves; the rows are read at the places its first footer gave) is an error once its last row
    has been read, or once a read fails, rather than rows of two files or a damaged file's error.
    """
    with arrow_file(path) as source:
        opened = file_state(source.fileno())
        try:
            yield from _parquet_block(open_parquet(source), chunk_rows, block)
        except (pa.ArrowException, OSError):
            refuse_changed(source.fileno(), opened, where)  # a change said as such (the read's own error otherwise)
            raise
        refuse_changed(source.fileno(), opened, where)


def _nested_dictionary(kind: pa.DataType, inside: bool = False) -> bool:
    """Whether ``kind`` holds a dictionary type inside a list, struct or map (``inside``: it is
    itself inside one)."""
    if pa.types.is_dictionary(kind):
        return inside
    return any(_nested_dictionary(kind.field(i).type, True) for i in range(kind.num_fields))


def _parquet_block(file: pq.ParquetFile, chunk_rows: int, block: FileBlock) -> Iterator[pa.Table]:
    """:func:`_parquet_tables` of the file opened."""
    ranges = range_index_columns(file.schema_arrow, file.metadata.num_rows)
    # a chunk longer than the file is the file (Arrow's batch sizes are C integers)
    chunk_rows = min(chunk_rows, max(1, file.metadata.num_rows))
    rows = file.metadata.num_rows if block.rows is None else block.rows
    if rows == 0 and block.first_row == 0:  # a file of no rows still yields its (empty) columns once, as a CSV does
        yield with_range_columns(file.schema_arrow.empty_table(), ranges, 0)
        return
    if block.rows is None:  # the whole file; its batches end at row groups' ends, so they are regrouped too
        block = FileBlock(0, rows, 0, file.num_row_groups)
    groups = range(block.start, block.end)
    skip = block.first_row - sum(file.metadata.row_group(g).num_rows for g in range(block.start))
    left, pending, held, first = rows, [], 0, block.first_row
    # where dictionary-encoded values sit inside a list, struct or map, a row group at a time: a
    # batch across two groups fails there ("Nested data conversions not implemented for chunked
    # array outputs"); elsewhere across groups (a group at a time took twice as long in groups of 1,000 rows)
    by_group = [[g] for g in groups] if any(map(_nested_dictionary, file.schema_arrow.types)) else [groups]
    for batch in (batch for some in by_group for batch in file.iter_batches(batch_size=chunk_rows, row_groups=some)):
        cut = min(skip, batch.num_rows)
        skip -= cut
        if cut < batch.num_rows and left > 0:
            pending.append(batch.slice(cut, left))
            held += pending[-1].num_rows
            left -= pending[-1].num_rows
        while held >= chunk_rows or (held and left == 0):
            table = pa.Table.from_batches(pending)
            yield with_range_columns(table.slice(0, chunk_rows), ranges, first)
            first += min(held, chunk_rows)
            pending, held = table.slice(chunk_rows).to_batches(), max(held - chunk_rows, 0)
        if left == 0:
            return


# Parquet integers as pandas' nullable integers, whether or not a chunk has a null: as numpy
# integers they would become floats in the chunks that have one ("7.0" in a reason or a kept
# column), and the rejects would depend on how the file was chunked
_NULLABLE_INTEGERS = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                      pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                      pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype()}


def _parquet_frame(table: pa.Table) -> pd.DataFrame:
    """Rows of a Parquet file as a DataFrame of the file's columns, as its schema names them.

    pandas' metadata is ignored: a frame saved with its index (``df.set_index("case_id")``, or a
    filtered frame's ``__index_level_0__``) would otherwise have that column turned back into the
    index, and its case ids read as missing while the schema (and the rejects, and
    ``--keep-input-columns``) still list it. (An index kept only in the metadata, as a range, is
    added as a column before: :func:`with_range_columns`.)

    Binary columns are read as UTF-8 text (:func:`_binary_as_text`), numeric case ids as text
    (:func:`_ids_as_text`), dates and nanosecond times as text (:func:`_dates_as_text`); integers
    inside lists, structs and maps as Python's integers, a missing one as None."""
    table, undecoded = _binary_as_text(table)
    table, infinite = _ids_as_text(_dates_as_text(table))
    # an integer inside a list, struct or map stays one (a missing one None): by default a chunk
    # holding one missing item had every integer of it made a float (2**53 + 1 read as 2**53)
    frame = table.to_pandas(types_mapper=_NULLABLE_INTEGERS.get, ignore_metadata=True, integer_object_nulls=True)
    for i in undecoded:  # a value that is not UTF-8 stays bytes: its row alone is rejected, naming it
        frame.isetitem(i, frame.iloc[:, i].map(utf8_or_bytes, na_action="ignore").astype(object))
    if infinite is not None:  # an infinite id stays a number: its row alone is rejected, as predict() rejects it
        i, rows, values = infinite
        ids = frame.iloc[:, i].astype(object)
        ids.iloc[rows] = values
        frame.isetitem(i, ids)
    return frame


def _dates_as_text(table: pa.Table) -> pa.Table:
    """Date columns, and times in nanoseconds, as Arrow's text of them. Python's dates hold only
    the years 1 to 9999 and its times only microseconds: one value beyond them, even in a column
    the job does not read, stopped it ("year 10183 is out of range"). By type, not by value, so a
    file reads alike in every chunking: a date's text is Python's (``2024-01-01``), and in a case
    field it rejects its row, as any date does. Inside lists, maps and structs, see
    :func:`_dates_texted`."""
    for i, kind in enumerate(table.schema.types):
        if (texted := _dates_texted(kind)) != kind:
            table = table.set_column(i, table.column_names[i], pc.cast(table.column(i), texted))
    return table


def _dates_texted(kind: pa.DataType, as_python: bool = False) -> pa.DataType:
    """``kind`` with each date, and each time in nanoseconds, in it (at any depth of lists, maps
    and structs) as text; and each timestamp inside a struct or a map (``as_python``: pandas makes
    their values Python objects, which hold only the years 1 to 9999), as a list's are numpy's."""
    if (pa.types.is_date(kind) or (pa.types.is_time64(kind) and kind.unit == "ns")
            or (as_python and pa.types.is_timestamp(kind))):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([kind.field(j).with_type(_dates_texted(kind.field(j).type, True))
                          for j in range(kind.num_fields)])
    if pa.types.is_map(kind):
        return pa.map_(kind.key_field.with_type(_dates_texted(kind.key_type, True)),
                       kind.item_field.with_type(_dates_texted(kind.item_type, True)), kind.keys_sorted)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        item = kind.value_field.with_type(_dates_texted(kind.value_type, as_python))
        if pa.types.is_fixed_size_list(kind):
            return pa.list_(item, kind.list_size)
        return pa.large_list(item) if pa.types.is_large_list(kind) else pa.list_(item)
    return kind


def _is_binary(kind: pa.DataType) -> bool:
    """Bytes, plain, large, viewed, of a fixed size, or dictionary-encoded."""
    if pa.types.is_dictionary(kind):
        return _is_binary(kind.value_type)
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind))


_UUID = getattr(pa, "UuidType", ())  # Arrow's UUID type (pyarrow 18 and later)


def _binary_as_text(table: pa.Table) -> tuple[pa.Table, list[int]]:
    """The table with its binary columns as text, and the places of those that are not all UTF-8.

    Some writers (Impala, older Hive, a Spark table written without the UTF8 annotation) store
    text as plain binary; read as bytes, every answer in it would be rejected. A column whose
    values are all UTF-8 becomes text in Arrow; another is decoded value by value after
    conversion (:func:`utf8_or_bytes`). A UUID column (as Spark, Trino and DuckDB write ids)
    becomes the UUIDs' usual text form."""
    undecoded = []
    for i, kind in enumerate(table.schema.types):
        column = table.column(i)
        if isinstance(kind, _UUID):
            text = pa.array([None if u is None else str(u) for u in column.to_pylist()], pa.string())
        elif _is_binary(kind):
            plain = pc.cast(column, kind.value_type) if pa.types.is_dictionary(kind) else column
            try:
                text = pc.cast(plain, pa.string())
            except pa.ArrowInvalid:  # "Invalid UTF8 payload"
                text = plain
                undecoded.append(i)
        else:
            continue
        table = table.set_column(i, table.column_names[i], text)
    return table, undecoded


def _ids_as_text(table: pa.Table) -> tuple[pa.Table, tuple[int, np.ndarray, list[float]] | None]:
    """A numeric ``case_id`` column as text in Arrow (in pandas, integers with nulls become floats:
    "123.0"), a NaN as a missing id (as pandas writes it, and as :func:`pipeline.predict` reads
    it); and where some ids are infinite, the column's place, their rows and values, which stay
    numbers (Arrow's text, "inf", would be an id like any other)."""
    names = [normalise_header(n) for n in table.column_names]
    if ID_COLUMN not in names:
        return table, None
    i = names.index(ID_COLUMN)
    kind, column = table.schema.types[i], table.column(i)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        return table, None
    text, infinite = pc.cast(column, pa.string()), None
    if pa.types.is_floating(kind):
        wide = pc.cast(column, pa.float64())  # Arrow finds NaN and infinity in float32 and float64
        text = pc.if_else(pc.is_nan(wide), pa.scalar(None, pa.string()), text)
        inf = np.flatnonzero(pc.fill_null(pc.is_inf(wide), False).to_numpy(zero_copy_only=False))
        if len(inf):
            infinite = (i, inf, wide.take(pa.array(inf)).to_pylist())
    return table.set_column(i, table.column_names[i], text), infinite


def read_case_file(path: str | Path, chunk_rows: int = 100_000) -> pd.DataFrame:
    """A whole CSV or Parquet case file as one DataFrame, read as ``kneepain score`` reads it.

    Raises
    ------
    BatchInputError
        The file cannot be read at all, or lacks a required column (named with the file).
    CaseValidationError
        Some CSV records have the wrong number of fields (each named with its row and record).
    """
    frame, malformed = read_case_records(path, chunk_rows)
    if malformed:  # named with every other invalid row of the file, as `kneepain score` names them
        errors = parse_read(frame, malformed).errors
        raise CaseValidationError(errors.sort_values("row", kind="stable"), len(frame))
    return frame


def read_case_records(path: str | Path, chunk_rows: int = 100_000) -> tuple[pd.DataFrame, dict[int, str]]:
    """:func:`read_case_file`, with the CSV records of the wrong number of fields as rows of the
    frame and their reasons by row (``{}`` for none), for a caller that rejects them with the
    other invalid rows rather than refusing the file.

    Raises
    ------
    BatchInputError
        The file cannot be read at all, or lacks a required column (named with the file).
    """
    frames, malformed, offset = [], {}, 0
    for chunk in iter_chunks(path, chunk_rows):
        frames.append(chunk.frame)
        malformed.update({offset + i: reason for i, reason in chunk.malformed.items()})
        offset += len(chunk.frame)
    if not frames:  # a Parquet file without rows (a CSV of only a header is one empty chunk)
        frames = [_parquet_frame(open_parquet(path).schema_arrow.empty_table())]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if (unusable := _lacks_required(path, list(frame.columns))) is not None:  # as in `kneepain score`
        raise unusable
    return frame, malformed
