"""The MLflow pyfunc: serving through MLflow calls the same scoring code as :func:`pipeline.predict`.

The pyfunc carries the project's own model folder (model + manifest) as an artifact and loads it
through :func:`pipeline.model_io.load_model`, so the hash check applies in serving too.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from .model_io import LoadedModel, load_model
from .schema import FIELDS, ID_COLUMN

__all__ = ["KneepainPyfunc", "input_schema", "model_signature", "load_from_mlflow", "tracking_uri", "ARTIFACT_KEY"]

ARTIFACT_KEY = "model_dir"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class KneepainPyfunc(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame of cases; returns the same DataFrame as :func:`pipeline.predict`."""

    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from .predict import predict

        return predict(model_input, model=self.model)


def input_schema() -> Schema:
    """The MLflow input schema from the case schema: every field by name, only ``age`` and
    ``sex`` required. Types are ``any``: MLflow's casting refuses harmless inputs (an integer
    BMI, a boolean answer), so values are checked once, by the case schema, whose errors name the
    row, column, value and what is allowed."""
    specs = [ColSpec(AnyType(), ID_COLUMN, required=False)]
    specs += [ColSpec(AnyType(), f.name, required=f.required) for f in FIELDS]
    return Schema(specs)


def model_signature(example_output: pd.DataFrame) -> ModelSignature:
    """The schema-derived inputs, and outputs inferred from a real scoring output."""
    return ModelSignature(inputs=input_schema(), outputs=infer_signature(example_output).inputs)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the embedded default: ``mlflow.db`` at the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def load_from_mlflow(uri: str) -> LoadedModel:
    """The project's model behind an MLflow model URI (hash-checked when the pyfunc loads it)."""
    mlflow.set_tracking_uri(tracking_uri())
    pyfunc = mlflow.pyfunc.load_model(uri)
    return pyfunc.unwrap_python_model().model
