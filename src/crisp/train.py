"""Training of the segmentation network (CNN + optional dense CRF) with Lightning: :func:`train`.

One epoch visits every training micrograph ``repeats`` times; each visit draws
``patches_per_micrograph`` random augmented patches (:mod:`crisp.patches`), and a batch holds
``micrographs_per_batch`` visits (the paper: 2 micrographs x 4 patches of 512 px, 50 epochs, Adam at
1e-3 with a one-cycle schedule). After each epoch (or each ``val_every``-th) the whole validation
micrographs are segmented by the tiler and scored with ``crisp evaluate``'s pixel metrics
(:class:`crisp.training.module.SegmentationModule`); epochs without validation have empty ``val_*``
cells in ``metrics.csv``.

With a CRF, the CNN and the CRF have their own learning rates (``lr_cnn``, ``lr_crf``); ``init``
starts the CNN from another run's best checkpoint (a new CRF is added); it may be a bundled model
(``init="general"``, :mod:`crisp.models.bundled`), which, being diameter-scaled, needs the particle
diameter to choose the binning (:func:`scale_to_init`).

The output is a run folder (:class:`crisp.run.Run`, which documents its files). This module also
re-exports the settings (:mod:`crisp.training.config`) and, lazily, :func:`build_network`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from crisp.dataset import DatasetFolder, Split, read_split
from crisp.errors import CrispError
from crisp.run import BEST, LAST, Run
from crisp.training.callbacks import METRIC_COLUMNS
from crisp.training.config import (
    AUTO_PRESET,
    CRF_FINE_TUNING_EPOCHS,
    PRESETS,
    TrainConfig,
    default_preset,
    make_config,
)

__all__ = ["AUTO_PRESET", "CRF_FINE_TUNING_EPOCHS", "METRIC_COLUMNS", "PRESETS", "TrainConfig",
           "check_config", "default_preset", "make_config", "scale_to_init", "train", "trainer_determinism"]


def __getattr__(name: str) -> Any:
    # build_network lives with the LightningModule; importing it pulls in Lightning, so only on use
    if name == "build_network":
        from crisp.training.module import build_network

        return build_network
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve_split(folder: DatasetFolder, split: Split | str | os.PathLike[str] | None) -> Split:
    if isinstance(split, Split):
        return split
    path = Path(split) if split is not None else folder.split_file
    if not path.is_file():
        raise CrispError("no split manifest: run `crisp split` on the dataset or pass --split", path)
    return read_split(path)


def _adopt_init_model(config: TrainConfig) -> TrainConfig:
    """With ``init``, the model fields come from the init run (so its weights fit)."""
    from crisp.config import validate_config

    if config.init is None:
        return config
    init_cfg = Run.load(config.init).config
    fields = ("arch", "encoder", "encoder_depth", "arch_params")
    if init_cfg.particle_diameter_px is not None:  # a general model: its inputs are normalised its way
        fields = (*fields, "normalize")
    values = config.model_dump()
    values.update({f: getattr(init_cfg, f) for f in fields})
    values["encoder_weights"] = None
    return validate_config(TrainConfig, values)


def scale_to_init(config: TrainConfig, diameter_A: float | None, diameter_px: float | None,
                  resume: bool = False) -> TrainConfig:
    """Fine-tuning a diameter-scaled ``init`` run (a general model): the binning that brings the
    particle to the init's ``particle_diameter_px`` on the network's grid.

    ``bin = max(1, round(d / particle_diameter_px))`` with ``d`` the particle diameter in pixels of
    the training micrographs (``diameter_px``, or ``diameter_A / config.pixel_size``); the run
    records ``particle_diameter_px = d / bin`` (its actual value), so it is diameter-scaled too.
    Other runs are returned unchanged.

    Raises
    ------
    CrispError
        A diameter-scaled init without a diameter; a diameter without one (or when resuming); both
        diameters; ``diameter_A`` without a pixel size.
    """
    from crisp.predict import diameter_given, micrograph_diameter_px

    given = diameter_given(diameter_A, diameter_px)
    if resume:
        if given:
            raise CrispError("--diameter-A/--diameter-px choose a new run's binning; a resumed run keeps "
                             "its own")
        return config
    scale = Run.load(config.init).config.particle_diameter_px if config.init is not None else None
    if scale is None:
        if given:
            raise CrispError("--diameter-A/--diameter-px need a diameter-scaled --init (a general model, "
                             "e.g. --init general); otherwise choose the binning with --bin")
        return config
    if not given:
        raise CrispError(f"--init {config.init} works at a fixed scale per particle diameter: give "
                         "--diameter-A or --diameter-px")
    diameter = micrograph_diameter_px(diameter_A, diameter_px, config.pixel_size)
    factor = max(1, round(diameter / scale))
    return config.model_copy(update={"bin": factor, "particle_diameter_px": diameter / factor})


def check_config(config: TrainConfig, *, check_init: bool = True) -> None:
    """Check everything a run's settings name before anything is written: architecture, encoder,
    encoder weights file, loss, CRF, and the ``init`` run (a readable best checkpoint that fits).

    The network is built (and the init network loaded) with the global random state saved and
    restored, so checking does not change what a seed gives.

    Raises
    ------
    CrispError
        The first problem found, naming the file or setting.
    """
    import torch

    from crisp.models.losses import needs_prior
    from crisp.models.zoo import parse_loss_spec
    from crisp.training.module import build_network

    parse_loss_spec(config.loss)
    if needs_prior(config.loss) and config.class_prior is None and config.expected_particles is None:
        raise CrispError(f"loss '{config.loss}' needs the class prior: give the expected number of "
                         "particles per training micrograph (--expected-particles N)")
    with torch.random.fork_rng(devices=[]):
        build_network(config)
        if config.init is not None and check_init:
            Run.load(config.init).network(BEST)


def _load_init_weights(network, init_dir: str | os.PathLike[str]) -> None:
    """Copy the init run's best CNN weights into ``network.cnn`` (the random state is kept)."""
    from crisp.models.zoo import load_network_state

    init = Run.load(init_dir)
    source = init.network(BEST)
    try:
        load_network_state(network.cnn, source.cnn.state_dict(), init.checkpoint_path(BEST))
    except CrispError as err:
        raise CrispError(f"the CNN of this run does not match the --init run's ({err.reason})",
                         init.checkpoint_path(BEST)) from None


def _progress_mode(progress: bool) -> str:
    """``"bar"`` (a terminal), ``"lines"`` (stderr is a file or pipe: one line per epoch) or ``"off"``."""
    if not progress:
        return "off"
    isatty = getattr(sys.stderr, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


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


def class_prior(folder: DatasetFolder, names: list[str], masks: list, expected_particles: float
                ) -> tuple[float, float]:
    """``(prior, labelled)``: fractions of the training pixels that are particle and labelled particle.

    ``labelled`` is counted on the binned label maps ``masks`` (pixels equal to 1). The area of one
    particle is the labelled area divided by the number of labelled particles (rows of
    ``coordinates/NAME.star`` of the named micrographs), so that ``prior = expected_particles x
    that area x micrographs / pixels`` follows the label method's particle shape. ``prior`` is at
    least ``labelled`` (more labelled particles than expected: everything unlabelled is background)
    and at most 0.95.
    """
    import numpy as np

    from crisp.dataset import read_true_centres

    pixels = float(sum(m.size for m in masks))
    positive = float(sum(int(np.count_nonzero(m == 1)) for m in masks))
    centres = read_true_centres(folder.root, names, required=False)
    n_labelled = 0 if centres is None else len(centres)
    if positive == 0 or n_labelled == 0:
        raise CrispError("the training label maps hold no particle (or the dataset no coordinates/): "
                         "the class prior of a positive-unlabelled loss cannot be set", folder.root)
    labelled = positive / pixels
    prior = expected_particles * (positive / n_labelled) * len(masks) / pixels
    return float(min(max(prior, labelled), 0.95)), float(labelled)


def train(config: TrainConfig, dataset_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          split: Split | str | os.PathLike[str] | None = None, resume: bool = False,
          progress: bool = True, val_dataset: str | os.PathLike[str] | None = None,
          diameter_A: float | None = None, diameter_px: float | None = None) -> Path:
    """Train a segmentation network on a dataset folder; return the run directory ``out_dir``.

    Parameters
    ----------
    config
        All settings (see :class:`TrainConfig`). They are checked (:func:`check_config`) before the
        run folder is written, so a typo leaves the folder as it was.
    dataset_dir
        A dataset folder (:mod:`crisp.dataset`) with micrographs and masks.
    out_dir
        The run directory (created). It must not hold a run unless ``resume``.
    split
        A :class:`~crisp.dataset.Split` or a manifest path; default ``DATASET/split.yaml``.
    resume
        Continue from ``out_dir/checkpoints/last.ckpt`` with the run's own ``config.yaml``.
    val_dataset
        Another dataset folder holding the validation micrographs (e.g. fully annotated, while the
        training labels are sparse); default ``dataset_dir``. Give it again when resuming.
    progress
        Show progress: Lightning's progress bar when stderr is a terminal, otherwise one line per
        epoch on stderr (:class:`crisp.training.callbacks.EpochLines`).
    diameter_A, diameter_px
        The particle diameter (Å, or pixels of the training micrographs) when ``config.init`` is a
        diameter-scaled run (a general model, ``--init general``), which needs one: it sets the
        binning and the new run's ``particle_diameter_px`` (:func:`scale_to_init`).
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from crisp.config import check_output
    from crisp.patches import PatchDataset, load_samples
    from crisp.training.callbacks import EpochLines, EpochTable, ShuffleState
    from crisp.training.module import SegmentationModule

    check_output(out_dir)
    run = Run(out_dir)
    last_ckpt = run.checkpoint_path(LAST)
    if resume:
        if not run.can_resume:
            raise CrispError("nothing to resume (no config.yaml and checkpoints/last.ckpt)", run.path)
        config = run.config
        split = run.split_path
        run.read_checkpoint(LAST)  # refuses an unsafe or unreadable checkpoint before training
    elif run.holds_run:
        raise CrispError("the run directory already holds a run; use --resume or another folder", run.path)
    config = _adopt_init_model(config)
    folder = DatasetFolder.open(dataset_dir)
    val_folder = DatasetFolder.open(val_dataset) if val_dataset is not None else folder
    the_split = _resolve_split(folder, split)
    if not the_split.val:
        raise CrispError("the split has no validation micrographs (needed to choose the best epoch)")
    check_config(config, check_init=not resume)

    if config.pixel_size is None and not resume:
        from crisp.io.micrographs import median_pixel_size

        train_paths = [folder.micrograph(name) for name in the_split.train]
        config = config.model_copy(update={"pixel_size": median_pixel_size(train_paths)})
    config = scale_to_init(config, diameter_A, diameter_px, resume)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    mode = _progress_mode(progress)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    train_samples = load_samples(folder, the_split.train, config.bin, config.normalize, mode == "bar")
    val_samples = load_samples(val_folder, the_split.val, config.bin, config.normalize, mode == "bar")
    config = _fill_label_settings(config, folder, the_split.train, [s.mask for s in train_samples])
    run.save_config(config)  # once the labels have filled in what they decide
    run.save_split(the_split)
    dataset = PatchDataset(train_samples, config.patch_px, config.patches_per_micrograph, config.seed,
                           config.repeats, config.augment, config.augment_photometric,
                           config.positive_fraction or 0.0)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=config.micrographs_per_batch, shuffle=True,
                                               num_workers=config.num_workers, generator=generator,
                                               drop_last=False)
    val_loader = torch.utils.data.DataLoader(list(range(len(val_samples))), batch_size=1)
    steps_per_epoch = math.ceil(len(dataset) / config.micrographs_per_batch)

    module = SegmentationModule(config, val_samples, steps_per_epoch)
    if config.init is not None and not resume:
        with torch.random.fork_rng(devices=[]):
            _load_init_weights(module.net, config.init)

    # best.ckpt: highest val_iou, weights only (segment, --init and evaluation read the weights; a third
    # of the size without Adam's moments); last.ckpt: every epoch, full state for --resume (Lightning's
    # own save_last only follows new bests). Both hold tensors and plain values only (weights_only=True).
    best = ModelCheckpoint(dirpath=run.checkpoint_dir, filename=Path(BEST).stem, monitor="val_iou",
                           mode="max", save_top_k=1, enable_version_counter=False, save_weights_only=True)
    last = ModelCheckpoint(dirpath=run.checkpoint_dir, filename=Path(LAST).stem, monitor=None, save_top_k=1,
                           enable_version_counter=False)
    callbacks: list[pl.Callback] = [best, last, EpochTable(run), ShuffleState(generator)]
    if mode == "lines":
        callbacks.append(EpochLines())
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
    logger = CSVLogger(run.path, name="logs", version=None if resume else "")
    trainer = pl.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
        precision=config.precision,
        deterministic=deterministic, callbacks=callbacks, logger=logger,
        check_val_every_n_epoch=config.val_every,
        enable_progress_bar=mode == "bar", enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=1, default_root_dir=run.path)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last_ckpt) if resume else None,
                    weights_only=True)
    wall = time.perf_counter() - start
    _write_summary(run, module, wall, resume)
    return run.path


def _fill_label_settings(config: TrainConfig, folder: DatasetFolder, names: list[str], masks: list
                         ) -> TrainConfig:
    """Fill in what the training labels decide: ``positive_fraction`` (0.5 when the label maps hold
    unlabelled pixels, else 0) and, for a loss that needs it, ``class_prior`` and ``labelled_fraction``
    from ``expected_particles`` (:func:`class_prior`). Values already set (a resumed run) are kept."""
    import numpy as np

    from crisp.dataset import UNLABELLED
    from crisp.models.losses import needs_prior

    update: dict[str, Any] = {}
    if config.positive_fraction is None:
        sparse = any(bool(np.any(m == UNLABELLED)) for m in masks)
        update["positive_fraction"] = 0.5 if sparse else 0.0
    if needs_prior(config.loss) and config.class_prior is None:  # check_config made sure of the count
        prior, labelled = class_prior(folder, names, masks, config.expected_particles)
        update.update(class_prior=prior, labelled_fraction=labelled)
    return config.model_copy(update=update) if update else config


def _write_summary(run: Run, module, wall_s: float, resume: bool) -> None:
    from crisp.models.zoo import parameter_count
    from crisp.report import plot_training_curves

    table = run.read_metrics()
    previous = run.summary() if resume and run.is_finished else {}
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
    run.write_summary(summary)
    try:
        plot_training_curves(table, run.curves_path)
    except Exception as err:  # noqa: BLE001 - a figure must not fail a finished run
        warnings.warn(f"training-curve figure not written: {err}", stacklevel=2)
