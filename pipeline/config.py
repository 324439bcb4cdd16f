"""Validated configuration files (configs/*.yaml): parsed once, errors name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ConfigError", "GenerateConfig", "SplitConfig", "load_config", "CONFIG_DIR"]

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
