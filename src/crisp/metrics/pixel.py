"""Pixel-level segmentation metrics: IoU, precision, recall, accuracy, F1 (segmentation_models.pytorch).

Predictions are probability maps (or 0/1 masks), binarised at ``threshold`` (``p >= threshold`` is
foreground), with ``threshold`` strictly between 0 and 1. Truths are masks (0/1 or 0/255): foreground
is every nonzero pixel, never the prediction threshold (smp's ``get_stats(threshold=...)`` would
threshold the truth too, so the prediction is binarised here and passed to it already binary).
Per micrograph metrics use that micrograph's pixels; pooled ("micro") metrics sum the true/false
positives/negatives over all micrographs first, so large micrographs weigh more.
Empty cases follow smp's ``zero_division=1.0`` convention (e.g. IoU = 1 when both masks are empty),
per micrograph and pooled alike (:func:`scores_from_counts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.errors import CrispError

METRICS = ("iou", "precision", "recall", "accuracy", "f1")


def check_threshold(threshold: float, option: str = "--threshold") -> float:
    """``threshold`` as a float; anything but a number strictly between 0 and 1 is a :class:`CrispError`.

    At 0 every pixel is foreground and at 1 (or above) none is, so such a threshold cannot score a
    segmentation; NaN and infinities are refused as well.
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise CrispError(f"{option} must be a number in (0, 1) (got {threshold!r})") from None
    if not (0.0 < value < 1.0):  # also False for NaN
        raise CrispError(f"{option} must be strictly between 0 and 1 (got {threshold!r})")
    return value


def _stats(pred: np.ndarray, truth: np.ndarray, threshold: float, ignore_value: int | None = None):
    import segmentation_models_pytorch as smp
    import torch

    truth = np.asarray(truth)
    output = (np.asarray(pred, dtype=np.float32) >= threshold).astype(np.int64)
    target = (truth != 0).astype(np.int64)
    if ignore_value is not None:
        labelled = truth != ignore_value
        if not labelled.all():  # count the labelled pixels only
            output, target = output[labelled], target[labelled]
    return smp.metrics.get_stats(torch.from_numpy(output)[None, None], torch.from_numpy(target)[None, None],
                                 mode="binary", threshold=None)


def _scores(tp, fp, fn, tn):
    """Metrics of each row of counts (smp, ``reduction="none"``, ``zero_division=1.0``)."""
    import segmentation_models_pytorch as smp

    funcs = {"iou": smp.metrics.iou_score, "precision": smp.metrics.precision,
             "recall": smp.metrics.recall, "accuracy": smp.metrics.accuracy, "f1": smp.metrics.f1_score}
    return {name: f(tp, fp, fn, tn, reduction="none", zero_division=1.0) for name, f in funcs.items()}


def scores_from_counts(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """IoU, precision, recall, accuracy and F1 of summed pixel counts (computed in float64).

    The pooled metrics of :func:`pixel_metrics` and the validation metrics of training both come
    from here, with the module's ``zero_division=1.0`` convention (smp's ``"micro"`` reduction
    ignores ``zero_division`` and gives NaN when, e.g., nothing is predicted).
    """
    import torch

    counts = [torch.tensor([[float(v)]], dtype=torch.float64) for v in (tp, fp, fn, tn)]
    return {key: float(value) for key, value in _scores(*counts).items()}


def pixel_metrics(pred_masks: Mapping[str, np.ndarray], true_masks: Mapping[str, np.ndarray],
                  threshold: float = 0.5, ignore_value: int | None = None
                  ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Pixel metrics per micrograph and pooled over the set.

    Parameters
    ----------
    pred_masks
        Name -> predicted probability map or 0/1 mask ``[H, W]``.
    true_masks
        Name -> true mask of the same shape (foreground: nonzero, e.g. 0/1 or 0/255); every
        predicted name must be present.
    threshold
        Foreground where ``pred >= threshold``; strictly between 0 and 1 (else :class:`CrispError`).
    ignore_value
        Pixels of a true mask with this value are left out of every count (a CRISP label map's
        :data:`~crisp.dataset.UNLABELLED`); None: every pixel counts.

    Returns
    -------
    per_micrograph : pandas.DataFrame
        One row per name (sorted): ``micrograph``, ``iou``, ``precision``, ``recall``, ``accuracy``,
        ``f1``, ``tp``, ``fp``, ``fn``, ``tn``.
    pooled : dict
        The same metrics computed from the summed counts, plus ``micrographs`` and the counts.
    """
    import torch

    threshold = check_threshold(threshold)
    names = sorted(pred_masks)
    if not names:
        raise CrispError("no predictions to evaluate")
    stats = []
    for name in names:
        if name not in true_masks:
            raise CrispError(f"no true mask for micrograph '{name}'")
        pred, truth = np.asarray(pred_masks[name]), np.asarray(true_masks[name])
        if pred.shape != truth.shape:
            raise CrispError(f"micrograph '{name}': prediction shape {pred.shape} differs from the "
                             f"mask's {truth.shape}")
        stats.append(_stats(pred, truth, threshold, ignore_value))
    tp, fp, fn, tn = (torch.cat([s[i] for s in stats]) for i in range(4))
    per = _scores(tp, fp, fn, tn)
    table = pd.DataFrame({"micrograph": names})
    for key, values in per.items():
        table[key] = values.flatten().double().numpy()
    for key, values in zip(("tp", "fp", "fn", "tn"), (tp, fp, fn, tn), strict=True):
        table[key] = values.flatten().numpy().astype(np.int64)
    sums = [int(v.sum()) for v in (tp, fp, fn, tn)]
    pooled = scores_from_counts(*sums)
    pooled["micrographs"] = len(names)
    pooled.update({key: int(v) for key, v in zip(("tp", "fp", "fn", "tn"), sums, strict=True)})
    return table, pooled


def evaluate_folder(prob_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str],
                    subset: str | None = "test", threshold: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """Score probability maps ``PROB_DIR/NAME.mrc`` against ``DATASET/masks/NAME.mrc``.

    ``subset`` names a list of the dataset's ``split.yaml`` (``None`` or ``"all"``: every micrograph
    with a probability map). A micrograph of the subset without a map is an error.
    """
    from crisp.dataset import DatasetFolder, read_split, read_true_masks
    from crisp.io.micrographs import read_micrograph

    threshold = check_threshold(threshold)
    prob_dir = Path(prob_dir)
    if not prob_dir.is_dir():
        raise CrispError("probability-map folder not found", prob_dir)
    folder = DatasetFolder.open(dataset_dir)
    if subset in (None, "all"):
        names = sorted(p.stem for p in prob_dir.glob("*.mrc"))
    else:
        if not folder.split_file.is_file():
            raise CrispError("no split.yaml: pass --subset all or run `crisp split`", folder.root)
        names = read_split(folder.split_file).subset(subset)
    if not names:
        raise CrispError(f"nothing to evaluate (subset '{subset}' is empty)", prob_dir)
    preds = {}
    for name in names:
        prob_path = prob_dir / f"{name}.mrc"
        if not prob_path.is_file():
            raise CrispError(f"no probability map for micrograph '{name}'", prob_path)
        preds[name] = read_micrograph(prob_path).data
    truths = read_true_masks(folder.root, names)
    from crisp.dataset import UNLABELLED

    return pixel_metrics(preds, truths, threshold, ignore_value=UNLABELLED)
