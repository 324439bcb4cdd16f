"""The logistic function, its inverse, the normal CDF and the normal log-density agree with scipy's."""

import subprocess
import sys

import numpy as np
from scipy import special, stats

from pipeline.core.special import expit, logit, ndtr, norm_logpdf


def test_expit_logit_and_ndtr_agree_with_scipy():
    rng = np.random.default_rng(3)
    x, p = rng.normal(size=20_000) * 8, rng.uniform(1e-12, 1 - 1e-12, 20_000)
    np.testing.assert_allclose(expit(x), special.expit(x), rtol=1e-14)
    np.testing.assert_allclose(logit(p), special.logit(p), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ndtr(x), special.ndtr(x), rtol=1e-12, atol=1e-300)
    assert logit(np.array([0.0, 0.5, 1.0])).tolist() == [-np.inf, 0.0, np.inf]
    params = np.column_stack([rng.normal(size=9) * 5, rng.uniform(0.1, 4, 9)])  # (mean, sd) per column
    np.testing.assert_allclose(norm_logpdf(x, params), stats.norm.logpdf(x[:, None], params[:, 0], params[:, 1]),
                               rtol=1e-12, atol=1e-12)


def test_scoring_does_not_import_scipy():
    # scipy's import is a quarter of `kneepain score`'s start-up; the scoring path needs none of it
    code = ("import sys; from pipeline.serve.predict import predict; from pipeline.serve.batch import score_files; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
