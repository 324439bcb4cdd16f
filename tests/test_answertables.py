"""Sums of answer-table rows: the one-hot product they stand for, and a row's bits alone or in a batch."""

import numpy as np
import pytest

from pipeline.core.answertables import answer_tables
from pipeline.core.schema import FIELDS


def _one_hot_product(tables, codes):
    """The definition: one-hot answers (unknown: all zeros) times the stacked answer rows."""
    columns, rows = [], []
    for name, table in tables:
        for code in range(len(table) - 1):  # the last row is the unknown answer's
            columns.append(codes[name] == code)
            rows.append(table[code])
    return np.column_stack(columns).astype(float) @ np.array(rows)


def _random(rng, n_fields=9, n=2000):
    sizes = rng.integers(2, 7, n_fields)  # 1 to 5 answers, plus the unknown
    tables = [(f"f{i}", np.vstack([rng.standard_normal((s - 1, 4)), np.zeros((1, 4))])) for i, s in enumerate(sizes)]
    codes = {name: rng.integers(-1, len(t) - 1, n).astype(np.int8) for name, t in tables}
    return tables, codes


@pytest.mark.parametrize("max_rows", [1, 6, 40, 243, 10_000])
def test_the_sums_are_the_one_hot_product_however_fields_are_grouped(max_rows):
    rng = np.random.default_rng(max_rows)
    tables, codes = _random(rng)
    sums = answer_tables(tables, max_rows=max_rows)
    assert sum(len(g.names) for g in sums.groups) == len(tables)
    got = sums.sum(codes)
    np.testing.assert_allclose(got, _one_hot_product(tables, codes), rtol=1e-12, atol=1e-12)
    # every combination of a group's answers has its own row: the unknown answer adds nothing
    unknown = {name: np.full(3, -1, np.int8) for name, _ in tables}
    assert np.array_equal(sums.sum(unknown), np.zeros((3, 4)))


def test_one_group_adds_its_fields_rows_in_field_order_exactly():
    """A joint table's row is its fields' rows added left to right, so the bits are those of the
    plain sum in field order (the order a reader of the tables would expect)."""
    rng = np.random.default_rng(11)
    tables, codes = _random(rng, n_fields=5, n=3000)
    tables = [(name, t * 10.0 ** rng.integers(-3, 4, t.shape)) for name, t in tables]  # sums that round
    sums = answer_tables(tables, max_rows=10_000)
    assert len(sums.groups) == 1
    expected = tables[0][1][codes[tables[0][0]]].copy()
    for name, t in tables[1:]:
        expected += t[codes[name]]
    assert np.array_equal(sums.sum(codes), expected)


def test_a_row_gets_the_same_bits_alone_as_in_any_batch():
    rng = np.random.default_rng(7)
    tables, codes = _random(rng, n_fields=14, n=3000)
    sums = answer_tables(tables)
    full = sums.sum(codes)
    for n in (1, 2, 17, 1000):
        rows = rng.integers(0, 3000, n)
        assert np.array_equal(sums.sum({k: v[rows] for k, v in codes.items()}), full[rows])


def test_tables_of_different_widths_are_refused():
    with pytest.raises(ValueError, match="columns"):
        answer_tables([("a", np.zeros((3, 4))), ("b", np.zeros((3, 5)))])


@pytest.mark.parametrize("knots", [(), (1.0, 7.0, 30.0, 180.0)])
def test_the_first_layer_from_the_codes_is_the_product_of_the_features(kb, knots):
    """The model's first layer read from the codes is the featurised cases times its weights, and
    one case gets the same bits alone as in a batch, with the duration's hinges and without them
    (a model saved before they existed)."""
    from pipeline.core.parsing import parse_cases
    from pipeline.data.generate import generate_cases
    from pipeline.decision.conformal import blank_at_random
    from pipeline.model.codefeatures import code_linear, feature_names, featurize_codes

    rng = np.random.default_rng(3)
    codes = blank_at_random(parse_cases(generate_cases(kb, 2000, seed=4)), 0.3, seed=2).codes
    numbers = [f.name for f in FIELDS if f.kind in ("integer", "float")]
    center = {name: float(rng.normal(30, 5)) for name in numbers}
    scale = {name: float(rng.uniform(2, 20)) for name in numbers}
    center["symptom_duration_days"], scale["symptom_duration_days"] = 2.9, 3.1  # log days: the knots bend inside
    weights = rng.standard_normal((9, len(feature_names(knots))))
    linear = code_linear(weights, center, scale, knots)
    got = linear(codes)
    features = featurize_codes(codes, center, scale, duration_knots=knots)
    np.testing.assert_allclose(got, features @ weights.T, rtol=1e-10, atol=1e-10)
    assert np.array_equal(linear({k: v[11:12] for k, v in codes.items()})[0], got[11])
    with pytest.raises(ValueError, match="columns"):
        code_linear(weights[:, :-1], center, scale, knots)
    # a hinge is 0 below its knot and where the duration is unknown, and grows with the log above it
    days = codes["symptom_duration_days"]
    for k in knots:
        hinge = features[:, feature_names(knots).index(f"symptom_duration_days>{k:g}d")]
        assert (hinge[~(days > k)] == 0).all() and (hinge[days > k] > 0).all()
        np.testing.assert_allclose(hinge[days > k], np.log(days[days > k] / k) / 3.1, rtol=1e-12)
