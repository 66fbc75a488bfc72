"""Per-particle threshold masks: the particle's own shape, found around each centre.

For every centre ``(x, y)`` (``x`` = column, ``y`` = row, pixels) a square window of half-width
``window_factor * radius_px`` is cut from the low-passed micrograph and thresholded with a
scikit-image method. The connected component under the centre (or, when the centre pixel is
background, the component nearest to it inside the disc) is kept, its holes are filled and it is
clipped to the disc of ``radius_px``, so that touching neighbours never merge beyond one particle's
disc. Masks of overlapping particles are combined with OR.

Polarity: in a raw micrograph (MRC) protein scatters more and shows **dark** on a light background;
rendered images (for instance CryoPPP JPGs) may be contrast-inverted. ``polarity="auto"`` decides per
particle by comparing the mean of the inner half of the disc with the mean of the annulus
``radius < r <= 1.5 radius``; ``"dark"`` or ``"light"`` force one polarity for all particles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from crisp.errors import CrispError

GLOBAL_METHODS = ("li", "otsu", "yen", "triangle", "mean", "isodata")
THRESHOLD_METHODS = GLOBAL_METHODS + ("local",)
POLARITIES = ("auto", "dark", "light")


@dataclass
class ThresholdStats:
    """What happened while thresholding one micrograph's particles."""

    n_particles: int = 0
    n_dark: int = 0
    n_light: int = 0
    n_fallback_disk: int = 0
    fractions: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        fill = float(np.mean(self.fractions)) if self.fractions else None
        return {"n_particles": self.n_particles, "n_dark": self.n_dark, "n_light": self.n_light,
                "n_fallback_disk": self.n_fallback_disk, "mean_disc_fill": fill}


def _threshold_window(window: np.ndarray, method: str, radius_px: float) -> np.ndarray | float:
    from skimage import filters

    if method == "local":
        block = 2 * int(round(radius_px)) + 1
        return filters.threshold_local(window, block_size=block, method="gaussian")
    return float(getattr(filters, f"threshold_{method}")(window))


def check_threshold_options(method: str, polarity: str) -> None:
    """Raise :class:`CrispError` for an unknown method or polarity name."""
    if method not in THRESHOLD_METHODS:
        raise CrispError(f"unknown threshold method '{method}' "
                         f"(expected one of {', '.join(THRESHOLD_METHODS)})")
    if polarity not in POLARITIES:
        raise CrispError(f"unknown polarity '{polarity}' (expected one of {', '.join(POLARITIES)})")


def threshold_mask(image: np.ndarray, x: np.ndarray, y: np.ndarray, radius_px: float, *,
                   method: str = "li", polarity: str = "auto", lowpass_sigma_px: float | None = None,
                   window_factor: float = 2.0) -> tuple[np.ndarray, ThresholdStats]:
    """Mask of each particle's thresholded shape, clipped to its disc.

    Parameters
    ----------
    image
        The micrograph, shape ``(ny, nx)``, indexed ``[row, column]``.
    x, y
        Particle centres in pixels (``x`` = column, ``y`` = row).
    radius_px
        Particle radius in pixels: the clipping disc, and the scale of the window.
    method
        ``li`` (default), ``otsu``, ``yen``, ``triangle``, ``mean``, ``isodata`` (scikit-image global
        thresholds computed in each particle's window) or ``local`` (``threshold_local`` with a
        Gaussian block of ``2 * radius + 1`` pixels).
    polarity
        ``auto`` (per particle, see the module docstring), ``dark`` or ``light``.
    lowpass_sigma_px
        Sigma (pixels) of the Gaussian low-pass applied to the whole micrograph first; default
        ``radius_px / 8``; 0 disables it.
    window_factor
        Half-width of the window in units of ``radius_px`` (default 2, a window of 4 radii).

    Returns
    -------
    mask : numpy.ndarray
        uint8, 1 = particle.
    stats : ThresholdStats
        Counts of dark and light particles and of particles whose window held no foreground
        inside the disc (their disc is used instead: ``n_fallback_disk``).
    """
    check_threshold_options(method, polarity)
    if not radius_px > 0:
        raise CrispError(f"particle radius must be positive (got {radius_px} px)")
    image = np.asarray(image, dtype=np.float32)
    ny, nx = image.shape
    sigma = radius_px / 8.0 if lowpass_sigma_px is None else float(lowpass_sigma_px)
    smooth = ndimage.gaussian_filter(image, sigma) if sigma > 0 else image
    mask = np.zeros((ny, nx), dtype=np.uint8)
    stats = ThresholdStats()
    half = int(np.ceil(window_factor * radius_px))
    for xc, yc in zip(np.asarray(x, float).ravel(), np.asarray(y, float).ravel(), strict=True):
        if not (np.isfinite(xc) and np.isfinite(yc)):
            continue
        r0, r1 = max(int(np.floor(yc)) - half, 0), min(int(np.floor(yc)) + half + 1, ny)
        c0, c1 = max(int(np.floor(xc)) - half, 0), min(int(np.floor(xc)) + half + 1, nx)
        if r1 <= r0 or c1 <= c0:
            continue
        stats.n_particles += 1
        window = smooth[r0:r1, c0:c1]
        rows, cols = np.ogrid[r0:r1, c0:c1]
        dist2 = (cols - xc) ** 2 + (rows - yc) ** 2
        disc = dist2 <= radius_px ** 2
        dark = _is_dark(window, dist2, radius_px) if polarity == "auto" else polarity == "dark"
        stats.n_dark += int(dark)
        stats.n_light += int(not dark)
        signal = -window if dark else window  # particles bright in ``signal`` whatever the polarity
        foreground = signal > _threshold_window(signal, method, radius_px)
        keep = _component_at_centre(foreground, disc, dist2)
        if keep is None:
            stats.n_fallback_disk += 1
            keep = disc
        else:
            keep = ndimage.binary_fill_holes(keep) & disc
        stats.fractions.append(float(keep.sum()) / max(int(disc.sum()), 1))
        mask[r0:r1, c0:c1] |= keep.astype(np.uint8)
    return mask, stats


def _is_dark(window: np.ndarray, dist2: np.ndarray, radius_px: float) -> bool:
    inner = window[dist2 <= (radius_px / 2.0) ** 2]
    ring = window[(dist2 > radius_px ** 2) & (dist2 <= (1.5 * radius_px) ** 2)]
    if inner.size == 0 or ring.size == 0:
        return True
    return bool(inner.mean() <= ring.mean())


def _component_at_centre(foreground: np.ndarray, disc: np.ndarray, dist2: np.ndarray) -> np.ndarray | None:
    """The connected foreground component nearest to the centre among those reaching the disc."""
    candidates = foreground & disc
    if not candidates.any():
        return None
    labels, _ = ndimage.label(foreground)
    d = np.where(candidates, dist2, np.inf)
    nearest = np.unravel_index(int(np.argmin(d)), d.shape)
    return labels == labels[nearest]
