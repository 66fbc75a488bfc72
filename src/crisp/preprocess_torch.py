"""Micrograph preparation (Fourier binning, normalisation) in PyTorch, on the device the network runs on.

The same arithmetic as :mod:`crisp.preprocess` (the reference, numpy/scipy on the CPU), for a GPU:

- :func:`fourier_resize_torch` is :func:`crisp.preprocess.fourier_resize`: one axis after the other
  (rows, then columns), exactly the real-input branch of :func:`scipy.signal.resample`: ``rfft``,
  keep the lowest ``min(n, m) // 2 + 1`` coefficients, double (binning) or halve (upsampling) the
  unpaired coefficient ``m // 2`` when ``m = min(n, m)`` is even, ``irfft`` to ``m`` samples, divide by
  ``n / m``. In float32 like scipy; sample 0 stays at sample 0.
- :func:`fit_gmm_background_torch` is :func:`crisp.preprocess.fit_gmm_background`: the same seeded
  subsample (its indices drawn by numpy exactly as the reference draws them, once per image size),
  the same two EM starts and stopping rule, in float64, both starts at once; the host reads the
  convergence flags only every :data:`CHECK_EVERY` iterations (a start that has converged is frozen,
  so the result is that of the reference's loop).
- :func:`normalize_torch` / :func:`normalize_gmm_torch` are :func:`crisp.preprocess.normalize`.
- :func:`prepare_on_device` is :func:`crisp.patches.prepare_image` (bin, then normalise).

Results agree with the reference to float rounding (tests/test_preprocess_torch.py states the
tolerances): the FFT libraries (pocketfft in scipy; pocketfft/MKL or cuFFT in torch) round differently,
and sums are accumulated in another order. The CPU path of inference stays the reference; this one is
chosen with ``--prepare-on`` (:mod:`crisp.inference.segment_pick`).
"""

from __future__ import annotations

import functools

import numpy as np

from crisp.errors import CrispError
from crisp.preprocess import NORMALIZE_METHODS, GMMFit, binned_shape

#: EM iterations between two reads of the convergence flags by the host (one device sync each)
CHECK_EVERY = 8

#: numpy dtypes copied to the device as they are (converted to float32 there); others are converted first
_DEVICE_DTYPES = (np.float32, np.float16, np.float64, np.uint8, np.int8, np.int16, np.int32)


def as_device_tensor(image, device=None):
    """A float32 torch tensor of ``image`` (numpy array or tensor) on ``device`` (default: the tensor's
    own device, the CPU for arrays). Arrays of small integer or half types travel as they are."""
    import torch

    if isinstance(image, torch.Tensor):
        return image.to(device=device if device is not None else image.device, dtype=torch.float32)
    array = np.asarray(image)
    if array.dtype.type not in _DEVICE_DTYPES or not array.dtype.isnative:
        array = array.astype(np.float32)
    if not array.flags.writeable:  # torch.from_numpy warns about read-only memory
        array = array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device if device is not None else "cpu").to(torch.float32)


def _resample_axis(x, num: int, dim: int):
    """:func:`scipy.signal.resample` of a real float32 tensor along ``dim`` to ``num`` samples."""
    import torch

    n = x.shape[dim]
    m = min(num, n)
    spectrum = torch.fft.rfft(x, dim=dim)
    spectrum = spectrum.narrow(dim, 0, m // 2 + 1)
    if m % 2 == 0:  # the unpaired coefficient m // 2: two bins united (binning) or split (upsampling)
        spectrum = spectrum.clone()
        index = [slice(None)] * x.ndim
        index[dim] = m // 2
        spectrum[tuple(index)] *= 2.0 if num < n else 0.5
    if num < n and num % 2 == 0:
        # the output's Nyquist coefficient: pocketfft's inverse real FFT ignores its imaginary part, cuFFT
        # need not; make it real so that every FFT library computes the same thing
        index = [slice(None)] * x.ndim
        index[dim] = num // 2
        spectrum[tuple(index)] = spectrum[tuple(index)].real.to(spectrum.dtype)
    return torch.fft.irfft(spectrum / (n / num), n=num, dim=dim)


def fourier_resize_torch(tensor, shape: tuple[int, ...]):
    """Band-limited resampling of a real tensor to ``shape``: :func:`crisp.preprocess.fourier_resize`.

    Parameters
    ----------
    tensor
        Real torch tensor (or numpy array), 2-D or 3-D, on any device.
    shape
        Output shape, one entry per axis.

    Returns
    -------
    torch.Tensor
        float32 tensor of ``shape`` on the input's device (a new tensor, also when nothing changes).
    """
    out = as_device_tensor(tensor)
    if len(shape) != out.ndim:
        raise CrispError(f"cannot resize an array of shape {tuple(out.shape)} to {tuple(shape)}")
    if any(int(m) < 1 for m in shape):
        raise CrispError(f"cannot resize to shape {tuple(shape)}")
    changed = False
    for dim, m in enumerate(shape):
        if out.shape[dim] != int(m):
            out = _resample_axis(out, int(m), dim)
            changed = True
    return out.contiguous() if changed else out.clone()


def fourier_bin_torch(tensor, factor: float):
    """:func:`crisp.preprocess.fourier_bin` in torch: binning by ``factor`` >= 1 (float32 tensor)."""
    if not factor >= 1:
        raise CrispError(f"binning factor must be >= 1 (got {factor})")
    tensor = as_device_tensor(tensor)
    return fourier_resize_torch(tensor, binned_shape(tuple(tensor.shape), factor))


@functools.lru_cache(maxsize=16)
def _subsample_indices(size: int, max_samples: int, seed: int) -> np.ndarray:
    """The pixel indices :func:`crisp.preprocess.fit_gmm_background` subsamples (``Generator.choice``
    of an array of ``size`` draws the indices this returns, and takes the array at them)."""
    indices = np.random.default_rng(seed).choice(size, size=int(max_samples), replace=False)
    indices.setflags(write=False)
    return indices


def fit_gmm_background_torch(tensor, prior_alpha: float = 900.0, prior_beta: float = 100.0,
                             max_samples: int = 100_000, seed: int = 0, n_iter: int = 200,
                             tol: float = 1e-7) -> GMMFit:
    """:func:`crisp.preprocess.fit_gmm_background` on the tensor's device (float64 arithmetic).

    Parameters
    ----------
    tensor
        Real torch tensor (or numpy array), any shape.
    prior_alpha, prior_beta, max_samples, seed, n_iter, tol
        As in :func:`crisp.preprocess.fit_gmm_background` (same defaults).

    Returns
    -------
    GMMFit
        Python floats (one device sync at the end, and one per :data:`CHECK_EVERY` EM iterations).
    """
    import torch

    if prior_alpha < 0 or prior_beta < 0:
        raise CrispError(f"Beta prior pseudo-counts must be >= 0 (got {prior_alpha}, {prior_beta})")
    flat = as_device_tensor(tensor).reshape(-1)
    if flat.numel() < 2:
        raise CrispError("cannot fit a mixture to fewer than 2 pixels")
    if flat.numel() > max_samples:
        index = torch.from_numpy(_subsample_indices(flat.numel(), int(max_samples), int(seed)).copy())
        flat = flat[index.to(flat.device)]
    x = flat.to(torch.float64)
    n = x.numel()
    mean, std = x.mean(), x.std(correction=0)
    mean_f, std_f = float(mean), float(std)
    if std_f == 0:
        return GMMFit(mean_bg=mean_f, mean_fg=mean_f, std=0.0, weight_bg=1.0)
    a, b = float(prior_alpha), float(prior_beta)
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64, device=x.device)[:, None]  # the two starts
    mean_bg = mean - 0.2 * sign * std
    mean_fg = mean + sign * std
    var = torch.full_like(mean_bg, 0.5 * std_f**2)
    w_bg = torch.full_like(mean_bg, 0.9)
    log_post = torch.full_like(mean_bg, -float("inf"))
    done = torch.zeros_like(mean_bg, dtype=torch.bool)
    x = x[None, :]
    for iteration in range(int(n_iter)):
        # E step (shared variance: the constants cancel)
        logit = (torch.log(1.0 - w_bg) - torch.log(w_bg)
                 + ((x - mean_bg) ** 2 - (x - mean_fg) ** 2) / (2.0 * var))
        r_fg = torch.sigmoid(logit)
        r_bg = 1.0 - r_fg
        n_fg = r_fg.sum(dim=1, keepdim=True)
        n_bg = n - n_fg
        # M step (MAP weight: pseudo-counts a on background, b on foreground)
        new_bg = (r_bg * x).sum(dim=1, keepdim=True) / n_bg.clamp_min(1e-12)
        new_fg = (r_fg * x).sum(dim=1, keepdim=True) / n_fg.clamp_min(1e-12)
        new_var = ((r_bg * (x - new_bg) ** 2 + r_fg * (x - new_fg) ** 2).sum(dim=1, keepdim=True) / n)
        new_var = new_var.clamp_min(1e-12)
        new_w = ((n_bg + a) / (n + a + b)).clamp(1e-6, 1 - 1e-6)
        lb = torch.log(new_w) - (x - new_bg) ** 2 / (2 * new_var)
        lf = torch.log(1 - new_w) - (x - new_fg) ** 2 / (2 * new_var)
        new = (torch.logaddexp(lb, lf).sum(dim=1, keepdim=True) - 0.5 * n * torch.log(new_var)
               + a * torch.log(new_w) + b * torch.log(1 - new_w))
        # a start that has converged keeps the values of the iteration it stopped at
        active = ~done
        mean_bg = torch.where(active, new_bg, mean_bg)
        mean_fg = torch.where(active, new_fg, mean_fg)
        var = torch.where(active, new_var, var)
        w_bg = torch.where(active, new_w, w_bg)
        converged = (new - log_post).abs() <= tol * new.abs()
        log_post = torch.where(active, new, log_post)
        done = done | (active & converged)
        if (iteration + 1) % CHECK_EVERY == 0 and bool(done.all()):
            break
    values = torch.cat([mean_bg, mean_fg, var, w_bg, log_post], dim=1).cpu().tolist()
    best = None
    for m_bg, m_fg, v, w, lp in values:  # the first start wins ties, as in the reference
        if w < 0.5:  # the background is the heavier component
            m_bg, m_fg, w = m_fg, m_bg, 1.0 - w
        fit = GMMFit(mean_bg=float(m_bg), mean_fg=float(m_fg), std=float(np.sqrt(v)), weight_bg=float(w))
        if best is None or lp > best[1]:
            best = (fit, lp)
    assert best is not None
    return best[0]


def _standardise(tensor, mean: float, std: float):
    """``(x - float32(mean)) / float32(std)`` as :func:`crisp.preprocess.normalize` computes it (the scalars
    as device tensors: a CPU scalar divisor becomes a multiplication by its reciprocal on CUDA)."""
    import torch

    centre = torch.tensor(np.float32(mean), dtype=torch.float32, device=tensor.device)
    if std == 0:
        return tensor - centre
    return (tensor - centre) / torch.tensor(np.float32(std), dtype=torch.float32, device=tensor.device)


def normalize_torch(tensor, method: str = "gmm", **kwargs):
    """:func:`crisp.preprocess.normalize` in torch: ``gmm``, ``zscore`` or ``none`` (float32 tensor).

    ``kwargs`` go to :func:`fit_gmm_background_torch` (``gmm`` only).
    """
    import torch

    tensor = as_device_tensor(tensor)
    if method == "none":
        return tensor.clone()
    if method == "zscore":
        wide = tensor.to(torch.float64)
        mean, std = float(wide.mean()), float(wide.std(correction=0))
    elif method == "gmm":
        fit = fit_gmm_background_torch(tensor, **kwargs)
        mean, std = fit.mean_bg, fit.std
    else:
        raise CrispError(f"unknown normalisation '{method}' (expected one of {', '.join(NORMALIZE_METHODS)})")
    return _standardise(tensor, mean, std)


def normalize_gmm_torch(tensor, **kwargs):
    """``normalize(image, method="gmm")`` in torch: ``(x - mean_bg) / std`` of
    :func:`fit_gmm_background_torch` (``kwargs`` go to it: the reference's defaults)."""
    return normalize_torch(tensor, "gmm", **kwargs)


def prepare_on_device(image, factor: float, method: str, device=None):
    """:func:`crisp.patches.prepare_image` on ``device``: Fourier-resample to ``round(n / factor)`` pixels
    per axis (``factor`` 1: unchanged), then normalise by ``method``.

    Parameters
    ----------
    image
        2-D micrograph, numpy array (read on the host) or tensor.
    factor
        Resampling factor (> 1 bins, < 1 upsamples; non-integer allowed).
    method
        ``gmm``, ``zscore`` or ``none``.
    device
        torch device (default: the tensor's, the CPU for an array); only the raw pixels cross to it.

    Returns
    -------
    torch.Tensor
        float32 ``[H, W]`` on ``device``, the network's input.
    """
    if method not in NORMALIZE_METHODS:
        raise CrispError(f"unknown normalisation '{method}' (expected one of {', '.join(NORMALIZE_METHODS)})")
    tensor = as_device_tensor(image, device)
    if factor != 1:
        tensor = fourier_resize_torch(tensor, binned_shape(tuple(tensor.shape), factor))
    return normalize_torch(tensor, method)
