"""Read 3-D volumes (density maps and masks) from MRC files: the package's one volume reader.

:func:`read_volume` reads and checks every volume the pipeline uses: the simulation's density map
(:func:`crisp.simulate.physics.read_map`) and the 3-D mask or map of reprojection labels
(:func:`crisp.labels.reproject.read_volume`, which adds :func:`looks_like_mask`).
Arrays are indexed ``[z, y, x]`` as :mod:`mrcfile` returns them; voxel sizes are in Å.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from crisp.errors import CrispError


def read_volume(path: str | os.PathLike[str], what: str = "volume", permissive: bool = False, *,
                voxel_size: float | None = None,
                voxel_size_option: str | None = None) -> tuple[np.ndarray, float | None]:
    """Read a cubic 3-D MRC volume with some positive density.

    Parameters
    ----------
    path
        The MRC file.
    what
        What the file should hold ("map", "mask", ...), for error messages.
    permissive
        Accept headers that mrcfile finds slightly malformed (some programs write such masks).
    voxel_size
        Voxel size in Å to use instead of the header's (None: the header's).
    voxel_size_option
        When given, a voxel size is required: with neither ``voxel_size`` nor one in the header, the
        error tells the user to give it with this option (e.g. ``--map-pixel-size``).

    Returns
    -------
    (data, voxel_size)
        float32 array [z, y, x] and the voxel size in Å: ``voxel_size`` when given, else the header's
        (None when the header says 0 and no voxel size is required).

    Raises
    ------
    CrispError
        Missing or unreadable file, not a cube, non-finite values, no positive value, a given voxel
        size that is not a positive number, or no voxel size where one is required.
    """
    path = Path(path)
    if voxel_size is not None and not (math.isfinite(voxel_size) and voxel_size > 0):
        raise CrispError(f"the {what}'s voxel size must be a positive number of Å (got {voxel_size})", path)
    if not path.is_file():
        raise CrispError(f"{what} file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=permissive) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32).copy()
                header_voxel = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError, AttributeError, TypeError) as err:
        raise CrispError(f"not a readable MRC {what} ({err})", path) from None
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise CrispError(f"expected a cubic 3-D {what}, got an array of shape {data.shape}", path)
    if not np.all(np.isfinite(data)):
        raise CrispError(f"{what} contains NaN or infinite values", path)
    if not data.max() > 0:
        raise CrispError(f"{what} has no positive density", path)
    if voxel_size is None:
        voxel_size = header_voxel if math.isfinite(header_voxel) and header_voxel > 0 else None
    if voxel_size is None and voxel_size_option is not None:
        raise CrispError(f"the header gives no voxel size; pass the {what}'s pixel size "
                         f"({voxel_size_option})", path)
    return data, (None if voxel_size is None else float(voxel_size))


def looks_like_mask(data: np.ndarray) -> bool:
    """True for a (soft-edged) mask: values in [0, 1] with a maximum of 1, and at least 30 % of the
    voxels above 0.01 at 1 (a density map has few voxels near its maximum)."""
    if data.min() < -1e-3 or abs(float(data.max()) - 1.0) > 1e-3:
        return False
    inside = data > 0.01
    return bool(np.count_nonzero(data > 0.99) >= 0.3 * np.count_nonzero(inside))
