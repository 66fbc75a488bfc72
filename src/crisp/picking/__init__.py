"""Particle picking from foreground-probability maps.

Centre finders (``grid-nms``, ``crocker-grier``, ``contour``) behind one registry
(:func:`find_particles`, :func:`get_finder`, :func:`available_finders`); selection of the finder
and its parameters by box mAP on validation micrographs lives in :mod:`crisp.picking.tune`.
Coordinates: ``rlnCoordinateX`` = column, ``rlnCoordinateY`` = row, pixels of the map.
"""

from crisp.picking.base import PICK_COLUMNS, Finder, FinderParams
from crisp.picking.registry import available_finders, find_particles, get_finder, make_params

__all__ = ["PICK_COLUMNS", "Finder", "FinderParams", "available_finders", "find_particles", "get_finder",
           "make_params"]
