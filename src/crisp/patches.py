"""Training data for the segmentation network: binned, normalised micrographs and random patches.

Micrographs and masks are loaded once. Images are binned by Fourier cropping
(:func:`crisp.preprocess.fourier_bin`) and normalised per micrograph
(:func:`crisp.preprocess.normalize`). Masks are binned through the *same* operation (the mask as
float, Fourier-cropped, thresholded at 0.5), so a binned mask lies on exactly the binned image's
pixel grid whatever convention the binning uses.

Patches are square, ``patch_px`` pixels of the binned image, at uniformly random positions (or,
for a chosen fraction of them, around a random labelled particle pixel: sparse labels),
augmented by random horizontal/vertical flips and 90-degree rotations and, when asked, by a random
change of contrast, sharpness and noise (:func:`photometric_jitter`). The random generator of
item ``i`` in epoch ``e`` is seeded with ``(seed, e, i)``, so runs are reproducible and each
epoch sees new patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crisp.dataset import UNLABELLED, DatasetFolder
from crisp.errors import CrispError
from crisp.io.micrographs import read_micrograph


def bin_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Fourier-resample ``image`` to ``round(n / factor)`` pixels per axis (1: a float32 copy).

    ``factor`` > 1 bins (Fourier cropping), ``factor`` < 1 upsamples (Fourier padding); non-integer
    factors are allowed (inference on micrographs of another pixel size than the training set's).
    """
    image = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return image.copy()
    from crisp.preprocess import binned_shape, fourier_resize

    return np.asarray(fourier_resize(image, binned_shape(image.shape, factor)), dtype=np.float32)


def bin_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Bin a label map on the same grid as :func:`bin_image`: Fourier-crop, threshold 0.5, uint8.

    Values: 1 particle, 0 background, :data:`~crisp.dataset.UNLABELLED` (255) unlabelled. The
    particle indicator and the labelled indicator are binned separately; a binned pixel is unlabelled
    where less than half of it was labelled, else particle where more than half of it was particle.
    A map without unlabelled pixels gives the 0/1 result of binning its particle indicator alone.
    """
    mask = np.asarray(mask)
    unlabelled = mask == UNLABELLED
    particle = (mask > 0) & ~unlabelled
    if factor == 1:
        out = particle.astype(np.uint8)
    else:
        out = (bin_image(particle.astype(np.float32), factor) > 0.5).astype(np.uint8)
    if unlabelled.any():
        labelled = ~unlabelled if factor == 1 else bin_image((~unlabelled).astype(np.float32), factor) > 0.5
        out[~labelled] = UNLABELLED
    return out


def normalize_image(image: np.ndarray, method: str) -> np.ndarray:
    """Per-micrograph normalisation (``"gmm"``, ``"zscore"`` or ``"none"``), float32."""
    if method == "none":
        return np.asarray(image, dtype=np.float32)
    from crisp.preprocess import normalize

    return np.asarray(normalize(image, method=method), dtype=np.float32)


def prepare_image(image: np.ndarray, factor: float, method: str) -> np.ndarray:
    """Bin then normalise a micrograph, as the network sees it in training and inference."""
    return normalize_image(bin_image(image, factor), method)


@dataclass
class Sample:
    """One micrograph as the network sees it: binned, normalised image and binned mask."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def load_samples(folder: DatasetFolder, names: list[str], factor: int, method: str,
                 progress: bool = False) -> list[Sample]:
    """Load, bin and normalise micrographs ``names`` of ``folder`` with their masks."""
    from tqdm import tqdm

    samples = []
    for name in tqdm(names, desc="loading micrographs", disable=not progress, leave=False):
        mic_path, mask_path = folder.micrograph(name), folder.mask(name)
        if not mic_path.is_file():
            raise CrispError(f"micrograph '{name}' of the split is missing", mic_path)
        if not mask_path.is_file():
            raise CrispError(f"mask of micrograph '{name}' is missing", mask_path)
        image = read_micrograph(mic_path).data
        mask = read_micrograph(mask_path).data
        if mask.shape != image.shape:
            raise CrispError(f"mask shape {mask.shape} differs from the micrograph's {image.shape}",
                             mask_path)
        samples.append(Sample(name, prepare_image(image, factor, method), bin_mask(mask, factor)))
    return samples


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    pad_y, pad_x = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if pad_y or pad_x:
        array = np.pad(array, ((0, pad_y), (0, pad_x)), mode="reflect" if min(array.shape) > 1 else "edge")
    return array


PHOTOMETRIC_RANGES = {"gain": (0.78, 1.28), "offset": (-0.25, 0.25), "blur_sigma_px": (0.3, 1.5),
                      "noise_sigma": (0.0, 0.25), "p_blur": 0.5, "p_noise": 0.5}
"""Ranges of :func:`photometric_jitter` (values in units of the normalised image's noise)."""


def photometric_jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random change of a normalised patch's appearance that keeps its particles where they are.

    Micrographs differ in ice thickness, defocus and dose, so the same particle shows with another
    contrast, sharpness and noise. In this order: with probability ``p_blur`` a Gaussian blur of
    standard deviation ``blur_sigma_px`` (pixels of the patch), with probability ``p_noise``
    additive Gaussian noise of standard deviation ``noise_sigma``, then ``gain * patch + offset``
    (ranges in :data:`PHOTOMETRIC_RANGES`, each drawn uniformly; gain log-uniformly). The mask is
    unchanged.
    """
    from scipy import ndimage

    r = PHOTOMETRIC_RANGES
    out = np.asarray(patch, dtype=np.float32)
    if rng.random() < r["p_blur"]:
        out = ndimage.gaussian_filter(out, float(rng.uniform(*r["blur_sigma_px"])), mode="reflect")
    if rng.random() < r["p_noise"]:
        sigma = float(rng.uniform(*r["noise_sigma"]))
        out = out + rng.normal(0.0, sigma, out.shape).astype(np.float32)
    gain = float(np.exp(rng.uniform(*np.log(r["gain"]))))
    offset = float(rng.uniform(*r["offset"]))
    return (gain * out + offset).astype(np.float32)


def random_patches(image: np.ndarray, mask: np.ndarray, patch_px: int, count: int,
                   rng: np.random.Generator, augment: bool = True, photometric: bool = False,
                   positive_fraction: float = 0.0, positives: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random square patches of ``image`` and ``mask`` with flips and 90-degree rotations.

    Images smaller than a patch are padded by reflection. ``photometric``: each image patch also gets
    :func:`photometric_jitter` (after the geometric draws, so that without it the patches are the
    same as before). ``positive_fraction``: each patch, with this probability, is placed so that it
    holds a random labelled particle pixel (``positives``: flat indices of the mask's pixels equal to
    1, computed when None) at a uniformly random place inside it; 0 (the default) draws exactly the
    patches it drew before the option existed. Returns float32 ``[count, 1, P, P]`` and int64
    ``[count, P, P]`` (values 0, 1 and 255 = unlabelled).
    """
    image, mask = _pad_to(image, patch_px), _pad_to(mask, patch_px)
    ny, nx = image.shape
    if positive_fraction > 0 and positives is None:
        positives = np.flatnonzero(mask == 1)
    images = np.empty((count, 1, patch_px, patch_px), np.float32)
    masks = np.empty((count, patch_px, patch_px), np.int64)
    for k in range(count):
        has_positives = positives is not None and positives.size > 0
        if positive_fraction > 0 and has_positives and rng.random() < positive_fraction:
            py, px = divmod(int(positives[rng.integers(0, positives.size)]), nx)
            y0 = int(np.clip(py - rng.integers(0, patch_px), 0, ny - patch_px))
            x0 = int(np.clip(px - rng.integers(0, patch_px), 0, nx - patch_px))
        else:
            y0 = int(rng.integers(0, ny - patch_px + 1))
            x0 = int(rng.integers(0, nx - patch_px + 1))
        img = image[y0:y0 + patch_px, x0:x0 + patch_px]
        msk = mask[y0:y0 + patch_px, x0:x0 + patch_px]
        if augment:
            turns = int(rng.integers(0, 4))
            flip_y, flip_x = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
            img, msk = np.rot90(img, turns), np.rot90(msk, turns)
            if flip_y:
                img, msk = img[::-1], msk[::-1]
            if flip_x:
                img, msk = img[:, ::-1], msk[:, ::-1]
        images[k, 0] = photometric_jitter(img, rng) if photometric else img
        masks[k] = msk
    return images, masks


class PatchDataset:
    """A map-style dataset: item ``i`` = ``patches_per_micrograph`` patches of one micrograph.

    Its length is ``len(samples) * repeats``. Call :meth:`set_epoch` before each epoch; item ``i``
    of epoch ``e`` draws its patches from ``np.random.default_rng((seed, e, i))``.
    ``positive_fraction``: see :func:`random_patches`.
    A DataLoader batch of ``B`` items has images ``[B, K, 1, P, P]`` and masks ``[B, K, P, P]``.
    """

    def __init__(self, samples: list[Sample], patch_px: int, patches_per_micrograph: int = 4,
                 seed: int = 0, repeats: int = 1, augment: bool = True, photometric: bool = False,
                 positive_fraction: float = 0.0) -> None:
        if not samples:
            raise CrispError("no training micrographs")
        self.samples = samples
        self.patch_px = int(patch_px)
        self.count = int(patches_per_micrograph)
        self.seed = int(seed)
        self.repeats = int(repeats)
        self.augment = augment
        self.photometric = photometric
        self.positive_fraction = float(positive_fraction)
        self.positives: dict[int, np.ndarray] = {}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def __getitem__(self, index: int):
        import torch

        which = index % len(self.samples)
        sample = self.samples[which]
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        positives = None
        if self.positive_fraction > 0:
            if which not in self.positives:  # flat indices into the mask as padded to a patch
                self.positives[which] = np.flatnonzero(_pad_to(sample.mask, self.patch_px) == 1)
            positives = self.positives[which]
        images, masks = random_patches(sample.image, sample.mask, self.patch_px, self.count, rng,
                                       self.augment, self.photometric, self.positive_fraction, positives)
        return torch.from_numpy(images), torch.from_numpy(masks)
