"""``contour``: threshold, erosion, contours, size filter, minimal enclosing circle (OpenCV).

1. The map (values in [0, 1]) is block-averaged so that the diameter spans at most
   ``target_diameter_px`` pixels (for speed on large micrographs; coordinates are mapped back),
   then thresholded at ``threshold``.
2. The binary mask is eroded with a 3 x 3 square (removes speckle and one-pixel bridges), then
   with an elliptical kernel of ``erosion_fraction * diameter`` pixels, which separates touching
   particles.
3. External contours of the eroded blobs are found (``cv2.findContours``). A blob is kept when its
   area lies within ``[min_area_fraction, max_area_fraction]`` times the area of an eroded
   particle: a disc of radius ``diameter/2 - 1 - kernel/2``, or the median area of the eroded
   blobs when that is smaller (footprints of elongated particles are far smaller than the disc
   of their largest extent). It is also kept only when its minimal enclosing
   circle (``cv2.minEnclosingCircle``) is not larger than ``max_circle_factor`` times the radius
   of an eroded particle (rejects elongated shapes: filaments, carbon edges, unsplit clusters).
4. Centre = centre of the enclosing circle.

Score = mean probability over the eroded blob's pixels, in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from pydantic import Field

from crisp.picking.base import Finder, FinderParams, checked_and_downscaled, make_picks, unbin


class ContourParams(FinderParams):
    """Parameters of the ``contour`` finder (fractions are of the particle diameter)."""

    threshold: float = Field(0.5, gt=0, lt=1, description="probability threshold of the foreground")
    erosion_fraction: float = Field(0.5, ge=0, lt=1, description="second erosion kernel / diameter")
    min_area_fraction: float = Field(0.25, ge=0, description="smallest blob area / eroded particle area")
    max_area_fraction: float = Field(2.5, gt=0, description="largest blob area / eroded particle area")
    max_circle_factor: float = Field(1.6, gt=0, description="largest enclosing radius / eroded radius")
    target_diameter_px: float = Field(40.0, ge=8, description="diameter after internal downscaling")


def find_contour(prob_map: np.ndarray, diameter_px: float, params: ContourParams | None = None
                 ) -> pd.DataFrame:
    """Find particle centres from contours of the thresholded, eroded map.

    Parameters
    ----------
    prob_map
        2-D foreground probability, ``[row, column]``, values in [0, 1].
    diameter_px
        Particle diameter in pixels of ``prob_map``.
    params
        :class:`ContourParams`; defaults when None.

    Returns
    -------
    DataFrame
        ``rlnCoordinateX`` (column), ``rlnCoordinateY`` (row) in pixels of ``prob_map``,
        ``rlnAutopickFigureOfMerit`` in [0, 1]; sorted by decreasing score.
    """
    params = params or ContourParams()
    prob, factor, diameter_px = checked_and_downscaled(prob_map, diameter_px, params.target_diameter_px)
    binary = (prob > params.threshold).astype(np.uint8)
    binary = cv2.erode(binary, np.ones((3, 3), np.uint8))
    kernel_px = int(round(params.erosion_fraction * diameter_px))
    if kernel_px >= 2:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_px, kernel_px))
        binary = cv2.erode(binary, kernel)
    radius = max(diameter_px / 2 - 1 - kernel_px / 2, 1.0)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n_labels <= 1:
        return make_picks([], [], [])
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n_labels)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    # a particle's footprint is often smaller than the disc of its largest extent (elongated
    # particles, thresholded masks): the typical eroded blob sets the scale when it is smaller
    expected_area = min(np.pi * radius**2, float(np.median(areas[1:])))
    mean_prob = sums / np.maximum(areas, 1)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    xs, ys, scores = [], [], []
    for contour in contours:
        px, py = contour[0, 0]
        label = labels[py, px]
        area = areas[label]
        if not (params.min_area_fraction * expected_area <= area <= params.max_area_fraction * expected_area):
            continue
        (cx, cy), r = cv2.minEnclosingCircle(contour)
        if r > params.max_circle_factor * radius:
            continue
        xs.append(cx)
        ys.append(cy)
        scores.append(min(mean_prob[label], 1.0))
    return make_picks(unbin(np.array(xs), factor), unbin(np.array(ys), factor), np.array(scores))


FINDER = Finder(
    name="contour",
    function=find_contour,
    params_model=ContourParams,
    # strong erosion separates crowded (overlapping) particles
    grid={"threshold": [0.3, 0.5, 0.7], "erosion_fraction": [0.3, 0.55, 0.8]},
    summary="threshold, erosion, contours, area band, minimal enclosing circle (OpenCV)",
)
