"""The MLflow model's definition, run by MLflow when it loads the model ("models from code")."""

import mlflow

from pipeline.serve.mlflow_model import KneepainPyfunc

mlflow.models.set_model(KneepainPyfunc())
