"""predict() as notebook users call it."""

import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import CaseValidationError, predict
from pipeline.core.schema import CONDITIONS, FIELDS
from pipeline.serve.predict import clear_model_cache, output_columns

P_COLS = [f"p_{c}" for c in CONDITIONS]
CASE = {"age": 24, "sex": "male", "activity": "sprint_pivot_sport", "injury_event": "twist_or_direction_change",
        "heard_pop": "yes", "knee_swelling": True, "giving_way": "Y", "locking": "no"}


def test_every_input_form_gives_the_same_answer(trained, tmp_path):
    models, _ = trained
    cases = [CASE, {"age": 70, "sex": "female", "leg_swelling": "yes", "skin_warm": "yes", "sedentary": 1},
             {"age": 45, "sex": "female"}]
    frame = pd.DataFrame(cases)
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.astype(str).replace({"None": "", "nan": ""}).to_parquet(tmp_path / "c.parquet")
    results = [predict(x, model=models) for x in (cases, frame, tmp_path / "c.csv", str(tmp_path / "c.parquet"))]
    for r in results[1:]:  # exact: the products are made without BLAS, row by row
        np.testing.assert_array_equal(r[P_COLS].to_numpy(), results[0][P_COLS].to_numpy())
    one = predict(CASE, model=models)
    np.testing.assert_array_equal(one[P_COLS].to_numpy()[0], results[0][P_COLS].to_numpy()[0])
    out = results[0]
    assert list(out.columns) == output_columns(id_column="row")
    assert out["row"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(out[P_COLS].sum(axis=1), 1.0, atol=1e-9)
    assert (out["confidence"] == out[P_COLS].max(axis=1)).all()
    assert out["top3"].str.split("|").str[0].tolist() == out["prediction"].tolist()


def test_case_ids_pass_through_in_input_order(trained):
    models, _ = trained
    frame = pd.DataFrame([{**CASE, "case_id": "z"}, {"case_id": "a", "age": 70, "sex": "female"}])
    out = predict(frame, model=models)
    assert out["case_id"].tolist() == ["z", "a"]


@pytest.mark.parametrize("dtype", ["str", "string", "string[pyarrow]", "object"])
def test_text_case_ids_come_back_as_text_whatever_their_string_type(trained, dtype):
    """Text ids in any of pandas' string types come back in its default ``str``, a missing one as NaN."""
    models, _ = trained
    frame = pd.DataFrame([{**CASE, "case_id": "z"}, {**CASE, "case_id": None}, {**CASE, "case_id": "a"}])
    frame["case_id"] = frame["case_id"].astype(dtype)
    out = predict(frame, model=models)
    assert out["case_id"].dtype == "str"
    assert out["case_id"].iloc[[0, 2]].tolist() == ["z", "a"] and out["case_id"].iloc[1] is np.nan


def test_integer_case_ids_beside_a_missing_one_stay_as_given(trained):
    """In a list of dicts a missing id would make the column floats: large ids would lose digits and
    two of them become one (refused as a duplicate)."""
    models, _ = trained
    ids = [12345678901234567, 12345678901234568]
    out = predict([{**CASE, "case_id": ids[0]}, {**CASE, "case_id": ids[1]}, CASE], model=models)
    assert out["case_id"].tolist()[:2] == ids and pd.isna(out["case_id"].iloc[2])
    assert predict([{**CASE, "case_id": 1}, CASE], model=models)["case_id"].tolist()[0] == 1


@pytest.mark.parametrize("dtype", ["Int64", "int64[pyarrow]", "UInt64"])
def test_nullable_integer_case_ids_beside_a_missing_one_keep_every_digit(trained, dtype):
    """A frame's nullable integer ids came back as floats beside a missing one: 2**53 + 1 became
    2**53, the same as the next case's id."""
    models, _ = trained
    ids = pd.array([2**53 + 1, None, 2**53], dtype=dtype)
    frame = pd.DataFrame([CASE] * 3).assign(case_id=ids)
    out = predict(frame, model=models)
    assert out["case_id"].dtype == dtype and out["case_id"].tolist()[::2] == [2**53 + 1, 2**53]
    assert pd.isna(out["case_id"].iloc[1])
    out.loc[0, "case_id"] = 7  # the result's own copy
    assert frame["case_id"].iloc[0] == 2**53 + 1


def test_a_list_or_a_mapping_is_not_a_case_id(trained):
    """JSON clients can send any value as an id: a nested one is no label to pass through."""
    models, _ = trained
    with pytest.raises(CaseValidationError) as err:
        predict([{**CASE, "case_id": [1, 2]}, {**CASE, "case_id": {"a": 1}}, {**CASE, "case_id": "x"}], model=models)
    assert err.value.errors[["row", "column", "value"]].to_dict("records") == [
        {"row": 0, "column": "case_id", "value": "[1, 2]"}, {"row": 1, "column": "case_id", "value": "{'a': 1}"}]
    assert set(err.value.errors["reason"]) == {"not a case id; allowed: text or a finite number"}


def test_a_file_without_rows_gives_no_rows(trained, tmp_path):
    """A CSV of only a header and a Parquet file without rows: an empty output with every column."""
    models, _ = trained
    (tmp_path / "h.csv").write_text("age,sex\n")
    pd.DataFrame({"age": pd.Series([], dtype="int64"), "sex": pd.Series([], dtype=str)}).to_parquet(tmp_path / "e.parquet")
    some = predict({"age": 40, "sex": "male"}, model=models)
    for path in (tmp_path / "h.csv", tmp_path / "e.parquet"):
        out = predict(path, model=models)
        assert len(out) == 0 and list(out.columns) == output_columns(id_column="row"), path.name
        assert out.dtypes.to_dict() == some.dtypes.to_dict(), path.name  # the types a non-empty output has


def test_a_frames_index_is_kept_so_results_join_back(trained):
    models, _ = trained
    frame = pd.DataFrame([CASE, {"age": 70, "sex": "female"}, {"age": 35, "sex": "male"}], index=["p7", "p2", "p7"])
    out = predict(frame, model=models)
    assert out.index.tolist() == ["p7", "p2", "p7"]
    older = frame[frame["age"] > 60]
    joined = older.assign(p_dvt=predict(older, model=models)["p_dvt"])
    assert joined["p_dvt"].tolist() == [out["p_dvt"].iloc[1]]
    assert predict([CASE, CASE], model=models).index.tolist() == [0, 1]
    with_ids = frame.set_axis(["p7", "p2", "p9"]).assign(case_id=["a", "b", "c"])  # as the README joins them
    joined = with_ids.join(predict(with_ids, model=models), suffixes=("", "_scored"))
    assert joined["case_id_scored"].tolist() == ["a", "b", "c"] and joined["p_dvt"].tolist() == out["p_dvt"].tolist()


@pytest.mark.parametrize("blank", [pd.NaT, np.float32("nan"), np.float16("nan")], ids=["NaT", "float32", "float16"])
def test_any_missing_value_is_unknown_in_small_and_large_batches(trained, blank):
    """A column of a few rows is read value by value, a larger one by its unique values: the same
    answers, for every missing value (numpy's float32 NaN, no Python float, was refused in 64 rows
    and read as unknown in 65), in an answer and in a number."""
    models, _ = trained
    unknown = predict({"age": 40, "sex": "male"}, model=models)["p_dvt"].iloc[0]
    for n in (1, 64, 65):
        frame = pd.DataFrame({"age": [40] * n, "sex": ["male"] * n,
                              "locking": pd.Series([blank] + [None] * (n - 1), dtype=object),
                              "bmi": pd.Series([blank] * n, dtype=object)})
        assert predict(frame, model=models)["p_dvt"].tolist() == [unknown] * n
        records = [{"age": 40, "sex": "male", "fever": blank, "bmi": blank}] * n
        assert predict(records, model=models)["p_dvt"].tolist() == [unknown] * n


@pytest.mark.parametrize("question", ["pregnant", "hormonal_therapy"])
def test_a_mans_no_to_pregnancy_or_the_pill_is_the_same_as_no_answer(trained, question):
    """The question is never his: "no" must not move his probabilities, triage or differential, nor
    count as an answer (with only age and sex he rests on the prior, whatever he says to it). The
    model learns the pill's "no" from women, for whom it lowers the chance of a clot; read for a
    man, it lowered his below the knowledge base's, which gives men a tenth of a percent or so."""
    models, _ = trained
    cases = [{"age": 65, "sex": "male"}, {"age": 13, "sex": "male", "activity": "running", "injury_event": "none",
                                          "giving_way": "no", "fever": "no"},
             {"age": 70, "sex": "male", "pain_on_standing": "yes", "symptom_duration_days": 4}]
    plain = predict(cases, model=models)
    said_no = predict([{**c, question: "no"} for c in cases], model=models)
    pd.testing.assert_frame_equal(said_no, plain)


def test_callers_frame_is_not_modified(trained):
    models, _ = trained
    frame = pd.DataFrame([CASE, {"age": "70", "sex": " Female ", "locking": None}])
    before = frame.copy(deep=True)
    predict(frame, model=models)
    pd.testing.assert_frame_equal(frame, before)


def test_each_result_is_its_own_frame(trained):
    """Results share no labels or values a caller can change: naming one's columns or writing into
    one leaves the next result as it would be."""
    models, _ = trained
    case = {"age": 70, "sex": "female", "leg_swelling": "yes"}
    first = predict(case, model=models)
    expected = first.copy()
    first.columns.name = "field"
    first.loc[0, "p_dvt"] = -1.0
    first.loc[0, "triage"] = "changed"
    again = predict(case, model=models)
    assert again.columns.name is None
    pd.testing.assert_frame_equal(again, expected, check_exact=True)
    # nor do they share the ids they were given (score_parsed's own, or the parsed cases')
    from pipeline.core.parsing import parse_cases
    from pipeline.serve.predict import get_model, score_parsed

    model = get_model(models)
    parsed = parse_cases(pd.DataFrame({"case_id": ["a", "b"], "age": [70, 30], "sex": ["female", "male"]}))
    given = np.array([7, 8])
    for out in (score_parsed(model, parsed), score_parsed(model, parsed, ids=given)):
        out.iloc[0, 0] = out.iloc[1, 0]
    assert parsed.ids.tolist() == ["a", "b"] and given.tolist() == [7, 8]


def test_unknown_columns_warn_once(trained):
    models, _ = trained
    with pytest.warns(UserWarning, match="ignoring columns that are not case fields: notes, clinic") as record:
        predict([{**CASE, "notes": "x", "clinic": "y"}] * 3, model=models)
    assert len([w for w in record if "ignoring columns" in str(w.message)]) == 1
    # a name with a comma is quoted, as CSV and --columns quote it: it reads as one name
    with pytest.warns(UserWarning, match='not case fields: "note, free", clinic$'):
        predict([{**CASE, "note, free": "x", "clinic": "y"}], model=models)


def test_invalid_cases_name_every_bad_row(trained):
    models, _ = trained
    bad = [CASE, {"age": 9, "sex": "male"}, {"age": 30, "sex": "mal"}, {"age": 30, "sex": "male", "locking": "often"}]
    with pytest.raises(CaseValidationError) as info:
        predict(bad, model=models)
    assert info.value.errors["row"].tolist() == [1, 2, 3]
    text = str(info.value)
    assert "row 1, column 'age', value '9'" in text and "'mal'" in text and "'often'" in text


def test_a_frames_invalid_rows_are_named_by_position_and_by_its_own_labels(trained):
    """predict() answers on the caller's index; its errors name that index beside the position."""
    models, _ = trained
    frame = pd.DataFrame({"age": [30, 200, 40], "sex": ["male", "male", "x"]}, index=["p5", "p1", "p0"])
    with pytest.raises(CaseValidationError) as info:
        predict(frame, model=models)
    assert info.value.errors["index"].tolist() == ["p1", "p0"]
    assert "row 1 (index 'p1'), column 'age'" in str(info.value) and "row 2 (index 'p0'), column 'sex'" in str(info.value)
    with pytest.raises(CaseValidationError) as info:  # a frame numbered 0..n-1 needs no second name
        predict(frame.reset_index(drop=True), model=models)
    assert "index" not in info.value.errors and "row 1, column 'age'" in str(info.value)


def test_top_k_and_its_bounds(trained):
    models, _ = trained
    out = predict(CASE, model=models, top_k=5)
    assert len(out["top5"][0].split("|")) == 5
    with pytest.raises(ValueError, match="top_k == 0"):
        predict(CASE, model=models, top_k=0)
    with pytest.raises(ValueError, match="top_k == True"):  # a bool is an int to Python, not a count
        predict(CASE, model=models, top_k=True)
    with pytest.raises(ValueError, match=r"top_k == 2.5, must be an integer in 1..9"):
        predict(CASE, model=models, top_k=2.5)
    assert list(predict(CASE, model=models, top_k=np.int64(2)).columns).count("top2") == 1  # numpy's integers count


def test_chosen_columns_in_their_order_computing_only_what_they_need(trained, monkeypatch):
    from pipeline.decision.safety import SafetyNet

    models, _ = trained
    frame = pd.DataFrame([CASE, {"age": 70, "sex": "female"}, {"age": 35, "sex": "male"}], index=["p7", "p2", "p9"])
    full = predict(frame, model=models, top_k=2)

    def not_needed(*args, **kwargs):
        raise AssertionError("ask_next computed for columns without it")

    monkeypatch.setattr(SafetyNet, "ask_next", not_needed)
    out = predict(frame, model=models, top_k=2, columns=["triage", "p_dvt", "top2", "row"])
    pd.testing.assert_frame_equal(out, full[["triage", "p_dvt", "top2", "row"]])  # the index too: it joins back
    with pytest.raises(AssertionError, match="ask_next computed"):
        predict(frame, model=models, columns=["ask_next"])
    for columns, message in ((["tirage"], "'tirage' is not an output column; choose from row,prediction,"),
                             (["case_id"], r"'case_id' is not an output column \(the cases have no case_id column: "
                                           r"'row' numbers them\); choose from row,"),  # these cases have no ids
                             (["triage", "triage"], "'triage' given twice"), ([], "no column chosen; choose from row,"),
                             ("triage", r"give a list of output columns, such as \['triage'\], not one name"),
                             (np.array([["triage"]]), "give a list of output column names, not ndarray"),
                             ({"triage": 1}, "give a list of output column names, not dict"),
                             (["triage", ["p_dvt"]], "give a list of output column names, not list")):
        with pytest.raises(ValueError, match=message):
            predict(frame, model=models, columns=columns)
    # an Index, an array or a Series of names are lists of names too (columns=full.columns[:3])
    for columns in (full.columns[:3], np.array(["triage", "p_dvt"]), pd.Series(["triage", "p_dvt"]), ("triage",)):
        pd.testing.assert_frame_equal(predict(frame, model=models, top_k=2, columns=columns), full[list(columns)])


def test_model_is_loaded_once(trained, monkeypatch):
    models, _ = trained
    P = importlib.import_module("pipeline.serve.loading")
    clear_model_cache()
    calls = []
    real = P.load_model
    monkeypatch.setattr(P, "load_model", lambda src, **kw: calls.append(src) or real(src, **kw))
    for _ in range(3):
        predict(CASE, model=models)
    assert len(calls) == 1


def test_missing_default_model_says_make_run(tmp_path, monkeypatch):
    clear_model_cache()
    monkeypatch.setenv("KNEEPAIN_HOME", str(tmp_path))  # a project folder without a model
    with pytest.raises(FileNotFoundError, match="make run"):
        predict(CASE)


def test_a_model_source_that_cannot_be_one_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-folder: no such models folder"):
        predict(CASE, model=tmp_path / "no-such-folder")  # a typo, not a missing `make run`
    (tmp_path / "cases.csv").write_text("age,sex\n40,male\n")
    with pytest.raises(FileNotFoundError, match=r"cases.csv: is a file, not a models folder, and its folder .* holds no"):
        predict(CASE, model=tmp_path / "cases.csv")  # the cases given where the model goes
    with pytest.raises(ValueError, match="model == ''"):
        predict(CASE, model="")
    with pytest.raises(TypeError, match="got int"):
        predict(CASE, model=42)


def test_a_registry_uri_outside_the_project_creates_no_store(tmp_path, monkeypatch):
    """`--model models:/...` run where there is no MLflow store says so, and leaves no empty store behind."""
    from pipeline.core.errors import ModelIntegrityError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KNEEPAIN_HOME", str(tmp_path))
    for uri in ("models:/kneepain-classifier@champion", "runs:/0123456789abcdef/model"):
        with pytest.raises(ModelIntegrityError, match=f"no MLflow store at {tmp_path / 'mlflow.db'}"):
            predict(CASE, model=uri)
    assert list(tmp_path.iterdir()) == []


TRI_VALUES = st.sampled_from([True, False, None, "yes", "no", "Y", "n", "1", "0", 1, 0, 2, "", "unknown",
                              "maybe", float("nan"), 0.5, "TRUE ", -1])
CAT_VALUES = {f.name: st.one_of(st.sampled_from(list(f.allowed)), st.sampled_from(["", None, "other", 3]))
              for f in FIELDS if f.kind == "category"}
NUM_VALUES = st.one_of(st.integers(-5, 200), st.floats(allow_nan=True, allow_infinity=True), st.none(),
                       st.sampled_from(["", "12", "abc", " 40 ", "1e3"]))


@st.composite
def case_dicts(draw):
    case = {}
    for f in FIELDS:
        if not draw(st.booleans()) and not f.required:
            continue
        if f.kind == "tristate":
            case[f.name] = draw(TRI_VALUES)
        elif f.kind == "category":
            case[f.name] = draw(CAT_VALUES[f.name])
        else:
            case[f.name] = draw(NUM_VALUES)
    if draw(st.booleans()):
        case["extra"] = draw(st.text(max_size=5))
    return case


@settings(max_examples=150, deadline=None, derandomize=True,  # the same examples in every run
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(case_dicts(), min_size=1, max_size=4))
def test_random_cases_give_probabilities_or_a_validation_error(trained, cases):
    models, _ = trained
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = predict(cases, model=models)
    except CaseValidationError as err:
        assert len(err.errors) >= 1 and str(err)
        return
    probs = out[P_COLS].to_numpy()
    assert len(out) == len(cases)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_same_numbers_in_any_thread_at_any_blas_thread_count(trained, blas_threads):
    """threadpoolctl ignores a BLAS limit asked for in a thread that does not control OpenBLAS, so
    equal numbers cannot rest on thread limits: a batch scored in the main thread at 1 or 2 BLAS
    threads, in another thread, and a case scored alone all give the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from pipeline import load_knowledge_base
    from pipeline.data.generate import generate_cases

    models, _ = trained
    cases = generate_cases(load_knowledge_base(), 2000, seed=5).drop(columns=["condition", "severity"])
    reference = predict(cases, model=models)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        here = predict(cases, model=models)
        with ThreadPoolExecutor(1) as pool:
            there = pool.submit(predict, cases, model=models).result()
        alone = predict(cases.iloc[[1000]], model=models)
    pd.testing.assert_frame_equal(here, reference, check_exact=True)
    pd.testing.assert_frame_equal(there, reference, check_exact=True)
    np.testing.assert_array_equal(alone[P_COLS].to_numpy()[0], reference[P_COLS].to_numpy()[1000])


def test_joined_texts_kept_between_calls_belong_to_their_names_and_separator(monkeypatch):
    """join_ranked keeps the texts it joined for the next chunk: each for its own names and
    separator, and the same after its table fills and starts again."""
    from pipeline.core import textcols

    rng = np.random.default_rng(1)
    order = np.argsort(rng.random((500, 4)), axis=1)
    keep = rng.random((500, 4)) < 0.6

    def expected(names, sep="|"):
        return [sep.join(names[j] for j, k in zip(o, ks) if k) for o, ks in zip(order, keep)]

    first, second = ["a", "b", "c", "d"], ["w", "x", "y", "z"]
    monkeypatch.setattr(textcols, "_JOINED_MAX", 10)  # the table starts again within each call
    for names in (first, second, first, second):
        assert list(textcols.join_ranked(names, order, keep)) == expected(names)
    assert list(textcols.join_ranked(first, order, keep, sep=";")) == expected(first, ";")
    assert list(textcols.join_ranked(first, order[:, :3], keep[:, :3])) == [
        "|".join(first[j] for j, k in zip(o[:3], ks[:3]) if k) for o, ks in zip(order, keep)]
    # rankings too wide for one number each (the safety net's 16 rules in a fixed order, some kept),
    # known by their parts' numbers: the same texts from the table on the next call
    wide = [f"rule {i}" for i in range(16)]
    order = np.tile(rng.permutation(16), (500, 1))
    keep = rng.random((500, 16)) < 0.5
    monkeypatch.setattr(textcols, "_JOINED_MAX", 1 << 16)
    for _ in range(2):
        assert list(textcols.join_ranked(wide, order, keep)) == expected(wide)
    assert len(textcols._joined(((tuple(wide),) * 16, "|", 16))) == len({tuple(k) for k in keep})


def test_variants_join_as_their_tables_say_for_one_row_or_many():
    """join_variants (the safety net's lines, each rule with its own variants) gives per row the
    kept columns' texts from their own tables, the same for a few rows as for many (two paths), on
    rows too wide for one number, and refuses a variant its table does not have."""
    from pipeline.core import textcols

    rng = np.random.default_rng(2)
    tables = [[f"rule {j} variant {v}" for v in range(1 + j % 5)] for j in range(20)]
    variant = np.column_stack([rng.integers(0, len(t), 600) for t in tables])
    keep = rng.random((600, 20)) < 0.4
    expected = ["|".join(tables[j][v] for j, (v, k) in enumerate(zip(vs, ks)) if k) for vs, ks in zip(variant, keep)]
    assert list(textcols.join_variants(tables, variant, keep)) == expected
    assert list(textcols.join_variants(tables, variant[:3], keep[:3])) == expected[:3]
    assert list(textcols.join_variants(tables, variant, keep, sep=";")) == [e.replace("|", ";") for e in expected]
    variant[5, 0] = 1  # the first table has one variant
    for rows in (variant, variant[5:6]):  # many rows and few
        with pytest.raises(IndexError, match="column 0 holds 1..1, not indices of its table of 1 texts"):
            textcols.join_variants(tables, rows, keep[:len(rows)])
    with pytest.raises(IndexError, match="column 1 holds -1..-1"):  # not read from the end
        textcols.join_variants(tables, np.array([[0, -1] + [0] * 18]), keep[:1])


def test_text_columns_are_the_same_built_for_one_row_or_many():
    """Small inputs build their text columns in Python, large ones in Arrow: the same strings."""
    from pipeline.core.textcols import join_ranked, lookup

    rng = np.random.default_rng(0)
    names = ["alpha", "beta", "gamma d", "", "epsilon"]
    order = np.argsort(rng.random((300, 5)), axis=1)
    keep = rng.random((300, 5)) < 0.4
    keep[:20] = False  # rows that keep nothing give ""
    index = rng.integers(0, 5, size=300)
    for k in (keep, None):
        whole = list(join_ranked(names, order, k))
        pieces = [s for i in range(0, 300, 7) for s in join_ranked(names, order[i:i + 7], None if k is None else k[i:i + 7])]
        assert whole == pieces
        assert str(join_ranked(names, order[:3], None if k is None else k[:3]).dtype) == str(join_ranked(names, order, k).dtype)
    assert list(lookup(names, index)) == [s for i in range(0, 300, 7) for s in lookup(names, index[i:i + 7])]
    assert whole[0] == "|".join(names[j] for j in order[0])
    # rankings too wide to be one number each (31 ** 30 > 2 ** 63) are told apart as rows
    wide = [f"n{i}" for i in range(30)]
    order = np.argsort(rng.random((300, 30)), axis=1)
    keep = rng.random((300, 30)) < 0.3
    expected = ["|".join(wide[j] for j, k in zip(o, ks) if k) for o, ks in zip(order, keep)]
    assert list(join_ranked(wide, order, keep)) == expected
    assert list(join_ranked(wide, order[:, :3], keep[:, :3])) == [
        "|".join(wide[j] for j, k in zip(o[:3], ks[:3]) if k) for o, ks in zip(order, keep)]
    # no columns at all: every row is "", however many rows
    for rows in (3, 300):
        assert list(join_ranked(wide, order[:rows, :0])) == [""] * rows
        assert list(join_ranked(wide, order[:rows, :0], keep[:rows, :0])) == [""] * rows
    with pytest.raises(IndexError, match="not indices of its table of 5 texts"):
        join_ranked(names, order[:, :5])  # indices up to 29 for 5 names


def _scoring_threads(monkeypatch, scoring) -> list[str]:
    """The names of the threads ``scoring.score_columns`` runs on from now, one per call, in a list
    the caller can read and clear."""
    import threading

    threads: list[str] = []
    real = scoring.score_columns

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_columns", recorded)
    return threads


@pytest.mark.parametrize("ids", ["text", "none", "integers"])
def test_many_cases_are_scored_in_chunks_on_two_threads_to_the_same_bits(trained, kb, monkeypatch, ids):
    """A frame of several chunks is scored a chunk at a time on two threads: the same frame, bit for
    bit, as one call on one thread, with row numbers and ids running on across the chunks and the
    caller's own index kept."""
    import threading

    import pipeline.serve.predict as scoring
    from pipeline.data.generate import generate_cases

    models, _ = trained
    frame = generate_cases(kb, 5_500, seed=8).drop(columns=["condition", "severity"])
    if ids == "text":
        frame.insert(0, "case_id", [f"c{i}" for i in range(len(frame))])
    elif ids == "integers":
        frame.insert(0, "case_id", pd.array(range(10**15, 10**15 + len(frame)), dtype="Int64"))
    frame.index = pd.RangeIndex(7, 7 + len(frame))  # an index of the caller's own
    monkeypatch.setattr(scoring, "CHUNK_ROWS", 1_000)  # six chunks, the last of 500
    threads = _scoring_threads(monkeypatch, scoring)
    monkeypatch.setattr(scoring, "scorer_threads", lambda: 2)
    chunked = predict(frame, model=models, top_k=4)
    assert len(threads) == 6 and all(name.startswith("kneepain-predict") for name in threads)
    threads.clear()
    monkeypatch.setattr(scoring, "scorer_threads", lambda: 1)
    whole = predict(frame, model=models, top_k=4)
    assert threads == [threading.current_thread().name]
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    assert chunked.index.equals(frame.index)
    if ids == "none":
        assert chunked["row"].tolist() == list(range(len(frame)))
    else:
        assert chunked["case_id"].astype(str).tolist() == frame["case_id"].astype(str).tolist()
        assert chunked["case_id"].dtype == whole["case_id"].dtype


def test_n_jobs_sets_the_scoring_threads_without_changing_a_bit(trained, kb, monkeypatch):
    """``n_jobs=1`` scores in the calling thread alone (a caller with a pool of its own), a number
    asks for that many threads, -1 for one per available core, and the frame is the same whatever
    the number; anything else is refused, naming the parameter and what it takes."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pipeline.serve.predict as scoring
    from pipeline.data.generate import generate_cases

    models, _ = trained
    frame = generate_cases(kb, 3_500, seed=9).drop(columns=["condition", "severity"])
    monkeypatch.setattr(scoring, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(scoring, "scorer_threads", lambda: 2)  # the default would use threads
    monkeypatch.setattr(scoring, "available_cores", lambda: 5)
    threads = _scoring_threads(monkeypatch, scoring)
    pools: list[int] = []

    class Recorded(ThreadPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(scoring, "ThreadPoolExecutor", Recorded)
    alone = predict(frame, model=models, n_jobs=1)
    assert threads == [threading.current_thread().name] and pools == []
    for n_jobs, width in ((3, 3), (-1, 5), (None, 2), (np.int64(2), 2)):
        threads.clear()
        out = predict(frame, model=models, n_jobs=n_jobs)
        assert pools.pop() == width and len(threads) == 4
        assert all(name.startswith("kneepain-predict") for name in threads)
        pd.testing.assert_frame_equal(out, alone, check_exact=True)
    for bad in (0, -2, 1.5, 2.0, True, np.True_, "2"):
        with pytest.raises(ValueError, match=r"n_jobs == .*must be None .*-1 .*positive integer"):
            predict(frame.head(2), model=models, n_jobs=bad)
    with pytest.raises(ValueError, match=r"n_jobs == '2', must be None"):  # the same check from Python's other way in
        scoring.score_parsed(scoring.get_model(models), scoring.as_parsed(frame.head(2)), n_jobs="2")


def test_many_cases_are_scored_in_one_call_once_the_interpreter_is_shutting_down(trained, tmp_path):
    """No thread can be started once Python shuts down (an ``atexit`` handler, a thread that outlives
    the main one): predict() then scores the cases in one call, as it does for a few."""
    import subprocess
    import sys
    import textwrap

    models, _ = trained
    script = textwrap.dedent(f"""
        import atexit
        import pipeline.serve.predict as scoring
        from pipeline import load_knowledge_base, predict
        from pipeline.data.generate import generate_cases

        scoring.CHUNK_ROWS = 500
        scoring.scorer_threads = lambda: 2
        frame = generate_cases(load_knowledge_base(), 1_200, seed=1).drop(columns=["condition", "severity"])
        expected = predict(frame, model={str(models)!r})  # in chunks, while threads may start

        def late():
            out = predict(frame, model={str(models)!r})
            print("same" if out.equals(expected) else "different", flush=True)

        atexit.register(late)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "same", child.stderr[-2000:]


def test_every_scoring_path_gives_the_decision_layer_the_model_to_rescore_with(trained, monkeypatch):
    """A same day a "no" completes is judged against the case without its "no"s, scored by the
    model (:func:`pipeline.decision.triage.expected_cost_levels`): predict() hands the model's
    probabilities of the changed cases in, and they are the model's own."""
    import pipeline.decision.layer as layer
    from pipeline.core.cases import as_parsed
    from pipeline.serve.loading import load_model

    models, _ = trained
    model = load_model(models)
    handed = []
    real = layer.expected_cost_levels

    def spy(cfg, codes, proba, atypical=None, net=None, rescore=None):
        handed.append(rescore)
        return real(cfg, codes, proba, atypical, net, rescore)

    monkeypatch.setattr(layer, "expected_cost_levels", spy)
    predict(CASE, model=model, columns=["triage"])
    assert handed and handed[0] is not None
    codes = {k: v.copy() for k, v in as_parsed(CASE).codes.items()}
    np.testing.assert_array_equal(handed[0](codes), model.predict_proba(as_parsed(CASE)))
