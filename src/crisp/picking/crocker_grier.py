"""``crocker-grier``: feature finding with :func:`trackpy.locate` (Crocker & Grier, 1996).

The map is block-averaged so that the particle diameter spans about ``target_diameter_px``
pixels (for speed), lightly smoothed (Gaussian, ``sigma_fraction * diameter``), and handed to
:func:`trackpy.locate` with a mask diameter of ``mask_factor`` times the particle diameter,
rounded to an odd integer (a mask a little larger than the particle lets the centroid refinement
see the whole blob; on crowded maps a mask of the particle's size is less pulled by neighbours),
a minimum integrated mass and a minimum separation. trackpy finds local maxima at least
``separation`` apart and refines them to their centroid; of two features closer than
``separation`` it drops the one with the lower mass (``trackpy.find.where_close``).
Features within about a radius of the border are not reported. trackpy's compiled engine is
used when numba is installed (``engine="auto"``), its pure-Python one otherwise.

Score = trackpy's integrated mass divided by the area of a disc of the particle's diameter,
clipped to [0, 1] (1 = a fully-confident particle-sized blob). ``min_mass`` is given
on the same scale (fraction of a fully-confident disc).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import ndimage

from crisp.picking.base import Finder, FinderParams, checked_and_downscaled, make_picks, unbin


class CrockerGrierParams(FinderParams):
    """Parameters of the ``crocker-grier`` finder (fractions are of the particle diameter)."""

    min_mass: float = Field(0.2, ge=0, le=1, description="minimum mean probability over the disc")
    separation_fraction: float = Field(0.55, gt=0, le=2, description="minimum centre distance / diameter")
    sigma_fraction: float = Field(0.2, ge=0, le=1, description="pre-smoothing sigma / diameter (0 = none)")
    mask_factor: float = Field(1.15, ge=0.5, le=3, description="trackpy mask diameter / particle diameter")
    target_diameter_px: float = Field(11.0, ge=5, description="diameter after internal downscaling")


def _odd(value: float) -> int:
    n = max(3, int(round(value)))
    return n if n % 2 == 1 else n + 1


def find_crocker_grier(prob_map: np.ndarray, diameter_px: float, params: CrockerGrierParams | None = None
                       ) -> pd.DataFrame:
    """Find particle centres with trackpy (see the module docstring).

    Parameters
    ----------
    prob_map
        2-D foreground probability, ``[row, column]``, values in [0, 1].
    diameter_px
        Particle diameter in pixels of ``prob_map``.
    params
        :class:`CrockerGrierParams`; defaults when None.

    Returns
    -------
    DataFrame
        ``rlnCoordinateX`` (column), ``rlnCoordinateY`` (row) in pixels of ``prob_map``,
        ``rlnAutopickFigureOfMerit`` in [0, 1]; sorted by decreasing score.
    """
    import trackpy

    trackpy.quiet()
    logging.getLogger("trackpy").setLevel(logging.WARNING)
    params = params or CrockerGrierParams()
    small, factor, d_small = checked_and_downscaled(prob_map, diameter_px, params.target_diameter_px)
    diameter = _odd(params.mask_factor * d_small)
    if min(small.shape, default=0) <= diameter:
        return make_picks([], [], [])
    if params.sigma_fraction > 0:
        small = ndimage.gaussian_filter(small, sigma=params.sigma_fraction * d_small, truncate=3.0)
    area = np.pi * d_small**2 / 4
    separation = max(1.0, params.separation_fraction * d_small)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Image is completely black" on empty maps
        found = trackpy.locate(small, diameter, minmass=params.min_mass * area, separation=separation,
                               preprocess=False, characterize=False, engine="auto")
    if len(found) == 0:
        return make_picks([], [], [])
    score = np.clip(found["mass"].to_numpy() / area, 0.0, 1.0)
    return make_picks(unbin(found["x"].to_numpy(), factor), unbin(found["y"].to_numpy(), factor), score)


FINDER = Finder(
    name="crocker-grier",
    function=find_crocker_grier,
    params_model=CrockerGrierParams,
    # min_mass acts like the score threshold (chosen afterwards by F1), so it is not tuned
    grid={"separation_fraction": [0.4, 0.55, 0.7], "mask_factor": [1.0, 1.15, 1.3]},
    summary="trackpy.locate (Crocker-Grier): local maxima, centroid refinement, mass filter",
)
