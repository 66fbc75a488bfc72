"""Configuration helpers: pydantic models of stage settings, saved to and loaded from YAML.

Each stage defines its own settings model (a subclass of :class:`StageConfig`) in its own module;
this module gives them one way to be validated, loaded and saved, so that a bad value is reported
as a :class:`~crisp.errors.CrispError` naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from crisp.atomic import write_text_atomic
from crisp.errors import CrispError

T = TypeVar("T", bound="StageConfig")


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def validate_config(
    model: type[T], values: dict[str, Any], source: str | os.PathLike[str] | None = None
) -> T:
    """Build ``model`` from ``values``; raise :class:`CrispError` naming ``source`` on failure."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise CrispError(f"invalid settings: {_format_validation_error(err)}", source) from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, bad syntax or a non-mapping is a :class:`CrispError`."""
    path = Path(path)
    if not path.is_file():
        raise CrispError("file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CrispError(f"not valid YAML ({err})", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CrispError("expected a YAML mapping at the top level", path)
    return data


def load_config(model: type[T], path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> T:
    """Load ``model`` from a YAML file, applying ``overrides`` (top-level keys) on top."""
    values = read_yaml(path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(model, values, path)


def to_plain(value: Any) -> Any:
    """Convert pydantic models, paths, tuples and numpy scalars into YAML-safe plain values."""
    if isinstance(value, BaseModel):
        return to_plain(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def save_yaml(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` (a mapping or a pydantic model) as YAML, atomically."""
    text = yaml.safe_dump(to_plain(data), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)
