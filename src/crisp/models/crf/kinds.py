"""CRF kinds: which image guides the appearance kernel and how it is normalised (a registry).

A kind decides everything that differs between the grayscale CRF and the CNN-driven CD-CRF:

* whether a layer is built at all (``"none"``: no CRF);
* the guide's source (:meth:`CRFKind.guide_source`): the input patch (``"image"``), the CNN's logits
  (``"logits"``) or its decoder features (``"decoder"``);
* how the guide becomes features in ``[0, 1]`` on the scale of ``theta_beta``
  (:meth:`CRFKind.features`), and whether a learned 1x1 reduction is part of it
  (:meth:`CRFKind.make_reducer`).

Entries of :data:`CRF_KINDS`:

``"none"``
    No CRF layer (:func:`crisp.models.crf.build_crf` returns ``None``).
``"crf"``
    The micrograph (F channels, usually 1): per image and channel, the 1st and 99th percentiles map to
    0 and 1, values outside are clipped. The guide is fixed (detached).
``"cd-crf"``
    ``feature_source="logits"``: the class probabilities ``softmax(logits)`` without the first
    (background) channel, i.e. the ``C - 1`` free coordinates of the probability simplex (for two
    classes: the foreground probability); fixed (detached).
    ``feature_source="decoder"``: the decoder features standardised per image and channel (zero mean,
    unit variance), reduced by a learned 1x1 convolution to ``feature_channels`` and squashed by a
    logistic sigmoid; they stay in the graph, so the reduction is learned.

A new kind is one :class:`CRFKind` subclass (here or in its own module) and one entry in
:data:`CRF_KINDS`; :class:`~crisp.models.crf.CRFConfig` accepts every registered name.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from crisp.errors import CrispError

__all__ = [
    "CRF_KINDS",
    "CDCRFKind",
    "CRFKind",
    "GrayscaleCRFKind",
    "GuideSource",
    "NoCRFKind",
    "get_kind",
    "normalise_guide",
]

#: where the appearance kernel's guide comes from
GuideSource = Literal["image", "logits", "decoder"]


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


class CRFKind:
    """One kind of CRF: what guides its appearance kernel and how the guide is normalised.

    Subclasses set :attr:`name` and :attr:`description` and implement :meth:`guide_source` and
    :meth:`features`; a kind with a learned part of its features also implements :meth:`make_reducer`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: whether :func:`~crisp.models.crf.build_crf` builds a layer for this kind
    builds_layer: ClassVar[bool] = True

    def guide_source(self, feature_source: str) -> GuideSource:
        """The tensor that guides the appearance kernel: ``"image"``, ``"logits"`` or ``"decoder"``."""
        raise NotImplementedError

    def needs_decoder(self, feature_source: str) -> bool:
        """Whether the network must hand the CRF its decoder features."""
        return self.builds_layer and self.guide_source(feature_source) == "decoder"

    def make_reducer(
        self, feature_source: str, feature_channels: int, guide_channels: int | None
    ) -> nn.Module | None:
        """The learned part of the feature map (a module owned by the layer), or ``None``."""
        return None

    def select_guide(
        self, feature_source: str, *, image: Tensor | None, logits: Tensor | None, decoder: Tensor | None
    ) -> Tensor | None:
        """Pick the guide among the network's input ``image``, its ``logits`` and ``decoder`` features."""
        return {"image": image, "logits": logits, "decoder": decoder}[self.guide_source(feature_source)]

    def features(self, guide: Tensor, feature_source: str, reducer: nn.Module | None = None) -> Tensor:
        """Normalised features ``[B, F', H, W]`` in ``[0, 1]`` from the guide ``[B, F, H, W]``."""
        raise NotImplementedError

    def map_features(
        self, feature_source: str, image: np.ndarray | None, logits: Tensor
    ) -> Tensor:
        """Features of a whole micrograph for :func:`~crisp.models.crf.refine_probabilities`.

        ``logits`` ``[1, C, H, W]`` are the log of the map's class probabilities; ``image`` is the
        micrograph ``[H, W]`` (or ``None``). Decoder features are not available there.
        """
        source = self.guide_source(feature_source)
        h, w = logits.shape[-2:]
        if source == "decoder":
            raise CrispError("refine_probabilities cannot use decoder features; use feature_source='logits'")
        if source == "image":
            if image is None or np.shape(image) != (h, w):
                raise CrispError(f"the CRF needs the micrograph [{h}, {w}] as guide, got {np.shape(image)}")
            guide = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
        else:
            guide = logits
        return self.features(guide, feature_source)


class NoCRFKind(CRFKind):
    """No CRF: the network's output is the CNN's logits."""

    name = "none"
    description = "no CRF layer"
    builds_layer = False

    def guide_source(self, feature_source: str) -> GuideSource:
        raise CrispError("kind 'none' has no CRF guide")

    def features(self, guide: Tensor, feature_source: str, reducer: nn.Module | None = None) -> Tensor:
        raise ValueError(f"no fixed normalisation for kind={self.name!r}, feature_source={feature_source!r}")


class GrayscaleCRFKind(CRFKind):
    """The dense CRF of Krähenbühl & Koltun on the micrograph itself (percentile-normalised)."""

    name = "crf"
    description = "grayscale CRF guided by the micrograph"

    def guide_source(self, feature_source: str) -> GuideSource:
        return "image"

    def features(self, guide: Tensor, feature_source: str, reducer: nn.Module | None = None) -> Tensor:
        # a fixed guide: no gradient through the features (the CNN learns through the unary term)
        return _percentile_normalise(guide.detach())


class CDCRFKind(CRFKind):
    """The CNN-driven CRF: guided by the CNN's class probabilities or its (learned) decoder features."""

    name = "cd-crf"
    description = "CNN-driven CRF guided by the CNN's logits or decoder features"

    def guide_source(self, feature_source: str) -> GuideSource:
        if feature_source not in ("logits", "decoder"):
            raise CrispError(f"unknown CD-CRF feature source {feature_source!r}; choose logits or decoder")
        return "decoder" if feature_source == "decoder" else "logits"

    def make_reducer(
        self, feature_source: str, feature_channels: int, guide_channels: int | None
    ) -> nn.Module | None:
        if self.guide_source(feature_source) != "decoder":
            return None
        if guide_channels is None:
            return nn.LazyConv2d(feature_channels, kernel_size=1)
        return nn.Conv2d(guide_channels, feature_channels, kernel_size=1)

    def features(self, guide: Tensor, feature_source: str, reducer: nn.Module | None = None) -> Tensor:
        if self.guide_source(feature_source) == "decoder":  # learned: gradients flow
            if reducer is None:
                raise ValueError(
                    f"no fixed normalisation for kind={self.name!r}, feature_source={feature_source!r}"
                )
            mean = guide.mean(dim=(2, 3), keepdim=True)
            std = guide.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
            return torch.sigmoid(reducer((guide - mean) / std))
        # a fixed guide: no gradient through the features (the CNN learns through the unary term)
        prob = torch.softmax(guide.detach(), dim=1)
        return prob[:, 1:] if guide.shape[1] > 1 else prob


#: name -> kind; a new kind is one class and one entry here
CRF_KINDS: dict[str, CRFKind] = {kind.name: kind for kind in (NoCRFKind(), GrayscaleCRFKind(), CDCRFKind())}


def get_kind(name: str) -> CRFKind:
    """The registered CRF kind ``name``; an unknown name is a :class:`CrispError` listing the known ones."""
    try:
        return CRF_KINDS[name]
    except (KeyError, TypeError):
        raise CrispError(f"unknown CRF kind {name!r}; choose one of: {', '.join(CRF_KINDS)}") from None


def normalise_guide(guide: Tensor, kind: str, feature_source: str = "logits") -> Tensor:
    """Map a guide ``[B, F, H, W]`` onto the ``[0, 1]`` feature scale used by ``theta_beta``.

    ``kind="crf"``: per image and channel the 1st/99th percentiles go to 0/1 (clipped).
    ``kind="cd-crf"`` with logits: ``softmax`` over channels without channel 0.
    Decoder features are normalised inside :class:`~crisp.models.crf.DenseCRF` (learned reduction then
    sigmoid); they and ``kind="none"`` raise :class:`ValueError` here. The result is detached.
    """
    return get_kind(kind).features(guide, feature_source)
