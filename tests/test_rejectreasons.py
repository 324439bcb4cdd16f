"""What the rejected rows have in common: the commonest reasons, and another tool's missing-value
markers, in the lines `kneepain score` prints and the batch report shows."""

import pandas as pd

from pipeline.cli import main
from pipeline.serve.rejectreasons import missing_markers, reject_reasons, rejects_digest


def test_reasons_of_one_kind_count_together_whichever_row_they_name():
    """A malformed record's reason names its record and field count: the commonest reasons count
    such records as one kind, as they do the same answer out of range in different rows."""
    reasons = pd.Series([f"record {k} of in.csv (the header is record 1) has {k % 3 + 1} fields; the header has 5"
                         for k in range(2, 9)] + ["column 'age', value '300': out of range; allowed: 12..100",
                                                  "column 'age', value '400': out of range; allowed: 12..100 | "
                                                  "column 'sex', value 'x': not allowed; allowed: female, male"])
    assert reject_reasons(reasons).to_dict() == {"has the wrong number of fields": 7, "age: out of range": 2,
                                                  "sex: not allowed": 1}
    # a value holding ": " or " | " was cut there, so part of it became a reason of its own (a
    # patient's words in the report, and one entry per value where all are one kind)
    odd = pd.Series([f"column 'sex', value {v!r}: not allowed; allowed: female, male" for v in
                     ("name: Patient1", "Jane: SSN 123", "a | b: c", 'it\'s "x": y')]
                    + ["column 'case_id', value 'MRN: 42': duplicate case_id: seen in an earlier row | "
                       "column \"it's\", value '1': not allowed"])
    assert reject_reasons(odd).to_dict() == {"sex: not allowed": 4, "case_id: duplicate case_id: seen in an earlier row": 1,
                                              "it's: not allowed": 1}


def test_missing_value_markers_are_counted_by_the_marker_as_written():
    reasons = pd.Series(["column 'leg_swelling', value 'NA': not allowed; allowed: yes, no, or blank/unknown",
                         "column 'leg_swelling', value 'NA': not allowed; allowed: yes, no, or blank/unknown | "
                         "column 'skin_warm', value ' n/a ': not allowed; allowed: yes, no, or blank/unknown",
                         "column 'age', value '.': not a number; allowed: 12..100",
                         "column 'skin_warm', value '\\tNA': not allowed",  # a tab, written escaped
                         "column 'sex', value 'robot': not allowed; allowed: female, male",
                         "column 'injury_event', value 'NAB': not allowed",  # a word that starts like one is none
                         "record 3 of in.csv (the header is record 1) has 2 fields; the header has 5"])
    assert missing_markers(reasons).to_dict() == {"NA": 2, " n/a ": 1, ".": 1, "\tNA": 1}
    assert missing_markers(reasons[4:]).empty
    # an id or a condition of NA is no missing answer: a blank one, which the advice asks for, is no id either
    others = pd.Series(["column 'case_id', value 'NA': duplicate case_id: seen in an earlier row",
                        "column 'Condition', value 'n/a': not a condition of the nine"])
    assert missing_markers(others).empty


def test_score_prints_the_commonest_reasons_and_says_how_to_write_missing_answers(trained, tmp_path, capsys):
    """An R export (NA for a missing answer) rejects every row that has one: the summary says
    which columns, that NA is not read as unknown, and what to write instead; the rows stay in
    the rejects file, whole."""
    models, _ = trained
    src = tmp_path / "from_r.csv"
    src.write_text("case_id,age,sex,knee_swelling,leg_swelling\n"
                   "1,40,female,NA,NA\n2,50,male,NA,yes\n3,30,male,no,NA\n4,60,female,yes,no\n5,300,male,no,no\n")
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Scored 1 row, rejected 4 (see ")
    assert err[1] == ("  commonest reasons: knee_swelling: not allowed (2 rows), leg_swelling: not allowed (2 rows), "
                      "age: out of range (1 row)")
    assert err[2].startswith("  rejected answers that mark a missing answer in other tools: 'NA' (4 answers). Only a blank "
                             "or 'unknown' is read as unknown: write missing answers as blanks")
    assert len(err) == 3
    rejected = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert rejected["case_id"].tolist() == ["1", "2", "3", "5"]
    # --quiet prints nothing; a file without markers gets the reasons alone
    assert main(["score", str(src), "-o", str(tmp_path / "q.csv"), "--model", str(models), "--quiet"]) == 1
    assert capsys.readouterr().err == ""
    src.write_text("age,sex\n30,robot\n")
    assert main(["score", str(src), "-o", "-", "--model", str(models), "--rejects", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == ["  commonest reasons: sex: not allowed (1 row)"]
    # a rejects file written as Parquet (by its name) is summed up alike
    assert main(["score", str(src), "-o", str(tmp_path / "p.csv"), "--model", str(models),
                 "--rejects", str(tmp_path / "r.parquet")]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == ["  commonest reasons: sex: not allowed (1 row)"]
    assert pd.read_parquet(tmp_path / "r.parquet")["reject_row"].tolist() == [0]


def test_a_digest_reads_at_most_its_rows_and_says_so(tmp_path):
    path = tmp_path / "rejects.csv"
    reasons = ["column 'age', value '.': not a number; allowed: 12..100"] * 5 + ["column 'sex', value 'x': not allowed"] * 3
    pd.DataFrame({"reject_file": "in.csv", "reject_row": range(8), "reject_reason": reasons,
                  "note": ["a\nb"] * 8}).to_csv(path, index=False)  # a kept value across lines
    assert rejects_digest(path, max_rows=6) == [
        "  commonest reasons (of the first 6 rejected rows): age: not a number (5 rows), sex: not allowed (1 row)",
        "  rejected answers (of the first 6 rejected rows) that mark a missing answer in other tools: '.' (5 answers). Only a "
        "blank or 'unknown' is read as unknown: write missing answers as blanks (pandas' to_csv does; in R, "
        "write.csv(x, na = \"\")) and score again."]
    assert rejects_digest(path)[0] == "  commonest reasons: age: not a number (5 rows), sex: not allowed (3 rows)"
    assert rejects_digest(tmp_path / "missing.csv") == []
    # the same rows in Parquet, in row groups smaller than the rows read
    pd.read_csv(path).to_parquet(tmp_path / "rejects.parquet", row_group_size=4)
    assert rejects_digest(tmp_path / "rejects.parquet", max_rows=6) == rejects_digest(path, max_rows=6)
    assert rejects_digest(tmp_path / "rejects.parquet") == rejects_digest(path)
    (tmp_path / "broken.parquet").write_text("not Parquet")
    assert rejects_digest(tmp_path / "broken.parquet") == []
    pd.DataFrame({"x": ["a"]}).to_parquet(tmp_path / "other.parquet")  # no reject_reason, as in CSV
    pd.DataFrame({"x": ["a"]}).to_csv(tmp_path / "other.csv", index=False)
    assert rejects_digest(tmp_path / "other.parquet") == rejects_digest(tmp_path / "other.csv") == []


def test_a_digest_reads_rows_longer_than_its_blocks_and_names_with_line_breaks(tmp_path):
    """A rejected row kept whole can be far longer than the digest's read blocks (scoring reads
    records up to 256 MB): the digest reads it, where the read failed and the lines were left
    out. A reason naming a file whose name holds a line break counts as its kind too."""
    path = tmp_path / "rejects.csv"
    reasons = ["column 'age', value 'x': not a number; allowed: 12..100", "column 'sex', value 'y': not allowed",
               "record 4 of we\nird.csv (the header is record 1) has 2 fields; the header has 3"]
    pd.DataFrame({"reject_file": "in.csv", "reject_row": range(3), "reject_reason": reasons,
                  "note": ["a\n" * 600_000, "ok", ""]}).to_csv(path, index=False)  # a 1.2 MB field
    assert rejects_digest(path) == ["  commonest reasons: age: not a number (1 row), sex: not allowed (1 row), "
                                    "has the wrong number of fields (1 row)"]


def test_a_rows_problems_are_joined_in_the_order_found_whatever_the_rows_order():
    """reject_table's reasons against their definition: per row, its problems in the order the
    checks found them, " | "-joined (the checks run field by field, so rows come unsorted)."""
    import numpy as np
    import pyarrow as pa

    from pipeline.serve.writing import reject_schema, reject_table

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"age": [str(a) for a in range(200)], "sex": "x"})
    n = 600
    errors = pd.DataFrame({"row": 1000 + rng.integers(0, 200, n), "column": rng.choice(["age", "sex", ""], n),
                           "value": rng.choice(["NA", "it's", "a | b", ""], n), "reason": [f"problem {i}" for i in range(n)]})
    table = reject_table(errors, frame, row_offset=1000, file="in.csv", schema=reject_schema([["age", "sex"]]))
    expected = {}
    for row, column, value, reason in errors.itertuples(index=False):
        expected.setdefault(row, []).append(f"column {column!r}, value {value!r}: {reason}" if column else reason)
    assert table.column("reject_row").to_pylist() == sorted(expected)
    assert table.column("reject_reason").to_pylist() == [" | ".join(expected[r]) for r in sorted(expected)]
    assert table.column("age").to_pylist() == [str(r - 1000) for r in sorted(expected)]
    assert table.schema.field("reject_reason").type == pa.string()


def test_a_digest_says_how_many_other_kinds_of_reason_it_does_not_show(tmp_path):
    """The three commonest reasons alone read as if they were all: 14 rows rejected for 11 kinds of
    reason said nothing of the other 8, where `kneepain evaluate` counts them."""
    path = tmp_path / "rejects.csv"
    reasons = [f"column '{c}', value 'x': not allowed" for c in ("sex", "sex", "activity", "onset", "smoker")]
    pd.DataFrame({"reject_file": "in.csv", "reject_row": range(5), "reject_reason": reasons}).to_csv(path, index=False)
    assert rejects_digest(path) == ["  commonest reasons: sex: not allowed (2 rows), activity: not allowed (1 row), "
                                    "onset: not allowed (1 row); and 1 other kind of reason"]
    assert rejects_digest(path, top=1) == ["  commonest reasons: sex: not allowed (2 rows); and 3 other kinds of reason"]
