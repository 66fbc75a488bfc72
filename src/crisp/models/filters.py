"""Message passing for the dense CRF: Gaussian filters with the self term removed.

Every filter is built once per CRF forward call (the guide does not change between iterations) and is
then a callable ``filt(values) -> messages`` on tensors ``[B, C, H, W]`` computing, per image,

.. math::

    m_i = \\sum_{j \\ne i} k(i, j)\\, v_j ,

the sum running over all pixels of the image (no pixels outside: zero padding). Kernels:

* spatial (smoothness): ``k(i, j) = exp(-|p_i - p_j|^2 / (2 theta^2))``, ``p`` in pixels;
* appearance: ``k(i, j) = exp(-|p_i - p_j|^2 / (2 theta^2) - |f_i - f_j|^2 / (2 theta_f^2))`` with
  guide features ``f`` ``[B, F, H, W]``.

Backends (a new one is one class and one registry entry):

``SPATIAL_BACKENDS``
    ``"separable"``: exact separable Gaussian convolution with zero padding, truncated at ``truncate``
    standard deviations (default 6, tail below 1e-8); the self term ``k(i, i) = 1`` is subtracted.
    ``"brute"``: explicit ``N x N`` kernel matrix in float64 (tests, small images only).
``APPEARANCE_BACKENDS``
    ``"bilateral-grid"``: splat with multilinear weights ``W`` into a regular grid over
    ``(y, x, f_1, ..., f_F)`` with cell size ``cell * theta`` per dimension, separable Gaussian blur
    ``G`` of the grid, slice with the same weights: ``K ~ W^T G W``, symmetric by construction. The
    blur std in cells is ``sqrt(1 / cell^2 - 1 / 3)``: the two linear interpolations add about
    ``1 / 6`` cell^2 of variance each, so the total matches ``theta``. The self term removed is the
    filter's own response to a delta at the pixel, ``diag(W^T G W)``, computed exactly (it is a
    product over dimensions), so the result stays symmetric. Differentiable with respect to the
    values and to the guide features (through the interpolation weights).
    ``"brute"``: explicit kernel matrix in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from crisp.errors import CrispError

__all__ = [
    "APPEARANCE_BACKENDS",
    "SPATIAL_BACKENDS",
    "BilateralGridFilter",
    "BruteAppearanceFilter",
    "BruteSpatialFilter",
    "MessageFilter",
    "SeparableGaussianFilter",
    "gaussian_kernel1d",
    "make_appearance_filter",
    "make_spatial_filter",
]

BRUTE_MAX_PIXELS = 64 * 64
GRID_MAX_CELLS = 50_000_000


class MessageFilter(Protocol):
    """A prepared filter: ``[B, C, H, W] -> [B, C, H, W]`` messages, self term excluded."""

    def __call__(self, values: Tensor) -> Tensor: ...


def gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Unnormalised Gaussian ``exp(-k^2 / (2 sigma^2))`` for ``k = -radius .. radius`` (peak 1)."""
    k = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    return torch.exp(-0.5 * (k / sigma) ** 2).to(dtype)


def _toeplitz(kernel: Tensor, size: int) -> Tensor:
    """``[size, size]`` matrix of the zero-padded convolution with a symmetric odd-length ``kernel``."""
    radius = (kernel.numel() - 1) // 2
    i = torch.arange(size, device=kernel.device)
    lag = i.unsqueeze(0) - i.unsqueeze(1)
    values = kernel[(lag + radius).clamp(0, 2 * radius)]
    return torch.where(lag.abs() <= radius, values, torch.zeros((), dtype=kernel.dtype, device=kernel.device))


# ---------------------------------------------------------------------------------------------- spatial
class SeparableGaussianFilter:
    """Exact spatial Gaussian messages by separable convolution with zero padding (self term removed).

    Parameters
    ----------
    height, width
        Image size in pixels.
    theta_px
        Kernel standard deviation in pixels.
    truncate
        Kernel radius in standard deviations (capped at the image size, beyond which it is exact).
    """

    def __init__(
        self,
        height: int,
        width: int,
        theta_px: float,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        truncate: float = 6.0,
    ) -> None:
        if theta_px <= 0:
            raise CrispError(f"spatial kernel std must be positive, got {theta_px} px")
        radius = int(math.ceil(truncate * theta_px))
        self.kernel_y = gaussian_kernel1d(theta_px, min(radius, height - 1), dtype, device)
        self.kernel_x = gaussian_kernel1d(theta_px, min(radius, width - 1), dtype, device)

    def __call__(self, values: Tensor) -> Tensor:
        x = _convolve_axis(values, self.kernel_y.to(values.dtype), axis=-2)
        x = _convolve_axis(x, self.kernel_x.to(values.dtype), axis=-1)
        return x - values


_SHIFT_MAX_RADIUS = 8


def _convolve_axis(x: Tensor, kernel: Tensor, axis: int) -> Tensor:
    """Zero-padded convolution of ``[B, C, H, W]`` along ``axis`` (-2 or -1) with a symmetric kernel.

    Small kernels use shifted sums (faster than ``conv2d`` on CPU for a few taps), larger ones ``conv2d``.
    """
    radius = (kernel.numel() - 1) // 2
    if radius == 0:
        return x * kernel[0]
    length = x.shape[axis]
    if radius <= _SHIFT_MAX_RADIUS:
        pad = (0, 0, radius, radius) if axis == -2 else (radius, radius)
        xp = F.pad(x, pad)
        taps = kernel.tolist()
        out = x * taps[radius]
        for k in range(radius):  # kernel[k] == kernel[2 radius - k]
            pair = torch.add(xp.narrow(axis, k, length), xp.narrow(axis, 2 * radius - k, length))
            out.add_(pair, alpha=taps[k])
        return out
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    if axis == -2:
        out = F.conv2d(flat, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    else:
        out = F.conv2d(flat, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return out.reshape(b, c, h, w)


def _pixel_grid(height: int, width: int, device: torch.device | str) -> Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device),
        torch.arange(width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)  # [N, 2]


def _dense_apply(kernel: Tensor, values: Tensor) -> Tensor:
    """``kernel`` ``[B or 1, N, N]`` float64 times values ``[B, C, H, W]``; result in the values' dtype."""
    b, c, h, w = values.shape
    v = values.reshape(b, c, h * w).to(torch.float64)
    out = torch.matmul(v, kernel.transpose(-1, -2))  # [B, C, N]
    return out.reshape(b, c, h, w).to(values.dtype)


def _gaussian_matrix(coords: Tensor) -> Tensor:
    """``exp(-|c_i - c_j|^2 / 2)`` with zero diagonal; coords ``[B, N, D]`` already divided by theta."""
    sq = (coords.unsqueeze(-2) - coords.unsqueeze(-3)).pow(2).sum(-1)
    k = torch.exp(-0.5 * sq)
    eye = torch.eye(k.shape[-1], dtype=torch.bool, device=k.device)
    return k.masked_fill(eye, 0.0)


def _check_brute_size(height: int, width: int) -> None:
    if height * width > BRUTE_MAX_PIXELS:
        raise CrispError(
            f"brute-force filter is for tests on small images (<= {BRUTE_MAX_PIXELS} pixels), "
            f"got {height} x {width}"
        )


class BruteSpatialFilter:
    """Reference spatial messages with an explicit ``N x N`` float64 kernel matrix (small images)."""

    def __init__(
        self,
        height: int,
        width: int,
        theta_px: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        **_: object,
    ) -> None:
        _check_brute_size(height, width)
        coords = _pixel_grid(height, width, device) / theta_px
        self.kernel = _gaussian_matrix(coords.unsqueeze(0))

    def __call__(self, values: Tensor) -> Tensor:
        return _dense_apply(self.kernel, values)


# ---------------------------------------------------------------------------------------------- appearance
def _scaled_coordinates(features: Tensor, theta_px: float, theta_feature: float) -> Tensor:
    """Per-pixel coordinates ``[B, N, 2 + F]``: ``(y, x) / theta_px`` and ``f / theta_feature``."""
    b, f, h, w = features.shape
    pix = _pixel_grid(h, w, features.device).to(features.dtype) / theta_px  # [N, 2]
    feats = features.reshape(b, f, h * w).transpose(1, 2) / theta_feature  # [B, N, F]
    return torch.cat([pix.unsqueeze(0).expand(b, -1, -1), feats], dim=2)


class BruteAppearanceFilter:
    """Reference appearance messages with an explicit ``N x N`` float64 kernel matrix (small images)."""

    def __init__(self, features: Tensor, theta_px: float, theta_feature: float, **_: object) -> None:
        _check_brute_size(features.shape[-2], features.shape[-1])
        coords = _scaled_coordinates(features.to(torch.float64), theta_px, theta_feature)
        self.kernel = _gaussian_matrix(coords)

    def __call__(self, values: Tensor) -> Tensor:
        return _dense_apply(self.kernel, values)


class BilateralGridFilter:
    """Approximate appearance messages on a bilateral grid, ``W^T G W - diag(W^T G W)``.

    Parameters
    ----------
    features
        Guide features ``[B, F, H, W]`` (any range; the CRF passes values in ``[0, 1]``).
    theta_px, theta_feature
        Kernel standard deviations in pixels and in feature units.
    cell
        Grid cell size in units of the standard deviation; smaller is more accurate and slower. With
        linear interpolation 0.5 keeps the relative error of the messages at about 1 % (0.35: 0.6 %,
        1.0: 5 %).
    truncate
        Grid blur radius in blur standard deviations.
    order
        Interpolation: 1 = multilinear (``2^D`` corners per pixel, ``cell < sqrt(3)``), 2 = quadratic
        B-spline (``3^D`` corners, ``cell < sqrt(2)``; shift-invariant variance, so more accurate per
        cell but slower per pixel).
    """

    def __init__(
        self,
        features: Tensor,
        theta_px: float,
        theta_feature: float,
        *,
        cell: float = 0.5,
        truncate: float = 4.0,
        order: int = 1,
    ) -> None:
        if cell <= 0:
            raise CrispError(f"bilateral-grid cell must be positive, got {cell}")
        if theta_px <= 0 or theta_feature <= 0:
            raise CrispError(f"appearance kernel stds must be positive, got {theta_px} px, {theta_feature}")
        b, nf, h, w = features.shape
        self.shape = (b, h, w)
        coords = _scaled_coordinates(features, theta_px * cell, theta_feature * cell)  # [B, N, D] in cells
        # shift by whole cells only, so that the lattice (and the approximation) does not depend on
        # the other images of the batch
        offset = torch.floor(coords.detach().amin(dim=(0, 1), keepdim=True))
        coords = coords - offset
        ndim = coords.shape[-1]
        if order == 1:  # linear: nodes floor(u), floor(u) + 1
            base = torch.floor(coords.detach())
            t = coords - base  # differentiable w.r.t. the features
            node_weights = [1.0 - t, t]
            spread = 1.0 / 6.0  # mean of t (1 - t) over t
        elif order == 2:  # quadratic B-spline: nodes round(u) - 1, round(u), round(u) + 1 (shifted by +1)
            base = torch.floor(coords.detach() + 0.5)
            t = coords - base
            node_weights = [0.5 * (0.5 - t) ** 2, 0.75 - t**2, 0.5 * (0.5 + t) ** 2]
            spread = 0.25  # exact: the second moment of quadratic B-spline interpolation is constant
        else:
            raise CrispError(f"bilateral-grid interpolation order must be 1 or 2, got {order}")
        base = base.long()
        nodes = len(node_weights)
        sizes = [int(base[..., d].max().item()) + nodes for d in range(ndim)]
        cells = math.prod(sizes)
        if cells * b > GRID_MAX_CELLS:
            raise CrispError(
                f"bilateral grid of {b} x {sizes} cells is too large; use fewer guide channels, "
                "a larger theta_beta or a larger grid cell"
            )
        strides = [math.prod(sizes[d + 1 :]) for d in range(ndim)]
        device = features.device
        # linear index of each pixel's first corner, plus the offsets of all corners (dimension 0
        # outermost, so that each pixel's corner indices are sorted)
        first = (torch.arange(b, device=device) * cells).view(b, 1)
        offsets = torch.zeros(1, dtype=torch.long, device=device)
        weight = None
        for d in range(ndim):
            first = first + base[..., d] * strides[d]
            steps = torch.arange(nodes, device=device) * strides[d]
            offsets = (offsets.unsqueeze(1) + steps.unsqueeze(0)).reshape(-1)
            wd = torch.stack([wk[..., d] for wk in node_weights], dim=-1)  # [B, N, nodes]
            weight = wd if weight is None else (weight.unsqueeze(-1) * wd.unsqueeze(-2)).flatten(-2)
        index = first.unsqueeze(-1) + offsets  # [B, N, nodes^D]
        self.index = index.reshape(-1)  # [B * N * nodes^D]
        self.weight = weight  # [B, N, nodes^D]
        self.corners = nodes**ndim
        self.sizes = sizes
        self.total_cells = b * cells
        variance = 1.0 / cell**2 - 2.0 * spread
        if variance <= 0:
            raise CrispError(f"bilateral-grid cell {cell} is too large for interpolation order {order}")
        sigma = math.sqrt(variance)
        radius = max(nodes - 1, int(math.ceil(truncate * sigma)))
        # the interpolations spread the unit mass of each node over 2 * spread cell^2 more variance;
        # scale the blur so that the peak of the whole kernel is 1 like the exact one
        gain = 1.0 / (cell * sigma)
        self.kernels = [
            gain * gaussian_kernel1d(sigma, min(radius, size - 1), features.dtype, features.device)
            for size in sizes
        ]
        self.blur_matrices = [_toeplitz(kern, size) for kern, size in zip(self.kernels, sizes, strict=True)]
        # self response diag(W^T G W) = prod_d sum_{k, l} w_k w_l g(k - l) = prod_d w_d^T G_d w_d
        diag = None
        lags = torch.arange(nodes, device=device)
        lags = lags.unsqueeze(0) - lags.unsqueeze(1)  # [nodes, nodes]
        for d in range(ndim):
            kern = self.kernels[d]
            small = kern[(kern.numel() - 1) // 2 + lags]  # [nodes, nodes]
            wd = torch.stack([wk[..., d] for wk in node_weights], dim=-1)  # [B, N, nodes]
            term = ((wd @ small) * wd).sum(-1)
            diag = term if diag is None else diag * term
        self.self_response = diag  # [B, N]
        self._csr_cache: dict[torch.dtype, Tensor] = {}

    def _slice_matrix(self, dtype: torch.dtype) -> Tensor:
        """``W^T`` as a CSR matrix ``[B*N, B*cells]`` (each row: one pixel's corners, sorted)."""
        if dtype not in self._csr_cache:
            rows = self.weight.shape[0] * self.weight.shape[1]
            crow = torch.arange(0, rows * self.corners + 1, self.corners, device=self.index.device)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._csr_cache[dtype] = torch.sparse_csr_tensor(
                    crow,
                    self.index,
                    self.weight.reshape(-1).to(dtype),
                    (rows, self.total_cells),
                    check_invariants=False,
                )
        return self._csr_cache[dtype]

    def splat(self, values: Tensor) -> Tensor:
        """``W v``: values ``[B, C, N]`` onto the grid ``[B * cells, C]`` (differentiable)."""
        b, c, n = values.shape
        weight = self.weight.to(values.dtype)
        # one 1-D scatter per channel: much faster than a 2-D index_add, no per-channel index copy
        empty = torch.zeros(self.total_cells, dtype=values.dtype, device=values.device)
        channels = values.unsqueeze(-1)
        return torch.stack(
            [empty.scatter_add(0, self.index, (channels[:, k] * weight).reshape(-1)) for k in range(c)],
            dim=-1,
        )

    def slice(self, grid: Tensor) -> Tensor:
        """``W^T g``: the grid ``[B * cells, C]`` back at the pixels, ``[B, C, N]`` (differentiable)."""
        b, n = self.weight.shape[:2]
        c = grid.shape[-1]
        if self.weight.requires_grad:  # the guide is learned: keep the weights in the graph
            sliced = grid.index_select(0, self.index).view(b, n, self.corners, c)
            out = (sliced * self.weight.to(grid.dtype).unsqueeze(-1)).sum(dim=2)
        else:  # the same product as a sparse matrix (rows: pixels), several times faster
            out = (self._slice_matrix(grid.dtype) @ grid).view(b, n, c)
        return out.transpose(1, 2)

    def __call__(self, values: Tensor) -> Tensor:
        b, h, w = self.shape
        c = values.shape[1]
        v = values.reshape(b, c, h * w)
        if self.weight.requires_grad:
            grid = self.splat(v)
        else:  # W^T and W are each other's adjoints: use the fast one for each backward
            grid = _Splat.apply(v, self)
        grid = grid.view(b, *self.sizes, c)
        for d, matrix in enumerate(self.blur_matrices):  # dense banded matrices: BLAS beats conv1d here
            grid = torch.tensordot(grid, matrix.to(values.dtype), dims=([d + 1], [0])).movedim(-1, d + 1)
        grid = grid.reshape(-1, c)
        out = self.slice(grid) if self.weight.requires_grad else _Slice.apply(grid, self)
        out = out - self.self_response.to(values.dtype).unsqueeze(1) * v
        return out.reshape(b, c, h, w)


class _Splat(torch.autograd.Function):
    """``W v`` with the backward ``W^T g`` done by the fast slicing (fixed weights only)."""

    @staticmethod
    def forward(ctx, values: Tensor, filt: BilateralGridFilter) -> Tensor:
        ctx.filt = filt
        return filt.splat(values)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Slice.apply(grad.contiguous(), ctx.filt), None


class _Slice(torch.autograd.Function):
    """``W^T g`` with the backward ``W v`` done by scattering (fixed weights only)."""

    @staticmethod
    def forward(ctx, grid: Tensor, filt: BilateralGridFilter) -> Tensor:
        ctx.filt = filt
        return filt.slice(grid)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Splat.apply(grad.contiguous(), ctx.filt), None


# ---------------------------------------------------------------------------------------------- registry
SPATIAL_BACKENDS: dict[str, Callable[..., MessageFilter]] = {
    "separable": SeparableGaussianFilter,
    "brute": BruteSpatialFilter,
}
APPEARANCE_BACKENDS: dict[str, Callable[..., MessageFilter]] = {
    "bilateral-grid": BilateralGridFilter,
    "brute": BruteAppearanceFilter,
}


def make_spatial_filter(
    name: str,
    height: int,
    width: int,
    theta_px: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **options: object,
) -> MessageFilter:
    """Build the spatial (smoothness) filter ``name`` for ``height x width`` images."""
    try:
        factory = SPATIAL_BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(SPATIAL_BACKENDS))
        raise CrispError(f"unknown spatial filter {name!r}; known: {known}") from None
    return factory(height, width, theta_px, dtype=dtype, device=device, **options)


def make_appearance_filter(
    name: str, features: Tensor, theta_px: float, theta_feature: float, **options: object
) -> MessageFilter:
    """Build the appearance filter ``name`` for guide ``features`` ``[B, F, H, W]``."""
    try:
        factory = APPEARANCE_BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(APPEARANCE_BACKENDS))
        raise CrispError(f"unknown appearance filter {name!r}; known: {known}") from None
    return factory(features, theta_px, theta_feature, **options)
