import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import CaseValidationError
from pipeline.core.parsing import parse_cases, parse_records
from pipeline.core.paths import project_root
from pipeline.core.schema import FIELDS, UNKNOWN, data_dictionary_markdown, field, normalise_header
from pipeline.core.sizes import FEW_CASES
from pipeline.report.docs import render_readme


def _case(**kw):
    base = {"age": 40, "sex": "female"}
    base.update(kw)
    return pd.DataFrame([base])


@pytest.mark.parametrize("word,code", [
    ("yes", 1), ("Y", 1), (" TRUE ", 1), ("t", 1), ("1", 1), (True, 1), (1, 1),
    ("no", 0), ("N", 0), ("False", 0), ("f", 0), ("0", 0), (False, 0), (0.0, 0),
    ("", -1), ("unknown", -1), (" Unknown ", -1), (None, -1), (np.nan, -1),
])
def test_tristate_words(word, code):
    assert parse_cases(_case(locking=word)).codes["locking"][0] == code


def test_categories_are_case_insensitive_and_absent_columns_unknown():
    parsed = parse_cases(_case(sex=" Male ", activity="RUNNING"))
    assert parsed.codes["sex"][0] == 1 and parsed.codes["activity"][0] == 1
    assert parsed.codes["onset"][0] == -1 and np.isnan(parsed.codes["bmi"][0])


INJURY = list(field("injury_event").allowed)


def test_a_categorys_words_may_be_joined_by_spaces_or_hyphens_as_a_columns_name_may():
    """A spreadsheet's "Fall onto knee" was "not allowed" where the column "Injury event" was read;
    in a few rows and in a large column alike (each path looks the texts up its own way)."""
    words = ["Fall onto knee", "twist-or-direction-change", " Deep  bend or_squat ", "fall_onto_knee", "unknown"]
    codes = [INJURY.index("fall_onto_knee"), INJURY.index("twist_or_direction_change"),
             INJURY.index("deep_bend_or_squat"), INJURY.index("fall_onto_knee"), -1]
    for rows in (1, FEW_CASES + 1):
        frame = pd.concat([_case(injury_event=w, activity="Sprint pivot sport") for w in words] * rows, ignore_index=True)
        parsed = parse_cases(frame)
        assert parsed.codes["injury_event"].tolist() == codes * rows
        assert (parsed.codes["activity"] == field("activity").allowed.index("sprint_pivot_sport")).all()
    with pytest.raises(CaseValidationError, match="value 'fall onto the knee': not allowed"):  # words still must match
        parse_cases(_case(injury_event="fall onto the knee"))


def test_errors_name_row_column_value_and_allowed():
    frame = pd.DataFrame({"age": [40, 130, 30, "forty"], "sex": ["female", "male", "femal", "male"],
                          "locking": ["yes", "maybe", "no", ""], "pregnant": ["", "yes", "", ""]})
    with pytest.raises(CaseValidationError) as info:
        parse_cases(frame)
    errors = info.value.errors
    got = {(r.row, r.column, r.value) for r in errors.itertuples()}
    assert got == {(1, "age", "130"), (1, "locking", "maybe"), (1, "pregnant", "yes"),
                   (2, "sex", "femal"), (3, "age", "forty")}
    message = str(info.value)
    assert "row 2, column 'sex', value 'femal'" in message and "female, male" in message
    assert "not a number" in message and "out of range" in message
    assert "pregnant cannot be yes when sex is male" in message


def test_a_duration_longer_than_the_patients_life_is_rejected():
    """Symptoms began after birth: at most (age + 1) x 365.25 days, the bound itself allowed."""
    frame = pd.DataFrame({"age": [18, 18, 100, 40, 40], "sex": "male",
                          "symptom_duration_days": [6939.75, 6939.76, 36890.25, None, 1e8]})
    parsed = parse_cases(frame, raise_on_error=False)
    assert parsed.valid.tolist() == [True, False, True, True, False]
    assert parsed.errors["column"].unique().tolist() == ["symptom_duration_days"]
    assert parsed.errors["reason"].iloc[0].startswith("longer than the patient has lived: at age 18 at most 6939.75 days")
    assert "at age 40 at most 14975.25 days" in parsed.errors["reason"].iloc[1]


def test_collect_mode_marks_rows_invalid_without_raising():
    frame = pd.DataFrame({"age": [40, 5], "sex": ["male", "male"]})
    parsed = parse_cases(frame, raise_on_error=False, row_offset=100)
    assert parsed.valid.tolist() == [True, False]
    assert parsed.errors.iloc[0]["row"] == 101


def test_missing_required_column_is_named():
    with pytest.raises(CaseValidationError, match="'sex'.*required column is missing"):
        parse_cases(pd.DataFrame({"age": [30]}))


def test_a_missing_required_column_names_the_column_that_looks_like_it(trained, tmp_path):
    """`Age (years)` and `Gender` stopped a file with "column 'age': required column is missing"
    alone (the warning that names near columns comes only once a file is read), and a header cell
    `sex` followed by a zero-width space, which shows as `sex`, was no column `sex` at all."""
    from pipeline.cli import main

    with pytest.raises(CaseValidationError, match=r"column 'age': required column is missing .*; is "
                                                  r"'Age \(years\)' it\? Name that column age"):
        parse_cases(pd.DataFrame({"Age (years)": [30], "sex": ["male"]}))
    with pytest.raises(CaseValidationError, match=r"is 'Gender' it\? Name that column sex"):
        parse_cases(pd.DataFrame({"age": [30], "Gender": ["male"]}))
    with pytest.raises(CaseValidationError) as err:  # nothing near: the message as it was
        parse_cases(pd.DataFrame({"age": [30], "notes": ["x"]}))
    assert str(err.value).endswith("(required columns: age, sex)")
    for name, header in (("plain", "case_id,age,sex"), ("hidden", "case_id,age,sex\u200b")):
        (tmp_path / f"{name}.csv").write_bytes(f"{header}\na,30,male\n".encode())
        assert main(["score", str(tmp_path / f"{name}.csv"), "-o", str(tmp_path / f"{name}.out.csv"), "--quiet",
                     "--model", str(trained[0])]) == 0
    assert (tmp_path / "hidden.out.csv").read_bytes() == (tmp_path / "plain.out.csv").read_bytes()


def test_an_answer_or_a_label_with_an_invisible_character_reads_as_it_shows():
    """`yes` followed by a zero-width space, which shows as `yes`, was "not allowed; allowed: yes,
    no, ...", and `osteoarthritis` so followed "not a condition", as header names were before."""
    from pipeline.data.real import validate_labelled

    hidden = pd.DataFrame({"age": [30, 40], "sex": ["male\u200b", "\ufefffemale"], "smoker": ["yes\u200b", "no"],
                           "onset": ["Sudden\u2060", "gradual"]})
    plain = pd.DataFrame({"age": [30, 40], "sex": ["male", "female"], "smoker": ["yes", "no"],
                          "onset": ["sudden", "gradual"]})
    for name in ("sex", "smoker", "onset"):
        np.testing.assert_array_equal(parse_cases(hidden).codes[name], parse_cases(plain).codes[name])
    labelled = validate_labelled(plain.assign(condition=["osteoarthritis\u200b", "Baker\u2019s cyst\u00ad"]))
    assert len(labelled.rejects) == 0 and labelled.valid["condition"].tolist() == ["osteoarthritis", "bakers_cyst"]


def test_blank_required_value_is_rejected_and_blank_number_is_unknown():
    parsed = parse_cases(pd.DataFrame({"age": ["30", ""], "sex": ["male", "male"], "bmi": ["", " 27.5 "]}),
                         raise_on_error=False)
    assert parsed.valid.tolist() == [True, False]
    assert np.isnan(parsed.codes["bmi"][0]) and parsed.codes["bmi"][1] == 27.5
    assert "required" in parsed.errors.iloc[0]["reason"]


def test_readme_data_dictionary_is_generated_from_schema():
    text = (project_root() / "README.md").read_text(encoding="utf-8")
    assert render_readme(text) == text, "README is out of date: run `python -m pipeline.report.docs`"
    for f in FIELDS:
        assert f"`{f.name}`" in data_dictionary_markdown()


def test_text_nan_is_rejected_whatever_else_is_in_the_column():
    for other in ("25", "abc"):
        frame = pd.DataFrame({"age": ["40", "41"], "sex": ["male", "male"], "bmi": ["nan", other]}).astype("str")
        parsed = parse_cases(frame, raise_on_error=False)
        assert not parsed.valid[0], other
        assert parsed.errors.loc[parsed.errors["row"] == 0, "reason"].str.contains("not a number").all()


def test_a_boolean_number_is_not_a_number_whatever_else_is_in_the_column():
    """True in a number field is refused as not a number, alone (a column of booleans) or beside
    numbers and text (a column of Python objects), and never read as 1."""
    for others in ([], [30], ["30"], [None]):
        records = [{"age": 40, "sex": "male", "bmi": True}] + [{"age": 40, "sex": "male", "bmi": v} for v in others]
        parsed = parse_records(records, raise_on_error=False)
        assert not parsed.valid[0], others
        assert parsed.errors.loc[parsed.errors["row"] == 0, "reason"].str.startswith("not a number").all(), others
        assert parsed.valid[1:].all(), others


def test_integers_too_large_for_a_float_or_for_text_are_named_not_raised():
    base = {"age": 40, "sex": "male"}
    parsed = parse_records([{**base, "bmi": 10**400}, {**base, "bmi": -10**400}, {**base, "fever": 10**5000},
                            {**base, "case_id": 10**5000}, {**base, "case_id": 7}], raise_on_error=False)
    reasons = parsed.errors.set_index("row")
    assert reasons.loc[0, "reason"].startswith(_INFINITE) and reasons.loc[1, "reason"].startswith(_INFINITE)
    assert reasons.loc[2, "value"] == "an integer of about 5000 digits"
    assert reasons.loc[2, "reason"].startswith("not allowed")
    assert parsed.valid.tolist() == [False, False, False, True, True]  # an id is a label, whatever its size


def test_a_decimal_reads_as_its_float_alone_or_among_many():
    """A few rows are read value by value, many by their unique values (which merge values that
    compare equal, such as 1 and Decimal("1.00")): a Decimal reads as the float it stands for either
    way, and a signaling NaN (which cannot be hashed) is refused."""
    from decimal import Decimal

    values = [Decimal("1.00"), 1, Decimal("NaN"), "no", Decimal("sNaN"), Decimal("0")]
    for filler in (0, 70):
        fever = values + ["no"] * filler
        frame = pd.DataFrame({"age": 50, "sex": "female", "fever": pd.Series(fever, dtype=object),
                              "bmi": pd.Series([Decimal("22.5"), Decimal("1e400"), Decimal("sNaN"), None, None, None]
                                               + [None] * filler, dtype=object)})
        parsed = parse_cases(frame, raise_on_error=False)
        assert parsed.codes["fever"][:6].tolist() == [1, 1, -1, 0, -1, 0], filler
        assert parsed.valid[:6].tolist() == [True, False, False, True, False, True], filler
        reasons = parsed.errors.groupby("row")["reason"].apply(" ".join)
        assert reasons[1].startswith("not a finite number (too large for a float, or infinite); allowed: a number"), filler
        assert "a signaling NaN is not a number" in reasons[2], filler
        assert parsed.codes["bmi"][0] == 22.5


def test_an_arrow_string_view_column_reads_as_text():
    import pyarrow as pa

    def view(values):
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, pa.string_view())))

    frame = pd.DataFrame({"age": view(["40", "x"]), "sex": view(["female", "male"]), "bmi": view(["22.5", None])})
    parsed = parse_cases(frame, raise_on_error=False)
    assert parsed.codes["age"][0] == 40 and parsed.codes["bmi"][0] == 22.5 and np.isnan(parsed.codes["bmi"][1])
    assert parsed.errors["reason"].tolist() == ["not a number; allowed: a whole number >= 12 and <= 100"]


def test_a_blank_is_shown_blank_however_it_is_written():
    frame = pd.DataFrame({"age": pd.Series([None, pd.NA, np.nan], dtype=object), "sex": "male"})
    errors = parse_cases(frame, raise_on_error=False).errors
    assert errors["value"].tolist() == ["", "", ""] and errors["reason"].str.startswith("required").all()


def test_duplicate_ids_ignore_surrounding_spaces():
    frame = pd.DataFrame({"case_id": ["A", "A "], "age": [30, 31], "sex": ["male", "male"]})
    assert parse_cases(frame, raise_on_error=False).valid.tolist() == [True, False]


def test_canonical_text_columns_read_as_the_general_path_reads_them():
    """A text column of only canonical answers ("yes", "no", "", category names) is read in one
    Arrow lookup; any other cell sends the column through the general path: the codes and the
    errors are the same either way."""
    rng = np.random.default_rng(0)
    n = 500
    canonical = pd.DataFrame({
        "age": rng.integers(20, 80, n).astype(str), "sex": rng.choice(["female", "male"], n),
        "smoker": rng.choice(["yes", "no", ""], n), "onset": rng.choice(["sudden", "gradual", ""], n)},
        dtype="string[pyarrow]")
    mixed = canonical.copy()
    mixed.loc[7, "smoker"], mixed.loc[9, "onset"], mixed.loc[11, "smoker"] = "Yes", " GRADUAL ", "sometimes"
    mixed.loc[13, "onset"] = None
    for frame in (canonical, mixed):
        fast = parse_cases(frame, raise_on_error=False)
        general = parse_cases(frame.astype(object), raise_on_error=False)  # object columns take the general path
        for name in fast.codes:
            np.testing.assert_array_equal(fast.codes[name], general.codes[name])
        pd.testing.assert_frame_equal(fast.errors, general.errors)
    parsed = parse_cases(mixed, raise_on_error=False)
    assert parsed.codes["smoker"][7] == 1 and parsed.codes["onset"][13] == -1
    assert parsed.errors[["row", "column", "value"]].values.tolist() == [[11, "smoker", "sometimes"]]


def test_a_few_rows_parse_as_they_do_among_many():
    """Up to 64 rows are read value by value, more through a factorisation: a case gets the same
    codes and errors either way, whatever Python values its cells hold."""
    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame({
        "age": rng.choice(np.array([35, 61.0, "47", " 70 ", None, "old"], dtype=object), n),
        "sex": rng.choice(np.array(["female", "Male", " FEMALE", None, "x"], dtype=object), n),
        "smoker": rng.choice(np.array([True, False, 1, 0, 1.0, "Yes", " n ", "", None, np.nan, "unknown", "maybe",
                                       [1]], dtype=object), n),
        "onset": rng.choice(np.array(["sudden", "Gradual", "unknown", None, 3], dtype=object), n),
        "bmi": rng.choice(np.array([22.5, "31", None, "", "heavy", 1000], dtype=object), n),
    })
    whole = parse_cases(frame, raise_on_error=False)
    parts = [parse_cases(frame.iloc[i:i + 7].reset_index(drop=True), row_offset=i, raise_on_error=False)
             for i in range(0, n, 7)]
    for name in whole.codes:
        np.testing.assert_array_equal(whole.codes[name], np.concatenate([p.codes[name] for p in parts]))
    pd.testing.assert_frame_equal(whole.errors.sort_values(["row", "column"], ignore_index=True),
                                  pd.concat([p.errors for p in parts]).sort_values(["row", "column"],
                                                                                   ignore_index=True))


def test_records_parse_as_their_data_frame_does():
    """predict() parses dicts without building a DataFrame: the codes, errors, ids and ignored
    columns are those of parse_cases(pd.DataFrame(records)), whatever the values (a column of
    ints, bools or floats is typed as the frame types it), with keys missing from some records;
    except that integer ids beside a missing one stay as given where the frame makes them floats."""
    from pipeline.core.parsing import parse_records

    pools = {
        "age": [[35, 61, 70], [35.0, 61.5], ["47", " 70 ", None, "old", 61]],
        "sex": [["female", "male"], ["female", " MALE", None, "x", 3]],
        "smoker": [[True, False], [1, 0], ["yes", "no"], [True, 1, "Yes", " n ", "", None, np.nan, "maybe", [1]]],
        "onset": [["sudden", "gradual"], ["Gradual", "unknown", None, 3, {"a": 1}]],
        "bmi": [[22.5, 31.0], [22, 31], [22.5, "31", None, "", "heavy", 1000, np.nan]],
        "case_id": [["a", "b", " a"], [1, 2, 2]],
        "Colour": [["red", None]],
    }
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.choice([1, 2, 5, 70, 1_200]))  # 1,200: through the DataFrame constructor
        chosen = {k: pools[k][rng.integers(len(pools[k]))] for k in pools if k in ("age", "sex") or rng.random() < 0.7}
        records = []
        for _ in range(n):
            keys = [k for k in chosen if k in ("age", "sex") or rng.random() < 0.85]
            records.append({k: chosen[k][rng.integers(len(chosen[k]))] for k in keys})
        frame = pd.DataFrame(records)
        if "case_id" in frame and frame["case_id"].dtype.kind == "f" and chosen["case_id"] == [1, 2, 2]:
            frame["case_id"] = pd.Series([r.get("case_id", np.nan) for r in records], dtype=object)
        expected = parse_cases(frame, raise_on_error=False)
        got = parse_records(records, raise_on_error=False)
        for name in expected.codes:
            np.testing.assert_array_equal(got.codes[name], expected.codes[name], err_msg=f"{trial} {name}")
            assert got.codes[name].dtype == expected.codes[name].dtype
        np.testing.assert_array_equal(got.valid, expected.valid)
        pd.testing.assert_frame_equal(got.errors, expected.errors)
        assert got.ignored_columns == expected.ignored_columns
        if expected.ids is None:
            assert got.ids is None
        else:
            pd.testing.assert_series_equal(got.ids, expected.ids)
    # keys in another order in each record, a non-text key
    records = [{"sex": "male", "age": 50}, {"age": 60, "sex": "female", 7: "x"}]
    expected = parse_cases(pd.DataFrame(records), raise_on_error=False)
    got = parse_records(records, raise_on_error=False)
    assert got.ignored_columns == expected.ignored_columns
    for name in expected.codes:
        np.testing.assert_array_equal(got.codes[name], expected.codes[name])


@pytest.mark.parametrize("n", [2, 1_200])  # 1,200: through the DataFrame constructor
def test_records_may_spell_a_field_differently_but_each_gives_it_once(n):
    """Names are matched ignoring case and surrounding spaces: one record's ``Age`` and the next
    one's ``age`` are one field (the first spelling names it), but a record that gives a field
    twice is refused, naming its row."""
    from pipeline.core.parsing import parse_records

    spelt = [{"Age": 30 + i % 50, "sex": "male"} if i % 2 == 0 else {"age ": 30 + i % 50, "SEX": "female", "fever": "yes"}
             for i in range(n)]
    plain = [{normalise_header(k): v for k, v in record.items()} for record in spelt]
    got, expected = parse_records(spelt), parse_records(plain)
    for name in expected.codes:
        np.testing.assert_array_equal(got.codes[name], expected.codes[name])
    assert got.ignored_columns == expected.ignored_columns == ()
    # every record that gives a field twice is named, not only the first
    twice = [{"sex": "male", "SEX": "female", "age": 40}, *plain[1:-1], {"age": 50, "sex": "male", "Age ": 3}]
    with pytest.raises(CaseValidationError, match=rf"row {n - 1}, column 'age'.*given more than once in this record") as err:
        parse_records(twice)
    assert err.value.errors[["row", "column"]].values.tolist() == [[0, "sex"], [n - 1, "age"]]


def test_a_few_records_read_only_the_case_fields_of_many_columns(monkeypatch):
    """A request of one case with 100,000 keys that are no case fields names them as ignored
    without building a column of each (that took 6 s of a server's time)."""
    from pipeline.core import parsing

    built = []
    real = parsing._record_column
    monkeypatch.setattr(parsing, "_record_column", lambda name, values: built.append(name) or real(name, values))
    record = {"Age": 30, "sex": "male", "case_id": "a", **{f"k{i}": i for i in range(100_000)}}
    parsed = parsing.parse_records([record, {"age": 40, "sex": "female", "fever": "yes"}])
    assert built == ["Age", "sex", "case_id", "fever"]
    assert len(parsed.ignored_columns) == 100_000 and parsed.ignored_columns[:2] == ("k0", "k1")
    assert parsed.codes["age"].tolist() == [30, 40] and parsed.codes["fever"].tolist() == [UNKNOWN, 1]
    assert parsed.ids[0] == "a" and pd.isna(parsed.ids[1])


def test_many_records_name_a_value_that_is_no_text():
    """A lone surrogate (``"\\ud800"`` in JSON) among many records is named by row and column, as
    among a few: it is no text Arrow can hold, where the DataFrame constructor would raise."""
    from pipeline.core.parsing import parse_records

    records = [{"age": 40, "sex": "male", "case_id": i} for i in range(1_200)]
    records[700] = {"age": 40, "sex": "\ud800", "case_id": 700}
    with pytest.raises(CaseValidationError) as err:
        parse_records(records)
    assert err.value.errors[["row", "column"]].values.tolist() == [[700, "sex"]]


def test_many_records_in_any_sequence_parse_alike():
    """Only a list of dicts goes through the DataFrame constructor (which reads an array of dicts
    as one column): a tuple or an array of the same dicts parses the same."""
    from pipeline.core.parsing import parse_records

    records = [{"age": 30 + i % 50, "sex": "female", "fever": "yes" if i % 3 else "no"} for i in range(1_200)]
    expected = parse_records(records)
    for other in (tuple(records), np.array(records, dtype=object)):
        got = parse_records(other)
        for name in expected.codes:
            np.testing.assert_array_equal(got.codes[name], expected.codes[name])


def test_predict_names_empty_input_and_refuses_parsed_cases():
    """No cases is said as such; parsed cases (which may hold rows that failed validation) are
    refused before any model is loaded, as is a list holding something other than dicts."""
    from pipeline import predict

    for empty in ([], pd.DataFrame()):
        with pytest.raises(CaseValidationError, match="^no cases were given$"):  # no row or column to name
            predict(empty, model="no-such-model-folder")
    parsed = parse_cases(pd.DataFrame({"age": ["abc", "40"], "sex": ["male", "male"]}), raise_on_error=False)
    with pytest.raises(TypeError, match="not ParsedCases"):
        predict(parsed, model="no-such-model-folder")
    with pytest.raises(TypeError, match=r"must hold dicts, one per case: cases\[1\] is of type int\.$"):
        predict([{"age": 40, "sex": "male"}, 3], model="no-such-model-folder")
    # in a long list, each odd one is named by its place and type (a row from iterrows() is a Series)
    cases = [{"age": 40, "sex": "male"}] * 1000
    cases[637] = pd.Series({"age": 40, "sex": "male"})
    with pytest.raises(TypeError, match=r"cases\[637\] is of type Series\.$"):
        predict(cases, model="no-such-model-folder")
    with pytest.raises(TypeError, match=r"cases\[0\] is of type int, .*cases\[4\] is of type int \(and 2 more\)\.$"):
        predict(list(range(7)), model="no-such-model-folder")


_INFINITE = "not a finite number (too large for a float, or infinite)"


@pytest.mark.parametrize(("value", "reason"), [
    ("1e400", _INFINITE), ("inf", _INFINITE), ("-inf", _INFINITE), (float("inf"), _INFINITE), ("-1", "out of range"),
    (-1e308, "out of range")])
def test_an_infinite_number_is_not_called_out_of_range(value, reason):
    """1e400 reads as an infinite float: "out of range; allowed: a number >= 0" contradicted it."""
    frame = pd.DataFrame({"age": 50, "sex": "female", "symptom_duration_days": pd.Series([value], dtype=object)})
    parsed = parse_cases(frame, raise_on_error=False)
    assert parsed.errors["reason"].tolist() == [f"{reason}; allowed: a number >= 0"]


def test_code_rows_are_the_fields_codes_stacked():
    from pipeline.core.parsing import code_rows

    codes = {"a": np.array([1, -1, 0], dtype=np.int8), "b": np.array([0, 1, -1], dtype=np.int8),
             "c": np.array([1.5, np.nan, 2.0])}
    for names in (["a"], ["b", "a"], ["a", "c"]):
        got, expected = code_rows(codes, names), np.stack([codes[k] for k in names])
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert code_rows({k: v[:0] for k, v in codes.items()}, ["a", "b"]).shape == (2, 0)


def test_many_records_with_keys_of_their_own_are_read_column_by_column(monkeypatch):
    """From a thousand records the DataFrame constructor reads them in bulk; its frame holds a value
    per record and key, so records that each bring keys of their own (a served request of 1,000
    records of 50 new keys each: 16 s and 1 GB) are read column by column instead, where a key that
    is no case field is only named. Both ways give the same cases."""
    import pipeline.core.parsing as parsing

    records = [{"age": 30 + r % 50, "sex": "male" if r % 2 else "female", "fever": "no", f"note_{r}": "x"}
               for r in range(parsing._MANY_RECORDS)]
    built = []
    monkeypatch.setattr(parsing, "_records_frame", lambda recs: built.append(1) or pd.DataFrame(recs))
    monkeypatch.setattr(parsing, "_FRAME_MAX_COLUMNS", len(records) + 3)
    in_bulk = parse_records(records)
    assert built == [1]
    monkeypatch.setattr(parsing, "_FRAME_MAX_COLUMNS", 256)
    by_column = parse_records(records)
    assert built == [1]  # not built again
    assert sorted(by_column.ignored_columns) == sorted(in_bulk.ignored_columns) == sorted(f"note_{r}" for r in
                                                                                          range(len(records)))
    for name in ("age", "sex", "fever"):
        np.testing.assert_array_equal(by_column.codes[name], in_bulk.codes[name])


def test_true_or_false_is_no_case_id_in_a_column_of_any_type():
    """A case id is text or a finite number: true or false names no case (a JSON `true` was taken as
    an id), whether beside texts (a column of objects) or alone (a boolean column)."""
    base = {"age": [30, 31], "sex": ["male", "female"]}
    for ids, refused in (([True, "a"], [0]), (pd.array([True, None], dtype="boolean"), [0]),
                         (np.array([True, False]), [0, 1])):
        parsed = parse_cases(pd.DataFrame({"case_id": ids, **base}), raise_on_error=False)
        assert parsed.errors.loc[parsed.errors["column"] == "case_id", "row"].tolist() == refused, ids
        assert parsed.valid.tolist() == [r not in refused for r in range(2)], ids
