"""`kneepain score` on real files: the bad-input corpus, atomic output, and agreement with predict()."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal
from temporaries import leftover_temporaries

from pipeline.cli import main
from pipeline.core.errors import CaseValidationError
from pipeline.serve.predict import predict

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
P_COLS = [f"p_{c}" for c in ("leg_cramp", "bakers_cyst", "runners_knee", "hamstring_injury", "meniscus_tear",
                             "acl_injury", "pcl_injury", "dvt", "osteoarthritis")]

# file -> (exit code, rows scored, rows rejected, text that must appear in the rejects or the error)
EXPECTED = {
    "empty.csv": (2, 0, 0, "the file is empty"),
    "header_only.csv": (0, 0, 0, None),
    "missing_required_column.csv": (2, 0, 0, "column 'sex': required column is missing"),
    "misspelled_category.csv": (1, 3, 1, "column 'sex', value 'femal': not allowed; allowed: female, male"),
    "age_out_of_range.csv": (1, 3, 1, "column 'age', value '130': out of range; allowed: a whole number >= 12 and <= 100"),
    "non_number.csv": (1, 3, 1, "column 'bmi', value 'heavy': not a number"),
    # a spreadsheet's decimal comma is said: "not a number" alone left the user to guess
    "decimal_comma.csv": (1, 3, 1, "column 'bmi', value '27,5': not a number (a decimal comma? numbers are written "
                                   "with a point: 30.1, not 30,1)"),
    # ... but "1,000" may be a thousand: no guess
    "thousands_comma.csv": (1, 3, 1, "column 'symptom_duration_days', value '1,000': not a number; allowed"),
    "pregnant_male.csv": (1, 3, 1, "column 'pregnant', value 'yes': pregnant cannot be yes when sex is male"),
    # g1 reports exactly the longest duration age 30 allows: (30 + 1) x 365.25 days
    "duration_before_birth.csv": (1, 3, 1, "column 'symptom_duration_days', value '1e8': longer than the patient "
                                           "has lived: at age 40 at most 14975.25 days"),
    "unknown_tristate.csv": (1, 3, 1, "column 'locking', value 'sometimes': not allowed; allowed: yes/y/true/t/1"),
    "extra_columns.csv": (0, 3, 0, None),
    "duplicate_case_id.csv": (1, 3, 1, "column 'case_id', value 'g1': duplicate case_id: seen in an earlier row"),
    "utf8_bom.csv": (0, 3, 0, None),
    "windows_line_endings.csv": (0, 3, 0, None),
    "quoted_commas_newlines.csv": (0, 4, 0, None),
    "too_many_fields.csv": (1, 3, 1, "record 5 of {path} (the header is record 1) has 17 fields; the header has 16"),
    "non_utf8.csv": (2, 0, 0, "not valid UTF-8"),
    "very_long_field.csv": (1, 4, 1, "column 'locking', value 'yyyyyyyy"),
    # the quote opened in g3's activity never closes: g4-g6 are read into that field, so the file
    # holds 3 records, and the one that swallowed the others is rejected whole, saying why
    "unclosed_quote.csv": (1, 2, 1, "record 4 of {path} (the header is record 1) has a field 'activity' that runs "
                                    "over 4 lines, 3 of them like records of this file: a quote left open "
                                    "there"),
    "wrong_types.parquet": (1, 1, 2, "column 'age', value 'forty': not a number"),
}


def _input_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return len(pd.read_parquet(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return max(sum(1 for _ in csv.reader(fh)) - 1, 0)
    except UnicodeDecodeError:
        return -1


def test_corpus_covers_every_case():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_corpus(name, trained, tmp_path, capsys):
    models, _ = trained
    code, scored, rejected, text = EXPECTED[name]
    out = tmp_path / "out.csv"
    assert main(["score", str(CORPUS / name), "-o", str(out), "--model", str(models)]) == code
    captured = capsys.readouterr()
    rejects = tmp_path / "out.csv.rejects.csv"
    text = text and text.format(path=CORPUS / name)
    if code == 2:
        assert not out.exists() and not rejects.exists()
        assert text in captured.err and "Traceback" not in captured.err
        assert captured.err.count("\n") == 1  # one line
        assert not leftover_temporaries(tmp_path)
        return
    result = pd.read_csv(out, dtype={"case_id": str}, keep_default_na=False)
    assert len(result) == scored
    n_input = _input_rows(CORPUS / name)
    if rejected:
        bad = pd.read_csv(rejects, dtype=str, keep_default_na=False)
        assert len(bad) == bad["reject_row"].nunique() == rejected  # one line per rejected row
        assert any(text in reason for reason in bad["reject_reason"]), bad["reject_reason"].tolist()
        assert (bad["reject_file"] == str(CORPUS / name)).all()
        assert sorted(set(result["row"].astype(int)) | set(bad["reject_row"].astype(int))) == list(range(n_input))
    else:
        assert not rejects.exists()
    assert scored + rejected == n_input
    if len(result):
        np.testing.assert_allclose(result[P_COLS].sum(axis=1), 1.0, atol=1e-5)  # 6 decimals each


def test_quoted_ids_and_extra_columns_pass_through(trained, tmp_path, capsys):
    models, _ = trained
    out = tmp_path / "out.csv"
    main(["score", str(CORPUS / "quoted_commas_newlines.csv"), "-o", str(out), "--model", str(models)])
    ids = pd.read_csv(out, dtype=str, keep_default_na=False)["case_id"].tolist()
    assert ids[-1] == 'q1, with a comma and "quotes"\nand a second line'
    main(["score", str(CORPUS / "extra_columns.csv"), "-o", str(out), "--model", str(models)])
    err = capsys.readouterr().err
    assert err.count("ignoring columns that are not case fields: notes, clinic") == 1


def test_a_record_longer_than_the_read_block_is_read_whole(trained, tmp_path):
    """The CSV is read in small blocks (pipeline.core.csvrecords); a longer record reopens the
    reader with a larger block and loses no row and repeats none."""
    from pipeline.core import csvrecords

    models, _ = trained
    long_note = "x" * (3 * csvrecords._CSV_BLOCK)
    rows = [f"r{i},{30 + i},female,{long_note if i == 2 else 'short'}" for i in range(6)]
    (tmp_path / "in.csv").write_text("case_id,age,sex,notes\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    assert main(["score", str(tmp_path / "in.csv"), "-o", str(out), "--model", str(models), "--quiet"]) == 0
    got = pd.read_csv(out, dtype=str)
    assert got["case_id"].tolist() == [f"r{i}" for i in range(6)]
    assert got["row"].tolist() == [str(i) for i in range(6)]


def test_a_quoted_cr_lf_keeps_its_line_feed_wherever_a_read_block_ends(monkeypatch, tmp_path):
    """pyarrow drops the LF of a quoted CR LF whose CR is the last byte of one of its reads
    (apache/arrow#51368), so which value lost a byte depended on where the reads fell: the whole
    file's (the pandas engine) or a Dask block's. Every such CR here ends a read, in a file with
    CR LF line ends, read from its first record and from its second: every id is as written."""
    from pipeline.core import csvrecords

    block = 256
    monkeypatch.setattr(csvrecords, "_CSV_BLOCK", block)
    header = b"case_id,age,sex\r\n"
    data, ids = bytearray(), []
    for k in range(1, 40):  # record k's quoted CR at byte k * block - 1 of the data
        while k * block - 1 - len(data) - 1 > 40:
            ids.append(f"f{len(ids):05d}")
            data += f"{ids[-1]},30,male\r\n".encode()
        pad = "p" * (k * block - 1 - len(data) - 1)
        ids.append(f"{pad}\r\nid{k}")
        data += f'"{ids[-1]}",40,female\r\n'.encode()
        assert data[k * block - 1:k * block + 1] == b"\r\n"
    path = tmp_path / "crlf.csv"
    path.write_bytes(header + bytes(data))
    names = ["case_id", "age", "sex"]
    for first in (0, 1):  # the reads of a stream that starts at the second record fall elsewhere
        start = len(header) + (0 if first == 0 else data.index(b"\r\n") + 2)
        chunks = csvrecords.csv_chunks(path, names, 50, start=start, where="crlf.csv", first_row=first)
        assert pd.concat([c.frame for c in chunks])["case_id"].tolist() == ids[first:]


def swallowing_csv(path: Path, column: str) -> Path:
    """3,000 cases with a ``notes`` column; row 1500's ``column`` opens a quote that the stray quote
    in row 1700's notes closes, so records 1501-1700 are read into that one field."""
    lines = ["case_id,age,sex,notes"]
    for i in range(3000):
        fields = {"case_id": f"c{i}", "age": str(20 + i % 60), "sex": "female" if i % 2 else "male", "notes": "fine"}
        if i == 1500:
            fields[column] = '"' + fields[column]
        if i == 1700:
            fields["notes"] = 'swelling 5" wide'
        if i == 20:  # a note over two lines, neither a record: read as it is
            fields["notes"] = '"first line\nsecond line, one comma"'
        if i == 30:  # nor is a line with the header's four fields but no age or sex of a case
            fields["notes"] = '"sore\nleft, right, both, at night"'
        lines.append(",".join(fields.values()))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("column", ["notes", "case_id"])
def test_a_quote_left_open_rejects_the_record_that_swallowed_the_others(trained, tmp_path, column):
    """A quote left open reads the records up to the next quote into one field: that record is
    rejected whole (every swallowed record is in its row), with a reason that says so, rather than
    the records vanishing from the count; predict() on the file names it too."""
    models, _ = trained
    src = swallowing_csv(tmp_path / "in.csv", column)
    out = tmp_path / "out.csv"
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--quiet", "--chunk-rows", "1000"]) == 1
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert len(scored) == 3000 - 200 - 1 and bad["reject_row"].tolist() == ["1500"]
    assert (f"record 1502 of {src} (the header is record 1) has a field {column!r} that runs over 201 lines, "
            "200 of them like records of this file: a quote left open there") in bad.loc[0, "reject_reason"]
    swallowed = bad.loc[0, column]
    assert "\nc1501,21,female,fine\n" in swallowed and swallowed.count("\n") == 200
    assert scored.loc[scored["case_id"] == "c20", "row"].tolist() == ["20"]  # the two-line note is a note
    assert scored.loc[scored["case_id"] == "c30", "row"].tolist() == ["30"]
    assert scored["row"].astype(int).max() == 2799
    with pytest.raises(CaseValidationError, match="a quote left open there"):
        predict(src, model=models)


@pytest.mark.parametrize("swallowed", ["b,31,female,x,y\nc,32,male,p,q\nd,33,male,r,s",  # a field too many
                                       "b,31,female\nc,32,male\nd,33,male"])              # a field too few
def test_records_a_quote_left_open_swallowed_with_another_number_of_fields_are_not_lost(trained, tmp_path, swallowed):
    """Only swallowed lines of the header's number of fields were counted as records: three rows of
    a field more or fewer vanished into the open note, the file scored one row and exited 0, and
    `evaluate` evaluated one labelled case of four."""
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text(f'case_id,age,sex,note\na,30,male,"oops\n{swallowed}\n')
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models), "--quiet"]) == 1
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["reject_row"].tolist() == ["0"] and bad["note"].tolist() == [f"oops\n{swallowed}\n"]
    assert "has a field 'note' that runs over 5 lines, 3 of them like records of this file: a quote left open" \
        in bad.loc[0, "reject_reason"]
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(f'case_id,age,sex,condition,note\na,30,male,dvt,"oops\n{swallowed}\n')
    assert main(["evaluate", "--data", str(labelled), "--model", str(models), "--no-mlflow", "--out",
                 str(tmp_path / "eval")]) == 2  # no valid row: the one record swallowed the others
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_quoted_note_over_several_lines_is_not_taken_for_swallowed_records(trained, tmp_path):
    """A note's line with a number where the age is (`flexion, 90`), or a sex where the sex is
    (`nurse, Jones, female`), but not the header's number of fields, is no record: only a line
    with both a whole age and a sex in their places counts as one at another width."""
    models, _ = trained
    src = tmp_path / "notes.csv"
    src.write_text('case_id,age,sex,note\na,30,male,"Knee exam:\nflexion, 90\nno effusion"\n'
                   'b,40,female,"Seen by\nnurse, Jones, female"\nc,50,male,"Obs\nTemp, 37.8"\nd,60,female,plain\n')
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models), "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "out.csv", dtype=str)["case_id"].tolist() == ["a", "b", "c", "d"]


def test_score_matches_predict_for_csv_and_parquet(trained, small_data, tmp_path):
    models, _ = trained
    cases = pd.read_parquet(small_data / "test.parquet").head(3000)
    cases.to_parquet(tmp_path / "in.parquet")
    cases.astype(str).replace({"<NA>": "", "nan": ""}).to_csv(tmp_path / "in.csv", index=False)
    expected = predict(cases, model=models)
    for src, dst in (("in.csv", "out.parquet"), ("in.parquet", "out.csv")):
        assert main(["score", str(tmp_path / src), "-o", str(tmp_path / dst), "--model", str(models),
                     "--chunk-rows", "700", "--quiet", "--float-digits", "17"]) == 0
        got = pd.read_parquet(tmp_path / dst) if dst.endswith("parquet") else pd.read_csv(tmp_path / dst)
        assert got["case_id"].astype(str).tolist() == expected["case_id"].tolist()
        assert got["row"].tolist() == list(range(len(cases)))
        np.testing.assert_allclose(got[P_COLS].to_numpy(float), expected[P_COLS].to_numpy(float), rtol=1e-9)
        assert got["top3"].tolist() == expected["top3"].tolist()


def test_several_inputs_and_duplicates_across_files(trained, tmp_path):
    models, _ = trained
    a = CORPUS / "utf8_bom.csv"
    b = CORPUS / "windows_line_endings.csv"  # same ids as a: all three are duplicates
    out = tmp_path / "out.parquet"
    assert main(["score", str(a), str(b), "-o", str(out), "--model", str(models), "--quiet"]) == 1
    got = pd.read_parquet(out)
    assert got["file"].tolist() == [str(a)] * 3
    bad = pd.read_csv(tmp_path / "out.parquet.rejects.csv")
    assert bad["reject_file"].unique().tolist() == [str(b)] and bad["reject_row"].tolist() == [0, 1, 2]


def test_an_input_without_case_ids_beside_one_with_them_has_no_id_not_an_empty_one(trained, tmp_path):
    """Rows of an input that has no ``case_id`` column hold no id (null), as a kept column an input
    lacks does: ``isna()`` finds them in a Parquet output, and a CSV output leaves the field empty."""
    models, _ = trained
    (tmp_path / "no_ids.csv").write_text("age,sex\n30,male\n")
    (tmp_path / "ids.csv").write_text("case_id,age,sex\nC,50,male\n")
    inputs = [str(tmp_path / "no_ids.csv"), str(tmp_path / "ids.csv")]
    assert main(["score", *inputs, "-o", str(tmp_path / "out.parquet"), "--model", str(models), "--quiet"]) == 0
    assert pq.read_table(tmp_path / "out.parquet").column("case_id").to_pylist() == [None, "C"]
    assert main(["score", *inputs, "-o", str(tmp_path / "out.csv"), "--model", str(models), "--quiet",
                 "--columns", "file,row,case_id"]) == 0
    assert (tmp_path / "out.csv").read_text().splitlines()[1:] == [f'"{inputs[0]}",0,', f'"{inputs[1]}",0,"C"']


def test_fatal_model_problem_has_no_traceback(trained, tmp_path, capsys):
    import shutil

    models, _ = trained
    broken = Path(shutil.copytree(models, tmp_path / "models"))
    with open(broken / "model.json", "ab") as fh:
        fh.write(b"x")
    assert main(["score", str(CORPUS / "utf8_bom.csv"), "-o", str(tmp_path / "o.csv"), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "model.json has changed" in err and "refusing to load" in err and "Traceback" not in err
    assert err.count("\n") == 1 and not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_killed_run_leaves_no_output(trained, kb, tmp_path):
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.data.generate import generate_codes

    models, _ = trained
    codes, _, _ = generate_codes(kb, 400_000, seed=8)
    codes_to_text_frame(codes).to_csv(tmp_path / "big.csv", index=False)
    out = tmp_path / "out.csv"
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", str(tmp_path / "big.csv"), "-o", str(out), "--model",
                             str(models), "--chunk-rows", "5000", "--quiet"])
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".out.csv.") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "scoring ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not (tmp_path / "out.csv.rejects.csv").exists()


def test_numeric_parquet_ids_pass_through_as_written(trained, tmp_path):
    import pyarrow as pa

    models, _ = trained
    pq.write_table(pa.table({"case_id": pa.array([123, None, 9007199254740993], pa.int64()),
                             "age": [30, 40, 50], "sex": ["male", "female", "male"]}), tmp_path / "in.parquet")
    assert main(["score", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.csv"), "--model", str(models),
                 "--quiet"]) == 0
    ids = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)["case_id"].tolist()
    assert ids == ["123", "", "9007199254740993"]


def test_a_parquet_frame_saved_with_its_index_is_read_as_its_columns(trained, tmp_path, capsys):
    """pandas saves an index as a column with metadata that turns it back into the index: the file's
    columns, as its schema names them, are what is scored, kept and rejected."""
    models, _ = trained
    cases = pd.DataFrame({"case_id": ["P1", "P1", "P2", "P3"], "age": [30, 40, 50, 60],
                          "sex": ["male", "female", "male", "female"]})
    cases.set_index("case_id").to_parquet(tmp_path / "by_id.parquet")
    out = tmp_path / "by_id.csv"
    assert main(["score", str(tmp_path / "by_id.parquet"), "-o", str(out), "--model", str(models), "--quiet"]) == 1
    assert pd.read_csv(out, dtype=str)["case_id"].tolist() == ["P1", "P2", "P3"]
    rejects = pd.read_csv(tmp_path / "by_id.csv.rejects.csv", dtype=str)
    assert rejects["reject_row"].tolist() == ["1"] and "duplicate case_id" in rejects["reject_reason"][0]
    with pytest.raises(CaseValidationError, match="row 1, column 'case_id', value 'P1': duplicate"):
        predict(tmp_path / "by_id.parquet", model=models)
    # a filtered frame keeps its row labels in __index_level_0__: an input column like any other
    cases[cases["age"] != 40].to_parquet(tmp_path / "filtered.parquet")
    out = tmp_path / "filtered.csv"
    assert main(["score", str(tmp_path / "filtered.parquet"), "-o", str(out), "--model", str(models), "--quiet",
                 "--keep-input-columns"]) == 0
    scored = pd.read_csv(out, dtype=str)
    assert scored["case_id"].tolist() == ["P1", "P2", "P3"] and scored["__index_level_0__"].tolist() == ["0", "2", "3"]
    assert predict(tmp_path / "filtered.parquet", model=models)["case_id"].tolist() == ["P1", "P2", "P3"]

    # also where the labels left happen to be evenly spaced (1, 2, 3), which pandas keeps only in its
    # metadata as a range: they were silently dropped; a frame's default labels (0, 1, 2) are no column
    for name, kept, labels in [("first_off", cases[cases["age"] != 30], ["1", "2", "3"]),
                               ("every_other", cases.iloc[::2], ["0", "2"])]:
        kept.to_parquet(tmp_path / f"{name}.parquet")
        assert pq.read_metadata(tmp_path / f"{name}.parquet").schema.names == ["case_id", "age", "sex"]
        assert main(["score", str(tmp_path / f"{name}.parquet"), "-o", str(out), "--model", str(models), "--quiet",
                     "--keep-input-columns"]) == 0
        assert pd.read_csv(out, dtype=str)["__index_level_0__"].tolist() == labels
    cases.to_parquet(tmp_path / "whole.parquet")
    assert main(["score", str(tmp_path / "whole.parquet"), "-o", str(out), "--model", str(models), "--quiet",
                 "--keep-input-columns"]) == 1  # P1 twice
    assert "__index_level_0__" not in pd.read_csv(out, dtype=str).columns
    # an evenly spaced index pandas keeps only in its metadata (a range) is read as pd.read_parquet
    # rebuilds it: case ids 10, 20, 30 were silently left out, and ages saved so made the file unreadable
    spaced = pd.DataFrame({"case_id": [10, 20, 30], "age": [50, 51, 52], "sex": ["male", "female", "male"]})
    spaced.set_index("case_id").to_parquet(tmp_path / "spaced.parquet")
    assert pd.read_parquet(tmp_path / "spaced.parquet").index.equals(pd.RangeIndex(10, 40, 10))  # how pandas saves it
    out = tmp_path / "spaced.csv"
    assert main(["score", str(tmp_path / "spaced.parquet"), "-o", str(out), "--model", str(models), "--quiet"]) == 0
    assert pd.read_csv(out, dtype=str)["case_id"].tolist() == ["10", "20", "30"]
    assert predict(tmp_path / "spaced.parquet", model=models)["case_id"].tolist() == ["10", "20", "30"]
    ages = cases.assign(case_id=["P1", "P2", "P3", "P4"])
    ages.set_index("age").to_parquet(tmp_path / "by_age.parquet")
    assert_frame_equal(predict(tmp_path / "by_age.parquet", model=models), predict(ages, model=models))


def test_a_range_index_is_rebuilt_only_where_pandas_would_rebuild_it(tmp_path):
    """A range whose length is not the file's row count (rows filtered or appended after pandas
    wrote the metadata) would give rows other rows' ids: it is left out, as pd.read_parquet leaves
    it. Metadata pandas did not write is read as no index, and a range named as a column (in any
    case) is left to that column."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.core.casefiles import file_columns, iter_chunks

    def ids(path):
        return pd.concat([c.frame for c in iter_chunks(path, 2)])["case_id"].astype(str).tolist()

    frame = pd.DataFrame({"case_id": [10, 20, 30, 40], "age": [50, 17, 52, 53], "sex": "male"}).set_index("case_id")
    table = pa.Table.from_pandas(frame)
    pq.write_table(table, tmp_path / "whole.parquet")
    assert ids(tmp_path / "whole.parquet") == ["10", "20", "30", "40"]
    pq.write_table(table.filter(pc.greater(table["age"], 18)), tmp_path / "filtered.parquet")
    assert "case_id" not in file_columns(tmp_path / "filtered.parquet")
    assert pd.read_parquet(tmp_path / "filtered.parquet").index.tolist() == [0, 1, 2]  # pandas drops it too
    with pq.ParquetWriter(tmp_path / "appended.parquet", table.schema) as writer:
        writer.write_table(table)
        writer.write_table(table)
    assert "case_id" not in file_columns(tmp_path / "appended.parquet")

    def with_index(entries):
        meta = {**json.loads(table.schema.metadata[b"pandas"]), "index_columns": entries}
        return table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})

    for entries in (None, 5, [{"kind": "range", "name": "case_id", "start": 2**70, "stop": 2**70 + 4, "step": 1}],
                    [{"kind": "range", "name": "case_id", "start": 0, "stop": 2**64, "step": 2**62}]):
        pq.write_table(with_index(entries), tmp_path / "odd.parquet")
        assert file_columns(tmp_path / "odd.parquet") == ["age", "sex"], entries
        assert len(list(iter_chunks(tmp_path / "odd.parquet", 2))) == 2
    named = pa.Table.from_pandas(frame.reset_index(drop=True).assign(case_id=["a", "b", "c", "d"])
                                 .set_index(pd.RangeIndex(0, 4, name="Case_ID")))
    pq.write_table(named, tmp_path / "named.parquet")
    assert file_columns(tmp_path / "named.parquet") == ["age", "sex", "case_id"]
    assert ids(tmp_path / "named.parquet") == ["a", "b", "c", "d"]


@pytest.mark.parametrize("small_steps", [False, True])
def test_seen_ids_flags_exactly_the_ids_an_earlier_chunk_had(monkeypatch, small_steps):
    """Across many chunks (runs merged as they grow), an id is a duplicate iff an earlier chunk
    had it, spaces around it ignored; blanks are never duplicates. With ``small_steps`` the runs
    are merged a few hashes at a time and held in mapped memory from a few hundred bytes, as a
    file of millions of ids has them."""
    from pipeline.serve import chunks
    from pipeline.serve.batch import SeenIds

    if small_steps:
        monkeypatch.setattr(chunks, "_MERGE_BLOCK", 7)
        monkeypatch.setattr(chunks, "_MAPPED_BYTES", 512)
    rng = np.random.default_rng(5)
    seen, reference = SeenIds(), set()
    for _ in range(40):
        ids = [f" c{int(i)}" if i % 5 == 0 else f"c{int(i)}" for i in rng.integers(0, 3000, size=rng.integers(1, 300))]
        ids += ["", None]
        dup = seen.check_and_add(pd.Series(ids, dtype=object))
        expected = [i is not None and i.strip() != "" and i.strip() in reference for i in ids]
        assert dup.tolist() == expected
        reference |= {i.strip() for i in ids if i is not None and i.strip()}
    assert sum(map(len, seen.runs)) == len(reference)  # each id kept once
    assert all((r[1:] > r[:-1]).all() for r in seen.runs)  # sorted, no repeats
    if small_steps:  # the merged runs are mapped memory of their own, given back once replaced
        assert isinstance(seen.runs[0].base, memoryview) and len(seen.runs[0]) * 8 >= 512


def test_seen_ids_out_of_memory_is_a_memory_error(monkeypatch):
    """A run that cannot be mapped fails as numpy's arrays do when memory runs out (a
    MemoryError naming what it was for), not as an OSError a job would take for its output's."""
    import errno
    import mmap

    from pipeline.serve import chunks

    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", no_memory)
    monkeypatch.setattr(chunks, "_MAPPED_BYTES", 64)
    seen = chunks.SeenIds()
    seen.check_and_add(pd.Series([f"a{i}" for i in range(8)]))
    with pytest.raises(MemoryError, match="hashes of 16 case ids"):
        seen.check_and_add(pd.Series([f"b{i}" for i in range(8)]))
