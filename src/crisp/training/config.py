"""Settings of a training run (:class:`TrainConfig`), the presets and :func:`make_config`."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from crisp.config import StageConfig, validate_config
from crisp.errors import CrispError
from crisp.models.crf import CRF_KINDS, CRFConfig


class TrainConfig(StageConfig):
    """Every setting of a training run. Pixel sizes (``*_px``) are in pixels of the binned input."""

    preset: str | None = Field(None, description="the preset these values started from")
    arch: str = Field("unetplusplus", description="smp architecture (crisp models)")
    encoder: str = Field("efficientnet-b5", description="smp encoder or tu-<timm model>")
    encoder_depth: int | None = Field(None, ge=1, le=5, description="encoder stages (None: arch default)")
    encoder_weights: str | None = Field(None, description="local encoder state-dict file (None: random)")
    arch_params: dict[str, Any] = Field(default_factory=dict, description="extra smp model arguments")
    loss: str | list[dict[str, Any]] = Field("dice", description="e.g. 'dice', 'dice+0.5*focal'")
    expected_particles: float | None = Field(None, gt=0, description="particles per training micrograph "
                                             "the user expects (annotated or not): sets the class prior of "
                                             "positive-unlabelled losses (nnpu)")
    class_prior: float | None = Field(None, gt=0, lt=1, description="fraction of training pixels that "
                                      "are particle (filled in by train from expected_particles when the "
                                      "loss needs it)")
    labelled_fraction: float | None = Field(None, ge=0, lt=1, description="fraction of training pixels "
                                            "labelled particle (filled in by train with class_prior)")
    positive_fraction: float | None = Field(None, ge=0, le=1, description="share of training patches "
                                            "placed on a labelled particle pixel (None: 0.5 when the "
                                            "label maps hold unlabelled pixels, else 0)")
    bin: int = Field(1, ge=1, description="binning factor of the micrographs (Fourier cropping)")
    pixel_size: float | None = Field(None, gt=0, description="Å per pixel of the training micrographs "
                                     "before binning (filled in by train from their MRC headers); "
                                     "inference resamples other pixel sizes to it")
    particle_diameter_px: float | None = Field(None, gt=0, description="particle diameter, in pixels of "
                                               "the network's grid, the model works at (a general model): "
                                               "inference then resamples each micrograph so that the "
                                               "diameter the user gives becomes this; None: not scaled")
    normalize: Literal["gmm", "zscore", "none"] = "gmm"
    patch_px: int = Field(512, ge=16, description="training patch size, binned pixels")
    patches_per_micrograph: int = Field(4, ge=1)
    micrographs_per_batch: int = Field(2, ge=1)
    repeats: int = Field(1, ge=1, description="visits of each training micrograph per epoch")
    epochs: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the CNN without a CRF")
    lr_cnn: float = Field(1e-5, gt=0, description="peak learning rate of the CNN when a CRF is trained")
    lr_crf: float = Field(1e-3, gt=0, description="peak learning rate of the CRF")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["onecycle", "constant"] = "onecycle"
    early_stopping_patience: int | None = Field(None, ge=1, description="validations without val_iou "
                                                "gain (epochs when val_every is 1)")
    val_every: int = Field(1, ge=1, description="validate after every n-th epoch (n, 2n, ..., and so the "
                           "last, as epochs must be a multiple of n); the best checkpoint is chosen among "
                           "those epochs. Validation is about a third of an epoch's time on a CPU")
    val_overlap_px: int = Field(64, ge=0, description="tile overlap in validation and inference")
    augment: bool = True
    augment_photometric: bool = Field(False, description="also jitter each training patch's contrast, "
                                      "offset, blur and noise (crisp.patches.photometric_jitter)")
    tta: bool = Field(False, description="inference (crisp segment, evaluation; not validation): average "
                      "the 8 flips and 90-degree rotations of every patch")
    crf: CRFConfig = Field(default_factory=CRFConfig)
    init: str | None = Field(None, description="run directory whose best CNN weights start this run")
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: str | int = "auto"
    precision: str = Field("32-true", description="Lightning precision, e.g. 'bf16-mixed' on a GPU")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    deterministic: bool | None = Field(None, description="None: deterministic on the CPU, not on a GPU "
                                       "(faster; two GPU runs then differ slightly); True on a GPU asks for "
                                       "deterministic kernels where torch has them and warns where not")

    @field_validator("patch_px")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"patch_px must be a multiple of 32 (the encoders' stride), got {value}")
        return value

    @model_validator(mode="after")
    def _overlap_below_patch(self) -> TrainConfig:
        if self.val_overlap_px >= self.patch_px:
            raise ValueError(f"val_overlap_px ({self.val_overlap_px}) must be smaller than patch_px "
                             f"({self.patch_px})")
        return self

    @model_validator(mode="after")
    def _last_epoch_validated(self) -> TrainConfig:
        if self.epochs % self.val_every:
            raise ValueError(f"epochs ({self.epochs}) must be a multiple of val_every ({self.val_every}), "
                             "so that the last epoch is validated")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(arch="unetplusplus", encoder="efficientnet-b5", loss="dice", bin=1, patch_px=512,
                  epochs=50, micrographs_per_batch=2, patches_per_micrograph=4, lr=1e-3),
    "cpu": dict(arch="unet", encoder="resnet18", encoder_depth=4, loss="dice", bin=4, patch_px=256,
                epochs=12, micrographs_per_batch=2, patches_per_micrograph=4, repeats=2, lr=2e-3),
}


#: the preset :func:`make_config` picks for ``preset="auto"``: paper with a GPU, cpu without
AUTO_PRESET = "auto"
#: epochs of a CRF fine-tuned from another run's CNN (``init`` with a CRF) unless given: the paper's
CRF_FINE_TUNING_EPOCHS = 50


def default_preset() -> str:
    """``"paper"`` when torch sees a GPU, ``"cpu"`` otherwise."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def make_config(preset: str | None = None, config_file: str | os.PathLike[str] | None = None,
                **overrides: Any) -> TrainConfig:
    """Resolve a TrainConfig: preset values, then a YAML file, then explicit overrides (not None).

    Parameters
    ----------
    preset
        A key of :data:`PRESETS`, None (no preset), or ``"auto"``: with a ``config_file``, that file's
        own preset (if any); without one, :func:`default_preset` (paper with a GPU, cpu without).
    config_file
        YAML file of TrainConfig values.
    **overrides
        TrainConfig fields (None: not given); ``crf`` a mapping of CRF fields.

    When neither the file nor the overrides set ``epochs`` and the run fine-tunes a CRF from another
    run (``init`` and a CRF kind other than ``none``), ``epochs`` is :data:`CRF_FINE_TUNING_EPOCHS`.
    """
    if preset == AUTO_PRESET:
        preset = None if config_file is not None else default_preset()
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise CrispError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}, "
                             f"{AUTO_PRESET}")
        values.update(PRESETS[preset], preset=preset)
    epochs_given = overrides.get("epochs") is not None
    if config_file is not None:
        from crisp.config import read_yaml

        file_values = read_yaml(config_file)
        file_preset = file_values.get("preset")
        if isinstance(file_preset, str) and preset is None and file_preset in PRESETS:  # a dict is unhashable
            values.update(PRESETS[file_preset])
        values.update(file_values)
        epochs_given = epochs_given or "epochs" in file_values
    crf_overrides = overrides.pop("crf", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if crf_overrides:
        crf = dict(values.get("crf") or {})
        crf.update({k: v for k, v in crf_overrides.items() if v is not None})
        values["crf"] = crf
    crf_kind = (values.get("crf") or {}).get("kind", "none") if isinstance(values.get("crf"), dict) else None
    builds_crf = isinstance(crf_kind, str) and (crf_kind not in CRF_KINDS or CRF_KINDS[crf_kind].builds_layer)
    if not epochs_given and values.get("init") is not None and builds_crf:
        values["epochs"] = CRF_FINE_TUNING_EPOCHS
    return validate_config(TrainConfig, values, config_file)
