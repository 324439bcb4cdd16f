"""`kneepain score` never destroys or silently drops a user's data: every failure mode, on real files."""

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from processes import spawned_children
from temporaries import leftover_temporaries

from pipeline.cli import main
from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.files import _host
from pipeline.serve.predict import predict

HEADER = "case_id,age,sex,locking,symptom_duration_days"
GOOD = ["a1,30,male,no,3", "a2,41,female,yes,10", "a3,55,male,,", "a4,62,female,no,1"]


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _score(inp, out, models, *extra) -> int:
    return main(["score", str(inp), "-o", str(out), "--model", str(models), "--quiet", *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "rejects file", "texts lookup",
                                 "texts lookup, full texts"])
def test_output_that_is_an_input_is_refused_and_the_input_kept(trained, tmp_path, capsys, monkeypatch, how):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    before = src.read_bytes()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    out = {"same path": src, "relative path": Path("sub/../in.csv"), "symlink": tmp_path / "link.csv",
           "rejects file": tmp_path / "x.csv"}.get(how, tmp_path / "x.csv")
    if how == "symlink":
        out.symlink_to(src)
    if how == "rejects file":  # the output's rejects file, x.csv.rejects.csv, is a link to the input
        (tmp_path / "x.csv.rejects.csv").symlink_to(src)
    if how.startswith("texts lookup"):  # written with codes; with full texts an earlier run's is removed
        (tmp_path / "x.csv.texts.csv").symlink_to(src)
    assert _score(src, out, models, *(["--texts", "full"] if how.endswith("full texts") else [])) == 2
    err = _one_line_error(capsys)
    # the message names which of the job's files it is, and how to give that one another path
    what = {"rejects file": "the rejects file would be the input file", "texts lookup": "the texts lookup would be"
            }.get(how.split(",")[0], "the output would be the input file")
    assert what in err and ("--rejects PATH" in err) == how.startswith(("rejects", "texts")), err
    assert src.read_bytes() == before


def test_an_input_given_twice_is_refused(trained, tmp_path, capsys, monkeypatch):
    """``a.csv ./a.csv``, a link to an input, or globs that overlap: without a ``case_id`` its rows
    were scored twice under the same file name and row numbers."""
    models, _ = trained
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.csv", ["age,sex", "40,male", "50,female"])
    (tmp_path / "link.csv").symlink_to("a.csv")
    for second, said in [("./a.csv", "a.csv: is given twice as an input"), ("link.csv", "link.csv: is the input a.csv again")]:
        assert main(["score", "a.csv", second, "-o", "out.csv", "--model", str(models), "--quiet"]) == 2
        assert said in _one_line_error(capsys)
        assert not (tmp_path / "out.csv").exists()
    from pipeline.serve.batch import score_files
    from pipeline.serve.loading import load_model

    with open(tmp_path / "a.csv", "rb") as redirected:  # `score a.csv - < a.csv`: refused before it is copied
        with pytest.raises(BatchInputError, match=r"-: standard input is redirected from the input a.csv"):
            score_files(["a.csv", "-"], tmp_path / "out.csv", load_model(models), stdin=redirected)
    _write(tmp_path / "b.csv", ["age,sex", "60,male"])
    assert main(["score", "a.csv", "b.csv", "-o", "out.csv", "--model", str(models), "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "out.csv")["file"].tolist() == ["a.csv", "a.csv", "b.csv"]


@pytest.mark.parametrize("output", ["out.csv", "-"])
def test_standard_input_read_from_an_output_file_is_refused_and_the_file_kept(trained, tmp_path, monkeypatch, output):
    """`kneepain score - -o cases.csv < cases.csv`, and `- -o - < score.rejects.csv` (a fixed
    rejects file given back): the file standard input comes from is not replaced."""
    from pipeline.serve.batch import score_files
    from pipeline.serve.loading import load_model

    models, _ = trained
    monkeypatch.chdir(tmp_path)
    src = _write(tmp_path / ("out.csv" if output != "-" else "score.rejects.csv"), [HEADER, *GOOD])
    before = src.read_bytes()
    sink = tmp_path / "stdout.csv"
    with open(src, "rb") as stdin, open(sink, "wb") as stdout, pytest.raises(BatchInputError,
                                                                           match="would be the file standard input is read from"):
        score_files(["-"], output, load_model(models), stdin=stdin, stdout=stdout)
    assert src.read_bytes() == before and sink.read_bytes() == b""
    assert leftover_temporaries(tmp_path) == []
    with open(src, "rb") as stdin:  # another output: scored from the same redirection
        summary = score_files(["-"], tmp_path / "other.csv", load_model(models), stdin=stdin)
    assert summary.rows_scored == len(GOOD) and src.read_bytes() == before


@pytest.mark.parametrize("into", ["the input", "standard input's file", "the rejects file", "the texts lookup"])
def test_standard_output_redirected_into_one_of_the_jobs_files_is_refused_before_anything_is_read(
        trained, tmp_path, monkeypatch, into):
    """`kneepain score cases.csv -o - >> cases.csv` would append the scores to the cases (and read
    them back as cases); `> score.rejects.csv` would see the scored rows removed at the end, and
    `> score.texts.csv` replaced by the lookup. Each is refused, and every file is left as it was."""
    from pipeline.serve.batch import score_files
    from pipeline.serve.loading import load_model
    from pipeline.serve.shaping import OutputOptions

    models, _ = trained
    monkeypatch.chdir(tmp_path)
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    target = {"the input": src, "standard input's file": src, "the rejects file": tmp_path / "score.rejects.csv",
              "the texts lookup": tmp_path / "score.texts.csv"}[into]
    if not target.exists():
        target.write_text("kept\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    inputs = ["-"] if into == "standard input's file" else [src]
    message = {"the input": "redirected to the input file", "standard input's file": "the file standard input",
               "the rejects file": "the job's rejects file", "the texts lookup": "the job's texts lookup"}[into]
    options = OutputOptions(texts="codes")  # the lookup is written (the command's default for CSV)
    with open(src, "rb") as stdin, open(target, "ab") as stdout, pytest.raises(BatchInputError, match=message):
        score_files(inputs, "-", load_model(models), stdin=stdin, stdout=stdout, options=options)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with open(src, "rb") as stdin, open(tmp_path / "elsewhere.csv", "wb") as stdout:  # another file: scored
        summary = score_files(inputs, "-", load_model(models), stdin=stdin, stdout=stdout, options=options)
    assert summary.rows_scored == len(GOOD)


def test_an_input_the_shell_emptied_with_a_redirection_is_said_to_be_emptied(trained, tmp_path):
    """`kneepain score cases.csv -o - > cases.csv`: the shell empties the file before the command
    starts, so the refusal says so (the data is already gone), where `>>` left it whole."""
    from pipeline.serve.batch import score_files
    from pipeline.serve.loading import load_model

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    with open(src, "ab") as stdout, pytest.raises(BatchInputError) as appended:
        score_files([src], "-", load_model(models), stdout=stdout)
    with open(src, "wb") as stdout, pytest.raises(BatchInputError) as emptied:
        score_files([src], "-", load_model(models), stdout=stdout)
    assert "empty now" not in str(appended.value)
    assert str(emptied.value).endswith("redirect standard output to another file. The file is empty now (`>` empties "
                                       "its file before the command starts): restore it from its source or a backup.")


@pytest.mark.parametrize("kind", ["pipe", "link to a pipe"])
@pytest.mark.parametrize("which", ["output", "rejects file"])
def test_an_output_or_rejects_path_that_is_no_regular_file_is_refused_and_left_as_it_is(
        trained, tmp_path, capsys, kind, which):
    """`--rejects /dev/null` would see the device renamed over or removed (as root): a path that is
    there and is no regular file (a device, a named pipe, a link to one) is refused."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    special = tmp_path / "fifo"
    os.mkfifo(special)
    path = special if kind == "pipe" else tmp_path / "link"
    if kind != "pipe":
        path.symlink_to(special)
    out, extra = (path, []) if which == "output" else (tmp_path / "out.csv", ["--rejects", str(path)])
    if which == "output":
        out = path.with_name(path.name + ".csv")
        out.symlink_to(special)
    assert _score(src, out, models, *extra) == 2
    assert f"is not a regular file (a device, a pipe or a socket), and the {which}" in _one_line_error(capsys)
    assert special.is_fifo() and (kind == "pipe" or path.is_symlink())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock made beside it


@pytest.mark.parametrize("which", ["output", "rejects file", "texts lookup"])
def test_a_file_to_write_that_is_a_link_is_written_through_it_and_stays_a_link(trained, tmp_path, which):
    """The job writes beside a file and renames onto it: onto a link, the rename replaced the link
    with a regular file and left the file it named as it was."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])  # one row rejected
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "target.csv"
    target.write_text("an earlier run's file\n")
    link = {"output": tmp_path / "out.csv", "rejects file": tmp_path / "out.csv.rejects.csv",
            "texts lookup": tmp_path / "out.csv.texts.csv"}[which]
    link.symlink_to(Path("real") / "target.csv")  # relative, as `ln -s` makes it
    assert _score(src, tmp_path / "out.csv", models) == 1
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "target.csv")
    written = {"output": "a1", "rejects file": "femal", "texts lookup": "column,code,text"}[which]
    assert written in target.read_text()
    # the file's lock beside the file the link names; no temporary left
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == [".target.csv.lock", "target.csv"]


def test_the_report_and_the_case_mix_are_written_through_a_link_as_the_output_is(trained, small_data, tmp_path):
    """--report, its numbers and --adapt-priors' case mix replaced a link with a regular file and left
    the file it named as it was, where the output, rejects file and lookup are written through it."""
    from pipeline.data.datasets import read_split

    models, _ = trained
    src = tmp_path / "in.csv"
    read_split("test", small_data).head(600).drop(columns=["condition", "severity"]).to_csv(src, index=False)
    (tmp_path / "real").mkdir()
    links = {"r.html": "report.html", "r.json": "report.json", "out.csv.priors.json": "mix.json"}
    for name, target in links.items():
        (tmp_path / "real" / target).write_text("an earlier run's\n")
        (tmp_path / name).symlink_to(Path("real") / target)
    assert _score(src, tmp_path / "out.csv", models, "--report", str(tmp_path / "r.html"), "--adapt-priors") == 0
    for name, target in links.items():
        assert (tmp_path / name).is_symlink(), name
        assert "an earlier run's" not in (tmp_path / "real" / target).read_text(), name
    # the file a link names is checked before any row is read, as the output's is: a link into a
    # folder that does not exist failed with a bare "[Errno 2]" once the output was written
    (tmp_path / "out2.csv.priors.json").symlink_to(tmp_path / "nowhere" / "mix.json")
    assert _score(src, tmp_path / "out2.csv", models, "--adapt-priors") == 2
    assert not (tmp_path / "out2.csv").exists()


@pytest.mark.parametrize("loop", ["itself", "two links"])
def test_a_file_to_write_that_is_a_link_leading_back_to_itself_is_refused(trained, tmp_path, capsys, loop):
    """A link that loops names no file: refused before any row is read, for score's output and
    rejects file and for sample, which also writes through a link as score does."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0]])
    (tmp_path / "loop.csv").symlink_to("loop.csv" if loop == "itself" else "back.csv")
    if loop == "two links":
        (tmp_path / "back.csv").symlink_to("loop.csv")
    for args in (["score", str(src), "-o", str(tmp_path / "loop.csv"), "--model", str(models)],
                 ["score", str(src), "-o", str(tmp_path / "out.csv"), "--rejects", str(tmp_path / "loop.csv"),
                  "--model", str(models)],
                 ["sample", "--n", "3", "-o", str(tmp_path / "loop.csv")]):
        assert main(args) == 2
        assert "loop.csv: is a symbolic link that leads back to itself" in _one_line_error(capsys)
        assert (tmp_path / "loop.csv").is_symlink() and not (tmp_path / "out.csv").exists()
    (tmp_path / "real.csv").write_text("an earlier file\n")
    (tmp_path / "link.csv").symlink_to("real.csv")
    assert main(["sample", "--n", "3", "-o", str(tmp_path / "link.csv")]) == 0
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text().startswith("case_id,age")
    # a chain of 40 links is what Linux still follows: written through; one more is refused
    for k in range(1, 42):
        (tmp_path / f"l{k}.csv").symlink_to("real.csv" if k == 1 else f"l{k - 1}.csv")
    assert main(["sample", "--n", "2", "-o", str(tmp_path / "l40.csv")]) == 0
    assert main(["sample", "--n", "2", "-o", str(tmp_path / "l41.csv")]) == 2
    assert "(or through more than 40 links)" in _one_line_error(capsys)


def test_a_link_to_a_file_of_another_type_is_refused(trained, tmp_path, capsys):
    """``-o out.csv`` linking to ``real.parquet`` wrote Parquet under the CSV name (and CSV under a
    Parquet one, which pandas then could not read): the type the name says and the file's differ."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])
    for given, real in [("out.csv", "real.parquet"), ("out2.parquet", "real2.csv")]:
        (tmp_path / real).write_text("an earlier file\n")
        (tmp_path / given).symlink_to(real)
        assert _score(src, tmp_path / given, models) == 2
        assert (f"{tmp_path / given}: is a link to {tmp_path / real}, a file of another type; the output is written "
                "in the type its name says") in _one_line_error(capsys)
        assert (tmp_path / real).read_text() == "an earlier file\n" and (tmp_path / given).is_symlink()


@pytest.mark.parametrize("name", ["/dev/stderr", "/dev/fd/2", "/proc/self/fd/2", "task", "folder link", "link",
                                  "-o /dev/stdout", "-o /proc/self/fd/1"])
def test_a_link_to_one_of_the_jobs_own_open_files_is_refused(trained, tmp_path, capsys, name):
    """``--rejects /dev/stderr``, or ``-o`` a link to ``/proc/self/fd/1``: the rename would have
    replaced the file the shell redirected to (under root, the system's /dev/stderr itself). Also
    by a thread's own folder, and through a linked folder (``me`` -> ``/proc/self``)."""
    import threading

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])
    if name == "task":
        name = f"/proc/self/task/{threading.get_native_id()}/fd/2"
    if name == "folder link":
        (tmp_path / "me").symlink_to("/proc/self")
        assert _score(src, tmp_path / "out.csv", models, "--rejects", str(tmp_path / "me" / "fd" / "2")) == 2
        assert "names an open file of this process (/proc/" in _one_line_error(capsys)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "me"]
        return
    if name.startswith("-o "):  # the name itself, which has no file type and whose folder takes no files
        name = name[3:]
        assert _score(src, Path(name), models) == 2
        assert _one_line_error(capsys).strip().endswith(f"{name}: names an open file of this process ({name}), which the "
                                                "output would be renamed onto; write to standard output with `-o -`.")
        from pipeline.serve.batch import score_files
        from pipeline.serve.loading import load_model

        with pytest.raises(BatchInputError, match="names an open file of this process"):
            score_files([src], name, load_model(models))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
        return
    if name == "link":
        (tmp_path / "out.csv").symlink_to("/proc/self/fd/1")
        assert _score(src, tmp_path / "out.csv", models) == 2
        assert "names an open file of this process (/proc/self/fd/1), which the output would be renamed onto; " \
               "write to standard output with `-o -`" in _one_line_error(capsys)
        assert (tmp_path / "out.csv").is_symlink()
    else:
        assert _score(src, tmp_path / "out.csv", models, "--rejects", name) == 2
        assert f"{name}: names an open file of this process ({name}), which the rejects file would be renamed " \
               "onto; give the path of a file for the rejects file." in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"][:1 + (name == "link")]


def test_a_file_a_standard_stream_is_redirected_to_is_refused(trained, tmp_path):
    """``--rejects log.txt 2>> log.txt``: the rename would replace the log the job's messages go to."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])
    log = tmp_path / "log.txt"
    log.write_text("an earlier line\n")
    with open(log, "a") as err:
        job = subprocess.run([str(Path(sys.executable).with_name("kneepain")), "score", str(src), "-o",
                              str(tmp_path / "out.csv"), "--model", str(models), "--rejects", str(log)], stderr=err,
                             timeout=120)
    assert job.returncode == 2
    assert log.read_text() == (f"an earlier line\nkneepain score: error: {log}: is the file standard error is "
                               "redirected to, which the rejects file would be renamed onto; give the path of a file "
                               "for the rejects file.\n")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_file_root_writes_again_stays_its_owners(trained, tmp_path):
    """A cron job run as root, scoring into a user's private files, left them root's and unreadable
    to that user."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])
    out = tmp_path / "out.csv"
    assert _score(src, out, models) == 1
    files = [out, Path(f"{out}.rejects.csv"), Path(f"{out}.texts.csv")]
    for path in files:
        os.chown(path, 65534, 65534)
        path.chmod(0o600)
    assert _score(src, out, models) == 1
    assert {(p.stat().st_uid, p.stat().st_gid, p.stat().st_mode & 0o7777) for p in files} == {(65534, 65534, 0o600)}


def test_files_written_again_keep_their_permissions(trained, tmp_path):
    """As ``sed -i`` keeps them: a rejects file (whole patients' rows) made private stays private."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])
    out = tmp_path / "out.csv"
    assert _score(src, out, models) == 1
    modes = {out: 0o600, Path(f"{out}.rejects.csv"): 0o640, Path(f"{out}.texts.csv"): 0o604}
    for path, mode in modes.items():
        path.chmod(mode)
    assert _score(src, out, models) == 1
    assert {p: p.stat().st_mode & 0o7777 for p in modes} == modes


def test_a_table_whose_first_batch_is_empty_is_written_as_its_rows():
    """Arrow's CSV writer wrote an uninitialised buffer for a table whose first record batch is
    empty (a text column in pieces, the first empty, as pandas' text arrays can be): a rejects
    file's one row came out as 49 kB of NUL bytes. Lines without a header, as each chunk is
    written, and with one."""
    from pipeline.serve.writing import encode_csv

    pieces = pa.chunked_array([pa.array([], pa.string()), pa.array(["a1", "b2"])])
    table = pa.table({"case_id": pieces, "age": pa.array(["40", "50"])})
    assert table.to_batches()[0].num_rows == 0
    assert encode_csv(table).to_pybytes() == b'"a1","40"\n"b2","50"\n'
    assert encode_csv(table, header=True).to_pybytes() == b'"case_id","age"\n"a1","40"\n"b2","50"\n'
    assert encode_csv(table.schema.empty_table()).to_pybytes() == b""


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_columns_past_arrows_2_gib_are_written_in_pieces(trained, tmp_path, monkeypatch, fmt):
    """A chunk's reject reasons, or a kept column, of more than 2 GiB (400k rows of an R export's
    `NA`s in one chunk; 18 notes of 125 MB) stopped the job with Arrow's "input array too large".
    Such a column is now cut into pieces Arrow can hold: here pieces of 400 bytes, against one
    piece per column, give the same files byte for byte."""
    import pipeline.serve.writing as writing

    models, _ = trained
    notes = [f"note {i} " + "x" * (i * 37 % 150) for i in range(60)]
    lines = [HEADER + ",note"] + [f"n{i},{'NA' if i % 3 else 40 + i},{'male' if i % 2 else 'female'},no,{i},{n}"
                                  for i, n in enumerate(notes)]
    src = _write(tmp_path / "in.csv", lines)
    outputs = {}
    for piece in (writing.STRING_PIECE_BYTES, 400):
        monkeypatch.setattr(writing, "STRING_PIECE_BYTES", piece)
        out = tmp_path / f"out-{piece}.{fmt}"
        assert _score(src, out, models, "--keep-input-columns", "--rejects", str(tmp_path / f"rej-{piece}.csv")) == 1
        outputs[piece] = (out.read_bytes(), (tmp_path / f"rej-{piece}.csv").read_bytes())
    (whole, whole_rejects), (pieces, piece_rejects) = outputs.values()
    assert piece_rejects == whole_rejects and len(pd.read_csv(tmp_path / "rej-400.csv")) == 40
    if fmt == "csv":
        assert pieces == whole
    else:  # the same table (a file's row groups and pages may differ)
        assert pq.read_table(tmp_path / "out-400.parquet").equals(pq.read_table(
            tmp_path / f"out-{writing.STRING_PIECE_BYTES}.parquet"))
    pieces = writing.small_strings(pa.array(notes * 10, pa.large_string()))
    assert pieces.num_chunks > 10 and pieces.to_pylist() == notes * 10
    with pytest.raises(BatchInputError, match="a text of 401 bytes: longer than 400 bytes, the most one value"):
        writing.small_strings(pa.array(["x" * 401], pa.large_string()))


def test_a_rejects_file_that_cannot_be_locked_names_the_folder_and_the_way_out(trained, tmp_path, capsys, monkeypatch):
    """`-o -` in a folder the user cannot write: the rejects file's lock cannot be made. The message
    names the rejects file and --rejects, not another job."""
    from filelock import FileLock

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    monkeypatch.chdir(tmp_path)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(FileLock, "acquire", denied)
    assert _score(src, "-", models) == 2
    err = _one_line_error(capsys)
    assert "score.rejects.csv: cannot write the rejects file: its lock file" in err and "Permission denied" in err
    assert "--rejects PATH) in a folder you can write to" in err and "another kneepain job" not in err



def test_a_folder_in_the_lock_files_place_is_named_as_such(trained, tmp_path, capsys):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    (tmp_path / ".out.csv.lock").mkdir()
    assert _score(src, tmp_path / "out.csv", models) == 2
    err = _one_line_error(capsys)
    assert (f"out.csv: cannot write the output: its lock file's path {tmp_path / '.out.csv.lock'} is a folder; "
            "remove it (a kneepain lock is a file) or choose another output path." in err), err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("which", ["input", "output"])
def test_a_closed_standard_stream_is_named(trained, tmp_path, capsys, monkeypatch, which):
    """`kneepain score - -o out.csv <&-` and `kneepain score in.csv -o - >&-`."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin" if which == "input" else "stdout", None)
    args = ["-", tmp_path / "out.csv"] if which == "input" else [src, "-"]
    assert _score(*args, models) == 2
    assert f"-: standard {which} is closed" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    if which == "output":  # `kneepain sample -o - >&-` was `unexpected AttributeError`
        assert main(["sample", "--n", "5", "-o", "-"]) == 2
        assert "kneepain sample: error: -: standard output is closed" in _one_line_error(capsys)


def test_a_closed_standard_error_does_not_stop_the_job(trained, tmp_path, monkeypatch):
    """`kneepain score in.csv -o out.csv 2>&-`: no progress bar to draw, the output written."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models)]) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(GOOD)


@pytest.mark.parametrize("given", [["-o", "results/"], ["-o", "scored.csv/"], ["--rejects", "rejects/"],
                                   ["--report", "report.html/"]])
def test_a_file_to_write_named_as_a_folder_is_refused(trained, tmp_path, capsys, monkeypatch, given):
    """``--rejects rejects/`` wrote a file named ``rejects`` (``Path`` drops the slash), and
    ``-o results/`` was refused for the case mix, an option not given."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    monkeypatch.chdir(tmp_path)
    output = [] if given[0] == "-o" else ["-o", "out.csv"]
    assert main(["score", str(src), *output, *given, "--model", str(models)]) == 2
    assert f"{given[0]} {given[1]}: ends in /, so it names a folder; give a file's path for the" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("case", ["report in a file's place", "report numbers a folder", "case mix a folder",
                                  "output in a missing folder"])
def test_files_written_after_the_output_are_checked_before_any_row_is_scored(trained, tmp_path, capsys, case):
    """The report, its numbers and the case mix (written, or an earlier one removed, after the
    output) are refused as the output is: exit 2 and nothing written."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    (tmp_path / "keep.csv").write_text("x\n")
    extra, message = {
        "report in a file's place": (["--report", str(tmp_path / "keep.csv" / "new" / "r.html")],
                                     "keep.csv: is a file, not a folder, so the report"),
        "report numbers a folder": (["--report", str(tmp_path / "r.html")], "r.json: is a folder"),
        "case mix a folder": ([], "out.csv.priors.json: is a folder; give the path of the case mix"),
        "output in a missing folder": ([], "no such folder for the output")}[case]
    made = {"report numbers a folder": tmp_path / "r.json", "case mix a folder": tmp_path / "out.csv.priors.json"}
    if case in made:
        made[case].mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / ("missing/out.csv" if case == "output in a missing folder" else "out.csv")
    assert _score(src, out, models, *extra) == 2
    assert message in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "keep.csv").read_text() == "x\n"


def test_a_job_stopped_after_its_output_leaves_no_earlier_report_or_case_mix_beside_it(trained, tmp_path, capsys,
                                                                                       monkeypatch):
    """The case mix and the batch report are written after the output: a job stopped between the
    two (Ctrl-C) leaves the new output without them, never beside an earlier run's that describe
    another output."""
    import pipeline.cli as cli
    from pipeline.serve.guard import Interrupted

    models, _ = trained
    first = _write(tmp_path / "first.csv", [HEADER, *GOOD])
    second = _write(tmp_path / "second.csv", [HEADER, *GOOD[:2]])
    out, report = tmp_path / "out.csv", tmp_path / "r.html"
    assert _score(first, out, models, "--report", str(report)) == 0
    (tmp_path / "out.csv.priors.json").write_text("{}")  # as --adapt-priors wrote it
    assert report.exists() and report.with_suffix(".json").exists()

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(cli, "_after_scoring", stopped)
    capsys.readouterr()
    assert _score(second, out, models, "--report", str(report)) == 2
    assert "after" in _one_line_error(capsys) and len(pd.read_csv(out)) == 2  # the new output, in full
    assert not report.exists() and not report.with_suffix(".json").exists()
    assert not (tmp_path / "out.csv.priors.json").exists()


def test_a_report_goes_into_new_folders(trained, tmp_path):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    report = tmp_path / "reports" / "june" / "batch.html"
    assert _score(src, tmp_path / "out.csv", models, "--report", str(report)) == 0
    assert report.is_file() and report.with_suffix(".json").is_file()


def test_an_input_named_like_a_dead_jobs_temporary_is_never_reclaimed(trained, tmp_path):
    """Only tmp_path's own names are a job's temporaries (its random part is 12 hex digits), and
    never a folder holding one of the job's inputs."""
    from pipeline.core import files

    models, _ = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    src = _write(tmp_path / f".victim.csv.tmp-{_host()}-{dead}-mine.csv", [HEADER, *GOOD])
    folder = tmp_path / f".victim.csv.tmp-{_host()}-{dead}-0123456789ab"
    folder.mkdir()
    inside = _write(folder / "in.csv", [HEADER, *GOOD])
    assert _score(inside, tmp_path / "victim.csv", models) == 0
    assert inside.exists() and src.exists()
    elsewhere = _write(tmp_path / "elsewhere.csv", [HEADER, *GOOD])
    (folder / "link.csv").symlink_to(elsewhere)  # the input as written lies in the folder, as it resolves not
    assert _score(folder / "link.csv", tmp_path / "victim.csv", models) == 0
    assert (folder / "link.csv").exists()
    assert _score(src, tmp_path / "victim.csv", models) == 0
    assert src.exists() and not folder.exists()  # not this job's input: a dead job's temporary
    assert files.reclaim_stale_temps(tmp_path / "victim.csv") == [] and src.exists()


def test_second_job_on_the_same_output_fails_at_once(trained, tmp_path, capsys):
    from filelock import FileLock

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    out = tmp_path / "out.csv"
    with FileLock(tmp_path / ".out.csv.lock", timeout=0):  # what a running job holds
        assert _score(src, out, models) == 2
        assert "another kneepain job is writing this output" in _one_line_error(capsys)
        assert not out.exists()
    assert _score(src, out, models) == 0  # released: the next job runs
    # two outputs that share one rejects file: the second job is refused, not the first one's rows lost
    with FileLock(tmp_path / ".shared.csv.lock", timeout=0):
        assert _score(src, tmp_path / "other.csv", models, "--rejects", str(tmp_path / "shared.csv")) == 2
        assert "shared.csv: another kneepain job is writing this rejects file" in _one_line_error(capsys)
        assert not (tmp_path / "other.csv").exists()
    # another job's output named as this one's texts lookup: one of the two is refused, never both written
    with FileLock(tmp_path / ".out.csv.texts.csv.lock", timeout=0):
        assert _score(src, out, models) == 2
        assert "out.csv.texts.csv: another kneepain job is writing this texts lookup" in _one_line_error(capsys)


def test_a_job_that_cannot_put_one_of_its_files_in_place_leaves_the_earlier_runs_files_as_they_were(
        trained, tmp_path, capsys, monkeypatch):
    """The output, its rejects file and its texts lookup go in place together or not at all: where
    one cannot (another user's file in a shared folder), the earlier run's output is not lost and
    its rejects are not replaced, and the message names the file that could not be written."""
    import errno

    import pipeline.core.files as files

    models, _ = trained
    out = tmp_path / "out.csv"
    assert _score(_write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"]), out, models) == 1
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"out.csv", "out.csv.rejects.csv", "out.csv.texts.csv"} <= set(earlier)
    real = files.replace_keeping_mode

    def refused(tmp, path, before):
        if path.name == "out.csv.texts.csv":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(tmp), None, str(path))
        real(tmp, path, before)

    monkeypatch.setattr(files, "replace_keeping_mode", refused)
    src = _write(tmp_path / "in2.csv", [HEADER, *GOOD, "a9,20,mal,no,1"])
    assert _score(src, out, models) == 2
    assert f"{tmp_path / 'out.csv.texts.csv'}: cannot write: Operation not permitted" in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != src} == earlier
    assert leftover_temporaries(tmp_path) == []


def test_files_put_in_place_together_are_all_replaced_or_none(tmp_path):
    """A folder made in a file's place while the job ran stops the change before anything moves."""
    from pipeline.core.files import replace_together

    kept = {"a.csv": b"earlier a", "c.csv": b"earlier c"}
    for name, data in kept.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "b.csv").mkdir()
    new = [tmp_path / f".new-{n}" for n in ("a", "b", "c")]
    for path in new:
        path.write_bytes(b"new")
    with pytest.raises(IsADirectoryError) as err:
        replace_together([(new[0], tmp_path / "a.csv"), (None, tmp_path / "c.csv"), (new[1], tmp_path / "b.csv")])
    assert err.value.filename == str(tmp_path / "b.csv")
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept and (tmp_path / "b.csv").is_dir()
    (tmp_path / "b.csv").rmdir()
    replace_together([(new[0], tmp_path / "a.csv"), (None, tmp_path / "c.csv"), (new[1], tmp_path / "b.csv")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".new-c", "a.csv", "b.csv"]
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes() == b"new"


def test_a_texts_lookup_that_cannot_be_written_stops_the_job_before_it_writes(trained, tmp_path, capsys, monkeypatch):
    """The lookup is checked with the output and renamed into place with it: a folder in its way
    stops the job at once, and nothing is written, to a file or to standard output."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], "a2,41,femal,yes,10"])  # one row rejected
    (tmp_path / "out.csv.texts.csv").mkdir()
    assert _score(src, tmp_path / "out.csv", models) == 2
    assert "out.csv.texts.csv: is a folder; give the path of the texts lookup" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv.texts.csv"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "score.texts.csv").mkdir()
    assert _score(src, "-", models) == 2
    told = capsys.readouterr()
    assert told.out == "" and "score.texts.csv: is a folder; give the path of the texts lookup" in told.err
    assert not (tmp_path / "score.rejects.csv").exists()


def test_a_small_file_that_cannot_be_written_leaves_no_temporary(tmp_path):
    """The texts lookup, reports and priors are written whole or not at all (here a folder is in the way)."""
    from pipeline.core.files import write_text_atomic

    (tmp_path / "out.csv.texts.csv").mkdir()
    (tmp_path / "out.csv.texts.csv" / "x").write_text("kept")
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "out.csv.texts.csv", "column,code,text\n")
    assert leftover_temporaries(tmp_path) == [] and (tmp_path / "out.csv.texts.csv" / "x").read_text() == "kept"


def test_stale_temp_files_of_dead_jobs_are_reclaimed(trained, tmp_path):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = [tmp_path / f".out.csv.tmp-{_host()}-{dead}", tmp_path / f".out.csv.rejects.csv.tmp-{_host()}-{dead}"]
    kept = [tmp_path / f".out.csv.tmp-{_host()}-{os.getppid()}",  # a live process's
            tmp_path / f".out.csv.tmp-{_host()}x-{dead}"]  # another machine's (a shared file system)
    for p in [*stale, *kept]:
        p.write_bytes(b"x" * 1000)
    assert _score(src, tmp_path / "out.csv", models) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_reclaiming_keeps_another_machines_temporaries_even_when_names_differ_only_in_a_dash(tmp_path, monkeypatch):
    from pipeline.core import files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.setattr(files.socket, "gethostname", lambda: "node-1")
    files._host.cache_clear()
    try:
        stale = tmp_path / f".out.csv.tmp-{files._host()}-{dead}"
        legacy = tmp_path / f".out.csv.{dead}.tmp"  # named as earlier versions named them
        kept = [tmp_path / f".out.csv.tmp-node_1-{dead}",  # another machine, node_1
                tmp_path / f".out.csv.tmp-{files._host()}-\u00b2",  # not a process id, though str.isdigit says so
                files.tmp_path(tmp_path / "out.csv")]  # this process's
        for p in [stale, legacy, *kept]:
            p.write_bytes(b"x")
        assert sorted(files.reclaim_stale_temps(tmp_path / "out.csv")) == sorted([stale, legacy])
        assert all(p.exists() for p in kept)
    finally:
        files._host.cache_clear()


def test_stale_temp_folders_of_dead_dask_jobs_on_this_machine_are_reclaimed(tmp_path):
    """A Dask driver killed outright leaves its hidden folder; the next job on the target removes it,
    and never a live job's, another machine's (a shared file system) or a folder it did not make."""
    from pipeline.core.cluster import temp_folder

    target = tmp_path / "scored"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = [tmp_path / f".scored.tmp-{_host()}-{dead}-0123456789ab",
             tmp_path / f".scored.tmp-{_host()}-{dead}-ba9876543210.removing"]
    kept = [tmp_path / f".scored.tmp-{_host()}-{os.getppid()}-0123456789ab",  # a live job's
            tmp_path / f".scored.tmp-{_host()}x-{dead}-0123456789ab",  # another machine's
            tmp_path / ".scored.tmp-notes",  # not a job's
            tmp_path / f".other.tmp-{_host()}-{dead}-0123456789ab"]  # another target's
    for folder in [*stale, *kept]:
        folder.mkdir()
        (folder / "part-00000-00000.parquet").write_bytes(b"x" * 1000)
    holding = tmp_path / f".scored.tmp-{_host()}-{dead}-00000000000a"  # a dead job's, holding an input
    holding.mkdir()
    (holding / "in.csv").write_text("case_id,age,sex\n")
    made = temp_folder(target, spare=[holding / "in.csv"])
    assert made.is_dir() and made.name.startswith(f".scored.tmp-{_host()}-{os.getpid()}-")
    assert not any(p.exists() for p in stale)
    assert all((p / "part-00000-00000.parquet").exists() for p in kept)
    assert (holding / "in.csv").exists()


def test_a_stop_signal_acts_at_the_next_step_and_a_second_one_at_once():
    from pipeline.serve.guard import Interrupted, check_stop, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        check_stop()  # nothing received: no-op
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler has run; the job goes on until its next step
        with pytest.raises(Interrupted, match="SIGTERM"):
            check_stop()
        with pytest.raises(Interrupted, match="SIGHUP"):
            os.kill(os.getpid(), signal.SIGHUP)  # a second signal: the user means now
            time.sleep(1)
    check_stop()  # out of the job, a noted signal is forgotten
    assert signal.getsignal(signal.SIGTERM) is before


def test_leaving_a_read_ahead_early_stops_and_joins_its_reader():
    # a reader left inside Arrow when the process exits deadlocks Arrow's shutdown: the job never ends
    import threading

    from pipeline.serve.reading import prefetch

    closed = threading.Event()

    def slow_chunks():
        try:
            for i in range(1000):
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    with pytest.raises(RuntimeError, match="stopped"):
        with prefetch(slow_chunks()) as chunks:
            for i in chunks:
                if i == 3:
                    raise RuntimeError("stopped")
    assert closed.is_set() and not any(t.name == "kneepain-reader" for t in threading.enumerate())
    with prefetch(iter(range(5))) as chunks:
        assert list(chunks) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("depth", [1, 2])
def test_a_read_ahead_holds_at_most_depth_chunks_not_yet_taken(depth):
    # every chunk read and not yet taken is memory held: the reader waits for a place before it
    # reads the next chunk, not after (each chunk of a 1M-row job is several MB)
    from pipeline.serve.reading import prefetch

    produced = []

    def chunks():
        for i in range(6):
            produced.append(i)
            yield i

    taken = []
    with prefetch(chunks(), depth=depth) as items:
        for i in items:
            taken.append(i)
            time.sleep(0.05)  # a slow consumer: the reader has time to run ahead, were it allowed
            assert len(produced) <= len(taken) + depth, (produced, taken)
    assert taken == list(range(6))


@pytest.fixture(scope="module")
def big_csv(kb, tmp_path_factory):
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.data.generate import generate_codes

    codes, _, _ = generate_codes(kb, 200_000, seed=3)
    path = tmp_path_factory.mktemp("big") / "big.csv"
    codes_to_text_frame(codes).to_csv(path, index=False)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stopped_job_removes_its_temporary_files(trained, big_csv, tmp_path, signum):
    models, _ = trained
    out = tmp_path / "out.csv"
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", str(big_csv), "-o", str(out), "--model", str(models),
                             "--chunk-rows", "2000", "--quiet"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # SIGABRT prints every thread's stack
    deadline = time.monotonic() + 60
    while not leftover_temporaries(tmp_path):
        assert proc.poll() is None and time.monotonic() < deadline, "scoring ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"kneepain score did not stop within 60 s of {signal.Signals(signum).name}; where it was:\n{err}")
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "no output was written" in err, err
    assert leftover_temporaries(tmp_path) == [] and not out.exists() and not (tmp_path / "out.csv.rejects.csv").exists()


@pytest.mark.slow
def test_a_job_stopped_while_writing_to_stdout_says_its_rows_may_be_there(trained, big_csv, tmp_path):
    """With -o -, the rows scored before a stop have already gone out: the error says so rather
    than that nothing was written."""
    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    with open(tmp_path / "scored.csv", "wb") as stdout:
        proc = subprocess.Popen([str(kneepain), "score", str(big_csv), "-o", "-", "--model", str(models),
                                 "--chunk-rows", "2000", "--quiet"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        deadline = time.monotonic() + 60
        while (tmp_path / "scored.csv").stat().st_size < 100_000:  # a few chunks are out
            assert proc.poll() is None and time.monotonic() < deadline, "scoring ended before it could be stopped"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert "stopped by SIGTERM (no file was written; standard output may hold the rows scored before the stop)" in err
    assert (tmp_path / "scored.csv").read_text().startswith('"row",')


def test_malformed_records_are_rejected_whole_with_their_record_and_the_job_goes_on(trained, tmp_path):
    models, _ = trained
    lines = [HEADER, GOOD[0], "b1,33,male", GOOD[1], '"b2, quoted",44,female,no,2,EXTRA,MORE', *GOOD[2:]]
    src = _write(tmp_path / "in.csv", lines)
    out = tmp_path / "out.csv"
    assert _score(src, out, models, "--chunk-rows", "2") == 1
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert scored["case_id"].tolist() == ["a1", "a2", "a3", "a4"] and scored["row"].tolist() == ["0", "2", "4", "5"]
    assert bad["reject_row"].tolist() == ["1", "3"]
    assert "record 3 of" in bad["reject_reason"][0] and "has 3 fields; the header has 5" in bad["reject_reason"][0]
    assert "record 5 of" in bad["reject_reason"][1] and "has 7 fields" in bad["reject_reason"][1]
    assert bad[["case_id", "age", "sex"]].values.tolist() == [["b1", "33", "male"], ["b2, quoted", "44", "female"]]


def test_a_record_a_quote_left_open_swallowed_is_rejected_again_until_it_is_mended(trained, tmp_path):
    """The records a quote left open read into a field are kept in the rejects file as their file
    wrote them: scored again unmended, the row was scored (the swallowed records lost, exit 0);
    now it is rejected again, and mended it gives every record."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", ["case_id,age,sex,note", 'r4,45,female,"open quote', "r5,46,male,fine",
                                       "r6,47,male,fine"])
    assert _score(src, tmp_path / "out.csv", models) == 1
    rejects = tmp_path / "out.csv.rejects.csv"
    assert _score(rejects, tmp_path / "again.csv", models) == 1
    again = pd.read_csv(tmp_path / "again.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert again["case_id"].tolist() == ["r4"] and "a quote left open" in again["reject_reason"][0]
    assert pd.read_csv(tmp_path / "again.csv").empty
    bad = pd.read_csv(rejects, dtype=str, keep_default_na=False)  # mended: the quote closed where it belonged
    mended = pd.concat([bad.assign(note="open quote"),
                        bad.assign(case_id="r5", age="46", sex="male", note="fine"),
                        bad.assign(case_id="r6", age="47", sex="male", note="fine")], ignore_index=True)
    mended.to_csv(rejects, index=False)
    assert _score(rejects, tmp_path / "fixed.csv", models) == 0
    assert pd.read_csv(tmp_path / "fixed.csv", dtype=str)["case_id"].tolist() == ["r4", "r5", "r6"]


def test_fixing_the_rejects_file_and_scoring_it_again_is_one_step(trained, tmp_path, capsys):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER + ",clinic", "a1,30,male,no,3,north", "a2,41,femal,yes,10,south",
                                       "a3,130,male,often,2,east"])
    assert _score(src, tmp_path / "out.csv", models) == 1
    rejects = tmp_path / "out.csv.rejects.csv"
    bad = pd.read_csv(rejects, dtype=str, keep_default_na=False)
    assert list(bad.columns) == ["reject_file", "reject_row", "reject_reason", "case_id", "age", "sex", "locking",
                                 "symptom_duration_days", "clinic"]
    assert bad["clinic"].tolist() == ["south", "east"]  # the whole row, columns that are not case fields too
    assert "value '130'" in bad["reject_reason"][1] and "value 'often'" in bad["reject_reason"][1]
    bad.loc[0, "sex"], bad.loc[1, "age"], bad.loc[1, "locking"] = "female", "13", "yes"
    bad.to_csv(rejects, index=False)
    capsys.readouterr()
    assert main(["score", str(rejects), "-o", str(tmp_path / "fixed.csv"), "--model", str(models)]) == 0
    assert pd.read_csv(tmp_path / "fixed.csv", dtype=str)["case_id"].tolist() == ["a2", "a3"]
    # the reject_* columns are the file's own: only the columns that are not case fields are named
    told = capsys.readouterr().err
    assert "ignoring columns that are not case fields: clinic\n" in told and "reject_" not in told
    # inputs that spell a column differently (the scorer reads Age as age) share one column of rejects
    other = _write(tmp_path / "other.csv", ["Case_ID,Age, SEX,Locking,symptom_duration_days", "b1,300,male,no,3"])
    assert main(["score", str(src), str(other), "-o", str(tmp_path / "two.csv"), "--model", str(models),
                 "--quiet"]) == 1
    both = pd.read_csv(tmp_path / "two.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert list(both.columns) == list(bad.columns) and both["age"].tolist() == ["41", "130", "300"]
    both.loc[0, "sex"], both.loc[1, "age"], both.loc[1, "locking"], both.loc[2, "age"] = "female", "13", "yes", "30"
    both.to_csv(tmp_path / "two.csv.rejects.csv", index=False)
    assert _score(tmp_path / "two.csv.rejects.csv", tmp_path / "fixed2.csv", models) == 0
    # an input that is no rejects file keeps its own reject_* columns, as input_<name>
    audit = _write(tmp_path / "audit.csv", [HEADER + ",Reject_Reason", "c1,300,male,no,3,checked by nurse"])
    capsys.readouterr()
    assert main(["score", str(audit), "-o", str(tmp_path / "audit_out.csv"), "--model", str(models)]) == 1
    assert "not case fields: Reject_Reason" in capsys.readouterr().err  # the input's own column, not the scorer's
    kept = pd.read_csv(tmp_path / "audit_out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert list(kept.columns) == [*bad.columns[:-1], "input_Reject_Reason"]
    assert kept["input_Reject_Reason"].tolist() == ["checked by nurse"] and "value '300'" in kept["reject_reason"][0]


def test_a_field_longer_than_the_read_block_is_read_by_row(trained, tmp_path):
    models, _ = trained
    long_id, long_answer = "i" * 3_000_000, "y" * 2_500_000
    src = _write(tmp_path / "in.csv", [HEADER, GOOD[0], f"{long_id},50,male,no,2", f"b2,50,male,{long_answer},2",
                                       *GOOD[1:]])
    out = tmp_path / "out.parquet"
    assert _score(src, out, models) == 1
    scored = pd.read_parquet(out)
    assert scored["case_id"].tolist() == ["a1", long_id, "a2", "a3", "a4"]
    bad = pd.read_csv(tmp_path / "out.parquet.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["reject_row"].tolist() == ["2"] and bad["locking"][0] == long_answer


@pytest.mark.parametrize("header", ["case_id,age,sex,Age ,locking", "case_id,age,sex,SEX,locking"])
def test_a_column_repeated_after_case_and_space_folding_is_refused(trained, tmp_path, capsys, header):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [header, "a1,30,male,31,no"])
    assert _score(src, tmp_path / "out.csv", models) == 2
    assert "the header repeats column" in _one_line_error(capsys)
    with pytest.raises(BatchInputError, match="the header repeats column"):
        predict(src, model=models)
    with pytest.raises(CaseValidationError, match="given more than once"):
        predict(pd.DataFrame([[30, "male", 31]], columns=["age", "sex", header.split(",")[3]]), model=models)


def test_dates_durations_and_nested_values_in_parquet_are_rejected_by_row(trained, tmp_path):
    models, _ = trained
    table = pa.table({
        "case_id": ["p1", "p2", "p3", "p4"], "age": [30, 40, 50, 60], "sex": ["male", "female", "male", "female"],
        "symptom_duration_days": pa.array([datetime.timedelta(days=3), None, None, None], pa.duration("s")),
        "bmi": pa.array([None, datetime.datetime(2020, 1, 1), None, None], pa.timestamp("us")),
        "locking": pa.array([None, None, ["yes"], None], pa.list_(pa.string())),
        "grinding": pa.array([None, None, None, {"a": "yes"}], pa.struct([("a", pa.string())]))})
    pq.write_table(table, tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models) == 1
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(bad["case_id"], bad["reject_reason"]))
    assert set(reasons) == {"p1", "p2", "p3", "p4"}
    assert "a duration is not a number" in reasons["p1"] and "a date or time is not a number" in reasons["p2"]
    assert "column 'locking'" in reasons["p3"] and "column 'grinding'" in reasons["p4"]
    # an answer field names the kind too: a value whose text reads as an answer is not one
    assert "a list is not an answer; allowed: yes" in reasons["p3"] and "is not an answer" in reasons["p4"]
    with pytest.raises(CaseValidationError, match="a duration is not a number"):
        predict({"age": 71, "sex": "male", "symptom_duration_days": datetime.timedelta(days=2)}, model=models)
    with pytest.raises(CaseValidationError, match="value 'male': a numpy array is not an answer; allowed: female, male"):
        predict({"age": 71, "sex": np.array("male")}, model=models)


def test_text_stored_as_parquet_binary_is_read_as_utf8(trained, tmp_path):
    """Some writers store text columns as plain binary: they score as the same text would, and a
    value that is not UTF-8 rejects its own row, naming its column and bytes."""
    models, _ = trained
    text = pa.table({"case_id": ["b1", "b2", "b3"], "age": ["30", "71", "45"], "sex": ["male", "female", "male"],
                     "leg_swelling": ["no", "yes", None], "note": ["caf\u00e9", "", None]})
    binary = text.cast(pa.schema([pa.field(f.name, pa.binary()) for f in text.schema]))
    pq.write_table(text, tmp_path / "text.parquet")
    pq.write_table(binary, tmp_path / "binary.parquet")
    for name in ("text", "binary"):
        assert _score(tmp_path / f"{name}.parquet", tmp_path / f"{name}.csv", models, "--keep-input-columns") == 0
    assert (tmp_path / "binary.csv").read_bytes() == (tmp_path / "text.csv").read_bytes()
    pd.testing.assert_frame_equal(predict(tmp_path / "binary.parquet", model=models),
                                  predict(tmp_path / "text.parquet", model=models))
    # and so does the frame pandas reads from that file (its cells are bytes)
    pd.testing.assert_frame_equal(predict(pd.read_parquet(tmp_path / "binary.parquet"), model=models),
                                  predict(tmp_path / "text.parquet", model=models))
    # one value that is not UTF-8: its row alone is rejected, and the other values of its column are read
    bad = binary.set_column(2, "sex", pa.array([b"male", b"f\xe9male", b"male"], pa.binary()))
    pq.write_table(bad, tmp_path / "bad.parquet")
    assert _score(tmp_path / "bad.parquet", tmp_path / "bad.csv", models) == 1
    assert pd.read_csv(tmp_path / "bad.csv", dtype=str)["case_id"].tolist() == ["b1", "b3"]
    rejects = pd.read_csv(tmp_path / "bad.csv.rejects.csv", dtype=str)
    assert rejects["case_id"].tolist() == ["b2"]
    reason = rejects["reject_reason"][0]
    assert reason.startswith("column 'sex', value \"b'f") and "xe9male'\": a value that is not valid UTF-8 text " \
        "is not an answer; allowed: female, male" in reason
    with pytest.raises(CaseValidationError, match=r"^1 of 3 case\(s\) are invalid:\n  row 1, column 'sex', value "
                                                  r"\"b'f\\\\xe9male'\": a value that is not valid UTF-8 text"):
        predict(pd.read_parquet(tmp_path / "bad.parquet"), model=models)


@pytest.mark.parametrize("kind", ["dictionary", "large_binary", "fixed_size_binary"])
def test_every_binary_kind_reads_as_text_and_bytes_that_are_not_utf8_reject_their_row(trained, tmp_path, kind):
    """Dictionary-encoded, large and fixed-size binary read as plain binary does; a case id or a
    kept input column whose bytes are not UTF-8 rejects its row (it has no text to be written as)."""
    models, _ = trained
    ids = [b"i1", b"i\xff", b"i3", b"i4"]  # fixed size 2
    sex = [b"male", b"female", b"male", b"male"]
    note = [b"ok", b"ok", b"\xe9t\xe9", b"ok"]  # fixed size 3 after padding below

    def column(values: list[bytes]) -> pa.Array:
        if kind == "dictionary":
            return pa.array(values, pa.binary()).dictionary_encode()
        if kind == "large_binary":
            return pa.array(values, pa.large_binary())
        width = max(map(len, values))
        return pa.array([v.ljust(width) for v in values], pa.binary(width))

    pq.write_table(pa.table({"case_id": column(ids), "age": [30, 40, 50, 60], "sex": column(sex),
                             "note": column(note)}), tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--keep-input-columns") == 1
    scored = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert scored["case_id"].tolist() == ["i1", "i4"] and scored["note"].str.strip().tolist() == ["ok", "ok"]
    rejects = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["reject_row"].tolist() == ["1", "2"]
    assert rejects["reject_reason"][0].startswith("column 'case_id', value \"b'i\\\\xff'\": not valid UTF-8 text")
    assert rejects["reject_reason"][1].startswith("column 'note', value \"b'\\\\xe9t\\\\xe9")
    assert "not valid UTF-8 text, so it cannot be kept as text (--keep-input-columns)" in rejects["reject_reason"][1]
    # a long value is shown cut, as every other problem's value is (not the whole of it in each reason)
    long = pa.table({"age": [30], "sex": ["male"], "note": pa.array([b"\xff" * 10_000], pa.binary())})
    pq.write_table(long, tmp_path / "long.parquet")
    assert _score(tmp_path / "long.parquet", tmp_path / "long.csv", models, "--keep-input-columns") == 1
    reason = pd.read_csv(tmp_path / "long.csv.rejects.csv", dtype=str)["reject_reason"][0]
    assert reason.startswith("column 'note', value \"b'\\\\xff") and len(reason) < 300, reason[:400]
    # without --keep-input-columns the note is not read: only the id's row is rejected
    assert _score(tmp_path / "in.parquet", tmp_path / "plain.csv", models) == 1
    assert pd.read_csv(tmp_path / "plain.csv", dtype=str)["case_id"].tolist() == ["i1", "i3", "i4"]
    # nor where --columns leaves it out of the output: only a column written rejects its row
    assert _score(tmp_path / "in.parquet", tmp_path / "chosen.csv", models, "--keep-input-columns",
                  "--columns", "case_id,age,p_dvt") == 1
    assert pd.read_csv(tmp_path / "chosen.csv", dtype=str)["case_id"].tolist() == ["i1", "i3", "i4"]


def test_a_repeated_id_that_is_not_utf8_is_rejected_alike_in_every_chunking(trained, tmp_path):
    """A repeat found in an earlier chunk is shown as a repeat in its own chunk is: bytes that are
    not UTF-8 are a value to show, not text to decode (the job stopped on them)."""
    models, _ = trained
    pq.write_table(pa.table({"case_id": pa.array([b"\xff", b"\xff", b"a", b"a"], pa.binary()), "age": [30, 31, 32, 33],
                             "sex": ["male"] * 4}), tmp_path / "in.parquet")
    rejects = []
    for rows in ("1", "2", "16384"):
        assert _score(tmp_path / "in.parquet", tmp_path / f"out{rows}.csv", models, "--chunk-rows", rows) == 1
        rejects.append((tmp_path / f"out{rows}.csv.rejects.csv").read_bytes())
    assert rejects.count(rejects[0]) == 3
    bad = pd.read_csv(tmp_path / "out1.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["reject_row"].tolist() == ["0", "1", "3"]
    assert bad["reject_reason"][1].endswith("column 'case_id', value \"b'\\\\xff'\": duplicate case_id: seen in an earlier row")


def test_a_parquet_uuid_case_id_is_its_text(trained, tmp_path):
    """Spark, Trino and DuckDB write ids as Parquet's UUID type: they are written as UUIDs are written."""
    import uuid

    models, _ = trained
    if not hasattr(pa, "uuid"):
        pytest.skip("this pyarrow has no UUID type")
    ids = [uuid.UUID(int=7919 * i) for i in range(1, 4)]
    pq.write_table(pa.table({"case_id": pa.array([u.bytes for u in ids], pa.uuid()), "age": [30, 40, 50],
                             "sex": ["male", "female", "male"]}), tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models) == 0
    assert pd.read_csv(tmp_path / "out.csv", dtype=str)["case_id"].tolist() == [str(u) for u in ids]
    assert predict(tmp_path / "in.parquet", model=models)["case_id"].tolist() == [str(u) for u in ids]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="/proc is a folder no one can add a file to")
def test_a_folder_that_cannot_be_written_is_refused_before_anything_changes(trained, tmp_path, capsys):
    """A report into a read-only folder was found unwritable only once the new output was being put
    in place: the earlier output was gone, a new texts lookup beside it, and the message named the
    output. Every file a job writes is checked first, and the earlier run's files stay as they were."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    out = tmp_path / "out.csv"
    assert _score(src, out, models) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert _score(src, out, models, "--top-k", "5", "--report", "/proc/kneepain/r.html") == 2
    err = capsys.readouterr().err
    assert "/proc: cannot write there (it takes no new files), so the report /proc/kneepain/r.html cannot be " \
           "written; nothing was read or changed." in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _score(src, Path("/proc/out.csv"), models) == 2
    assert "/proc: cannot write there" in capsys.readouterr().err


def test_a_date_or_time_python_cannot_hold_stops_nothing(trained, tmp_path):
    """A date after 9999 or before year 1, or a time finer than a microsecond, in a column the job
    does not read stopped it ("unexpected ValueError: year 10183 is out of range"), in both engines;
    kept, it is Arrow's text of it, and in a case field its column's dates reject their rows."""
    models, _ = trained
    base = {"age": [45, 46, 47], "sex": ["male", "female", "male"]}
    dates = pa.array([3_000_000, 0, -800_000], pa.int32()).cast(pa.date32())
    times = pa.array([1, 0, 2_000], pa.time64("ns"))
    pq.write_table(pa.table({**base, "visit": dates, "at": times}), tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--keep-input-columns") == 0
    # the same text in every chunking: a chunk without such a value reads its column alike
    assert _score(tmp_path / "in.parquet", tmp_path / "one.csv", models, "--keep-input-columns", "--chunk-rows", "1") == 0
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()
    kept = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert kept["visit"].tolist() == ["10183-09-21", "1970-01-01", "'-0221-09-04"]  # marked, as it starts with -
    assert kept["at"].tolist() == ["00:00:00.000000001", "00:00:00.000000000", "00:00:00.000002000"]
    assert main(["score", "--engine", "dask", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "parts"),
                 "--model", str(models), "--quiet"]) == 0
    pq.write_table(pa.table({"age": [45, 46], "sex": ["male", "female"],
                             "symptom_duration_days": pa.array([3_000_000, 5], pa.int32()).cast(pa.date32())}),
                   tmp_path / "field.parquet")
    assert _score(tmp_path / "field.parquet", tmp_path / "field.csv", models) == 1
    rejects = pd.read_csv(tmp_path / "field.csv.rejects.csv", dtype=str)
    assert rejects["reject_row"].tolist() == ["0", "1"]  # every date is rejected, whether Python can hold it or not
    assert rejects["reject_reason"][0].startswith("column 'symptom_duration_days', value '10183-09-21': not a number")
    assert rejects["reject_reason"][1].startswith("column 'symptom_duration_days', value '1970-01-06': not a number")


def test_dates_in_lists_and_structs_and_zoned_times_python_cannot_hold_stop_nothing(trained, tmp_path):
    """A list, a map or a struct holding a date (or, in a struct, a timestamp) after 9999, even in a
    column the job does not read, and a time-zoned timestamp after 9999 kept as it is, stopped the
    job ("year 12921 is out of range", "toordinal not yet supported"). Such dates are text within
    their list or struct, and such a timestamp is the same instant in UTC; an ordinary one keeps
    its own zone."""
    models, _ = trained
    far = pa.array([4_000_000, 0, None], pa.int32()).cast(pa.date32())
    table = pa.table({
        "age": [45, 46, 47], "sex": ["male", "female", "male"],
        "dates": pa.ListArray.from_arrays(pa.array([0, 1, 3, 3], pa.int32()), far),
        "visit": pa.StructArray.from_arrays([far, pa.array([1, 2, 3])], names=["on", "n"]),
        "stamps": pa.StructArray.from_arrays([pa.array([300_000_000_000_000_000, 0, None], pa.timestamp("us", tz="UTC"))],
                                             names=["at"]),
        "by": pa.MapArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), pa.array(["a", "b", "c"]), far),
        "seen": pa.array([300_000_000_000_000_000, 1_719_792_000_000_000, None], pa.timestamp("us", tz="Europe/London"))})
    pq.write_table(table, tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "read.csv", models) == 0  # the columns are not read
    assert len(pd.read_csv(tmp_path / "read.csv")) == 3
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--keep-input-columns") == 0
    assert _score(tmp_path / "in.parquet", tmp_path / "one.csv", models, "--keep-input-columns", "--chunk-rows", "1") == 0
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()
    kept = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert kept["dates"].tolist() == ["['12921-08-18']", "['1970-01-01', None]", "[]"]
    assert kept["visit"].tolist() == ["{'on': '12921-08-18', 'n': 1}", "{'on': '1970-01-01', 'n': 2}",
                                      "{'on': None, 'n': 3}"]
    assert kept["seen"].tolist() == ["11476-08-15 05:20:00+00:00", "2024-07-01 01:00:00+01:00", ""]
    assert kept["by"].tolist() == ["[('a', '12921-08-18')]", "[('b', '1970-01-01')]", "[('c', None)]"]
    assert kept["stamps"].tolist() == ["{'at': '11476-08-15 05:20:00.000000Z'}", "{'at': '1970-01-01 00:00:00.000000Z'}",
                                       "{'at': None}"]


def test_kept_parquet_values_are_written_whole_and_as_stored(trained, tmp_path):
    """A kept (or rejected) list is written whole (numpy's text of it cut a 1,500-item list to six
    items and broke its lines), each item as it is stored, a float32 as stored, and an INT96
    timestamp as Spark wrote it (read in nanoseconds, 9999-12-31 wrapped round to 1816)."""
    import datetime as dt

    models, _ = trained
    codes = pa.array([list(range(1500)), [1, 2], None], pa.list_(pa.int64()))
    items = {"at": pa.array([[dt.datetime(2024, 1, 1, 12)], [], None], pa.list_(pa.timestamp("ns"))),
             "small": pa.array([[0.1, 2.5], [None], None], pa.list_(pa.float32())),
             "nested": pa.array([[[1, 2], [3]], [["a"]] and [[4]], None], pa.list_(pa.list_(pa.int64()))),
             "words": pa.array([["a b", "c"], ["it's"], None], pa.list_(pa.string()))}
    weights = pa.array([0.1, 2.5, None], pa.float32())
    until = pa.array([dt.datetime(9999, 12, 31), dt.datetime(2024, 1, 1), None], pa.timestamp("us"))
    pq.write_table(pa.table({"age": [45, 46, 300], "sex": ["male", "female", "male"], "codes": codes,
                             "w": weights, "until": until, **items}), tmp_path / "in.parquet",
                   use_deprecated_int96_timestamps=True)
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--keep-input-columns") == 1
    kept = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert kept["codes"].tolist() == [str(list(range(1500))), "[1, 2]"]
    assert kept["at"][0] in ("[2024-01-01T12:00:00.000000]", "[2024-01-01T12:00:00.000000000]")  # as Parquet kept it
    assert kept["at"][1] == "[]"
    assert kept["small"].tolist() == ["[0.1, 2.5]", "[nan]"]
    assert kept["nested"].tolist() == ["[[1, 2], [3]]", "[[4]]"]
    assert kept["words"].tolist() == ["['a b', 'c']", '["it\'s"]']
    assert kept["w"].tolist() == ["0.1", "2.5"]
    assert kept["until"].tolist() == ["9999-12-31 00:00:00", "2024-01-01 00:00:00"]
    rejects = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert rejects[["age", "codes", "w", "until", "at"]].values.tolist() == [["300", "", "", "", ""]]


def test_kept_nested_integers_are_exact_whatever_the_chunk_holds(trained, tmp_path):
    """An integer inside a list, struct or map stays an integer, and a missing one None, in every
    chunking: where a chunk held a missing item, pandas made every integer of it a float
    (2**53 + 1 written 9007199254740992.0). A list inside a struct or a map is written whole: numpy's
    text of it, inside Python's of the struct, cut 1,001 items to six with "...", the job exiting 0."""
    models, _ = trained
    big = 2 ** 53 + 1
    pq.write_table(pa.table({
        "age": [45, 46, 47], "sex": ["male"] * 3,
        "ids": pa.array([[big], [None], [1, 2]], pa.list_(pa.int64())),
        "deep": pa.array([[[big, None]], [[2]], None], pa.list_(pa.list_(pa.int64()))),
        "st": pa.array([{"n": big}, {"n": None}, {"n": 3}], pa.struct([("n", pa.int64())])),
        "by": pa.array([[("k", big)], [("j", None)], []], pa.map_(pa.string(), pa.int64())),
        # a list inside a struct or a map, long enough for numpy's text of it to cut it with "..."
        "sl": pa.array([{"b": list(range(1001))}, {"b": [1, None]}, {"b": []}], pa.struct([("b", pa.list_(pa.int64()))])),
        "ml": pa.array([[("k", list(range(2000)))], [], None], pa.map_(pa.string(), pa.list_(pa.int64())))}),
        tmp_path / "in.parquet")
    expected = {"ids": [f"[{big}]", "[None]", "[1, 2]"], "deep": [f"[[{big}, None]]", "[[2]]", ""],
                "st": [f"{{'n': {big}}}", "{'n': None}", "{'n': 3}"], "by": [f"[('k', {big})]", "[('j', None)]", "[]"],
                "sl": [f"{{'b': {list(range(1001))}}}", "{'b': [1, None]}", "{'b': []}"],
                "ml": [f"[('k', {list(range(2000))})]", "[]", ""]}
    for rows in ("1", "2", "3"):
        out = tmp_path / f"out{rows}.csv"
        assert _score(tmp_path / "in.parquet", out, models, "--keep-input-columns", "--chunk-rows", rows) == 0
        kept = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert {c: kept[c].tolist() for c in expected} == expected, rows


def test_a_kept_list_of_dictionary_text_reads_across_row_groups(trained, tmp_path):
    """A list of dictionary-encoded text (as pandas' categoricals in lists are written), in a file
    of several row groups, is read and kept whole: a chunk across two groups failed as "the file
    is damaged"."""
    models, _ = trained
    tags = pa.array([["a", "b"] if i % 3 else ["c"] for i in range(50)], pa.list_(pa.dictionary(pa.int32(), pa.string())))
    pq.write_table(pa.table({"age": ["40"] * 50, "sex": ["male"] * 50, "tags": tags}), tmp_path / "in.parquet",
                   row_group_size=20)
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--keep-input-columns") == 0
    kept = pd.read_csv(tmp_path / "out.csv", dtype=str)["tags"].tolist()
    assert kept == ["['a', 'b']" if i % 3 else "['c']" for i in range(50)]


def test_a_missing_id_is_no_id_a_later_row_repeats_in_any_chunking(trained, tmp_path):
    """A missing id beside one that is not UTF-8 (a binary column read value by value) is no id:
    a later row's id "None" is no repeat of it, in one chunk as across chunks."""
    models, _ = trained
    pq.write_table(pa.table({"case_id": pa.array([b"\xff", None, b"None", b"None"], pa.binary()),
                             "age": ["40", "41", "42", "43"], "sex": ["male", "female", "male", "male"]}),
                   tmp_path / "in.parquet", row_group_size=1)
    for rows in ("1", "4"):
        out = tmp_path / f"out{rows}.csv"
        assert _score(tmp_path / "in.parquet", out, models, "--chunk-rows", rows) == 1
        assert pd.read_csv(out, dtype=str)["row"].tolist() == ["1", "2"], rows  # the second "None" repeats the first
        rejects = pd.read_csv(f"{out}.rejects.csv", dtype=str)
        assert rejects["reject_row"].tolist() == ["0", "3"], rows
        assert "not valid UTF-8" in rejects["reject_reason"][0] and "duplicate case_id" in rejects["reject_reason"][1]


def test_nan_and_infinite_float_case_ids(trained, tmp_path):
    """A NaN id (as Spark, polars and pyarrow keep it) is a missing id, never a repeat; an
    infinite one rejects its row: both as predict() reads them from a DataFrame."""
    models, _ = trained
    ids = pa.array([1.0, float("nan"), float("nan"), float("inf"), 2.5], pa.float32())
    pq.write_table(pa.table({"case_id": ids, "age": [45] * 5, "sex": ["male"] * 5}), tmp_path / "in.parquet")
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models) == 1
    scored = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert scored["case_id"].tolist() == ["1", "", "", "2.5"] and scored["row"].tolist() == ["0", "1", "2", "4"]
    rejects = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str)
    assert rejects["reject_row"].tolist() == ["3"]
    assert rejects["reject_reason"][0] == "column 'case_id', value 'inf': not a case id; allowed: text or a finite number"
    from_frame = predict(pd.read_parquet(tmp_path / "in.parquet").iloc[[0, 1, 2, 4]], model=models)
    assert from_frame["prediction"].tolist() == scored["prediction"].tolist()


def test_a_rows_reasons_read_the_same_in_every_chunking(trained, tmp_path):
    """A repeated id with another problem in its row: the reasons come in one order whether the
    first copy is in the same chunk or an earlier one (the repeat last, after the row's own problems)."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, "a,30,male,no,3", "b,30,male,no,3", "c,30,male,no,3",
                                       "a,20,male,no,99999", "b,300,male,no,3"])
    for rows in ("1", "2", "16384"):
        assert _score(src, tmp_path / f"out{rows}.csv", models, "--chunk-rows", rows) == 1
    rejects = (tmp_path / "out16384.csv.rejects.csv").read_bytes()
    assert (tmp_path / "out1.csv.rejects.csv").read_bytes() == rejects
    assert (tmp_path / "out2.csv.rejects.csv").read_bytes() == rejects
    reasons = pd.read_csv(tmp_path / "out2.csv.rejects.csv", dtype=str)["reject_reason"].tolist()
    assert reasons[0].startswith("column 'symptom_duration_days', value '99999': longer than the patient has lived")
    assert reasons[1].startswith("column 'age', value '300': out of range")
    assert all(r.endswith("duplicate case_id: seen in an earlier row") for r in reasons)


def test_formula_looking_text_is_neutralised_in_csv_outputs_only(trained, tmp_path):
    models, _ = trained
    ids = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "-5", "ok"]
    src = _write(tmp_path / "in.csv", [HEADER, *[f'"{i.replace(chr(34), chr(34) * 2)}",30,male,no,3' for i in ids],
                                       '"=bad",30,femal,no,3'])
    assert _score(src, tmp_path / "out.csv", models) == 1
    got = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)["case_id"].tolist()
    assert got == ["'=HYPERLINK(\"http://x\")", "'+1+2", "'-2+3", "'@SUM(A1)", "-5", "ok"]
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["case_id"].tolist() == ["'=bad"]
    assert _score(src, tmp_path / "out.parquet", models) == 1
    assert pd.read_parquet(tmp_path / "out.parquet")["case_id"].tolist() == ids
    # so are input column names, in the rejects' header and the kept input columns'
    named = _write(tmp_path / "named.csv", [HEADER + ',"=HYPERLINK(""http://x"")",@cmd,-3', "a1,30,male,no,3,x,y,z",
                                            "a2,300,male,no,3,x,y,z"])
    assert _score(named, tmp_path / "named-out.csv", models, "--keep-input-columns") == 1
    for path in (tmp_path / "named-out.csv", tmp_path / "named-out.csv.rejects.csv"):
        header = pd.read_csv(path, dtype=str, nrows=0).columns.tolist()
        assert header[-3:] == ["'=HYPERLINK(\"http://x\")", "'@cmd", "-3"], path.name


@pytest.mark.parametrize("case", ["disk full", "disk full for the rejects", "output is a folder",
                                  "rejects file is a folder", "corrupt parquet"])
def test_environment_failures_are_one_line_and_exit_2(trained, tmp_path, capsys, monkeypatch, case):
    from pipeline.serve import writing

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])
    out = tmp_path / "out.csv"
    if case == "disk full":
        def full(self, table):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(writing.Writer, "_write", full)
        expected = "out.csv: cannot write: No space left on device"
    elif case == "disk full for the rejects":  # the file that could not be written is the one named
        src = _write(tmp_path / "in.csv", [HEADER, *GOOD, "b1,300,male,no,3"])
        write = writing.Writer._write

        def rejects_full(self, table):
            if self.target.name.endswith(".rejects.csv"):
                raise OSError(28, "No space left on device")
            write(self, table)

        monkeypatch.setattr(writing.Writer, "_write", rejects_full)
        expected = "out.csv.rejects.csv: cannot write: No space left on device"
    elif case == "output is a folder":
        out.mkdir()
        expected = "is a folder"
    elif case == "rejects file is a folder":  # refused before any row is read, and named
        (tmp_path / "out.csv.rejects.csv").mkdir()
        expected = "out.csv.rejects.csv: is a folder; give the path of the rejects file"
    else:
        src = tmp_path / "in.parquet"
        src.write_bytes(b"PAR1" + b"\0" * 100)
        expected = "cannot read"
    assert _score(src, out, models) == 2
    assert expected in _one_line_error(capsys)
    assert leftover_temporaries(tmp_path) == []
    assert case == "output is a folder" or not out.exists()


def test_predict_on_a_path_reads_as_score_does(trained, tmp_path):
    models, _ = trained
    short = _write(tmp_path / "short.csv", [HEADER, GOOD[0], "b1,33,male"])
    with pytest.raises(CaseValidationError, match=r"row 1.*record 3 of .* has 3 fields; the header has 5"):
        predict(short, model=models)
    latin = _write(tmp_path / "latin.csv", [HEADER, *GOOD, "é1,30,male,no,3"], encoding="latin-1")
    at = len(HEADER) + sum(len(g) + 1 for g in GOOD) + 1  # the byte after the header's and the rows' newlines
    with pytest.raises(BatchInputError, match=rf"latin.csv: cannot read: not valid UTF-8 text at byte offset {at} "
                                              r"\(line 6\)"):
        predict(latin, model=models)
    latin_header = _write(tmp_path / "latin_header.csv", [HEADER + ",clinic é", "a1,30,male,no,3,x"], encoding="latin-1")
    with pytest.raises(BatchInputError, match="latin_header.csv: the header is not valid UTF-8"):
        predict(latin_header, model=models)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(BatchInputError, match="the file is empty"):
        predict(empty, model=models)
    ok = _write(tmp_path / "ok.csv", [HEADER, *GOOD])
    assert predict(ok, model=models)["case_id"].tolist() == ["a1", "a2", "a3", "a4"]
    numbered = pd.read_csv(ok).assign(case_id=[7, 8, 9, 10])
    numbered.to_parquet(tmp_path / "numbered.parquet")  # a file's ids come back as text, as the output writes them
    assert predict(tmp_path / "numbered.parquet", model=models)["case_id"].tolist() == ["7", "8", "9", "10"]
    assert predict(numbered, model=models)["case_id"].tolist() == [7, 8, 9, 10]  # a frame's, unchanged
    mixed = _write(tmp_path / "mixed.csv", [HEADER, GOOD[0], "b1,33", "b2,300,male,no,3"])
    with pytest.raises(CaseValidationError) as info:  # a malformed record does not hide the other bad rows
        predict(mixed, model=models)
    assert info.value.errors["row"].tolist() == [1, 2]
    assert "row 1: record 3 of" in str(info.value) and "has 2 fields" in str(info.value)
    assert "row 2, column 'age', value '300'" in str(info.value)
    shifted = _write(tmp_path / "shifted.csv", [HEADER, "z9,33", "z9,40,male,no,3"])
    with pytest.raises(CaseValidationError) as info:  # a malformed record's id is no id, as in `kneepain score`
        predict(shifted, model=models)
    assert info.value.errors["row"].tolist() == [0]
    assert _score(shifted, tmp_path / "shifted_out.csv", models) == 1
    assert pd.read_csv(tmp_path / "shifted_out.csv")["case_id"].tolist() == ["z9"]


def test_a_repeated_id_has_one_reason_however_the_file_is_chunked(trained, tmp_path):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, "a,30,male,no,3", "b,31,male,no,3", "a,32,male,no,3",
                                       "a,33,male,no,3", ",34,male,no,3", "b,35,male,no,3", "b,abc,male,no,3"])
    rejects = []
    for rows in ("1", "2", "4", "100"):
        assert _score(src, tmp_path / f"out{rows}.csv", models, "--chunk-rows", rows) == 1
        rejects.append((tmp_path / f"out{rows}.csv.rejects.csv").read_bytes())
    assert rejects.count(rejects[0]) == len(rejects)
    got = pd.read_csv(tmp_path / "out100.csv.rejects.csv")
    assert got["reject_row"].tolist() == [2, 3, 5, 6]
    assert set(got["reject_reason"][:3]) == {"column 'case_id', value 'a': duplicate case_id: seen in an earlier row",
                                             "column 'case_id', value 'b': duplicate case_id: seen in an earlier row"}
    # a row with another problem too gives both reasons, in one chunk or after its first copy's chunk
    assert "value 'abc': not a number" in got["reject_reason"][3]
    assert "value 'b': duplicate case_id" in got["reject_reason"][3]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_csv_safe_quotes_formulas_only_in_any_text_column(kind):
    """A cell a spreadsheet would run gets a leading ', plain numbers and other text stay, nulls stay null."""
    from pipeline.serve.writing import csv_safe

    cells = ["=SUM(A1)", "-1.5", "-x", "+3e5", "@a", "\tz", "\rq", "ok", None, "", "é=", "1=2", "-", "+"]
    table = pa.table({"text": pa.array(cells, kind), "n": pa.array(range(len(cells)))})
    assert csv_safe(table).column("text").to_pylist() == [
        "'=SUM(A1)", "-1.5", "'-x", "+3e5", "'@a", "'\tz", "'\rq", "ok", None, "", "é=", "1=2", "'-", "'+"]
    plain = pa.table({"text": pa.array(["ok", None, "a-b"], kind)})
    assert csv_safe(plain).equals(plain)


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_formula_screen_reads_the_buffers_as_arrow_reads_the_cells(kind):
    """The byte-level screen of csv_safe agrees with Arrow's first character on random cells, in
    slices (buffers with an offset) and in chunks, and a null cell that still owns bytes (``=x``)
    is not a formula."""
    import pyarrow.compute as pc

    from pipeline.core.formulas import _FORMULA_BYTE, _FORMULA_FIRST, _starts_with, csv_safe

    def _formula_first(chunk):
        return _starts_with(chunk, _FORMULA_BYTE)

    rng = np.random.default_rng(3)
    alphabet = ["=", "+", "-", "@", "\t", "\r", "a", "1", "é", "½", " ", "|"]
    for _ in range(200):
        n = int(rng.integers(0, 12))
        cells = [None if rng.random() < 0.15 else "".join(rng.choice(alphabet, size=rng.integers(0, 4)))
                 for _ in range(n)]
        whole = pa.array(cells, kind)
        start = int(rng.integers(0, n + 1))
        for array in (whole, whole.slice(start), whole.slice(0, start)):
            first = pc.is_in(pc.utf8_slice_codeunits(array, 0, 1), value_set=_FORMULA_FIRST.cast(kind))
            assert _formula_first(array) == bool(pc.any(first).as_py()), array.to_pylist()
    # a null slot whose offsets still span "=x": Arrow leaves such bytes undefined, never a value
    width = np.int64 if kind == pa.large_string() else np.int32
    offsets = pa.py_buffer(np.array([0, 2, 4], dtype=width).tobytes())
    validity = pa.py_buffer(np.packbits([0, 1], bitorder="little").tobytes())
    odd = pa.Array.from_buffers(kind, 2, [validity, offsets, pa.py_buffer(b"=xok")], null_count=1)
    assert odd.to_pylist() == [None, "ok"] and not _formula_first(odd)
    table = pa.table({"text": pa.chunked_array([pa.array(["a"], kind), odd])})
    assert csv_safe(table).equals(table)
    # a formula in a later chunk, after a chunk without one, is found
    later = pa.table({"text": pa.chunked_array([pa.array(["a"], kind), pa.array(["b", "=x"], kind)])})
    assert csv_safe(later).column("text").to_pylist() == ["a", "b", "'=x"]
    # offsets padded beyond their cells (Arrow allows a longer buffer) are read only as far as the cells
    padded = pa.Array.from_buffers(kind, 2, [None, pa.py_buffer(np.array([0, 1, 2], dtype=width).tobytes() + b"\0"),
                                             pa.py_buffer(b"a=")])
    assert padded.to_pylist() == ["a", "="] and _formula_first(padded) and not _formula_first(padded.slice(0, 1))


def test_a_csv_whose_lines_end_in_a_bare_cr_is_refused_not_read_as_a_header(trained, tmp_path, capsys):
    """The old Mac format: read line by line, the whole file would be one header and no rows."""
    models, _ = trained
    src = tmp_path / "mac.csv"
    src.write_bytes(("\r".join([HEADER, *GOOD]) + "\r").encode())
    assert _score(src, tmp_path / "out.csv", models) == 2
    assert "bare carriage return" in _one_line_error(capsys)
    with pytest.raises(BatchInputError, match="bare carriage return"):
        predict(src, model=models)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(("\r\n".join([HEADER, *GOOD]) + "\r\n").encode())
    assert _score(crlf, tmp_path / "out.csv", models) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(GOOD)


@pytest.mark.parametrize("rejects", ["out.csv", "out.csv.texts.csv", "-"])
def test_outputs_that_are_one_file_are_refused_and_the_old_output_kept(trained, tmp_path, capsys, monkeypatch, rejects):
    models, _ = trained
    monkeypatch.chdir(tmp_path)
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD, "b1,300,male,no,3"])
    out = tmp_path / "out.csv"
    out.write_text("an earlier output\n")
    assert _score(src, out, models, "--rejects", rejects) == 2
    err = _one_line_error(capsys)
    assert ("would be the same file" in err) if rejects != "-" else ("--rejects -" in err)
    assert out.read_text() == "an earlier output\n" and not (tmp_path / "-").exists()


def test_unnamed_columns_are_named_by_position(trained, tmp_path, capsys):
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER + ",,", *(g + ",," for g in GOOD)])
    assert _score(src, tmp_path / "out.csv", models) == 2
    assert "columns 6, 7 of the header have no name" in _one_line_error(capsys)
    src = _write(tmp_path / "in.csv", [HEADER + ",", *(g + "," for g in GOOD)])
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models), "--quiet"]) == 0
    assert "ignoring columns that are not case fields: (a column without a name)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_job_stopped_while_it_copies_standard_input_removes_the_copy(trained, tmp_path, signum):
    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", "-", "-o", str(tmp_path / "out.csv"), "--model", str(models)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    proc.stdin.write("\n".join([HEADER, *GOOD]) + "\n")
    proc.stdin.flush()  # and left open: the job is still copying standard input
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("kneepain-inputs-*/*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended before it could be stopped"
        time.sleep(0.005)  # signalled at once: a signal that reaches another thread must still stop the copy
    proc.send_signal(signum)
    try:
        proc.wait(timeout=60)  # a lost signal fails here instead of hanging the suite
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert proc.returncode == 2
    assert f"stopped by {signal.Signals(signum).name} (no output was written)" in err and "Traceback" not in err, err
    assert list(tmp_path.glob("kneepain-inputs-*")) == [] and not (tmp_path / "out.csv").exists()


def _stop_once(module, name, monkeypatch, times: int = 1, signum=signal.SIGTERM):
    """Patch ``module.name`` to send this process ``times`` signals after its first call."""
    real, sent = getattr(module, name), []

    def stopping(*args, **kwargs):
        result = real(*args, **kwargs)
        while len(sent) < times:
            sent.append(signum)
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # the handler has run
        return result

    monkeypatch.setattr(module, name, stopping)
    return sent


@pytest.mark.parametrize("times", [1, 3])
def test_a_stop_as_the_output_is_put_in_place_says_the_output_is_whole(trained, tmp_path, capsys, monkeypatch, times):
    """A stop after the job's last step, as its files are renamed into place, is not dropped; it
    waits until the output is in place (more stops too), and the job says the output is whole
    rather than that nothing was written."""
    import copy
    import pickle

    from pipeline.core import files
    from pipeline.core.errors import StoppedAfterOutput
    from pipeline.serve import batch
    from pipeline.serve.loading import load_model

    models, _ = trained
    src, out = _write(tmp_path / "in.csv", [HEADER, *GOOD]), tmp_path / "out.csv"
    (tmp_path / "out.csv").write_text("an earlier run's output\n")
    # the texts lookup first, the output last (pipeline.core.files.replace_together)
    sent = _stop_once(files, "replace_keeping_mode", monkeypatch, times)
    with pytest.raises(StoppedAfterOutput, match=f"^stopped by SIGTERM after {out} was written in full$") as stopped:
        batch.score_files([src], out, load_model(models))
    assert len(sent) == times and list(pd.read_csv(out)["case_id"]) == ["a1", "a2", "a3", "a4"]
    assert (stopped.value.summary.rows_scored, stopped.value.summary.rows_rejected) == (4, 0)  # the job's count
    assert str(pickle.loads(pickle.dumps(stopped.value))) == str(copy.copy(stopped.value)) == str(stopped.value)
    assert pickle.loads(pickle.dumps(stopped.value)).summary.rows_scored == 4
    sent.clear()
    # the command tells the rows scored, with the rejects file, before the stop's line
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD, "a5,41,femal,no,3"])
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--report", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"Scored 4 rows, rejected 1 (see {out}.rejects.csv) in "), err
    assert err[-1] == (f"kneepain score: error: stopped by SIGTERM after {out} was written in full; the batch report "
                       "was not written"), err
    assert len(pd.read_csv(out)) == 4 and not (tmp_path / "r.html").exists()


def test_a_stop_as_the_job_returns_to_the_command_says_the_output_is_whole(trained, tmp_path, capsys, monkeypatch):
    from pipeline.serve import batch

    models, _ = trained
    src, out = _write(tmp_path / "in.csv", [HEADER, *GOOD]), tmp_path / "out.csv"
    sent = _stop_once(batch, "score_files", monkeypatch, signum=signal.SIGINT)
    assert _score(src, out, models, "--report", str(tmp_path / "r.html")) == 2
    assert _one_line_error(capsys).strip() == (f"kneepain score: error: stopped by SIGINT after {out} was written in "
                                               "full; the batch report was not written")
    assert len(pd.read_csv(out)) == 4
    # without --quiet, the rows scored are told first, once
    sent.clear()
    assert main(["score", str(src), "-o", str(out), "--model", str(models), "--report", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("Scored 4 rows, rejected 0 in "), err
    assert err[1].startswith("kneepain score: error: stopped by SIGINT after"), err


def test_sigterm_while_the_case_mix_is_estimated_stops_the_command_in_one_line(trained, tmp_path, capsys, monkeypatch):
    """Before any file is written (the model's load, --adapt-priors' pass over the inputs),
    SIGTERM stops the command as Ctrl-C does, where it killed the process without a word."""
    from pipeline.serve import adapt

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD])

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    def unhandled(signum, frame):  # what SIGTERM would meet if the command left it to Python: death
        raise RuntimeError("SIGTERM reached the default handler")

    monkeypatch.setattr(adapt, "estimate_batch_prior", stopped)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        code = _score(src, tmp_path / "out.csv", models, "--adapt-priors")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 2 and _one_line_error(capsys).strip() == ("kneepain score: error: stopped by SIGTERM (no output was "
                                                             "written)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_stop_while_the_summary_is_told_says_the_output_is_whole(trained, tmp_path, capsys, monkeypatch):
    """Ctrl-C as the command reads the rejects file for its summary: the output is whole, and the
    line says so (it said that no output was written)."""
    from pipeline.serve import rejectreasons

    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, *GOOD, "a5,41,femal,no,3"])

    def stopped(path):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        return []

    monkeypatch.setattr(rejectreasons, "rejects_digest", stopped)
    assert main(["score", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(models)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"kneepain score: error: stopped by SIGINT after {tmp_path / 'out.csv'} was written in full", err
    assert sum(line.startswith("Scored 4 rows, rejected 1") for line in err) == 1, err  # told once, not again
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4 and (tmp_path / "out.csv.rejects.csv").exists()


def test_a_stop_as_the_summary_starts_still_tells_it(trained, tmp_path, capsys, monkeypatch):
    """SIGTERM as the command comes to its summary: the line is printed once, then the stop's."""
    from pipeline import cli

    models, _ = trained
    src, out = _write(tmp_path / "in.csv", [HEADER, *GOOD]), tmp_path / "out.csv"
    tell, sent = cli._tell_summary, []

    def stopped_first(*args):
        if not sent:
            sent.append(signal.SIGTERM)  # before the kill, whose handler raises at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        return tell(*args)

    monkeypatch.setattr(cli, "_tell_summary", stopped_first)
    assert main(["score", str(src), "-o", str(out), "--model", str(models)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("Scored 4 rows, rejected 0 in "), err
    assert err[1] == f"kneepain score: error: stopped by SIGTERM after {out} was written in full", err


def test_a_second_stop_ends_a_summary_line_blocked_on_standard_error(trained, tmp_path, monkeypatch):
    """Standard error blocked (a full pipe nobody reads) as the summary's line is written: the
    first SIGTERM waits for the line, a second stops the command at once, as in the job."""
    import io
    import threading

    models, _ = trained
    src, out = _write(tmp_path / "in.csv", [HEADER, *GOOD]), tmp_path / "out.csv"
    written, waited = [], []

    class Blocked(io.StringIO):
        def write(self, text):
            if text.startswith("Scored") and not waited:  # the first time: blocked until stopped
                waited.append(False)
                os.kill(os.getpid(), signal.SIGTERM)  # noted: the line is not yet whole
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
                time.sleep(10)
                waited[0] = True  # not reached when the second stop acts at once
            written.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Blocked())
    assert main(["score", str(src), "-o", str(out), "--model", str(models)]) == 2
    assert waited == [False]
    lines = "".join(written).splitlines()
    assert lines[0].startswith("Scored 4 rows, rejected 0 in ") and lines[-1].startswith(
        f"kneepain score: error: stopped by SIGTERM after {out} was written in full"), lines


@pytest.mark.parametrize("output", ["file", "-"])
def test_two_stops_as_the_scorers_stop_after_the_output_is_in_place_say_it_is_whole(trained, tmp_path, monkeypatch,
                                                                                  output):
    """The second signal stops the job at once, as its scoring threads or processes stop after the
    output is renamed into place: the stop says the output is whole."""
    import io

    from pipeline.core.errors import StoppedAfterOutput
    from pipeline.serve import batch
    from pipeline.serve.loading import load_model

    models, _ = trained
    src, out, stdout = _write(tmp_path / "in.csv", [HEADER, *GOOD]), tmp_path / "out.csv", io.BytesIO()
    shutdown, sent = batch.ChunkScorer.shutdown, []

    def twice(self):
        if not sent and (out.exists() or stdout.getvalue()):  # once the output is complete
            for _ in range(2):  # the second raises at once
                sent.append(signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
        shutdown(self)

    monkeypatch.setattr(batch.ChunkScorer, "shutdown", twice)
    whole = f"{out} was written in full" if output == "file" else "every row was written to standard output"
    with pytest.raises(StoppedAfterOutput, match=f"^stopped by SIGTERM after {whole}$"):
        batch.score_files([src], out if output == "file" else "-", load_model(models), stdout=stdout,
                          rejects=tmp_path / "rejects.csv")
    scored = pd.read_csv(out if output == "file" else io.BytesIO(stdout.getvalue()))
    assert len(sent) == 2 and list(scored["case_id"]) == ["a1", "a2", "a3", "a4"]


@pytest.mark.parametrize("output", ["file", "-"])
def test_a_stop_as_the_copy_of_standard_input_is_removed_says_the_output_is_whole(trained, tmp_path, capsys,
                                                                                 monkeypatch, output):
    import io

    from pipeline.core.errors import StoppedAfterOutput
    from pipeline.serve import batch, spool
    from pipeline.serve.loading import load_model

    models, _ = trained
    out, stdout = tmp_path / "out.csv", io.BytesIO()
    target = out if output == "file" else "-"
    monkeypatch.setattr(spool.tempfile, "tempdir", str(tmp_path))
    deferred, sent = spool.signals_deferred, []

    @contextlib.contextmanager
    def stopped_as_the_copy_is_removed():
        with deferred():  # held off until the copy is gone, then raised
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
            yield

    monkeypatch.setattr(spool, "signals_deferred", stopped_as_the_copy_is_removed)
    stdin = io.BytesIO(("\n".join([HEADER, *GOOD]) + "\n").encode())
    whole = f"{out} was written in full" if output == "file" else "every row was written to standard output"
    with pytest.raises(StoppedAfterOutput, match=f"^stopped by SIGTERM after {whole}$"):
        batch.score_files(["-"], target, load_model(models), stdin=stdin, stdout=stdout,
                          rejects=tmp_path / "rejects.csv")
    scored = pd.read_csv(out if output == "file" else io.BytesIO(stdout.getvalue()))
    assert sent and list(scored["case_id"]) == ["a1", "a2", "a3", "a4"]
    assert not list(tmp_path.glob("kneepain-inputs-*"))


@pytest.mark.slow
def test_a_closed_pipe_on_stdout_and_stderr_still_exits_2(trained, big_csv, tmp_path):
    """`kneepain score big.csv -o - 2>&1 | head -1`: the error line cannot be written either."""
    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    proc = subprocess.Popen([str(kneepain), "score", str(big_csv), "-o", "-", "--model", str(models), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 2


@pytest.mark.slow
def test_the_dask_engine_stopped_by_sigterm_leaves_no_folder(trained, big_csv, tmp_path):
    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    out = tmp_path / "scored"
    proc = subprocess.Popen([str(kneepain), "score", "--engine", "dask", str(big_csv), "-o", str(out), "--model",
                             str(models), "--block-mb", "1", "--chunk-rows", "2000", "--quiet"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".scored.tmp-*/attempt-*/part-*")):  # the workers are writing parts
        assert proc.poll() is None and time.monotonic() < deadline, "scoring ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "stopped by SIGTERM (no output was written)" in err, err
    time.sleep(1)  # a task still running when the folder went has nowhere to write
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".scored")] == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
@pytest.mark.parametrize("moment", ["while its workers start", "while they score"])
def test_ctrl_c_to_a_dask_job_stops_it_without_the_clusters_tracebacks(trained, big_csv, tmp_path, moment):
    """A terminal's Ctrl-C reaches the whole process group, the local cluster's workers too: a
    worker still importing printed its KeyboardInterrupt traceback, and workers closed while they
    scored logged each cancelled task and a traceback per failed heartbeat, 40-170 lines around
    the job's one-line stop."""
    models, _ = trained
    kneepain = Path(sys.executable).parent / "kneepain"
    out = tmp_path / "scored"
    proc = subprocess.Popen([str(kneepain), "score", "--engine", "dask", str(big_csv), "-o", str(out), "--model",
                             str(models), "--block-mb", "1", "--chunk-rows", "2000", "--quiet"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (spawned_children(proc.pid) if moment == "while its workers start"
                   else list(tmp_path.glob(".scored.tmp-*/attempt-*/part-*"))):
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended before it could be stopped"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stop = "kneepain score: error: stopped by SIGINT (no output was written)"
    assert proc.returncode == 2 and stop in err.splitlines(), err
    # the one line, or beside it at most the local cluster's note of a worker too busy to close at once
    assert [line for line in err.splitlines()
            if line != stop and "distributed.nanny - WARNING - Worker process still alive" not in line] == [], err
    assert not out.exists()


def test_the_header_is_one_record_by_csv_rules_and_a_stray_quote_loses_no_row(trained, tmp_path, capsys):
    """A quote inside a name is a character, as in a data field; only a quote at the start of a
    name opens a quoted name, and one never closed is refused rather than read as the header."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER + ',height 5"', *(g + f",{k}" for k, g in enumerate(GOOD)),
                                       'b1,50,female,no,2,6"'])
    assert _score(src, tmp_path / "out.csv", models) == 0
    scored = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert scored["case_id"].tolist() == [*(g.split(",")[0] for g in GOOD), "b1"]
    assert scored["row"].tolist() == [str(k) for k in range(len(GOOD) + 1)]
    pd.testing.assert_frame_equal(predict(src, model=models), predict(pd.read_csv(src), model=models))
    # a quoted name with a line break and an escaped quote is one header record
    named = _write(tmp_path / "named.csv", [HEADER + ',"a ""quoted""', 'name"', *(g + ",x" for g in GOOD)])
    assert _score(named, tmp_path / "named_out.csv", models) == 0
    assert len(pd.read_csv(tmp_path / "named_out.csv")) == len(GOOD)
    opened = _write(tmp_path / "open.csv", [HEADER + ',"note', *(g + ",x" for g in GOOD)])
    capsys.readouterr()
    assert _score(opened, tmp_path / "open_out.csv", models) == 2
    assert "opens a quoted column name that is never closed" in _one_line_error(capsys)
    assert not (tmp_path / "open_out.csv").exists()


def test_blank_lines_before_the_header_are_skipped_and_utf16_is_named(trained, tmp_path, capsys):
    models, _ = trained
    src = tmp_path / "in.csv"
    for start in (b"", b"\xef\xbb\xbf"):  # after Excel's byte-order mark too
        src.write_bytes(start + ("\n \r\n" + "\n".join([HEADER, *GOOD]) + "\n").encode())
        assert _score(src, tmp_path / "out.csv", models) == 0
        assert pd.read_csv(tmp_path / "out.csv", dtype=str)["case_id"].tolist() == [g.split(",")[0] for g in GOOD]
    wide = tmp_path / "wide.csv"
    wide.write_bytes(("\n".join([HEADER, *GOOD]) + "\n").encode("utf-16"))
    capsys.readouterr()
    assert _score(wide, tmp_path / "out.csv", models) == 2
    assert "looks like UTF-16" in _one_line_error(capsys)


def test_a_malformed_or_multi_line_record_with_a_field_over_128_kb_is_read(trained, tmp_path):
    """Python's csv module, which splits such records, refuses fields over 128 KB by default."""
    models, _ = trained
    long = "x" * 140_000
    src = _write(tmp_path / "in.csv", [HEADER + ",note", GOOD[0] + ",n", f"b1,50,female,no,2,{long},EXTRA",
                                       'b2,50,female,no,2,"first', f'{long}"', GOOD[1] + ",n"])
    assert _score(src, tmp_path / "out.csv", models) == 1
    assert pd.read_csv(tmp_path / "out.csv", dtype=str)["case_id"].tolist() == [GOOD[0].split(",")[0], "b2",
                                                                                GOOD[1].split(",")[0]]
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["reject_row"].tolist() == ["1"] and "has 7 fields; the header has 6" in bad["reject_reason"][0]
    assert bad["note"][0] == long + ",EXTRA"  # the field past the header's, kept in the last column


def test_a_record_with_too_many_fields_loses_none_and_is_rejected_again_unmended(trained, tmp_path):
    """The fields past the header's stay in the last column as CSV text, so the rejects file holds
    the whole record and, scored again as it is, rejects it again; a spreadsheet mark in its
    fields is taken off as in any other record."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", ["case_id,age,sex,leg_swelling,skin_red,fever", "a,45,male,yes,,no,yes",
                                       "'=b,45,male,yes,,no,\"x, y\"", "'=c,abc,male,,,",
                                       'd,45,male,yes,,"no\r\nx","y\nz"'])  # line breaks in the fields past it
    assert _score(src, tmp_path / "out.csv", models) == 1
    bad = pd.read_csv(tmp_path / "out.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad["fever"].tolist() == ["no,yes", 'no,"x, y"', "", '"no\r\nx","y\nz"']
    assert bad["case_id"].tolist() == ["a", "'=b", "'=c", "d"]  # marked once: taken off on reading, whatever the record
    assert "(column 'fever' holds the fields from there on, as CSV text)" in bad["reject_reason"][0]
    assert _score(tmp_path / "out.csv.rejects.csv", tmp_path / "again.csv", models) == 1
    again = pd.read_csv(tmp_path / "again.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert again["case_id"].tolist() == ["a", "'=b", "'=c", "d"]
    assert again["reject_reason"].str.contains("column 'fever'").tolist() == [True, True, False, True]
    assert again["fever"].tolist() == bad["fever"].tolist()  # the same text, the same rows


def test_the_spreadsheet_mark_is_taken_off_when_a_csv_is_read_so_fixed_rejects_score_as_written(trained, tmp_path):
    """csv_safe's ``'`` is a mark, not part of the text: reading a CSV takes it off exactly where
    csv_safe would have put it, so fixing one value of a rejected row changes nothing else."""
    from pipeline.core.formulas import csv_safe, unguarded

    cells = ["=x", "-A1", "\tyes", "@b", "+5", "-3", "+-5", "'=y", "''=z", "'-3", "'abc", "'", "plain", "", None]
    table = pa.table({"text": pa.array(cells, pa.large_string()), "n": [1] * len(cells)})
    assert unguarded(csv_safe(table)).equals(table)
    odd = pa.table({"text": ["'5", "'+5", "'abc", "'", "''=x"]})
    assert unguarded(odd).column("text").to_pylist() == ["'5", "'+5", "'abc", "'", "'=x"]
    models, _ = trained
    src = _write(tmp_path / "in.csv", [HEADER, "-A1,abc,male,yes,2", '@B2,abc,male,"\tyes",2', *GOOD])
    assert _score(src, tmp_path / "out.csv", models) == 1
    rejects = tmp_path / "out.csv.rejects.csv"
    bad = pd.read_csv(rejects, dtype=str, keep_default_na=False)
    assert bad["case_id"].tolist() == ["'-A1", "'@B2"] and bad["locking"].tolist() == ["yes", "'\tyes"]
    bad["age"] = "40"  # the one value the reasons name
    bad.to_csv(rejects, index=False)
    assert _score(rejects, tmp_path / "fixed.csv", models) == 0
    fixed = pd.read_csv(tmp_path / "fixed.csv", dtype=str, keep_default_na=False)
    assert fixed["case_id"].tolist() == ["'-A1", "'@B2"]  # written with the mark again, read back without it
    from pipeline.core.casefiles import iter_chunks

    assert next(iter_chunks(tmp_path / "fixed.csv", 100)).frame["case_id"].tolist() == ["-A1", "@B2"]


def test_column_names_keep_their_meaning_through_a_fixed_rejects_file(trained, tmp_path):
    """A header name is the user's text as a cell is: written with the spreadsheet mark and read
    without it, so a red flag under a name that starts with a tab (matched ignoring spaces) still
    counts when its rejected row is fixed and scored again, and other names gain no second mark."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", ['age,sex,"\tbreathless_or_chest_pain",=total', "50,mal,yes,3", "40,male,no,=1"])
    assert _score(src, tmp_path / "out.csv", models, "--columns", "row,triage") == 1
    rejects = tmp_path / "out.csv.rejects.csv"
    assert rejects.read_text().splitlines()[0].endswith('"\'\tbreathless_or_chest_pain","\'=total"')
    rejects.write_text(rejects.read_text().replace(',"mal",', ',"male",'))
    assert _score(rejects, tmp_path / "fixed.csv", models, "--keep-input-columns") == 0
    direct = _write(tmp_path / "direct.csv", ["age,sex,breathless_or_chest_pain", "50,male,yes"])
    assert _score(direct, tmp_path / "direct_out.csv", models, "--columns", "row,triage") == 0
    fixed = pd.read_csv(tmp_path / "fixed.csv", dtype=str, keep_default_na=False)
    assert fixed["triage"].tolist() == pd.read_csv(tmp_path / "direct_out.csv", dtype=str)["triage"].tolist() \
        == ["emergency"]
    assert "'=total" in fixed.columns and "''=total" not in fixed.columns
    # the rows are scored now: the rejects file's stale reasons are not kept as input columns
    assert list(fixed.columns[-4:]) == ["age", "sex", "'\tbreathless_or_chest_pain", "'=total"], fixed.columns
    assert not any(c.startswith("reject_") for c in fixed.columns)
    # another tool's header with both =x and 'x= (which no file of ours holds) keeps both as written
    twins = _write(tmp_path / "twins.csv", ["age,sex,=x,'=x", "30,male,a,b"])
    assert _score(twins, tmp_path / "twins_out.csv", models, "--keep-input-columns") == 0
    assert list(pd.read_csv(tmp_path / "twins_out.csv", dtype=str).columns[-2:]) == ["'=x", "''=x"]


def test_parquet_integers_with_nulls_read_the_same_in_every_chunking(trained, tmp_path):
    """As numpy integers, a chunk with a null would turn a column to floats ("7.0") and the rejects
    and kept columns would depend on --chunk-rows."""
    models, _ = trained
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"case_id": list("abcd"), "age": pa.array([40, None, 60, 7]),
                             "sex": ["male", "female", "male", "female"], "visits": pa.array([3, None, 5, 6]),
                             "smoker": pa.array([1, None, 0, 2], pa.int8())}), src)
    outputs = []
    for rows in ("1", "2", "16384", str(10 ** 20)):  # any size, however large
        out = tmp_path / f"out{rows}.csv"
        assert _score(src, out, models, "--chunk-rows", rows, "--keep-input-columns") == 1
        outputs.append((out.read_bytes(), Path(f"{out}.rejects.csv").read_bytes()))
    assert outputs.count(outputs[0]) == len(outputs)
    scored = pd.read_csv(tmp_path / "out1.csv", dtype=str, keep_default_na=False)
    assert scored[["visits", "smoker"]].values.tolist() == [["3", "1"], ["5", "0"]]
    bad = pd.read_csv(tmp_path / "out1.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert bad[["age", "visits", "smoker"]].values.tolist() == [["", "", ""], ["7", "6", "2"]]
    assert "value '7': out of range" in bad["reject_reason"][1] and "value '2': not allowed" in bad["reject_reason"][1]


def test_a_lone_carriage_return_inside_a_quoted_note_is_read(trained, tmp_path):
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_bytes(("\n".join([HEADER + ",note", GOOD[0] + ',"since Monday\nworse at night\rbetter now"',
                                *(g + ",ok" for g in GOOD[1:])]) + "\n").encode())
    assert _score(src, tmp_path / "out.csv", models) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(GOOD)


def test_headers_with_spaces_or_hyphens_between_words_name_their_fields(trained, small_data, tmp_path, capsys):
    """`Foot cold or pale` (a spreadsheet's header) was no field: its answers were read as unknown
    with a warning, so red flags were lost and emergencies went to `see_doctor_soon` (exit 0)."""
    models, _ = trained
    cases = pd.read_parquet(small_data / "test.parquet").head(300).drop(columns=["condition", "severity"])
    text = cases.astype(str).replace({"<NA>": "", "nan": ""})
    text.to_csv(tmp_path / "underscores.csv", index=False)
    spelt = {c: (c.replace("_", " ").capitalize() if i % 2 else c.replace("_", "-").upper())
             for i, c in enumerate(text.columns)}
    assert "Foot cold or pale" in spelt.values() or "FOOT-COLD-OR-PALE" in spelt.values()
    text.rename(columns=spelt).to_csv(tmp_path / "spaces.csv", index=False)
    assert _score(tmp_path / "underscores.csv", tmp_path / "a.csv", models) == 0
    assert _score(tmp_path / "spaces.csv", tmp_path / "b.csv", models) == 0
    assert "not case fields" not in capsys.readouterr().err
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    case = {"age": 70, "sex": "female", "leg_swelling": "yes", "foot_cold_or_pale": "yes"}
    pd.testing.assert_frame_equal(predict({spelt.get(k, k).title(): v for k, v in case.items()}, model=models),
                                  predict(case, model=models))
    assert predict(case, model=models)["triage"][0] == "emergency"


def test_a_damaged_parquet_file_says_from_which_row_and_what_to_do(trained, tmp_path, capsys):
    """A Parquet file whose schema reads but whose data is damaged (a copy cut short or
    overwritten) said only Arrow's own words ("cannot read: Couldn't deserialize thrift: ...")."""
    models, _ = trained
    table = pa.table({"case_id": [f"c{i}" for i in range(140)], "age": [30 + i % 50 for i in range(140)],
                      "sex": ["male", "female"] * 70})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=7, compression="none")
    page = pq.ParquetFile(tmp_path / "in.parquet").metadata.row_group(10).column(1).data_page_offset
    with open(tmp_path / "in.parquet", "r+b") as damaged:  # the page header of row group 10's ages
        damaged.seek(page)
        damaged.write(b"\xff" * 24)
    assert _score(tmp_path / "in.parquet", tmp_path / "out.csv", models, "--chunk-rows", "7") == 2
    assert (f"{tmp_path / 'in.parquet'}: cannot read its rows from row 70 on: the file is damaged or was not written in "
            "full (Arrow: ") in _one_line_error(capsys)
    assert not [p.name for p in tmp_path.iterdir() if "out" in p.name and not p.name.endswith(".lock")]


def test_other_columns_that_differ_only_in_their_word_breaks_stay_two(trained, tmp_path):
    """Only a field's (or case_id's, or a label's) words are joined: `Follow-up` and `Follow up`,
    columns the scorer ignores, are two columns, as they were, and are kept as given."""
    models, _ = trained
    src = _write(tmp_path / "in.csv", ["case_id,age,sex,Follow-up,Follow up,Leg swelling", "a1,40,male,yes,2024-01-02,yes"])
    assert _score(src, tmp_path / "out.csv", models, "--keep-input-columns") == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert out[["Follow-up", "Follow up", "Leg swelling"]].values.tolist() == [["yes", "2024-01-02", "yes"]]
    frame = pd.DataFrame([[40, "male", "yes", "x", "y"]], columns=["age", "sex", "Leg swelling", "Pain score", "pain_score"])
    with pytest.warns(UserWarning, match="not case fields: Pain score, pain_score"):
        got = predict(frame, model=models)
    pd.testing.assert_frame_equal(got, predict({"age": 40, "sex": "male", "leg_swelling": "yes"}, model=models))


@pytest.mark.parametrize("change", ["cut short", "added to", "rewritten", "touched"])
def test_a_csv_written_to_while_it_is_read_stops_the_job_rather_than_lose_rows(tmp_path, change):
    """A file another program is still writing (or cuts short) while the job reads it: the rows the
    job saw are not the file's, so it stops once it has read the last, naming the file."""
    from pipeline.core.casefiles import iter_chunks

    src = tmp_path / "growing.csv"
    lines = ["case_id,age,sex\n", *(f"c{i},{20 + i},male\n" for i in range(200))]
    src.write_text("".join(lines))
    before = src.stat()
    chunks = iter_chunks(src, chunk_rows=1)
    assert next(chunks).frame["case_id"].tolist() == ["c0"]  # the file is open and being read
    if change == "cut short":
        os.truncate(src, len("".join(lines[:50])))
    elif change == "added to":
        with open(src, "a") as fh:
            fh.write("c999,50,female\n")
    elif change == "rewritten":  # the same size, other bytes
        src.write_text("".join(lines).replace("male", "mal3"))
    if change in ("rewritten", "touched"):
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    said = {"cut short": "2,626 bytes when it was opened, 594 at the end",
            "added to": "2,626 bytes when it was opened, 2,641 at the end",
            "rewritten": "its modification time moved", "touched": "its modification time moved"}[change]
    with pytest.raises(BatchInputError, match=f"growing.csv: the file changed while it was read \\({said}"):
        for _ in chunks:
            pass
    # unchanged, it is read whole
    src.write_text("".join(lines))
    assert sum(len(c.frame) for c in iter_chunks(src, chunk_rows=7)) == 200


@pytest.mark.parametrize("change", ["cut short", "added to", "rewritten", "touched"])
def test_a_parquet_file_written_to_while_it_is_read_stops_the_job(tmp_path, change):
    """A Parquet file rewritten in place while the job reads it: its rows are read at the places
    its first footer gave, so the rows the job saw are not the file's (or the read breaks, and
    the file is not damaged but changed). It stops, naming the file, as for a CSV."""
    from pipeline.core.casefiles import iter_chunks

    src = tmp_path / "growing.parquet"
    table = pa.table({"case_id": [f"c{i}" for i in range(200)], "age": [20 + i % 60 for i in range(200)],
                      "sex": ["male", "female"] * 100})
    pq.write_table(table, src, row_group_size=10, compression="none")
    size, before = src.stat().st_size, src.stat()
    chunks = iter_chunks(src, chunk_rows=1)
    assert next(chunks).frame["case_id"].tolist() == ["c0"]  # the file is open and being read
    if change == "cut short":
        os.truncate(src, size // 2)
    elif change == "added to":
        with open(src, "ab") as fh:
            fh.write(b"\0" * 10)
    elif change == "rewritten":  # the same bytes written again, in place
        src.write_bytes(src.read_bytes())
    if change in ("rewritten", "touched"):
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    said = {"cut short": f"{size:,} bytes when it was opened, {size // 2:,} at the end",
            "added to": f"{size:,} bytes when it was opened, {size + 10:,} at the end",
            "rewritten": "its modification time moved", "touched": "its modification time moved"}[change]
    with pytest.raises(BatchInputError, match=f"growing.parquet: the file changed while it was read \\({said}"):
        for _ in chunks:
            pass
    # unchanged, it is read whole
    pq.write_table(table, src, row_group_size=10, compression="none")
    assert sum(len(c.frame) for c in iter_chunks(src, chunk_rows=7)) == 200


def test_a_csv_cut_short_inside_a_character_is_said_to_have_changed_not_to_be_bad_text(tmp_path):
    """Cut in the middle of a record (here of a two-byte character, beyond what the reader has
    read ahead), the file reads as broken text: the job says it changed, not to save it as UTF-8."""
    from pipeline.core.casefiles import iter_chunks

    src = tmp_path / "cut.csv"
    row = "c{},40,female,genou gonflé après une chute\n"
    data = ("case_id,age,sex,note\n" + "".join(row.format(i) for i in range(400_000))).encode()
    src.write_bytes(data)
    chunks = iter_chunks(src, chunk_rows=10_000)
    next(chunks)
    os.truncate(src, data.index("é".encode(), len(data) * 3 // 4) + 1)  # inside the character
    with pytest.raises(BatchInputError, match="cut.csv: the file changed while it was read"):
        for _ in chunks:
            pass


def test_a_csv_put_in_place_of_the_input_while_a_long_record_is_read_again_is_refused(tmp_path):
    """A record longer than the read block makes the reader open the file again, by name: another
    file put there meanwhile (a rename), even of the same size and time, is not read as the rest."""
    from pipeline.core.casefiles import iter_chunks

    src, other = tmp_path / "cases.csv", tmp_path / "other.csv"
    lines = ["case_id,age,sex,note\n", *(f"c{i},40,male,\n" for i in range(30_000)),
             f"long,40,male,{'x' * 600_000}\n", *(f"d{i},40,male,\n" for i in range(10))]
    src.write_text("".join(lines))
    other.write_text("".join(lines).replace("male", "mal3"))
    state = src.stat()
    os.utime(other, ns=(state.st_atime_ns, state.st_mtime_ns))
    chunks = iter_chunks(src, chunk_rows=1_000)
    next(chunks)
    os.replace(other, src)
    with pytest.raises(BatchInputError, match="another file of its size was put in its place"):
        for _ in chunks:
            pass


@pytest.mark.parametrize("second_at_once", [False, True])
def test_a_held_off_stop_acts_after_the_step_and_a_second_at_once_where_the_step_may_hang(second_at_once):
    """A step held off against stops (renaming files into place) acts on the first stop once done;
    a local Dask cluster's start, held off so that the job can close it, may hang: there a second
    stop acts at once (it was held off for the whole start, however long, and only a kill ended it)."""
    from pipeline.serve.guard import Interrupted, signals_deferred, stop_at_once_on_signals

    went_on = []
    with stop_at_once_on_signals(), pytest.raises(Interrupted):
        with signals_deferred(second_at_once=second_at_once):
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs between the two
            went_on.append(True)
    assert went_on == ([] if second_at_once else [True])
