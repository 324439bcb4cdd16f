"""Fuzzing `kneepain score` with random and mutated CSV and Parquet files.

Whatever the file (bytes, quoting, field counts, encodings, column types), the job keeps its
promises: exit code 0, 1 or 2; no traceback (here: no exception escapes ``main``); with 0 or 1
every input row is in the output or the rejects file exactly once; with 2 no output, no rejects
file and no temporary file is left.
"""

import contextlib
import csv
import datetime
import io
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporaries import leftover_temporaries

from pipeline.cli import main

COLUMNS = ["case_id", "age", "sex", "Age ", "SEX", "locking", "bmi", "symptom_duration_days", "", "notes"]
VALUES = ["30", "71", "12", "130", "male", "female", "femal", "yes", "no", "unknown", "", "=cmd|' /C calc'!A0",
          "-5", "+1", "@x", "é", "1e400", "nan", "3.5", "a,b", 'say "hi"', "line\nbreak", "\t", " ", "x" * 300]
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _field(value: str, quote: bool) -> str:
    if quote or any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_bytes(draw) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=6))
    rows = draw(st.lists(st.lists(st.sampled_from(VALUES), min_size=0, max_size=8), max_size=6))
    quote = draw(st.booleans())
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(",".join(_field(v, quote) for v in line) for line in [header, *rows])
    if draw(st.booleans()):
        text += newline
    data = text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])), errors="replace")
    for _ in range(draw(st.integers(0, 3))):  # byte-level damage: insert, delete or replace
        where = draw(st.integers(0, len(data)))
        byte = bytes([draw(st.sampled_from([0x22, 0x2C, 0x0A, 0x0D, 0x00, 0xFF, 0x41]))])
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        data = data[:where] + (b"" if how == "delete" else byte) + data[where + (how != "insert"):]
    return data


_KINDS = {
    "int": lambda n: pa.array(range(20, 20 + n), pa.int64()),
    "float": lambda n: pa.array([35.5] * n, pa.float64()),
    "text": lambda n: pa.array((["male", "yes", "40", None, "=x"] * n)[:n], pa.string()),
    "bool": lambda n: pa.array([True] * n, pa.bool_()),
    "date": lambda n: pa.array([datetime.datetime(2020, 1, 1)] * n, pa.timestamp("us")),
    "duration": lambda n: pa.array([datetime.timedelta(days=2)] * n, pa.duration("s")),
    "list": lambda n: pa.array([["yes"]] * n, pa.list_(pa.string())),
    "struct": lambda n: pa.array([{"a": 1}] * n, pa.struct([("a", pa.int64())])),
    "null": lambda n: pa.nulls(n),
}


@st.composite
def parquet_tables(draw) -> pa.Table:
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(["case_id", "age", "sex", "locking", "bmi", "symptom_duration_days"]),
                          min_size=0, max_size=5, unique=True))
    return pa.table({name: _KINDS[draw(st.sampled_from(sorted(_KINDS)))](n) for name in names})


def _csv_rows(path: Path) -> int:
    """Data records as Python's csv module reads the file (empty lines are not records)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        records = [r for r in csv.reader(fh) if r]
    return max(len(records) - 1, 0)


def _check(source: Path, expected_rows, models: Path) -> None:
    folder = source.parent
    out = folder / "out.csv"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["score", str(source), "-o", str(out), "--model", str(models), "--quiet"])
    assert code in (0, 1, 2)
    assert "Traceback" not in err.getvalue()
    assert leftover_temporaries(folder) == []
    rejects = folder / "out.csv.rejects.csv"
    if code == 2:
        assert not out.exists() and not rejects.exists()
        assert err.getvalue().count("\n") == 1, err.getvalue()
        return
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)["row"].astype(int).tolist()
    rejected = (pd.read_csv(rejects, dtype=str, keep_default_na=False)["reject_row"].astype(int).tolist()
                if rejects.exists() else [])
    assert (code == 1) == bool(rejected)
    n = expected_rows()
    assert sorted(scored + rejected) == list(range(n)), (scored, rejected, n)


@pytest.mark.slow
@SETTINGS
@given(data=csv_bytes())
def test_random_and_mutated_csv_files(trained, data):
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.csv"
        source.write_bytes(data)
        _check(source, lambda: _csv_rows(source), trained[0])


@pytest.mark.slow
@SETTINGS
@given(table=parquet_tables(), damage=st.integers(-1, 40))
def test_random_parquet_files(trained, table, damage):
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.parquet"
        pq.write_table(table, source)
        if damage >= 0:  # a byte of the file overwritten
            data = bytearray(source.read_bytes())
            data[damage % len(data)] ^= 0xFF
            source.write_bytes(bytes(data))
        _check(source, lambda: pq.read_metadata(source).num_rows, trained[0])
