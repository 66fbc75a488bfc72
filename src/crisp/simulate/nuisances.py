"""Nuisances of real micrographs for the simulated corpus (:mod:`crisp.simulate.corpus`).

Each function draws its own parameters from the generator it is given and returns the image it adds
(float32, [row (y), column (x)]) and a dictionary of the parameters drawn (plain numbers, recorded
in the corpus table). Where a nuisance goes in the recipe:

- :func:`carbon` and :func:`ice_crystals` (their density part) are projected density: they are
  added to the CTF-free image and pass through the CTF with the particles, so edges show fringes;
- :func:`ice_crystals` (their absorption part), :func:`coloured_noise` and :func:`ice_gradient`
  are added after the CTF.

Aggregates are particle-like density and are made in :mod:`crisp.simulate.corpus` with the
particles' own projections.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage


def _radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """|f| in cycles/pixel on the real-FFT grid of an image of ``shape`` (ny, nx // 2 + 1)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.sqrt(fy * fy + fx * fx)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], alpha: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``1 / f**alpha`` (zero mean, unit variance).

    White noise is filtered by ``f**(-alpha / 2)`` in Fourier space (the zero frequency removed).

    Parameters
    ----------
    rng
        Random generator.
    shape
        (ny, nx) in pixels.
    alpha
        Spectral exponent (0: white; 1: pink).
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = scipy.fft.rfft2(white)
    f = _radial_frequency(shape)
    f[0, 0] = 1.0
    gain = f ** (-alpha / 2.0)
    gain[0, 0] = 0.0
    spectrum *= gain.astype(np.float32)
    out = scipy.fft.irfft2(spectrum, s=shape).astype(np.float32)
    std = float(out.std(dtype=np.float64))
    return out / np.float32(std if std > 0 else 1.0)


def coloured_noise(rng: np.random.Generator, shape: tuple[int, int], std: float,
                   alpha_range: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, dict[str, Any]]:
    """Detector-like noise: ``std * (sqrt(1 - w) * white + sqrt(w) * power_law(alpha))``.

    The weight ``w`` of the 1/f^alpha part is uniform in [0, 1] and ``alpha`` uniform in
    ``alpha_range``; the two parts are independent with unit variance, so the total variance is
    ``std**2``.
    """
    weight = float(rng.uniform(0.0, 1.0))
    alpha = float(rng.uniform(*alpha_range))
    white = rng.standard_normal(shape, dtype=np.float32)
    coloured = power_law_noise(rng, shape, alpha)
    noise = np.float32(math.sqrt(1 - weight)) * white + np.float32(math.sqrt(weight)) * coloured
    noise *= np.float32(std)
    return noise, {"noise_alpha": alpha, "noise_coloured_weight": weight}


def ice_gradient(rng: np.random.Generator, shape: tuple[int, int],
                 noise_std: float) -> tuple[np.ndarray, dict[str, Any]]:
    """A smooth change of ice thickness: a linear ramp plus a low-frequency random field.

    The field is white noise smoothed by a Gaussian of ``sigma`` = 1/8 to 1/3 of the image; the sum
    has a peak-to-peak range of ``amplitude`` (0.3 to 3) noise standard deviations.
    """
    ny, nx = shape
    amplitude = float(rng.uniform(0.3, 3.0))
    angle = float(rng.uniform(0.0, 2 * math.pi))
    ramp_weight = float(rng.uniform(0.0, 1.0))
    sigma = float(rng.uniform(1 / 8, 1 / 3)) * max(ny, nx)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    ramp = (x - nx / 2) * math.cos(angle) + (y - ny / 2) * math.sin(angle)
    ramp /= max(float(np.ptp(ramp)), 1e-6)
    field = scipy.ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    field /= max(float(np.ptp(field)), 1e-12)
    out = ramp_weight * ramp + (1 - ramp_weight) * field
    out *= np.float32(amplitude * noise_std / max(float(np.ptp(out)), 1e-12))
    return out.astype(np.float32), {"ice_gradient_amplitude": amplitude, "ice_gradient_angle_deg":
                                    math.degrees(angle), "ice_gradient_ramp_weight": ramp_weight,
                                    "ice_gradient_sigma_px": sigma}


def carbon(rng: np.random.Generator, shape: tuple[int, int],
           diameter_px: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Carbon film: a region bounded by a straight edge or by a circular hole's edge, with texture.

    The film's projected density is ``thickness`` (0.3 to 1.5 times a particle's projection peak)
    plus a texture (white noise smoothed by 0.5-1.5 px, standard deviation 5-30 % of the thickness:
    amorphous carbon shows Thon rings once it passes the CTF), with an edge softened by 1 px.

    Returns
    -------
    density, region, params
        The projected density to add before the CTF, the boolean film region and the parameters.
    """
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    kind = "edge" if rng.uniform() < 0.5 else "hole"
    angle = float(rng.uniform(0.0, 2 * math.pi))
    size = float(max(ny, nx))
    if kind == "edge":  # film where the signed distance to a line through the image is positive
        offset = float(rng.uniform(-0.35, 0.35)) * size
        signed = (x - nx / 2) * math.cos(angle) + (y - ny / 2) * math.sin(angle) - offset
        geometry = {"carbon_offset_px": offset, "carbon_hole_radius_px": float("nan")}
    else:  # film outside a circular hole whose edge crosses the image
        radius = float(rng.uniform(0.6, 2.5)) * size
        reach = radius + float(rng.uniform(-0.35, 0.35)) * size  # distance of the hole's centre
        cx, cy = nx / 2 - reach * math.cos(angle), ny / 2 - reach * math.sin(angle)
        signed = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius
        geometry = {"carbon_offset_px": reach - radius, "carbon_hole_radius_px": radius}
    region = signed > 0
    thickness = float(rng.uniform(0.3, 1.5))
    texture_std = float(rng.uniform(0.05, 0.3))
    grain = float(rng.uniform(0.5, 1.5))
    texture = scipy.ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), grain)
    texture /= max(float(texture.std()), 1e-12)
    film = np.clip(signed + 0.5, 0.0, 1.0)  # ~1 px soft edge
    film = scipy.ndimage.gaussian_filter(film, 1.0)
    density = film * np.float32(thickness) * (1 + np.float32(texture_std) * texture)
    params = {"carbon_kind": kind, "carbon_angle_deg": math.degrees(angle), **geometry,
              "carbon_thickness": thickness, "carbon_texture_std": texture_std, "carbon_grain_px": grain,
              "carbon_fraction": float(region.mean())}
    del diameter_px
    return density.astype(np.float32), region, params


def _blob_polygon(rng: np.random.Generator, centre: tuple[float, float], radius: float,
                  shape: tuple[int, int]) -> np.ndarray:
    """Boolean image of an irregular blob: a polygon whose radius varies with a few harmonics."""
    from skimage.draw import polygon

    theta = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0, 0.25 / k ** 0.7) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    r *= radius
    rows = centre[1] + r * np.sin(theta)
    cols = centre[0] + r * np.cos(theta)
    img = np.zeros(shape, dtype=bool)
    rr, cc = polygon(rows, cols, shape)
    img[rr, cc] = True
    return img


def ice_crystals(rng: np.random.Generator, shape: tuple[int, int], diameter_px: float,
                 noise_std: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """1-3 ice crystals: large irregular blobs, 1-6 particle diameters across, very dark.

    Each is a polygon with a wavy outline (edge softened by 1 px); its projected density is
    ``density`` (2 to 6 times a particle's projection peak, through the CTF) and it also darkens the
    image after the CTF by ``absorption`` (1.5 to 5 noise standard deviations): ice contamination
    scatters electrons out of the aperture, so it is dark at every defocus.

    Returns
    -------
    density, absorption, region, params
        Density to add before the CTF, the (negative) image to add after it, the boolean crystal
        region (labelled background; no true particle may sit on it), and the parameters.
    """
    ny, nx = shape
    n = int(rng.integers(1, 3, endpoint=True))
    region = np.zeros(shape, dtype=bool)
    sizes = []
    for _ in range(n):
        d = float(rng.uniform(1.0, 6.0)) * diameter_px
        centre = (float(rng.uniform(0, nx)), float(rng.uniform(0, ny)))
        region |= _blob_polygon(rng, centre, d / 2, shape)
        sizes.append(round(d, 1))
    density_level = float(rng.uniform(2.0, 6.0))
    absorption_level = float(rng.uniform(1.5, 5.0))
    soft = scipy.ndimage.gaussian_filter(region.astype(np.float32), 1.0)
    params = {"ice_crystals": n, "ice_crystal_diameters_px": " ".join(f"{s:g}" for s in sizes),
              "ice_crystal_density": density_level, "ice_crystal_absorption": absorption_level,
              "ice_crystal_fraction": float(region.mean())}
    return (soft * np.float32(density_level), soft * np.float32(-absorption_level * noise_std), region,
            params)


def aggregate_centres(rng: np.random.Generator, shape: tuple[int, int],
                      diameter_px: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Centres (x, y) of 1-3 aggregates, each a clump of 3-12 particle copies within ~0.4 diameters
    (standard deviation) of the clump's centre, anywhere in the image."""
    ny, nx = shape
    n = int(rng.integers(1, 3, endpoint=True))
    centres = []
    members = []
    for _ in range(n):
        k = int(rng.integers(3, 12, endpoint=True))
        c = np.array([rng.uniform(0, nx), rng.uniform(0, ny)])
        pts = c + rng.normal(0.0, 0.4 * diameter_px, size=(k, 2))
        centres.append(pts)
        members.append(k)
    out = np.rint(np.vstack(centres)).astype(np.int64)
    return out, {"aggregates": n, "aggregate_members": " ".join(str(k) for k in members)}
