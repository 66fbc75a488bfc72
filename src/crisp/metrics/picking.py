"""Picking metrics: box-IoU mAP (as in the CRISP paper) and radius matching (as in Topaz).

Both take picks and truth as DataFrames with ``rlnCoordinateX`` / ``rlnCoordinateY`` (pixels) and
optionally ``rlnMicrographName`` (when both have it, picks are matched only to truths of the same
micrograph; names are compared by file stem, so ``mics/a.mrc`` and ``a`` are the same micrograph;
when either lacks it, everything is one micrograph). Picks carry a
score column (default ``rlnAutopickFigureOfMerit``; all picks score 1 when it is absent) and are
ranked by score across all micrographs (ties: input order).

Average precision is the area under the precision-recall curve with all-point interpolation:
precision is made non-increasing in recall (each precision replaced by the best precision at the
same or higher recall), then summed over the recall steps, ``AP = sum_k (R_k - R_{k-1}) P_k``.
"""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

X, Y, SCORE, MIC = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def _stem(name: object) -> str:
    return PurePath(str(name)).stem if str(name) else ""


def _prepare(picks: pd.DataFrame, truth: pd.DataFrame, score_column: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of picks (xy, score, micrograph id) ranked by score, and truth (xy, micrograph id)."""
    names = {}
    by_name = MIC in picks.columns and MIC in truth.columns

    def mic_ids(df: pd.DataFrame) -> np.ndarray:
        if not by_name:
            return np.zeros(len(df), dtype=np.int64)
        stems = [_stem(n) for n in df[MIC].to_numpy()]
        return np.array([names.setdefault(s, len(names)) for s in stems], dtype=np.int64)

    p_mic, t_mic = mic_ids(picks), mic_ids(truth)
    p_xy = picks[[X, Y]].to_numpy(dtype=np.float64).reshape(-1, 2)
    t_xy = truth[[X, Y]].to_numpy(dtype=np.float64).reshape(-1, 2)
    score = (picks[score_column].to_numpy(dtype=np.float64) if score_column in picks.columns
             else np.ones(len(picks)))
    order = np.argsort(-score, kind="stable")
    return p_xy[order], score[order], p_mic[order], t_xy, t_mic, order


def average_precision(is_tp: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP of picks already ranked by decreasing score.

    Parameters
    ----------
    is_tp
        Boolean per ranked pick: True when it matched a truth.
    n_truth
        Number of true particles (the recall denominator).
    """
    if n_truth == 0 or len(is_tp) == 0:
        return 0.0
    tp = np.cumsum(is_tp)
    precision = tp / np.arange(1, len(is_tp) + 1)
    recall = tp / n_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def _box_pairs(p_xy, p_mic, t_xy, t_mic, side: float, min_iou: float):
    """Pick-truth pairs from the same micrograph whose square boxes have IoU >= ``min_iou``."""
    if len(p_xy) == 0 or len(t_xy) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # separate micrographs by a large offset so one KD-tree serves all
    shift = (np.abs(np.concatenate([p_xy, t_xy])).max() + 4 * side + 1) * 2
    p_pts = p_xy + np.column_stack([p_mic * shift, np.zeros(len(p_mic))])
    t_pts = t_xy + np.column_stack([t_mic * shift, np.zeros(len(t_mic))])
    # IoU >= min_iou needs |dx| <= side (1 - min_iou) / (1 + min_iou) along each axis at least
    reach = side * (1 - min_iou) / (1 + min_iou) + 1e-9
    lists = cKDTree(t_pts).query_ball_point(p_pts, r=reach, p=np.inf)
    counts = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    pi = np.repeat(np.arange(len(p_xy)), counts)
    ti = np.fromiter((t for v in lists for t in v), dtype=np.int64, count=int(counts.sum()))
    inter = (np.clip(side - np.abs(p_xy[pi, 0] - t_xy[ti, 0]), 0, None)
             * np.clip(side - np.abs(p_xy[pi, 1] - t_xy[ti, 1]), 0, None))
    iou = inter / (2 * side * side - inter)
    keep = iou >= min_iou
    return pi[keep], ti[keep], iou[keep]


def _greedy_match(pi: np.ndarray, ti: np.ndarray, iou: np.ndarray, n_picks: int, threshold: float
                  ) -> np.ndarray:
    """COCO-style matching: in rank order, each pick takes the best-IoU unmatched truth >= threshold."""
    is_tp = np.zeros(n_picks, dtype=bool)
    ok = iou >= threshold
    pi, ti, iou = pi[ok], ti[ok], iou[ok]
    order = np.lexsort((-iou, pi))  # by pick rank, then by decreasing IoU
    used: set[int] = set()
    for p, t in zip(pi[order].tolist(), ti[order].tolist(), strict=True):
        if is_tp[p] or t in used:
            continue
        is_tp[p] = True
        used.add(t)
    return is_tp


def _prf(n_tp: int, n_picks: int, n_truth: int) -> tuple[float, float, float]:
    precision = n_tp / n_picks if n_picks else 0.0
    recall = n_tp / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def box_map(picks: pd.DataFrame, truth: pd.DataFrame, diameter_px: float,
            score_column: str = SCORE, iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS) -> dict:
    """Box-IoU mean average precision, as in the CRISP paper (COCO-style).

    Every centre becomes an axis-aligned square box of side ``diameter_px``. At each IoU
    threshold (0.50, 0.55, ..., 0.95) the picks, ranked by score across all micrographs, are
    matched greedily: each takes the unmatched truth box of the same micrograph with the highest
    IoU at or above the threshold. AP is computed with all-point interpolation (module docstring)
    and averaged over the thresholds. No per-image detection limit is applied.

    Parameters
    ----------
    picks, truth
        DataFrames with ``rlnCoordinateX``/``rlnCoordinateY`` (px) and optionally
        ``rlnMicrographName``; ``picks`` with ``score_column``.
    diameter_px
        Box side in pixels.

    Returns
    -------
    dict
        ``mAP`` (mean over thresholds), ``AP50``, ``AP75``, ``AP_per_threshold`` (dict threshold ->
        AP), and at IoU 0.5 over all picks: ``precision``, ``recall``, ``F1``; the score threshold
        maximising F1 at IoU 0.5 (``best_threshold``, ``best_F1``, ``best_precision``,
        ``best_recall``, see :func:`best_f1_threshold`); ``n_picks``, ``n_truth``.
    """
    if diameter_px <= 0:
        raise ValueError(f"diameter_px must be positive (got {diameter_px})")
    p_xy, score, p_mic, t_xy, t_mic, _ = _prepare(picks, truth, score_column)
    n_truth = len(t_xy)
    pi, ti, iou = _box_pairs(p_xy, p_mic, t_xy, t_mic, float(diameter_px), min(min(iou_thresholds), 0.5))
    per = {float(thr): average_precision(_greedy_match(pi, ti, iou, len(p_xy), thr), n_truth)
           for thr in iou_thresholds}
    is_tp50 = _greedy_match(pi, ti, iou, len(p_xy), 0.5)
    precision, recall, f1 = _prf(int(is_tp50.sum()), len(p_xy), n_truth)
    return {"mAP": float(np.mean(list(per.values()))) if per else 0.0,
            "AP50": per.get(0.5, float("nan")), "AP75": per.get(0.75, float("nan")),
            "AP_per_threshold": per, "precision": precision, "recall": recall, "F1": f1,
            **best_f1_threshold(is_tp50, score, n_truth), "n_picks": len(p_xy), "n_truth": n_truth}


def radius_match(picks: pd.DataFrame, truth: pd.DataFrame, radius_px: float,
                 score_column: str = SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of picks to truths within ``radius_px`` (Hungarian, per micrograph).

    Returns
    -------
    is_tp, score, distance
        Per pick ranked by decreasing score: whether it matched, its score, and the distance to
        its matched truth (NaN when unmatched).
    """
    p_xy, score, p_mic, t_xy, t_mic, _ = _prepare(picks, truth, score_column)
    is_tp = np.zeros(len(p_xy), dtype=bool)
    dist_out = np.full(len(p_xy), np.nan)
    for mic in np.unique(p_mic):
        pk = np.flatnonzero(p_mic == mic)
        tk = np.flatnonzero(t_mic == mic)
        if len(tk) == 0:
            continue
        dist = np.hypot(p_xy[pk, None, 0] - t_xy[None, tk, 0], p_xy[pk, None, 1] - t_xy[None, tk, 1])
        # invalid pairs cost more than any set of valid ones, so the number of matches is maximal
        big = (min(len(pk), len(tk)) + 1) * (radius_px + 1)
        cost = np.where(dist <= radius_px, dist, big)
        rows, cols = linear_sum_assignment(cost)
        ok = dist[rows, cols] <= radius_px
        is_tp[pk[rows[ok]]] = True
        dist_out[pk[rows[ok]]] = dist[rows[ok], cols[ok]]
    return is_tp, score, dist_out


def radius_match_metrics(picks: pd.DataFrame, truth: pd.DataFrame, radius_px: float,
                         threshold: float | None = None, score_column: str = SCORE) -> dict:
    """Precision, recall, F1 and average precision by radius matching, as in Topaz.

    Picks and truths of each micrograph are matched one-to-one within ``radius_px``, minimising
    the total distance (``scipy.optimize.linear_sum_assignment``); the match is made once over all
    picks, then picks are ranked by score across micrographs to trace the precision-recall curve.

    Parameters
    ----------
    picks, truth
        DataFrames as for :func:`box_map`.
    radius_px
        Largest pick-truth distance of a match, in pixels.
    threshold
        Score threshold for ``precision``/``recall``/``F1`` (picks with score >= threshold count);
        None = all picks.

    Returns
    -------
    dict
        ``AP``, ``precision``, ``recall``, ``F1`` (at ``threshold``), ``threshold``,
        ``best_threshold`` (the score threshold that maximises F1) with ``best_F1``,
        ``best_precision``, ``best_recall``; ``n_picks``, ``n_truth``.
    """
    is_tp, score, _ = radius_match(picks, truth, radius_px, score_column)
    n_truth = len(truth)
    sel = np.ones(len(score), bool) if threshold is None else score >= threshold
    precision, recall, f1 = _prf(int(is_tp[sel].sum()), int(sel.sum()), n_truth)
    best = best_f1_threshold(is_tp, score, n_truth)
    return {"AP": average_precision(is_tp, n_truth), "precision": precision, "recall": recall, "F1": f1,
            "threshold": threshold, **best, "n_picks": len(score), "n_truth": n_truth}


def best_f1_threshold(is_tp: np.ndarray, score: np.ndarray, n_truth: int) -> dict:
    """The score threshold maximising F1 over picks ranked by decreasing ``score``.

    Only cut points between distinct scores are considered (picks with equal scores are kept or
    dropped together). Returns ``best_threshold`` (keep picks with score >= it; -inf when there are
    no picks), ``best_F1``, ``best_precision``, ``best_recall``.
    """
    if len(score) == 0 or n_truth == 0:
        return {"best_threshold": float("-inf"), "best_F1": 0.0, "best_precision": 0.0,
                "best_recall": 0.0}
    tp = np.cumsum(is_tp)
    n = np.arange(1, len(score) + 1)
    last_of_tie = np.r_[score[1:] != score[:-1], True]
    precision = tp / n
    recall = tp / n_truth
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(last_of_tie, f1, -1.0)
    k = int(np.argmax(f1))
    return {"best_threshold": float(score[k]), "best_F1": float(f1[k]),
            "best_precision": float(precision[k]), "best_recall": float(recall[k])}


def recall_at_n(picks: pd.DataFrame, truth: pd.DataFrame, n: float, radius_px: float,
                score_column: str = SCORE) -> dict:
    """Recall of (possibly sparse) true centres by the ``n`` highest-scoring picks of each micrograph.

    The measure for sparse annotations, where a pick away from every annotated centre may be an
    unannotated particle, so precision (and F1, AP, mAP) cannot be measured: on each micrograph the
    ``ceil(n)`` picks with the highest scores are kept (all of them when there are fewer; ties in
    input order), and they are matched one-to-one to the true centres of that micrograph within
    ``radius_px`` (:func:`radius_match`: Hungarian, per micrograph). A finder that returns fewer
    than ``n`` picks gains nothing from it: the budget is the same for every finder.

    Parameters
    ----------
    picks, truth
        DataFrames as for :func:`box_map`; ``truth`` may hold only some of the particles.
    n
        Expected particles per micrograph (> 0; a fraction is rounded up).
    radius_px
        Largest pick-truth distance of a match, in pixels (CRISP uses half the particle diameter).
    score_column
        Score of the picks (all 1 when absent).

    Returns
    -------
    dict
        ``recall_at_n`` (matched true centres / all true centres; 0 without truths), ``n_matched``,
        ``n_truth``, ``n_kept`` (picks kept over all micrographs), ``picks_per_micrograph`` (mean
        kept per micrograph that has picks or true centres), ``threshold_at_n`` (median, over the
        micrographs with picks, of the score of the last kept pick: the ``ceil(n)``-th, or the lowest
        when a micrograph has fewer; NaN without picks), ``n_micrographs`` (with picks or truths).
    """
    n = float(n)
    if not (np.isfinite(n) and n > 0):
        raise ValueError(f"n must be a positive number of picks per micrograph (got {n})")
    k = int(np.ceil(n))
    _, score, p_mic, _, t_mic, order = _prepare(picks, truth, score_column)
    keep = np.zeros(len(p_mic), dtype=bool)
    last_scores = []
    for mic in np.unique(p_mic):
        ranks = np.flatnonzero(p_mic == mic)[:k]  # already ranked by decreasing score
        keep[ranks] = True
        last_scores.append(score[ranks[-1]])
    kept = picks.iloc[np.sort(order[keep])]
    is_tp, _, _ = radius_match(kept, truth, radius_px, score_column)
    n_truth = len(truth)
    n_matched = int(is_tp.sum())
    n_mics = len(np.union1d(p_mic, t_mic))
    return {"recall_at_n": n_matched / n_truth if n_truth else 0.0, "n_matched": n_matched,
            "n_truth": n_truth, "n_kept": int(keep.sum()),
            "picks_per_micrograph": float(keep.sum()) / n_mics if n_mics else 0.0,
            "threshold_at_n": float(np.median(last_scores)) if last_scores else float("nan"),
            "n_micrographs": n_mics}
