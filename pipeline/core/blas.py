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

__all__ = ["dot_exact", "one_blas_thread"]


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
    """``a @ b_rows.T`` without BLAS, shape (len(a), len(b_rows)).

    numpy's ``einsum`` without path optimisation never calls BLAS: every element is a sum over
    the shared axis in a fixed order, so the result depends only on the two operands' values (not
    on thread counts, memory layout, or the other rows of ``a``). On this project's shapes (a few dozen
    columns, nine outputs) it costs about twice a BLAS product.
    """
    # C-contiguous operands always take einsum's contiguous dot-product loop; otherwise the loop
    # it picks (and so the summation order) would depend on the memory layout, which for an
    # F-ordered matrix differs between one row and many
    return np.einsum("ij,kj->ik", np.ascontiguousarray(a), np.ascontiguousarray(b_rows), optimize=False)
