"""Tiled inference: probability maps of whole micrographs from a patch-based network.

:func:`predict_probabilities` cuts an image into overlapping square patches, runs a model on
batches of them and blends the outputs with a smooth weight window (a separable squared sine,
largest at the patch centre, small but strictly positive at the patch edges), divided by the summed
weights. The image is first padded by reflection (half the overlap on every side, and up to one
patch for small images), so every pixel is covered with full weight normalisation and the image's
own border is not attenuated; the result is cropped back to the input size.

:func:`segment_files` applies a trained run (:mod:`crisp.train`) to micrograph files: each is binned
and normalised as in training, its foreground probability (softmax class 1 of the refined output)
is predicted, resampled to the original pixel grid and written as a float16 MRC.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

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


def upsample_to(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a map on the binned grid back to the original pixel grid ``shape`` (bilinear).

    The binned grid is that of Fourier cropping: binned pixel ``j`` sits at original coordinate
    ``j * N / M`` (``N`` original, ``M`` binned size), pixel 0 on pixel 0. Outside the last binned
    pixel the edge value is kept.
    """
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(shape):
        return prob.copy()
    scale = [prob.shape[0] / shape[0], prob.shape[1] / shape[1]]
    return ndimage.affine_transform(prob, scale, output_shape=tuple(shape), order=1, mode="nearest")


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


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = "best.ckpt"):
    """Load a training run: its :class:`~crisp.train.TrainConfig` and the network in eval mode."""
    import torch

    from crisp.config import load_config
    from crisp.models.zoo import load_network_state
    from crisp.train import TrainConfig, build_network

    run_dir = Path(run_dir)
    config_path, ckpt_path = run_dir / "config.yaml", run_dir / "checkpoints" / checkpoint
    if not config_path.is_file():
        raise CrispError("not a training run directory (no config.yaml)", run_dir)
    if not ckpt_path.is_file():
        raise CrispError("the run has no checkpoint (was training finished?)", ckpt_path)
    config = load_config(TrainConfig, config_path)
    network = build_network(config)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    load_network_state(network, state, ckpt_path)
    network.eval()
    return config, network


def input_binning(config, pixel_size: float | None) -> float:
    """Resampling factor that brings a micrograph to the pixel size the network was trained at.

    Parameters
    ----------
    config
        The run's :class:`~crisp.train.TrainConfig`: ``bin`` (training binning) and ``pixel_size``
        (Å per pixel of the training micrographs before binning, None when unknown).
    pixel_size
        Å per pixel of the micrograph to segment (None when unknown).

    Returns
    -------
    float
        ``bin * config.pixel_size / pixel_size`` (> 1 bins, < 1 upsamples), so the network sees
        ``bin * config.pixel_size`` Å per pixel whatever the input; ``config.bin`` itself when either
        pixel size is unknown or the two agree within 1 %.
    """
    from crisp.io.micrographs import pixel_size_ratio

    return float(config.bin) * pixel_size_ratio(config.pixel_size, pixel_size)


def collect_micrographs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into a sorted list of micrograph files (MRC, TIFF, PNG, JPG)."""
    from crisp.io.micrographs import IMAGE_SUFFIXES, MRC_SUFFIXES

    suffixes = set(MRC_SUFFIXES + IMAGE_SUFFIXES)
    found: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            found.extend(sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in suffixes))
        elif entry.is_file():
            found.append(entry)
        else:
            raise CrispError("no such file or folder", entry)
    if not found:
        raise CrispError("no micrographs found in " + ", ".join(str(p) for p in paths))
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems and stems[path.stem] != path:
            raise CrispError(f"two micrographs share the name '{path.stem}' ({stems[path.stem]})", path)
        stems[path.stem] = path
    return list(stems.values())


def segment_files(run_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  micrograph_paths: Iterable[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str], *, overwrite: bool = False, batch_size: int = 8,
                  pixel_size: float | None = None, overlap: int | None = None,
                  tta: bool | None = None, progress: bool = True) -> list[Path]:
    """Write a foreground-probability map ``out_dir/NAME.mrc`` (float16) for every micrograph.

    ``run_dir`` is one training run or several (an ensemble): with several, the map is the mean
    of the runs' maps, each made as below at the original size (runs may differ in binning,
    network and pixel size).

    Each micrograph is resampled to the network's input pixel size (:func:`input_binning`: the
    run's binning, adjusted when the micrograph's pixel size differs from the training
    micrographs'), normalised as in training, predicted by tiles on that grid, and resampled back to
    its original size, so the map aligns pixel for pixel with the input. The pixel size of the input
    (or ``pixel_size``) goes into the header. A micrograph without a pixel size (JPG, PNG, TIFF, or
    an MRC header of 0) is binned by the run's factor alone, with a warning when the run knows its
    pixel size. ``tta`` averages the 8 flips and rotations of every patch (:func:`foreground_fn`;
    None: the run's ``tta`` setting). Maps that exist are skipped unless ``overwrite``.

    Returns
    -------
    list of Path
        The probability maps, one per micrograph, in input order.
    """
    import torch
    from tqdm import tqdm

    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.patches import prepare_image

    paths = collect_micrographs(micrograph_paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [p for p in paths if overwrite or not (out_dir / f"{p.stem}.mrc").is_file()]
    outputs = [out_dir / f"{p.stem}.mrc" for p in paths]
    if not todo:
        return outputs
    run_dirs = [run_dir] if isinstance(run_dir, (str, os.PathLike)) else list(run_dir)
    if not run_dirs:
        raise CrispError("no training run to segment with")
    device = _device()
    models = []
    for one in run_dirs:
        config, network = load_run(one)
        network.to(device)
        model_fn = foreground_fn(network, device, tta=config.tta if tta is None else tta)
        models.append((config, model_fn, config.val_overlap_px if overlap is None else overlap))
    with torch.no_grad():
        for path in tqdm(todo, desc="segmenting", unit="micrograph", disable=not progress):
            mic = read_micrograph(path, pixel_size=pixel_size)
            total = np.zeros(mic.shape, np.float32)
            for config, model_fn, model_overlap in models:
                if mic.pixel_size is None and config.pixel_size is not None:
                    warnings.warn(f"{path}: no pixel size (give --pixel-size); binned by the run's factor "
                                  f"{config.bin}, which assumes {config.pixel_size:g} Å/px as in training",
                                  stacklevel=2)
                image = prepare_image(mic.data, input_binning(config, mic.pixel_size), config.normalize)
                prob = predict_probabilities(model_fn, image, config.patch_px, model_overlap, batch_size)[1]
                total += np.clip(upsample_to(prob, mic.shape), 0.0, 1.0)
            write_mrc(out_dir / f"{path.stem}.mrc", total / len(models),
                      pixel_size=mic.pixel_size, dtype=np.float16)
    return outputs
