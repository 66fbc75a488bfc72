"""cryoSPARC ``.cs`` particles (read only): a numpy structured array saved with ``np.save``.

Fields used: ``location/center_x_frac``, ``location/center_y_frac``, ``location/micrograph_shape``
([ny, nx]) and, when present, ``location/micrograph_path``, ``pick_stats/ncc_score``, ``ctf/df1_A``,
``ctf/df2_A``, ``ctf/df_angle_rad``. x = frac_x * nx, y = frac_y * ny.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crisp.errors import CrispError
from crisp.io.coordinates._common import NAME, CoordinateFormat, X, Y, finish

_REQUIRED = ("location/center_x_frac", "location/center_y_frac", "location/micrograph_shape")
_OPTIONAL = {"pick_stats/ncc_score": "rlnAutopickFigureOfMerit", "ctf/df1_A": "rlnDefocusU",
             "ctf/df2_A": "rlnDefocusV"}


def _load(path: Path) -> np.ndarray:
    try:
        cs = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, MemoryError) as err:
        raise CrispError(f"not a readable cryoSPARC .cs file ({err}); CRISP reads .cs files in numpy "
                         "format, as cryoSPARC exports them", path) from None
    if not isinstance(cs, np.ndarray):  # e.g. an .npz archive
        if hasattr(cs, "close"):
            cs.close()
        raise CrispError("not a cryoSPARC .cs file (a numpy archive, not one structured array)", path)
    names = cs.dtype.names or ()
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise CrispError(f"cryoSPARC .cs file lacks field(s) {', '.join(missing)} (export particles with "
                         "their location)", path)
    if cs.ndim != 1:
        raise CrispError(f"cryoSPARC .cs file holds a {cs.ndim}-dimensional array; expected one row per "
                         "particle", path)
    return cs


def _field(cs: np.ndarray, name: str, path: Path, columns: int | None = None) -> np.ndarray:
    try:
        values = np.asarray(cs[name], dtype=float)
        if columns is not None:
            values = values.reshape(len(cs), columns)
        else:
            values = values.reshape(len(cs))
    except (ValueError, TypeError) as err:
        raise CrispError(f"cryoSPARC .cs field '{name}' is not {columns or 1} number(s) per particle ({err})",
                         path) from None
    return values


def _shape(cs: np.ndarray, path: Path) -> np.ndarray:
    shape = _field(cs, "location/micrograph_shape", path, columns=2)
    if not (np.isfinite(shape).all() and (shape > 0).all() and (shape == np.round(shape)).all()):
        raise CrispError("cryoSPARC .cs field 'location/micrograph_shape' holds a size that is not a "
                         "positive whole number", path)
    return shape


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read particle locations (and scores, defocus) from a cryoSPARC ``.cs`` file."""
    cs = _load(path)
    names = cs.dtype.names
    shape = _shape(cs, path)
    with np.errstate(all="ignore"):
        df = pd.DataFrame({X: _field(cs, "location/center_x_frac", path) * shape[:, 1],
                           Y: _field(cs, "location/center_y_frac", path) * shape[:, 0]})
    if "location/micrograph_path" in names:
        paths = np.asarray(cs["location/micrograph_path"]).reshape(-1)
        if len(paths) != len(cs):
            raise CrispError("cryoSPARC .cs field 'location/micrograph_path' is not one path per particle",
                             path)
        df.insert(0, NAME, [p.decode("utf-8", errors="replace") if isinstance(p, bytes) else str(p)
                            for p in paths])
    for source, column in _OPTIONAL.items():
        if source in names:
            df[column] = _field(cs, source, path)
    if "ctf/df_angle_rad" in names:
        df["rlnDefocusAngle"] = np.degrees(_field(cs, "ctf/df_angle_rad", path))
    return finish(df, path, micrograph_name)


def heights(path: Path) -> np.ndarray:
    """Each particle's micrograph height in pixels, as the file records it."""
    return _shape(_load(path), path)[:, 0].astype(int)


def _sniff(head: bytes) -> bool:
    return head.startswith(b"\x93NUMPY") and b"location/center_x_frac" in head


FORMAT = CoordinateFormat(
    name="cs", suffixes=(".cs",), read=read, write=None, sniff=_sniff, aliases=("cryosparc",),
    precision_px=1e-3, heights=heights,
    description="cryoSPARC .cs (read only): location/center_x_frac, center_y_frac, micrograph_shape")
