"""The MLflow model: serving through MLflow calls the same scoring code as :func:`pipeline.predict`.

The model is logged *from code* (MLflow 3 "models from code": ``mlflow_entry.py`` builds the
pyfunc, nothing of it is pickled) together with this package (``code_paths``) and its pinned
requirements, so it loads where kneepain is not installed, and ``mlflow models serve
--env-manager virtualenv`` or ``build-docker`` can rebuild its environment. It carries the
project's model folder as an artifact and loads it through :func:`pipeline.serve.loading.load_model`,
so the folder's checks apply in serving too.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from pipeline.core.parsing import codes_to_text_frame, parse_cases
from pipeline.core.schema import FIELDS, ID_COLUMN
from pipeline.model.mlflow_hints import quiet_schema_hints
from pipeline.serve.loading import ARTIFACT_KEY, load_model
from pipeline.serve.requests import null_missing_ids, request_records

__all__ = ["ARTIFACT_KEY", "KneepainPyfunc", "input_schema", "log_pyfunc", "model_signature",
           "requirements", "served_cases"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_ENTRY = Path(__file__).resolve().parent / "mlflow_entry.py"


class KneepainPyfunc(PythonModel):
    """Scores a DataFrame of cases; returns the same DataFrame as :func:`pipeline.predict`."""

    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from pipeline.serve.predict import predict

        params = params or {}
        # the signature's default for columns is [] (MLflow's list parameters need one): all of them
        return null_missing_ids(predict(served_cases(model_input), model=self.model, top_k=params.get("top_k", 3),
                                        columns=params.get("columns") or None))


def served_cases(model_input: Any) -> Any:
    """The cases as :func:`pipeline.predict` takes them. MLflow's scoring server hands a request's
    ``inputs`` or ``instances`` over as numpy arrays: a list of cases, or one case, of one-value
    arrays, or columns (one array per field). Their values are taken back as the JSON gave them and
    read as ``kneepain serve`` reads the request (:func:`pipeline.serve.requests.request_records`:
    columns of different lengths, or a value beside columns, are errors that say so)."""
    if isinstance(model_input, dict) and any(isinstance(v, (np.ndarray, list)) for v in model_input.values()):
        # columns, as arrays from the server or lists from a caller of the pyfunc (no field takes a list)
        return request_records("inputs", {k: _as_sent(v) for k, v in model_input.items()}, named=_ARRAYS)
    if isinstance(model_input, list) and any(isinstance(v, np.ndarray) for case in model_input
                                             if isinstance(case, dict) for v in case.values()):
        return request_records("inputs", [{k: _as_sent(v) for k, v in case.items()}
                                           if isinstance(case, dict) else case for case in model_input], named=_ARRAYS)
    return model_input


def _as_sent(value: Any) -> Any:
    """A value from MLflow's parser as the JSON held it: an array as its list, and each of its
    items that is itself an array as its value (MLflow makes ``instances`` whose field is null in
    one case and set in another a column of one-value arrays, ``[array(None), array(25)]``)."""
    if not isinstance(value, np.ndarray):
        return value
    items = value.tolist()
    if isinstance(items, list) and any(isinstance(v, np.ndarray) for v in items):
        return [_as_sent(v) for v in items]
    return items


_ARRAYS = "inputs or instances"  # the request's key, as messages name it (MLflow does not pass it on)


def input_schema() -> Schema:
    """The case schema as an MLflow input schema: every field by name, only ``age`` and ``sex``
    required, types ``any``. Documentation only (:func:`model_signature` does not enforce it)."""
    specs: list[Any] = [ColSpec(AnyType(), ID_COLUMN, required=False)]
    specs += [ColSpec(AnyType(), f.name, required=f.required) for f in FIELDS]
    return Schema(specs)


def model_signature(example_output: pd.DataFrame) -> ModelSignature:
    """Outputs inferred from a real scoring output, ``top_k`` and ``columns`` (a list; empty: all)
    as parameters, as :func:`pipeline.predict` takes them; no input schema.

    MLflow enforces an input schema before the model sees the cases: it drops a column whose
    name differs from a field only in case (``Fever``) and refuses ``Age``, where the case schema
    matches names ignoring case and names every ignored column in one warning (an answer dropped
    unseen can lower the triage). Its casting also refuses harmless values (an integer BMI, a
    boolean answer). So the cases reach :func:`pipeline.predict` as sent, and the case schema
    checks them once, with errors that name the row, column, value and what is allowed; the
    input example logged with the model shows the fields."""
    return ModelSignature(inputs=None, outputs=infer_signature(example_output).inputs,
                          params=ParamSchema([ParamSpec("top_k", DataType.long, 3),
                                              ParamSpec("columns", DataType.string, [], shape=(-1,))]))


def requirements() -> list[str]:
    """This package's runtime dependencies, pinned to the installed versions."""
    pins = []
    for req in metadata.requires("kneepain") or []:
        if "extra ==" in req:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)  # type: ignore[union-attr]
        pins.append(f"{name}=={metadata.version(name)}")
    return pins


def log_pyfunc(models_dir: Path, example: pd.DataFrame, registered_model_name: str) -> Any:
    """Log the model folder as a self-contained MLflow model in the active run; its ``ModelInfo``."""
    from pipeline.serve.predict import predict

    parsed = parse_cases(example.head(5))
    example_in = codes_to_text_frame(parsed.codes)
    if parsed.ids is not None:
        example_in.insert(0, ID_COLUMN, parsed.ids.astype(str).to_numpy())
    example_out = predict(example_in, model=str(models_dir))
    with quiet_schema_hints():
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(_ENTRY), artifacts={ARTIFACT_KEY: str(models_dir)},
            code_paths=[str(_PACKAGE_DIR)], signature=model_signature(example_out), input_example=example_in,
            pip_requirements=requirements(), registered_model_name=registered_model_name)
