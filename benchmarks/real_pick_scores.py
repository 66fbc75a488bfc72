"""Does another figure of merit pick better? Scores of the same candidates on a real-data run's maps.

For a work folder of ``benchmarks/real_data.py``: the run's tuned picker finds the candidates on the
validation and test maps; each candidate then gets several scores computed from the probability map
around it (on a grid binned 4x):

* ``g0.05`` ... ``g0.3``: the map smoothed by a Gaussian of that fraction of the diameter (the
  grid-nms score is one of these, ``score`` is the picker's own);
* ``disc25``, ``disc50``: the mean probability in a disc of a quarter / half the diameter;
* ``ring``: the mean probability in the ring from half to one diameter (the neighbours);
* ``max``: the largest probability within an eighth of the diameter;
* ``area``: the area of the connected p >= 0.5 blob under the centre, over the particle's disc;
* ``logistic``: a logistic regression on all of the above, fitted on the validation candidates
  (true = radius-matched to an annotation).

For each score: the threshold that maximises F1 on validation (radius matching at half the diameter),
test precision, recall and F1 at it, the best test F1 over all thresholds (an oracle), and test AP.
If every score has about the same oracle F1, the limit is the candidate set (particles the map misses
or calls), not how the candidates are ranked.

Usage::

    python -m benchmarks.real_pick_scores --work /tmp/crisp-real [--method threshold]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import real_data

BIN = 4


def candidate_features(prob: np.ndarray, picks: pd.DataFrame, diameter_px: float) -> pd.DataFrame:
    """Scores of each pick computed from ``prob`` (see the module docstring); one row per pick."""
    from scipy import ndimage

    small = prob[::BIN, ::BIN].astype(np.float32)
    d = diameter_px / BIN
    x = picks["rlnCoordinateX"].to_numpy(float) / BIN
    y = picks["rlnCoordinateY"].to_numpy(float) / BIN
    at = [y, x]
    out = {"score": picks["rlnAutopickFigureOfMerit"].to_numpy(float)}
    for fraction in (0.05, 0.1, 0.2, 0.3):
        smooth = ndimage.gaussian_filter(small, fraction * d)
        out[f"g{fraction}"] = ndimage.map_coordinates(smooth, at, order=1)
    half = int(np.ceil(d))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    r = np.hypot(yy, xx)
    for name, inside in (("disc25", r <= d / 8), ("disc50", r <= d / 4), ("ring", (r > d / 2) & (r <= d))):
        kernel = inside.astype(np.float32) / inside.sum()
        out[name] = ndimage.map_coordinates(ndimage.convolve(small, kernel, mode="constant"), at, order=1)
    out["max"] = ndimage.map_coordinates(ndimage.maximum_filter(small, size=2 * int(d / 8) + 1), at, order=0)
    labels, _ = ndimage.label(small >= 0.5)
    area = np.bincount(labels.ravel()).astype(float)
    area[0] = 0.0
    rows = np.clip(np.round(y).astype(int), 0, small.shape[0] - 1)
    cols = np.clip(np.round(x).astype(int), 0, small.shape[1] - 1)
    out["area"] = area[labels[rows, cols]] / (np.pi * (d / 2) ** 2)
    return pd.DataFrame(out)


def candidates(prob: dict[str, np.ndarray], names: list[str], picker, centres: pd.DataFrame):
    """Picks of the tuned picker on ``names``, their features, whether each is a true pick, and the truth."""
    from crisp.metrics.picking import radius_match
    from crisp.picking.tune import pick_maps

    maps = {n: prob[n] for n in names}
    picks = pick_maps(maps, real_data.DIAMETER_PX, picker.finder, picker.params, picker.border_fraction)
    picks = picks.reset_index(drop=True)
    features = pd.concat([candidate_features(prob[n], picks[picks["rlnMicrographName"] == n],
                                             real_data.DIAMETER_PX) for n in names], ignore_index=True)
    truth = centres[centres["rlnMicrographName"].isin(names)]
    is_tp_ranked, _, _ = radius_match(picks, truth, real_data.DIAMETER_PX / 2)
    order = np.argsort(-picks["rlnAutopickFigureOfMerit"].to_numpy(float), kind="stable")
    is_tp = np.zeros(len(picks), bool)
    is_tp[order] = is_tp_ranked
    return picks, features, is_tp, truth


def score_table(val, test) -> pd.DataFrame:
    """One row per score: validation-tuned threshold, test P/R/F1 at it, the oracle test threshold and
    F1, test AP."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from crisp.metrics.picking import radius_match_metrics

    (pv, fv, yv, tv), (pt, ft, _, tt) = val, test
    columns = {c: (fv[c].to_numpy(), ft[c].to_numpy()) for c in fv.columns}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(fv, yv)
    columns["logistic"] = (model.predict_proba(fv)[:, 1], model.predict_proba(ft)[:, 1])
    rows = []
    radius = real_data.DIAMETER_PX / 2
    for name, (sv, st) in columns.items():
        mv = radius_match_metrics(pv.assign(rlnAutopickFigureOfMerit=sv), tv, radius)
        mt = radius_match_metrics(pt.assign(rlnAutopickFigureOfMerit=st), tt, radius,
                                  threshold=mv["best_threshold"])
        rows.append({"score": name, "val_threshold": mv["best_threshold"], "val_F1": mv["best_F1"],
                     "test_P": mt["precision"], "test_R": mt["recall"], "test_F1": mt["F1"],
                     "test_oracle_threshold": mt["best_threshold"], "test_oracle_F1": mt["best_F1"],
                     "test_AP": mt["AP"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a finished real_data.py work folder")
    parser.add_argument("--method", default="threshold", help="label method of the run (default threshold)")
    parser.add_argument("--data", type=Path, default=real_data.DEFAULT_DATA,
                        help="the empiar10017-dev folder")
    args = parser.parse_args(argv)
    from crisp.dataset import read_split
    from crisp.picking.tune import load_picker
    from crisp.workflow.evaluate_run import read_maps

    split = read_split(args.work / f"labels-{args.method}" / "split.yaml")
    names = split.val + split.test
    prob = read_maps(args.work / f"seg-{args.method}", names)
    centres = real_data.provided_centres(args.data, names)
    picker = load_picker(args.work / f"run-{args.method}" / "picker.yaml")
    table = score_table(candidates(prob, split.val, picker, centres),
                        candidates(prob, split.test, picker, centres))
    print(f"{args.work}: {picker.finder} {picker.params}, edge margin {picker.border_fraction} d")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
