"""CRISP ``segment-and-pick`` against Topaz ``extract`` side by side: seconds per micrograph and picking AP.

One run on one machine, on the 10 micrographs of the EMPIAR-10017 development set
(``shared/data/empiar10017-dev/images``, 4096² 8-bit JPGs; centres in ``coordinates/NAME.star`` in the
JPG's frame as loaded):

1. Topaz lives in its own virtualenv (``--topaz-venv``, created with ``python3 -m venv`` and ``pip
   install topaz-em TORCH`` when it holds no ``topaz``); it is not a dependency of CRISP.
2. The JPGs are written once as float32 MRC files (untimed; the same array CRISP reads from the JPG),
   because Topaz 0.3.20 cannot preprocess JPGs (``load_jpeg`` returns a PIL image and ``preprocess``
   fails on ``.astype``). Both tools read these MRC files.
3. Topaz, timed: ``topaz preprocess -s 8`` (Fourier downsampling by 8 to 512², GMM normalisation,
   Topaz's defaults) then ``topaz extract -m resnet8_u64 -r 7`` (its shipped pretrained ResNet-8,
   radius 7 px at bin 8 for a 108 px particle, every candidate above ``-t -20`` kept), CPU (``-d -1``),
   ``-j THREADS`` torch threads in the main process, ``OMP_NUM_THREADS=THREADS``.
4. CRISP, timed: ``crisp segment-and-pick RUN MRCS -o OUT --threads THREADS --pixel-size 1.77`` with the
   run's tuned
   ``picker.yaml`` (every candidate written, no threshold).

Seconds per micrograph = wall time of the whole call(s) / 10: process start, imports and model
loading included for both tools (Topaz: both ``preprocess`` and ``extract``). The load average is
recorded before and after each tool.

Scoring (``crisp.metrics.picking.radius_match_metrics``, matching radius 54 px = half the diameter, as
``benchmarks.segment_pick_f1``): on the run's 2 test micrographs, AP ranking all picks by score, and
precision / recall / F1 at a threshold chosen on the run's 2 validation micrographs: CRISP's tuned
``picker.yaml`` threshold; for Topaz the score threshold that maximises F1 on the same validation
micrographs. Topaz's coordinates are in the binned frame (column, row of the image it read) and are
multiplied by 8 (Topaz's own ``-x 8`` convention). As a frame check, Topaz's test AP with the rows
flipped is printed too (it should be near 0).

Usage::

    python -m benchmarks.topaz_side_by_side --run W/run-threshold --topaz-venv /tmp/topaz-venv

Prints a Markdown table; ``--json FILE`` writes the figures. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks import REPO

DATA = REPO.parent / "shared" / "data" / "empiar10017-dev"
DIAMETER_PX = 108.0
TOPAZ_SCALE = 8
TOPAZ_RADIUS = 7


def ensure_topaz(venv: Path, torch_spec: str) -> Path:
    """The ``topaz`` executable of ``venv``, creating the virtualenv and installing topaz-em if needed."""
    topaz = venv / "bin" / "topaz"
    if not topaz.exists():
        if not (venv / "bin" / "python").exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "topaz-em", *torch_spec.split()], check=True)
    return topaz


def write_mrcs(images: Path, out: Path) -> list[Path]:
    """Each ``images/*.jpg`` as a float32 MRC ``out/NAME.mrc`` (the array as loaded, row 0 first)."""
    import mrcfile
    import numpy as np
    from PIL import Image

    from crisp.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for jpg in sorted(images.glob("*.jpg")):
        path = out / f"{jpg.stem}.mrc"
        if not path.exists():
            data = np.asarray(Image.open(jpg), dtype=np.float32)
            with atomic_path(path) as tmp:
                with mrcfile.new(tmp, overwrite=True) as mrc:
                    mrc.set_data(data)
        paths.append(path)
    return paths


def timed(commands: list[list[str]], env: dict[str, str]) -> tuple[list[float], tuple[float, float]]:
    """Wall seconds of each of ``commands``, run in turn, and the 1-min load average before / after."""
    before = os.getloadavg()[0]
    seconds = []
    for command in commands:
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    return seconds, (round(before, 2), round(os.getloadavg()[0], 2))


def read_topaz(path: Path, flip_rows: bool = False) -> pd.DataFrame:
    """Topaz's ``extract`` table as CRISP picks in the full-size frame."""
    table = pd.read_csv(path, sep="\t")
    y = table["y_coord"] * TOPAZ_SCALE
    if flip_rows:
        y = 4095 - y
    return pd.DataFrame({"rlnMicrographName": table["image_name"].astype(str),
                         "rlnCoordinateX": table["x_coord"] * TOPAZ_SCALE, "rlnCoordinateY": y,
                         "rlnAutopickFigureOfMerit": table["score"].astype(float)})


def score(picks: pd.DataFrame, val: list[str], test: list[str], threshold: float | None) -> dict:
    """Test AP (all picks ranked) and P / R / F1 at ``threshold`` (None: the best F1's on validation)."""
    from crisp.dataset import read_true_centres
    from crisp.metrics.picking import radius_match_metrics

    radius = DIAMETER_PX / 2
    val_picks = picks[picks["rlnMicrographName"].isin(val)]
    val_m = radius_match_metrics(val_picks, read_true_centres(DATA, val), radius, threshold=threshold)
    if threshold is None:
        threshold = val_m["best_threshold"]
    test_picks = picks[picks["rlnMicrographName"].isin(test)]
    m = radius_match_metrics(test_picks, read_true_centres(DATA, test), radius, threshold=threshold)
    return {"threshold": float(threshold), "test_AP": round(m["AP"], 4), "test_F1": round(m["F1"], 4),
            "test_precision": round(m["precision"], 4), "test_recall": round(m["recall"], 4),
            "test_best_F1": round(m["best_F1"], 4), "val_AP": round(val_m["AP"], 4),
            "n_picks_test": int((test_picks["rlnAutopickFigureOfMerit"] >= threshold).sum()),
            "n_candidates_test": len(test_picks), "n_truth_test": m["n_truth"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="trained CRISP run with a tuned picker.yaml")
    parser.add_argument("--topaz-venv", type=Path, default=Path("/tmp/topaz-venv"))
    parser.add_argument("--topaz-torch", default="torch==2.14.1",
                        help="pip requirement(s) for torch in the Topaz virtualenv (space-separated)")
    parser.add_argument("--topaz-model", default="resnet8_u64")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-topaz"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--score-only", action="store_true",
                        help="rescore the outputs in WORK of an earlier run (timings: WORK/timing.json)")
    args = parser.parse_args(argv)

    import yaml

    from benchmarks.segment_pick_f1 import read_picks
    from crisp.picking.tune import load_picker
    from crisp.run import Run

    run = Run.load(args.run)
    split = yaml.safe_load((run.config_path.parent / "split.yaml").read_text())
    val, test = split["val"], split["test"]
    picker = load_picker(run.picker_path)
    topaz = ensure_topaz(args.topaz_venv, args.topaz_torch)
    work = args.work
    mrcs = write_mrcs(DATA / "images", work / "mrc")
    names = [p.stem for p in mrcs]
    n = len(mrcs)
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t)

    pre, topaz_txt = work / "topaz-pre", work / "topaz.txt"
    crisp_out = work / "crisp"
    timing_path = work / "timing.json"
    if args.score_only:  # rescore the outputs of an earlier run, with its timings
        timing = json.loads(timing_path.read_text())
    else:
        topaz_seconds, topaz_load = timed([
            [str(topaz), "preprocess", "-s", str(TOPAZ_SCALE), "-d", "-1", "-t", "0", "-j", t, "-o", str(pre),
             *map(str, mrcs)],
            [str(topaz), "extract", "-m", args.topaz_model, "-r", str(TOPAZ_RADIUS), "-t", "-20", "-d", "-1",
             "-j", t, "--num-workers", "0", "-o", str(topaz_txt), *(str(pre / f"{s}.mrc") for s in names)],
        ], env)
        crisp_exe = Path(sys.executable).parent / "crisp"
        crisp_seconds, crisp_load = timed([
            [str(crisp_exe), "segment-and-pick", str(args.run), *map(str, mrcs), "-o", str(crisp_out),
             "--threads", t, "--pixel-size", "1.77", "--overwrite"],
        ], env)
        timing = {"topaz": [topaz_seconds, topaz_load], "crisp": [crisp_seconds, crisp_load]}
        timing_path.write_text(json.dumps(timing) + "\n")
    (topaz_steps, topaz_load), (crisp_steps, crisp_load) = timing["topaz"], timing["crisp"]
    topaz_seconds, crisp_seconds = sum(topaz_steps), sum(crisp_steps)

    topaz_picks = read_topaz(topaz_txt)
    rows = {
        f"Topaz {args.topaz_model} (preprocess -s 8 + extract -r 7)":
            {"seconds_per_micrograph": topaz_seconds / n, "load_average": topaz_load,
             **score(topaz_picks, val, test, None)},
        f"CRISP segment-and-pick ({args.run.name})":
            {"seconds_per_micrograph": crisp_seconds / n, "load_average": crisp_load,
             **score(read_picks(crisp_out, names), val, test, picker.threshold)},
    }
    flipped = score(read_topaz(topaz_txt, flip_rows=True), val, test, None)
    crisp_s = crisp_seconds / n
    print(f"{n} micrographs, {args.threads} threads; seconds = whole call(s) / {n}, startup and model "
          "loading included")
    print("| tool | s / micrograph | vs CRISP | test AP | test F1 (val threshold) | test P / R | "
          "n picks (test, >= threshold) | load average before / after |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        s = r["seconds_per_micrograph"]
        print(f"| {label} | {s:.2f} | {s / crisp_s:.2f} | {r['test_AP']:.4f} | {r['test_F1']:.4f} | "
              f"{r['test_precision']:.3f} / {r['test_recall']:.3f} | "
              f"{r['n_picks_test']} of {r['n_candidates_test']} | {r['load_average'][0]} / "
              f"{r['load_average'][1]} |")
    print(f"Topaz threshold (best F1 on val): {rows[next(iter(rows))]['threshold']:.3f}; CRISP threshold: "
          f"{picker.threshold:.3f}; frame check, Topaz test AP with rows flipped: {flipped['test_AP']:.4f}")
    print(f"Topaz seconds per micrograph: preprocess {topaz_steps[0] / n:.2f}, "
          f"extract {topaz_steps[1] / n:.2f}")
    if args.json:
        result = {"threads": args.threads, "n_micrographs": n, "rows": rows, "timing": timing,
                  "topaz_flipped_test_AP": flipped["test_AP"]}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
