"""Picking F1 of ``crisp segment-and-pick`` against ``crisp segment`` + ``crisp pick`` with one trained run.

On the EMPIAR-10017 development micrographs of a trained real-data run (``python -m
benchmarks.real_data --work W --methods threshold ...``: ``W/run-threshold`` with its tuned
``picker.yaml``, micrographs in ``W/labels-threshold/micrographs``), with the run's picker for
every path:

- ``old``: ``segment_files`` + ``pick_files`` of the code in ``--old-src`` (this repository before
  issue 16: 256² tiles, float64 blending, full-size maps), in a separate process;
- ``segment+pick``: the current ``segment_files`` (whole-image forward) + ``pick_files``;
- ``segment-and-pick``: :func:`crisp.inference.segment_pick.segment_and_pick_files` (picks on the
  network's grid, coordinates scaled back).

Scores: precision, recall and F1 at the picker's threshold and AP by radius matching at half the
diameter against the provided centres (``crisp.metrics.picking.radius_match_metrics``, as the
real-data benchmark), on the split's test micrographs and on validation + test. Also the maximum and
mean absolute difference between the old (tiled) and the whole-image full-size maps.

Usage::

    python -m benchmarks.segment_pick_f1 --run W/run-threshold --micrographs W/labels-threshold/micrographs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import REPO

DATA = REPO.parent / "shared" / "data" / "empiar10017-dev"
DIAMETER_PX = 108.0


def read_picks(folder: Path, names: list[str]) -> pd.DataFrame:
    import starfile

    tables = []
    for name in names:
        table = starfile.read(folder / f"{name}_autopick.star")
        table = table if isinstance(table, pd.DataFrame) else next(iter(table.values()))
        table = table.copy()
        table["rlnMicrographName"] = name
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def score(picks: pd.DataFrame, names: list[str], threshold: float | None) -> dict:
    from crisp.dataset import read_true_centres
    from crisp.metrics.picking import radius_match_metrics

    truth = read_true_centres(DATA, names)
    subset = picks[picks["rlnMicrographName"].isin(names)]
    m = radius_match_metrics(subset, truth, DIAMETER_PX / 2, threshold=threshold)
    return {k: round(float(m[k]), 4) for k in ("precision", "recall", "F1", "AP")} | {
        "n_picks": int((subset["rlnAutopickFigureOfMerit"] >= (threshold or 0)).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--micrographs", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-segpick-f1"))
    parser.add_argument("--old-src", default="/tmp/crisp-old/src")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--old-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from crisp.picking.tune import load_picker
    from crisp.run import Run

    run = Run.load(args.run)
    split = run.config_path.parent / "split.yaml"
    import yaml

    names = yaml.safe_load(split.read_text())
    test, val = names["test"], names["val"]
    mics = [args.micrographs / f"{n}.mrc" for n in val + test]
    picker = load_picker(run.picker_path)
    work = args.work
    if args.old_only:  # child: the old code
        import torch

        torch.set_num_threads(args.threads)
        from crisp.picking.files import pick_files
        from crisp.predict import segment_files

        segment_files(args.run, mics, work / "old-maps", overwrite=True, progress=False)
        pick_files(work / "old-maps", work / "old-picks", picker, micrographs=args.micrographs,
                   overwrite=True, progress=False)
        return 0
    env = dict(os.environ, PYTHONPATH=args.old_src)
    subprocess.run([sys.executable, "-m", "benchmarks.segment_pick_f1", "--run", str(args.run),
                    "--micrographs", str(args.micrographs), "--work", str(work),
                    "--threads", str(args.threads), "--old-only"],
                   check=True, cwd=REPO, env=env)
    from crisp.inference.segment_pick import segment_and_pick_files
    from crisp.io.micrographs import read_micrograph
    from crisp.picking.files import pick_files
    from crisp.predict import segment_files

    segment_files(args.run, mics, work / "maps", overwrite=True, progress=False, threads=args.threads)
    pick_files(work / "maps", work / "picks", picker, micrographs=args.micrographs, overwrite=True,
               progress=False)
    segment_and_pick_files(args.run, mics, work / "segpick", picker=picker, overwrite=True, progress=False,
                           threads=args.threads)
    rows = {}
    paths = (("old (256² tiles, full map)", "old-picks"), ("segment+pick (whole image)", "picks"),
             ("segment-and-pick", "segpick"))
    for label, folder in paths:
        picks = read_picks(work / folder, val + test)
        rows[label] = {"test": score(picks, test, picker.threshold),
                       "val+test": score(picks, val + test, picker.threshold)}
    diffs = []
    for n in val + test:
        a = read_micrograph(work / "old-maps" / f"{n}.mrc").data.astype(np.float32)
        b = read_micrograph(work / "maps" / f"{n}.mrc").data.astype(np.float32)
        diffs.append((float(np.abs(a - b).max()), float(np.abs(a - b).mean())))
    result = {"run": str(args.run), "threshold": picker.threshold, "test": test, "val": val, "rows": rows,
              "map_difference_tiled_vs_whole": {"max": max(d[0] for d in diffs),
                                                "mean": float(np.mean([d[1] for d in diffs]))}}
    print("| path | test F1 | test AP | test P / R | val+test F1 | val+test AP |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        t, a = r["test"], r["val+test"]
        print(f"| {label} | {t['F1']:.4f} | {t['AP']:.4f} | {t['precision']:.3f} / {t['recall']:.3f} | "
              f"{a['F1']:.4f} | {a['AP']:.4f} |")
    print(json.dumps(result["map_difference_tiled_vs_whole"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
