"""`kneepain score` as a Unix tool: standard input and output, chosen columns, input columns kept,
top-k, compact floats and texts as codes with their lookup file."""

import io
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.core.errors import BatchInputError
from pipeline.core.files import arrow_file
from pipeline.serve.batch import score_files
from pipeline.serve.loading import load_model
from pipeline.serve.predict import predict
from pipeline.serve.shaping import OutputOptions, rounded

P_COLS = [f"p_{c}" for c in ("leg_cramp", "bakers_cyst", "runners_knee", "hamstring_injury", "meniscus_tear",
                             "acl_injury", "pcl_injury", "dvt", "osteoarthritis")]
TEXTS = ["triage_reason", "advice", "safety_net", "ask_next"]


@pytest.fixture(scope="module")
def cases_csv(small_data, tmp_path_factory):
    cases = pd.read_parquet(small_data / "test.parquet").head(400)
    path = tmp_path_factory.mktemp("unix") / "in.csv"
    text = cases.astype(str).replace({"<NA>": "", "nan": ""})
    text.insert(1, "clinic", "north")
    text.to_csv(path, index=False)
    return path, cases


def _read(path_or_text) -> pd.DataFrame:
    return pd.read_csv(path_or_text, dtype=str, keep_default_na=False)


def test_codes_and_rounded_floats_decode_to_predict(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    out = tmp_path / "out.csv"
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet"]) == 0
    got, expected = _read(out), predict(cases, model=models)
    probs = got[P_COLS].to_numpy(float)
    assert np.abs(probs - expected[P_COLS].to_numpy(float)).max() <= 5e-7 + 1e-12
    assert all(len(v.split(".")[-1]) <= 6 for v in got["p_dvt"] if "e" not in v)
    lookup = _read(tmp_path / "out.csv.texts.csv")
    for column in TEXTS:
        table = dict(zip(lookup.loc[lookup["column"] == column, "code"], lookup.loc[lookup["column"] == column, "text"]))
        decoded = ["|".join(table[c] for c in v.split("|")) if v else "" for v in got[column]]
        assert decoded == expected[column].tolist(), column
    for column in ("prediction", "top3", "triage", "differential", "screen"):
        assert got[column].tolist() == expected[column].fillna("").tolist(), column
    assert out.stat().st_size < 0.5 * len(expected.to_csv(index=False))


def test_an_input_column_named_file_is_kept_under_another_name_with_one_input(trained, tmp_path):
    models, _ = trained
    src = tmp_path / "fc.csv"
    src.write_text("file,age,sex\nsource-A,30,male\nsource-B,40,female\n")
    for out in (tmp_path / "fc-out.csv", tmp_path / "fc-out.parquet"):
        assert main(["score", str(src), "-o", str(out), "--model", str(models), "--quiet", "--keep-input-columns"]) == 0
        got = _read(out) if out.suffix == ".csv" else pd.read_parquet(out)
        assert got["input_file"].tolist() == ["source-A", "source-B"], out.suffix
        assert "file" not in got.columns


def test_columns_keep_input_top_k_and_full_texts(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    out = tmp_path / "out.csv"
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--columns",
                 "case_id,prediction,p_dvt,triage,advice,top2,clinic,age", "--keep-input-columns", "--top-k", "2",
                 "--texts", "full", "--float-digits", "17"]) == 0
    got, expected = _read(out), predict(cases, model=models, top_k=2)
    assert list(got.columns) == ["case_id", "prediction", "p_dvt", "triage", "advice", "top2", "clinic", "age"]
    assert got["p_dvt"].astype(float).tolist() == expected["p_dvt"].tolist()  # every digit, same process
    assert got["advice"].tolist() == expected["advice"].tolist()
    assert got["top2"].tolist() == expected["top2"].tolist()
    assert set(got["clinic"]) == {"north"}
    assert got["age"].tolist() == cases["age"].astype(str).tolist()
    assert not (tmp_path / "out.csv.texts.csv").exists()  # and an earlier run's lookup is removed:
    (tmp_path / "out.csv.texts.csv").write_text("column,code,text\n")
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--texts", "full"]) == 0
    assert not (tmp_path / "out.csv.texts.csv").exists()
    # codes, but no coded column among those written: no lookup goes with the output
    for columns, lookup in (("case_id,advice", True), ("case_id,prediction,triage", False)):
        assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--columns", columns]) == 0
        assert (tmp_path / "out.csv.texts.csv").exists() == lookup, columns


def test_chosen_columns_are_all_that_is_computed(trained, cases_csv, tmp_path, monkeypatch):
    """Scoring only the triage does not search for the questions to ask next (most of the decision
    layer's time): the columns written are those of a full run."""
    from pipeline.decision.safety import SafetyNet

    models, _ = trained
    path, cases = cases_csv
    full, out = tmp_path / "full.csv", tmp_path / "out.csv"
    chosen = ["case_id", "prediction", "p_dvt", "triage"]
    assert main(["score", str(path), "-o", str(full), "--model", str(models), "--quiet"]) == 0

    def not_needed(*args, **kwargs):
        raise AssertionError("ask_next computed for an output without it")

    monkeypatch.setattr(SafetyNet, "ask_next", not_needed)
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--columns",
                 ",".join(chosen)]) == 0
    pd.testing.assert_frame_equal(_read(out), _read(full)[chosen])
    # and it is computed when asked for
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--columns",
                 "case_id,ask_next"]) != 0


def test_kept_input_columns_never_lose_one_to_a_name_clash(trained, tmp_path, capsys):
    """An input holding ``triage`` and ``input_triage`` (an earlier output scored again) keeps both."""
    from pipeline.serve.shaping import input_columns

    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text("case_id,age,sex,triage,input_triage,Row,note\nA,30,male,T1,IT1,R1,hello\n")
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models), "--quiet",
                 "--keep-input-columns"]) == 0
    got = _read(tmp_path / "out.csv")
    kept = got.iloc[0][["input_input_triage", "input_triage", "input_Row", "note"]].tolist()
    assert kept == ["T1", "IT1", "R1", "hello"] and got.iloc[0]["triage"] in {"self_care", "see_doctor",
                                                                               "see_doctor_soon", "emergency"}
    assert "ignoring columns" not in capsys.readouterr().err  # they are kept, not ignored
    names = input_columns(["triage", "input_triage", "input_input_triage", "x"], ["triage", "row"])
    assert names == {"triage": "input_input_input_triage", "input_triage": "input_triage",
                     "input_input_triage": "input_input_triage", "x": "x"}
    # across inputs too: one's triage and another's input_triage stay two columns; Note and note are one
    other = tmp_path / "other.csv"
    other.write_text("case_id,age,sex,input_triage,Note\nB,40,male,IT2,hi\n")
    first = tmp_path / "first.csv"
    first.write_text("case_id,age,sex,triage,note\nA,30,male,T1,hello\n")
    assert main(["score", str(first), str(other), "-o", str(tmp_path / "two.csv"), "--model", str(models), "--quiet",
                 "--keep-input-columns"]) == 0
    got = _read(tmp_path / "two.csv")
    assert got["input_input_triage"].tolist() == ["T1", ""] and got["input_triage"].tolist() == ["", "IT2"]
    assert got["note"].tolist() == ["hello", "hi"] and "Note" not in got.columns
    # a column an input lacks holds no value in its rows, not an empty text
    assert main(["score", str(first), str(other), "-o", str(tmp_path / "two.parquet"), "--model", str(models),
                 "--quiet", "--keep-input-columns"]) == 0
    got = pq.read_table(tmp_path / "two.parquet")
    assert got["input_input_triage"].to_pylist() == ["T1", None] and got["input_triage"].to_pylist() == [None, "IT2"]


def test_columns_name_a_kept_column_with_a_comma_in_double_quotes(trained, tmp_path, capsys):
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text('case_id,age,sex,"note, free"\nA,30,male,hello\n')
    out = tmp_path / "out.csv"
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--quiet", "--keep-input-columns",
                 "--columns", 'case_id, "note, free" ,triage']) == 0
    assert list(_read(out).columns) == ["case_id", "note, free", "triage"] and _read(out)["note, free"][0] == "hello"
    # the choices are listed as --columns takes them
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--keep-input-columns",
                 "--columns", "case_id,note"]) == 2
    assert ',"note, free"' in capsys.readouterr().err


def test_keep_input_columns_with_columns_naming_none_of_them_is_an_error(trained, tmp_path, capsys):
    """``--keep-input-columns`` with ``--columns`` that names none of the input's columns would keep
    nothing: the job stops before writing, naming the columns it could keep."""
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text("case_id,age,sex,clinic\nA,30,male,north\n")
    out = tmp_path / "out.csv"
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--keep-input-columns",
                 "--columns", "case_id,triage"]) == 2
    err = capsys.readouterr().err.strip()
    # the case id, an input column, is the output's own: not one the flag adds
    assert "names none of the columns --keep-input-columns adds (the input's columns other than a case_id" in err
    assert "so the flag would keep none" in err and "clinic" in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.csv.rejects.csv").exists()
    # an input without a case id is not said to have one
    bare = tmp_path / "bare.csv"
    bare.write_text("age,sex,clinic\n30,male,north\n")
    assert main(["score", str(bare), "-o", str(out), "--model", str(models), "--keep-input-columns",
                 "--columns", "row,triage"]) == 2
    err = capsys.readouterr().err.strip()
    assert "(the input's columns other than a case_id, which" in err and "its case_id" not in err
    # one kept column named is enough
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--quiet", "--keep-input-columns",
                 "--columns", "case_id,triage,clinic"]) == 0
    assert _read(out)["clinic"].tolist() == ["north"]


def test_columns_take_a_quoted_name_with_its_spaces_as_the_choices_list_it(trained, tmp_path, capsys):
    """A kept column `` Extra `` is chosen by quoting it; the error that lists the choices quotes it
    too, so a choice copied from the message is taken."""
    from pipeline.serve.shaping import column_list, parse_column_list

    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text('case_id,age,sex, Extra \nA,30,male,kept\n')
    out = tmp_path / "out.csv"
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--quiet", "--keep-input-columns",
                 "--columns", 'case_id," Extra "']) == 0
    assert _read(out)[" Extra "].tolist() == ["kept"]
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--keep-input-columns",
                 "--columns", "case_id,Extra"]) == 2
    assert '," Extra ".' in capsys.readouterr().err  # quoted, as --columns takes it
    names = ("a", " b ", "c, d", 'e"f', "g h")
    assert parse_column_list(column_list(names)) == names
    assert parse_column_list(' a , "b ""c""" ,d') == ("a", 'b "c"', "d")


def test_columns_with_a_quote_left_open_are_refused_not_read_as_one_name(trained, tmp_path, capsys):
    """``"case_id`` (a quote typed and not closed) was read as ``case_id``, and ``"note,triage`` as
    one name ``note,triage``: the quote is named, nothing is written."""
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text("case_id,age,sex,note\nA,30,male,x\n")
    out = tmp_path / "out.csv"
    for columns, at in (('"case_id', 1), ('case_id, "note,triage', 10)):
        assert main(["score", str(src), "-o", str(out), "--model", str(models), "--keep-input-columns",
                     "--columns", columns]) == 2
        err = capsys.readouterr().err
        assert f"the quote at character {at} is not closed" in err and err.count("\n") == 1, err
        assert not out.exists()


def test_unknown_column_is_one_line_naming_the_choices(trained, cases_csv, tmp_path, capsys):
    models, _ = trained
    path, _ = cases_csv
    assert main(["score", str(path), "-o", str(tmp_path / "o.csv"), "--model", str(models),
                 "--columns", "case_id,p_flu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'p_flu' is not an output column" in err and "p_dvt" in err and len(err.splitlines()) == 1
    # a file without ids has no case_id column to choose, and the message says why
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text("age,sex\n40,male\n")
    assert main(["score", str(no_ids), "-o", str(tmp_path / "n.csv"), "--model", str(models),
                 "--columns", "case_id,triage"]) == 2
    assert ("--columns: 'case_id' is not an output column (the cases have no case_id column: 'row' numbers "
            "them); choose from row,") in capsys.readouterr().err
    for flags, message in [(["--top-k", "10"], "--top-k == 10, must be an integer in 1..9."),
                           (["--float-digits", "18"], "--float-digits == 18, must be in 0..17 (17 keeps every digit)."),
                           (["--float-digits", "-1"], "--float-digits == -1, must be in 0..17"),
                           (["--block-mb", "5"], "--block-mb: for --engine dask only."),
                           (["--format", "csv", "--scheduler", "tcp://127.0.0.1:1"],
                            "--scheduler, --format: for --engine dask only."),
                           (["--engine", "dask", "--block-mb", "0"],
                            "--block-mb == 0, must be a finite size of at least one byte"),
                           (["--engine", "dask", "--block-mb", "1e-7"], "--block-mb == 1e-07, must be a finite size"),
                           (["--engine", "dask", "--block-mb", "nan"], "--block-mb == nan, must be a finite size"),
                           (["--engine", "dask", "--block-mb", "inf"], "--block-mb == inf, must be a finite size"),
                           (["--jobs", "1000000000000"], "--jobs == 1000000000000, must be in 0.."),
                           (["--columns", ","], "--columns ',': a name is empty"),
                           (["--columns", "case_id,,triage"], "--columns 'case_id,,triage': a name is empty"),
                           # given at all, whatever the value: the Dask engine writes every column and digit
                           *((["--engine", "dask", flag, value], "are for --engine pandas; the Dask engine writes the "
                             "full output") for flag, value in [("--float-digits", "0"), ("--top-k", "3"),
                                                                ("--columns", "case_id"), ("--texts", "full")])]:
        assert main(["score", str(path), "-o", str(tmp_path / "o.csv"), "--model", str(models), *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (flags, err)
    assert not (tmp_path / "o.csv").exists()
    # a Parquet output keeps floats whole: the option would be ignored without a word
    assert main(["score", str(path), "-o", str(tmp_path / "o.parquet"), "--model", str(models), "--float-digits", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("--float-digits 2: rounds a CSV output; a Parquet output keeps "
                                                    "every float whole (as --float-digits 17 does).")
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("options, problem", [
    ({"top_k": 2.5}, r"top_k == 2.5, must be an integer in 1..9"),
    ({"top_k": True}, r"top_k == True, must be an integer"),
    ({"top_k": 10}, r"top_k == 10, must be an integer in 1..9"),
    ({"float_digits": 2.5}, r"float_digits == 2.5, must be None or an integer in 0..17"),
    ({"float_digits": False}, r"float_digits == False, must be None or an integer"),
])
def test_output_options_refuse_what_is_not_a_whole_number(options, problem):
    """Scoring from Python: a count that is not a whole number fails where it is given, not mid-file."""
    from pipeline.core.errors import BatchInputError

    with pytest.raises(BatchInputError, match=problem):
        OutputOptions(**options)


def test_output_options_take_numpy_integers():
    options = OutputOptions(top_k=np.int64(4), float_digits=np.int32(3))
    assert (options.top_k, options.float_digits) == (4, 3)


def test_float_digits_write_at_most_that_many_decimals(trained, cases_csv, tmp_path):
    """Each written probability is its full number rounded half to even to that many places, and
    written with no more decimals than that (every digit a decision needs is in the 6 of the default)."""
    models, _ = trained
    path, cases = cases_csv
    full = predict(cases, model=models)[P_COLS].to_numpy(float)
    for digits in (3, 6, 12, 15):
        out = tmp_path / f"d{digits}.csv"
        assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet", "--columns",
                     ",".join(P_COLS), "--float-digits", str(digits)]) == 0
        text = _read(out)[P_COLS]
        written = text.to_numpy(float)
        assert np.array_equal(written, np.reshape([round(v, digits) for v in full.ravel().tolist()], full.shape)), digits
        assert np.abs(written - full).max() <= 0.5 * 10.0 ** -digits + 4e-16, digits  # and a float's spacing
        decimals = [len(v.split(".")[1]) if "." in v and "e" not in v else 0 for v in text.to_numpy().ravel()]
        assert max(decimals) <= digits and max(decimals) >= digits - 1, (digits, max(decimals))


@pytest.mark.parametrize("digits", range(18))
def test_floats_are_rounded_as_python_rounds_them_at_every_digit(digits):
    """Half to even from each double's exact value (Python's ``round``), also where numpy's
    scale-round-divide is off by one in the last place (from about 12 decimals on)."""
    rng = np.random.default_rng(digits)
    values = np.concatenate([rng.random(20_000), rng.random(2_000) * 1e-4, -rng.random(500), rng.random(500) * 1e6,
                             [0.125, 2.675, 0.5, 1.5, 2.5, -0.125, 0.0, -0.0, 1e-300, 5e-324, 1.7e308,
                              0.9999873731785001, 0.9798140340786081, 0.9938154732953417,
                              # around 2**53 scaled, where a value becomes its own rounding at 16 and 17
                              np.nextafter(2.0**53 / 1e16, 0), 2.0**53 / 1e16, 0.9007199254740993,
                              0.0900719925474099, 2.0**52 / 1e16]])
    expected = np.array([round(v, digits) for v in values.tolist()])
    assert np.array_equal(rounded(values, digits), expected)
    special = rounded(np.array([np.nan, np.inf, -np.inf]), digits)
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == -np.inf
    if digits == 16:  # the numbers numpy rounded wrongly
        assert rounded(np.array([0.9798140340786081]), 16)[0] == 0.9798140340786081
    if digits == 12:
        assert rounded(np.array([0.9999873731785001]), 12)[0] == 0.999987373179


def test_standard_input_is_any_stream_read_as_its_reader_gives_it(trained, cases_csv, tmp_path):
    """``score_files(["-"], stdin=...)`` scores the bytes the stream gives: a gzip stream's
    unpacked rows, a reader's rows after a ``peek`` (its buffer first, then its descriptor), a
    subprocess's or a socket's output, a text stream's bytes whatever its encoding and newlines,
    text; the same output as the file's, byte for byte (its input columns kept)."""
    import gzip
    import threading

    models, _ = trained
    path, _ = cases_csv
    model, kept = load_model(models), OutputOptions(keep_input=True)
    text = path.read_bytes().replace(b"\n", b"\r\n").replace(b",north,", ',"nor\r\nthé",'.encode(), 3)
    path = tmp_path / "in.csv"  # CR LF, and a kept text with a line break and a letter outside ASCII
    path.write_bytes(text)
    score_files([path], tmp_path / "file.csv", model, options=kept)
    expected = (tmp_path / "file.csv").read_bytes()
    assert "nor\r\nthé".encode() in expected
    with gzip.open(tmp_path / "in.csv.gz", "wb") as fh:
        fh.write(text)

    def scored(stdin) -> bytes:
        score_files(["-"], tmp_path / "out.csv", model, stdin=stdin, options=kept)
        return (tmp_path / "out.csv").read_bytes()

    with gzip.open(tmp_path / "in.csv.gz", "rb") as stdin:
        assert scored(stdin) == expected
    with open(path, "rb") as stdin:
        assert stdin.peek(1)[:7] == b"case_id"  # the reader's buffer holds the header and more
        assert scored(stdin) == expected
    # text: what the stream gives, as it decodes it (sys.stdin, say, in another encoding, after a
    # title line was read from it; newline="" keeps the line breaks inside a kept text)
    titled = tmp_path / "latin-1.csv"
    titled.write_bytes(b"# exported by the clinic\r\n" + text.decode().encode("latin-1"))
    with open(titled, encoding="latin-1", newline="") as stdin:
        assert stdin.readline() == "# exported by the clinic\r\n"
        assert scored(stdin) == expected
    assert scored(io.StringIO(text.decode(), newline="")) == expected
    r, w = os.pipe()  # a stream that has nothing yet (None) is waited for, not taken for its end
    os.set_blocking(r, False)

    def trickle() -> None:
        with open(w, "wb", buffering=0) as fh:
            for start in range(0, len(text), 4096):
                fh.write(text[start:start + 4096])
                time.sleep(0.002)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    with io.BufferedRWPair(io.FileIO(r), io.BytesIO()) as stdin:
        assert scored(stdin) == expected
    feeder.join(timeout=60)
    feeder = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    try:
        assert feeder.stdout.peek(1)[:7] == b"case_id"
        assert scored(feeder.stdout) == expected
    finally:
        feeder.stdout.close()
        feeder.wait(timeout=30)
    # a socket's reader, fed by a writer that first fills a named pipe of the same job: both are
    # read at once (read in turn, the job would wait for ever; after 60 s the socket is closed).
    # The second input's ids repeat the first's: its rows are rejected
    os.mkfifo(tmp_path / "pipe.csv")
    a, b = socket.socketpair()

    def write() -> None:
        with open(tmp_path / "pipe.csv", "wb") as fh:
            fh.write(text)
        b.sendall(text)
        b.close()

    rescued = threading.Event()

    def rescue() -> None:
        rescued.set()
        b.close()

    writer, timer = threading.Thread(target=write), threading.Timer(60, rescue)
    writer.start()
    timer.start()
    try:
        with a, a.makefile("rb") as stdin:
            both = score_files([tmp_path / "pipe.csv", "-"], tmp_path / "out.csv", model, stdin=stdin)
    finally:
        timer.cancel()
        writer.join(timeout=60)
    assert not rescued.is_set() and both.rows_scored == both.rows_rejected == len(_read(io.BytesIO(expected)))
    with pytest.raises(BatchInputError, match=r"^-: cannot read standard input: the stream given is not open for "
                                              r"reading\.$"):
        scored(io.BufferedWriter(io.BytesIO()))
    with pytest.raises(BatchInputError, match=r"^-: cannot read standard input: 'utf-8' codec can't encode"):
        scored(io.StringIO("case_id,age,sex\na1,30,\ud800\n"))
    closed = io.BytesIO(text)
    closed.close()
    with pytest.raises(BatchInputError, match=r"^-: standard input is closed"):
        scored(closed)
    with open(os.open(tmp_path / "write-only", os.O_WRONLY | os.O_CREAT), "rb") as stdin, pytest.raises(
            BatchInputError, match=r"^-: cannot read standard input: Bad file descriptor\.$"):
        scored(stdin)  # a reader over a descriptor open for writing only


def test_stdin_to_stdout_with_rejects_beside(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    text = path.read_text()
    lines = text.splitlines()
    bad = lines[1].split(",")
    bad[lines[0].split(",").index("sex")] = "femal"
    data = "\n".join([lines[0], ",".join(bad), *lines[2:]]) + "\n"
    out = io.BytesIO()
    summary = score_files(["-"], "-", load_model(models), stdin=io.BytesIO(data.encode()), stdout=out,
                          rejects=tmp_path / "r.csv", options=OutputOptions(columns=("row", "case_id", "triage")))
    got = _read(io.StringIO(out.getvalue().decode()))
    assert summary.rows_rejected == 1 and len(got) == len(cases) - 1
    assert got["row"].astype(int).tolist() == list(range(1, len(cases)))
    bad = _read(tmp_path / "r.csv")
    assert bad["reject_file"].tolist() == ["<stdin>"] and bad["sex"].tolist() == ["femal"]


def test_stdout_in_codes_gets_its_lookup_beside_the_rejects(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    out = io.BytesIO()
    score_files([path], "-", load_model(models), stdout=out, rejects=tmp_path / "r.csv",
                options=OutputOptions(texts="codes"))
    got = _read(io.StringIO(out.getvalue().decode()))
    lookup = _read(tmp_path / "score.texts.csv")
    advice = dict(zip(lookup.loc[lookup["column"] == "advice", "code"], lookup.loc[lookup["column"] == "advice", "text"]))
    assert [advice[c] for c in got["advice"]] == predict(cases, model=models)["advice"].tolist()


def test_a_compressed_or_misnamed_input_says_how_to_mend_it(trained, tmp_path):
    """`cases.csv.gz` was "unsupported file type '.gz'" alone: the gzip hint came only for gzip
    data named .csv. Both engines now say what the file is, by its first bytes, and what to do."""
    import gzip

    from pipeline.serve.dask import _expand_inputs

    models, _ = trained
    (tmp_path / "cases.csv.gz").write_bytes(gzip.compress(b"age,sex\n30,male\n"))
    (tmp_path / "cases.xlsx").write_bytes(b"PK\x03\x04rest")
    (tmp_path / "cases.pq").write_bytes(b"PAR1rest")
    (tmp_path / "cases.txt").write_bytes(b"age,sex\n30,male\n")
    for name, told in [("cases.csv.gz", "'.gz'; expected .csv or .parquet: it is a gzip-compressed file (by its first "
                                        "bytes); decompress it first, for example: zcat FILE.gz > FILE.csv"),
                       ("cases.xlsx", "'.xlsx'; expected .csv or .parquet: it is a zip (or Excel .xlsx) file"),
                       ("cases.pq", "'.pq'; expected .csv or .parquet: it is a Parquet file (by its first bytes); give "
                                    "it a .parquet name"),
                       ("cases.txt", "'.txt'; expected .csv or .parquet.")]:
        for engine in (lambda p: score_files([p], tmp_path / "o.csv", load_model(models)), _expand_inputs):
            with pytest.raises(BatchInputError, match=re.escape(f"{tmp_path / name}: unsupported file type {told}")):
                engine(str(tmp_path / name))
    assert not (tmp_path / "o.csv").exists()


def test_a_url_is_named_as_given_and_said_to_be_read_locally(trained, tmp_path, capsys, monkeypatch):
    """``s3://bucket/cases.csv`` was "s3:/bucket/cases.csv: no such file" (a path folds the
    slashes): now named as given, with what to do."""
    models, _ = trained
    for url in ("s3://bucket/cases.csv", "https://example.org/data/cases.parquet"):
        told = f"{url}: looks like a URL, and kneepain reads local files only; download it first"
        assert main(["score", url, "-o", str(tmp_path / "o.csv"), "--model", str(models)]) == 2
        assert told in capsys.readouterr().err
        with pytest.raises(BatchInputError, match=re.escape(told)):
            predict(url, model=models)
    assert main(["score", "--engine", "dask", "s3://bucket/*.csv", "-o", str(tmp_path / "out"),  # a glob
                 "--model", str(models)]) == 2
    assert "s3://bucket/*.csv: looks like a URL, and kneepain reads local files only" in capsys.readouterr().err
    with pytest.raises(BatchInputError, match=re.escape("file:/data/cases.csv: a file URL; give the path itself "
                                                        "(/data/cases.csv).")):
        predict("file:///data/cases.csv", model=models)
    monkeypatch.chdir(tmp_path)  # `ab:` is a local folder here: `ab:/x.csv` is its missing file, named as given
    (tmp_path / "ab:").mkdir()
    with pytest.raises(BatchInputError, match=re.escape("ab:/x.csv: no such file.")):
        predict("ab:/x.csv", model=models)
    assert not (tmp_path / "o.csv").exists()


def test_a_spreadsheets_separator_hint_is_named_as_such(trained, tmp_path):
    """Excel's `sep=,` first line was reported as the required columns missing (`sep=;` as a file
    separated by semicolons): the refusal names the line and says to remove it."""
    models, _ = trained
    for hint, rows in [("sep=,", "case_id,age,sex\na1,30,male\n"), ("sep=;", "case_id;age;sex\na1;30;male\n")]:
        path = tmp_path / "hinted.csv"
        path.write_text(f"{hint}\n{rows}")
        with pytest.raises(BatchInputError, match=re.escape(f"{path}: the first line, {hint!r}, is a spreadsheet's "
                                                            "separator hint, not the header: remove that line")):
            score_files([path], tmp_path / "o.csv", load_model(models))
    assert not (tmp_path / "o.csv").exists()


def test_standard_input_is_named_as_given_in_errors(trained, tmp_path):
    from pipeline.core.errors import BatchInputError

    models, _ = trained
    for data, message in [(b"", "<stdin>: the file is empty"), (b"age,Age\n1,2\n", "<stdin>: the header repeats"),
                          (b"PAR1\x15\x04\x15", re.escape("<stdin>: is a Parquet file, not CSV text (by its first "
                                                           "bytes); save it to a file with a .parquet name and give "
                                                           "that file (standard input is read as CSV only).")),
                          (b"\x1f\x8b\x08\x00", re.escape("<stdin>: is a gzip-compressed file, not CSV text (by its "
                                                         "first bytes); decompress it first"))]:
        with pytest.raises(BatchInputError, match=message) as err:
            score_files(["-"], tmp_path / "o.csv", load_model(models), stdin=io.BytesIO(data))
        assert "kneepain-stdin" not in str(err.value)
    # a malformed record's reason names standard input too; a file of the spool's name is itself
    out = io.BytesIO()
    score_files(["-"], "-", load_model(models), stdin=io.BytesIO(b"case_id,age,sex\na1,40,male,extra\n"), stdout=out,
                rejects=tmp_path / "r.csv")
    reason = _read(tmp_path / "r.csv")["reject_reason"].iloc[0]
    assert "of <stdin> (the header is record 1)" in reason and "kneepain-stdin" not in reason
    named = tmp_path / "kneepain-stdin.csv"
    named.write_text("case_id,age,sex\na1,400,male\n")
    score_files([named], tmp_path / "o.csv", load_model(models))
    assert _read(tmp_path / "o.csv.rejects.csv")["reject_file"].tolist() == [str(named)]


@pytest.mark.slow
def test_a_pipe_between_processes(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    kneepain = Path(sys.executable).with_name("kneepain")
    proc = subprocess.run(f"cat {path} | {kneepain} score - -o - --model {models} --columns case_id,triage | head -3",
                          shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.stdout.splitlines()[0] == '"case_id","triage"'
    assert len(proc.stdout.splitlines()) == 3


def test_a_reader_that_stops_early_still_has_the_codes_lookup(trained, cases_csv, tmp_path):
    """``kneepain score in.csv -o - | head``: the rows read are in codes, and the lookup of their
    texts is written before the first row (it was written at the end, so never, and an earlier
    run's was left to describe them); one that cannot be written is named, not the output."""
    from processes import limit_file_size

    models, _ = trained
    path, _ = cases_csv
    command = [str(Path(sys.executable).with_name("kneepain")), "score", str(path), "-o", "-", "--model", str(models)]
    (tmp_path / "full").mkdir()
    subprocess.run(command, stdout=subprocess.DEVNULL, cwd=tmp_path / "full", check=True, timeout=120)
    (tmp_path / "score.texts.csv").write_text("an earlier run's lookup\n")
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    first = [job.stdout.readline() for _ in range(3)]
    job.stdout.close()  # as head does
    assert job.wait(timeout=120) == 2 and len(first[2]) > 0
    assert (tmp_path / "score.texts.csv").read_bytes() == (tmp_path / "full" / "score.texts.csv").read_bytes()
    (tmp_path / "cut").mkdir()
    with open(tmp_path / "cut" / "out.csv", "wb") as out:
        cut = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, text=True, cwd=tmp_path / "cut",
                             preexec_fn=limit_file_size, timeout=120)
    assert cut.returncode == 2 and "score.texts.csv: cannot write the texts lookup: File too large." in cut.stderr
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [".score.rejects.csv.lock", ".score.texts.csv.lock",
                                                                     "out.csv"]  # no temporary


def test_messages_never_reach_standard_output_nor_change_the_exit_code(trained, tmp_path):
    """With standard error closed (``2>&-``), Python has no stream for it and a print to it went to
    standard output: the summary, the rejects' digest and the ignored-columns warning landed in the
    CSV written there. With it full (``2>/dev/full``), a warning before the first row stopped a
    sound job, and the summary after the output made a complete one exit 2. Messages that cannot
    be written are dropped; the output and the exit code are the job's."""
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text("case_id,age,sex,note,knee_swelling\na,30,male,x,yes\nb,40,female,y,NA\nc,50,female,z,no\n")
    command = [str(Path(sys.executable).with_name("kneepain")), "score", str(src), "--model", str(models)]
    closed = subprocess.run([*command, "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(2), cwd=tmp_path, timeout=120)
    assert closed.returncode == 1  # one row rejected
    rows = _read(io.BytesIO(closed.stdout))
    assert rows["case_id"].tolist() == ["a", "c"] and closed.stdout.startswith(b'"row","case_id",')
    # standard output closed too: fatal, and said so by the exit code alone (it was 1, from a traceback)
    both = subprocess.run([*command, "-o", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          preexec_fn=lambda: (os.close(1), os.close(2)), cwd=tmp_path, timeout=120)
    assert both.returncode == 2
    if not Path("/dev/full").exists():
        return
    for name, code in (("out.csv", 1), ("quiet.csv", 1)):
        with open("/dev/full", "w") as full:
            job = subprocess.run([*command, "-o", str(tmp_path / name), *(["--quiet"] if name == "quiet.csv" else [])],
                                 stderr=full, cwd=tmp_path, timeout=120)
        assert job.returncode == code, name
        assert _read(tmp_path / name)["case_id"].tolist() == ["a", "c"]
        assert _read(tmp_path / f"{name}.rejects.csv")["case_id"].tolist() == ["b"]


def test_file_names_that_are_not_utf8_are_read_written_and_named(trained, cases_csv, tmp_path, capsys):
    """A name from a Latin-1 archive (``caf\\xe9.csv``): Arrow took a name only as UTF-8 text, so
    such an input could not be scored and such an output was written and then reported as an
    unexpected error (exit 2). Both work, as a plainly named file does, and the rejects, the
    report and the messages name the file with its odd byte as ``\\xNN``."""
    models, _ = trained
    path, cases = cases_csv
    name = lambda text: tmp_path / os.fsdecode(text.encode("latin-1"))
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",female,", ",robot,").replace(",male,", ",robot,")  # one rejected row
    (tmp_path / "plain.csv").write_text("\n".join(lines) + "\n")
    name("caf\xe9.csv").write_text("\n".join(lines) + "\n")
    _read(tmp_path / "plain.csv").to_parquet(tmp_path / "plain.parquet")
    (tmp_path / "plain.parquet").rename(name("caf\xe9.parquet"))
    assert main(["score", str(tmp_path / "plain.csv"), "-o", str(tmp_path / "plain-out.csv"), "--model", str(models),
                 "--quiet"]) == 1
    capsys.readouterr()
    for kind in ("csv", "parquet"):
        out = name(f"r\xe9sultat.{kind}")
        code = main(["score", str(name(f"caf\xe9.{kind}")), "-o", str(out), "--model", str(models),
                     "--report", str(name("r\xe9p.html"))])
        err = capsys.readouterr().err
        assert code == 1 and "unexpected" not in err, err
        assert f"-> {tmp_path}/r\\xe9sultat.{kind}" in err
        rejects = _read(f"{out}.rejects.csv")
        assert rejects["reject_file"].tolist() == [f"{tmp_path}/caf\\xe9.{kind}"] and rejects["reject_row"].tolist() == ["2"]
        got = _read(out) if kind == "csv" else pq.read_table(arrow_file(out)).to_pandas()
        assert len(got) == len(cases) - 1
        assert f"caf\\xe9.{kind}" in name("r\xe9p.html").read_text()
    assert _read(name("r\xe9sultat.csv")).equals(_read(tmp_path / "plain-out.csv"))
    name("clean\xe9.csv").write_bytes(path.read_bytes())
    pd.testing.assert_frame_equal(predict(str(name("clean\xe9.csv")), model=models), predict(str(path), model=models))


@pytest.mark.parametrize("python", ["unbuffered", "buffered"])
def test_standard_output_is_written_whole_or_the_job_fails(trained, cases_csv, tmp_path, python):
    """Run unbuffered (``PYTHONUNBUFFERED``, ``python -u``, as many container images set it),
    standard output was the raw file: at a file-size limit a write took part of a chunk, the rest
    was lost and the job said every row was scored (exit 0); into a non-blocking pipe read slowly,
    most rows were lost. Now every byte is written or the job fails, naming why; buffered alike."""
    from processes import limit_file_size

    models, _ = trained
    path, cases = cases_csv
    # the full texts: with codes, their lookup (written first) would meet the file-size limit before the rows
    command = [str(Path(sys.executable).with_name("kneepain")), "score", str(path), "-o", "-", "--model", str(models),
               "--texts", "full"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if python == "unbuffered":
        env["PYTHONUNBUFFERED"] = "1"

    with open(tmp_path / "cut.csv", "wb") as out:
        cut = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                             preexec_fn=limit_file_size, timeout=120)
    assert cut.returncode == 2 and "-: cannot write: File too large." in cut.stderr
    read, write = os.pipe()
    os.set_blocking(write, False)
    job = subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    os.close(write)
    data = b""
    while block := os.read(read, 4096):  # slower than the job writes: the pipe fills
        data += block
        time.sleep(0.001)
    os.close(read)
    assert job.wait(timeout=120) == 0, job.stderr.read()
    rows = _read(io.BytesIO(data))
    assert rows["row"].tolist() == [str(i) for i in range(len(cases))]


def _fed_pipe(pipe: Path, source: Path) -> subprocess.Popen:
    """A named pipe fed ``source``'s bytes by another process (ended by :func:`_ended`)."""
    os.mkfifo(pipe)
    return subprocess.Popen(["sh", "-c", 'cat "$1" > "$2"', "sh", str(source), str(pipe)])


def _ended(feeder: subprocess.Popen) -> int | None:
    """Stop a pipe's feeder that is still waiting for a reader; its exit code if it finished."""
    try:
        return feeder.wait(timeout=5)
    except subprocess.TimeoutExpired:
        feeder.kill()
        feeder.wait()
        return None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_copied_and_scored_as_its_file_is(trained, cases_csv, tmp_path, monkeypatch):
    """A named pipe (what ``<(...)`` gives too) is read to its end into a temporary copy, then
    scored as the file it came from, and named as given in the rejects; a ``.parquet`` one is
    read as Parquet, one of any other name as CSV. ``predict()`` and the Dask engine read a file
    by name more than once, so they refuse a pipe, and say what to do."""
    import tempfile

    models, _ = trained
    path, _ = cases_csv
    spooled = tmp_path / "tmp"
    spooled.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spooled))
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text() + "zz1,north,40,male\n")  # one row to reject (too few fields)
    expected = tmp_path / "expected.csv"
    assert main(["score", str(bad), "-o", str(expected), "--model", str(models), "--quiet"]) == 1
    feeder = _fed_pipe(tmp_path / "cases.csv", bad)
    assert main(["score", str(tmp_path / "cases.csv"), "-o", str(tmp_path / "out.csv"), "--model", str(models),
                 "--quiet"]) == 1
    assert _ended(feeder) == 0
    assert (tmp_path / "out.csv").read_bytes() == expected.read_bytes()
    # the rejects name the pipe, in their file column and their reasons
    assert _read(tmp_path / "out.csv.rejects.csv")["reject_file"].tolist() == [str(tmp_path / "cases.csv")]
    assert (tmp_path / "out.csv.rejects.csv").read_text() == \
        (tmp_path / "expected.csv.rejects.csv").read_text().replace(str(bad), str(tmp_path / "cases.csv"))
    parquet = tmp_path / "cases.parquet"
    pd.read_csv(path, dtype=str, keep_default_na=False).to_parquet(parquet)
    feeder = _fed_pipe(tmp_path / "piped.parquet", parquet)
    assert main(["score", str(tmp_path / "piped.parquet"), "-o", str(tmp_path / "p.csv"), "--model", str(models),
                 "--quiet"]) == 0
    assert _ended(feeder) == 0
    assert len(_read(tmp_path / "p.csv")) == len(_read(path))
    feeder = _fed_pipe(tmp_path / "cases.fifo", path)  # any other name is CSV
    assert main(["score", str(tmp_path / "cases.fifo"), "-o", str(tmp_path / "f.csv"), "--model", str(models),
                 "--quiet"]) == 0
    assert _ended(feeder) == 0
    assert (tmp_path / "f.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
    with pytest.raises(BatchInputError, match=r"cases.csv: is a pipe, not a file, .* save its rows to a file, or "
                                              r"score it with `kneepain score` and its pandas engine"):
        predict(tmp_path / "cases.csv", model=models)  # refused before it is opened: nothing waits for a writer
    assert os.listdir(spooled) == []  # the copies are removed


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_read_twice_is_refused_before_it_is_read(trained, cases_csv, tmp_path, capsys):
    """A pipe gives its rows once: given twice, or as ``-`` and by name (``/dev/stdin``), the
    second read would find none, so the job is refused before it reads anything; ``--report``
    and ``--adapt-priors`` read their inputs twice."""
    models, _ = trained
    path, _ = cases_csv
    feeder = _fed_pipe(tmp_path / "cases.csv", path)
    out = ["-o", str(tmp_path / "out.csv"), "--model", str(models)]
    assert main(["score", str(tmp_path / "cases.csv"), str(tmp_path / "cases.csv"), *out]) == 2
    assert ("cases.csv: is given twice as an input, and a pipe gives its rows once, so the second read would find "
            "none" in capsys.readouterr().err)
    assert feeder.poll() is None  # still waiting for a reader: nothing opened the pipe
    with open(tmp_path / "cases.csv", "rb") as fh:  # standard input is that pipe
        with pytest.raises(BatchInputError, match=re.escape(f"-: standard input is the pipe {tmp_path / 'cases.csv'}, "
                                                            "which gives its rows once")):
            score_files(["-", tmp_path / "cases.csv"], tmp_path / "out.csv", load_model(models), stdin=fh)
        assert fh.read() == path.read_bytes()  # nothing was taken from the pipe
    assert _ended(feeder) == 0
    assert main(["score", str(tmp_path / "cases.csv"), *out, "--report", str(tmp_path / "r.html")]) == 2
    assert "give files, not - (standard input or output) or a pipe" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv"]


@pytest.mark.slow
def test_process_substitution_scores_several_pipes_into_one_output(trained, cases_csv, tmp_path):
    """``kneepain score <(zcat a.csv.gz) <(zcat b.csv.gz) -o out.csv``: what one standard input
    cannot carry. Each pipe is named by its ``/dev/fd`` path in the ``file`` column; Parquet bytes
    through ``<(...)`` (no ``.parquet`` name) are told apart from CSV and the way out is said."""
    models, _ = trained
    path, _ = cases_csv
    kneepain = Path(sys.executable).with_name("kneepain")
    lines = path.read_text().splitlines(keepends=True)
    (tmp_path / "a.csv").write_text("".join(lines[:101]))
    (tmp_path / "b.csv").write_text("".join([lines[0], *lines[101:]]))
    job = subprocess.run(["bash", "-c", f'"{kneepain}" score <(cat a.csv) <(cat b.csv) -o out.csv --model "{models}"'
                                        " --columns file,case_id,triage --quiet"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert job.returncode == 0, job.stderr
    scored = _read(tmp_path / "out.csv")
    assert scored["case_id"].tolist() == _read(path)["case_id"].tolist()
    names = scored["file"].unique().tolist()  # each pipe's rows under its own name, in the inputs' order
    assert len(names) == 2 and all(name.startswith("/dev/fd/") for name in names)
    assert scored["file"].tolist() == [names[0]] * 100 + [names[1]] * (len(scored) - 100)
    pd.read_csv(path, dtype=str, keep_default_na=False).to_parquet(tmp_path / "c.parquet")
    job = subprocess.run(["bash", "-c", f'"{kneepain}" score <(cat c.parquet) -o out2.csv --model "{models}"'],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert job.returncode == 2
    assert "is a Parquet file, not CSV text (by its first bytes); give the file itself (a pipe is read as CSV" \
        in job.stderr, job.stderr
    assert not (tmp_path / "out2.csv").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_pipes_fed_by_one_process_in_turn_are_read_at_once(trained, cases_csv, tmp_path):
    """One process may feed several pipes (a script that deals rows to two named pipes, ``tee``):
    read one after the other, the job would wait for the first pipe's end while its writer waits
    for room in the second, for ever. They are read at once."""
    models, _ = trained
    path, _ = cases_csv
    lines = path.read_text().splitlines(keepends=True)
    os.mkfifo(tmp_path / "odd.csv")
    os.mkfifo(tmp_path / "even.csv")
    dealer = ("import sys\n"
              "lines = open(sys.argv[1]).readlines()\n"
              "odd, even = open('odd.csv', 'w'), open('even.csv', 'w')\n"
              "for out in (odd, even):\n    out.write(lines[0])\n"
              "for i, line in enumerate(lines[1:] * 40):  # more than a pipe holds\n"
              "    (odd if i % 2 else even).write(line.replace(',', f'_{i},', 1))\n"
              "odd.close(); even.close()\n")
    writer = subprocess.Popen([sys.executable, "-c", dealer, str(path)], cwd=tmp_path)
    try:
        job = subprocess.run([str(Path(sys.executable).with_name("kneepain")), "score", "odd.csv", "even.csv", "-o",
                              "out.csv", "--model", str(models), "--quiet", "--columns", "file,case_id"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    finally:
        writer.kill()
    assert job.returncode == 0, job.stderr
    scored = _read(tmp_path / "out.csv")
    assert len(scored) == (len(lines) - 1) * 40
    assert scored.groupby("file").size().to_dict() == {"even.csv": len(scored) // 2, "odd.csv": len(scored) // 2}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_an_input_file_that_cannot_be_read_is_named_before_a_pipe_is_drained(trained, cases_csv, tmp_path, capsys):
    """A missing file, a folder or a file of another type beside a pipe, or an output another job
    is writing, is said before the pipe is read: its rows are still in it (a one-shot feed into a
    named pipe is not lost to a typo)."""
    from filelock import FileLock

    models, _ = trained
    path, _ = cases_csv
    (tmp_path / "folder").mkdir()
    (tmp_path / "cases.tsv").write_text("case_id\ta1\n")
    feeder = _fed_pipe(tmp_path / "piped.csv", path)
    piped = str(tmp_path / "piped.csv")
    out = ["-o", str(tmp_path / "out.csv"), "--model", str(models)]
    (tmp_path / "semi.csv").write_text("case_id;age;sex\na1;40;male\n")
    for other, message in [("missing.csv", "missing.csv: no such file"), ("folder", "folder: is a folder"),
                           ("cases.tsv", "cases.tsv: unsupported file type '.tsv'"),
                           ("semi.csv", "the file looks separated by ';'")]:
        assert main(["score", piped, str(tmp_path / other), *out]) == 2
        assert message in capsys.readouterr().err
    with FileLock(str(tmp_path / ".out.csv.lock")):  # another job's
        assert main(["score", piped, *out]) == 2
    assert "another kneepain job is writing this output" in capsys.readouterr().err
    assert feeder.poll() is None  # still waiting for a reader: nothing opened the pipe
    with open(piped, "rb") as fh:
        assert fh.read() == path.read_bytes()  # every row is still there
    assert _ended(feeder) == 0
    assert not (tmp_path / "out.csv").exists()


def _flock_holder(path: Path) -> int | None:
    """The process holding a ``flock`` on ``path``, read from Linux's /proc/locks without taking the
    lock (a probe that took it, even for an instant, could refuse the very job it waits for)."""
    if not path.exists():
        return None
    inode = str(path.stat().st_ino)  # by inode alone: on an overlay file system the device shown is another
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"; "1: -> FLOCK ...": one waiting
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == inode:
            return int(parts[4])
    return None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads who holds a lock from Linux's /proc/locks")
def test_a_job_waiting_for_a_pipe_holds_its_output(trained, cases_csv, tmp_path):
    """The output's lock is taken before a pipe is read and held to the end: a second job on the
    same output is refused at once, and the first one's feed is not drained for nothing."""
    models, _ = trained
    path, _ = cases_csv
    os.mkfifo(tmp_path / "feed.csv")
    kneepain = str(Path(sys.executable).with_name("kneepain"))
    first = subprocess.Popen([kneepain, "score", "feed.csv", "-o", "out.csv", "--model", str(models), "--quiet"],
                             cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _flock_holder(tmp_path / ".out.csv.lock") != first.pid:  # until the first job holds the lock
            assert first.poll() is None and time.monotonic() < deadline, "the first job ended or never locked"
            time.sleep(0.05)
        second = subprocess.run([kneepain, "score", str(path), "-o", "out.csv", "--model", str(models)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "another kneepain job is writing this output" in second.stderr
        (tmp_path / "feed.csv").write_bytes(path.read_bytes())  # the writer comes now
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert len(_read(tmp_path / "out.csv")) == len(_read(path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_stop_while_pipes_are_read_leaves_nothing_reading_them(trained, cases_csv, tmp_path, monkeypatch):
    """``score_files`` stopped (Ctrl-C in a notebook) while it copies two pipes, one waiting for its
    writer: it raises, the copies are removed, and nothing goes on reading the pipes afterwards."""
    import signal
    import tempfile
    import threading

    from pipeline.serve.guard import Interrupted

    models, _ = trained
    path, _ = cases_csv
    spooled = tmp_path / "tmp"
    spooled.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spooled))
    os.mkfifo(tmp_path / "slow.csv")
    os.mkfifo(tmp_path / "never.csv")
    data = path.read_bytes()
    dripper = ("import sys, time\n"
               "out = open(sys.argv[2], 'wb', buffering=0)\n"
               "data = open(sys.argv[1], 'rb').read()\n"
               "for i in range(0, len(data), 2000):\n    out.write(data[i:i + 2000]); time.sleep(0.05)\n")
    writer = subprocess.Popen([sys.executable, "-c", dripper, str(path), str(tmp_path / "slow.csv")],
                              stderr=subprocess.PIPE)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted):
            score_files([tmp_path / "slow.csv", tmp_path / "never.csv"], tmp_path / "out.csv", load_model(models))
        assert os.listdir(spooled) == []
        assert writer.wait(timeout=60) != 0  # its reader went away: a broken pipe, not every byte written
        assert "BrokenPipeError" in writer.stderr.read().decode()
    finally:
        timer.cancel()
        writer.kill()
    assert len(data) > 2000 * 40 and not (tmp_path / "out.csv").exists()
    assert [t.name for t in threading.enumerate() if t.name.startswith("kneepain")] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_is_read_whatever_its_descriptor_number(trained, cases_csv, tmp_path):
    """A process with more than 1,024 files open (a server) gets descriptor numbers ``select()``
    cannot wait on; the copy waits with ``poll()``."""
    import resource

    models, _ = trained
    path, _ = cases_csv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"at most {hard} open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY
                                                else min(max(soft, 1200), hard), hard))
    held = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        feeder = _fed_pipe(tmp_path / "cases.csv", path)
        score_files([tmp_path / "cases.csv"], tmp_path / "out.csv", load_model(models))
        assert _ended(feeder) == 0
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(_read(tmp_path / "out.csv")) == len(_read(path))


def test_a_descriptor_redirected_from_a_file_says_to_give_standard_input(trained, cases_csv, tmp_path):
    """``kneepain score /dev/stdin -o out.csv < cases.csv``: the name has no type, so it is refused,
    saying to give ``-`` (a pipe on standard input is read, as any pipe is)."""
    models, _ = trained
    path, _ = cases_csv
    kneepain = str(Path(sys.executable).with_name("kneepain"))
    with open(path, "rb") as stdin:
        job = subprocess.run([kneepain, "score", "/dev/stdin", "-o", "out.csv", "--model", str(models)], stdin=stdin,
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert job.returncode == 2
    assert ("/dev/stdin: unsupported file type ''; expected .csv or .parquet: it names an open file (standard input, "
            "or another descriptor, redirected from a file); give - for standard input" in job.stderr), job.stderr
    with open(path, "rb") as stdin:
        piped = subprocess.run(f'cat | "{kneepain}" score /dev/stdin -o out.csv --model "{models}" --quiet', shell=True,
                               stdin=stdin, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert len(_read(tmp_path / "out.csv")) == len(_read(path))


def test_parquet_texts_are_dictionary_encoded_and_whole(trained, cases_csv, tmp_path):
    models, _ = trained
    path, cases = cases_csv
    out = tmp_path / "out.parquet"
    assert main(["score", str(path), "-o", str(out), "--model", str(models), "--quiet"]) == 0
    meta = pq.ParquetFile(out).metadata.row_group(0)
    names = pq.ParquetFile(out).schema_arrow.names
    encodings = meta.column(names.index("advice")).encodings
    assert any("DICTIONARY" in e for e in encodings)
    got, expected = pd.read_parquet(out), predict(cases, model=models)
    assert got["advice"].tolist() == expected["advice"].tolist()
    assert got[P_COLS].to_numpy().tolist() == expected[P_COLS].to_numpy().tolist()
    # small chunks make row groups of a default chunk's size, not one each (a file several times the size)
    small = tmp_path / "small.parquet"
    assert main(["score", str(path), "-o", str(small), "--model", str(models), "--quiet", "--chunk-rows", "7"]) == 0
    assert pq.ParquetFile(small).metadata.num_row_groups == 1 and pq.read_table(small).equals(pq.read_table(out))


def test_file_types_are_told_by_name_in_any_case(trained, cases_csv, tmp_path):
    """``.PARQUET`` is Parquet for the input, the output and the rejects file alike: a Parquet
    output gets whole texts and no lookup, as with ``.parquet``."""
    models, _ = trained
    path, cases = cases_csv
    src = tmp_path / "in.PARQUET"
    bad = pd.read_csv(path, dtype=str, keep_default_na=False)
    bad.loc[3, "age"] = "old"
    bad.to_parquet(src, index=False)
    out, rejects = tmp_path / "out.Parquet", tmp_path / "rej.PARQUET"
    assert main(["score", str(src), "-o", str(out), "--rejects", str(rejects), "--model", str(models),
                 "--quiet"]) == 1
    got, expected = pd.read_parquet(out), predict(cases.drop(index=3), model=models)
    assert got["advice"].tolist() == expected["advice"].tolist()
    assert pd.read_parquet(rejects)["reject_row"].tolist() == [3]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "in.PARQUET", "out.Parquet", "rej.PARQUET"]


def test_an_input_without_a_required_column_stops_the_job_before_any_row_is_written(trained, cases_csv, tmp_path, capsys):
    from pipeline.core.errors import BatchInputError

    models, _ = trained
    path, _ = cases_csv
    second = tmp_path / "no_sex.csv"
    second.write_text("case_id,age\nx1,40\n")
    out = io.BytesIO()
    with pytest.raises(BatchInputError, match="no_sex.csv: column 'sex': required column is missing"):
        score_files([path, second], "-", load_model(models), stdout=out, rejects=tmp_path / "r.csv")
    assert out.getvalue() == b""  # the first file's rows were not streamed out first
    with pytest.raises(BatchInputError, match="no_sex.csv: column 'sex': required column is missing"):
        predict(second, model=models)  # named with its file, as the command names it
    assert main(["score", str(path), "--engine", "dask", "-o", str(tmp_path / "out.csv"), "--model", str(models)]) == 2
    assert "the dask engine writes a folder of part files" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_a_folder_parquet_named_csv_headerless_or_semicolon_csv_are_named_for_what_they_are(trained, cases_csv, tmp_path, capsys):
    models, _ = trained
    _, cases = cases_csv
    cases.head(5).to_parquet(tmp_path / "cases.csv")  # Parquet bytes under a .csv name
    cases.head(5).to_csv(tmp_path / "export.parquet", index=False)  # and CSV text under a .parquet name
    (tmp_path / "zipped.parquet").write_bytes(b"PK\x03\x04" + bytes(40))
    (tmp_path / "utf16.parquet").write_bytes("case_id,age,sex\r\na,30,male\r\n".encode("utf-16"))  # PowerShell's `>`
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "exports").mkdir()
    (tmp_path / "semicolons.csv").write_text("case_id;age;sex\na;30;male\n")  # a European spreadsheet's CSV
    cases.head(5).to_csv(tmp_path / "headerless.csv", index=False, header=False)  # was "repeats column 'false'"
    first_line = (tmp_path / "headerless.csv").read_text().splitlines()[0]
    # a title above the header: was "columns 2, 3, 4 of the header have no name", or "age ... is missing"
    body = (tmp_path / "semicolons.csv").read_text().replace(";", ",")
    (tmp_path / "titled.csv").write_text("Export from system X,,,\n" + body)
    (tmp_path / "titled2.csv").write_text("Patient export 2024-01-01\n" + body)
    (tmp_path / "titled3.csv").write_text(",,,\n" + body)  # was "the file is empty (no header line)"
    for given, message in [(tmp_path / "cases.csv", "is a Parquet file, not CSV text (by its first bytes); give it a "
                                                     ".parquet name."),
                           (tmp_path / "headerless.csv", f"the first line, {first_line[:60] + '...'!r}, names none of "
                                                         "the columns kneepain reads and holds values such as"),
                           *[(tmp_path / name, f"the first line, {title!r}, names none of the columns kneepain "
                                               "reads, and the next names case_id, age, sex: the file looks to have "
                                               "a title line above its header; remove the first line")
                             for name, title in [("titled.csv", "Export from system X,,,"),
                                                 ("titled2.csv", "Patient export 2024-01-01"), ("titled3.csv", ",,,")]],
                           (tmp_path / "exports", "is a folder; give the CSV or Parquet files in it"),
                           # was Arrow's words alone, "Parquet magic bytes not found in footer"
                           (tmp_path / "export.parquet", "is text, not Parquet (by its first bytes); if it is CSV, "
                                                         "give it a .csv name"),
                           (tmp_path / "zipped.parquet", "is a zip (or Excel .xlsx) file, not Parquet (by its first "
                                                         "bytes); extract it, or save the sheet as 'CSV UTF-8'"),
                           (tmp_path / "empty.parquet", "the file is empty (0 bytes); expected a Parquet file"),
                           (tmp_path / "utf16.parquet", "is not Parquet (by its first bytes), and the file looks like "
                                                        "UTF-16 text (or is not text); save it as UTF-8 (for example "
                                                        "Excel's 'CSV UTF-8'), with a .csv name if it is CSV"),
                           (tmp_path / "semicolons.csv", "the header is one column, 'case_id;age;sex': the file looks "
                                                         "separated by ';', and kneepain reads comma-separated CSV")]:
        assert main(["score", str(given), "-o", str(tmp_path / "o.csv"), "--model", str(models)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{given}: {message}" in err and len(err.splitlines()) == 1, err
        with pytest.raises(BatchInputError, match=re.escape(f"{given}: {message}")):  # predict() names them alike
            predict(given, model=models)
    assert not (tmp_path / "o.csv").exists()


def test_a_temporary_folder_without_room_is_named_and_nothing_is_written(trained, tmp_path, monkeypatch):
    """The copy of standard input and the model handed to --jobs processes go to the temporary
    folder (TMPDIR): a full one is named as such, not as the output, and no output appears."""
    import errno
    import tempfile

    from pipeline.serve import spool

    models, _ = trained
    model = load_model(models)
    data = b"case_id,age,sex\na1,40,male\n"

    def full(sources, targets, opened):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_copy_all", full)
    room = f"{tempfile.gettempdir()}: cannot write the copy of standard input in the temporary folder: No space " \
           "left on device; if it is full, set TMPDIR to a folder with room."
    with pytest.raises(BatchInputError) as err:
        score_files(["-"], tmp_path / "o.csv", model, stdin=io.BytesIO(data))
    assert str(err.value) == room
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not_a_folder"))  # no folder can be made in it
    with pytest.raises(BatchInputError, match=r"not_a_folder: cannot write the model for the scoring processes "
                                              r"\(--jobs 2\) in the temporary folder: Not a directory"):
        score_files([src], tmp_path / "o.csv", model, jobs=2)
    # standard input that cannot be read is named as such, not as the temporary folder
    monkeypatch.undo()
    with open(tmp_path / "write_only", "wb") as unreadable, pytest.raises(
            BatchInputError, match=r"^-: cannot read standard input: the stream given is not open for reading\.$"):
        score_files(["-"], tmp_path / "o.csv", model, stdin=unreadable)
    # the empty lock files stay, as filelock leaves them (docs/scoring.md says so)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["in.csv", "not_a_folder",
                                                                                          "write_only"]
