"""Matrix products whose numbers do not depend on the process, its threads or the machine's load.

A product split over two BLAS threads can sum in another order than on one thread and differ in
the last bits. Dask's nanny starts workers with ``OPENBLAS_NUM_THREADS=1`` while a plain Python
process runs one BLAS thread per core, and ``threadpoolctl`` lets only one Python thread at a time
change OpenBLAS's limit (a limit asked for in another thread is silently ignored), so a thread
limit alone cannot promise equal numbers. The scoring path therefore makes its products without
BLAS (:func:`dot_exact`): each element is summed in a fixed order, so the same row gives the same
numbers in a notebook, in ``kneepain score``, in a Dask worker and behind MLflow serving. What
still calls BLAS (a model other than the logistic one, training) runs under
:func:`one_blas_thread`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["dot_exact", "dot_exact_columns", "dot_exact_t", "one_blas_thread"]


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # found once: threadpool_limits() rescans the loaded libraries on every call (about 2 ms)
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager:
    """Context manager: every loaded BLAS library runs on one thread inside it (restored after).

    Best effort: if another Python thread holds OpenBLAS's limit, threadpoolctl leaves it as it is.
    """
    return _controller().limit(limits=1, user_api="blas")


def dot_exact(a: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    """``a @ b_rows.T`` without BLAS, shape (len(a), len(b_rows)), C-ordered: :func:`dot_exact_t`
    transposed."""
    return np.ascontiguousarray(dot_exact_t(a, b_rows).T)


def dot_exact_t(a: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    """``b_rows @ a.T`` without BLAS, shape (len(b_rows), len(a)), C-ordered: one row per column
    of the product.

    numpy's ``einsum`` without path optimisation never calls BLAS. Here it runs over ``a``'s
    cases innermost, each output element adding its products in the shared axis' order, so an
    element depends only on its case's row and ``b_rows`` (not on thread counts or the other rows
    of ``a``), and a long inner loop over the cases costs a third of one dot product per element
    (54 answer likelihoods of 4096 cases: 0.37 ms against 1.1 ms). The inner loop is einsum's
    ``sum_of_products_muladd``: one SIMD multiply-add for every case, the last few included, so a
    case's position in the batch does not matter. A single case is scored as a pair (itself
    twice): with one case, einsum would drop the case axis and sum the shared axis innermost, in
    another order. ``tests/test_blas.py`` checks every batch size up to 70.
    """
    return dot_exact_columns(np.asarray(a).T, b_rows)


def dot_exact_columns(columns: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    """:func:`dot_exact_t` of ``a`` given by its columns, ``a.T`` (a caller that builds them so
    saves the transposing copy): the same numbers."""
    columns = np.asarray(columns)
    single = columns.shape[1] == 1
    columns = np.ascontiguousarray(np.concatenate([columns, columns], axis=1) if single else columns)
    out = np.einsum("ji,kj->ki", columns, np.ascontiguousarray(b_rows), optimize=False)
    return np.ascontiguousarray(out[:, :1]) if single else out
