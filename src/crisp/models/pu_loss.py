"""Positive-unlabelled (PU) learning of particle pixels: the non-negative PU risk (nnPU).

Real annotations are incomplete: besides the annotated particles a micrograph holds particles nobody
marked. Treating every pixel outside the annotated particles as background teaches the network to
call those particles background. The nnPU risk of Kiryo et al. (2017, "Positive-unlabeled learning
with non-negative risk estimator", NeurIPS) treats them as *unlabelled*: a mixture of particle and
background pixels in a known proportion.

Setting (single training set, "selected completely at random"): a fraction ``labelled`` (lambda) of
all training pixels is labelled particle (label 1); every other pixel (label 0 or
:data:`~crisp.dataset.UNLABELLED`) is unlabelled. A fraction ``prior`` (pi >= lambda) of all pixels
is particle, so among the unlabelled pixels a fraction ``pi_u = (pi - lambda) / (1 - lambda)`` is
particle. With a surrogate loss ``l(z, y)`` of the margin ``z = logit_particle - logit_background``
and labels ``y = +1 / -1``, the pixel risk is estimated without bias by

    R = pi * E_L[l(z, +1)] + (1 - lambda) * (E_U[l(z, -1)] - pi_u * E_L[l(z, -1)])

(``E_L``, ``E_U``: means over the labelled-particle and the unlabelled pixels of the batch). The
bracket is (1 - pi_u) times the risk of the unlabelled background pixels, which cannot be negative;
a flexible network drives its estimate below zero by overfitting, so nnPU clips it: when it falls
below ``-beta`` the step minimises ``-gamma`` times it instead (Kiryo's Algorithm 1), which
lifts the estimate back. With ``pi = lambda`` (everything labelled) this is the plain risk with all
unlabelled pixels as background.

Pixels asserted background (label 0 in a three-valued label map) are counted as unlabelled here;
combine with a segmentation loss that sees them (e.g. ``"dice+nnpu"``: dice ignores label 255).

In the loss registry, ``nnpu`` uses the ``sigmoid`` surrogate and ``nnpu-bce`` the ``logistic`` one;
on the real dev set with half-radius disc labels the logistic surrogate picked better (F1 0.887-0.906
against 0.878-0.885; ``benchmarks/README.md``, "nnPU with the binary cross-entropy surrogate").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from crisp.errors import CrispError

SURROGATES = ("sigmoid", "logistic")


def surrogate_loss(margin: torch.Tensor, positive: bool, kind: str = "sigmoid") -> torch.Tensor:
    """Per-pixel surrogate loss of the margin ``z`` for the label +1 (``positive``) or -1.

    ``sigmoid``: ``sigmoid(-y z)`` (bounded; Kiryo et al.'s choice); ``logistic``: ``softplus(-y z)``
    (the binary cross-entropy of ``sigmoid(z)``).
    """
    signed = -margin if positive else margin
    if kind == "sigmoid":
        return torch.sigmoid(signed)
    return F.softplus(signed)


class NonNegativePULoss(nn.Module):
    """The nnPU risk of particle pixels (see the module docstring) on 2-class logits.

    Parameters
    ----------
    prior
        pi: fraction of all training pixels that are particle, in (0, 1).
    labelled
        lambda: fraction of all training pixels labelled particle, in [0, prior].
    beta, gamma
        Clipping level and step factor of the non-negative correction (Kiryo et al.: 0 and 1).
    surrogate
        ``"sigmoid"`` or ``"logistic"`` (:func:`surrogate_loss`).
    """

    def __init__(self, prior: float, labelled: float = 0.0, beta: float = 0.0, gamma: float = 1.0,
                 surrogate: str = "sigmoid") -> None:
        super().__init__()
        prior, labelled = float(prior), float(labelled)
        if not 0.0 < prior < 1.0:
            raise CrispError(f"nnpu: the class prior must be in (0, 1), got {prior}")
        if not 0.0 <= labelled <= prior:
            raise CrispError(f"nnpu: the labelled fraction must be in [0, prior = {prior}], got {labelled}")
        if surrogate not in SURROGATES:
            raise CrispError(f"nnpu: surrogate must be one of {', '.join(SURROGATES)}, got '{surrogate}'")
        if beta < 0 or gamma <= 0:
            raise CrispError(f"nnpu: beta must be >= 0 and gamma > 0 (got {beta}, {gamma})")
        self.prior, self.labelled = prior, labelled
        self.prior_unlabelled = (prior - labelled) / (1.0 - labelled)
        self.beta, self.gamma, self.surrogate = float(beta), float(gamma), surrogate

    def risks(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive part, unlabelled-background part)`` of the risk, before clipping."""
        margin = (logits[:, 1] - logits[:, 0]).float()
        positive = labels == 1
        unlabelled = ~positive
        zero = margin.new_zeros(())
        if positive.any():
            pos_plus = surrogate_loss(margin[positive], True, self.surrogate).mean()
            pos_minus = surrogate_loss(margin[positive], False, self.surrogate).mean()
        else:
            pos_plus = pos_minus = zero
        unl_minus = (surrogate_loss(margin[unlabelled], False, self.surrogate).mean()
                     if unlabelled.any() else zero)
        positive_risk = self.prior * pos_plus
        negative_risk = (1.0 - self.labelled) * (unl_minus - self.prior_unlabelled * pos_minus)
        return positive_risk, negative_risk

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive_risk, negative_risk = self.risks(logits, labels)
        if negative_risk < -self.beta:
            return -self.gamma * negative_risk
        return positive_risk + negative_risk
