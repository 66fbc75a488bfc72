"""Read 3-D volumes (density maps and masks) from MRC files.

Arrays are indexed ``[z, y, x]`` as :mod:`mrcfile` returns them; voxel sizes are in Å.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from crisp.errors import CrispError


def read_volume(path: str | os.PathLike[str], what: str = "volume",
                permissive: bool = False) -> tuple[np.ndarray, float | None]:
    """Read a cubic 3-D MRC volume with some positive density.

    Parameters
    ----------
    path
        The MRC file.
    what
        What the file should hold ("map", "mask", ...), for error messages.
    permissive
        Accept headers that mrcfile finds slightly malformed (some programs write such masks).

    Returns
    -------
    (data, voxel_size)
        float32 array [z, y, x] and the header's voxel size in Å (None when the header says 0).

    Raises
    ------
    CrispError
        Missing or unreadable file, not a cube, non-finite values, no positive value.
    """
    path = Path(path)
    if not path.is_file():
        raise CrispError(f"{what} file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=permissive) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32).copy()
                voxel = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError, AttributeError, TypeError) as err:
        raise CrispError(f"not a readable MRC {what} ({err})", path) from None
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise CrispError(f"expected a cubic 3-D {what}, got an array of shape {data.shape}", path)
    if not np.all(np.isfinite(data)):
        raise CrispError(f"{what} contains NaN or infinite values", path)
    if not data.max() > 0:
        raise CrispError(f"{what} has no positive density", path)
    return data, (voxel if voxel > 0 else None)
