"""The Dask engine (pipeline.serve.dask) on a real two-worker local cluster.

Scoring on the cluster must give exactly the pandas engine's rows, numbers and rejects; a killed
worker must either be survived or leave no output; partitioned generation must be reproducible;
the dask joblib backend must give the local backend's cross-validation results.
"""

import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed")
from distributed import WorkerPlugin, get_task_stream

from pipeline.core.casefiles import FileBlock, csv_data_start
from pipeline.core.cluster import LOCAL_CLUSTER_ADDRESSES, LOCAL_WORKER_CONFIG, DaskJobError, dask_client
from pipeline.core.errors import BatchInputError
from pipeline.core.files import arrow_file
from pipeline.core.parsing import codes_to_text_frame
from pipeline.core.schema import ID_COLUMN
from pipeline.data.generate import generate_cases, generate_codes
from pipeline.data.parallel import generate_dask
from pipeline.serve.batch import score_files
from pipeline.serve.dask import score_files_dask
from pipeline.serve.predict import get_model
from pipeline.serve.writing import REJECT_META

pytestmark = pytest.mark.slow

# the kill switch below runs inside the workers, which cannot import this test module by name
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
CHUNK = 1000  # several chunks per file, so part names and cross-chunk duplicates are exercised


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    # one retry after a worker death (the default is 3): keeps the "killed every time" test short
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, **LOCAL_WORKER_CONFIG}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **LOCAL_CLUSTER_ADDRESSES)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _text_cases(kb, n, seed, ids=None):
    codes, _, _ = generate_codes(kb, n, seed=seed)
    frame = codes_to_text_frame(codes)
    frame["age"] = frame["age"].astype(str)  # text, as a CSV holds it, so a bad value can be put in
    if ids is not None:
        frame.insert(0, ID_COLUMN, [f"{ids}-{i}" for i in range(n)])
    return frame


@pytest.fixture(scope="module")
def inputs(kb, small_data, tmp_path_factory):
    """CSV and Parquet inputs, with and without case_id, with bad values and duplicate ids."""
    folder = tmp_path_factory.mktemp("dask-inputs")
    a = _text_cases(kb, 2500, 1, ids="a")
    a.loc[1500, ID_COLUMN] = "a-5"  # a duplicate in a later chunk of the same file
    a.loc[200, ID_COLUMN] = "a-150"  # a duplicate within one chunk
    a.loc[40, "age"] = "old"
    a.to_parquet(folder / "a.parquet")  # Parquet chunks are exactly CHUNK rows
    b = _text_cases(kb, 1800, 2)
    b["note"] = "x"  # not a case field: a warning
    b.to_csv(folder / "b.csv", index=False)
    d = folder / "c.parquet"
    d.write_bytes((small_data / "test.parquet").read_bytes())  # typed columns, ids, labels ignored
    c = _text_cases(kb, 1200, 3, ids="d")
    c.loc[7, ID_COLUMN] = "a-3"  # a duplicate of an earlier file's id
    c.loc[8, [ID_COLUMN, "age"]] = ["a-4", "abc"]  # invalid anyway: rejected for its age only
    # the only CSV with ids comes last (a CSV that ended on a chunk once gave the pandas engine an
    # empty last chunk that broke ids after it: see test_pandas_engine_ids_after_a_csv_ending_on_a_chunk)
    c.to_csv(folder / "d.csv", index=False)
    return [str(folder / name) for name in ("a.parquet", "b.csv", "c.parquet", "d.csv")]


@pytest.fixture(scope="module")
def reference(trained, inputs, tmp_path_factory):
    """The pandas engine's output and rejects for ``inputs``."""
    models, _ = trained
    out = tmp_path_factory.mktemp("dask-reference") / "ref.parquet"
    summary = score_files(inputs, out, get_model(models), chunk_rows=CHUNK)
    return summary, pd.read_parquet(out), Path(f"{out}.rejects.csv").read_bytes()


def _read_parts(folder: Path, fmt: str = "parquet") -> pd.DataFrame:
    parts = sorted(folder.glob(f"part-*.{fmt}"))
    assert parts, f"no part files in {folder}"
    if fmt == "parquet":
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)


def _assert_same_as_reference(out: Path, reference, summary=None) -> None:
    ref_summary, ref_rows, ref_rejects = reference
    rows = _read_parts(out)
    order = rows.assign(_f=rows["file"].map({f: i for i, f in enumerate(ref_summary.files)}))
    assert order.sort_values(["_f", "row"], kind="stable").index.equals(rows.index)  # names give input order
    pd.testing.assert_frame_equal(rows, ref_rows, check_exact=True)
    assert (out / "_rejects.csv").read_bytes() == ref_rejects
    if summary is not None:
        assert (summary.rows_scored, summary.rows_rejected) == (ref_summary.rows_scored, ref_summary.rows_rejected)
        assert summary.warnings == ref_summary.warnings


def test_dask_engine_matches_pandas_engine(client, trained, inputs, reference, tmp_path):
    models, _ = trained
    from pipeline.core.files import _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = tmp_path / f".out.tmp-{_host()}-{dead}-0123456789ab"  # a driver killed outright left it
    stale.mkdir()
    (stale / "part-00000-00000.parquet").write_bytes(b"x")
    summary = score_files_dask(inputs, tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    _assert_same_as_reference(tmp_path / "out", reference, summary)
    ref_summary = reference[0]
    # a: age "old", a duplicate within a chunk and one across chunks; d: a duplicate of an id in a, and
    # age "abc" (whose id also repeats one in a, but a row is rejected once, for its value)
    assert ref_summary.rows_rejected == 5
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names[0] == "_rejects.csv" and all(n.startswith("part-") for n in names[1:])
    # the folder reads as one dataset: dataset readers skip a file whose name starts with _
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), _read_parts(tmp_path / "out"), check_exact=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_parity_holds_whatever_the_main_process_blas_thread_count(client, trained, inputs, blas_threads, tmp_path):
    """Workers run BLAS on one thread (the nanny's environment); the main process on 1 or 2."""
    from threadpoolctl import threadpool_limits

    models, _ = trained
    out = tmp_path / "ref.parquet"
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        summary = score_files(inputs, out, get_model(models), chunk_rows=CHUNK)
    reference = (summary, pd.read_parquet(out), Path(f"{out}.rejects.csv").read_bytes())
    score_files_dask(inputs, tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    _assert_same_as_reference(tmp_path / "out", reference)


def test_csv_parts_concatenate_to_the_pandas_engines_csv(client, trained, inputs, tmp_path):
    models, _ = trained
    score_files(inputs, tmp_path / "ref.csv", get_model(models), chunk_rows=CHUNK)
    score_files_dask(inputs, tmp_path / "out", models, client=client, fmt="csv", chunk_rows=CHUNK)
    parts = sorted((tmp_path / "out").glob("part-*.csv"))
    header, *_ = parts[0].read_bytes().split(b"\n", 1)
    bodies = [p.read_bytes().split(b"\n", 1)[1] for p in parts]
    assert header + b"\n" + b"".join(bodies) == (tmp_path / "ref.csv").read_bytes()


def test_globs_are_expanded_in_sorted_order(client, trained, inputs, reference, tmp_path):
    models, _ = trained
    folder = Path(inputs[0]).parent
    score_files_dask([str(folder / "*.csv"), str(folder / "*.parquet")], tmp_path / "out", models,
                     client=client, chunk_rows=CHUNK)
    files = _read_parts(tmp_path / "out")["file"].unique().tolist()
    assert files == [inputs[1], inputs[3], inputs[0], inputs[2]]
    with pytest.raises(BatchInputError, match="no file matches"):
        score_files_dask([str(folder / "*.tsv")], tmp_path / "none", models, client=client)
    # a folder, or a pipe, is named as what it is, as the pandas engine names it
    with pytest.raises(BatchInputError, match=r"is a folder; give the CSV or Parquet files in it \(with --engine dask, a glob"):
        score_files_dask([str(folder)], tmp_path / "none", models, client=client)
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(BatchInputError, match=r"pipe.csv: is a pipe, not a file, .* save its rows to a file, or score "
                                              r"it with `kneepain score` and its pandas engine"):
        score_files_dask([str(tmp_path / "pipe.csv")], tmp_path / "none", models, client=client)
    # overlapping globs name a file twice: refused, as by the pandas engine
    with pytest.raises(BatchInputError, match=r"a.parquet: is given twice as an input, and its rows would be scored twice"):
        score_files_dask([str(folder / "*.parquet"), inputs[0]], tmp_path / "none", models, client=client)
    assert not (tmp_path / "none").exists()


def test_bad_rows_are_rejected_and_other_partitions_unaffected(client, trained, kb, tmp_path):
    models, _ = trained
    good = tmp_path / "good.csv"
    _text_cases(kb, 2500, 9, ids="g").to_csv(good, index=False)
    bad = str(CORPUS / "misspelled_category.csv")
    summary = score_files_dask([bad, str(good)], tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert (summary.rows_scored, summary.rows_rejected) == (3 + 2500, 1)
    rejects = pd.read_csv(tmp_path / "out" / "_rejects.csv", dtype=str, keep_default_na=False)
    assert list(rejects.columns[:3]) == REJECT_META and set(pd.read_csv(bad, nrows=0).columns) <= set(rejects.columns)
    assert rejects[REJECT_META].to_dict("records") == [{
        "reject_file": bad, "reject_row": "3",
        "reject_reason": "column 'sex', value 'femal': not allowed; allowed: female, male"}]
    assert rejects.loc[0, "sex"] == "femal"  # the whole row
    rows = _read_parts(tmp_path / "out")
    alone = score_files([good], tmp_path / "alone.parquet", get_model(models), chunk_rows=CHUNK)
    assert alone.rows_scored == 2500
    mine = rows[rows["file"] == str(good)].drop(columns="file").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, pd.read_parquet(tmp_path / "alone.parquet"), check_exact=True)
    assert rows.loc[rows["file"] == bad, "row"].tolist() == [0, 1, 2]


def test_the_rejects_file_is_the_pandas_engines_byte_for_byte_formula_names_included(client, trained, tmp_path):
    """A column name is the user's text: the header of the rejects file carries the spreadsheet
    mark in both engines (a name such as =total would run in a spreadsheet)."""
    models, _ = trained
    src = tmp_path / "in.csv"
    src.write_text("case_id,age,sex,=total,@note\na,300,male,3,x\nb,40,male,4,y\nc,41,femal,5,=1+1\n")
    score_files_dask([str(src)], tmp_path / "out", models, client=client, chunk_rows=1, block_bytes=1)
    score_files([src], tmp_path / "alone.csv", get_model(models), chunk_rows=1)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == (tmp_path / "alone.csv.rejects.csv").read_bytes()
    assert (tmp_path / "out" / "_rejects.csv").read_text().splitlines()[0].endswith(',"\'=total","\'@note"')


def _two_csvs_with_ids(kb, folder: Path) -> list[str]:
    paths = []
    for name in ("x", "y"):
        frame = _text_cases(kb, 300, 5, ids=name)
        if name == "y":
            frame.loc[299, ID_COLUMN] = "x-0"
        frame.to_csv(folder / f"{name}.csv", index=False)
        paths.append(str(folder / f"{name}.csv"))
    return paths


def test_ids_after_a_csv_ending_on_a_chunk(client, trained, kb, tmp_path):
    models, _ = trained
    summary = score_files_dask(_two_csvs_with_ids(kb, tmp_path), tmp_path / "out", models, client=client,
                               chunk_rows=300)  # each CSV is exactly one chunk
    assert (summary.rows_scored, summary.rows_rejected) == (599, 1)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == ["part-00000-00000.parquet",
                                                                          "part-00001-00000.parquet"]
    assert "y.csv\",299,\"column 'case_id', value 'x-0': duplicate case_id" in (tmp_path / "out" / "_rejects.csv").read_text()


def test_a_file_of_no_rows_gets_a_part_of_its_columns_whatever_its_format(client, trained, kb, tmp_path):
    """A header-only CSV and a Parquet file of no rows each get one empty part, as the pandas
    engine writes an output of the columns alone for either."""
    models, _ = trained
    empty = _text_cases(kb, 10, 4, ids="e").iloc[:0]
    empty.to_csv(tmp_path / "empty.csv", index=False)
    empty.to_parquet(tmp_path / "empty.parquet")
    inputs = [str(tmp_path / "empty.parquet"), str(tmp_path / "empty.csv")]
    summary = score_files_dask(inputs, tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert (summary.rows_scored, summary.rows_rejected) == (0, 0)
    parts = sorted((tmp_path / "out").glob("part-*"))
    assert [p.name for p in parts] == ["part-00000-00000.parquet", "part-00001-00000.parquet"]
    first, second = (pd.read_parquet(p) for p in parts)
    assert len(first) == len(second) == 0
    pd.testing.assert_frame_equal(first, second)  # the same columns, of the same types
    score_files(inputs, tmp_path / "ref.parquet", get_model(models), chunk_rows=CHUNK)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref.parquet"), first)


def test_pandas_engine_ids_after_a_csv_ending_on_a_chunk(trained, kb, tmp_path):
    models, _ = trained
    summary = score_files(_two_csvs_with_ids(kb, tmp_path), tmp_path / "out.csv", get_model(models),
                          chunk_rows=300)
    assert (summary.rows_scored, summary.rows_rejected) == (599, 1)


def test_unusable_input_or_existing_output_writes_nothing(client, trained, kb, tmp_path):
    models, _ = trained
    good = tmp_path / "good.csv"
    _text_cases(kb, 100, 9).to_csv(good, index=False)
    with pytest.raises(BatchInputError, match="column 'sex': required column is missing"):
        score_files_dask([str(good), str(CORPUS / "missing_required_column.csv")], tmp_path / "out", models,
                         client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv"]  # neither output nor temporary folder
    (tmp_path / "out").mkdir()
    with pytest.raises(BatchInputError, match="already exists"):
        score_files_dask([str(good)], tmp_path / "out", models, client=client)
    assert score_files_dask(good, tmp_path / "empty_rejects", models, client=client).rows_rejected == 0
    header = (tmp_path / "empty_rejects" / "_rejects.csv").read_text()
    assert header == ",".join(f'"{c}"' for c in [*REJECT_META, *pd.read_csv(good, nrows=0).columns]) + "\n"


def test_a_stop_as_the_temporary_folder_is_removed_says_the_output_is_whole(client, trained, kb, tmp_path,
                                                                          monkeypatch):
    from pipeline.core.errors import StoppedAfterOutput
    from pipeline.serve import dask as engine
    from pipeline.serve.guard import Interrupted, stop_at_once_on_signals

    models, _ = trained
    _text_cases(kb, 100, 9).to_csv(tmp_path / "good.csv", index=False)
    removals = []

    def stopped(tmp):  # Ctrl-C as the job removes what its tasks' other attempts left
        removals.append(tmp)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "remove_temp_folder", stopped)
    with pytest.raises(StoppedAfterOutput, match=f"^interrupted after {tmp_path / 'out'} was written in full$") as stop:
        score_files_dask([str(tmp_path / "good.csv")], tmp_path / "out", models, client=client)
    assert (stop.value.summary.rows_scored, stop.value.summary.rows_rejected) == (100, 0)
    assert len(removals) == 2 and len(_read_parts(tmp_path / "out")) == 100  # removed once more after the stop
    monkeypatch.undo()
    frame = _text_cases(kb, 100, 9)
    frame["note"] = "x"  # a column the job ignores, and warns of once the folder is in place
    frame.to_csv(tmp_path / "noted.csv", index=False)

    def stopped_in_the_warning(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "ignored_columns_message", stopped_in_the_warning)
    with pytest.raises(StoppedAfterOutput, match=f"^interrupted after {tmp_path / 'out2'} was written in full$"):
        score_files_dask([str(tmp_path / "noted.csv")], tmp_path / "out2", models, client=client)
    assert len(_read_parts(tmp_path / "out2")) == 100
    monkeypatch.undo()

    def merging(*args, **kwargs):  # a stop as the rejects are merged, before the folder is in place
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(engine.shutil, "copyfileobj", merging)
    with stop_at_once_on_signals(), pytest.raises(Interrupted) as stopped:
        score_files_dask([str(CORPUS / "misspelled_category.csv")], tmp_path / "out3", models, client=client)
    assert not isinstance(stopped.value, StoppedAfterOutput) and not (tmp_path / "out3").exists()


def test_a_relative_output_folder_is_found_by_workers_in_another_folder(client, trained, kb, tmp_path, monkeypatch):
    """The workers run in their own working folder (here the one the cluster started in, as on
    another machine): the job's temporary folder goes to them by its absolute path."""
    models, _ = trained
    assert client.run(os.getcwd) and all(cwd != str(tmp_path) for cwd in client.run(os.getcwd).values())
    monkeypatch.chdir(tmp_path)
    _text_cases(kb, 300, 11, ids="r").to_csv("cases.csv", index=False)
    summary = score_files_dask(["cases.csv"], "scored", models, client=client)
    assert summary.rows_scored == 300 and len(_read_parts(tmp_path / "scored")) == 300


def test_a_model_that_changes_during_the_job_fails_it_and_writes_nothing(client, trained, kb, tmp_path, monkeypatch):
    """A worker that loads other files than the driver checked (a training run replaced the folder
    meanwhile) fails the job: one output never holds the scores of two models."""
    import dataclasses

    import pipeline.serve.dask as engine
    from pipeline.core.errors import ModelIntegrityError

    models, _ = trained
    path = tmp_path / "cases.csv"
    _text_cases(kb, 300, 12, ids="m").to_csv(path, index=False)
    checked = get_model(models)
    assert len(checked.digest) == 64 and get_model(str(models)).digest == checked.digest
    # the driver's check saw another model's files: the workers load the folder as it is now
    monkeypatch.setattr(engine, "get_model", lambda source: dataclasses.replace(checked, digest="0" * 64))
    with pytest.raises(ModelIntegrityError, match=r"the model changed while the job ran .* nothing was written"):
        score_files_dask([str(path)], tmp_path / "out", models, client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv"]


def test_an_input_written_to_during_the_job_fails_it_and_writes_nothing(client, trained, kb, tmp_path, monkeypatch):
    """The workers open the inputs by name, block by block: rows added to a file (or a file cut
    short) while its blocks are read would be scored in part, so the job fails, naming it."""
    import pipeline.serve.dask as engine

    models, _ = trained
    path = tmp_path / "cases.csv"
    _text_cases(kb, 300, 13, ids="w").to_csv(path, index=False)
    compare = engine._cross_block_duplicates

    def after_the_blocks(ordered):  # every block read; another program then adds a row
        with open(path, "a") as fh:
            fh.write(path.read_text().splitlines()[1].replace("w-0", "w-new") + "\n")
        return compare(ordered)

    monkeypatch.setattr(engine, "_cross_block_duplicates", after_the_blocks)
    with pytest.raises(BatchInputError, match="cases.csv: the file changed while it was read"):
        score_files_dask([str(path)], tmp_path / "out", models, client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv"]
    # removed once every block has read it, it was read whole, as it was: the job completes
    _text_cases(kb, 300, 13, ids="w").to_csv(path, index=False)
    monkeypatch.setattr(engine, "_cross_block_duplicates", lambda ordered: (path.unlink(), compare(ordered))[1])
    assert score_files_dask([str(path)], tmp_path / "out", models, client=client).rows_scored == 300


def test_a_parquet_input_cut_short_during_the_job_is_said_to_have_changed(client, trained, kb, tmp_path, monkeypatch):
    """A Parquet file rewritten in place once the job has planned it: the worker that opens it
    finds no footer, and the job says the file changed, as for a CSV, not that it is damaged."""
    import pipeline.serve.dask as engine

    models, _ = trained
    path = tmp_path / "cases.parquet"
    _text_cases(kb, 300, 13, ids="p").to_parquet(path, index=False)
    plan = engine.plan_blocks

    def then_cut(*args, **kwargs):  # another program rewrites the file as the workers start
        yield from plan(*args, **kwargs)
        os.truncate(path, path.stat().st_size // 2)

    monkeypatch.setattr(engine, "plan_blocks", then_cut)
    with pytest.raises(BatchInputError, match="cases.parquet: the file changed while it was read"):
        score_files_dask([str(path)], tmp_path / "out", models, client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.parquet"]


def test_a_file_unreadable_past_its_header_is_named_as_the_pandas_engine_names_it(client, trained, tmp_path,
                                                                                    monkeypatch):
    """The workers read a file by its absolute path; the error still names it as it was given."""
    models, _ = trained
    monkeypatch.chdir(tmp_path)
    Path("latin1.csv").write_bytes(b"case_id,age,sex\na,40,male\nb,50,f\xe9male\n")
    with pytest.raises(BatchInputError) as pandas_engine:
        score_files(["latin1.csv"], "ref.csv", get_model(models))
    with pytest.raises(BatchInputError) as dask_engine:
        score_files_dask(["latin1.csv"], "out", models, client=client)
    assert str(dask_engine.value) == str(pandas_engine.value)
    assert str(dask_engine.value).startswith("latin1.csv: cannot read: not valid UTF-8 text at byte offset 32 (line 3)")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out", "ref.csv"))]  # nothing written


@pytest.fixture(scope="module")
def one_big_file(kb, tmp_path_factory):
    """One CSV to split: CRLF endings, quoted commas and newlines, no newline at the end, two malformed
    records at a chunk boundary that is a block boundary, ids repeated across blocks."""
    folder = tmp_path_factory.mktemp("dask-split")
    frame = _text_cases(kb, 6000, 21, ids="s")
    frame["note"] = np.where(np.arange(6000) % 7 == 0, "left knee, then\nright", "")  # quoted by to_csv
    frame.loc[4500, ID_COLUMN] = "s-10"  # repeats an id of the first block
    frame.loc[5200, [ID_COLUMN, "age"]] = ["s-11", "abc"]  # rejected for its age; its id still counts
    frame.loc[5600, ID_COLUMN] = "s-4500"  # the first s-4500 became s-10: unique
    frame.loc[5900, ID_COLUMN] = "s-5901"  # a repeat within the last block
    head, tail = frame.iloc[:2999], frame.iloc[2999:]
    text = (head.to_csv(index=False, lineterminator="\r\n") + "bad,record\r\n" + "1,2,3," * 20 + "4\r\n"
            + tail.to_csv(index=False, header=False, lineterminator="\r\n"))
    path = folder / "big.csv"
    path.write_bytes(text.encode().removesuffix(b"\r\n"))
    return path


SPLIT = {"block_bytes": 150_000, "chunk_rows": CHUNK}  # blocks of about 1000 rows


def test_one_file_split_into_blocks_matches_the_pandas_engine(client, trained, one_big_file, tmp_path):
    from pipeline.core.blocks import plan_blocks

    models, _ = trained
    blocks = list(plan_blocks(one_big_file, chunk_rows=CHUNK, block_bytes=SPLIT["block_bytes"]))
    assert len(blocks) >= 4 and 3000 in [b.first_row for b in blocks]  # the malformed records straddle a split
    out = tmp_path / "ref.parquet"
    ref_summary = score_files([str(one_big_file)], out, get_model(models), chunk_rows=CHUNK)
    reference = (ref_summary, pd.read_parquet(out), Path(f"{out}.rejects.csv").read_bytes())
    summary = score_files_dask(one_big_file, tmp_path / "out", models, client=client, **SPLIT)
    rows = _read_parts(tmp_path / "out")
    pd.testing.assert_frame_equal(rows.drop(columns="file"), reference[1], check_exact=True)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == reference[2]
    assert (summary.rows_scored, summary.rows_rejected) == (ref_summary.rows_scored, ref_summary.rows_rejected)
    assert summary.warnings == ref_summary.warnings
    rejects = pd.read_csv(tmp_path / "out" / "_rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["reject_row"].tolist() == ["2999", "3000", "4502", "5202", "5903"]
    assert "record 3001 of" in rejects["reject_reason"].iloc[0] and "record 3002 of" in rejects["reject_reason"].iloc[1]
    assert "duplicate case_id" in rejects["reject_reason"].iloc[2]
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*"))[:2] == ["part-00000-00000.parquet",
                                                                               "part-00000-00001.parquet"]


def test_a_block_not_holding_its_planned_rows_sends_its_file_back_whole(client, trained, one_big_file, tmp_path,
                                                                        monkeypatch):
    import pipeline.serve.dask as engine

    models, _ = trained
    planned = list(engine.plan_blocks(one_big_file, chunk_rows=CHUNK, block_bytes=SPLIT["block_bytes"]))
    wrong = [planned[0]._replace(rows=planned[0].rows + 1), *planned[1:]]  # as if the planner had miscounted
    monkeypatch.setattr(engine, "plan_blocks", lambda *args, **kwargs: iter(wrong))
    out = tmp_path / "ref.parquet"
    score_files([str(one_big_file)], out, get_model(models), chunk_rows=CHUNK)
    score_files_dask(one_big_file, tmp_path / "out", models, client=client, **SPLIT)
    pd.testing.assert_frame_equal(_read_parts(tmp_path / "out").drop(columns="file"), pd.read_parquet(out),
                                  check_exact=True)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == Path(f"{out}.rejects.csv").read_bytes()


def test_a_last_block_of_blank_lines_adds_no_part(client, trained, kb, tmp_path):
    """The planner stops where the last block starts, so that block may hold only the file's
    trailing blank lines: its worker finds no record and writes no part (an empty part would be a
    file the pandas engine's output has no counterpart of)."""
    from pipeline.core.blocks import plan_blocks

    models, _ = trained
    records = _text_cases(kb, 300, 17, ids="t").to_csv(index=False).encode()
    path = tmp_path / "blank-tail.csv"
    for blank in range(0, 2 * len(records), 50):  # trailing blank lines past which the last block starts
        path.write_bytes(records + b"\n" * blank)
        blocks = list(plan_blocks(path, chunk_rows=50, block_bytes=path.stat().st_size // 3, lead=2))
        if blocks[-1].start == len(records):
            break
    assert blocks[-1] == FileBlock(300, None, len(records)) and len(blocks) > 2
    ref = score_files([str(path)], tmp_path / "ref.parquet", get_model(models), chunk_rows=50)
    score_files_dask(path, tmp_path / "out", models, client=client, block_bytes=path.stat().st_size // 3, chunk_rows=50)
    assert [len(pd.read_parquet(p)) for p in sorted((tmp_path / "out").glob("part-*"))] == [50] * 6
    pd.testing.assert_frame_equal(_read_parts(tmp_path / "out").drop(columns="file"),
                                  pd.read_parquet(tmp_path / "ref.parquet"), check_exact=True)
    assert ref.rows_scored == 300


def test_the_first_blocks_of_a_job_are_small_until_every_worker_has_one(client, trained, kb, tmp_path, monkeypatch):
    """A block is known once the planner has read past its end: a job's first blocks are small
    (plan_blocks' lead), one per worker thread, so that no worker waits while the planner reads a
    whole block's bytes. A file planned before as one block takes one of them."""
    import pipeline.serve.dask as engine

    models, _ = trained
    small, big = tmp_path / "a.csv", tmp_path / "b.csv"
    _text_cases(kb, 200, 18, ids="a").to_csv(small, index=False)
    _text_cases(kb, 6000, 19, ids="b").to_csv(big, index=False)
    plan, leads, blocks = engine.plan_blocks, [], []

    def recorded(path, **kwargs):
        leads.append(kwargs["lead"])
        for block in plan(path, **kwargs):
            blocks.append(block)
            yield block

    monkeypatch.setattr(engine, "plan_blocks", recorded)
    block_bytes = (big.stat().st_size - csv_data_start(big)) // 4  # the big file's data in four blocks
    summary = score_files_dask([small, big], tmp_path / "out", models, client=client, block_bytes=block_bytes,
                               chunk_rows=100)
    assert sum(client.nthreads().values()) == 2 and leads == [2, 1]
    assert blocks[0] == FileBlock(start=blocks[0].start)  # the small file: one block
    assert abs(blocks[1].end - blocks[1].start - block_bytes // 16) < block_bytes // 16  # then one small block
    assert all(abs(b.end - b.start - block_bytes) < block_bytes // 8 for b in blocks[2:-1]) and len(blocks) == 6
    ref = score_files([small, big], tmp_path / "ref.parquet", get_model(models), chunk_rows=100)
    pd.testing.assert_frame_equal(_read_parts(tmp_path / "out"), pd.read_parquet(tmp_path / "ref.parquet"),
                                  check_exact=True)
    assert summary.rows_scored == ref.rows_scored == 6200


def test_a_quote_left_open_is_rejected_as_the_pandas_engine_rejects_it(client, trained, tmp_path):
    """The record that swallowed others (tests/test_score.py) in a file split into blocks: the block
    planner cannot follow the open quote, and the rows and rejects are the pandas engine's."""
    from test_score import swallowing_csv

    models, _ = trained
    src = swallowing_csv(tmp_path / "in.csv", "notes")
    ref = score_files([str(src)], tmp_path / "ref.parquet", get_model(models), chunk_rows=CHUNK)
    summary = score_files_dask(src, tmp_path / "out", models, client=client, block_bytes=20_000, chunk_rows=CHUNK)
    assert (summary.rows_scored, summary.rows_rejected) == (ref.rows_scored, ref.rows_rejected) == (2799, 1)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == (tmp_path / "ref.parquet.rejects.csv").read_bytes()
    pd.testing.assert_frame_equal(_read_parts(tmp_path / "out").drop(columns="file"),
                                  pd.read_parquet(tmp_path / "ref.parquet"), check_exact=True)


def test_parquet_split_by_row_groups_matches_the_pandas_engine(client, trained, kb, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    models, _ = trained
    frame = _text_cases(kb, 5000, 22, ids="p")
    frame.loc[3700, ID_COLUMN] = "p-1"
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=700)
    score_files([str(path)], tmp_path / "ref.parquet", get_model(models), chunk_rows=CHUNK)
    summary = score_files_dask(path, tmp_path / "out", models, client=client, chunk_rows=CHUNK,
                               block_bytes=path.stat().st_size // 4)
    assert summary.rows_rejected == 1
    rows = _read_parts(tmp_path / "out")
    pd.testing.assert_frame_equal(rows.drop(columns="file"), pd.read_parquet(tmp_path / "ref.parquet"),
                                  check_exact=True)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == Path(f"{tmp_path / 'ref.parquet'}.rejects.csv").read_bytes()


def test_partitioned_generation_is_reproducible(client, kb, tmp_path):
    first = generate_dask(kb, 10_001, seed=7, partitions=3, out_dir=tmp_path / "a", client=client)
    second = generate_dask(kb, 10_001, seed=7, partitions=3, out_dir=tmp_path / "b", client=client)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first == second and [f["n"] for f in first["files"]] == [3334, 3334, 3333]
    parts = [pd.read_parquet(tmp_path / "a" / f["file"]) for f in first["files"]]
    assert parts[1][ID_COLUMN].iloc[0] == "p00001-0000000"
    seeds = np.random.SeedSequence(7).spawn(3)
    for part, seed, entry in zip(parts, seeds, first["files"]):  # each partition is an independent draw
        pd.testing.assert_frame_equal(part.drop(columns=ID_COLUMN), generate_cases(kb, entry["n"], seed=seed))
    features = [p.drop(columns=ID_COLUMN).head(3333).reset_index(drop=True) for p in parts]
    assert not features[0].equals(features[1]) and not features[1].equals(features[2])
    assert (features[0]["age"] != features[1]["age"]).mean() > 0.5
    other = generate_dask(kb, 10_001, seed=7, partitions=2, out_dir=tmp_path / "c", client=client)
    assert other["files"][0]["sha256"] != first["files"][0]["sha256"]
    with pytest.raises(FileExistsError):
        generate_dask(kb, 10, seed=7, partitions=1, out_dir=tmp_path / "a", client=client)


def test_generation_into_a_relative_folder_runs_on_workers_started_in_another_folder(client, kb, tmp_path, monkeypatch):
    """A scheduler's workers run in their own folders: the temporary folder they write to is given
    as an absolute path (a relative --out failed with "Cannot save file into a non-existent
    directory", naming the hidden temporary folder)."""
    monkeypatch.chdir(tmp_path)  # the module's workers were started in the folder the tests run from
    manifest = generate_dask(kb, 100, seed=1, partitions=2, out_dir="generated", client=client)
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == ["manifest.json", "part-00000.parquet",
                                                                          "part-00001.parquet"]
    assert [f["n"] for f in manifest["files"]] == [50, 50]


def test_train_with_the_dask_backend_matches_local(client, small_data, small_config_path):
    from pipeline.core.config import TrainConfig, load_config
    from pipeline.data.datasets import read_split
    from pipeline.model.train import train_model

    config = load_config(TrainConfig, small_config_path)
    config = config.model_copy(update={"cv": config.cv.model_copy(update={"n_jobs": 2})})  # really parallel
    train, valid = read_split("train", small_data), read_split("valid", small_data)
    local = train_model(config, train, valid, log=lambda *_: None)
    with client.as_current(), get_task_stream(client) as stream:
        remote = train_model(config, train, valid, backend="dask", log=lambda *_: None)
    assert len(stream.data) > 0  # the folds really ran on the cluster
    assert {c.name: c.cv_log_loss for c in remote.candidates} == {c.name: c.cv_log_loss for c in local.candidates}
    assert {c.name: c.cv_accuracy for c in remote.candidates} == {c.name: c.cv_accuracy for c in local.candidates}


@contextlib.contextmanager
def _every_warning():
    """Every warning recorded, even one Python already showed from the same line."""
    warnings.simplefilter("always")
    yield


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _profiling(dask_worker) -> bool:
    return any(name.startswith("profile") for name in dask_worker.periodic_callbacks)


def _sigint_ignored() -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_dask_client_joins_a_scheduler_or_starts_a_local_cluster(client, monkeypatch):
    import dask

    with dask_client(client.scheduler.address) as joined:
        assert joined.submit(sum, [1, 2]).result() == 3
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with warnings.catch_warnings(record=True) as caught, _every_warning(), dask_client(n_workers=1) as local:
        info = local.scheduler_info()
        assert len(info["workers"]) == 1
        assert all(w["nthreads"] == 1 for w in info["workers"].values())
        # glibc's adaptive mmap threshold stays on in the workers (Dask's trim threshold turns it
        # off, and a scoring worker then spends a third of its time page-faulting)
        assert list(local.run(_trim_threshold).values()) == [None]
        # nor does Dask's profiler sample the task thread's stack every 10 ms, holding the GIL
        # (its only reader is the dashboard, which is not started)
        assert list(local.run(_profiling).values()) == [False]
        # a terminal's Ctrl-C, which reaches the workers too, is left to the job: no worker
        # prints a KeyboardInterrupt traceback around the job's one-line stop
        assert list(local.run(_sigint_ignored).values()) == [True]
    # beside another cluster (this module's, on 8787), no four-line "Port 8787 is already in use"
    assert not [w for w in caught if "already in use" in str(w.message)], [str(w.message) for w in caught]
    assert _trim_threshold() is None  # nor is it left in this process for later workers to inherit
    with pytest.raises(ValueError, match="n_workers"):
        with dask_client(client.scheduler.address, n_workers=2):
            pass
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(DaskJobError, match="cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
            with dask_client("tcp://127.0.0.1:9"):
                pass
    # each half-made Client is collected here: distributed deadlocks when the garbage collector
    # closes one while another Client is starting (Client.__del__ inside LoopRunner.start)
    gc.collect()
    for address in ("nowhere", "http://127.0.0.1:8786"):  # not an address: the same one line, not a traceback
        with pytest.raises(DaskJobError, match="cannot connect to the Dask scheduler"):
            with dask_client(address):
                pass
        gc.collect()


def test_an_address_where_no_dask_scheduler_answers_is_refused_in_one_line_and_soon():
    """The dashboard's port, an HTTP server or a closed port given as --scheduler: Dask's client
    waited minutes on the dashboard (until it closed the connection) and read an HTTP reply as a
    message of 3 EiB (MemoryError); each is now one line, within the probe's timeout."""
    import socket
    import threading

    from pipeline.core.cluster import probe_scheduler

    servers, held = [], []

    def serve(reply: bytes | None) -> str:
        sock = socket.create_server(("127.0.0.1", 0))
        servers.append(sock)

        def accept() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:  # closed below
                    return
                held.append(conn)
                if reply is not None:
                    conn.sendall(reply)

        threading.Thread(target=accept, daemon=True).start()
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"

    try:
        dashboard = serve(None)  # an HTTP server waits for a request, as the dashboard does
        with pytest.raises(DaskJobError, match=rf"^cannot connect to the Dask scheduler at '{dashboard}': what listens "
                                               r"there sent nothing within 0\.5 s, .*the dashboard's port\?"):
            probe_scheduler(dashboard, timeout=0.5)
        replying = serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        with pytest.raises(DaskJobError, match="an HTTP server answers there, not a Dask scheduler"):
            probe_scheduler(replying, timeout=5)
    finally:
        for conn in held:
            conn.close()
        for sock in servers:
            sock.close()
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(DaskJobError, match="Connection refused"):
        probe_scheduler(closed, timeout=5)
    probe_scheduler("tls://127.0.0.1:1")  # another scheme: left to Dask


def test_a_job_whose_scheduler_is_lost_stops_in_one_line(client, monkeypatch):
    """A scheduler killed mid-job cancels every task: distributed's error listed each task's key
    over many lines ("unexpected FuturesCancelledError"); the job says why in one."""
    import distributed
    from distributed.client import CancelledFuturesGroup, FutureCancelledError, FuturesCancelledError

    from pipeline.core.cluster import gather

    futures = {client.submit(time.sleep, 30, pure=False): f"part {i}" for i in range(2)}

    def lost(pending, **kwargs):
        errors = [FutureCancelledError(f.key, "scheduler-connection-lost", "the connection was lost") for f in pending]
        raise FuturesCancelledError([CancelledFuturesGroup(errors, "scheduler-connection-lost")])

    monkeypatch.setattr(distributed, "wait", lost)
    with pytest.raises(DaskJobError) as err:
        gather(client, futures)
    assert str(err.value) == ("the Dask cluster cancelled the job's tasks (scheduler-connection-lost: the connection "
                              "to the scheduler was lost, or the scheduler stopped); no output was written.")
    assert all(f.cancelled() for f in futures)  # and nothing goes on running for the job


def test_a_ctrl_c_while_distributed_waits_leaves_no_traceback_of_its_own(monkeypatch, caplog):
    """distributed's ``sync()`` (every blocking Client call) interrupted before its coroutine has
    started makes its cancel callback read a variable not yet assigned: the event loop logged a
    NameError traceback after the job's one-line stop. A job's client drops that record, and
    only that one."""
    import threading

    import distributed.utils
    from distributed.utils import LoopRunner, sync

    from pipeline.core.cluster import _without_sync_cancel_noise

    async def nothing():
        return None

    class Interrupted(threading.Event):
        def wait(self, timeout=None):
            raise KeyboardInterrupt

    def broken():
        raise NameError("a callback's own error")

    runner = LoopRunner(asynchronous=False)
    runner.start()
    try:
        caplog.clear()
        with _without_sync_cancel_noise():
            held = threading.Event()
            runner.loop.add_callback(held.wait)  # the loop is busy: sync's coroutine has not started
            with monkeypatch.context() as m:
                m.setattr(distributed.utils.threading, "Event", Interrupted)
                with pytest.raises(KeyboardInterrupt):
                    sync(runner.loop, nothing)
            runner.loop.add_callback(broken)
            held.set()
            sync(runner.loop, nothing)  # every callback before it has run
        errors = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
        assert errors == ["a callback's own error"], errors
    finally:
        runner.stop()


def test_a_stopped_jobs_forgotten_results_leave_no_scheduler_error(caplog):
    """A Ctrl-C that releases a job's tasks while a gather is on its way made the local scheduler
    log "Couldn't gather keys: {...: 'forgotten'}" after the job's one-line stop. A job's client
    drops that record, and only that one: a key in another state is logged as before."""
    import logging

    from pipeline.core.cluster import _without_sync_cancel_noise

    scheduler = logging.getLogger("distributed.scheduler")
    caplog.set_level(logging.ERROR, logger="distributed.scheduler")
    with _without_sync_cancel_noise():
        scheduler.error("Couldn't gather keys: %s", {"kneepain-score-pass1-00000-0": "forgotten"})
        scheduler.error("Couldn't gather keys: %s", {"kneepain-score-pass1-00001-0": "memory"})
    scheduler.error("Couldn't gather keys: %s", {"kneepain-score-pass1-00002-0": "forgotten"})  # outside a job
    assert [r.getMessage() for r in caplog.records] == [
        "Couldn't gather keys: {'kneepain-score-pass1-00001-0': 'memory'}",
        "Couldn't gather keys: {'kneepain-score-pass1-00002-0': 'forgotten'}"]


def test_a_cluster_without_workers_stops_the_job_instead_of_waiting_for_ever(monkeypatch):
    from distributed import Client, LocalCluster

    import pipeline.core.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "NO_WORKERS_SECONDS", 1.0)
    with LocalCluster(n_workers=0, processes=True, **LOCAL_CLUSTER_ADDRESSES) as empty, \
            Client(empty) as idle:
        future = idle.submit(sum, [1, 2])
        with pytest.raises(DaskJobError, match="no worker for 1 s"):
            cluster_module.gather(idle, {future: "cases.csv"})


def _wait_for(path: str) -> str:
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


def test_each_result_is_let_go_as_soon_as_it_is_taken(client, tmp_path):
    """The scheduler reruns a finished task whose result a lost worker held while a client still
    holds its future: a first-pass scoring task could then write its parts again over the second
    pass's. gather lets each future go as it takes its result, while the others still run."""
    import threading
    import time

    from distributed import wait

    import pipeline.core.cluster as cluster_module

    def held(key: str) -> bool:
        return client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks)

    go = tmp_path / "go"
    # the slow one first: the scheduler has it by the time the fast one has finished
    slow = client.submit(_wait_for, str(go), key="kneepain-test-slow")
    fast = client.submit(sum, [1, 2], key="kneepain-test-fast")
    out: list = []
    runner = None
    try:
        wait([fast], timeout=60)
        assert held("kneepain-test-fast") and held("kneepain-test-slow")
        runner = threading.Thread(target=lambda: out.append(cluster_module.gather(client, {fast: "a", slow: "b"})))
        runner.start()
        deadline = time.monotonic() + 20
        while held("kneepain-test-fast"):
            assert time.monotonic() < deadline, "the finished task is still held while the other one runs"
            time.sleep(0.05)
        assert runner.is_alive() and held("kneepain-test-slow") and not out
    finally:
        go.touch()
        if runner is not None:
            runner.join(60)
    assert sorted(out[0], key=str) == [3, "done"]
    deadline = time.monotonic() + 20  # the last one let go too (the scheduler hears of it a moment later)
    while held("kneepain-test-slow"):
        assert time.monotonic() < deadline, "the last task is still held after gather returned"
        time.sleep(0.05)


def test_names_that_look_like_globs_or_break_lines_are_read_as_they_are(client, trained, kb, tmp_path):
    """A file named cases[2024].csv is that file (not a pattern matching cases2.csv); a column
    name with a line break does not split the merged rejects."""
    models, _ = trained
    frame = _text_cases(kb, 300, 5)
    frame.loc[[7, 150, 290], "sex"] = "robot"
    frame["doctor\nnote"] = "x"
    literal = tmp_path / "cases[2024].csv"
    frame.to_csv(literal, index=False)
    frame.head(5).to_csv(tmp_path / "cases2.csv", index=False)
    summary = score_files_dask([str(literal)], tmp_path / "out", models, client=client, chunk_rows=50,
                               block_bytes=4096)
    assert summary.rows_scored == 297 and summary.rows_rejected == 3
    rejects = pd.read_csv(tmp_path / "out" / "_rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["reject_row"].tolist() == ["7", "150", "290"]
    assert set(rejects["reject_file"]) == {str(literal)}
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BatchInputError, match="already exists"):
        score_files_dask([str(literal)], tmp_path / "dangling", models, client=client)
    # names that are not UTF-8 (Arrow took a name only as UTF-8 text): read, written and named as \xNN
    latin = [tmp_path / os.fsdecode(b"caf\xe9.csv"), tmp_path / os.fsdecode(b"caf\xe9.parquet")]
    literal.rename(latin[0])
    frame.to_parquet(tmp_path / "plain.parquet", index=False)
    (tmp_path / "plain.parquet").rename(latin[1])
    out = tmp_path / os.fsdecode(b"scor\xe9")
    summary = score_files_dask([str(p) for p in latin], out, models, client=client, chunk_rows=50, block_bytes=4096)
    assert summary.rows_scored == 2 * 297 and summary.rows_rejected == 6
    rejects = pd.read_csv(out / "_rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["reject_file"].tolist() == [f"{tmp_path}/caf\\xe9.{kind}" for kind in ("csv", "parquet") for _ in range(3)]
    parts = sorted(out.glob("part-*.parquet"))  # (Arrow's datasets take no such folder name)
    assert sum(pq.read_metadata(arrow_file(p)).num_rows for p in parts) == 2 * 297


class KillSwitch(WorkerPlugin):
    """Makes ``pipeline.serve.batch.score_chunk`` SIGKILL its own worker, or raise, at a file's second chunk.

    ``once``: the first worker to create ``marker`` dies (restarted workers are patched too, but
    the marker then exists). ``always``: every worker dies while ``marker`` exists.
    ``oserror-once``: the first call to create ``marker`` raises an ``OSError``.
    ``valueerror``: every call appends a line to ``marker`` and raises a ``ValueError``.
    """

    name = "kneepain-kill-switch"

    def __init__(self, marker: str, mode: str):
        self.marker, self.mode = marker, mode

    def setup(self, worker):
        import pipeline.serve.batch as batch

        original = getattr(batch.score_chunk, "__wrapped__", batch.score_chunk)
        marker, mode = self.marker, self.mode

        def score_chunk(*args, **kwargs):
            if kwargs.get("row_offset", 0) > 0:
                if mode == "always" and os.path.exists(marker):
                    os.kill(os.getpid(), signal.SIGKILL)
                if mode == "valueerror":
                    with open(marker, "a") as calls:
                        calls.write("called\n")
                    raise ValueError("a deterministic fault")
                if mode in ("once", "oserror-once"):
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        pass
                    else:
                        if mode == "oserror-once":
                            raise OSError("a file system failing for a moment")
                        os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        score_chunk.__wrapped__ = original
        batch.score_chunk = score_chunk

    def teardown(self, worker):
        import pipeline.serve.batch as batch

        batch.score_chunk = getattr(batch.score_chunk, "__wrapped__", batch.score_chunk)


@pytest.fixture
def kill_switch(client, tmp_path):
    def install(mode: str) -> Path:
        marker = tmp_path / f"kill-{mode}"
        if mode == "always":
            marker.touch()
        client.register_plugin(KillSwitch(str(marker), mode))
        return marker

    yield install
    for marker in tmp_path.glob("kill-*"):
        marker.unlink()
    client.unregister_worker_plugin(KillSwitch.name)
    client.wait_for_workers(2, timeout=60)


def test_a_worker_killed_once_is_survived(client, trained, inputs, reference, kill_switch, tmp_path):
    models, _ = trained
    marker = kill_switch("once")
    summary = score_files_dask(inputs, tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert marker.exists()  # a worker really died mid-job, after writing some parts
    _assert_same_as_reference(tmp_path / "out", reference, summary)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert not [n for n in names if n.startswith(".") or n.startswith("rejects-")]  # leftovers removed


def _block_attempts(models, frame, tmp_path, id_column):
    """``frame`` as a CSV scored in one block, its job folder, its rejects' schema, and a call of
    one scoring attempt of that block in this process (keywords of ``_score_block`` override)."""
    from pipeline.serve import dask as engine
    from pipeline.serve.writing import reject_schema

    src = tmp_path / "cases.csv"
    frame.to_csv(src, index=False)
    tmp, rschema = tmp_path / ".job", reject_schema([list(frame.columns)])
    tmp.mkdir()

    def attempt(**given):
        kwargs = dict(fmt="parquet", chunk_rows=100, id_column=id_column, earlier=np.empty(0, dtype=np.uint64),
                      rschema=rschema) | given
        return engine._score_block(0, "cases.csv", str(src), FileBlock(), str(models), str(tmp), **kwargs)

    return tmp, rschema, attempt


def test_an_attempt_given_up_on_writes_nothing_the_output_takes(trained, kb, tmp_path):
    """A worker the scheduler dropped (frozen, cut off) may still finish its attempt after another
    attempt of the same block was taken: its parts, written later under the same names, replaced
    the taken ones, and the output held rows its rejects file also listed. Each attempt now writes
    in its own folder, and only the files the taken results report make the output."""
    from pipeline.serve import dask as engine
    from pipeline.serve.chunks import SeenIds

    models, _ = trained
    frame = _text_cases(kb, 300, 5, ids="z")
    tmp, rschema, attempt = _block_attempts(models, frame, tmp_path, ID_COLUMN)
    told = SeenIds()
    told.check_and_add(pd.Series(["z-1", "z-150"]))
    taken = attempt()  # the taken attempt: no id repeats an earlier one
    late = attempt(earlier=told.runs[0])  # the late one, told two ids came earlier: other parts
    assert late.rows_rejected == 2 and taken.rows_rejected == 0 and taken.error is None
    engine._publish(tmp, [taken], tmp_path / "out", rschema)
    got = _read_parts(tmp_path / "out")
    assert len(got) == 300 and got[ID_COLUMN].tolist() == frame[ID_COLUMN].tolist()
    assert len(pd.read_csv(tmp_path / "out" / "_rejects.csv")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_rejects.csv", "part-00000-00000.parquet", "part-00000-00001.parquet", "part-00000-00002.parquet"]
    # an attempt that fails keeps no folder (a retry writes a new one): no disk held until the job ends
    left = set(tmp.iterdir())
    failed = attempt(digest="another model")
    assert failed.error is not None and not failed.parts and set(tmp.iterdir()) == left


def test_part_names_sort_in_input_order_past_99999_chunks(trained, kb, tmp_path):
    """Parts were numbered in five digits: from chunk 100,000 of a file (``--chunk-rows 1000`` on
    100M rows) ``part-00000-100000`` sorted before ``part-00000-10001``, and ``pd.read_parquet`` of
    the folder gave the rows out of order. The numbers now take as many digits as the file's
    highest possible chunk number (from its size; a Parquet file's row count), five at least."""
    from pipeline.serve import dask as engine

    models, _ = trained
    frame = _text_cases(kb, 300, 5)
    tmp, _, attempt = _block_attempts(models, frame, tmp_path, ID_COLUMN)
    src = tmp_path / "cases.csv"
    assert engine._last_chunk(src, 1) == src.stat().st_size - 1 >= 299  # a record takes a byte at least
    assert engine._last_chunk(src, 100) >= 2
    frame.to_parquet(tmp_path / "cases.parquet")
    assert engine._last_chunk(tmp_path / "cases.parquet", 100) == 2
    assert engine._last_chunk(tmp_path / "cases.parquet", 1) == 299
    wide = attempt(last=(0, 100_000))
    names = [p.name for p in sorted((tmp / wide.attempt).glob("part-*"))]
    assert names == ["part-00000-000000.parquet", "part-00000-000001.parquet", "part-00000-000002.parquet"]
    assert sorted(f"part-{engine.numbered(i, 100_001)}" for i in range(99_998, 100_002)) == [
        f"part-{i:06d}" for i in range(99_998, 100_002)]


def test_a_worker_running_other_code_scores_nothing(client, trained, kb, tmp_path):
    """A long-lived worker keeps the modules it started with: after an upgrade its rejects (and
    maybe scores) would differ from the driver's. A task whose worker's code is not the job's
    writes nothing and fails the job; the same code scores as ever."""
    from pipeline.core.cluster import code_digest

    models, _ = trained
    tmp, _, attempt = _block_attempts(models, _text_cases(kb, 50, 6), tmp_path, "row")
    other = attempt(code="0" * 64)
    assert isinstance(other.error, DaskJobError) and not other.parts and not list(tmp.iterdir())
    assert "cases.csv: a Dask worker and this job run different kneepain code" in str(other.error)
    assert client.submit(code_digest, pure=False).result() == code_digest()  # the test cluster's workers: this code
    same = attempt(code=code_digest())
    assert same.error is None and same.rows_scored == 50


def test_a_worker_killed_once_in_a_split_file_is_survived(client, trained, one_big_file, kill_switch, tmp_path):
    models, _ = trained
    out = tmp_path / "ref.parquet"
    score_files([str(one_big_file)], out, get_model(models), chunk_rows=CHUNK)
    marker = kill_switch("once")
    score_files_dask(one_big_file, tmp_path / "out", models, client=client, **SPLIT)
    assert marker.exists()
    pd.testing.assert_frame_equal(_read_parts(tmp_path / "out").drop(columns="file"), pd.read_parquet(out),
                                  check_exact=True)
    assert (tmp_path / "out" / "_rejects.csv").read_bytes() == Path(f"{out}.rejects.csv").read_bytes()


def test_a_worker_killed_every_time_fails_cleanly(client, trained, inputs, kill_switch, tmp_path):
    models, _ = trained
    kill_switch("always")
    with pytest.raises(DaskJobError, match=re.escape(f"{inputs[0]}: the Dask task failed (KilledWorker")):
        score_files_dask([inputs[0]], tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert not [p for p in tmp_path.iterdir() if p.name == "out" or p.name.startswith(".out")]


def test_a_transient_error_is_retried_and_the_job_completes(client, trained, inputs, reference, kill_switch, tmp_path):
    models, _ = trained
    marker = kill_switch("oserror-once")
    summary = score_files_dask(inputs, tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert marker.exists()  # one task really raised
    _assert_same_as_reference(tmp_path / "out", reference, summary)


def test_a_deterministic_error_ends_the_job_at_once_without_retries(client, trained, inputs, kill_switch, tmp_path):
    models, _ = trained
    calls = kill_switch("valueerror")
    with pytest.raises(DaskJobError, match=re.escape(f"{inputs[0]}: the Dask task failed (ValueError: a deterministic "
                                                     "fault); no output was written.")) as failed:
        score_files_dask([inputs[0]], tmp_path / "out", models, client=client, chunk_rows=CHUNK)
    assert calls.read_text().count("called") == 1  # not retried: a retry would fail the same way
    # where on the worker it came from, as --debug shows the cause
    assert "in _score_block" in str(failed.value.__cause__) and "ValueError: a deterministic fault" in str(
        failed.value.__cause__)
    assert not [p for p in tmp_path.iterdir() if p.name == "out" or p.name.startswith(".out")]


def test_command_line_dask_engines_against_a_scheduler(client, trained, tmp_path):
    from pipeline.cli import main

    models, _ = trained
    address = client.scheduler.address
    args = ["generate", "--engine", "dask", "--n", "3000", "--partitions", "2", "--seed", "5",
            "--scheduler", address]
    assert main([*args, "--out", str(tmp_path / "gen")]) == 0
    parts = sorted((tmp_path / "gen").glob("part-*.parquet"))
    assert len(parts) == 2 and sum(len(pd.read_parquet(p)) for p in parts) == 3000
    assert main(["score", "--engine", "dask", "--scheduler", address, str(tmp_path / "gen" / "part-*.parquet"),
                 "-o", str(tmp_path / "scored"), "--model", str(models), "--quiet"]) == 0
    assert len(_read_parts(tmp_path / "scored")) == 3000
    assert main(["score", "--engine", "dask", "--scheduler", address, str(parts[0]), "-o", str(tmp_path / "split"),
                 "--model", str(models), "--chunk-rows", "300", "--block-mb", "0.02", "--quiet"]) == 0
    assert len(list((tmp_path / "split").glob("part-*"))) == 5 and len(_read_parts(tmp_path / "split")) == 1500
    assert main(["score", str(parts[0]), "-o", str(tmp_path / "x.csv"), "--block-mb", "1"]) == 2  # pandas: no blocks
    assert main([*args, "--out", str(tmp_path / "gen")]) == 2  # the output folder exists: nothing overwritten


def test_a_task_that_cannot_write_names_the_output_in_one_line(trained, kb, tmp_path):
    """A part that could not be written (here a file-size limit; a full disk alike) failed the job
    naming the input the task read, after each of its three tries had printed the worker's
    traceback, also with --quiet. Now one line names the output and the file system's reason."""
    from processes import limit_file_size

    models, _ = trained
    _text_cases(kb, 300, 11).to_csv(tmp_path / "in.csv", index=False)
    job = subprocess.run([str(Path(sys.executable).with_name("kneepain")), "score", "--engine", "dask", "in.csv",
                          "-o", "scored", "--model", str(models), "--quiet"], capture_output=True, text=True,
                         cwd=tmp_path, preexec_fn=limit_file_size, timeout=300)
    assert job.returncode == 2, job.stderr
    assert re.fullmatch(r"kneepain score: error: scored: cannot write the output \(part-00000-00000\.parquet: File "
                        r"too large\); no output was written\.\n", job.stderr), job.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no hidden folder


def test_the_dask_engine_names_a_missing_default_model_before_any_cluster_starts(kb, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main
    from pipeline.core.paths import ENV_HOME

    monkeypatch.setenv(ENV_HOME, str(tmp_path))  # a project folder without models/
    _text_cases(kb, 20, 3).to_csv(tmp_path / "in.csv", index=False)
    assert main(["score", "--engine", "dask", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out")]) == 2
    assert "run `make run`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_stop_while_the_local_cluster_starts_acts_once_it_has_started_and_closes_it(monkeypatch):
    """A SIGTERM as the local cluster finished starting was raised within its construction, before
    the job held it: nothing closed it, and distributed's own exit printed an ``AssertionError``
    traceback under the job's one line. Held off while it starts (``while_starting``, as
    `kneepain score --engine dask` does), the stop acts once it has started, and the job closes it."""
    import distributed
    from distributed.core import Status

    from pipeline.serve.guard import Interrupted, signals_deferred, stop_at_once_on_signals

    made = []

    class StoppedAsItStarts(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(distributed, "LocalCluster", StoppedAsItStarts)
    try:
        with stop_at_once_on_signals(), pytest.raises(Interrupted):
            with dask_client(n_workers=1, while_starting=signals_deferred):
                pytest.fail("the job went on after the stop")
        assert len(made) == 1 and made[0].status == Status.closed
    finally:
        for cluster in made:
            cluster.close()
