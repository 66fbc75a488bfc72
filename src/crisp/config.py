"""Configuration helpers: pydantic models of stage settings, saved to and loaded from YAML.

Each stage defines its own settings model (a subclass of :class:`StageConfig`) in its own module;
this module gives them one way to be validated, loaded and saved, so that a bad value is reported
as a :class:`~crisp.errors.CrispError` naming the file and the field.
"""

from __future__ import annotations

import math
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
        where = where.encode("unicode_escape").decode("ascii")  # a key may hold line breaks: one line
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
    except UnicodeDecodeError as err:
        raise CrispError(f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         "save it as UTF-8", path) from None
    except yaml.YAMLError as err:
        raise CrispError(f"not valid YAML: {_yaml_problem(err)}", path) from None
    except (ValueError, OverflowError) as err:  # PyYAML's constructors: a date such as 2001-02-30, an
        # integer of more than 4300 digits
        raise CrispError(f"not valid YAML: a value cannot be read ({' '.join(str(err).split())[:120]})",
                         path) from None
    except RecursionError:
        raise CrispError("not valid YAML: nested too deeply", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CrispError("expected a YAML mapping at the top level", path)
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and where (line and column counted from 1)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def check_number(value: float | None, option: str, *, gt: float | None = None, ge: float | None = None,
                 lt: float | None = None, le: float | None = None) -> float | None:
    """A finite number within the given bounds, else a :class:`CrispError` naming ``option``.

    ``None`` (an option not given) passes through. NaN and infinities are always refused: command-line
    parsers accept ``nan`` and ``inf`` as floats, NaN compares False with every bound and ``inf``
    passes every lower one.
    """
    if value is None:
        return None
    bounds = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
              f"< {lt:g}" if lt is not None else "", f"<= {le:g}" if le is not None else ""]
    wanted = f"a finite number {' and '.join(b for b in bounds if b)}".rstrip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CrispError(f"{option} must be {wanted} (got {value!r})") from None
    ok = (math.isfinite(number) and (gt is None or number > gt) and (ge is None or number >= ge)
          and (lt is None or number < lt) and (le is None or number <= le))
    if not ok:
        raise CrispError(f"{option} must be {wanted} (got {value!r})")
    return value


def check_output(path: str | os.PathLike[str] | None, kind: str = "folder") -> None:
    """Check early that ``path`` can become an output ``kind`` (``"folder"`` or ``"file"``).

    The path must not be the other kind, and its nearest existing folder must accept new files (a
    temporary file is created there and removed). ``None`` passes. Raises :class:`CrispError`
    naming the path, before any work is done.
    """
    if path is None:
        return
    import tempfile

    path = Path(path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise CrispError("is a file; expected a folder to write into", path)
    if kind == "file" and path.is_dir():
        raise CrispError("is a folder; expected a file name to write", path)
    existing = path if kind == "folder" and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CrispError(f"cannot be created: {existing} is a file, not a folder", path)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise CrispError(f"cannot be written: {existing} does not accept new files ({err.strerror})",
                         path) from None


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
