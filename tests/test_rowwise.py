"""Row-wise softmax and log-sum-exp: scipy's numbers, without scipy's cost."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from pipeline.core.rowwise import logsumexp_rows, softmax_rows


@pytest.mark.parametrize("scale", [1.0, 30.0, 700.0])
def test_softmax_rows_gives_scipys_bits_and_logsumexp_rows_its_values(scale):
    z = np.random.default_rng(7).normal(size=(5000, 9)) * scale
    assert np.array_equal(softmax_rows(z), softmax(z, axis=1))
    np.testing.assert_allclose(logsumexp_rows(z), logsumexp(z, axis=1), rtol=1e-13, atol=1e-12)


def test_logsumexp_rows_of_impossible_and_unbounded_rows():
    a = np.array([[-np.inf, -np.inf], [0.0, -np.inf], [np.inf, 0.0]])
    assert logsumexp_rows(a).tolist() == [-np.inf, 0.0, np.inf]
