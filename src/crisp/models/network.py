"""The segmentation network: an smp CNN followed by an optional dense CRF (crisp.models.crf).

``forward(x)`` returns a dict:

* ``logits``: the CNN's per-class logits ``[B, 2, H, W]``;
* ``refined``: the CRF's output (log-probabilities, usable as logits) or ``logits`` without a CRF;
* ``decoder``: the decoder feature map upsampled to ``H x W`` (only when the CRF uses it).

The CRF kind (:data:`crisp.models.crf.CRF_KINDS`) chooses the CRF's guide among the input patch
itself (``kind="crf"``, already normalised), the CNN logits (``kind="cd-crf"`` with
``feature_source="logits"``) and the decoder features (``feature_source="decoder"``). Gradients flow
through the guide (end-to-end training).

Decoder features are taken as the input of ``model.segmentation_head`` (a forward pre-hook), which
every smp architecture has, whatever its encoder/decoder call convention (DPT passes extra tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crisp.models.crf.kinds import get_kind


class SegmentationNetwork(nn.Module):
    """smp model + optional DenseCRF.

    Parameters
    ----------
    cnn
        An smp segmentation model with 2 output classes.
    crf
        A :class:`crisp.models.crf.DenseCRF` or ``None``.
    crf_kind, feature_source
        The CRF's ``kind`` (a name in :data:`crisp.models.crf.CRF_KINDS`) and ``feature_source``
        ("logits", "decoder").
    """

    def __init__(self, cnn: nn.Module, crf: nn.Module | None = None, crf_kind: str = "none",
                 feature_source: str = "logits") -> None:
        super().__init__()
        self.cnn = cnn
        self.crf = crf
        self.crf_kind = crf_kind if crf is not None else "none"
        self.feature_source = feature_source
        self._kind = get_kind(self.crf_kind)
        self._decoder_out: torch.Tensor | None = None
        if self.needs_decoder:
            cnn.segmentation_head.register_forward_pre_hook(self._capture)

    @property
    def needs_decoder(self) -> bool:
        return self.crf is not None and self._kind.needs_decoder(self.feature_source)

    def _capture(self, module, args):
        self._decoder_out = args[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.cnn(x)
        if isinstance(logits, tuple):  # an auxiliary classification head
            logits = logits[0]
        out = {"logits": logits}
        if self.crf is None:
            out["refined"] = logits
            return out
        features = None
        if self.needs_decoder:
            features = self._decoder_out
            self._decoder_out = None
            if features.shape[-2:] != x.shape[-2:]:
                features = F.interpolate(features, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out["decoder"] = features
        guide = self._kind.select_guide(self.feature_source, image=x, logits=logits, decoder=features)
        out["refined"] = self.crf(logits, guide)
        return out


def decoder_channels(cnn: nn.Module, input_size: int = 64) -> int:
    """Number of channels of the decoder output (the segmentation head's input) of ``cnn``."""
    seen: dict[str, int] = {}

    def hook(module, args):  # returns None: the input is left unchanged
        seen["c"] = int(args[0].shape[1])

    handle = cnn.segmentation_head.register_forward_pre_hook(hook)
    was_training = cnn.training
    cnn.eval()
    try:
        with torch.no_grad():
            cnn(torch.zeros(1, 1, input_size, input_size))
    finally:
        handle.remove()
        cnn.train(was_training)
    return int(seen["c"])
