"""The dense CRF layer (:class:`DenseCRF`) and its factory (:func:`build_crf`).

What differs between CRF kinds (the guide and its normalisation) lives in
:mod:`crisp.models.crf.kinds`, what differs between solvers (the update step) in
:mod:`crisp.models.crf.solvers`; the layer holds the shared parts: the learnable kernel weights and
compatibility matrices, the message filters, the pairwise term and the energy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from crisp.errors import CrispError
from crisp.models import filters as _filters
from crisp.models.crf.config import CRFConfig
from crisp.models.crf.kinds import get_kind
from crisp.models.crf.solvers import get_solver

__all__ = ["DenseCRF", "build_crf", "spatial_kernel_mass"]

_LOG_EPS = 1e-12
#: above this std (px) the lattice sum of the Gaussian is computed in closed form (Poisson summation:
#: the relative error of ``sqrt(2 pi) theta`` is ``2 exp(-2 pi^2 theta^2)``, zero in float64)
_MASS_CLOSED_FORM_PX = 1000.0


def spatial_kernel_mass(theta_px: float) -> float:
    """``sum over (dy, dx) != 0 of exp(-(dy^2 + dx^2) / (2 theta^2))`` on the infinite pixel lattice.

    About ``2 pi theta^2 - 1`` for wide kernels; the weight a pixel receives from a whole uniform
    neighbourhood. Dividing a kernel by it makes ``w`` independent of ``theta`` and of binning.
    """
    if theta_px > _MASS_CLOSED_FORM_PX:
        return float(2.0 * math.pi * theta_px * theta_px - 1.0)  # inf, not OverflowError, for 1e300
    radius = int(np.ceil(12 * theta_px)) + 1
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    return float(np.exp(-0.5 * (k / theta_px) ** 2).sum() ** 2 - 1.0)


def build_crf(
    config: CRFConfig, num_classes: int = 2, scale: float = 1.0, guide_channels: int | None = None
) -> DenseCRF | None:
    """Build the CRF layer described by ``config``; ``None`` for a kind without a layer (``"none"``).

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
    if not get_kind(config.kind).builds_layer:
        return None
    return DenseCRF(config, num_classes=num_classes, scale=scale, guide_channels=guide_channels)


class DenseCRF(nn.Module):
    """Dense CRF with an appearance and a smoothness Gaussian kernel, solved for a few iterations.

    See :mod:`crisp.models.crf` for the energy, the solvers and the guide normalisation.

    Parameters
    ----------
    config
        CRF settings (``kind`` must build a layer, e.g. ``"crf"`` or ``"cd-crf"``).
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
        kind = get_kind(config.kind)
        if not kind.builds_layer:
            raise CrispError(f"DenseCRF needs a kind with a layer, not {config.kind!r} (use build_crf)")
        get_solver(config.solver)
        if not scale > 0 or not math.isfinite(scale):
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
        self.reducer: nn.Module | None = kind.make_reducer(
            config.feature_source, config.feature_channels, guide_channels
        )

    # ------------------------------------------------------------------ pieces
    def features(self, guide: Tensor) -> Tensor:
        """Normalised guide features ``[B, F', H, W]`` in ``[0, 1]`` (see :mod:`crisp.models.crf.kinds`)."""
        cfg = self.config
        return get_kind(cfg.kind).features(guide, cfg.feature_source, self.reducer)

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

    # ------------------------------------------------------------------ forward
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
        q, z = get_solver(self.config.solver).solve(self, logits, filters)
        b = self.config.blend_initial
        if b > 0:
            q = (1.0 - b) * q + b * torch.softmax(logits, dim=1)
            z = None
        if z is not None:
            return torch.log_softmax(z, dim=1)
        return torch.log(q.clamp_min(_LOG_EPS))
