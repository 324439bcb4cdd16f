"""The benchmarks' own checks: a run's output is counted before its time is reported."""

import json

import pytest

from benchmarks.bench_score import _check_rows, _json_predictions
from benchmarks.harness import BenchmarkError


@pytest.mark.parametrize("block_bytes", [1, 5, 13, 14, 64, 1 << 24])
def test_mlflow_predictions_are_counted_whatever_the_blocks(tmp_path, block_bytes):
    """A key cut by a block's end is counted once, in the next block."""
    rows = [{"case_id": f"c{i}", "prediction": "dvt", "p_dvt": 0.5, "top3": "dvt|bakers_cyst"} for i in range(7)]
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"predictions": rows}))
    assert _json_predictions(path, block_bytes) == 7


def test_a_run_that_wrote_fewer_rows_stops_the_benchmark(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text('"case_id","prediction"\n"a","dvt"\n"b","dvt"\n')
    _check_rows(path, 2, "kneepain score")
    with pytest.raises(BenchmarkError, match="wrote 2 rows to out.csv, not 3"):
        _check_rows(path, 3, "kneepain score")
    with pytest.raises(BenchmarkError, match="wrote no missing.csv"):
        _check_rows(tmp_path / "missing.csv", 0, "kneepain score")
    path.write_text('"case_id","prediction"\n')  # a header only: no rows
    _check_rows(path, 0, "kneepain score")
