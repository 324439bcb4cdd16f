"""`kneepain serve` of the registered champion answers like predict(), says what is wrong with an
invalid case, shows no stack trace or path, and refuses requests over its size limit."""

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest
import requests
from servers import BIN, free_port, running

from pipeline import predict
from pipeline.core.errors import BatchInputError, CaseValidationError
from pipeline.core.schema import CONDITIONS
from pipeline.serve.http import _answer, parse_body
from pipeline.serve.loading import get_model

P_COLS = [f"p_{c}" for c in CONDITIONS]


@pytest.fixture
def served(trained, tmp_path):
    _, uri = trained
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the README's command as written, from a shell whose PATH lacks the virtual environment
    cmd = [str(BIN / "kneepain"), "serve", "-m", "models:/kneepain-classifier@champion", "--port", str(port),
           "--max-request-mb", "1", "--max-request-cases", "100"]
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
        requests.post(f"{served}/invocations", data=gzip.compress(b'{"dataframe_records": [{"age": 30, "sex": "male"}]}'),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=60),
        requests.post(f"{served}/invocations", json={"dataframe_records": [{"age": 30, "sex": "male"}] * 101},
                      timeout=60),
        requests.post(f"{served}/invocations", data='{"dataframe_records": [{"age": 30, "sex": "m\xe4le"}]}'.encode("latin-1"),
                      headers={"Content-Type": "application/json; charset=latin-1"}, timeout=60),
        requests.post(f"{served}/invocations", data=b'{"dataframe_records": [{"age": 30, "sex": "male"}]}',
                      headers={"Content-Type": "application/json; Charset=\"UTF-8\""}, timeout=60),
    ]
    assert [a.status_code for a in answers] == [400, 400, 400, 415, 413, 404, 415, 413, 415, 200]
    assert "send the body as UTF-8 (charset 'latin-1' is not supported)" in answers[8].json()["message"]
    assert "the request holds 101 cases, more than the limit of 100" in answers[7].json()["message"]
    assert "send the body uncompressed (Content-Encoding 'gzip' is not supported)" in answers[6].json()["message"]
    for a in answers:
        assert "Traceback" not in a.text and "stack_trace" not in a.text and ".py" not in a.text
        assert "/tmp" not in a.text and "/work" not in a.text and "/home" not in a.text
    assert "x" * 1000 not in answers[0].text  # a long value is shortened, not echoed
    assert "larger than 1,048,576 bytes" in answers[4].json()["message"]


@pytest.mark.slow
def test_serve_says_which_model_it_serves_and_whether_a_signature_vouched_for_it(served, tmp_path):
    """The alias as the version it names now, as the workers load it, and no signature checked
    (no trusted key is set for the server)."""
    first = (tmp_path / "serve.log").read_text().splitlines()[0]
    assert re.fullmatch(r"Serving model models:/kneepain-classifier/\d+ \(checksums checked; no signature, as "
                        r"KNEEPAIN_TRUSTED_KEY is not set\)", first), first


def test_served_answers_keep_ids_say_what_was_ignored_and_take_columns_and_top_k(served, trained, tmp_path):
    models, uri = trained

    def post(body):
        return requests.post(f"{served}/invocations", json=body, timeout=60)

    # an integer id beside a missing one stays as given (as predict() keeps it), and no bare NaN
    records = [{"case_id": 9007199254740993, "age": 30, "sex": "male"}, {"age": 31, "sex": "male"}]
    answer = post({"dataframe_records": records})
    assert answer.status_code == 200 and "NaN" not in answer.text
    assert [r["case_id"] for r in answer.json()["predictions"]] == [9007199254740993, None]
    ids = predict(records, model=models)["case_id"].tolist()
    assert ids[0] == 9007199254740993 and type(ids[0]) is int and pd.isna(ids[1])
    # a misspelt red-flag answer is unknown: the client is told, with the field it looks like
    answer = post({"dataframe_records": [{"age": 30, "sex": "male", "knee_swelling": "yes", "skin_warm": "yes",
                                          "fevers": "yes"}]})
    assert answer.json()["warnings"] == ["ignoring columns that are not case fields: fevers (did you mean fever?)"]
    assert "warnings" not in post({"dataframe_records": records}).json()
    # MLflow's columns, and params.top_k as predict() takes it
    answer = post({"inputs": {"age": [30, 40], "sex": ["male", "female"]}, "params": {"top_k": 5}})
    expected = predict([{"age": 30, "sex": "male"}, {"age": 40, "sex": "female"}], model=models, top_k=5)
    assert pd.DataFrame(answer.json()["predictions"])["top5"].tolist() == expected["top5"].tolist()
    # the server names the version it serves (the alias as it stood at start: a restarted worker loads the same)
    from mlflow import MlflowClient

    version = MlflowClient(uri).get_model_version_by_alias("kneepain-classifier", "champion").version
    assert f"serves models:/kneepain-classifier/{version} (the " in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize("body, message", [
    (b'{"dataframe_records": [{"age": 1' + b"0" * 5000 + b', "sex": "male"}]}', "a value JSON cannot be read"),
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"inputs": {"age": [30, 40], "sex": ["male"]}}', "every list must hold one value per case; got lists of 1, 2"),
    (b'{"inputs": {"age": [30], "sex": ["male"], "fever": "yes"}}', "every value must be a list, one value per case; "
                                                                      "not 'fever'"),
    (b'{"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}}', "the columns 'age' are given more than once"),
    (b'{"dataframe_split": {"columns": ["age"], "data": [[1]], "dtypes": {"age": "int"}}}',
     "dataframe_split: 'dtypes' not understood; allowed: columns, data and index"),
    (b'{"dataframe_split": {"columns": ["age"], "data": [[1], [2]], "index": [0]}}',
     "dataframe_split: index must be a list of 2 row labels, one per row of data, or left out"),
    (b'{"dataframe_split": {"columns": ["age"], "data": [[1]], "index": 0}}', "index must be a list of 1 row labels"),
    (b'{"dataframe_records": [], "params": {"top_k": 12}}', "params: top_k == 12, must be an integer in 1..9"),
    (b'{"dataframe_records": [], "params": {"k": 1}}', "params: 'k' not understood; allowed: top_k, columns"),
    (b'{"dataframe_records": [], "params": {"columns": "triage"}}',
     "params: columns == 'triage': give a list of output column names"),
    (b'{"dataframe_records": [], "params": {"columns": ["triage", 3]}}', "give a list of output column names"),
    (b'{"dataframe_records": [], "' + b"x" * 3000 + b'": 1}', "'xxxxxxxxxx"),
    (b'{"dataframe_records": [{"age": 30, "sex": "male", "age": 80}]}', "gives 'age' more than once in one object"),
    (b'{"dataframe_records": [], "params": {"top_k": 2, "top_k": 5}}', "gives 'top_k' more than once"),
])
def test_a_body_that_is_not_cases_is_named_without_echoing_it(body, message):
    with pytest.raises(BatchInputError, match=message) as err:
        parse_body(body)
    assert len(str(err.value)) < 600


def test_every_format_gives_the_same_records():
    records = [{"age": 30, "sex": "male"}, {"age": 40, "sex": "female"}]
    columns = {"age": [30, 40], "sex": ["male", "female"]}
    split = {"columns": ["age", "sex"], "data": [[30, "male"], [40, "female"]]}
    for payload in ({"dataframe_records": records}, {"instances": records}, {"inputs": columns},
                    {"instances": columns}, {"dataframe_split": split}):
        assert parse_body(json.dumps(payload).encode()) == (records, {})
    assert parse_body(b'{"inputs": {"age": 30, "sex": "male"}}') == ([records[0]], {})  # one case
    assert parse_body(b'{"dataframe_split": {"columns": ["age"], "data": []}}') == ([], {})
    with_index = {"dataframe_split": {**split, "index": [7, 8]}}  # pandas' to_json(orient="split") writes one
    assert parse_body(json.dumps(with_index).encode()) == (records, {})


def test_too_many_cases_are_counted_before_any_record_is_built():
    """Every format is counted from its shape: at the limit the cases are read, over it the
    refusal names the count and how to raise the limit; a shape that is no format's is a 400 as
    it was."""
    import pipeline.serve.http as http

    records = [{"age": 30, "sex": "male"}, {"age": 40, "sex": "female"}, {"age": 50, "sex": "male"}]
    columns = {"age": [30, 40, 50], "sex": ["male", "female", "male"]}
    split = {"columns": ["age", "sex"], "data": [[30, "male"], [40, "female"], [50, "male"]]}
    payloads = [{"dataframe_records": records}, {"instances": records}, {"inputs": records}, {"inputs": columns},
                {"instances": columns}, {"dataframe_split": split}]
    for payload in payloads:
        assert parse_body(json.dumps(payload).encode(), max_cases=3) == (records, {})
    assert parse_body(b'{"inputs": {"age": 30, "sex": "male"}}', max_cases=1)[0] == [records[0]]

    for payload in payloads:
        with pytest.raises(http.TooManyCasesError, match=r"the request holds 3 cases, more than the limit of 2 "
                                                         r"\(--max-request-cases or KNEEPAIN_MAX_REQUEST_CASES\)"):
            parse_body(json.dumps(payload).encode(), max_cases=2)
    # a shape that is none of the formats' is named as such, however many items it holds: splitting
    # it into smaller requests would not mend it
    for payload in ({"instances": [1, 2, 3, 4]}, {"dataframe_split": {"data": [[30, "male"]] * 4}},
                    {"dataframe_split": {"columns": ["age", "sex"], "data": [1, 2, 3, 4]}},
                    {"inputs": {"sex": "male", "age": [30, 40, 50, 60]}},
                    {"inputs": {"age": [30, 40, 50, 60], "sex": ["male"]}},
                    {"inputs": {"sex": ["male"], "age": [30, 40, 50, 60]}}):
        with pytest.raises(BatchInputError) as err:
            parse_body(json.dumps(payload).encode(), max_cases=2)
        assert not isinstance(err.value, http.TooManyCasesError), payload
    # each format is counted once, by its shape, before its records are built
    from pipeline.serve.requests import request_records

    for payload in payloads:
        (key, data), = payload.items()
        counted: list[int] = []
        assert request_records(key, data, count=counted.append) == records and counted == [3]


def _strict_json(text: str):
    """JSON as a strict parser reads it: a bare NaN or Infinity is an error, as in JavaScript."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_answers_are_strict_json_and_name_columns_without_echoing_them(trained):
    models, _ = trained
    model = get_model(models)
    body = {"dataframe_records": [{"age": 40, "sex": "male", "case_id": 1.5},
                                  {"age": 41, "sex": "male", "x\nCRITICAL: forged": 1, "y" * 100_000: 2}]}
    text, warned = _answer(model, json.dumps(body).encode())
    answer = _strict_json(text)
    assert [r["case_id"] for r in answer["predictions"]] == [1.5, None]
    assert answer["warnings"] == warned and len(warned) == 1 and "\n" not in warned[0] and len(warned[0]) < 300
    assert "x\\nCRITICAL: forged" in warned[0] and "(100,000 characters)" in warned[0]
    many = {"dataframe_records": [{"age": 40, "sex": "male", **{f"extra{i}": 1 for i in range(5000)}}]}
    assert _answer(model, json.dumps(many).encode())[1][0].endswith(", extra19 and 4,980 more")
    for bad, message in ((b'{"dataframe_records": [{"age": 40, "sex": "\\ud800"}]}',
                          "row 0, column 'sex', value \"'\\\\ud800'\": not valid Unicode text"),
                         (b'{"dataframe_records": [{"case_id": 1e999, "age": 40, "sex": "male"}]}',
                          "row 0, column 'case_id', value 'inf': not a case id; allowed: text or a finite number"),
                         (b'{"dataframe_records": [{"case_id": true, "age": 40, "sex": "male"}]}',
                          "row 0, column 'case_id', value 'True': not a case id; allowed: text or a finite number"),
                         (b'{"dataframe_records": [{"case_id": "a", "age": 40, "sex": "male"}, '
                          b'{"case_id": false, "age": 40, "sex": "male"}]}',
                          "row 1, column 'case_id', value 'False': not a case id")):
        with pytest.raises(CaseValidationError) as err:
            _answer(model, bad)
        assert message in str(err.value)


def test_served_answers_hold_the_columns_asked_for_computed_as_predict_computes_them(trained):
    models, _ = trained
    model = get_model(models)
    records = [{"case_id": "a", "age": 40, "sex": "male", "heard_pop": "yes"}, {"case_id": "b", "age": 71, "sex": "female"}]
    text, _ = _answer(model, json.dumps({"dataframe_records": records,
                                         "params": {"columns": ["triage", "case_id", "p_dvt"]}}).encode())
    got = pd.DataFrame(_strict_json(text)["predictions"])
    expected = predict(records, model=models, columns=["triage", "case_id", "p_dvt"])
    assert list(got.columns) == ["triage", "case_id", "p_dvt"]
    assert got[["triage", "case_id"]].equals(expected[["triage", "case_id"]])
    np.testing.assert_array_equal(got["p_dvt"].to_numpy(float), expected["p_dvt"].to_numpy(float))
    for columns, message in ((["tirage"], "params: columns: 'tirage' is not an output column; choose from case_id,"),
                             (["row"], r"'row' is not an output column \(the cases have a case_id column, which names "
                                       r"them\); choose from case_id,"), (None, "give a list of output column names")):
        with pytest.raises(BatchInputError, match=message):
            _answer(model, json.dumps({"dataframe_records": records, "params": {"columns": columns}}).encode())
    # an empty list is every column, as MLflow's server reads it (there the signature's default)
    everything, _ = _answer(model, json.dumps({"dataframe_records": records, "params": {"columns": []}}).encode())
    assert list(pd.DataFrame(_strict_json(everything)["predictions"]).columns) == list(predict(records, model=models).columns)


@pytest.mark.parametrize(("option", "message"), [
    (["--host", ""], "--host '': empty; give a value"),  # uvicorn listened on every interface
    (["--host", " "], "--host ' ': empty; give a value"),
    (["--port", "70000"], "--port == 70000, must be in 0..65535"),  # a traceback after the model had loaded
    (["--port", "-1"], "--port == -1, must be in 0..65535"),
    (["--workers", "0"], "--workers == 0, must be in 1.."),  # accepted, and served by one
    (["--workers", "1000000000000"], "--workers == 1000000000000, must be in 1.."),  # spawned until killed
])
def test_serve_refuses_an_address_port_or_worker_count_it_cannot_use(option, message, tmp_path, capsys):
    """An empty option of any command is refused the same way (``-o ''`` read as the current folder)."""
    from pipeline.cli import main

    assert main(["serve", "-m", str(tmp_path / "no-model-needed"), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kneepain serve: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["score", "in.csv", "-o", ""], ["score", "in.csv", "-o", "x.csv", "--model", ""],
                                  ["score", "", "-o", "x.csv"], ["score", "in.csv", "-o", "x.csv", "--report", " "],
                                  ["train", "--extra-data", ""], ["generate", "--out", ""], ["generate", "--out", "-"],
                                  ["evaluate", "--out", "-"], ["sensitivity", "--out", "-"]])
def test_an_option_given_as_empty_text_is_refused_by_name(argv, tmp_path, capsys, monkeypatch):
    """A shell variable left unset: ``-o ""`` was "unexpected ValueError: PosixPath('.') has an empty
    name", ``--report ""`` wrote no report and said nothing, ``--extra-data ""`` trained without it."""
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("': empty; give a value (see kneepain " in err or "--out -: kneepain " in err), err
    assert list(tmp_path.iterdir()) == []
