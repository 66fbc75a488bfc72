"""Micrograph preprocessing: Fourier binning, Gaussian low-pass and normalisation.

Conventions
-----------
Arrays are indexed ``[row (y), column (x)]`` as :mod:`mrcfile` returns them.

**Binning.** :func:`fourier_bin` keeps the lowest ``m`` Fourier coefficients of each axis of length
``n`` (``m = round(n / factor)``; :func:`binned_shape`), i.e. band-limited resampling with
:func:`scipy.signal.resample`. The resampled signal starts at the same sample as the input, so
*pixel index 0 maps to pixel index 0* and pixel ``j`` of the output sits at position ``j * r`` of the
input, with ``r = n / m`` the actual size ratio (:func:`binning_ratio`). Hence a position (x, y) in
pixels of the original micrograph becomes::

    x_binned = x / r_x,   y_binned = y / r_y        (and back: x = x_binned * r_x)

with no half-pixel offset; :func:`scale_coordinates` applies exactly this. The pixel size grows by
the same ratio (:func:`bin_micrograph`). Because ``r`` is the actual ratio of sizes, a non-integer
factor or a size not divisible by the factor is handled consistently.

**Normalisation.** :func:`normalize` with ``method="gmm"`` follows Topaz: a two-component Gaussian
mixture with one shared variance is fitted to the pixel values (EM on a seeded subsample), with a
Beta prior on the background weight; the image is then standardised by the background component,
``(x - mean_bg) / std``.

This module is the reference. :mod:`crisp.preprocess_torch` does the same binning and normalisation in
PyTorch on the network's device (``crisp segment-and-pick --prepare-on``), tested against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import scipy.special

from crisp.config import StageConfig
from crisp.errors import CrispError
from crisp.io.micrographs import Micrograph, read_micrograph, write_mrc

NormalizeMethod = Literal["gmm", "zscore", "none"]
NORMALIZE_METHODS = ("gmm", "zscore", "none")


# --------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------
def binned_shape(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """Shape after binning by ``factor``: ``round(n / factor)`` per axis (at least 1).

    Parameters
    ----------
    shape
        Shape of the array before binning.
    factor
        Binning factor, >= 1 for binning (values < 1 upsample); non-integer allowed.
    """
    if not factor > 0:
        raise CrispError(f"binning factor must be positive (got {factor})")
    return tuple(max(1, int(round(n / factor))) for n in shape)


def binning_ratio(shape: tuple[int, ...], binned: tuple[int, ...]) -> tuple[float, ...]:
    """Actual size ratio ``n / m`` per axis (array order: rows then columns).

    Divide a coordinate of the original image by the ratio of its axis to get the coordinate in the
    binned image (x uses the column ratio ``ratio[-1]``, y the row ratio ``ratio[-2]``).
    """
    if len(shape) != len(binned):
        raise CrispError(f"shapes {shape} and {binned} have different numbers of axes")
    return tuple(float(n) / float(m) for n, m in zip(shape, binned, strict=True))


def fourier_resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Band-limited resampling of an n-D array to ``shape`` by cropping or padding its spectrum.

    Uses :func:`scipy.signal.resample` along each axis (real FFTs). The mean value is preserved;
    sample 0 stays at sample 0 (see the module docstring for the coordinate convention).

    Parameters
    ----------
    array
        Real array (2-D image or 3-D volume).
    shape
        Output shape, one entry per axis.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.
    """
    out = np.asarray(array, dtype=np.float32)
    if len(shape) != out.ndim:
        raise CrispError(f"cannot resize an array of shape {out.shape} to {shape}")
    for axis, m in enumerate(shape):
        if out.shape[axis] != m:
            out = scipy.signal.resample(out, int(m), axis=axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def fourier_bin(image: np.ndarray, factor: float) -> np.ndarray:
    """Bin an image (or volume) by Fourier cropping.

    Parameters
    ----------
    image
        Real array, 2-D or 3-D.
    factor
        Binning factor >= 1, non-integer allowed; ``1`` returns a float32 copy unchanged.

    Returns
    -------
    numpy.ndarray
        float32 array of shape :func:`binned_shape` ``(image.shape, factor)``; mean preserved.
    """
    if not factor >= 1:
        raise CrispError(f"binning factor must be >= 1 (got {factor})")
    image = np.asarray(image)
    return fourier_resize(image, binned_shape(image.shape, factor))


def bin_micrograph(mic: Micrograph, factor: float) -> Micrograph:
    """Bin a micrograph by ``factor``; the pixel size is multiplied by the actual size ratio.

    The pixel size uses the column (x) ratio; rows and columns differ by less than one part in the
    binned size.
    """
    data = fourier_bin(mic.data, factor)
    ratio = binning_ratio(mic.data.shape, data.shape)
    pixel_size = None if mic.pixel_size is None else float(mic.pixel_size) * ratio[-1]
    return Micrograph(data=data, pixel_size=pixel_size, path=mic.path)


def scale_coordinates(x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                      binned: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Convert positions in pixels of an image of ``shape`` to pixels of its binned version.

    ``x_binned = x / ratio_x``, ``y_binned = y / ratio_y`` (see the module docstring). To convert
    back, swap ``shape`` and ``binned``.
    """
    ratio_y, ratio_x = binning_ratio(tuple(shape), tuple(binned))
    return np.asarray(x, dtype=float) / ratio_x, np.asarray(y, dtype=float) / ratio_y


# --------------------------------------------------------------------------------------------
# low-pass
# --------------------------------------------------------------------------------------------
def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downscale by an integer factor with block means (the ragged border is cropped).

    Binned pixel ``i`` covers original pixels ``[i*factor, (i+1)*factor)``, so its centre is at
    original coordinate ``i*factor + (factor-1)/2``. Unlike :func:`fourier_bin` this is local
    (no ringing) and cheap: for probability maps, masks and display.
    """
    image = np.asarray(image)
    if factor <= 1:
        return image
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    view = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    return view.mean(axis=(1, 3), dtype=np.float32)


def lowpass(image: np.ndarray, resolution_A: float | None = None, pixel_size: float | None = None,
            sigma_px: float | None = None) -> np.ndarray:
    """Gaussian low-pass filter applied in Fourier space.

    Give either ``sigma_px`` (standard deviation of the real-space Gaussian, pixels; the transfer
    function is ``exp(-2 pi^2 sigma^2 f^2)`` with ``f`` in cycles/pixel) or ``resolution_A`` with
    ``pixel_size`` (Å): the transfer function is then 0.5 at the spatial frequency
    ``1 / resolution_A``, i.e. ``sigma_px = sqrt(ln 2 / 2) / (pi * pixel_size / resolution_A)``.

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape (periodic boundaries).
    """
    if sigma_px is None:
        if resolution_A is None or pixel_size is None:
            raise CrispError("lowpass needs sigma_px, or resolution_A together with pixel_size")
        if not (resolution_A > 0 and pixel_size > 0):
            raise CrispError(f"low-pass resolution ({resolution_A} Å) and pixel size ({pixel_size} Å) "
                             "must be positive")
        f_cut = pixel_size / resolution_A
        sigma_px = np.sqrt(np.log(2.0) / 2.0) / (np.pi * f_cut)
    if not sigma_px >= 0:
        raise CrispError(f"low-pass sigma must be >= 0 pixels (got {sigma_px})")
    image = np.asarray(image, dtype=np.float32)
    if sigma_px == 0:
        return image.copy()
    spectrum = scipy.fft.rfftn(image, workers=-1)
    spectrum = scipy.ndimage.fourier_gaussian(spectrum, sigma=float(sigma_px), n=image.shape[-1],
                                              output=spectrum)
    return scipy.fft.irfftn(spectrum, s=image.shape, workers=-1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GMMFit:
    """Two-component Gaussian mixture with a shared standard deviation.

    Attributes
    ----------
    mean_bg, mean_fg
        Means of the background (larger weight) and foreground components.
    std
        The shared standard deviation.
    weight_bg
        Weight of the background component (0.5 .. 1).
    """

    mean_bg: float
    mean_fg: float
    std: float
    weight_bg: float


def _em_shared_variance(x: np.ndarray, mean_bg: float, mean_fg: float, var: float, prior_a: float,
                        prior_b: float, n_iter: int, tol: float) -> tuple[GMMFit, float]:
    """EM for a 2-Gaussian mixture with shared variance and a Beta(a, b) prior on the bg weight."""
    n = x.size
    w_bg = 0.9
    log_post = -np.inf
    for _ in range(n_iter):
        # E step: responsibility of the foreground component (shared variance: constants cancel)
        logit = (np.log(1.0 - w_bg) - np.log(w_bg)
                 + ((x - mean_bg) ** 2 - (x - mean_fg) ** 2) / (2.0 * var))
        r_fg = scipy.special.expit(logit)
        r_bg = 1.0 - r_fg
        n_fg = float(r_fg.sum())
        n_bg = n - n_fg
        # M step (MAP for the weight: pseudo-counts a on background, b on foreground)
        mean_bg = float((r_bg * x).sum() / max(n_bg, 1e-12))
        mean_fg = float((r_fg * x).sum() / max(n_fg, 1e-12))
        var = float((r_bg * (x - mean_bg) ** 2 + r_fg * (x - mean_fg) ** 2).sum() / n)
        var = max(var, 1e-12)
        w_bg = (n_bg + prior_a) / (n + prior_a + prior_b)
        w_bg = float(np.clip(w_bg, 1e-6, 1 - 1e-6))
        # log posterior (up to a constant) for convergence and for choosing between starts
        lb = np.log(w_bg) - (x - mean_bg) ** 2 / (2 * var)
        lf = np.log(1 - w_bg) - (x - mean_fg) ** 2 / (2 * var)
        new = float(np.logaddexp(lb, lf).sum() - 0.5 * n * np.log(var)
                    + prior_a * np.log(w_bg) + prior_b * np.log(1 - w_bg))
        if abs(new - log_post) <= tol * abs(new):
            log_post = new
            break
        log_post = new
    if w_bg < 0.5:  # the background is the heavier component
        mean_bg, mean_fg, w_bg = mean_fg, mean_bg, 1.0 - w_bg
    return GMMFit(mean_bg=mean_bg, mean_fg=mean_fg, std=float(np.sqrt(var)), weight_bg=w_bg), log_post


def fit_gmm_background(image: np.ndarray, prior_alpha: float = 900.0, prior_beta: float = 100.0,
                       max_samples: int = 100_000, seed: int = 0, n_iter: int = 200,
                       tol: float = 1e-7) -> GMMFit:
    """Fit a two-component Gaussian mixture with shared variance to the pixel values (Topaz style).

    The weight of the background component has a Beta(``prior_alpha``, ``prior_beta``) prior,
    used as pseudo-counts in the M step: ``w_bg = (n_bg + alpha) / (n + alpha + beta)``. The default
    (alpha = 900 as in Topaz, prior mean 0.9) weighs as much as 1,000 pixels, i.e. 1 % of the default
    subsample: it decides the fit when the pixels are close to a single Gaussian and barely moves it
    when they are clearly bimodal. EM starts twice (foreground above and below the mean) and keeps the
    fit of higher posterior; the background is the heavier component.

    Parameters
    ----------
    image
        Any real array.
    prior_alpha, prior_beta
        Beta prior pseudo-counts on the background and foreground weights (>= 0).
    max_samples
        At most this many pixels, drawn at random with ``seed``, are used.
    seed
        Seed of the pixel subsample.
    n_iter, tol
        EM iteration limit and relative tolerance on the log posterior.

    Returns
    -------
    GMMFit
    """
    if prior_alpha < 0 or prior_beta < 0:
        raise CrispError(f"Beta prior pseudo-counts must be >= 0 (got {prior_alpha}, {prior_beta})")
    x = np.asarray(image, dtype=np.float64).ravel()
    if x.size < 2:
        raise CrispError("cannot fit a mixture to fewer than 2 pixels")
    if x.size > max_samples:
        x = np.random.default_rng(seed).choice(x, size=int(max_samples), replace=False)
    mean, std = float(x.mean()), float(x.std())
    if std == 0:
        return GMMFit(mean_bg=mean, mean_fg=mean, std=0.0, weight_bg=1.0)
    a, b = float(prior_alpha), float(prior_beta)
    best: tuple[GMMFit, float] | None = None
    for sign in (1.0, -1.0):
        fit = _em_shared_variance(x, mean - 0.2 * sign * std, mean + sign * std, 0.5 * std**2, a, b,
                                  n_iter, tol)
        if best is None or fit[1] > best[1]:
            best = fit
    assert best is not None
    return best[0]


def normalize(image: np.ndarray, method: NormalizeMethod = "gmm", **kwargs) -> np.ndarray:
    """Normalise pixel values; returns float32.

    Parameters
    ----------
    image
        Real array.
    method
        ``"gmm"``: ``(x - mean_bg) / std`` of :func:`fit_gmm_background` (``kwargs`` go to it);
        ``"zscore"``: ``(x - mean) / std``; ``"none"``: unchanged (cast to float32).
    """
    image = np.asarray(image, dtype=np.float32)
    if method == "none":
        return image.copy()
    if method == "zscore":
        mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    elif method == "gmm":
        fit = fit_gmm_background(image, **kwargs)
        mean, std = fit.mean_bg, fit.std
    else:
        raise CrispError(f"unknown normalisation '{method}' (expected one of {', '.join(NORMALIZE_METHODS)})")
    if std == 0:
        return (image - np.float32(mean)).astype(np.float32)
    return ((image - np.float32(mean)) / np.float32(std)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the preprocessing stage
# --------------------------------------------------------------------------------------------
class PreprocessConfig(StageConfig):
    """Settings of ``crisp preprocess``.

    Attributes
    ----------
    bin
        Fourier binning factor (>= 1, non-integer allowed).
    normalize
        ``gmm`` (Topaz-style), ``zscore`` or ``none``.
    lowpass_A
        Gaussian low-pass: transfer 0.5 at this resolution (Å); None = no low-pass.
    pixel_size
        Å per pixel of the inputs, overriding their headers (needed for TIFF/PNG/JPG with lowpass).
    seed
        Seed of the GMM pixel subsample.
    """

    bin: float = 1.0
    normalize: NormalizeMethod = "gmm"
    lowpass_A: float | None = None
    pixel_size: float | None = None
    seed: int = 0


def preprocess_micrograph(mic: Micrograph, config: PreprocessConfig) -> Micrograph:
    """Bin, low-pass (at the binned pixel size) and normalise one micrograph."""
    if config.bin < 1:
        raise CrispError(f"binning factor must be >= 1 (got {config.bin})", mic.path)
    out = bin_micrograph(mic, config.bin)
    if config.lowpass_A is not None:
        if out.pixel_size is None:
            raise CrispError("a low-pass in Å needs the pixel size (none in the header; give --pixel-size)",
                             mic.path)
        out.data = lowpass(out.data, resolution_A=config.lowpass_A, pixel_size=out.pixel_size)
    kwargs = {"seed": config.seed} if config.normalize == "gmm" else {}
    out.data = normalize(out.data, config.normalize, **kwargs)
    return out


def _scale_star(src: Path, dest: Path, shape: tuple[int, int], binned: tuple[int, int]) -> None:
    """Write the STAR file ``src`` to ``dest`` with every coordinate block scaled to the binned grid."""
    import starfile

    try:
        data = starfile.read(src, always_dict=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise CrispError(f"not a readable STAR file ({err})", src) from None
    scaled = {}
    found = False
    for block, df in data.items():
        if hasattr(df, "columns") and {"rlnCoordinateX", "rlnCoordinateY"} <= set(df.columns):
            df = df.copy()
            df["rlnCoordinateX"], df["rlnCoordinateY"] = scale_coordinates(
                df["rlnCoordinateX"].to_numpy(float), df["rlnCoordinateY"].to_numpy(float), shape, binned)
            found = True
        scaled[block] = df
    if not found:
        raise CrispError("no rlnCoordinateX / rlnCoordinateY columns", src)
    starfile.write(scaled, dest, overwrite=True)


def preprocess_settings(config: PreprocessConfig, scale_coordinates: bool) -> dict:
    """The settings that decide ``crisp preprocess``'s outputs (recorded in the output folder).

    Every field of ``config`` and whether coordinates are scaled (the coordinate files themselves
    are inputs of their micrograph's item: a changed file redoes that item).
    """
    return {**config.model_dump(mode="json"), "scale_coordinates": bool(scale_coordinates)}


def preprocess_files(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]],
                     out_dir: str | os.PathLike[str], config: PreprocessConfig,
                     coords_dir: str | os.PathLike[str] | None = None, progress: bool = True, *,
                     overwrite: bool = False, keep_going: bool = False,
                     shard: tuple[int, int] | None = None) -> list[Path]:
    """Preprocess micrograph files into ``out_dir/NAME.mrc`` (float32), as one resumable batch.

    The micrographs are one batch (:func:`crisp.batch.run_batch`, verb ``preprocess``, one item per
    micrograph named by its stem, with outputs ``NAME.mrc`` and, when ``coords_dir`` holds
    ``NAME.star``, ``coordinates/NAME.star``). Items done with the same settings
    (:func:`preprocess_settings`) and unchanged inputs are skipped; other settings (e.g. another
    ``bin``) are refused naming the setting unless ``overwrite`` (then everything is recomputed);
    the output folder may not be a folder of the inputs.

    Parameters
    ----------
    inputs
        Micrograph files, folders or glob patterns (:func:`crisp.io.micrographs.list_micrographs`:
        MRC, TIFF, PNG, JPG; hidden files such as unfinished ``.NAME.part.mrc`` are skipped).
    out_dir
        Output folder.
    config
        Settings.
    coords_dir
        Optional folder of ``NAME.star`` coordinates in pixels of the inputs; each is written scaled
        to the binned micrograph as ``out_dir/coordinates/NAME.star``.
    progress, overwrite, keep_going, shard
        As in :func:`crisp.batch.run_batch`.

    Returns
    -------
    list of Path
        The output micrographs of the (shard's) work list, done now or before, in the lister's order.

    Raises
    ------
    CrispError
        A missing input, no micrographs, two inputs of one name, a missing coordinate folder, a bad
        output folder, other settings without ``overwrite``, or failed micrographs.
    """
    from crisp.batch import Item, run_batch
    from crisp.io.micrographs import list_micrographs

    if config.bin < 1:
        raise CrispError(f"binning factor must be >= 1 (got {config.bin})")
    sources = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = list_micrographs(sources)
    coords = None if coords_dir is None else Path(coords_dir)
    if coords is not None and not coords.is_dir():
        raise CrispError("coordinate folder not found", coords)
    items = []
    for path in files:
        coord_src = None if coords is None else coords / f"{path.stem}.star"
        if coord_src is not None and coord_src.is_file():
            items.append(Item(path.stem, inputs=(path, coord_src),
                              outputs=(f"{path.stem}.mrc", f"coordinates/{path.stem}.star")))
        else:
            items.append(Item(path.stem, inputs=(path,), outputs=(f"{path.stem}.mrc",)))

    def one(item: Item, staging) -> dict:
        mic = read_micrograph(item.inputs[0], pixel_size=config.pixel_size)
        out = preprocess_micrograph(mic, config)
        write_mrc(staging.path(item.outputs[0]), out.data, pixel_size=out.pixel_size, dtype=np.float32)
        if len(item.inputs) > 1:
            _scale_star(item.inputs[1], staging.path(item.outputs[1]), mic.shape, out.shape)
        return {"shape": list(out.shape), "pixel_size": out.pixel_size}

    input_dirs = [s for s in sources if Path(s).is_dir()] + ([coords] if coords is not None else [])
    result = run_batch("preprocess", items, one, out_dir, preprocess_settings(config, coords is not None),
                       overwrite=overwrite, keep_going=keep_going, progress=progress, shard=shard,
                       input_dirs=input_dirs)
    result.raise_failures()
    return [Path(out_dir) / f"{name}.mrc" for name in result.names]
