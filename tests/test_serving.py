"""`mlflow models serve` of the registered champion answers like predict()."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from pipeline import predict
from pipeline.schema import CONDITIONS

P_COLS = [f"p_{c}" for c in CONDITIONS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(trained, tmp_path):
    _, uri = trained
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(bindir / "mlflow"), "models", "serve", "-m", "models:/kneepain-classifier@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow models serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
    np.testing.assert_allclose(got[P_COLS].to_numpy(float), expected[P_COLS].to_numpy(float), rtol=1e-9)
    assert got["top3"].tolist() == expected["top3"].tolist()

    split = json.loads(cases.head(3).to_json(orient="split", index=False))
    by_split = requests.post(f"{served}/invocations", json={"dataframe_split": split}, timeout=60)
    assert by_split.status_code == 200, by_split.text
    np.testing.assert_allclose(pd.DataFrame(by_split.json()["predictions"])[P_COLS].to_numpy(float),
                               expected[P_COLS].head(3).to_numpy(float), rtol=1e-9)

    bad = [{"age": 30, "sex": "male"}, {"age": 30, "sex": "femal", "locking": "often"}]
    response = requests.post(f"{served}/invocations", json={"dataframe_records": bad}, timeout=60)
    assert 400 <= response.status_code < 500
    assert "row 1, column 'sex', value 'femal'" in response.text and "'often'" in response.text
