"""Quality-control figure of a labelled dataset: micrographs with mask outlines and centres.

One panel per micrograph, low-passed and downsampled for display (at the SNR of cryo-EM no particle
is visible in the raw pixels), contrast stretched between the 1st and 99th percentiles; the mask
outline is drawn in one colour and the centres as crosses in another, so a user sees at a glance
whether the coordinates sit on particles, or are flipped or mis-scaled. Unlabelled pixels of a sparse
label map (value 255, :data:`crisp.dataset.UNLABELLED`) are shaded grey and hatched, never outlined as
particle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crisp.dataset import PARTICLE, UNLABELLED, DatasetFolder

LOWPASS_SIGMA_PER_FACTOR = 2.0
"""Gaussian low-pass sigma, in pixels per display downsampling factor, as the data figure of the
report (:func:`crisp.simulate.plot_preview`) uses."""


@dataclass
class QcPanels:
    """The images one row of the QC figure shows (see :func:`qc_panels`)."""

    smooth: np.ndarray
    overview: np.ndarray
    factor: int
    zoom: np.ndarray
    origin: tuple[int, int]


def qc_panels(image: np.ndarray, display_px: int = 768, zoom_px: int = 640) -> QcPanels:
    """The display images of one micrograph: low-passed, then block-mean downsampled and cropped.

    Parameters
    ----------
    image
        The micrograph, [row, column].
    display_px
        Largest side of the overview after downsampling by the integer ``factor`` (pixels).
    zoom_px
        Side of the full-resolution crop from the centre (pixels).

    Returns
    -------
    QcPanels
        ``smooth``: the micrograph low-passed with :func:`crisp.preprocess.lowpass` at sigma
        ``LOWPASS_SIGMA_PER_FACTOR * factor`` pixels; ``overview``: its block mean by ``factor``;
        ``zoom``: its ``zoom_px`` crop at full resolution whose first row and column are ``origin``.
    """
    from crisp.preprocess import block_mean, lowpass

    factor = max(1, int(np.ceil(max(image.shape) / display_px)))
    smooth = lowpass(image, sigma_px=LOWPASS_SIGMA_PER_FACTOR * factor)
    ny, nx = image.shape
    h, w = min(zoom_px, ny), min(zoom_px, nx)
    r0, c0 = (ny - h) // 2, (nx - w) // 2
    return QcPanels(smooth=smooth, overview=block_mean(smooth, factor), factor=factor,
                    zoom=smooth[r0:r0 + h, c0:c0 + w], origin=(r0, c0))


def _read_centres(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import starfile

    if not path.is_file():
        return np.empty(0), np.empty(0)
    blocks = starfile.read(path, always_dict=True)
    table = next(iter(blocks.values()), None) if blocks else None
    if table is None or len(table) == 0:
        return np.empty(0), np.empty(0)
    return table["rlnCoordinateX"].to_numpy(float), table["rlnCoordinateY"].to_numpy(float)


def mask_layers(mask: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Split a label map into its particle and unlabelled layers for display.

    Parameters
    ----------
    mask
        uint8 label map (1 = particle, 0 = background, 255 = unlabelled), or None.

    Returns
    -------
    particle, unlabelled : numpy.ndarray or None
        float32 0/1 layers of ``mask == 1`` and ``mask == 255``; ``unlabelled`` is None when no pixel
        is unlabelled (and both are None without a mask).
    """
    if mask is None:
        return None, None
    particle = (mask == PARTICLE).astype(np.float32)
    unlabelled = mask == UNLABELLED
    return particle, unlabelled.astype(np.float32) if unlabelled.any() else None


def _show_unlabelled(ax, unlabelled: np.ndarray | None) -> None:
    """Shade (grey) and hatch the pixels where ``unlabelled`` (a 0..1 layer) is at least 0.5."""
    if unlabelled is None or not (unlabelled >= 0.5).any():
        return
    from matplotlib.colors import ListedColormap

    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.imshow(np.ma.masked_less(unlabelled, 0.5), cmap=ListedColormap(["#9e9e9e"]), vmin=0, vmax=1,
              alpha=0.5, interpolation="nearest")
    ax.contourf(unlabelled, levels=[0.5, 1.5], colors="none", hatches=["////"])
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)


def _show(ax, image: np.ndarray, mask: np.ndarray | None, x: np.ndarray, y: np.ndarray, marker_size: float):
    lo, hi = np.percentile(image, [1, 99])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if mask is not None and mask.max() > 0:
        ax.contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=0.8)
    inside = (x > -0.5) & (x < image.shape[1] - 0.5) & (y > -0.5) & (y < image.shape[0] - 0.5)
    ax.plot(x[inside], y[inside], "+", color="#ff3d00", markersize=marker_size, markeredgewidth=0.9)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def labels_qc_figure(dataset_dir: str | os.PathLike[str], names: list[str], out_path: str | os.PathLike[str],
                     display_px: int = 768, zoom_px: int = 640) -> Path | None:
    """Draw the QC figure of ``names`` from a dataset folder and save it as PNG (atomically).

    Each micrograph is low-passed (:func:`qc_panels`) and gets a row of two panels: the whole
    micrograph block-mean downsampled to at most ``display_px`` pixels, and a crop of ``zoom_px``
    pixels at full resolution from its centre
    (outlined in yellow on the overview), where a person can judge whether each centre sits on a
    particle. The row axis points down in both (row 0 at the top), as the array is stored.

    Parameters
    ----------
    dataset_dir
        A dataset folder (see :mod:`crisp.dataset`) holding micrographs, masks and coordinates.
    names
        Micrograph stems to show, one row each.
    out_path
        PNG to write.
    display_px
        Largest side of the overview panel after downsampling (pixels).
    zoom_px
        Side of the full-resolution crop (pixels).

    Returns
    -------
    Path or None
        The figure written, or None when ``names`` is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from crisp.atomic import atomic_path
    from crisp.io.micrographs import read_micrograph
    from crisp.preprocess import block_mean

    if not names:
        return None
    folder = DatasetFolder(Path(dataset_dir))
    any_unlabelled = False
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 6 * len(names)), squeeze=False, layout="constrained")
    for (ax_all, ax_zoom), name in zip(axes, names, strict=True):
        image = read_micrograph(folder.micrograph(name)).data
        mask = read_micrograph(folder.mask(name)).data if folder.mask(name).is_file() else None
        particle, unlabelled = mask_layers(mask)
        any_unlabelled |= unlabelled is not None
        x, y = _read_centres(folder.coordinates(name))
        panels = qc_panels(image, display_px, zoom_px)
        factor = panels.factor
        # a pixel centre c maps to (c + 0.5) / factor - 0.5 in the block-mean image
        _show(ax_all, panels.overview, None if particle is None else block_mean(particle, factor),
              (x + 0.5) / factor - 0.5, (y + 0.5) / factor - 0.5, marker_size=3)
        _show_unlabelled(ax_all, None if unlabelled is None else block_mean(unlabelled, factor))
        share = "" if unlabelled is None else f", {unlabelled.mean():.0%} unlabelled"
        ax_all.set_title(f"{name}: {len(x)} centres, shown 1:{factor}, low-passed{share}", fontsize=9)
        (r0, c0), (h, w) = panels.origin, panels.zoom.shape
        ax_all.add_patch(Rectangle(((c0 + 0.5) / factor - 0.5, (r0 + 0.5) / factor - 0.5), w / factor,
                                   h / factor, fill=False, edgecolor="yellow", linewidth=1))
        _show(ax_zoom, panels.zoom, None if particle is None else particle[r0:r0 + h, c0:c0 + w],
              x - c0, y - r0, marker_size=8)
        _show_unlabelled(ax_zoom, None if unlabelled is None else unlabelled[r0:r0 + h, c0:c0 + w])
        ax_zoom.set_title(f"full resolution, rows {r0}-{r0 + h - 1}, columns {c0}-{c0 + w - 1}", fontsize=9)
    fig.suptitle("mask outline (cyan) and centres (red +): each centre should sit on a particle"
                 + ("; unlabelled pixels grey, hatched" if any_unlabelled else ""), fontsize=10)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return out
