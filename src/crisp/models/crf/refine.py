"""Refinement of whole stitched probability maps with the CRF (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from crisp.errors import CrispError
from crisp.models.crf.config import CRFConfig
from crisp.models.crf.kinds import get_kind
from crisp.models.crf.layer import DenseCRF, build_crf

__all__ = ["probability_histogram", "refine_probabilities"]


def probability_histogram(q: np.ndarray | Tensor, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of probabilities in ``[0, 1]``: ``(counts, edges)`` with ``bins`` equal bins."""
    values = q.detach().cpu().numpy() if isinstance(q, Tensor) else np.asarray(q)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))


def _ramp(length: int, margin: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weight of a tile: linear ramps over ``margin`` pixels at interior edges."""
    pos = np.arange(length, dtype=np.float64) + 0.5
    weight = np.ones(length)
    if margin > 0:
        if not at_start:
            weight = np.minimum(weight, pos / margin)
        if not at_end:
            weight = np.minimum(weight, (length - pos) / margin)
    return np.clip(weight, 1e-3, 1.0)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def refine_probabilities(
    prob_map: np.ndarray,
    image: np.ndarray | None,
    config: CRFConfig,
    scale: float = 1.0,
    *,
    crf: DenseCRF | None = None,
    tile: int = 1024,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Refine a whole stitched probability map with the CRF (numpy in, numpy out).

    Parameters
    ----------
    prob_map
        Foreground probability ``[H, W]`` (two classes) or class probabilities ``[C, H, W]``, in
        ``[0, 1]``, at the same (binned) pixel size as ``image``.
    image
        The micrograph ``[H, W]`` (``kind="crf"``); ignored for ``kind="cd-crf"``, whose guide is the
        map itself (``feature_source="logits"``; decoder features are not available here).
    config
        CRF settings; a kind without a layer (``"none"``) returns the map unchanged (as float32).
    scale
        Binning factor of the map relative to the full-resolution micrograph (see :func:`build_crf`).
    crf
        A trained layer to use instead of one built from ``config`` (its own settings then apply).
    tile, overlap
        Maps larger than ``tile`` pixels are refined in overlapping tiles blended with linear ramps;
        ``overlap`` defaults to twice the appearance kernel's spatial std (at most ``tile // 2``). The
        guide is normalised once over the whole micrograph, so tiles see the same features.
    device
        Torch device to run on.

    Returns
    -------
    numpy.ndarray
        Refined probabilities, float32, same shape as ``prob_map``.
    """
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.ndim == 2:
        classes = np.stack([1.0 - prob, prob])
    elif prob.ndim == 3:
        classes = prob
    else:
        raise CrispError(f"probability map must be [H, W] or [C, H, W], got shape {prob.shape}")
    if not np.isfinite(classes).all() or classes.min() < -1e-6 or classes.max() > 1 + 1e-6:
        raise CrispError("probability map must hold finite values in [0, 1]")
    if crf is None:
        crf = build_crf(config, num_classes=classes.shape[0], scale=scale)
        if crf is None:  # a kind without a layer
            return prob.copy()
    cfg = crf.config
    c, h, w = classes.shape
    logits = torch.log(torch.from_numpy(np.clip(classes, 1e-6, 1.0))).unsqueeze(0)
    features = get_kind(cfg.kind).map_features(cfg.feature_source, image, logits)
    margin = overlap if overlap is not None else int(np.ceil(2 * crf.theta_alpha_px))
    margin = max(0, min(margin, tile // 2))
    total = np.zeros((c, h, w), dtype=np.float64)
    weights = np.zeros((h, w), dtype=np.float64)
    crf = crf.to(device).eval()
    param = next(iter(crf.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    ys, xs = _tile_starts(h, tile, margin), _tile_starts(w, tile, margin)
    with torch.no_grad():
        for y0 in ys:
            for x0 in xs:
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                lg = logits[..., y0:y1, x0:x1].to(device=device, dtype=dtype)
                ft = features[..., y0:y1, x0:x1].to(device=device, dtype=dtype)
                q = torch.softmax(crf(lg, None, features=ft), dim=1)[0].cpu().numpy()
                wy = _ramp(y1 - y0, margin, y0 == 0, y1 == h)
                wx = _ramp(x1 - x0, margin, x0 == 0, x1 == w)
                wt = np.outer(wy, wx)
                total[:, y0:y1, x0:x1] += q * wt
                weights[y0:y1, x0:x1] += wt
    refined = (total / weights).astype(np.float32)
    return refined[1] if prob.ndim == 2 else refined
