"""Trainable dense CRF layer (grayscale CRF and CNN-driven CD-CRF), pure PyTorch, CPU and GPU.

The CRF refines the scores of a segmentation network. For an image of ``N`` pixels and ``C`` classes,
with ``q`` the relaxed labelling (a probability vector per pixel), the energy is

.. math::

    E(q) = \\sum_i \\langle u_i, q_i \\rangle
         + \\tfrac12 \\sum_k \\sum_{i \\ne j} k_k(i, j)\\, q_i^\\top \\mu_k q_j ,
    \\qquad u = -\\text{logits},

with two Gaussian kernels (Krähenbühl & Koltun 2011):

* appearance ``w_appearance * exp(-|p_i-p_j|^2 / (2 theta_alpha^2) - |f_i-f_j|^2 / (2 theta_beta^2))``,
* smoothness ``w_smoothness * exp(-|p_i-p_j|^2 / (2 theta_gamma^2))``,

where ``p`` are pixel positions (pixels of the CRF input), ``f`` the normalised guide features, and
``mu_k`` a symmetric class-compatibility matrix per kernel, initialised to the Potts model
(``1 - identity``) and learnable. There is no self-interaction (``i != j``): the filters in
:mod:`crisp.models.filters` remove the self term exactly (see there).

Kernel normalisation (``normalise_kernels=True``, the default): each kernel weight is divided by the
kernel's spatial mass ``m = sum_{(dy, dx) != 0} exp(-(dy^2 + dx^2) / (2 theta^2))`` (about
``2 pi theta^2``; :func:`spatial_kernel_mass`), so ``w`` is the weight of a whole neighbourhood that
disagrees and the same ``w`` works at every binning. With the plain kernels (``False``, as in
pydensecrf with ``NO_NORMALIZATION``) the appearance messages of a 40 px kernel sum over thousands of
pixels and ``w = 1`` swamps any CNN logits; there ``w`` must be of the order of ``1 / m``.

Solvers (``iterations`` steps each, 5 by default as in CRF-as-RNN):

* ``"mean-field"``: ``q <- softmax(logits - P q)`` with ``P q = sum_k (w_k / m_k) mu_k (K_k q)``.
* ``"frank-wolfe"``: the regularised Frank-Wolfe of Lê-Huu & Alahari (NeurIPS 2021). With
  ``g = grad E(x) = P x - logits``, the regularised linear oracle gives ``s = softmax(-g / lambda)``
  (entropy regulariser) or ``s = sparsemax(-g / lambda)`` (L2 regulariser), and
  ``x <- x + alpha (s - x)`` with ``alpha`` fixed, ``2 / (k + 2)`` (k = 0, 1, ...) or the exact line
  search of the quadratic energy on the segment ``[x, s]`` (closed form, so the energy never
  increases; the default, as in the authors' code). ``x0 = softmax(logits)``. With the entropy
  regulariser, ``lambda = 1`` and a fixed step of 1 the iterates are exactly those of mean field.

Both solvers may blend the result with the initial softmax: ``q <- (1 - b) q + b softmax(logits)``.
The layer returns ``log q`` (usable as logits: ``softmax`` of the output gives back ``q``).

Guide normalisation (so that ``theta_beta`` has one meaning, like 13/255 for RGB in the original
dense CRF): every guide channel is mapped into ``[0, 1]``:

* ``kind="crf"`` (the micrograph, F channels, usually 1): per image and channel, the 1st and 99th
  percentiles map to 0 and 1, values outside are clipped;
* ``kind="cd-crf"``, ``feature_source="logits"``: the class probabilities ``softmax(logits)`` without
  the first (background) channel, i.e. the ``C - 1`` free coordinates of the probability simplex
  (for two classes: the foreground probability);
* ``kind="cd-crf"``, ``feature_source="decoder"``: the decoder features are standardised per image and
  channel (zero mean, unit variance), reduced by a learned 1x1 convolution to ``feature_channels``
  and squashed by a logistic sigmoid.

The micrograph and the logits guide are treated as fixed images (detached): gradients reach the CNN
through the unary term. Decoder features stay in the graph, so the 1x1 reduction is learned. At most
3 feature channels: the bilateral grid is dense in the feature dimensions.

Units and binning: ``theta_alpha`` and ``theta_gamma`` are given in pixels of the full-resolution
micrograph (paper: 160 px and 3 px). :func:`build_crf` takes the binning factor ``scale`` of the CRF
input and uses ``theta / scale`` binned pixels: with binning 4 the defaults become 40 px
(appearance) and 0.75 px (smoothness); with binning 8, 20 px and 0.375 px (a smoothness kernel
narrower than half a pixel has almost no effect: ``exp(-1 / (2 * 0.375^2)) = 0.03`` for the nearest
neighbours).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from crisp.config import StageConfig
from crisp.errors import CrispError
from crisp.models import filters as _filters

__all__ = [
    "CRFConfig",
    "DenseCRF",
    "build_crf",
    "normalise_guide",
    "probability_histogram",
    "refine_probabilities",
    "sparsemax",
    "spatial_kernel_mass",
]

_LOG_EPS = 1e-12


class CRFConfig(StageConfig):
    """Settings of the dense CRF layer (defaults as in the paper where it gives them).

    Lengths ``theta_alpha`` and ``theta_gamma`` are in pixels of the full-resolution micrograph;
    :func:`build_crf` divides them by the binning factor. ``theta_beta`` is on the normalised guide
    scale ``[0, 1]`` (see the module docstring).
    """

    kind: Literal["none", "crf", "cd-crf"] = "none"
    solver: Literal["mean-field", "frank-wolfe"] = "mean-field"
    iterations: int = Field(5, ge=0, description="solver iterations (paper: 5)")
    theta_alpha: float = Field(160.0, gt=0, description="appearance kernel spatial std, full-res px")
    theta_beta: float = Field(0.05, gt=0, description="appearance kernel feature std, normalised scale")
    theta_gamma: float = Field(3.0, gt=0, description="smoothness kernel std, full-res px")
    w_appearance: float = Field(1.0, description="initial appearance kernel weight")
    w_smoothness: float = Field(1.0, description="initial smoothness kernel weight")
    normalise_kernels: bool = Field(
        True, description="divide each kernel by its spatial mass, so w does not depend on theta or binning"
    )
    feature_source: Literal["logits", "decoder"] = "logits"
    feature_channels: int = Field(2, ge=1, le=3, description="decoder features after the learned 1x1 conv")
    regulariser: Literal["entropy", "l2"] = "entropy"
    fw_lambda: float = Field(1.0, gt=0, description="Frank-Wolfe regularisation weight lambda")
    step: Literal["fixed", "diminishing", "line-search"] = "line-search"
    step_size: float = Field(1.0, gt=0, le=1, description="Frank-Wolfe step for step='fixed'")
    blend_initial: float = Field(0.0, ge=0, le=1, description="weight of softmax(logits) in the output")
    learnable: bool = Field(True, description="learn kernel weights and compatibility matrices")
    spatial_backend: str = Field("separable", description="name in filters.SPATIAL_BACKENDS")
    appearance_backend: str = Field("bilateral-grid", description="name in filters.APPEARANCE_BACKENDS")
    grid_cell: float = Field(
        0.5, gt=0, lt=1.7, description="bilateral-grid cell size in units of the kernel std"
    )
    grid_truncate: float = Field(4.0, gt=0, description="bilateral-grid blur radius, in blur stds")


def spatial_kernel_mass(theta_px: float) -> float:
    """``sum over (dy, dx) != 0 of exp(-(dy^2 + dx^2) / (2 theta^2))`` on the infinite pixel lattice.

    About ``2 pi theta^2 - 1`` for wide kernels; the weight a pixel receives from a whole uniform
    neighbourhood. Dividing a kernel by it makes ``w`` independent of ``theta`` and of binning.
    """
    radius = int(np.ceil(12 * theta_px)) + 1
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    return float(np.exp(-0.5 * (k / theta_px) ** 2).sum() ** 2 - 1.0)


def build_crf(
    config: CRFConfig, num_classes: int = 2, scale: float = 1.0, guide_channels: int | None = None
) -> DenseCRF | None:
    """Build the CRF layer described by ``config``; ``None`` for ``kind="none"``.

    Parameters
    ----------
    config
        CRF settings.
    num_classes
        Number of classes ``C`` of the logits.
    scale
        Binning factor of the CRF input relative to the full-resolution micrograph:
        ``theta_alpha / scale`` and ``theta_gamma / scale`` binned pixels are used.
    guide_channels
        Channels of the decoder features (``feature_source="decoder"`` only); ``None`` makes the
        1x1 convolution lazy (its input size is fixed at the first forward call).
    """
    if config.kind == "none":
        return None
    return DenseCRF(config, num_classes=num_classes, scale=scale, guide_channels=guide_channels)


def sparsemax(z: Tensor, dim: int = 1) -> Tensor:
    """Euclidean projection of ``z`` onto the probability simplex along ``dim`` (Martins & Astudillo)."""
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    n = z.shape[dim]
    shape = [1] * z.dim()
    shape[dim] = n
    k = torch.arange(1, n + 1, dtype=z.dtype, device=z.device).view(shape)
    cumsum = z_sorted.cumsum(dim) - 1.0
    support = (k * z_sorted > cumsum).to(z.dtype)
    k_max = support.sum(dim=dim, keepdim=True)
    # threshold tau = (sum of the k_max largest entries - 1) / k_max
    tau = torch.gather(cumsum, dim, k_max.long() - 1) / k_max
    return torch.clamp(z - tau, min=0.0)


def _percentile_normalise(x: Tensor, low: float = 0.01, high: float = 0.99) -> Tensor:
    b, f = x.shape[:2]
    flat = x.reshape(b, f, -1)
    n = flat.shape[-1]
    sample = flat[..., :: max(1, n // 1_000_000)].detach()
    qs = torch.quantile(sample, torch.tensor([low, high], dtype=x.dtype, device=x.device), dim=-1)
    lo = qs[0].view(b, f, 1, 1)
    hi = qs[1].view(b, f, 1, 1)
    span = torch.clamp(hi - lo, min=torch.finfo(x.dtype).eps)
    return torch.clamp((x - lo) / span, 0.0, 1.0)


def normalise_guide(guide: Tensor, kind: str, feature_source: str = "logits") -> Tensor:
    """Map a guide ``[B, F, H, W]`` onto the ``[0, 1]`` feature scale used by ``theta_beta``.

    ``kind="crf"``: per image and channel the 1st/99th percentiles go to 0/1 (clipped).
    ``kind="cd-crf"`` with logits: ``softmax`` over channels without channel 0.
    Decoder features are normalised inside :class:`DenseCRF` (learned reduction then sigmoid).
    """
    if kind == "crf":
        return _percentile_normalise(guide)
    if kind == "cd-crf" and feature_source == "logits":
        prob = torch.softmax(guide, dim=1)
        return prob[:, 1:] if guide.shape[1] > 1 else prob
    raise ValueError(f"no fixed normalisation for kind={kind!r}, feature_source={feature_source!r}")


class DenseCRF(nn.Module):
    """Dense CRF with an appearance and a smoothness Gaussian kernel, solved for a few iterations.

    See the module docstring for the energy, the solvers and the guide normalisation.

    Parameters
    ----------
    config
        CRF settings (``kind`` must be ``"crf"`` or ``"cd-crf"``).
    num_classes
        Number of classes ``C``.
    scale
        Binning factor: the kernel lengths used are ``theta_alpha / scale`` and ``theta_gamma / scale``
        pixels of the input.
    guide_channels
        Decoder feature channels for ``feature_source="decoder"`` (``None``: lazy 1x1 convolution).
    """

    def __init__(
        self, config: CRFConfig, num_classes: int = 2, scale: float = 1.0, guide_channels: int | None = None
    ) -> None:
        super().__init__()
        if config.kind == "none":
            raise CrispError("DenseCRF needs kind 'crf' or 'cd-crf' (use build_crf for 'none')")
        if scale <= 0:
            raise CrispError(f"CRF scale (binning factor) must be positive, got {scale}")
        if config.spatial_backend not in _filters.SPATIAL_BACKENDS:
            raise CrispError(
                f"unknown spatial filter {config.spatial_backend!r}; "
                f"known: {', '.join(sorted(_filters.SPATIAL_BACKENDS))}"
            )
        if config.appearance_backend not in _filters.APPEARANCE_BACKENDS:
            raise CrispError(
                f"unknown appearance filter {config.appearance_backend!r}; "
                f"known: {', '.join(sorted(_filters.APPEARANCE_BACKENDS))}"
            )
        self.config = config
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.theta_alpha_px = config.theta_alpha / self.scale
        self.theta_gamma_px = config.theta_gamma / self.scale
        if config.normalise_kernels:
            masses = [spatial_kernel_mass(self.theta_alpha_px), spatial_kernel_mass(self.theta_gamma_px)]
        else:
            masses = [1.0, 1.0]
        self.register_buffer("kernel_mass", torch.tensor(masses, dtype=torch.float64), persistent=False)
        potts = 1.0 - torch.eye(self.num_classes)
        weights = torch.tensor([config.w_appearance, config.w_smoothness], dtype=torch.float32)
        if config.learnable:
            self.kernel_weights = nn.Parameter(weights)
            self.compat_appearance = nn.Parameter(potts.clone())
            self.compat_smoothness = nn.Parameter(potts.clone())
        else:
            self.register_buffer("kernel_weights", weights)
            self.register_buffer("compat_appearance", potts.clone())
            self.register_buffer("compat_smoothness", potts.clone())
        self.reducer: nn.Module | None = None
        if config.kind == "cd-crf" and config.feature_source == "decoder":
            if guide_channels is None:
                self.reducer = nn.LazyConv2d(config.feature_channels, kernel_size=1)
            else:
                self.reducer = nn.Conv2d(guide_channels, config.feature_channels, kernel_size=1)

    # ------------------------------------------------------------------ pieces
    def features(self, guide: Tensor) -> Tensor:
        """Normalised guide features ``[B, F', H, W]`` in ``[0, 1]`` (see the module docstring)."""
        cfg = self.config
        if cfg.kind == "cd-crf" and cfg.feature_source == "decoder":  # learned: gradients flow
            mean = guide.mean(dim=(2, 3), keepdim=True)
            std = guide.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
            assert self.reducer is not None
            return torch.sigmoid(self.reducer((guide - mean) / std))
        # a fixed guide: no gradient through the features (the CNN learns through the unary term)
        return normalise_guide(guide.detach(), cfg.kind, cfg.feature_source)

    def build_filters(self, guide: Tensor, height: int, width: int) -> tuple:
        """The appearance and smoothness message filters for this guide (built once per forward)."""
        return self.filters_from_features(self.features(guide), height, width)

    def filters_from_features(self, feats: Tensor, height: int, width: int) -> tuple:
        """The message filters for already normalised features ``[B, F', H, W]`` (see :meth:`features`)."""
        cfg = self.config
        appearance = _filters.make_appearance_filter(
            cfg.appearance_backend,
            feats,
            theta_px=self.theta_alpha_px,
            theta_feature=cfg.theta_beta,
            cell=cfg.grid_cell,
            truncate=cfg.grid_truncate,
        )
        smoothness = _filters.make_spatial_filter(
            cfg.spatial_backend,
            height,
            width,
            theta_px=self.theta_gamma_px,
            dtype=feats.dtype,
            device=feats.device,
        )
        return appearance, smoothness

    def effective_weights(self) -> Tensor:
        """Per-pixel-pair kernel weights ``w_k / m_k`` (``m_k``: spatial mass, or 1), ``[2]``."""
        return self.kernel_weights / self.kernel_mass.to(self.kernel_weights.dtype)

    def compatibilities(self) -> tuple[Tensor, Tensor]:
        """Symmetrised compatibility matrices ``(mu_appearance, mu_smoothness)``, each ``[C, C]``."""
        ca = 0.5 * (self.compat_appearance + self.compat_appearance.T)
        cs = 0.5 * (self.compat_smoothness + self.compat_smoothness.T)
        return ca, cs

    def pairwise(self, q: Tensor, filters: tuple) -> Tensor:
        """``P q = sum_k w_k / m_k mu_k (K_k q)`` (self term excluded), ``[B, C, H, W]``."""
        appearance, smoothness = filters
        ca, cs = self.compatibilities()
        w = self.effective_weights().to(q.dtype)
        out = torch.einsum("lm,bmhw->blhw", (w[0] * ca).to(q.dtype), appearance(q))
        out = out + torch.einsum("lm,bmhw->blhw", (w[1] * cs).to(q.dtype), smoothness(q))
        return out

    def energy(self, q: Tensor, logits: Tensor, guide: Tensor, filters: tuple | None = None) -> Tensor:
        """CRF energy ``E(q) = <-logits, q> + 1/2 <q, P q>`` per image, ``[B]``."""
        if filters is None:
            filters = self.build_filters(guide, q.shape[-2], q.shape[-1])
        pq = self.pairwise(q, filters)
        return (q * (0.5 * pq - logits)).sum(dim=(1, 2, 3))

    # ------------------------------------------------------------------ solvers
    def forward(self, logits: Tensor, guide: Tensor | None, *, features: Tensor | None = None) -> Tensor:
        """Refine ``logits`` ``[B, C, H, W]`` with the CRF; return ``log q`` ``[B, C, H, W]``.

        ``guide`` is ``[B, F, H, W]``: the micrograph (``kind="crf"``), the CNN's logits or its decoder
        features (``kind="cd-crf"``). ``features`` may replace it with already normalised features
        (values in ``[0, 1]``, as :meth:`features` returns), e.g. normalised over a whole micrograph.
        Runs in float32 (or float64) with autocast disabled; half-precision logits are promoted.
        """
        if features is not None:
            guide = features
        if guide is None:
            raise CrispError("the CRF needs a guide image or normalised features")
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise CrispError(f"CRF expects logits [B, {self.num_classes}, H, W], got {tuple(logits.shape)}")
        if guide.dim() != 4 or guide.shape[0] != logits.shape[0] or guide.shape[-2:] != logits.shape[-2:]:
            raise CrispError(
                f"CRF guide must be [B, F, H, W] matching logits {tuple(logits.shape)}, "
                f"got {tuple(guide.shape)}"
            )
        if logits.dtype in (torch.float16, torch.bfloat16):  # mixed precision: the CRF runs in float32
            logits = logits.float()
        guide = guide.to(logits.dtype)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._solve(logits, guide, from_features=features is not None)

    def _solve(self, logits: Tensor, guide: Tensor, from_features: bool) -> Tensor:
        h, w = logits.shape[-2:]
        if from_features:
            filters = self.filters_from_features(guide, h, w)
        else:
            filters = self.build_filters(guide, h, w)
        cfg = self.config
        if cfg.solver == "mean-field":
            q, z = self._mean_field(logits, filters)
        else:
            q, z = self._frank_wolfe(logits, filters), None
        b = cfg.blend_initial
        if b > 0:
            q = (1.0 - b) * q + b * torch.softmax(logits, dim=1)
            z = None
        if z is not None:
            return torch.log_softmax(z, dim=1)
        return torch.log(q.clamp_min(_LOG_EPS))

    def _mean_field(self, logits: Tensor, filters: tuple) -> tuple[Tensor, Tensor]:
        z = logits
        q = torch.softmax(z, dim=1)
        for _ in range(self.config.iterations):
            z = logits - self.pairwise(q, filters)
            q = torch.softmax(z, dim=1)
        return q, z

    def _oracle(self, grad: Tensor) -> Tensor:
        scaled = -grad / self.config.fw_lambda
        if self.config.regulariser == "entropy":
            return torch.softmax(scaled, dim=1)
        return sparsemax(scaled, dim=1)

    def _frank_wolfe(self, logits: Tensor, filters: tuple) -> Tensor:
        cfg = self.config
        x = torch.softmax(logits, dim=1)
        if cfg.iterations == 0:
            return x
        px = self.pairwise(x, filters)
        for k in range(cfg.iterations):
            grad = px - logits
            d = self._oracle(grad) - x
            last = k == cfg.iterations - 1
            if cfg.step == "line-search":
                pd = self.pairwise(d, filters)
                a = (d * pd).sum(dim=(1, 2, 3))  # curvature along d
                b = (d * grad).sum(dim=(1, 2, 3))  # slope at alpha = 0
                interior = torch.clamp(-b / torch.where(a > 0, a, torch.ones_like(a)), 0.0, 1.0)
                endpoint = (0.5 * a + b < 0).to(x.dtype)
                alpha = torch.where(a > 0, interior, endpoint).view(-1, 1, 1, 1)
                x = x + alpha * d
                if not last:
                    px = px + alpha * pd
            else:
                alpha = cfg.step_size if cfg.step == "fixed" else 2.0 / (k + 2.0)
                x = x + alpha * d
                if not last:
                    px = self.pairwise(x, filters)
        return x


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
        CRF settings; ``kind="none"`` returns the map unchanged (as float32).
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
    if config.kind == "none" and crf is None:
        return prob.copy()
    if crf is None:
        crf = build_crf(config, num_classes=classes.shape[0], scale=scale)
    cfg = crf.config
    if cfg.kind == "cd-crf" and cfg.feature_source == "decoder":
        raise CrispError("refine_probabilities cannot use decoder features; use feature_source='logits'")
    c, h, w = classes.shape
    logits = torch.log(torch.from_numpy(np.clip(classes, 1e-6, 1.0))).unsqueeze(0)
    if cfg.kind == "crf":
        if image is None or np.shape(image) != (h, w):
            raise CrispError(f"the CRF needs the micrograph [{h}, {w}] as guide, got {np.shape(image)}")
        guide = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
        features = normalise_guide(guide, "crf")
    else:
        features = normalise_guide(logits, "cd-crf", "logits")
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
