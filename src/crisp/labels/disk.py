"""Filled-disc masks at particle centres.

Pixel ``(row, col)`` belongs to the disc of centre ``(x, y)`` and radius ``R`` (pixels) when
``(col - x)**2 + (row - y)**2 <= R**2``; ``x`` is the column, ``y`` the row, as in RELION STAR files.
"""

from __future__ import annotations

import numpy as np

from crisp.errors import CrispError

_CHUNK = 256  # centres processed at once; bounds the memory of the vectorised test


def disk_mask(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius_px: float) -> np.ndarray:
    """Mask of filled discs of radius ``radius_px`` centred at ``(x, y)``.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the micrograph.
    x, y
        Centres in pixels: ``x`` = column, ``y`` = row (sub-pixel values allowed). Discs that
        extend past the border are cut at the border; centres far outside paint nothing.
    radius_px
        Disc radius in pixels (> 0).

    Returns
    -------
    numpy.ndarray
        uint8 array of ``shape``, 1 inside any disc (overlaps combined with OR), 0 elsewhere.
    """
    if not radius_px > 0:
        raise CrispError(f"disc radius must be positive (got {radius_px} px)")
    ny, nx = int(shape[0]), int(shape[1])
    mask = np.zeros((ny, nx), dtype=np.uint8)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise CrispError(f"x and y differ in length ({x.size} and {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    half = int(np.ceil(radius_px)) + 1
    offsets = np.arange(-half, half + 1)
    r2 = float(radius_px) ** 2
    for start in range(0, x.size, _CHUNK):
        xs, ys = x[start:start + _CHUNK], y[start:start + _CHUNK]
        cols = np.floor(xs).astype(np.int64)[:, None, None] + offsets[None, None, :]
        rows = np.floor(ys).astype(np.int64)[:, None, None] + offsets[None, :, None]
        inside = (cols - xs[:, None, None]) ** 2 + (rows - ys[:, None, None]) ** 2 <= r2
        inside &= (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
        rr, cc = np.broadcast_arrays(rows, cols)
        mask[rr[inside], cc[inside]] = 1
    return mask
