"""The one tiler of inference: run a model on overlapping patches of an image and blend the outputs.

:func:`predict_probabilities` cuts an image (one or several channels) into overlapping patches, runs a
model on batches of them and blends the outputs with a smooth weight window (a separable squared
sine, largest at the patch centre, small but strictly positive at the patch edges), divided by the
summed weights (float32 throughout). The image is first padded by reflection (half the overlap on
every side, and up to one patch for small images), so every pixel is covered with full weight
normalisation and the image's own border is not attenuated; the result is cropped back to the input
size.

The network (:mod:`crisp.predict`) and the CRF refinement of whole maps
(:func:`crisp.models.crf.refine_probabilities`) both tile through this function. It depends on
numpy and torch only, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from crisp.errors import CrispError


def blend_window(patch_px: int | tuple[int, int]) -> np.ndarray:
    """Separable weight window ``w(y) w(x)`` with ``w(i) = sin^2(pi (i + 0.5) / P)``, float64 [P, P].

    ``patch_px`` may be a pair ``(P_y, P_x)`` for a rectangular window.
    """
    size_y, size_x = (patch_px, patch_px) if np.isscalar(patch_px) else patch_px

    def ramp(length: int) -> np.ndarray:
        i = np.arange(length, dtype=np.float64)
        return np.sin(np.pi * (i + 0.5) / length) ** 2

    return np.outer(ramp(int(size_y)), ramp(int(size_x)))


def _starts(length: int, patch_px: int, stride: int) -> list[int]:
    """Top-left corners along one axis: every ``stride`` pixels, the last one flush with the end."""
    if length <= patch_px:
        return [0]
    starts = list(range(0, length - patch_px, stride))
    starts.append(length - patch_px)
    return starts


def predict_probabilities(model_fn: Callable, image: np.ndarray, patch: int, overlap: int = 64,
                          batch_size: int = 8, *, shrink_to_image: bool = False) -> np.ndarray:
    """Run ``model_fn`` on overlapping patches of ``image`` and blend the outputs.

    Parameters
    ----------
    model_fn
        Maps a float32 torch tensor ``[B, C_in, P, P]`` to ``[B, C, P, P]`` (tensor or array), e.g.
        class probabilities. Called under ``torch.inference_mode()``.
    image
        ``[H, W]`` (then ``C_in = 1``) or ``[C_in, H, W]``, any size (also smaller than a patch).
    patch
        Patch size ``P`` in pixels of ``image``.
    overlap
        Overlap of neighbouring patches in pixels (``0 <= overlap < patch``).
    batch_size
        Patches per call of ``model_fn``.
    shrink_to_image
        For a model that takes any size (the CRF): an image smaller than a patch along an axis (after
        the overlap margin) is one tile of its own size along that axis instead of being padded up to
        the patch. The network needs the patch size and leaves this False.

    Returns
    -------
    np.ndarray
        float32 ``[C, H, W]``: the weighted average of the patch outputs at every pixel.
    """
    import torch

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise CrispError(f"expected a 2-D image or a [C, H, W] stack, got shape {image.shape}")
    if not 0 <= overlap < patch:
        raise CrispError(f"overlap must be in [0, patch) (got overlap {overlap}, patch {patch})")
    if batch_size < 1:
        raise CrispError(f"batch size must be at least 1 (got {batch_size})")
    _, height, width = image.shape
    margin = overlap // 2
    patch_y = patch_x = patch
    if shrink_to_image:
        patch_y, patch_x = min(patch, height + 2 * margin), min(patch, width + 2 * margin)
    pad_y = max(0, patch_y - (height + 2 * margin))
    pad_x = max(0, patch_x - (width + 2 * margin))
    pads = ((0, 0), (margin, margin + pad_y), (margin, margin + pad_x))
    mode = "reflect" if min(height, width) > 1 else "edge"
    padded = np.pad(image, pads, mode=mode)
    _, ny, nx = padded.shape
    stride = patch - overlap
    corners = [(y, x) for y in _starts(ny, patch_y, stride) for x in _starts(nx, patch_x, stride)]
    window = blend_window((patch_y, patch_x)).astype(np.float32)
    weight_sum = np.zeros((ny, nx), np.float32)
    for y, x in corners:
        weight_sum[y:y + patch_y, x:x + patch_x] += window
    accumulated = None
    with torch.inference_mode():
        for first in range(0, len(corners), batch_size):
            chunk = corners[first:first + batch_size]
            batch = np.stack([padded[:, y:y + patch_y, x:x + patch_x] for y, x in chunk])
            out = model_fn(torch.from_numpy(np.ascontiguousarray(batch)))
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 4 or out.shape[0] != len(chunk) or out.shape[2:] != (patch_y, patch_x):
                raise CrispError(f"model output of shape {out.shape} for an input of {batch.shape}")
            if accumulated is None:
                accumulated = np.zeros((out.shape[1], ny, nx), np.float32)
            out = out * window  # one batched multiply (not in place: out may be the caller's array)
            for (y, x), tile in zip(chunk, out, strict=True):
                accumulated[:, y:y + patch_y, x:x + patch_x] += tile
    result = accumulated[:, margin:margin + height, margin:margin + width]
    return result / weight_sum[margin:margin + height, margin:margin + width]


def dihedral_mean(fn: Callable, batch):
    """Test-time augmentation: the mean of ``fn`` over the 8 flips and rotations of ``batch``.

    ``fn`` maps a tensor ``[B, C, H, W]`` to ``[B, K, H, W]``; each of the 8 views (4 rotations by 90
    degrees, each with and without a left-right flip) is mapped back by the inverse transform before
    averaging, so the result is exactly equivariant to those transforms (square inputs).
    """
    import torch

    total = None
    for turns in range(4):
        for flip in (False, True):
            view = torch.rot90(batch, turns, dims=(2, 3))
            view = torch.flip(view, dims=(3,)) if flip else view
            out = fn(view)
            out = torch.flip(out, dims=(3,)) if flip else out
            out = torch.rot90(out, -turns, dims=(2, 3))
            total = out if total is None else total + out
    return total / 8.0

