"""Validated configuration files (configs/*.yaml): parsed once, errors name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ConfigError", "GenerateConfig", "SplitConfig", "TrainConfig", "load_config", "flatten", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    n: int = Field(ge=0)
    population: Literal["default", "shift"] = "default"


class GenerateConfig(_Strict):
    seed: int = Field(ge=0)
    splits: dict[str, SplitConfig]


class CVConfig(_Strict):
    folds: int = Field(ge=2, le=20)
    max_rows: int = Field(ge=0)
    n_jobs: int = Field(ge=1)


class LogisticConfig(_Strict):
    C: float = Field(gt=0)
    max_iter: int = Field(ge=10)
    tol: float = Field(gt=0)


class HGBConfig(_Strict):
    max_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    max_leaf_nodes: int = Field(ge=2)
    l2_regularization: float = Field(ge=0)
    early_stopping: bool


class MLPConfig(_Strict):
    hidden_layer_sizes: list[int] = Field(min_length=1)
    alpha: float = Field(ge=0)
    learning_rate_init: float = Field(gt=0)
    max_iter: int = Field(ge=1)
    early_stopping: bool


class ModelsConfig(_Strict):
    logistic: LogisticConfig
    hist_gradient_boosting: HGBConfig
    mlp: MLPConfig


class SelectionConfig(_Strict):
    log_loss_tolerance: float = Field(ge=0)


class CalibrationConfig(_Strict):
    method: Literal["temperature", "sigmoid", "isotonic"]
    min_improvement: float = Field(ge=0)


class TrackingConfig(_Strict):
    experiment: str
    registered_model: str
    alias: str


class TrainConfig(_Strict):
    seed: int = Field(ge=0)
    cv: CVConfig
    candidates: list[Literal["logistic", "hist_gradient_boosting", "mlp"]] = Field(min_length=1)
    models: ModelsConfig
    selection: SelectionConfig
    calibration: CalibrationConfig
    tracking: TrackingConfig


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for logging every config value as a parameter)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


T = TypeVar("T", bound=BaseModel)


def load_config(model: type[T], path: str | Path) -> T:
    """Read a YAML file into ``model``; raise :class:`ConfigError` naming each bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}: invalid {model.__name__}:\n  " + "\n  ".join(lines)) from err
