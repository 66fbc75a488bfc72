"""Training of the segmentation network (CNN + optional dense CRF) with Lightning.

One epoch visits every training micrograph ``repeats`` times; each visit draws
``patches_per_micrograph`` random augmented patches (:mod:`crisp.patches`), and a batch holds
``micrographs_per_batch`` visits (the paper: 2 micrographs x 4 patches of 512 px, 50 epochs, Adam at
1e-3 with a one-cycle schedule). After each epoch (or each ``val_every``-th) the whole validation
micrographs are segmented by tiled inference (:mod:`crisp.predict`) on the binned grid and scored:
``val_iou`` (the checkpoint criterion), ``val_f1``, ``val_precision``, ``val_recall`` (pooled over the
validation pixels) and ``val_loss``; epochs without validation have empty ``val_*`` cells in
``metrics.csv``.

With a CRF, the CNN and the CRF have their own learning rates (``lr_cnn``, ``lr_crf``); ``init``
starts the CNN from another run's best checkpoint (a new CRF is added).

Run directory::

    RUN/config.yaml               resolved TrainConfig (with the CRF settings and the seed)
    RUN/split.yaml                the split manifest used
    RUN/checkpoints/best.ckpt     weights of the epoch of highest val_iou;  RUN/checkpoints/last.ckpt
                                  the last epoch with the optimizer state (for resume)
    RUN/metrics.csv               one row per epoch: train_loss, val_loss, val_iou, val_f1, ... lr
    RUN/summary.json              best epoch and metrics, wall time, parameter counts
    RUN/training_curves.png       loss and validation metrics per epoch
    RUN/logs/                     Lightning's own CSV logs (a resumed part in logs/version_N/)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from crisp.atomic import write_text_atomic
from crisp.config import StageConfig, load_config, save_yaml, validate_config
from crisp.dataset import DatasetFolder, Split, read_split, write_split
from crisp.errors import CrispError
from crisp.models.crf import CRFConfig

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_iou", "val_f1", "val_precision", "val_recall", "lr")


class TrainConfig(StageConfig):
    """Every setting of a training run. Pixel sizes (``*_px``) are in pixels of the binned input."""

    preset: str | None = Field(None, description="the preset these values started from")
    arch: str = Field("unetplusplus", description="smp architecture (crisp models)")
    encoder: str = Field("efficientnet-b5", description="smp encoder or tu-<timm model>")
    encoder_depth: int | None = Field(None, ge=1, le=5, description="encoder stages (None: arch default)")
    encoder_weights: str | None = Field(None, description="local encoder state-dict file (None: random)")
    arch_params: dict[str, Any] = Field(default_factory=dict, description="extra smp model arguments")
    loss: str | list[dict[str, Any]] = Field("dice", description="e.g. 'dice', 'dice+0.5*focal'")
    bin: int = Field(1, ge=1, description="binning factor of the micrographs (Fourier cropping)")
    pixel_size: float | None = Field(None, gt=0, description="Å per pixel of the training micrographs "
                                     "before binning (filled in by train from their MRC headers); "
                                     "inference resamples other pixel sizes to it")
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


def make_config(preset: str | None = None, config_file: str | os.PathLike[str] | None = None,
                **overrides: Any) -> TrainConfig:
    """Resolve a TrainConfig: preset values, then a YAML file, then explicit overrides (not None)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise CrispError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset], preset=preset)
    if config_file is not None:
        from crisp.config import read_yaml

        file_values = read_yaml(config_file)
        if "preset" in file_values and preset is None and file_values["preset"] in PRESETS:
            values.update(PRESETS[file_values["preset"]])
        values.update(file_values)
    crf_overrides = overrides.pop("crf", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if crf_overrides:
        crf = dict(values.get("crf") or {})
        crf.update({k: v for k, v in crf_overrides.items() if v is not None})
        values["crf"] = crf
    return validate_config(TrainConfig, values, config_file)


def build_network(config: TrainConfig):
    """The CNN (random or ``encoder_weights``) plus the CRF described by ``config``."""
    from crisp.models.crf import build_crf
    from crisp.models.network import SegmentationNetwork, decoder_channels
    from crisp.models.zoo import NUM_CLASSES, build_model

    cnn = build_model(config.arch, config.encoder, encoder_depth=config.encoder_depth,
                      encoder_weights=config.encoder_weights, arch_params=config.arch_params)
    guide_channels = None
    if config.crf.kind == "cd-crf" and config.crf.feature_source == "decoder":
        guide_channels = decoder_channels(cnn)
    crf = build_crf(config.crf, num_classes=NUM_CLASSES, scale=config.bin, guide_channels=guide_channels)
    return SegmentationNetwork(cnn, crf, crf_kind=config.crf.kind, feature_source=config.crf.feature_source)


def _lightning_module_class():
    import lightning.pytorch as pl
    import numpy as np
    import torch

    from crisp.models.zoo import build_loss
    from crisp.predict import foreground_fn, predict_probabilities

    class SegmentationModule(pl.LightningModule):
        """Lightning wrapper: patch training, whole-micrograph validation, optimiser and schedule."""

        def __init__(self, config: TrainConfig, val_samples=(), steps_per_epoch: int = 1):
            super().__init__()
            self.config = config
            self.net = build_network(config)
            self.loss_fn = build_loss(config.loss)
            self.val_samples = list(val_samples)
            self.steps_per_epoch = steps_per_epoch
            self._val_stats = None

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            images, masks = batch
            images = images.flatten(0, 1)
            masks = masks.flatten(0, 1)
            out = self.net(images)
            loss = self.loss_fn(out["refined"], masks)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=images.shape[0],
                     prog_bar=True)
            return loss

        def on_train_epoch_start(self):
            loader = self.trainer.train_dataloader
            if loader is not None and hasattr(loader.dataset, "set_epoch"):
                loader.dataset.set_epoch(self.current_epoch)

        def on_validation_epoch_start(self):
            self._val_stats = np.zeros(4, np.float64)  # tp, fp, fn, tn
            self._val_losses = []

        def validation_step(self, batch, batch_idx):
            sample = self.val_samples[int(batch[0])]
            cfg = self.config
            batch_size = cfg.micrographs_per_batch * cfg.patches_per_micrograph
            probs = predict_probabilities(foreground_fn(self.net, self.device), sample.image, cfg.patch_px,
                                          cfg.val_overlap_px, batch_size)
            pred = probs[1] >= 0.5
            truth = sample.mask > 0
            self._val_stats += [np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth),
                                np.sum(~pred & ~truth)]
            log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-7, 1.0)))[None]
            labels = torch.from_numpy(truth.astype(np.int64))[None]
            self._val_losses.append(float(self.loss_fn(log_probs, labels)))

        def on_validation_epoch_end(self):
            totals = torch.tensor([*self._val_stats, sum(self._val_losses), len(self._val_losses)],
                                  dtype=torch.float64, device=self.device)
            if self.trainer.world_size > 1:  # each process validated a share of the micrographs
                totals = self.all_gather(totals).reshape(-1, totals.numel()).sum(0)
            tp, fp, fn, _tn, loss_sum, loss_count = totals.tolist()
            iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
            precision = tp / (tp + fp) if tp + fp else 1.0 if fn == 0 else 0.0
            recall = tp / (tp + fn) if tp + fn else 1.0
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
            values = dict(val_iou=iou, val_f1=f1, val_precision=precision, val_recall=recall,
                          val_loss=loss_sum / loss_count if loss_count else float("nan"))
            for key, value in values.items():
                self.log(key, float(value), prog_bar=key == "val_iou")

        def configure_optimizers(self):
            cfg = self.config
            if self.net.crf is not None:
                groups = [{"params": self.net.cnn.parameters(), "lr": cfg.lr_cnn},
                          {"params": self.net.crf.parameters(), "lr": cfg.lr_crf}]
                peaks = [cfg.lr_cnn, cfg.lr_crf]
            else:
                groups = [{"params": self.net.cnn.parameters(), "lr": cfg.lr}]
                peaks = [cfg.lr]
            optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
            if cfg.schedule == "constant":
                return optimizer
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=peaks, total_steps=max(2, cfg.epochs * self.steps_per_epoch))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return SegmentationModule


def _epoch_table_callback(run_dir: Path):
    import lightning.pytorch as pl
    import pandas as pd

    class EpochTable(pl.Callback):
        """Writes RUN/metrics.csv (one row per finished epoch) and the training-curve figure."""

        def __init__(self):
            path = run_dir / "metrics.csv"
            self.rows = pd.read_csv(path).to_dict("records") if path.is_file() else []

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            row = {"epoch": trainer.current_epoch}
            row.update({c: metrics.get(c, float("nan")) for c in METRIC_COLUMNS[1:-1]})
            if (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch:
                # not validated this epoch: Lightning still holds the last validation's values
                row.update({c: float("nan") for c in METRIC_COLUMNS[1:-1] if c.startswith("val_")})
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
            self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
            table = pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS))
            write_text_atomic(run_dir / "metrics.csv", table.to_csv(index=False))

    return EpochTable()


def _resolve_split(folder: DatasetFolder, split: Split | str | os.PathLike[str] | None) -> Split:
    if isinstance(split, Split):
        return split
    path = Path(split) if split is not None else folder.split_file
    if not path.is_file():
        raise CrispError("no split manifest: run `crisp split` on the dataset or pass --split", path)
    return read_split(path)


def _load_init_weights(network, init_dir: str | os.PathLike[str]) -> None:
    import torch

    ckpt = Path(init_dir) / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise CrispError("--init run has no checkpoints/best.ckpt", init_dir)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    cnn_state = {k[len("net.cnn."):]: v for k, v in state.items() if k.startswith("net.cnn.")}
    from crisp.models.zoo import load_network_state

    try:
        load_network_state(network.cnn, cnn_state, ckpt)
    except CrispError as err:
        raise CrispError(f"the CNN of this run does not match the --init run's ({err.reason})",
                         ckpt) from None


def _adopt_init_model(config: TrainConfig) -> TrainConfig:
    """With ``init``, the model fields come from the init run (so its weights fit)."""
    if config.init is None:
        return config
    init_cfg = load_config(TrainConfig, Path(config.init) / "config.yaml")
    fields = ("arch", "encoder", "encoder_depth", "arch_params")
    values = config.model_dump()
    values.update({f: getattr(init_cfg, f) for f in fields})
    values["encoder_weights"] = None
    return validate_config(TrainConfig, values)


def trainer_determinism(setting: bool | None, on_gpu: bool) -> bool | str:
    """Lightning's ``deterministic`` argument for a run's ``deterministic`` setting.

    None: True on the CPU, False on a GPU. True: True on the CPU, ``"warn"`` on a GPU (deterministic
    kernels where torch has them, a warning where it has none, instead of an error). False: False.
    """
    if setting is None:
        return not on_gpu
    if setting:
        return "warn" if on_gpu else True
    return False


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's start-up tip that advertises its cloud logger (noise in every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_lightning() -> None:
    import lightning_utilities.core.rank_zero as rank_zero  # the logger Lightning's info goes through

    target = rank_zero.log
    if not any(isinstance(f, _NoAdvertisement) for f in target.filters):
        target.addFilter(_NoAdvertisement())


def train(config: TrainConfig, dataset_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          split: Split | str | os.PathLike[str] | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train a segmentation network on a dataset folder; return the run directory ``out_dir``.

    Parameters
    ----------
    config
        All settings (see :class:`TrainConfig`).
    dataset_dir
        A dataset folder (:mod:`crisp.dataset`) with micrographs and masks.
    out_dir
        The run directory (created). It must not hold a finished run unless ``resume``.
    split
        A :class:`~crisp.dataset.Split` or a manifest path; default ``DATASET/split.yaml``.
    resume
        Continue from ``out_dir/checkpoints/last.ckpt`` with the run's own ``config.yaml``.
    progress
        Show Lightning's progress bar.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from crisp.models.zoo import parameter_count
    from crisp.patches import PatchDataset, load_samples

    run_dir = Path(out_dir)
    ckpt_dir = run_dir / "checkpoints"
    last_ckpt = ckpt_dir / "last.ckpt"
    if resume:
        if not last_ckpt.is_file() or not (run_dir / "config.yaml").is_file():
            raise CrispError("nothing to resume (no config.yaml and checkpoints/last.ckpt)", run_dir)
        config = load_config(TrainConfig, run_dir / "config.yaml")
        split = run_dir / "split.yaml"
    elif (run_dir / "config.yaml").exists() or last_ckpt.exists():
        raise CrispError("the run directory already holds a run; use --resume or another folder", run_dir)
    config = _adopt_init_model(config)
    folder = DatasetFolder.open(dataset_dir)
    the_split = _resolve_split(folder, split)
    if not the_split.val:
        raise CrispError("the split has no validation micrographs (needed to choose the best epoch)")

    if config.pixel_size is None and not resume:
        from crisp.io.micrographs import median_pixel_size

        train_paths = [folder.micrograph(name) for name in the_split.train]
        config = config.model_copy(update={"pixel_size": median_pixel_size(train_paths)})
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(run_dir / "config.yaml", config)
    write_split(run_dir / "split.yaml", the_split)

    train_samples = load_samples(folder, the_split.train, config.bin, config.normalize, progress)
    val_samples = load_samples(folder, the_split.val, config.bin, config.normalize, progress)
    dataset = PatchDataset(train_samples, config.patch_px, config.patches_per_micrograph, config.seed,
                           config.repeats, config.augment, config.augment_photometric)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=config.micrographs_per_batch, shuffle=True,
                                               num_workers=config.num_workers, generator=generator,
                                               drop_last=False)
    val_loader = torch.utils.data.DataLoader(list(range(len(val_samples))), batch_size=1)
    steps_per_epoch = math.ceil(len(dataset) / config.micrographs_per_batch)

    module = _lightning_module_class()(config, val_samples, steps_per_epoch)
    if config.init is not None and not resume:
        _load_init_weights(module.net, config.init)

    # best.ckpt: highest val_iou, weights only (segment, --init and evaluation read the weights; a third
    # of the size without Adam's moments); last.ckpt: every epoch, full state for --resume (Lightning's
    # own save_last only follows new bests)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_iou", mode="max",
                           save_top_k=1, enable_version_counter=False, save_weights_only=True)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    callbacks = [best, last, _epoch_table_callback(run_dir)]
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor="val_iou", mode="max",
                                       patience=config.early_stopping_patience))
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    deterministic = trainer_determinism(config.deterministic, on_gpu)
    if deterministic == "warn":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducibility
    _quiet_lightning()
    # a new run logs to RUN/logs; a resumed part to Lightning's next free RUN/logs/version_N, so that
    # resuming keeps the earlier part's log
    logger = CSVLogger(run_dir, name="logs", version=None if resume else "")
    trainer = pl.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
        precision=config.precision,
        deterministic=deterministic, callbacks=callbacks, logger=logger,
        check_val_every_n_epoch=config.val_every,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=1, default_root_dir=run_dir)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last_ckpt) if resume else None)
    wall = time.perf_counter() - start
    _write_summary(run_dir, module, wall, parameter_count, resume)
    return run_dir


def _write_summary(run_dir: Path, module, wall_s: float, parameter_count, resume: bool) -> None:
    import pandas as pd

    from crisp.report import plot_training_curves

    table = pd.read_csv(run_dir / "metrics.csv")
    previous = {}
    if resume and (run_dir / "summary.json").is_file():
        previous = json.loads((run_dir / "summary.json").read_text())
    best = table.loc[table["val_iou"].idxmax()]
    net = module.net
    summary = {
        "best_epoch": int(best["epoch"]),
        "best_val_iou": float(best["val_iou"]),
        "best_val_f1": float(best["val_f1"]),
        "best_val_precision": float(best["val_precision"]),
        "best_val_recall": float(best["val_recall"]),
        "best_val_loss": float(best["val_loss"]),
        "epochs_run": int(len(table)),
        "wall_time_s": round(float(previous.get("wall_time_s", 0.0)) + wall_s, 2),
        "parameters": parameter_count(net),
        "parameters_cnn": parameter_count(net.cnn),
        "parameters_crf": parameter_count(net.crf) if net.crf is not None else 0,
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    try:
        plot_training_curves(table, run_dir / "training_curves.png")
    except Exception as err:  # noqa: BLE001 - a figure must not fail a finished run
        warnings.warn(f"training-curve figure not written: {err}", stacklevel=2)
