"""EMAN ``.box`` coordinates: ``x_corner y_corner width height`` per line, in whole pixels.

The centre is ``corner + size / 2``. Corners and sizes are written as integers, as EMAN writes them
and as RELION reads them (``sscanf("%d")``, which would read a fractional corner 1 px off): a
centre is written to the nearest whole corner, so a re-read centre is within 0.5 px of the
written one. A fractional box size is rounded to whole pixels (half up).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.atomic import write_text_atomic
from crisp.errors import CrispError
from crisp.io.coordinates._common import CoordinateFormat, X, Y, finish, positive_size, single_micrograph


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read one micrograph's picks from an EMAN ``.box`` file (extra columns are ignored)."""
    try:
        with warnings.catch_warnings():  # an empty file is a micrograph without picks
            warnings.simplefilter("ignore", UserWarning)
            rows = np.loadtxt(path, ndmin=2, dtype=float, encoding="utf-8")
    except (ValueError, UnicodeDecodeError, IndexError) as err:
        raise CrispError(f"EMAN .box file with values that are not numbers, or ragged lines ({err})",
                         path) from None
    if rows.size == 0:
        rows = np.zeros((0, 4))
    if rows.shape[1] < 4:
        raise CrispError(f"EMAN .box lines need 4 columns (x y width height); found {rows.shape[1]}", path)
    if not np.isfinite(rows[:, :4]).all():
        raise CrispError("EMAN .box file holds NaN or infinite values", path)
    if (rows[:, 2:4] <= 0).any():
        raise CrispError("EMAN .box file holds a box size that is not positive", path)
    df = pd.DataFrame({X: rows[:, 0] + rows[:, 2] / 2, Y: rows[:, 1] + rows[:, 3] / 2})
    df = finish(df, path, micrograph_name)
    if len(rows) and np.all(rows[:, 2:4] == rows[0, 2]):
        df.attrs["box_size_px"] = float(rows[0, 2])
    return df


def write(df: pd.DataFrame, path: Path, *, box_size: float | None = None, **_) -> None:
    """Write one micrograph's picks as integer ``.box`` corners; the box size is rounded to whole pixels."""
    single_micrograph(df, path, ".box")
    size = positive_size(box_size if box_size is not None else df.attrs.get("box_size_px"), ".box", path)
    size = max(1, int(np.floor(size + 0.5)))
    corners = np.floor(df[[X, Y]].to_numpy(dtype=float) - size / 2 + 0.5).astype(np.int64)
    lines = [f"{x}\t{y}\t{size}\t{size}\n" for x, y in corners]
    write_text_atomic(path, "".join(lines))


def _sniff(head: bytes) -> bool:
    lines = head.decode("utf-8", errors="replace").splitlines()[:5]
    try:
        return bool(lines) and all(len([float(v) for v in line.split()]) >= 4 for line in lines if line)
    except ValueError:
        return False


FORMAT = CoordinateFormat(
    name="box", suffixes=(".box",), read=read, write=write, sniff=_sniff, aliases=("eman",),
    precision_px=0.5, one_micrograph=True,
    description="EMAN .box: integer corner x, corner y, width, height per line (one micrograph)")
