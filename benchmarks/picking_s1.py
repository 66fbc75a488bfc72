"""Benchmark S1, picking: each centre finder, tuned on validation, scored on test (the paper's Table 3).

Uses the work folder of ``benchmarks/s1_segmentation.py`` (``WORK/data`` with its split,
``WORK/run`` the trained network, ``WORK/maps`` the test probability maps; missing maps are made).
For every finder: its two-parameter grid is searched by box mAP on the validation micrographs
(``crisp.picking.tune.tune_picker``), then on the test micrographs it reports box mAP (IoU
0.50:0.95), and precision / recall / F1 at box IoU 0.5 and by radius matching at half the
diameter, both at the score threshold chosen on validation. Prints a Markdown table, writes
``WORK/picking_s1.json``. Not run in CI.

Usage::

    python -m benchmarks.picking_s1 --work /tmp/s1
    # any dataset folder with a split and a run trained on it, e.g. the real-data benchmark's:
    python -m benchmarks.picking_s1 --work W --data W/labels-disk --run W/run-disk
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work folder of s1_segmentation.py")
    parser.add_argument("--finders", default=None, help="comma-separated finders (default: all)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default WORK/data)")
    parser.add_argument("--run", type=Path, default=None, help="training run (default WORK/run)")
    args = parser.parse_args()

    from crisp.dataset import DatasetFolder, dataset_diameter_px, read_split, read_true_centres
    from crisp.metrics.picking import box_map, radius_match_metrics
    from crisp.picking import available_finders
    from crisp.picking.tune import pick_maps, tune_picker
    from crisp.predict import segment_files
    from crisp.workflow.evaluate_run import read_maps

    data = DatasetFolder.open(args.data or args.work / "data")
    split = read_split(data.split_file)
    run = args.run or args.work / "run"
    diameter = dataset_diameter_px(data.root)
    val_dir, test_dir = args.work / "maps-val", args.work / "maps"
    segment_files(run, [data.micrograph(n) for n in split.val], val_dir, progress=True)
    segment_files(run, [data.micrograph(n) for n in split.test], test_dir, progress=True)
    val_maps, test_maps = read_maps(val_dir, split.val), read_maps(test_dir, split.test)
    val_truth, test_truth = read_true_centres(data.root, split.val), read_true_centres(data.root, split.test)

    finders = args.finders.split(",") if args.finders else available_finders()
    rows = []
    for finder in finders:
        t0 = time.perf_counter()
        picker, _ = tune_picker(val_maps, val_truth, diameter, finders=[finder], progress=False)
        tune_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        picks = pick_maps(test_maps, diameter, finder, picker.params, picker.border_fraction)
        pick_s = (time.perf_counter() - t0) / len(test_maps)
        kept = picks
        if picker.threshold is not None:
            kept = picks[picks["rlnAutopickFigureOfMerit"] >= picker.threshold]
        boxes_all = box_map(picks, test_truth, diameter)
        boxes = box_map(kept, test_truth, diameter)
        radius = radius_match_metrics(picks, test_truth, diameter / 2, threshold=picker.threshold)
        rows.append({
            "finder": finder, "params": json.dumps(picker.params, sort_keys=True),
            "threshold": picker.threshold, "val mAP": picker.validation["mAP"],
            "test mAP": boxes_all["mAP"], "P@IoU.5": boxes["precision"], "R@IoU.5": boxes["recall"],
            "F1@IoU.5": boxes["F1"], "P radius": radius["precision"], "R radius": radius["recall"],
            "F1 radius": radius["F1"], "AP radius": radius["AP"], "tune s": tune_s, "s / map": pick_s,
        })
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    print(f"\n{len(split.val)} validation and {len(split.test)} test micrographs, "
          f"{len(test_truth)} test particles, diameter {diameter:.1f} px")
    (args.work / "picking_s1.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
