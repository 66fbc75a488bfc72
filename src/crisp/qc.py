"""Quality-control figure of a labelled dataset: micrographs with mask outlines and centres.

One panel per micrograph, downsampled for display, contrast stretched between the 1st and 99th
percentiles; the mask outline is drawn in one colour and the centres as crosses in another, so a
user sees at a glance whether the coordinates sit on particles, or are flipped or mis-scaled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from crisp.dataset import DatasetFolder


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def labels_qc_figure(dataset_dir: str | os.PathLike[str], names: list[str], out_path: str | os.PathLike[str],
                     display_px: int = 1024, columns: int = 2) -> Path | None:
    """Draw the QC figure of ``names`` from a dataset folder and save it as PNG (atomically).

    Parameters
    ----------
    dataset_dir
        A dataset folder (see :mod:`crisp.dataset`) holding micrographs, masks and coordinates.
    names
        Micrograph stems to show, one panel each.
    out_path
        PNG to write.
    display_px
        Largest side of each panel after block-mean downsampling (pixels).
    columns
        Panels per row.

    Returns
    -------
    Path or None
        The figure written, or None when ``names`` is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crisp.atomic import atomic_path
    from crisp.io.micrographs import read_micrograph

    if not names:
        return None
    folder = DatasetFolder(Path(dataset_dir))
    columns = max(1, min(columns, len(names)))
    rows = int(np.ceil(len(names) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names, strict=False):
        image = read_micrograph(folder.micrograph(name)).data
        factor = max(1, int(np.ceil(max(image.shape) / display_px)))
        small = _downsample(image, factor)
        lo, hi = np.percentile(small, [1, 99])
        ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        n_centres = 0
        if folder.mask(name).is_file():
            mask = _downsample(read_micrograph(folder.mask(name)).data, factor)
            if mask.max() > 0:
                ax.contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=0.8)
        if folder.coordinates(name).is_file():
            import starfile

            table = starfile.read(folder.coordinates(name), always_dict=True)
            table = next(iter(table.values()), None) if table else None
            if table is not None and len(table):
                # pixel centres map to (c + 0.5) / factor - 0.5 in the block-mean image
                x = (table["rlnCoordinateX"].to_numpy(float) + 0.5) / factor - 0.5
                y = (table["rlnCoordinateY"].to_numpy(float) + 0.5) / factor - 0.5
                ax.plot(x, y, "+", color="#ff3d00", markersize=5, markeredgewidth=0.8)
                n_centres = len(table)
        ax.set_title(f"{name}  ({n_centres} centres, shown 1:{factor})", fontsize=9)
        ax.set_xlim(-0.5, small.shape[1] - 0.5)
        ax.set_ylim(small.shape[0] - 0.5, -0.5)
    fig.suptitle("mask outline (cyan) and centres (red +): centres should sit on particles", fontsize=10)
    fig.tight_layout()
    out = Path(out_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out
