"""MLflow's scoring request formats as cases: ``dataframe_records``, ``dataframe_split``,
``instances`` and ``inputs``, read the same way by ``kneepain serve`` (:mod:`pipeline.serve.http`)
and by the MLflow model behind ``mlflow models serve`` (:func:`pipeline.serve.mlflow_model.served_cases`),
and their answers' case ids made JSON (:func:`null_missing_ids`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import BatchInputError
from pipeline.core.parsing import column_name
from pipeline.core.schema import ID_COLUMN

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "null_missing_ids", "request_records", "shown"]

FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")


def shown(value: object) -> str:
    """A key or value from the request as a message quotes it, shortened (:func:`column_name`): an
    answer never echoes a long part of the request."""
    return column_name(repr(value))


def request_records(key: str, data: Any, *, named: str | None = None,
                    count: Callable[[int], None] | None = None) -> list[dict]:
    """The cases of format ``key`` as records (as :func:`pipeline.predict` reads a list of dicts: an
    integer case id beside a missing one stays an integer); messages call the format ``named``
    (default ``key``). ``count`` is called with the number of cases once the shape is known to be
    one of the formats', before any record is built (it may raise, to refuse too many)."""
    named = named or key
    count = count or (lambda n: None)
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                or not isinstance(data.get("data"), list) or not all(isinstance(r, list) for r in data["data"]):
            raise BatchInputError("dataframe_split must be an object with columns (a list of names) and data "
                                  "(a list of rows, each a list of values).")
        unknown = [k for k in data if k not in ("columns", "data", "index")]
        if unknown:  # a misspelt part would be dropped unseen (``index``, pandas' row labels, is read and not used)
            raise BatchInputError(f"dataframe_split: {', '.join(shown(k) for k in unknown[:5])} not understood; "
                                  "allowed: columns, data and index.")
        columns = [str(c) for c in data["columns"]]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise BatchInputError(f"dataframe_split: the columns {', '.join(shown(c) for c in repeated[:5])} are given "
                                  "more than once; give each once.")
        if any(len(r) != len(columns) for r in data["data"]):
            raise BatchInputError(f"dataframe_split: every row of data must have {len(columns)} values, one per column.")
        index = data.get("index")
        if index is not None and (not isinstance(index, list) or len(index) != len(data["data"])):
            # labels that do not pair with the rows say the rows are not the ones meant
            raise BatchInputError(f"dataframe_split: index must be a list of {len(data['data'])} row labels, one per "
                                  "row of data, or left out.")
        count(len(data["data"]))
        return [dict(zip(columns, row)) for row in data["data"]]
    if isinstance(data, dict) and key in ("instances", "inputs") and any(isinstance(v, list) for v in data.values()):
        # MLflow's columns, field -> values (no field takes a list, so one list means columns)
        plain = [k for k, v in data.items() if not isinstance(v, list)]
        if plain:
            raise BatchInputError(f"{named}: as columns (field: list of values), every value must be a list, one value "
                                  f"per case; not {', '.join(shown(k) for k in plain[:5])}.")
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise BatchInputError(f"{named}: as columns (field: list of values), every list must hold one value per "
                                  f"case; got lists of {', '.join(map(str, sorted(lengths)))} values.")
        count(lengths.pop())
        return [dict(zip(data, values)) for values in zip(*data.values())]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BatchInputError(f"{named} must be a list of cases, each an object of field: value.")
    count(len(data))
    return data


def null_missing_ids(out: "pd.DataFrame") -> "pd.DataFrame":
    """``out`` (scored cases) with each missing case id as None, JSON's null: a float column's NaN
    would be written as a bare ``NaN``, which JSON parsers refuse."""
    if ID_COLUMN in out and out[ID_COLUMN].isna().any():
        out[ID_COLUMN] = out[ID_COLUMN].astype(object).where(out[ID_COLUMN].notna(), None)
    return out
