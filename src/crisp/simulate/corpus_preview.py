"""The preview figure of a simulated corpus (``crisp simulate-corpus``'s ``preview.png``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd


def plot_corpus_preview(dataset: str | os.PathLike[str], table: pd.DataFrame, path: str | os.PathLike[str],
                        n: int = 6) -> Path:
    """PNG of the first ``n`` micrographs of ``table``: low-passed, true particles circled (their
    diameter), mask outlined; titles give the structure, pixel size and SNR."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from crisp.atomic import atomic_path
    from crisp.dataset import DatasetFolder
    from crisp.io.coordinates import read_coordinates
    from crisp.io.micrographs import read_micrograph
    from crisp.preprocess import lowpass
    from crisp.report import display_image

    folder = DatasetFolder(Path(dataset))
    rows = table.head(n)
    cols = min(3, len(rows))
    nrows = int(math.ceil(len(rows) / max(cols, 1)))
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 5.3 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (_, row) in zip(axes.ravel(), rows.iterrows(), strict=False):
        image = read_micrograph(folder.micrograph(row["name"])).data
        mask = read_micrograph(folder.mask(row["name"])).data
        truth = read_coordinates(folder.coordinates(row["name"]))
        shown, factor = display_image(lowpass(image, sigma_px=1.5), 1024)
        ax.imshow(shown, cmap="gray")
        ax.contour(mask[::int(factor), ::int(factor)], levels=[0.5], colors=["#2ca02c"], linewidths=0.5)
        r = row["diameter_px"] / 2 / factor
        for x, y in zip(truth["rlnCoordinateX"], truth["rlnCoordinateY"], strict=True):
            ax.add_patch(Circle((x / factor, y / factor), r, fill=False, color="#d62728", linewidth=0.6))
        extras = [k for k in ("carbon", "ice_crystal", "aggregate", "ice_gradient") if row.get(k) is True]
        ax.set_title(f"{row['name']}: {row['structure']} ({row['kind']}, {row['d_A']:.0f} Å)\n"
                     f"{row['pixel_size_A']:.2f} Å/px, n={row['n_particles']}, "
                     f"SNR det {row['snr_detector']:.3f} grid {row['snr_grid']:.3f}, "
                     f"df {row['defocus_u_A'] / 1e4:.2f} µm\n"
                     f"{', '.join(extras) or 'no nuisances'}", fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
