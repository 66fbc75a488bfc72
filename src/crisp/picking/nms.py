"""``grid-nms``: Gaussian-weighted score, best candidate per grid cell, hill climbing, box NMS.

1. Each pixel is scored by the probability map smoothed with a Gaussian of standard deviation
   ``sigma_fraction * diameter`` (normalised, so a pixel inside a large fully-confident blob
   scores 1). For speed the map is first block-averaged so that the diameter spans about
   ``target_diameter_px`` pixels; coordinates are mapped back to the original grid.
2. The image is cut into square cells of ``cell_fraction * diameter``; the best-scoring pixel
   of each cell is a candidate (smaller cells = more candidates).
3. Every candidate climbs to its local maximum (steepest ascent in the 3 x 3 neighbourhood,
   vectorised over candidates); duplicates that reach the same maximum merge. The position is
   refined to sub-pixel precision by a parabola through the neighbours along each axis.
4. Candidates scoring below ``min_score`` are dropped. Greedy non-maximum suppression: in order
   of decreasing score, a candidate is dropped when its square box (side = diameter) overlaps a
   kept box with IoU above ``iou_threshold`` (pairs found with a KD-tree).

Score = the smoothed probability at the final position (a Gaussian-weighted mean probability
around the centre, in [0, 1]).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import ndimage
from scipy.spatial import cKDTree

from crisp.picking.base import Finder, FinderParams, checked_and_downscaled, make_picks, unbin


class GridNmsParams(FinderParams):
    """Parameters of the ``grid-nms`` finder (fractions are of the particle diameter)."""

    cell_fraction: float = Field(0.5, gt=0, le=2, description="grid cell side / diameter")
    iou_threshold: float = Field(0.3, ge=0, le=1, description="box IoU above which the lower is dropped")
    sigma_fraction: float = Field(0.2, gt=0, le=1, description="Gaussian sigma / diameter")
    min_score: float = Field(0.2, ge=0, le=1, description="candidates scoring below are dropped")
    target_diameter_px: float = Field(12.0, ge=4, description="diameter after internal downscaling")


def box_iou_pairs(x: np.ndarray, y: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i, j)``, ``i < j``, of overlapping axis-aligned squares and their IoU.

    Squares of side ``side`` centred at ``(x, y)`` overlap when both |dx| and |dy| < side.
    """
    if len(x) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    pts = np.column_stack([x, y])
    pairs = cKDTree(pts).query_pairs(r=side * (1 - 1e-9), p=np.inf, output_type="ndarray")
    if len(pairs) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    i, j = pairs[:, 0], pairs[:, 1]
    inter = np.clip(side - np.abs(x[i] - x[j]), 0, None) * np.clip(side - np.abs(y[i] - y[j]), 0, None)
    iou = inter / (2 * side * side - inter)
    return i, j, iou


def greedy_nms(x: np.ndarray, y: np.ndarray, score: np.ndarray, side: float, iou_threshold: float
               ) -> np.ndarray:
    """Indices kept by greedy box NMS (highest score first), in order of decreasing score."""
    order = np.argsort(-score, kind="stable")
    i, j, iou = box_iou_pairs(x, y, side)
    over = iou > iou_threshold
    i, j = i[over], j[over]
    if len(i) == 0:
        return order
    # neighbour lists in CSR form (both directions)
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    srt = np.argsort(a, kind="stable")
    a, b = a[srt], b[srt]
    start = np.searchsorted(a, np.arange(len(x) + 1))
    suppressed = np.zeros(len(x), dtype=bool)
    keep = []
    for k in order:
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed[b[start[k]:start[k + 1]]] = True
    return np.asarray(keep, dtype=np.int64)


def _hill_climb(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray, max_steps: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Move each (row, col) to its best 3 x 3 neighbour until none improves (vectorised)."""
    padded = np.pad(score_map, 1, mode="constant", constant_values=-np.inf)
    dr = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1])
    dc = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1])
    active = np.arange(len(rows))
    for _ in range(max_steps):
        if len(active) == 0:
            break
        r, c = rows[active], cols[active]
        neigh = padded[r[:, None] + 1 + dr, c[:, None] + 1 + dc]
        best = np.argmax(neigh, axis=1)
        moved = best != 4
        moved &= neigh[np.arange(len(active)), best] > neigh[:, 4]
        idx = active[moved]
        rows[idx] += dr[best[moved]]
        cols[idx] += dc[best[moved]]
        active = idx
    return rows, cols


def _subpixel(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parabolic sub-pixel offset of a local maximum along each axis (clipped to +-0.5)."""
    padded = np.pad(score_map, 1, mode="edge")
    r, c = rows + 1, cols + 1
    centre = padded[r, c]

    def offset(minus: np.ndarray, plus: np.ndarray) -> np.ndarray:
        denom = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(denom < 0, 0.5 * (minus - plus) / denom, 0.0)
        return np.clip(off, -0.5, 0.5)

    dy = offset(padded[r - 1, c], padded[r + 1, c])
    dx = offset(padded[r, c - 1], padded[r, c + 1])
    return rows + dy, cols + dx


def find_grid_nms(prob_map: np.ndarray, diameter_px: float, params: GridNmsParams | None = None
                  ) -> pd.DataFrame:
    """Find particle centres with the ``grid-nms`` method (see the module docstring).

    Parameters
    ----------
    prob_map
        2-D foreground probability, ``[row, column]``, values in [0, 1].
    diameter_px
        Particle diameter in pixels of ``prob_map``.
    params
        :class:`GridNmsParams`; defaults when None.

    Returns
    -------
    DataFrame
        ``rlnCoordinateX`` (column), ``rlnCoordinateY`` (row) in pixels of ``prob_map``,
        ``rlnAutopickFigureOfMerit`` in [0, 1]; sorted by decreasing score.
    """
    params = params or GridNmsParams()
    small, factor, d_small = checked_and_downscaled(prob_map, diameter_px, params.target_diameter_px)
    if small.size == 0:
        return make_picks([], [], [])
    score_map = ndimage.gaussian_filter(small, sigma=params.sigma_fraction * d_small, mode="constant",
                                        truncate=3.0)
    cell = max(1, int(round(params.cell_fraction * d_small)))
    ny, nx = score_map.shape
    gy, gx = -(-ny // cell), -(-nx // cell)
    padded = np.full((gy * cell, gx * cell), -np.inf, dtype=np.float32)
    padded[:ny, :nx] = score_map
    blocks = padded.reshape(gy, cell, gx, cell).transpose(0, 2, 1, 3).reshape(gy, gx, cell * cell)
    best = blocks.argmax(axis=2)
    rows = (np.arange(gy)[:, None] * cell + best // cell).ravel()
    cols = (np.arange(gx)[None, :] * cell + best % cell).ravel()
    good = score_map[rows, cols] >= params.min_score
    rows, cols = rows[good], cols[good]
    rows, cols = _hill_climb(score_map, rows, cols, max_steps=int(2 * d_small) + 2)
    flat = np.unique(rows * nx + cols)
    rows, cols = flat // nx, flat % nx
    score = score_map[rows, cols].astype(np.float64)
    yr, xr = _subpixel(score_map, rows, cols)
    x, y = unbin(xr, factor), unbin(yr, factor)
    keep = greedy_nms(x, y, score, side=float(diameter_px), iou_threshold=params.iou_threshold)
    return make_picks(x[keep], y[keep], np.clip(score[keep], 0.0, 1.0))


FINDER = Finder(
    name="grid-nms",
    function=find_grid_nms,
    params_model=GridNmsParams,
    # sigma: window size (small keeps crowded particles apart, large localises noisy blobs better);
    # the cell size hardly matters once candidates climb to their maxima, so it is not tuned
    grid={"sigma_fraction": [0.1, 0.15, 0.2], "iou_threshold": [0.1, 0.3, 0.5]},
    summary="Gaussian-weighted score, best per grid cell, hill climbing, box NMS",
)
