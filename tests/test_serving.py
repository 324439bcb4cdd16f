"""`kneepain serve` of the registered champion answers like predict(), says what is wrong with an
invalid case, shows no stack trace or path, and refuses requests over its size limit."""

import json

import numpy as np
import pandas as pd
import pytest
import requests
from servers import BIN, free_port, running

from pipeline import predict
from pipeline.core.schema import CONDITIONS

P_COLS = [f"p_{c}" for c in CONDITIONS]


@pytest.fixture
def served(trained, tmp_path):
    _, uri = trained
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the README's command as written, from a shell whose PATH lacks the virtual environment
    cmd = [str(BIN / "kneepain"), "serve", "-m", "models:/kneepain-classifier@champion", "--port", str(port),
           "--max-request-mb", "1"]
    env = {"MLFLOW_TRACKING_URI": uri, "PATH": "/usr/bin:/bin"}
    with running(cmd, f"{url}/ping", tmp_path / "serve.log", env=env, add_bin_to_path=False):
        yield url


@pytest.mark.slow
def test_served_model_answers_like_predict(served, trained, small_data):
    models, _ = trained
    cases = pd.read_parquet(small_data / "test.parquet").head(50).drop(columns=["condition", "severity"])
    records = json.loads(cases.astype(object).where(cases.notna(), None).to_json(orient="records"))
    response = requests.post(f"{served}/invocations", json={"dataframe_records": records}, timeout=60)
    assert response.status_code == 200, response.text
    got = pd.DataFrame(response.json()["predictions"])
    expected = predict(cases, model=models)
    assert got["case_id"].tolist() == expected["case_id"].tolist()
    # JSON carries floats as their shortest round-trip text: the served numbers are predict()'s bits
    np.testing.assert_array_equal(got[P_COLS].to_numpy(float), expected[P_COLS].to_numpy(float))
    assert got["top3"].tolist() == expected["top3"].tolist()

    split = json.loads(cases.head(3).to_json(orient="split", index=False))
    by_split = requests.post(f"{served}/invocations", json={"dataframe_split": split}, timeout=60)
    assert by_split.status_code == 200, by_split.text
    np.testing.assert_array_equal(pd.DataFrame(by_split.json()["predictions"])[P_COLS].to_numpy(float),
                                  expected[P_COLS].head(3).to_numpy(float))

    bad = [{"age": 30, "sex": "male"}, {"age": 30, "sex": "femal", "locking": "often"}]
    response = requests.post(f"{served}/invocations", json={"dataframe_records": bad}, timeout=60)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and set(answer) == {"error_code", "message"}
    assert "row 1, column 'sex', value 'femal'" in answer["message"] and "'often'" in answer["message"]


@pytest.mark.slow
def test_no_answer_shows_a_stack_trace_or_a_path_and_large_requests_are_refused(served):
    answers = [
        requests.post(f"{served}/invocations", json={"dataframe_records": [{"age": "x" * 500_000, "sex": "male"}]},
                      timeout=60),
        requests.post(f"{served}/invocations", data=b"{not json", headers={"Content-Type": "application/json"},
                      timeout=60),
        requests.post(f"{served}/invocations", json={"rows": []}, timeout=60),
        requests.post(f"{served}/invocations", data=b"age,sex\n30,male\n", headers={"Content-Type": "text/csv"},
                      timeout=60),
        requests.post(f"{served}/invocations", json={"dataframe_records": [{"case_id": "x" * 2_000_000,
                                                                            "age": 30, "sex": "male"}]}, timeout=60),
        requests.get(f"{served}/nowhere", timeout=60),
    ]
    assert [a.status_code for a in answers] == [400, 400, 400, 415, 413, 404]
    for a in answers:
        assert "Traceback" not in a.text and "stack_trace" not in a.text and ".py" not in a.text
        assert "/tmp" not in a.text and "/work" not in a.text and "/home" not in a.text
    assert "x" * 1000 not in answers[0].text  # a long value is shortened, not echoed
    assert "larger than 1,048,576 bytes" in answers[4].json()["message"]
