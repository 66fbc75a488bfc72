"""The one tiler: probabilities of whole images from a patch-based network.

:func:`predict_probabilities` cuts an image into overlapping square patches, runs a model on
batches of them and blends the outputs with a smooth weight window (a separable squared sine,
largest at the patch centre, small but strictly positive at the patch edges), divided by the summed
weights. The image is first padded by reflection (half the overlap on every side, and up to one
patch for small images), so every pixel is covered with full weight normalisation and the image's
own border is not attenuated; the result is cropped back to the input size.
:func:`foreground_fn` turns a segmentation network into the ``model_fn`` it calls (softmax of the
refined output, optionally with test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from crisp.errors import CrispError


def blend_window(patch_px: int) -> np.ndarray:
    """Separable weight window ``w(y) w(x)`` with ``w(i) = sin^2(pi (i + 0.5) / P)``, float64 [P, P]."""
    i = np.arange(patch_px, dtype=np.float64)
    w = np.sin(np.pi * (i + 0.5) / patch_px) ** 2
    return np.outer(w, w)


def _starts(length: int, patch_px: int, stride: int) -> list[int]:
    if length <= patch_px:
        return [0]
    starts = list(range(0, length - patch_px, stride))
    starts.append(length - patch_px)
    return starts


def predict_probabilities(model_fn: Callable, image: np.ndarray, patch: int, overlap: int = 64,
                          batch_size: int = 8) -> np.ndarray:
    """Run ``model_fn`` on overlapping patches of ``image`` and blend the outputs.

    Parameters
    ----------
    model_fn
        Maps a float32 torch tensor ``[B, 1, P, P]`` to ``[B, C, P, P]`` (tensor or array), e.g.
        class probabilities. Called under ``torch.no_grad()``.
    image
        2-D array ``[H, W]`` (any size, also smaller than a patch).
    patch
        Patch size ``P`` in pixels of ``image``.
    overlap
        Overlap of neighbouring patches in pixels (``0 <= overlap < patch``).
    batch_size
        Patches per call of ``model_fn``.

    Returns
    -------
    np.ndarray
        float32 ``[C, H, W]``: the weighted average of the patch outputs at every pixel.
    """
    import torch

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise CrispError(f"expected a 2-D image, got shape {image.shape}")
    if not 0 <= overlap < patch:
        raise CrispError(f"overlap must be in [0, patch) (got overlap {overlap}, patch {patch})")
    height, width = image.shape
    margin = overlap // 2
    pad_y = max(0, patch - (height + 2 * margin))
    pad_x = max(0, patch - (width + 2 * margin))
    pads = ((margin, margin + pad_y), (margin, margin + pad_x))
    mode = "reflect" if min(height, width) > 1 else "edge"
    padded = np.pad(image, pads, mode=mode)
    ny, nx = padded.shape
    stride = patch - overlap
    corners = [(y, x) for y in _starts(ny, patch, stride) for x in _starts(nx, patch, stride)]
    window = blend_window(patch)
    weight_sum = np.zeros((ny, nx), np.float64)
    for y, x in corners:
        weight_sum[y:y + patch, x:x + patch] += window
    accumulated = None
    with torch.no_grad():
        for first in range(0, len(corners), batch_size):
            chunk = corners[first:first + batch_size]
            batch = np.stack([padded[y:y + patch, x:x + patch] for y, x in chunk])[:, None]
            out = model_fn(torch.from_numpy(np.ascontiguousarray(batch)))
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            out = np.asarray(out, dtype=np.float64)
            if out.ndim != 4 or out.shape[0] != len(chunk) or out.shape[2:] != (patch, patch):
                raise CrispError(f"model output of shape {out.shape} for an input of {batch.shape}")
            if accumulated is None:
                accumulated = np.zeros((out.shape[1], ny, nx), np.float64)
            for (y, x), tile in zip(chunk, out, strict=True):
                accumulated[:, y:y + patch, x:x + patch] += tile * window
    result = accumulated / weight_sum
    return result[:, margin:margin + height, margin:margin + width].astype(np.float32)


def foreground_fn(network, device=None, tta: bool = False) -> Callable:
    """A ``model_fn`` for :func:`predict_probabilities`: softmax of the refined output, [B, 2, P, P].

    With ``tta`` (test-time augmentation) the network runs on the 8 images of each square patch
    under the dihedral group (4 rotations by 90 degrees, each with and without a left-right flip);
    each output is mapped back by the inverse transform and the 8 probability maps are averaged. The
    result is exactly equivariant to those transforms, at 8 times the cost.
    """
    import torch

    def probabilities(batch):
        return torch.softmax(network(batch)["refined"].float(), dim=1)

    def run(batch):
        batch = batch.to(device) if device is not None else batch
        if not tta:
            return probabilities(batch)
        total = None
        for turns in range(4):
            for flip in (False, True):
                view = torch.rot90(batch, turns, dims=(2, 3))
                view = torch.flip(view, dims=(3,)) if flip else view
                out = probabilities(view)
                out = torch.flip(out, dims=(3,)) if flip else out
                out = torch.rot90(out, -turns, dims=(2, 3))
                total = out if total is None else total + out
        return total / 8.0

    return run
