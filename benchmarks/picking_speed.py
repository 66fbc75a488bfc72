"""Speed of the centre finders on 1024 x 1024 probability maps (CPU, default parameters).

Synthetic maps: discs of the particle diameter at random non-overlapping positions (about 20 %
coverage), probability 0.9 inside, 0.05 outside, plus Gaussian noise (sigma 0.08). For each finder
and diameter: median seconds per map over ``--repeats`` runs (after one warm-up run), the number
of picks with score >= 0.5, and the fraction of true centres recovered within diameter / 4.

Usage::

    python -m benchmarks.picking_speed [--repeats 5] [--diameters 24,48,96] [--size 1024]

Targets: grid-nms and crocker-grier <= 0.1 s per map, contour <= 0.3 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree

from crisp.picking import available_finders, find_particles


def synthetic_map(size: int, diameter: float, coverage: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_target = int(coverage * size * size / (np.pi * diameter**2 / 4))
    centres = np.zeros((0, 2))
    for _ in range(50 * n_target):
        if len(centres) >= n_target:
            break
        c = rng.uniform(diameter, size - diameter, 2)
        if len(centres) == 0 or np.min(np.hypot(*(centres - c).T)) > 1.1 * diameter:
            centres = np.vstack([centres, c])
    yy, xx = np.mgrid[:size, :size]
    inside = np.zeros((size, size), bool)
    tree = cKDTree(centres)
    dist, _ = tree.query(np.column_stack([xx.ravel(), yy.ravel()]))
    inside = (dist <= diameter / 2).reshape(size, size)
    prob = np.where(inside, 0.9, 0.05) + rng.normal(0, 0.08, (size, size))
    return np.clip(prob, 0, 1).astype(np.float32), centres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--diameters", default="24,48,96")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    rows = []
    for diameter in [float(d) for d in args.diameters.split(",")]:
        prob, centres = synthetic_map(args.size, diameter)
        for finder in available_finders():
            find_particles(prob, diameter, finder)  # warm-up (imports, caches)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                picks = find_particles(prob, diameter, finder)
                times.append(time.perf_counter() - start)
            confident = picks[picks["rlnAutopickFigureOfMerit"] >= 0.5]
            xy = confident[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
            recall = float(np.mean(cKDTree(xy).query(centres)[0] <= diameter / 4)) if len(xy) else 0.0
            rows.append((finder, diameter, len(centres), float(np.median(times)), len(confident), recall))
    try:
        import numba  # noqa: F401

        engine = "numba"
    except ImportError:
        engine = "python"
    print(f"{args.size} x {args.size} maps, median of {args.repeats} runs; trackpy engine: {engine}")
    print(f"{'finder':15s} {'diam px':>7s} {'true':>5s} {'s/map':>8s} {'picks>=0.5':>10s} {'recall':>7s}")
    for finder, diameter, n_true, seconds, n_picks, recall in rows:
        print(f"{finder:15s} {diameter:7.0f} {n_true:5d} {seconds:8.4f} {n_picks:10d} {recall:7.3f}")


if __name__ == "__main__":
    main()
