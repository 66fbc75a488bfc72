"""Refinement of whole stitched probability maps with the CRF (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from crisp.errors import CrispError
from crisp.models.crf.config import CRFConfig
from crisp.models.crf.kinds import get_kind
from crisp.models.crf.layer import DenseCRF, build_crf
from crisp.tiling import predict_probabilities

__all__ = ["probability_histogram", "refine_probabilities"]


def probability_histogram(q: np.ndarray | Tensor, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of probabilities in ``[0, 1]``: ``(counts, edges)`` with ``bins`` equal bins."""
    values = q.detach().cpu().numpy() if isinstance(q, Tensor) else np.asarray(q)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))


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
        Maps larger than ``tile`` pixels are refined in overlapping tiles by the same tiler as the
        network (:func:`crisp.tiling.predict_probabilities`: squared-sine blending windows, the map
        padded by reflection by half the overlap); a smaller map is one tile of its own size.
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
    c = classes.shape[0]
    logits = torch.log(torch.from_numpy(np.clip(classes, 1e-6, 1.0))).unsqueeze(0)
    features = get_kind(cfg.kind).map_features(cfg.feature_source, image, logits)
    margin = overlap if overlap is not None else int(np.ceil(2 * crf.theta_alpha_px))
    margin = max(0, min(margin, tile // 2))
    crf = crf.to(device).eval()
    param = next(iter(crf.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32

    def model_fn(batch: Tensor) -> Tensor:
        """[B, C + F, P, P] (logits, then guide features) -> refined class probabilities [B, C, P, P]."""
        batch = batch.to(device=device, dtype=dtype)
        return torch.softmax(crf(batch[:, :c], None, features=batch[:, c:]), dim=1)

    stacked = torch.cat([logits, features.to(logits.dtype)], dim=1)[0].detach().numpy()
    refined = predict_probabilities(model_fn, stacked, tile, margin, batch_size=1, shrink_to_image=True)
    return refined[1] if prob.ndim == 2 else refined
