"""Reprojection labels: a 3D mask (or map) projected at each particle's refined pose.

Conventions (RELION, checked against a brute-force projection in ``tests/test_labels.py``):

* Euler angles ``(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)`` in degrees, ZYZ, matrix ``A`` as in
  RELION's ``Euler_angles2matrix``. The projection image is ``P(x, y) = sum_z V(A^T (x, y, z))`` with
  ``x`` = column, ``y`` = row, ``z`` the slowest axis of the MRC volume, centre at ``N // 2``.
  ASPIRE's ``Rotation.from_euler(radians(rot, tilt, psi))`` is ``A^T`` (scipy's intrinsic "ZYZ"),
  and ``Volume.project`` with it gives exactly that image, so RELION angles go to ASPIRE unchanged.
* Origins: ``rlnOriginXAngst/YAngst`` shift the particle image onto the reference projection, so the
  particle centre in the micrograph is ``rlnCoordinateX - rlnOriginXAngst / pixel_size`` (same for
  Y), ``pixel_size`` being the micrograph's (``rlnMicrographPixelSize``). RELION 3.0 files with
  ``rlnOriginX/Y`` (pixels of the particle images) are read too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from crisp.errors import CrispError
from crisp.io.volumes import looks_like_mask
from crisp.io.volumes import read_volume as read_mrc_volume

ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_CHUNK = 32  # projections computed per ASPIRE call


def relion_euler_matrix(rot: float | np.ndarray, tilt: float | np.ndarray,
                        psi: float | np.ndarray) -> np.ndarray:
    """RELION's rotation matrix ``A`` for Euler angles in degrees (ZYZ); shape ``(..., 3, 3)``."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.stack([
        np.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], axis=-1),
        np.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], axis=-1),
        np.stack([sc, ss, cb], axis=-1),
    ], axis=-2)


@dataclass
class Volume3D:
    """A cubic 3D mask or map as read from MRC (indexed ``[z, y, x]``), voxel size in Å."""

    data: np.ndarray
    voxel_size: float | None
    is_mask: bool
    path: Path | None = None


def read_volume(path: str | os.PathLike[str]) -> Volume3D:
    """Read a cubic 3D MRC (:func:`crisp.io.volumes.read_volume`) and decide whether it is a mask or
    a map (:func:`crisp.io.volumes.looks_like_mask`)."""
    path = Path(path)
    data, voxel = read_mrc_volume(path, what="volume", permissive=True)
    return Volume3D(data=data, voxel_size=voxel, is_mask=looks_like_mask(data), path=path)


def _import_aspire():
    """Import ASPIRE lazily, without its side effects (see :mod:`crisp._aspire`)."""
    from crisp._aspire import import_aspire

    import_aspire()
    from aspire.utils import Rotation
    from aspire.volume import Volume

    return Volume, Rotation


def project_volume(volume: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Projections of ``volume`` (``[z, y, x]``, cubic) at RELION Euler angles (degrees, ``(n, 3)``).

    Returns an ``(n, N, N)`` float32 array indexed ``[row (y), column (x)]``, centre at ``N // 2``.
    """
    Volume, Rotation = _import_aspire()
    vol = Volume(np.ascontiguousarray(volume, dtype=np.float32))
    angles = np.deg2rad(np.atleast_2d(np.asarray(angles_deg, dtype=np.float64))).astype(np.float32)
    out = np.empty((angles.shape[0],) + volume.shape[1:], dtype=np.float32)
    for start in range(0, angles.shape[0], _CHUNK):
        rots = Rotation.from_euler(angles[start:start + _CHUNK], dtype=np.float32)
        out[start:start + _CHUNK] = vol.project(rots).asnumpy()
    return out


def read_particles(path: str | os.PathLike[str],
                   micrograph_pixel_size: float | None = None) -> pd.DataFrame:
    """Read a RELION particle STAR of a refinement and return the particle centres and poses.

    Parameters
    ----------
    path
        RELION 3.1+ STAR (``optics`` and ``particles`` blocks) or RELION 3.0 (one block).
    micrograph_pixel_size
        Å per pixel of the micrographs the coordinates refer to; overrides the optics block.
        Needed to convert ``rlnOriginXAngst`` to pixels when the file has no
        ``rlnMicrographPixelSize``.

    Returns
    -------
    pandas.DataFrame
        ``rlnMicrographName``, ``rlnCoordinateX``, ``rlnCoordinateY`` (particle centres in micrograph
        pixels, origins already applied: coordinate - origin / pixel size), ``rlnAngleRot``,
        ``rlnAngleTilt``, ``rlnAnglePsi`` (degrees), and ``rlnImagePixelSize`` (Å, the refinement's
        pixel size, NaN when unknown).
    """
    from crisp.io.coordinates import read_star_tables

    path = Path(path)
    blocks = read_star_tables(path, what="particle STAR file")
    particles = blocks.get("particles")
    if particles is None:
        particles = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)
                          and "rlnCoordinateX" in b.columns), None)
    needed = ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY") + ANGLES
    if particles is None or any(c not in particles.columns for c in needed):
        raise CrispError(f"no particle table with columns {', '.join(needed)}", path)
    particles = particles.copy()
    optics = blocks.get("optics")
    if optics is not None and "rlnOpticsGroup" in particles.columns and "rlnOpticsGroup" in optics.columns:
        extra = [c for c in ("rlnMicrographPixelSize", "rlnImagePixelSize") if c in optics.columns]
        particles = particles.merge(optics[["rlnOpticsGroup"] + extra], on="rlnOpticsGroup", how="left")
    n = len(particles)
    mic_px = np.full(n, np.nan) if micrograph_pixel_size is None else np.full(n, float(micrograph_pixel_size))
    if micrograph_pixel_size is None and "rlnMicrographPixelSize" in particles.columns:
        mic_px = particles["rlnMicrographPixelSize"].to_numpy(float)
    img_px = (particles["rlnImagePixelSize"].to_numpy(float) if "rlnImagePixelSize" in particles.columns
              else np.full(n, np.nan))
    if "rlnOriginXAngst" in particles.columns:
        scale = np.where(np.isfinite(mic_px), mic_px, img_px)
        if n and not np.all(np.isfinite(scale)):
            raise CrispError("origins are in Å but no micrograph pixel size is known: give --pixel-size",
                             path)
        dx = particles["rlnOriginXAngst"].to_numpy(float) / scale
        dy = particles["rlnOriginYAngst"].to_numpy(float) / scale
    elif "rlnOriginX" in particles.columns:  # RELION 3.0: pixels of the particle images
        ratio = np.where(np.isfinite(img_px) & np.isfinite(mic_px), img_px / mic_px, 1.0)
        dx = particles["rlnOriginX"].to_numpy(float) * ratio
        dy = particles["rlnOriginY"].to_numpy(float) * ratio
    else:
        dx = dy = np.zeros(n)
    return pd.DataFrame({
        "rlnMicrographName": particles["rlnMicrographName"].astype(str).to_numpy(),
        "rlnCoordinateX": particles["rlnCoordinateX"].to_numpy(float) - dx,
        "rlnCoordinateY": particles["rlnCoordinateY"].to_numpy(float) - dy,
        **{a: particles[a].to_numpy(float) for a in ANGLES},
        "rlnImagePixelSize": img_px,
    })


def reproject_mask(shape: tuple[int, int], particles: pd.DataFrame, volume: Volume3D,
                   pixel_size: float, *, threshold: float | str | None = None) -> np.ndarray:
    """Paste the thresholded projection of ``volume`` at each particle's pose and centre.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the micrograph.
    particles
        Rows of one micrograph from :func:`read_particles`: centres ``rlnCoordinateX`` (column) and
        ``rlnCoordinateY`` (row) in pixels, Euler angles in degrees.
    volume
        The 3D mask or map; its voxel size (Å) sets the scale of the projections.
    pixel_size
        Å per pixel of the micrograph; the projection is resampled from the voxel size to it.
    threshold
        Foreground where the projection is ``>= threshold * max`` of that projection (a fraction
        in (0, 1)), or ``"li"`` for Li's threshold of each projection. Default: 0.5 for a mask,
        ``"li"`` for a map.

    Returns
    -------
    numpy.ndarray
        uint8 mask of ``shape`` (overlapping particles combined with OR).
    """
    if threshold is None:
        threshold = 0.5 if volume.is_mask else "li"
    if isinstance(threshold, str) and threshold != "li":
        raise CrispError(f"projection threshold must be a fraction in (0, 1) or 'li' (got '{threshold}')")
    if not isinstance(threshold, str) and not 0 < float(threshold) < 1:
        raise CrispError(f"projection threshold must be a fraction in (0, 1) (got {threshold})")
    voxel = volume.voxel_size or pixel_size
    ny, nx = int(shape[0]), int(shape[1])
    mask = np.zeros((ny, nx), dtype=np.uint8)
    if len(particles) == 0:
        return mask
    n_box = volume.data.shape[0]
    projections = project_volume(volume.data, particles[list(ANGLES)].to_numpy(float))
    scale = pixel_size / voxel  # projection pixels per micrograph pixel
    half = int(np.ceil((n_box / 2 + 1) / scale))
    centre = n_box // 2
    for proj, xc, yc in zip(projections, particles["rlnCoordinateX"].to_numpy(float),
                            particles["rlnCoordinateY"].to_numpy(float), strict=True):
        if threshold == "li":
            from skimage.filters import threshold_li

            level = float(threshold_li(proj))
        else:
            level = float(threshold) * float(proj.max())
        r0, r1 = max(int(round(yc)) - half, 0), min(int(round(yc)) + half + 1, ny)
        c0, c1 = max(int(round(xc)) - half, 0), min(int(round(xc)) + half + 1, nx)
        if r1 <= r0 or c1 <= c0:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float64)
        v = (rows - yc) * scale + centre
        u = (cols - xc) * scale + centre
        sampled = ndimage.map_coordinates(proj, [v, u], order=1, cval=0.0)
        mask[r0:r1, c0:c1] |= (sampled >= level).astype(np.uint8)
    return mask
