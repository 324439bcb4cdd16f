"""Scoring cases: :func:`predict` for notebooks, and the one scoring path every entry point shares.

``kneepain score`` (streaming files, through :func:`score_columns`), ``kneepain serve`` (through
:func:`score_parsed`) and the MLflow pyfunc (through :func:`predict`) share one path, so every way
of scoring gives the same numbers for the same row. Many cases at once (a large
DataFrame or file given to :func:`predict`) are scored a chunk at a time on two threads, as
``kneepain score`` scores a file's chunks.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.cases import as_parsed
from pipeline.core.errors import CaseValidationError
from pipeline.core.parsing import ParsedCases, ignored_columns_message
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, ID_COLUMN, top_k_problem, whole_number
from pipeline.core.textcols import TEXT_DTYPE, join_ranked, lookup
from pipeline.decision.layer import DECISION_COLUMN_DOCS, DECISION_COLUMN_TYPES, DECISION_COLUMNS, decision_columns
from pipeline.serve import CHUNK_ROWS
from pipeline.serve.loading import LoadedModel, clear_model_cache, get_model
from pipeline.serve.shaping import columns_problem

__all__ = ["OUTPUT_TYPES", "available_cores", "chosen_columns_problem", "clear_model_cache", "get_model",
           "output_columns", "output_dictionary_markdown", "predict", "score_columns", "score_parsed",
           "scorer_threads"]

# Arrow type names of the output columns, for file outputs (``top3``: the default ``top_k``)
OUTPUT_TYPES: dict[str, str] = {"prediction": "string", "confidence": "double", **{f"p_{c}": "double" for c in CONDITIONS},
                                "top3": "string", **DECISION_COLUMN_TYPES}


def output_columns(top_k: int = 3, id_column: str = ID_COLUMN, *, decision: bool = True) -> list[str]:
    """The scoring output's columns, in order (the decision columns when the model has a decision layer)."""
    base = [id_column, "prediction", "confidence", *[f"p_{c}" for c in CONDITIONS], f"top{top_k}"]
    return base + (DECISION_COLUMNS if decision else [])


def output_dictionary_markdown() -> str:
    """The README's table of scoring outputs, generated from the code that makes them."""
    docs = {
        "file": "the input file (`kneepain score` with several inputs, and always with `--engine dask`); first",
        "row": "the 0-based row number of the case in its input (header excluded); always in `kneepain score` output, "
               "before `case_id`; in `predict()` only when the cases have no `case_id`",
        "case_id": "the input's `case_id`, unchanged (when the input has one; with several inputs, null in the rows of "
                   "one that has none: empty in CSV, missing in Parquet); read from a file (`kneepain score`, "
                   "`predict(path)`), as text, a Parquet file's numbers included",
        "prediction": "the most likely condition",
        "confidence": "its probability",
        **{f"p_{c}": f"calibrated probability of {CONDITION_LABELS[c]}" for c in CONDITIONS},
        "top3": "the three most likely conditions, `|`-separated (`top<k>` for `predict(..., top_k=k)`)",
        **DECISION_COLUMN_DOCS,
    }
    return "\n".join(["| column | meaning |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in docs.items()]])


def score_parsed(model: LoadedModel, parsed: ParsedCases, *, top_k: int = 3,
                 ids: pd.Series | np.ndarray | None = None, codes: bool = False,
                 columns: Collection[str] | None = None, n_jobs: int | None = None) -> pd.DataFrame:
    """Score valid parsed cases; the output columns of :func:`output_columns`.

    ``ids`` (case ids or row numbers) become the first column: ``case_id`` when the input had
    one, else ``row``. The products are made without BLAS (:mod:`pipeline.core.blas`), so the numbers
    do not depend on the process, its threads or the machine's load. With ``codes`` the long
    decision texts are short codes (:meth:`pipeline.decision.layer.Decision.text_codes`). With
    ``columns`` (checked first with :func:`chosen_columns_problem`), only those, in that order, and
    only what they need computed. ``n_jobs``: threads for more than one chunk of cases, as
    :func:`predict`'s.
    """
    _check_n_jobs(n_jobs)
    out = _frame(_columns_in_chunks(model, parsed, top_k=top_k, ids=ids, codes=codes, columns=columns,
                                    n_jobs=n_jobs))
    return out if columns is None else out[list(columns)]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def scorer_threads() -> int:
    """Scoring threads of one process: two where two cores are available, else one.

    Much of a chunk's scoring runs in numpy and Arrow with the GIL released, so a second thread
    scores another chunk meanwhile (a 1M-row CSV: 10.9 s on one thread, 7.9 s on two, on 2 cores);
    a third gained nothing there, and each adds a chunk's working memory (about 40 MB at 16k rows).
    """
    return min(2, available_cores())


def _check_n_jobs(n_jobs: Any) -> None:
    """Raise ValueError unless ``n_jobs`` is a number of scoring threads (:func:`predict`'s): None,
    -1 or a positive whole number."""
    count = whole_number(n_jobs)
    if n_jobs is not None and (count is None or (count < 1 and count != -1)):
        raise ValueError(f"n_jobs == {n_jobs!r}, must be None (two threads where two cores are free), -1 (one "
                         "per core) or a positive integer.")


def _threads(n_jobs: int | None) -> int:
    """Threads for :func:`_columns_in_chunks`: :func:`scorer_threads` for None, one per available
    core for -1, else ``n_jobs`` (checked by :func:`_check_n_jobs`)."""
    if n_jobs is None:
        return scorer_threads()
    return available_cores() if n_jobs == -1 else int(n_jobs)


def _columns_in_chunks(model: LoadedModel, parsed: ParsedCases, *, ids: pd.Series | np.ndarray | None,
                       n_jobs: int | None = None, **options: Any) -> dict[str, Any]:
    """:func:`score_columns`, a chunk of :data:`pipeline.serve.CHUNK_ROWS` cases at a time on
    :func:`_threads` threads (by default :func:`scorer_threads`) where the cases fill more than one
    chunk and more than one thread is asked for (200k cases: 1.1 s against 1.7 s in one call, on 2
    cores). Each row's numbers and texts depend on its own row alone, so they are the same bits
    however the cases are cut; the text columns' chunks are kept as they are, not copied into one."""
    n, threads = len(parsed), _threads(n_jobs)
    if n <= CHUNK_ROWS or threads < 2:
        return score_columns(model, parsed, ids=ids, **options)
    if ids is None:  # as score_columns takes them, cut with the cases below
        ids = _default_ids(parsed)

    def chunk(start: int) -> dict[str, Any]:
        rows = slice(start, start + CHUNK_ROWS)
        return score_columns(model, parsed[rows], ids=ids.iloc[rows] if isinstance(ids, pd.Series) else ids[rows],
                             **options)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kneepain-predict")
    try:
        try:
            futures = [pool.submit(chunk, start) for start in range(0, n, CHUNK_ROWS)]
        except RuntimeError:  # Python is shutting down (an atexit handler, a thread outliving the main
            # one) and starts no more threads: all the cases in one call, as for a few
            return score_columns(model, parsed, ids=ids, **options)
        parts = [future.result() for future in futures]
    finally:  # a Ctrl-C waits for the chunks being scored, not for the rest
        pool.shutdown(wait=True, cancel_futures=True)
    # a column at a time, its chunks let go as it is joined: two copies of one column at most, not of all
    return {name: _joined([part.pop(name) for part in parts]) for name in list(parts[0])}


def _joined(arrays: list[Any]) -> Any:
    """One column of the chunks' results: pandas' arrays (text, nullable ids) by their own
    concatenation, which keeps Arrow's chunks; numpy's copied into one."""
    if isinstance(arrays[0], pd.api.extensions.ExtensionArray):
        return type(arrays[0])._concat_same_type(arrays)
    return np.concatenate(arrays)


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    """A frame of this call's own column arrays, not copied again (pandas copies on write), with
    its column labels made once per set of columns (for one case, pandas' text index of the labels
    took a quarter of the frame's time)."""
    frame = pd.DataFrame(dict(enumerate(columns.values())), copy=False)
    frame.columns = _labels(tuple(columns)).copy()  # its own (a caller may name it), sharing the labels
    return frame


@functools.lru_cache(maxsize=64)
def _labels(names: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(names))


def score_columns(model: LoadedModel, parsed: ParsedCases, *, top_k: int = 3,
                  ids: pd.Series | np.ndarray | None = None, codes: bool = False,
                  columns: Collection[str] | None = None) -> dict[str, Any]:
    """:func:`score_parsed`'s columns as arrays, by name, in order (``kneepain score`` makes Arrow
    tables of them without a DataFrame between). With ``columns``, the ``top<k>`` and decision
    columns not among them are left out and not computed (the others are always there)."""
    proba = model.predict_proba(parsed)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
    id_name = ID_COLUMN if parsed.ids is not None else "row"
    if ids is None:
        ids = _default_ids(parsed)
    # ids of pandas' default text type keep their Arrow data (no round trip through Python strings),
    # and nullable integers their type (numpy makes floats of them beside a missing one: 2**53 + 1
    # became 2**53); others as numpy holds them, pandas inferring their type again. Each is a copy:
    # the result frame takes its columns as they are, and a write into it must not reach the caller's ids
    if isinstance(ids, pd.Series) and isinstance(ids.dtype, pd.api.extensions.ExtensionDtype) and (
            ids.dtype == TEXT_DTYPE or pd.api.types.is_integer_dtype(ids.dtype)):
        id_values = ids.array.copy()
    else:
        id_values = np.array(ids)
    out = {id_name: id_values, "prediction": lookup(CONDITIONS, order[:, 0]), "confidence": proba.max(axis=1)}
    for k, c in enumerate(CONDITIONS):
        out[f"p_{c}"] = proba[:, k]
    if columns is None or f"top{top_k}" in columns:
        out[f"top{top_k}"] = join_ranked(CONDITIONS, order)
    if model.decision is not None and model.kb is not None:
        out.update(decision_columns(model.decision, model.kb, parsed, proba, codes=codes, columns=columns,
                                    rescore=model.predict_proba))
    return out


def _default_ids(parsed: ParsedCases) -> pd.Series | np.ndarray:
    """The first output column's values when the caller gives none: the cases' ids, else their row numbers."""
    return parsed.ids if parsed.ids is not None else np.arange(len(parsed))


def chosen_columns_problem(model: LoadedModel, parsed: ParsedCases, columns: Any, top_k: int = 3) -> str | None:
    """What is wrong with ``columns`` as a choice among the output columns of scoring ``parsed``
    with ``model`` (None if nothing): not a list of names, none, a name that is not an output
    column (the choices named) or one given twice. ``case_id`` is a choice when the cases have ids,
    ``row`` when they have none."""
    if isinstance(columns, str):  # one name: a list of its letters would be chosen
        return f"give a list of output columns, such as [{columns!r}], not one name."
    if not isinstance(columns, (list, tuple, pd.Index, np.ndarray, pd.Series)) or getattr(columns, "ndim", 1) != 1 \
            or not all(isinstance(c, str) for c in columns):
        return f"give a list of output column names, not {type(columns).__name__} {str(columns)[:80]!r}."
    choices = output_columns(top_k, ID_COLUMN if parsed.ids is not None else "row", decision=model.decision is not None)
    return columns_problem(choices, list(columns))


def predict(cases: Any, model: str | Path | LoadedModel | None = None, top_k: int = 3,
            columns: Sequence[str] | None = None, n_jobs: int | None = None) -> pd.DataFrame:
    """Score cases with the persisted model.

    Parameters
    ----------
    cases : dict, list of dicts, DataFrame, or path to a CSV or Parquet file
        Cases in the schema (docs/case-schema.md). Missing optional fields are unknown; unknown
        columns are ignored with one warning; the caller's DataFrame is not modified.
    model : path to a models folder, MLflow model URI, or LoadedModel, optional
        Default: the project's ``models/`` (run ``make run`` first). Loaded once and cached.
    top_k : int, default=3
        How many conditions the ``top<k>`` column lists.
    columns : list of str (or a tuple, Index, array or Series of them), optional
        Only these output columns, in this order (as ``kneepain score --columns``). Only what they
        need is computed: ``["triage"]`` does not search for ``ask_next``'s questions. Default: all.
    n_jobs : int, optional
        Threads that score more than 16,384 cases, a chunk of 16,384 each at a time: None (the
        default) for two where two cores are free, else one; 1 for the calling thread alone (as in
        a pool of your own); -1 for one per available core. The result is the same to the last
        bit whatever the number.

    Returns
    -------
    DataFrame, one row per case in input order (with a DataFrame's own index, so
    ``df.join(out, suffixes=("", "_scored"))`` lines up; the suffix for the ``case_id`` both may have)
        ``case_id`` (or ``row``), ``prediction``, ``confidence``, ``p_<condition>`` per condition
        (summing to 1), ``top3``, then the decision layer: ``triage``, ``triage_reason``,
        ``safety_net``, ``ask_next``, ``advice``, ``differential``, ``differential_size``,
        ``screen``, ``atypical``, ``atypical_reason`` (only ``columns``, when given).
        A DataFrame or file with the schema's columns and no rows gives no rows (a filter that kept
        none); an empty list, or a frame with no columns either, is no cases (below).
        This is information, not a diagnosis: seek professional advice.

    Raises
    ------
    CaseValidationError
        Naming every bad row, column, value and what is allowed (or that no cases were given: an
        empty list, or a frame without columns);
        the message shows the first 20, ``.errors`` holds them all.
    ModelIntegrityError
        For a model that fails its checks (a file changed since training, an unsigned folder where
        a key is trusted, a folder that is not a model's); FileNotFoundError for a ``model`` path
        that does not exist.
    BatchInputError
        For a file that cannot be read as cases (not CSV or Parquet, another separator, a folder).
    TypeError
        For anything else, parsed cases included (they may hold rows that failed validation).
    ValueError
        For a ``top_k`` out of range, ``columns`` that are not output columns (the choices named),
        or an ``n_jobs`` that is not a number of threads.
    """
    if (problem := top_k_problem(top_k)) is not None:
        raise ValueError(f"top_k == {top_k!r}, {problem}.")
    _check_n_jobs(n_jobs)  # before the cases are read
    if isinstance(cases, ParsedCases):  # they may hold rows that failed validation
        raise TypeError("predict() takes a dict, a list of dicts, a DataFrame or a path to a CSV or Parquet file, "
                        "not ParsedCases (which may hold rows that failed validation); score the valid rows with "
                        "score_parsed(model, parsed[parsed.valid]).")
    try:
        parsed = as_parsed(cases)
    except CaseValidationError as err:  # rows numbered by position: name the caller's own labels too
        if isinstance(cases, pd.DataFrame) and not cases.index.equals(pd.RangeIndex(len(cases))):
            raise err.with_index(cases.index) from None
        raise
    if parsed.ignored_columns:
        warnings.warn(ignored_columns_message(parsed.ignored_columns), UserWarning, stacklevel=2)
    loaded = get_model(model)
    if columns is not None and (problem := chosen_columns_problem(loaded, parsed, columns, top_k)) is not None:
        raise ValueError(f"columns: {problem}")
    out = score_parsed(loaded, parsed, top_k=top_k, columns=None if columns is None else list(columns), n_jobs=n_jobs)
    if isinstance(cases, pd.DataFrame):  # row for row: the caller's index joins the results back
        out.index = cases.index
    return out
