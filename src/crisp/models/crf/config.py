"""Settings of the dense CRF layer (:class:`CRFConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from crisp.config import StageConfig
from crisp.models.crf.kinds import CRF_KINDS
from crisp.models.crf.solvers import CRF_SOLVERS, FW_ORACLES

__all__ = ["CRFConfig"]


class CRFConfig(StageConfig):
    """Settings of the dense CRF layer (defaults as in the paper where it gives them).

    Lengths ``theta_alpha`` and ``theta_gamma`` are in pixels of the full-resolution micrograph;
    :func:`~crisp.models.crf.build_crf` divides them by the binning factor. ``theta_beta`` is on the
    normalised guide scale ``[0, 1]`` (see :mod:`crisp.models.crf`). ``kind`` is a name in
    :data:`~crisp.models.crf.CRF_KINDS`, ``solver`` one in :data:`~crisp.models.crf.CRF_SOLVERS`,
    ``regulariser`` one in :data:`~crisp.models.crf.FW_ORACLES`.
    Every number must be finite (``nan`` and ``inf`` are refused).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    kind: str = Field("none", description="CRF kind: " + " | ".join(CRF_KINDS))
    solver: str = Field("mean-field", description="CRF solver: " + " | ".join(CRF_SOLVERS))
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
    regulariser: str = Field("entropy", description="Frank-Wolfe regulariser: " + " | ".join(FW_ORACLES))
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

    @field_validator("kind", "solver", "regulariser")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        known = {"kind": (CRF_KINDS, "CRF kind"), "solver": (CRF_SOLVERS, "CRF solver"),
                 "regulariser": (FW_ORACLES, "regulariser")}
        registry, what = known[info.field_name]
        if value not in registry:
            raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(registry)}")
        return value
