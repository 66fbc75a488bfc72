"""Evaluate a training run on a subset of its dataset: segment, pick, score, write RUN/evaluation/.

:func:`evaluate_run` segments the subset's micrographs with the run (:func:`crisp.predict.segment_files`),
scores the probability maps against the true masks (:func:`crisp.metrics.pixel.pixel_metrics`,
foreground where p >= 0.5, pooled over the subset) and, given a picker and true centres, picks
particles (:func:`crisp.picking.files.pick_files`, every candidate kept with its score) and scores
them by radius matching at half the particle diameter (precision, recall and F1 at the picker's
threshold; AP over all candidates) and by box-IoU mAP (:mod:`crisp.metrics.picking`).

The result goes to ``RUN/evaluation/<subset>.json`` (read by :mod:`crisp.compare`)::

    {"subset": "test", "micrographs": 4, "dataset": "...", "probabilities": "...", "picks": "...",
     "pixel": {"iou": ..., "precision": ..., "recall": ..., "f1": ..., "accuracy": ...},
     "picking": {"radius_px": ..., "threshold": ..., "precision": ..., "recall": ..., "F1": ...,
                 "AP": ..., "n_picks": ..., "n_truth": ...},
     "box": {"mAP": ..., "AP50": ..., "AP75": ...}}

Paths in the file are relative to the run directory (so a project folder can be moved).

Sparse truth (the dataset's annotation holds only some of the particles; ``expected_particles`` = N
particles per micrograph): a pick or a foreground pixel away from every annotated particle may be an
unannotated particle, so precision, F1, IoU, accuracy, AP and mAP cannot be measured and are not
reported. The record then holds ``"sparse_truth": true``, ``"expected_particles": N``, pixel
``recall`` only, and picking ``recall`` (at the picker's threshold) and ``recall_at_n``
(:func:`crisp.metrics.picking.recall_at_n`: the N highest-scoring picks of each micrograph), both by
radius matching at half the particle diameter; no ``box`` section::

     "picking": {"radius_px": ..., "threshold": ..., "expected_particles": ..., "recall": ...,
                 "recall_at_n": ..., "picks_per_micrograph": ..., "n_picks": ...,
                 "n_picks_at_threshold": ..., "n_truth": ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crisp.atomic import write_text_atomic
from crisp.dataset import UNLABELLED, dataset_diameter_px, read_true_centres, read_true_masks
from crisp.errors import CrispError

NAME, X, Y, SCORE = "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"
SPARSE_NOTE = ("the truth is sparse (--expected-particles): a pick or pixel away from every annotated "
               "particle may be an unannotated particle, so precision, F1, IoU, accuracy, AP and mAP "
               "are not measurable and not reported")
"""The line the CLI prints when it leaves those metrics out."""


def check_expected_particles(value: float | None, option: str = "--expected-particles") -> float | None:
    """``value`` as a float when it is a positive finite number, None when None, else a CrispError."""
    from crisp.config import check_number

    return None if value is None else float(check_number(value, option, gt=0))


def evaluation_path(run_dir: str | os.PathLike[str], subset: str = "test") -> Path:
    """``RUN/evaluation/<subset>.json`` (:meth:`crisp.run.Run.evaluation_path`)."""
    from crisp.run import Run

    return Run(run_dir).evaluation_path(subset)


def read_evaluation(run_dir: str | os.PathLike[str], subset: str = "test") -> dict[str, Any] | None:
    """The evaluation record of a run (None when absent)."""
    path = evaluation_path(run_dir, subset)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CrispError(f"not a readable evaluation file ({err})", path) from None


def resolve_recorded(run_dir: str | os.PathLike[str], recorded: str | None) -> Path | None:
    """A path recorded in an evaluation file (relative to the run directory) as a usable path."""
    if not recorded:
        return None
    path = Path(recorded)
    return path if path.is_absolute() else Path(run_dir) / path


def subset_names(dataset_dir: str | os.PathLike[str], subset: str) -> list[str]:
    """Names of a subset of the dataset's ``split.yaml`` (non-empty)."""
    from crisp.dataset import DatasetFolder

    return DatasetFolder.open(dataset_dir).subset(subset)


def read_maps(prob_dir: str | os.PathLike[str], names: Iterable[str]) -> dict[str, np.ndarray]:
    """``PROB_DIR/NAME.mrc`` probability maps as float32 arrays."""
    from crisp.io.micrographs import read_micrograph

    maps = {}
    for name in names:
        path = Path(prob_dir) / f"{name}.mrc"
        if not path.is_file():
            raise CrispError(f"no probability map for micrograph '{name}'", path)
        maps[name] = read_micrograph(path).data
    return maps


def segment_subset(run_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str], subset: str,
                   out_dir: str | os.PathLike[str], *, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Probability maps of a subset's micrographs in ``out_dir`` (existing maps kept unless ``overwrite``)."""
    from crisp.dataset import DatasetFolder
    from crisp.predict import segment_files

    folder = DatasetFolder.open(dataset_dir)
    names = subset_names(dataset_dir, subset)
    segment_files(run_dir, [folder.micrograph(n) for n in names], out_dir, overwrite=overwrite,
                  progress=progress)
    return Path(out_dir)


def tune_on_maps(prob_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str],
                 out_path: str | os.PathLike[str], *, subset: str = "val",
                 diameter_px: float | None = None, finders: list[str] | None = None,
                 progress: bool = True, expected_particles: float | None = None):
    """Tune the picker on a subset's probability maps; write ``picker.yaml`` (+ tuning CSV); return it.

    ``expected_particles`` (particles per micrograph): the subset's annotation is sparse; the picker
    is tuned on recall at that many picks (:func:`crisp.picking.tune.tune_picker`).
    """
    from crisp.io.micrographs import median_pixel_size
    from crisp.picking.tune import tune_picker, write_tuning

    names = subset_names(dataset_dir, subset)
    diameter_px = diameter_px or dataset_diameter_px(dataset_dir)
    if diameter_px is None:
        raise CrispError("particle diameter unknown (no diameter_px in simulation.yaml or labels.yaml)",
                         dataset_dir)
    truth = read_true_centres(dataset_dir, names)
    config, table = tune_picker(read_maps(prob_dir, names), truth, diameter_px, finders=finders,
                                progress=progress,
                                pixel_size=median_pixel_size([Path(prob_dir) / f"{n}.mrc" for n in names]),
                                expected_particles=expected_particles)
    write_tuning(config, table, out_path)
    return config


def run_picker(run_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str], *,
               progress: bool = True, expected_particles: float | None = None) -> Path:
    """``RUN/picker.yaml``, tuned on the run's own validation maps when it is not there yet.

    Segments the dataset's validation micrographs into ``RUN/probabilities/val`` and tunes the picker
    on them (:func:`tune_on_maps`, with ``expected_particles`` when the validation annotation is
    sparse); a run that has its picker keeps it (its ``tuned_on`` says how it was tuned).
    """
    from crisp.run import Run

    run = Path(run_dir)
    picker = Run(run).picker_path
    if not picker.is_file():
        segment_subset(run, dataset_dir, "val", Run(run).maps_dir("val"), progress=progress)
        tune_on_maps(Run(run).maps_dir("val"), dataset_dir, picker, progress=progress,
                     expected_particles=expected_particles)
    return picker


def match_picks(picks: pd.DataFrame, truth: pd.DataFrame, radius_px: float
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mark radius matches: ``is_true_positive`` on picks and ``is_matched`` on truth (for figures).

    The matching is :func:`crisp.metrics.picking.radius_match` (one-to-one, Hungarian, per micrograph);
    the matched truth of each pick is found again as its nearest truth at the reported distance.
    """
    from crisp.metrics.picking import radius_match

    picks = picks.reset_index(drop=True).copy()
    truth = truth.reset_index(drop=True).copy()
    is_tp_ranked, _, dist = radius_match(picks, truth, radius_px)
    score = picks[SCORE].to_numpy(float) if SCORE in picks else np.ones(len(picks))
    order = np.argsort(-score, kind="stable")
    is_tp = np.zeros(len(picks), bool)
    is_tp[order] = is_tp_ranked
    distance = np.full(len(picks), np.nan)
    distance[order] = dist
    picks["is_true_positive"] = is_tp
    matched = np.zeros(len(truth), bool)
    p_stem, t_stem = _stems(picks), _stems(truth)
    t_xy = truth[[X, Y]].to_numpy(float)
    for k in np.flatnonzero(is_tp):
        same = np.flatnonzero((t_stem == p_stem.iloc[k]).to_numpy() & ~matched)
        if len(same) == 0:
            continue
        d = np.hypot(t_xy[same, 0] - picks.at[k, X], t_xy[same, 1] - picks.at[k, Y])
        matched[same[int(np.argmin(np.abs(d - distance[k])))]] = True
    truth["is_matched"] = matched
    return picks, truth


def precision_recall_curve(picks: pd.DataFrame, truth: pd.DataFrame, radius_px: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the picks ranked by score, radius matching."""
    from crisp.metrics.picking import radius_match

    is_tp, _, _ = radius_match(picks, truth, radius_px)
    if len(is_tp) == 0 or len(truth) == 0:
        return np.zeros(1), np.zeros(1)
    tp = np.cumsum(is_tp)
    return tp / len(truth), tp / np.arange(1, len(is_tp) + 1)


def picking_metrics(picks: pd.DataFrame, truth: pd.DataFrame, diameter_px: float,
                    threshold: float | None, expected_particles: float | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Radius-matching metrics (radius = diameter / 2, at ``threshold``) and box-IoU mAP.

    With ``expected_particles`` (sparse truth) only recall is measurable: the first dict holds
    ``recall`` at ``threshold`` and ``recall_at_n`` (:func:`crisp.metrics.picking.recall_at_n`) with
    ``picks_per_micrograph``, ``n_picks`` (all), ``n_picks_at_threshold`` and ``n_truth``; the second
    (box mAP) is empty.
    """
    from crisp.metrics.picking import box_map, radius_match_metrics, recall_at_n

    radius = diameter_px / 2
    radius_metrics = radius_match_metrics(picks, truth, radius, threshold=threshold)
    if expected_particles is not None:
        at_n = recall_at_n(picks, truth, expected_particles, radius)
        score = picks[SCORE].to_numpy(float) if SCORE in picks else np.ones(len(picks))
        n_at_threshold = len(picks) if threshold is None else int(np.sum(score >= threshold))
        picking = {"radius_px": float(radius), "threshold": threshold,
                   "expected_particles": float(expected_particles),
                   "recall": float(radius_metrics["recall"]), "recall_at_n": float(at_n["recall_at_n"]),
                   "picks_per_micrograph": float(at_n["picks_per_micrograph"]),
                   "n_picks": int(radius_metrics["n_picks"]), "n_picks_at_threshold": n_at_threshold,
                   "n_truth": int(radius_metrics["n_truth"])}
        return picking, {}
    picking = {"radius_px": float(radius), "threshold": threshold,
               **{k: float(radius_metrics[k]) for k in ("precision", "recall", "F1", "AP", "best_F1")},
               "n_picks": int(radius_metrics["n_picks"]), "n_truth": int(radius_metrics["n_truth"])}
    boxes = box_map(picks, truth, diameter_px)
    box = {k: float(boxes[k]) for k in ("mAP", "AP50", "AP75")}
    return picking, box


def score_maps_picks(prob_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str],
                     names: Iterable[str], picker, expected_particles: float | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pick probability maps in memory with a picker and score the picks (:func:`picking_metrics`).

    Parameters
    ----------
    prob_dir
        Folder of ``NAME.mrc`` probability maps (the micrographs' size).
    dataset_dir
        Dataset folder with ``coordinates/NAME.star`` (the true centres).
    names
        Micrographs to pick and score.
    picker
        A :class:`crisp.picking.tune.PickerConfig` or a ``picker.yaml`` path; every candidate is
        kept (its threshold applies to the metrics at the threshold only). Its diameter is rescaled to
        the maps' pixel size (:func:`crisp.picking.files.map_diameter_px`), and the matching radius
        is half of that.
    expected_particles
        Sparse truth: only recall and recall at this many picks per micrograph.

    Returns
    -------
    (dict, dict)
        Picking metrics and box metrics (empty with ``expected_particles``), as in the evaluation
        record (module docstring).
    """
    from crisp.picking.files import map_diameter_px, pick_map
    from crisp.picking.tune import PickerConfig, load_picker

    if not isinstance(picker, PickerConfig):
        picker = load_picker(picker)
    names = list(names)
    truth = read_true_centres(dataset_dir, names)
    frames, diameters = [], []
    for name, prob in read_maps(prob_dir, names).items():
        diameter = map_diameter_px(picker, Path(prob_dir) / f"{name}.mrc")
        diameters.append(diameter)
        picks = pick_map(prob, picker, diameter)
        picks.insert(0, NAME, name)
        frames.append(picks)
    picks = pd.concat(frames, ignore_index=True)
    return picking_metrics(picks, truth, float(np.median(diameters)), picker.threshold, expected_particles)


def _relative(path: Path, run_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(run_dir).resolve())


def evaluate_run(run_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str], subset: str = "test",
                 *,
                 prob_dir: str | os.PathLike[str] | None = None, picker=None,
                 picks_dir: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 progress: bool = True, expected_particles: float | None = None) -> dict[str, Any]:
    """Segment a subset with a run, score maps and picks, write ``RUN/evaluation/<subset>.json``.

    Parameters
    ----------
    run_dir
        A finished training run.
    dataset_dir
        Its dataset folder (with ``split.yaml`` and masks; ``coordinates/`` for picking metrics).
    subset
        ``train``, ``val`` or ``test``.
    prob_dir
        Where the probability maps go (default ``RUN/probabilities/<subset>``); existing maps are kept
        unless ``overwrite``.
    picker
        A :class:`crisp.picking.tune.PickerConfig` or a ``picker.yaml`` path; None: no picking metrics.
    picks_dir
        Where the picks go (default ``RUN/picks/<subset>``).
    overwrite
        Redo maps and picks.
    expected_particles
        None: the subset's annotation is complete. N > 0 (particles per micrograph): it is sparse;
        only recall is reported, with recall at N picks per micrograph (module docstring).

    Returns
    -------
    dict
        The record written (see the module docstring).
    """
    import shutil

    from crisp.metrics.pixel import pixel_metrics
    from crisp.picking.files import pick_files
    from crisp.picking.tune import PickerConfig, load_picker
    from crisp.run import Run

    expected_particles = check_expected_particles(expected_particles, "expected_particles")
    run = Path(run_dir)
    Run(run).check_writable("evaluation")  # a bundled model is read-only: refused before any work
    Run(run).summary()  # CrispError when the run is not finished
    names = subset_names(dataset_dir, subset)
    prob_dir = Path(prob_dir) if prob_dir is not None else Run(run).maps_dir(subset)
    segment_subset(run, dataset_dir, subset, prob_dir, overwrite=overwrite, progress=progress)
    from crisp.dataset import DatasetFolder

    folder = DatasetFolder(Path(dataset_dir))
    _, pooled = pixel_metrics(read_maps(prob_dir, names), read_true_masks(dataset_dir, names),
                              ignore_value=UNLABELLED)
    pixel_keys = ("recall",) if expected_particles is not None else ("iou", "precision", "recall", "f1",
                                                                     "accuracy")
    record: dict[str, Any] = {
        "subset": subset, "micrographs": len(names), "dataset": _relative(Path(dataset_dir), run),
        "probabilities": _relative(prob_dir, run),
        "pixel": {k: float(pooled[k]) for k in pixel_keys},
    }
    if expected_particles is not None:
        record.update({"sparse_truth": True, "expected_particles": expected_particles})
    truth = read_true_centres(dataset_dir, names, required=False)
    if picker is not None and truth is not None:
        if not isinstance(picker, PickerConfig):
            picker = load_picker(picker)
        picks_dir = Path(picks_dir) if picks_dir is not None else run / "picks" / subset
        if overwrite and picks_dir.is_dir():
            shutil.rmtree(picks_dir)
        pick_files([prob_dir / f"{n}.mrc" for n in names], picks_dir, picker,
                   micrographs=folder.root / "micrographs", progress=progress)
        picks = read_picks(picks_dir)
        picking, box = picking_metrics(picks, truth, picker.diameter_px, picker.threshold,
                                       expected_particles)
        record.update({"picks": _relative(picks_dir, run), "diameter_px": float(picker.diameter_px),
                       "picking": picking})
        if box:
            record["box"] = box
    write_text_atomic(evaluation_path(run, subset), json.dumps(record, indent=2) + "\n")
    return record


def read_picks(picks_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """All picks of a ``crisp pick`` folder (its ``autopick.star`` index)."""
    from crisp.io.coordinates import read_autopick

    picks = read_autopick(Path(picks_dir) / "autopick.star")
    if SCORE not in picks:
        picks[SCORE] = 1.0
    return picks


def _stems(table: pd.DataFrame) -> pd.Series:
    if NAME not in table:
        return pd.Series([""] * len(table))
    return table[NAME].astype(str).map(lambda s: Path(s).stem).reset_index(drop=True)
