"""Picking from ideal probability maps of real micrographs: the EMPIAR-10017 expert masks.

The development set's masks (discs of 108 px at the expert centres; most particles overlap their
neighbours) are used as probability maps. ``tune_picker`` chooses each finder's best grid setting
on the first ``--tune`` micrographs (sorted by name); every finder's choice is then evaluated on
the remaining micrographs: box mAP, AP50, and precision / recall / F1 at IoU 0.5 for the picks
scoring at least the F1-maximising threshold found on the tuning micrographs. Also the median
seconds per 4096 x 4096 map. This measures the picking step alone (a perfect segmentation).

Usage::

    python -m benchmarks.picking_real_masks [--data ../shared/data/empiar10017-dev] [--tune 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.real_data import DEFAULT_DATA
from crisp.dataset import read_true_centres
from crisp.metrics.picking import box_map
from crisp.picking import get_finder
from crisp.picking.tune import pick_maps, tune_picker

DIAMETER = 108.0


def load(data: Path) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The expert masks as probability maps (grey level / 255) and the expert centres, per micrograph."""
    names = sorted(star.stem for star in (data / "coordinates").glob("*.star"))
    maps = {}
    for name in names:
        with Image.open(data / "masks" / f"{name}_mask.jpg") as img:
            maps[name] = np.asarray(img.convert("L"), dtype=np.float32) / 255
    return maps, read_true_centres(data, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tune", type=int, default=3)
    args = parser.parse_args()
    maps, truth = load(args.data)
    names = sorted(maps)
    tune_names, test_names = names[: args.tune], names[args.tune:]
    tune_maps = {n: maps[n] for n in tune_names}
    test_maps = {n: maps[n] for n in test_names}
    test_truth = truth[truth["rlnMicrographName"].isin(test_names)]
    rows = []
    for finder in ("grid-nms", "crocker-grier", "contour"):
        start = time.perf_counter()
        config, _ = tune_picker(tune_maps, truth, DIAMETER, finders=[finder], progress=False)
        tune_s = time.perf_counter() - start
        start = time.perf_counter()
        picks = pick_maps(test_maps, DIAMETER, finder, config.params, config.border_fraction)
        per_map = (time.perf_counter() - start) / len(test_maps)
        all_picks = box_map(picks, test_truth, DIAMETER)
        if config.threshold is not None:
            picks = picks[picks["rlnAutopickFigureOfMerit"] >= config.threshold]
        kept = picks
        at_thr = box_map(kept, test_truth, DIAMETER)
        setting = " ".join(f"{k}={config.params[k]}" for k in get_finder(finder).grid)
        rows.append((finder, setting, config.validation["mAP"], all_picks["mAP"], all_picks["AP50"],
                     at_thr["precision"], at_thr["recall"], at_thr["F1"], per_map, tune_s))
    print(f"tuned on {len(tune_names)} micrographs, tested on {len(test_names)} "
          f"({len(test_truth)} particles), diameter {DIAMETER:.0f} px")
    header = ("finder", "chosen setting", "tune mAP", "test mAP", "AP50", "P", "R", "F1", "s/map", "tune s")
    print(f"{header[0]:14s} {header[1]:44s} " + " ".join(f"{h:>8s}" for h in header[2:]))
    for row in rows:
        print(f"{row[0]:14s} {row[1]:44s} " + " ".join(f"{v:8.3f}" for v in row[2:]))


if __name__ == "__main__":
    main()
