"""What the picking errors of a real-data run look like: mean crops of hits, false picks and misses.

For the test micrographs of a ``real_data.py`` work folder, the run's tuned picker picks the stored
probability maps (``WORK/seg-METHOD``); picks at or above its threshold are matched to the provided
centres by radius (half the diameter). Square crops of ``2 * HALF`` px around every true positive,
false positive and missed centre are cut from the micrograph as the network saw it (the JPG,
standardised per micrograph; crops that cross an edge are left out) and averaged. If the false
positives' mean shows a particle as clear as the true positives', the "false" picks are particles
that the annotation leaves out, not noise; if the misses' mean is fainter, the network misses the
low-contrast particles.

Contrast of a mean crop: the mean of the annulus ``0.6 r < d <= 1.2 r`` minus the mean of the disc
``d <= 0.4 r`` (r = the particle radius, 54 px; the micrograph's standard deviations; particles are
dark, so a particle gives a positive contrast). The control: crops of background, random positions at
least a diameter from every pick and every annotated centre.

Writes ``OUT`` (PNG: each group's mean and six examples) and prints the counts and contrasts.

Usage::

    python -m benchmarks.real_error_crops --work WORK [--method threshold] --out crops.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_data import DEFAULT_DATA, DIAMETER_PX, provided_centres

GROUPS = ("true positives", "false positives", "missed", "background")


def error_crops(image: np.ndarray, picks: pd.DataFrame, truth: pd.DataFrame, half: int,
                diameter_px: float, seed: int = 0, n_background: int = 200) -> dict[str, list[np.ndarray]]:
    """Crops (``2 * half`` px squares) of one micrograph's true positives, false positives, misses
    and background.

    ``picks`` and ``truth`` carry ``is_true_positive`` / ``is_matched``
    (:func:`crisp.workflow.evaluate_run.match_picks`); ``x`` = column, ``y`` = row in pixels.
    Background: up to ``n_background`` of 20 times as many random positions (``seed``) that lie at
    least ``diameter_px`` from every pick and every annotated centre.
    """
    from scipy.spatial import cKDTree

    ny, nx = image.shape
    rng = np.random.default_rng(seed)
    candidates = rng.uniform([half, half], [nx - half, ny - half], size=(20 * n_background, 2))
    occupied = np.vstack([picks[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float),
                          truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)])
    if len(occupied):
        distance, _ = cKDTree(occupied).query(candidates)
        candidates = candidates[distance >= diameter_px]
    background = pd.DataFrame(candidates[:n_background], columns=["rlnCoordinateX", "rlnCoordinateY"])
    sets = {"true positives": picks[picks["is_true_positive"]],
            "false positives": picks[~picks["is_true_positive"]],
            "missed": truth[~truth["is_matched"]], "background": background}
    crops: dict[str, list[np.ndarray]] = {}
    for group, table in sets.items():
        xs = np.rint(table["rlnCoordinateX"].to_numpy(float)).astype(int)
        ys = np.rint(table["rlnCoordinateY"].to_numpy(float)).astype(int)
        inside = (xs >= half) & (xs < nx - half) & (ys >= half) & (ys < ny - half)
        crops[group] = [image[y - half:y + half, x - half:x + half] for x, y in zip(xs[inside], ys[inside],
                                                                                    strict=True)]
    return crops


def crop_contrast(mean_crop: np.ndarray, radius_px: float) -> float:
    """Annulus (0.6 r < d <= 1.2 r) minus centre disc (d <= 0.4 r) of a centred crop."""
    n = mean_crop.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    d = np.hypot(xx, yy)
    return float(mean_crop[(d > 0.6 * radius_px) & (d <= 1.2 * radius_px)].mean()
                 - mean_crop[d <= 0.4 * radius_px].mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the empiar10017-dev folder")
    parser.add_argument("--work", type=Path, required=True, help="a real_data.py work folder")
    parser.add_argument("--method", default="threshold", help="label method of the run (run-METHOD)")
    parser.add_argument("--half", type=int, default=80, help="half-width of the crops, px")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"real data not found at {args.data}; nothing to do")
        return 0
    from crisp.dataset import read_split
    from crisp.io.micrographs import read_micrograph
    from crisp.picking.tune import load_picker, pick_maps
    from crisp.report import _pyplot, _save
    from crisp.workflow.evaluate_run import match_picks, read_maps

    split = read_split(args.work / f"labels-{args.method}" / "split.yaml")
    picker = load_picker(args.work / f"run-{args.method}" / "picker.yaml")
    prob = read_maps(args.work / f"seg-{args.method}", split.test)
    centres = provided_centres(args.data, split.test)
    picks = pick_maps(prob, DIAMETER_PX, picker.finder, picker.params, picker.border_fraction)
    if picker.threshold is not None:
        picks = picks[picks["rlnAutopickFigureOfMerit"] >= picker.threshold]
    crops: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
    for name in split.test:
        image = read_micrograph(args.data / "images" / f"{name}.jpg").data.astype(np.float32)
        image = (image - image.mean()) / image.std()
        marked, truth = match_picks(picks[picks["rlnMicrographName"] == name],
                                    centres[centres["rlnMicrographName"] == name], DIAMETER_PX / 2)
        for group, found in error_crops(image, marked, truth, args.half, DIAMETER_PX).items():
            crops[group] += found
    plt = _pyplot()
    fig, axes = plt.subplots(len(GROUPS), 7, figsize=(14, 8.5))
    for row, group in zip(axes, GROUPS, strict=True):
        mean = np.mean(crops[group], axis=0)
        contrast = crop_contrast(mean, DIAMETER_PX / 2)
        print(f"{group}: {len(crops[group])} crops, contrast of the mean {contrast:.3f}")
        row[0].imshow(mean, cmap="gray")
        row[0].set_title(f"mean of {len(crops[group])} {group}\ncontrast {contrast:.2f}", fontsize=8)
        for ax, crop in zip(row[1:], crops[group][:6], strict=False):
            ax.imshow(crop, cmap="gray")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{args.work.name}: test micrographs, crops of {2 * args.half} px", fontsize=9)
    _save(fig, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
