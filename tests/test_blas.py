"""dot_exact: the products behind every score, the same bits whatever the layout, batch or threads."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from pipeline.core.blas import dot_exact, dot_exact_columns, dot_exact_t


@pytest.mark.parametrize("width", [4, 9, 38, 93, 120])
def test_a_row_gets_the_same_bits_alone_in_any_batch_and_any_layout(width):
    rng = np.random.default_rng(width)
    weights = rng.standard_normal((9, width))
    cases = np.asfortranarray(rng.standard_normal((3000, width)))  # the featuriser's layout
    full = dot_exact(cases, weights)
    np.testing.assert_allclose(full, cases @ weights.T, rtol=1e-12, atol=1e-12)
    for n in (1, 2, 3, 17, 255, 1000):
        rows = rng.integers(0, len(cases), n)
        np.testing.assert_array_equal(dot_exact(cases[rows], weights), full[rows])
        np.testing.assert_array_equal(dot_exact(np.ascontiguousarray(cases[rows]), weights), full[rows])


@pytest.mark.parametrize("outputs", [1, 4, 54])
def test_every_batch_size_gives_each_row_the_same_bits(outputs):
    """Nine probabilities times a few dozen likelihood rows (ask_next's shape), at every batch
    size up to 70 and at any offset: each case's products are its own, transposed or not."""
    rng = np.random.default_rng(outputs)
    proba = rng.dirichlet(np.full(9, 0.3), size=500)
    rows = rng.random((outputs, 9)) * rng.choice([1e-3, 1.0, 400.0], size=(outputs, 9))
    full = dot_exact_t(proba, rows)
    assert full.shape == (outputs, 500) and full.flags.c_contiguous
    np.testing.assert_allclose(full, rows @ proba.T, rtol=1e-12)
    for n in range(0, 71):
        start = int(rng.integers(0, 500 - n + 1))
        part = proba[start:start + n]
        assert np.array_equal(dot_exact_t(part, rows), full[:, start:start + n])
        assert np.array_equal(dot_exact(part, rows), full[:, start:start + n].T)
        # given by its columns, as ask_next builds its variants' probabilities
        assert np.array_equal(dot_exact_columns(np.ascontiguousarray(part.T), rows), full[:, start:start + n])


def test_blas_thread_count_does_not_matter():
    """Each row's products are the same bits with one BLAS thread or two, in the batch or alone
    (with BLAS's own product, ``cases @ weights.T``, a row alone differs from its batch's)."""
    rng = np.random.default_rng(0)
    cases, weights = rng.standard_normal((20_000, 93)), rng.standard_normal((9, 93))
    with threadpool_limits(limits=1, user_api="blas"):
        one = dot_exact(cases, weights)
    with threadpool_limits(limits=2, user_api="blas"):
        two = dot_exact(cases, weights)
        alone = np.vstack([dot_exact(cases[[i]], weights) for i in range(0, len(cases), 997)])
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(alone, one[::997])


def _fitted(kb, name: str, calibrated: bool):
    """A small fitted candidate pipeline, temperature-calibrated on its own split when asked."""
    import yaml
    from conftest import SMALL_TRAIN_CONFIG
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from pipeline.core.config import TrainConfig
    from pipeline.data.datasets import labels
    from pipeline.data.generate import generate_cases
    from pipeline.model.candidates import make_candidate

    config = TrainConfig.model_validate(yaml.safe_load(SMALL_TRAIN_CONFIG))
    train, valid = generate_cases(kb, 3000, seed=1), generate_cases(kb, 1500, seed=3)
    model = make_candidate(name, config).fit(train, labels(train))
    if calibrated:
        model = CalibratedClassifierCV(FrozenEstimator(model), method="temperature").fit(valid, labels(valid))
    return model


def _cases(kb, n: int):
    from pipeline.core.parsing import parse_cases
    from pipeline.data.generate import generate_cases

    return parse_cases(generate_cases(kb, n, seed=2))


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_mlp_scored_from_its_arrays_matches_scikit_learn_and_ignores_threads(kb, calibrated):
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.serve.loading import LoadedModel

    mlp = _fitted(kb, "mlp", calibrated)
    model = LoadedModel(mlp)
    assert model.scorer is not None  # scored from its arrays, not by scikit-learn
    parsed = _cases(kb, 3000)
    reference = model.predict_proba(parsed)
    np.testing.assert_allclose(reference, mlp.predict_proba(parsed), rtol=1e-9, atol=1e-13)
    with threadpool_limits(limits=2, user_api="blas"):
        with ThreadPoolExecutor(1) as pool:
            there = pool.submit(model.predict_proba, parsed).result()
    np.testing.assert_array_equal(there, reference)
    np.testing.assert_array_equal(model.predict_proba(parsed[[17]])[0], reference[17])


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_logistic_model_scored_from_its_arrays_matches_scikit_learn(kb, calibrated):
    from pipeline.model.arrays import array_scorer

    model = _fitted(kb, "logistic", calibrated)
    scorer = array_scorer(model)
    assert scorer is not None and (scorer.beta is not None) == calibrated
    parsed = _cases(kb, 2000)
    np.testing.assert_allclose(scorer.predict_proba(parsed), model.predict_proba(parsed), rtol=1e-10, atol=1e-14)
