"""Names of the bundled models and where their folders are (:mod:`crisp.models.bundled` documents
them): resolution of a RUN argument, and the guard that keeps the folders read-only.

Kept apart from :mod:`crisp.models.bundled` (which exports runs, and so reads them through
:mod:`crisp.run`) so that :mod:`crisp.run` can resolve names without an import cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from crisp.errors import CrispError

__all__ = ["BUNDLED", "BUNDLED_DIR", "ENV_VAR", "bundled_models", "bundled_name", "check_writable",
           "picker_path", "register_bundled", "resolve_run", "sha256"]

#: the package folder of the bundled models
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
#: name -> package folder of every model shipped with CRISP (the folder may not be installed yet)
BUNDLED: dict[str, Path] = {"general": BUNDLED_DIR / "general"}
#: environment variable adding bundled names: ``name=path`` entries separated by ``os.pathsep``
ENV_VAR = "CRISP_BUNDLED_MODELS"

_registered: dict[str, Path] = {}


def bundled_models() -> dict[str, Path]:
    """Every bundled name and its folder: :data:`BUNDLED`, then :data:`ENV_VAR`, then
    :func:`register_bundled` (a later entry of a name wins)."""
    models = dict(BUNDLED)
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            name, sep, path = entry.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise CrispError(f"{ENV_VAR} entries must read name=path (got {entry!r})")
            models[name.strip()] = Path(path.strip())
    models.update(_registered)
    return models


@contextlib.contextmanager
def register_bundled(name: str, path: str | os.PathLike[str]) -> Iterator[Path]:
    """Make ``name`` a bundled model held in folder ``path`` inside the ``with`` block."""
    old = _registered.get(name)
    _registered[name] = Path(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            _registered.pop(name, None)
        else:
            _registered[name] = old


def resolve_run(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a run given as a path or a bundled name.

    A path that exists is that path (a folder called ``general`` in the working folder wins over
    the bundled model). Otherwise a bundled name (:func:`bundled_models`) gives its package folder;
    anything else is returned as a path (opening it then says it is not found).

    Raises
    ------
    CrispError
        A bundled name whose folder is not installed (the model was not exported into the package).
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    models = bundled_models()
    name = str(name_or_path)
    if name in models:
        folder = models[name]
        if not (folder / "config.yaml").is_file():
            raise CrispError(f"the bundled model '{name}' is not installed in this CRISP (no {folder}); "
                             "give a training run folder instead", name)
        return folder
    return path


def picker_path(value: str | os.PathLike[str]) -> Path:
    """A ``--picker`` value as a file: a picker.yaml itself, or the ``picker.yaml`` of a run folder or
    bundled model name (``--picker general``); anything else as given (reading it says what is wrong)."""
    path = Path(value)
    if path.is_file():
        return path
    folder = resolve_run(value) if str(value) in bundled_models() or path.is_dir() else path
    if (folder / "picker.yaml").is_file():
        return folder / "picker.yaml"
    return path


def bundled_name(path: str | os.PathLike[str]) -> str | None:
    """The bundled name whose folder ``path`` is or lies in, else None."""
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for name, folder in bundled_models().items():
        folder = folder.resolve()
        if target == folder or folder in target.parents:
            return name
    return None


def check_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Refuse to write ``path`` when it is (in) a bundled model's folder, which is read-only input."""
    name = bundled_name(path)
    if name is not None:
        raise CrispError(f"is in the bundled model '{name}', which is read-only: write the {what} to a "
                         "folder of your own (e.g. -o)", path)


def sha256(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 hex digest of a file (None when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
