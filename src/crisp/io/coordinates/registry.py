"""The coordinate formats by name: a new format is one module with a ``FORMAT`` and one entry in ``_ALL``."""

from __future__ import annotations

import os
from pathlib import Path

from crisp.errors import CrispError
from crisp.io.coordinates._common import CoordinateFormat, read_head
from crisp.io.coordinates.box import FORMAT as BOX
from crisp.io.coordinates.cryoppp import FORMAT as CRYOPPP
from crisp.io.coordinates.cs import FORMAT as CRYOSPARC
from crisp.io.coordinates.star import FORMAT as STAR
from crisp.io.coordinates.topaz import FORMAT as TOPAZ

_ALL: tuple[CoordinateFormat, ...] = (STAR, BOX, TOPAZ, CRYOPPP, CRYOSPARC)

FORMATS: dict[str, CoordinateFormat] = {f.name: f for f in _ALL}
"""Every coordinate format by its canonical name."""
FORMAT_SUFFIXES = {f.name: f.suffixes for f in _ALL}
FORMAT_ALIASES = {alias: f.name for f in _ALL for alias in f.aliases}
WRITE_FORMATS = tuple(f.name for f in _ALL if f.write is not None)
COORDINATE_SUFFIXES = tuple(s for f in _ALL for s in f.suffixes)


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The format whose content the file's first bytes look like (None when none or several do)."""
    head = read_head(Path(path))
    found = [f.name for f in _ALL if head and f.sniff(head)]
    return found[0] if len(found) == 1 else None


def resolve_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The canonical format name (``star``, ``box``, ``txt``, ``csv``, ``cs``) of ``path``.

    ``fmt`` (a name of :data:`FORMATS` or an alias: relion, eman, topaz, tsv, cryoppp, cryosparc)
    wins over the extension.

    Raises
    ------
    CrispError
        Unknown ``fmt``, or an extension of no format (the message suggests the format the file's
        content looks like, if any).
    """
    if fmt is not None:
        key = str(fmt).lower().lstrip(".")
        key = FORMAT_ALIASES.get(key, key)
        if key not in FORMATS:
            raise CrispError(f"unknown coordinate format '{fmt}' (expected one of "
                             f"{', '.join(FORMATS)} or {', '.join(FORMAT_ALIASES)})", path)
        return key
    suffix = Path(path).suffix.lower()
    for f in _ALL:
        if suffix in f.suffixes:
            return f.name
    guess = sniff_format(path) if Path(path).is_file() else None
    hint = f"; its content looks like '{guess}': give that format (--from {guess})" if guess else ""
    raise CrispError(f"unknown coordinate format '{suffix}' (expected a file ending in "
                     f"{', '.join(COORDINATE_SUFFIXES)}, or give the format{hint})", path)


def get_format(path: str | os.PathLike[str], fmt: str | None = None) -> CoordinateFormat:
    """The :class:`CoordinateFormat` of ``path`` (see :func:`resolve_format`)."""
    return FORMATS[resolve_format(path, fmt)]
