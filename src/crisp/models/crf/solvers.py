"""CRF solvers: how the relaxed labelling ``q`` is updated, ``iterations`` steps each (a registry).

With ``P q = sum_k (w_k / m_k) mu_k (K_k q)`` the pairwise messages of the layer
(:meth:`crisp.models.crf.DenseCRF.pairwise`), the entries of :data:`CRF_SOLVERS` are:

``"mean-field"``
    ``q <- softmax(logits - P q)``, as in CRF-as-RNN (5 steps by default).
``"frank-wolfe"``
    The regularised Frank-Wolfe of Lê-Huu & Alahari (NeurIPS 2021). With ``g = grad E(x) = P x - logits``
    the regularised linear oracle gives ``s = softmax(-g / lambda)`` (entropy regulariser) or
    ``s = sparsemax(-g / lambda)`` (L2 regulariser; :data:`FW_ORACLES`), and ``x <- x + alpha (s - x)``
    with ``alpha`` fixed, ``2 / (k + 2)`` (k = 0, 1, ...) or the exact line search of the quadratic
    energy on the segment ``[x, s]`` (closed form, so the energy never increases; the default, as in
    the authors' code). ``x0 = softmax(logits)``. With the entropy regulariser, ``lambda = 1`` and a
    fixed step of 1 the iterates are exactly those of mean field.

A new solver is one :class:`CRFSolver` subclass (here or in its own module) and one entry in
:data:`CRF_SOLVERS`; :class:`~crisp.models.crf.CRFConfig` accepts every registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from crisp.errors import CrispError

if TYPE_CHECKING:
    from crisp.models.crf.layer import DenseCRF

__all__ = [
    "CRF_SOLVERS",
    "FW_ORACLES",
    "CRFSolver",
    "FrankWolfeSolver",
    "MeanFieldSolver",
    "get_solver",
    "sparsemax",
]


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


def _softmax(z: Tensor, dim: int = 1) -> Tensor:
    return torch.softmax(z, dim=dim)


#: Frank-Wolfe regulariser -> its linear oracle (a map onto the probability simplex along dim 1)
FW_ORACLES: dict[str, Callable[..., Tensor]] = {"entropy": _softmax, "l2": sparsemax}


class CRFSolver:
    """One way of minimising the CRF energy for ``crf.config.iterations`` steps."""

    name: ClassVar[str]
    description: ClassVar[str]

    def solve(self, crf: DenseCRF, logits: Tensor, filters: tuple) -> tuple[Tensor, Tensor | None]:
        """Return ``(q, z)``: the labelling ``[B, C, H, W]`` and, when ``q = softmax(z)`` exactly, ``z``.

        ``z`` (or ``None``) lets the layer return ``log_softmax(z)`` instead of ``log(q)``, which is
        exact where ``q`` underflows.
        """
        raise NotImplementedError


class MeanFieldSolver(CRFSolver):
    """Mean field: ``q <- softmax(logits - P q)``."""

    name = "mean-field"
    description = "mean-field updates (CRF-as-RNN)"

    def solve(self, crf: DenseCRF, logits: Tensor, filters: tuple) -> tuple[Tensor, Tensor | None]:
        z = logits
        q = torch.softmax(z, dim=1)
        for _ in range(crf.config.iterations):
            z = logits - crf.pairwise(q, filters)
            q = torch.softmax(z, dim=1)
        return q, z


class FrankWolfeSolver(CRFSolver):
    """Regularised Frank-Wolfe (Lê-Huu & Alahari 2021) with a fixed, diminishing or line-searched step."""

    name = "frank-wolfe"
    description = "regularised Frank-Wolfe (Lê-Huu & Alahari 2021)"

    def solve(self, crf: DenseCRF, logits: Tensor, filters: tuple) -> tuple[Tensor, Tensor | None]:
        cfg = crf.config
        try:
            oracle = FW_ORACLES[cfg.regulariser]
        except KeyError:
            raise CrispError(
                f"unknown Frank-Wolfe regulariser {cfg.regulariser!r}; choose one of: {', '.join(FW_ORACLES)}"
            ) from None
        x = torch.softmax(logits, dim=1)
        if cfg.iterations == 0:
            return x, None
        px = crf.pairwise(x, filters)
        for k in range(cfg.iterations):
            grad = px - logits
            d = oracle(-grad / cfg.fw_lambda, dim=1) - x
            last = k == cfg.iterations - 1
            if cfg.step == "line-search":
                pd = crf.pairwise(d, filters)
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
                    px = crf.pairwise(x, filters)
        return x, None


#: name -> solver; a new solver is one class and one entry here
CRF_SOLVERS: dict[str, CRFSolver] = {s.name: s for s in (MeanFieldSolver(), FrankWolfeSolver())}


def get_solver(name: str) -> CRFSolver:
    """The registered CRF solver ``name``; an unknown name is a :class:`CrispError` listing the known ones."""
    try:
        return CRF_SOLVERS[name]
    except (KeyError, TypeError):
        raise CrispError(f"unknown CRF solver {name!r}; choose one of: {', '.join(CRF_SOLVERS)}") from None
