"""The registry of centre finders: name -> :class:`~crisp.picking.base.Finder`.

A new finder is one module defining ``FINDER = Finder(...)`` and one entry in :data:`FINDERS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from crisp.config import validate_config
from crisp.errors import CrispError
from crisp.picking import contour, crocker_grier, nms
from crisp.picking.base import Finder, FinderParams

FINDERS: dict[str, Finder] = {f.name: f for f in (nms.FINDER, crocker_grier.FINDER, contour.FINDER)}
DEFAULT_FINDER = "grid-nms"


def available_finders() -> list[str]:
    """Names of the registered finders."""
    return list(FINDERS)


def get_finder(name: str) -> Finder:
    """The finder registered under ``name``; an unknown name is a :class:`CrispError`."""
    try:
        return FINDERS[name]
    except KeyError:
        raise CrispError(f"unknown finder '{name}' (available: {', '.join(FINDERS)})") from None


def make_params(name: str, params: dict[str, Any] | FinderParams | None = None) -> FinderParams:
    """Validate ``params`` against finder ``name``'s model (unknown keys are an error)."""
    finder = get_finder(name)
    if isinstance(params, finder.params_model):
        return params
    if isinstance(params, FinderParams):
        params = params.model_dump()
    return validate_config(finder.params_model, dict(params or {}), source=f"finder '{name}'")


def find_particles(prob_map: np.ndarray, diameter_px: float, finder: str = DEFAULT_FINDER,
                   **params: Any) -> pd.DataFrame:
    """Find particle centres in a probability map with the named finder.

    Parameters
    ----------
    prob_map
        2-D foreground probability, indexed ``[row, column]``, values in [0, 1].
    diameter_px
        Particle diameter in pixels of ``prob_map``.
    finder
        A name from :func:`available_finders` (``grid-nms``, ``crocker-grier``, ``contour``).
    **params
        The finder's parameters (see its params model); others keep their defaults.

    Returns
    -------
    DataFrame
        ``rlnCoordinateX`` (= column), ``rlnCoordinateY`` (= row) in pixels of ``prob_map``, and
        ``rlnAutopickFigureOfMerit`` (score, higher is better), sorted by decreasing score.
    """
    spec = get_finder(finder)
    return spec.function(prob_map, float(diameter_px), make_params(finder, params))
