"""Figures and a static HTML report.

Every function here takes plain arrays, DataFrames or file paths that earlier stages wrote, draws
one PNG with matplotlib (Agg backend, no screen needed) and returns its path. :func:`write_html`
puts figures and tables on one self-contained page (relative links, no server, no scripts).

Conventions: images are indexed [row (y), column (x)] and drawn with ``origin="upper"``, so a pick at
(x, y) is drawn at column x, row y, exactly where it sits in the array.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.atomic import atomic_path, write_text_atomic
from crisp.preprocess import block_mean

TRUE_POSITIVE = "#2ca02c"   # green
FALSE_POSITIVE = "#d62728"  # red
MISSED = "#1f77b4"          # blue
NEUTRAL = "#ffbf00"         # amber: picks without truth


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def display_image(image: np.ndarray, max_size: int = 1024) -> tuple[np.ndarray, float]:
    """Downsample ``image`` by block averaging for display and clip its contrast.

    Returns
    -------
    (display, factor)
        The display image (values in [0, 1]) and the integer factor by which it was reduced, so
        a coordinate x in the original is drawn at x / factor.
    """
    factor = max(1, int(np.ceil(max(np.shape(image)) / max_size)))
    image = block_mean(image, factor)
    lo, hi = np.percentile(image, [1, 99])
    scaled = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return scaled, float(factor)


def _circles(ax, xs, ys, radius, color, label, linewidth=1.0):
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    patches = [Circle((x, y), radius) for x, y in zip(xs, ys, strict=True)]
    if not patches:
        return
    ax.add_collection(PatchCollection(patches, facecolor="none", edgecolor=color, linewidth=linewidth))
    ax.plot([], [], "o", mfc="none", mec=color, label=f"{label} ({len(patches)})")


def plot_picks(
    image: np.ndarray,
    picks: pd.DataFrame,
    path: str | os.PathLike[str],
    diameter_px: float,
    truth: pd.DataFrame | None = None,
    title: str = "",
    max_size: int = 1024,
) -> Path:
    """Draw picks on a micrograph; with truth, colour true positives, false positives and misses.

    Parameters
    ----------
    image
        The micrograph, [row, column], original pixels.
    picks
        rlnCoordinateX/Y in original pixels. With ``truth`` it must carry a boolean column
        ``is_true_positive`` (as :func:`crisp.metrics.picking` marks it).
    path
        PNG to write.
    diameter_px
        Particle diameter in original pixels (circle size).
    truth
        True centres; a boolean column ``is_matched`` marks those some pick found. Unmatched ones
        are drawn as misses.
    """
    plt = _pyplot()
    shown, factor = display_image(image, max_size)
    fig, ax = plt.subplots(figsize=(7, 7 * shown.shape[0] / shown.shape[1]))
    ax.imshow(shown, cmap="gray", origin="upper", interpolation="nearest")
    radius = diameter_px / 2 / factor
    px = picks["rlnCoordinateX"].to_numpy(float) / factor
    py = picks["rlnCoordinateY"].to_numpy(float) / factor
    if truth is None or "is_true_positive" not in picks:
        _circles(ax, px, py, radius, NEUTRAL, "picks")
    else:
        tp = picks["is_true_positive"].to_numpy(bool)
        _circles(ax, px[tp], py[tp], radius, TRUE_POSITIVE, "true positives")
        _circles(ax, px[~tp], py[~tp], radius, FALSE_POSITIVE, "false positives")
        missed = ~truth["is_matched"].to_numpy(bool) if "is_matched" in truth else np.zeros(len(truth), bool)
        tx = truth["rlnCoordinateX"].to_numpy(float)[missed] / factor
        ty = truth["rlnCoordinateY"].to_numpy(float)[missed] / factor
        _circles(ax, tx, ty, radius, MISSED, "missed", linewidth=1.5)
    ax.set_axis_off()
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_segmentation(
    image: np.ndarray,
    probability: np.ndarray,
    path: str | os.PathLike[str],
    truth_mask: np.ndarray | None = None,
    title: str = "",
    max_size: int = 1024,
) -> Path:
    """Micrograph beside its probability map, with the true mask outlined when given."""
    plt = _pyplot()
    shown, factor = display_image(image, max_size)
    prob = block_mean(np.clip(np.asarray(probability, np.float32), 0, 1), int(factor))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    axes[0].imshow(shown, cmap="gray", origin="upper")
    axes[0].set_title("micrograph", fontsize=9)
    axes[1].imshow(shown, cmap="gray", origin="upper")
    im = axes[1].imshow(prob, cmap="magma", alpha=0.55, vmin=0, vmax=1, origin="upper")
    if truth_mask is not None:
        mask = block_mean(truth_mask, int(factor))
        axes[1].contour(mask, levels=[0.5], colors=[TRUE_POSITIVE], linewidths=0.6)
    axes[1].set_title("particle probability" + (" (green: true mask)" if truth_mask is not None else ""),
                      fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def probability_counts(arrays: np.ndarray | Sequence[np.ndarray], bins: int = 50) -> np.ndarray:
    """Pixel counts of probability maps (values clipped to [0, 1]) in ``bins`` equal bins, summed."""
    arrays = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
    edges = np.linspace(0, 1, bins + 1)
    counts = np.zeros(bins)
    for arr in arrays:
        counts += np.histogram(np.clip(np.asarray(arr, np.float32), 0, 1), bins=edges)[0]
    return counts


def plot_histogram_counts(counts: Mapping[str, np.ndarray], path: str | os.PathLike[str],
                          title: str = "probability histogram") -> Path:
    """One curve per label from counts in equal bins on [0, 1]: fraction of pixels, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in counts.items():
        values = np.asarray(values, float)
        edges = np.linspace(0, 1, len(values) + 1)
        ax.step(edges[:-1], values / max(values.sum(), 1), where="post", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("particle probability")
    ax.set_ylabel("fraction of pixels")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_probability_histogram(
    maps: Mapping[str, np.ndarray | Sequence[np.ndarray]], path: str | os.PathLike[str], bins: int = 50
) -> Path:
    """Histogram of pixel probabilities, one curve per model (the paper's Appendix 7).

    A CRF should push the mass toward 0 and 1; the y axis is logarithmic so both ends show.
    """
    return plot_histogram_counts({label: probability_counts(values, bins) for label, values in maps.items()},
                                 path)


def plot_training_curves(
    metrics: pd.DataFrame | str | os.PathLike[str], path: str | os.PathLike[str]
) -> Path:
    """Loss and validation metrics per epoch from a run's ``metrics.csv``.

    Columns used when present: ``epoch``, any ``*loss*`` column (left panel) and ``val_iou``,
    ``val_f1``, ``val_precision``, ``val_recall`` (right panel). Rows with NaN are skipped per
    column, as Lightning's CSV logger writes training and validation on separate rows.
    """
    plt = _pyplot()
    df = pd.read_csv(metrics) if not isinstance(metrics, pd.DataFrame) else metrics
    x_col = "epoch" if "epoch" in df else df.columns[0]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    for col in [c for c in df.columns if "loss" in c]:
        part = df[[x_col, col]].dropna().groupby(x_col).mean()
        ax_loss.plot(part.index, part[col], marker=".", label=col)
    for col in [c for c in ("val_iou", "val_f1", "val_precision", "val_recall") if c in df]:
        part = df[[x_col, col]].dropna().groupby(x_col).mean()
        ax_val.plot(part.index, part[col], marker=".", label=col)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss", fontsize=10)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylim(0, 1)
    ax_val.set_title("validation", fontsize=10)
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                          path: str | os.PathLike[str]) -> Path:
    """Precision-recall curves: ``{label: (recall, precision)}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for label, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=label)
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("precision-recall", fontsize=10)
    return _save(fig, path)


@dataclass
class Section:
    """One section of the HTML report: a heading, text, tables and figures (paths)."""

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


def _table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, row in df.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float):
                text = f"{value:.4g}"
            else:
                text = str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_html(path: str | os.PathLike[str], title: str, sections: Sequence[Section]) -> Path:
    """Write a static HTML page; figure links are made relative to the page's folder.

    Raises
    ------
    FileNotFoundError
        If a figure does not exist: a report never links to a missing image.
    """
    path = Path(path)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
        "text-align:right}th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:1em 0}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for caption, table in section.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(_table_html(table))
        for caption, figure in section.figures:
            figure = Path(figure)
            if not figure.is_file():
                raise FileNotFoundError(f"report figure missing: {figure}")
            rel = os.path.relpath(figure.resolve(), path.parent.resolve())
            parts.append(
                f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    write_text_atomic(path, "\n".join(parts))
    return path
