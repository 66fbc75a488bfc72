"""Picking metrics against hand-computed cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from crisp.metrics.picking import (
    IOU_THRESHOLDS,
    average_precision,
    best_f1_threshold,
    box_map,
    radius_match,
    radius_match_metrics,
)

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"


def frame(xy, scores=None, mic="a"):
    df = pd.DataFrame({X: [p[0] for p in xy], Y: [p[1] for p in xy]})
    df[M] = mic
    if scores is not None:
        df[S] = scores
    return df


TRUTH = frame([(10, 10), (50, 50), (90, 90)])
# box side 10: p1 = A exactly (IoU 1); p2 2 px off B (IoU 80/120 = 0.667); p3 on nothing;
# p4 1 px off C (IoU 90/110 = 0.818). Given in shuffled order: ranking must come from the score.
PICKS = frame([(70, 70), (10, 10), (91, 90), (52, 50)], [0.7, 0.9, 0.6, 0.8])


def test_box_map_hand_computed():
    out = box_map(PICKS, TRUTH, diameter_px=10)
    # IoU 0.50-0.65: ranks TP TP FP TP; precision 1, 1, 2/3, 3/4; recall 1/3, 2/3, 2/3, 1;
    #   non-increasing envelope 1, 1, 3/4, 3/4 -> AP = 1/3 + 1/3 + 0 + 1/3 * 3/4 = 11/12
    # IoU 0.70-0.80: p2 fails: TP FP FP TP; precision 1, 1/2, 1/3, 1/2; recall 1/3, 1/3, 1/3, 2/3;
    #   envelope 1, 1/2, 1/2, 1/2 -> AP = 1/3 + 1/3 * 1/2 = 1/2
    # IoU 0.85-0.95: only p1: AP = 1/3
    per = out["AP_per_threshold"]
    for t in (0.5, 0.55, 0.6, 0.65):
        assert per[t] == pytest.approx(11 / 12)
    for t in (0.7, 0.75, 0.8):
        assert per[t] == pytest.approx(0.5)
    for t in (0.85, 0.9, 0.95):
        assert per[t] == pytest.approx(1 / 3)
    assert out["mAP"] == pytest.approx((4 * 11 / 12 + 3 * 0.5 + 3 / 3) / 10)
    assert out["AP50"] == pytest.approx(11 / 12)
    # IoU 0.5 over all 4 picks: 3 TP -> precision 3/4, recall 1, F1 = 2 * 0.75 / 1.75
    assert out["precision"] == pytest.approx(0.75)
    assert out["recall"] == pytest.approx(1.0)
    assert out["F1"] == pytest.approx(6 / 7)
    assert len(IOU_THRESHOLDS) == 10
    # F1 at IoU 0.5 after each rank: 1/2, 4/5, 2/3, 6/7 -> the best keeps all (score >= 0.6)
    assert out["best_threshold"] == pytest.approx(0.6)
    assert out["best_F1"] == pytest.approx(6 / 7)


def test_box_map_one_truth_per_pick_and_per_micrograph():
    truth = frame([(10, 10)])
    # two picks on one truth: the higher-scoring one matches, the other is a false positive
    picks = frame([(10, 10), (11, 10)], [0.5, 0.9])
    out = box_map(picks, truth, 10)
    # ranks TP FP: AP = 1 at every threshold the 1 px-off pick reaches (IoU 0.818)...
    assert out["AP_per_threshold"][0.8] == pytest.approx(1.0)
    # ...above it the exact pick (rank 2) matches: precision 1/2 at recall 1
    assert out["AP_per_threshold"][0.9] == pytest.approx(0.5)
    # the same coordinates in another micrograph match nothing
    other = frame([(10, 10)], [1.0], mic="b")
    assert box_map(other, truth, 10)["mAP"] == 0.0
    # micrograph names are compared by stem
    assert box_map(frame([(10, 10)], [1.0], mic="mics/a.mrc"), truth, 10)["mAP"] == pytest.approx(1.0)


def test_missing_micrograph_names_mean_one_micrograph():
    # truth without names, picks naming two micrographs: all are compared as one micrograph
    expected = box_map(PICKS, TRUTH, 10)["mAP"]
    two_names = PICKS.assign(**{M: ["a", "a", "b", "b"]})
    assert box_map(two_names, TRUTH.drop(columns=[M]), 10)["mAP"] == pytest.approx(expected)
    assert radius_match_metrics(PICKS.drop(columns=[M]), TRUTH, 3)["recall"] == pytest.approx(1.0)


def test_box_map_empty_inputs():
    assert box_map(frame([], []), TRUTH, 10)["mAP"] == 0.0
    out = box_map(PICKS, frame([]), 10)
    assert out["mAP"] == 0.0 and out["precision"] == 0.0


def test_average_precision_interpolates():
    # ranks FP TP: precision 0, 1/2; envelope 1/2, 1/2; recall steps 0, 1 -> AP 1/2
    assert average_precision(np.array([False, True]), 1) == pytest.approx(0.5)
    # ranks TP FP TP with 2 truths: precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3 -> 1/2 + 1/2 * 2/3
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx(0.5 + 1 / 3)


def test_radius_match_hand_computed():
    truth = frame([(0, 0), (6, 0)])
    # P3 far away (0.95), P1 between the truths (0.9), P2 2 px left of T1 (0.8), P4 0.5 px off T2 (0.5).
    # Minimal total distance matching: P2-T1 (2) + P4-T2 (0.5) = 2.5 beats P1-T1 + P4-T2 = 3.5 and
    # P2-T1 + P1-T2 = 5, so P1 is unmatched although it is within the radius of both truths.
    picks = frame([(20, 20), (3, 0), (-2, 0), (6.5, 0)], [0.95, 0.9, 0.8, 0.5])
    is_tp, score, dist = radius_match(picks, truth, radius_px=5)
    assert is_tp.tolist() == [False, False, True, True]
    assert np.allclose(dist[2:], [2.0, 0.5])
    out = radius_match_metrics(picks, truth, radius_px=5, threshold=0.85)
    # ranks FP FP TP TP: precision 0, 0, 1/3, 1/2; recall 0, 0, 1/2, 1; envelope 1/2 -> AP = 1/2
    assert out["AP"] == pytest.approx(0.5)
    # threshold 0.85 keeps P3 and P1: both false
    assert (out["precision"], out["recall"], out["F1"]) == (0.0, 0.0, 0.0)
    # F1 at the cuts: 0, 0, 2(1/3)(1/2)/(5/6) = 0.4, 2(1/2)(1)/(3/2) = 2/3 -> best keeps all (>= 0.5)
    assert out["best_threshold"] == pytest.approx(0.5)
    assert out["best_F1"] == pytest.approx(2 / 3)
    assert radius_match_metrics(picks, truth, 5)["recall"] == pytest.approx(1.0)


def test_radius_match_is_maximum_matching_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        truth = frame(rng.uniform(0, 20, (4, 2)).tolist())
        picks = frame(rng.uniform(0, 20, (5, 2)).tolist(), rng.uniform(size=5).tolist())
        is_tp, _, _ = radius_match(picks, truth, 4.0)
        t = truth[[X, Y]].to_numpy()
        p = picks.sort_values(S, ascending=False, kind="stable")[[X, Y]].to_numpy()
        d = np.hypot(*(p[:, None, :] - t[None, :, :]).transpose(2, 0, 1))
        best = 0
        for perm in itertools.permutations(range(5), 4):  # truth k -> pick perm[k]
            best = max(best, sum(d[perm[k], k] <= 4.0 for k in range(4)))
        assert is_tp.sum() == best


def test_best_f1_ties_cut_together():
    # equal scores must be kept or dropped together: the only cuts are after rank 1 and rank 3
    out = best_f1_threshold(np.array([True, False, True]), np.array([0.9, 0.5, 0.5]), 2)
    # cut 1: P=1, R=1/2, F1=2/3; cut 3: P=2/3, R=1, F1=0.8 -> keep all
    assert out["best_threshold"] == 0.5
    assert out["best_F1"] == pytest.approx(0.8)


def brute_force_map(picks: pd.DataFrame, truth: pd.DataFrame, side: float) -> float:
    """COCO-style greedy matching and all-point AP written out loop by loop."""
    ranked = picks.sort_values(S, ascending=False, kind="stable").to_dict("records")
    truths = truth.to_dict("records")
    aps = []
    for thr in IOU_THRESHOLDS:
        used = set()
        flags = []
        for p in ranked:
            best, best_iou = None, thr
            for k, t in enumerate(truths):
                if k in used or t[M] != p[M]:
                    continue
                inter = max(0.0, side - abs(p[X] - t[X])) * max(0.0, side - abs(p[Y] - t[Y]))
                iou = inter / (2 * side * side - inter)
                if iou >= best_iou:
                    best, best_iou = k, iou
            if best is not None:
                used.add(best)
            flags.append(best is not None)
        # all-point interpolation: sum over recall steps of the best precision at >= that recall
        tp = np.cumsum(flags)
        precision = tp / np.arange(1, len(flags) + 1)
        ap = 0.0
        for i, is_tp in enumerate(flags):
            if is_tp:
                ap += max(precision[i:]) / len(truths)
        aps.append(ap)
    return float(np.mean(aps))


def test_box_map_against_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(15):
        truth = pd.DataFrame({X: rng.uniform(0, 100, 12), Y: rng.uniform(0, 100, 12),
                              M: rng.choice(["a", "b"], 12)})
        jitter = rng.normal(0, 3, (12, 2))
        picks = pd.DataFrame({X: truth[X] + jitter[:, 0], Y: truth[Y] + jitter[:, 1], M: truth[M]})
        extra = pd.DataFrame({X: rng.uniform(0, 100, 6), Y: rng.uniform(0, 100, 6),
                              M: rng.choice(["a", "b"], 6)})
        picks = pd.concat([picks, extra], ignore_index=True).assign(**{S: rng.uniform(size=18)})
        assert box_map(picks, truth, 15.0)["mAP"] == pytest.approx(brute_force_map(picks, truth, 15.0))


def test_box_map_perfect_and_disjoint():
    rng = np.random.default_rng(2)
    truth = pd.DataFrame({X: np.arange(10) * 50.0, Y: rng.uniform(0, 500, 10), M: "a"})
    perfect = truth.assign(**{S: rng.uniform(size=10)})
    assert box_map(perfect, truth, 20)["mAP"] == pytest.approx(1.0)
    moved = perfect.assign(**{X: perfect[X] + 20})  # boxes touch but do not overlap
    assert box_map(moved, truth, 20)["mAP"] == 0.0
