"""What every centre finder shares: its description record, the picks table, input checks.

A *finder* turns a 2-D foreground-probability map (values in [0, 1], indexed ``[row, column]``)
and the particle diameter in pixels into a picks table: a :class:`pandas.DataFrame` with
``rlnCoordinateX`` (column, px), ``rlnCoordinateY`` (row, px) and ``rlnAutopickFigureOfMerit``
(the finder's score, higher = more particle-like), sorted by decreasing score.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crisp.config import StageConfig
from crisp.errors import CrispError
from crisp.preprocess import block_mean

X, Y, SCORE = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"
PICK_COLUMNS = (X, Y, SCORE)


class FinderParams(StageConfig):
    """Base of every finder's parameter model (unknown keys are an error)."""


@dataclass(frozen=True)
class Finder:
    """One centre finder in the registry.

    Attributes
    ----------
    name
        Registry key, used in ``picker.yaml`` and on the command line.
    function
        ``function(prob_map, diameter_px, params) -> DataFrame`` with ``params`` an instance of
        ``params_model``.
    params_model
        Pydantic model of the finder's parameters (defaults are sensible for a calibrated map).
    grid
        Default tuning grid: parameter name -> list of values, over the finder's two main
        parameters (candidate count/size and filtering strength).
    summary
        One line for listings.
    """

    name: str
    function: Callable[[np.ndarray, float, Any], pd.DataFrame]
    params_model: type[FinderParams]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    summary: str = ""


def make_picks(x: np.ndarray, y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Build a picks table sorted by decreasing score (ties keep their input order)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    order = np.argsort(-score, kind="stable")
    return pd.DataFrame({X: x[order], Y: y[order], SCORE: score[order]})


def drop_near_border(picks: pd.DataFrame, shape: tuple[int, int], distance_px: float) -> pd.DataFrame:
    """The picks whose centre lies at least ``distance_px`` from every edge of a map of ``shape``.

    Pixel centres sit at integer coordinates ``0 .. n - 1`` (x = column, y = row), so the distance
    of a centre ``x`` to the two vertical edges is ``min(x, shape[1] - 1 - x)``. Annotators, and
    RELION's extraction, leave out particles whose box would cross an edge; picks there can only
    be false positives. ``distance_px`` <= 0 keeps every pick. Row order is kept, the index reset.
    """
    if distance_px <= 0 or len(picks) == 0:
        return picks.reset_index(drop=True)
    x = picks[X].to_numpy(np.float64)
    y = picks[Y].to_numpy(np.float64)
    rows, cols = shape
    edge = np.minimum(np.minimum(x, cols - 1 - x), np.minimum(y, rows - 1 - y))
    return picks[edge >= distance_px].reset_index(drop=True)


RANGE_TOLERANCE = 1e-3
"""How far a probability map may stray outside [0, 1] (float16 rounding) before it is refused."""


def check_probability_range(prob_map: np.ndarray, path: str | os.PathLike[str] | None = None) -> None:
    """Refuse an array whose values are not probabilities (outside [0, 1] by more than
    :data:`RANGE_TOLERANCE`), e.g. a micrograph given where ``crisp segment``'s map was expected.

    Raises
    ------
    CrispError
        Naming ``path`` (when given) and the range of values found.
    """
    arr = np.asarray(prob_map)
    if arr.size == 0:
        return
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise CrispError(f"does not look like a probability map: values span {lo:.4g}..{hi:.4g} "
                         "(expected 0..1); give the output of crisp segment", path)


def check_map(prob_map: np.ndarray, diameter_px: float) -> np.ndarray:
    """Validate a probability map and the diameter; return the map as float32 clipped to [0, 1].

    Values outside [0, 1] (beyond :data:`RANGE_TOLERANCE`), NaN and infinities are a
    :class:`CrispError`: a micrograph or a 0..255 image is not a probability map.
    """
    arr = np.asarray(prob_map)
    if arr.ndim != 2:
        raise CrispError(f"a probability map must be 2-D (got shape {arr.shape})")
    if not np.isfinite(diameter_px) or diameter_px < 3:
        raise CrispError(f"particle diameter must be at least 3 px (got {diameter_px})")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise CrispError("the probability map contains NaN or infinite values")
    check_probability_range(arr)
    return np.clip(arr, 0.0, 1.0)


def checked_and_downscaled(prob_map: np.ndarray, diameter_px: float, target_diameter_px: float
                           ) -> tuple[np.ndarray, int, float]:
    """Validate a map (:func:`check_map`) and block-average it so the diameter spans about
    ``target_diameter_px`` pixels (never upsampled).

    Returns
    -------
    (small, factor, small_diameter_px)
        The downscaled map, the integer factor (map coordinates back with :func:`unbin`) and the
        particle diameter in pixels of ``small``.
    """
    prob = check_map(prob_map, diameter_px)
    factor = max(1, int(diameter_px // target_diameter_px))
    return block_mean(prob, factor), factor, diameter_px / factor


def unbin(coord: np.ndarray, factor: int) -> np.ndarray:
    """Map a coordinate of a :func:`block_mean` image back to the original pixel grid."""
    return np.asarray(coord, dtype=np.float64) * factor + (factor - 1) / 2.0
