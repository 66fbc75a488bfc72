"""A run: the folder of one trained network and everything needed to use it.

Training (:func:`crisp.train.train`) writes a run; inference, tuning, evaluation and reports only read
runs, through this class. Nothing else knows the file names inside a run folder or the keys inside
its checkpoints::

    RUN/config.yaml               resolved TrainConfig (with the CRF settings, the seed, the pixel size)
    RUN/split.yaml                the split manifest used
    RUN/checkpoints/best.ckpt     weights of the epoch of highest val_iou;  RUN/checkpoints/last.ckpt
                                  the last epoch with the optimizer state (for resume)
    RUN/metrics.csv               one row per epoch: train_loss, val_loss, val_iou, val_f1, ... lr
    RUN/summary.json              best epoch and metrics, wall time, parameter counts
    RUN/training_curves.png       loss and validation metrics per epoch
    RUN/logs/                     Lightning's own CSV logs (a resumed part in logs/version_N/)
    RUN/picker.yaml               the picker tuned on the run's validation maps (crisp tune-picker)

:meth:`Run.load` also opens a bundled model by name (:mod:`crisp.models.bundled`: the same layout, its
best checkpoint the network's state dict in float16, upcast here); nothing writes into a bundled folder.

Every checkpoint is read with ``torch.load(..., weights_only=True)``: a file holding anything but
tensors and plain Python values (which unpickling could turn into running code) is refused with a
:class:`~crisp.errors.CrispError` naming it, and so is an empty, truncated or foreign file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from crisp.atomic import write_text_atomic
from crisp.errors import CrispError

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST = "best.ckpt"
LAST = "last.ckpt"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "training_curves.png"
LOGS_DIR = "logs"
MAPS_DIR = "probabilities"
EVALUATION_DIR = "evaluation"
PICKER_FILE = "picker.yaml"
#: what marks a folder as holding (part of) a run
RUN_MARKERS = (CONFIG_FILE, CHECKPOINT_DIR, SUMMARY_FILE, METRICS_FILE, LOGS_DIR)

_STATE_KEY = "state_dict"  # Lightning's
_NETWORK_PREFIX = "net."  # SegmentationModule.net
_CRF_PREFIX = "net.crf."


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file safely (``weights_only=True``); CrispError for anything else."""
    from crisp.models.zoo import safe_torch_load

    data = safe_torch_load(path, "checkpoint")
    if not isinstance(data, dict) or not isinstance(data.get(_STATE_KEY), dict):
        raise CrispError(f"not a network checkpoint (no '{_STATE_KEY}' mapping)", path)
    return data


class Run:
    """The folder of one training run.

    ``Run(path)`` names a folder (training writes into it); :meth:`load` opens an existing run and
    checks that it is one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._config = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------------------------------- reading
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        """Open the run in folder ``path``, or the bundled model of that name
        (:func:`crisp.models.bundled.resolve_run`: an existing path wins): it must hold ``config.yaml``
        and ``checkpoints/``."""
        from crisp.models.bundled_names import resolve_run

        run = cls(resolve_run(path))
        if not run.path.is_dir():
            raise CrispError("run folder not found", run.path)
        if not run.config_path.is_file():
            raise CrispError(f"not a training run folder (no {CONFIG_FILE})", run.path)
        if not run.checkpoint_dir.is_dir():
            raise CrispError(f"the run has no {CHECKPOINT_DIR}/ folder (was training started?)", run.path)
        return run

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def split_path(self) -> Path:
        return self.path / SPLIT_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def picker_path(self) -> Path:
        return self.path / PICKER_FILE

    def checkpoint_path(self, name: str = BEST) -> Path:
        """``RUN/checkpoints/NAME`` (``best.ckpt`` or ``last.ckpt``); it need not exist."""
        return self.checkpoint_dir / name

    def maps_dir(self, subset: str) -> Path:
        """``RUN/probabilities/SUBSET``: the run's own probability maps of a dataset subset."""
        return self.path / MAPS_DIR / subset

    @property
    def evaluation_dir(self) -> Path:
        return self.path / EVALUATION_DIR

    def evaluation_path(self, subset: str = "test") -> Path:
        """``RUN/evaluation/SUBSET.json``: the run's evaluation record of a dataset subset."""
        return self.evaluation_dir / f"{subset}.json"

    @property
    def config(self):
        """The run's :class:`~crisp.training.config.TrainConfig` (read once from ``config.yaml``)."""
        if self._config is None:
            from crisp.config import load_config
            from crisp.training.config import TrainConfig

            if not self.config_path.is_file():
                raise CrispError(f"not a training run folder (no {CONFIG_FILE})", self.path)
            self._config = load_config(TrainConfig, self.config_path)
        return self._config

    @property
    def pixel_size(self) -> float | None:
        """Å per pixel of the training micrographs before binning (None when unknown)."""
        return self.config.pixel_size

    @property
    def bundled(self) -> str | None:
        """The name of the bundled model this folder is (:mod:`crisp.models.bundled`), else None."""
        from crisp.models.bundled_names import bundled_name

        return bundled_name(self.path)

    def check_writable(self, what: str = "output") -> None:
        """Refuse to write into a bundled model's folder (read-only): CrispError naming it."""
        from crisp.models.bundled_names import check_writable

        check_writable(self.path, what)

    @property
    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run: a config or a last checkpoint."""
        return self.config_path.exists() or self.checkpoint_path(LAST).exists()

    @property
    def is_finished(self) -> bool:
        """Whether training finished (the summary is written last)."""
        return self.summary_path.is_file()

    @property
    def can_resume(self) -> bool:
        """Whether an interrupted training can continue (config and last checkpoint)."""
        return self.config_path.is_file() and self.checkpoint_path(LAST).is_file()

    def summary(self) -> dict[str, Any]:
        """``summary.json`` as a dict (CrispError when training has not finished)."""
        if not self.summary_path.is_file():
            raise CrispError(f"the run is not finished (no {SUMMARY_FILE})", self.path)
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise CrispError(f"unreadable summary ({err})", self.summary_path) from None

    def read_metrics(self):
        """The per-epoch table ``metrics.csv`` (pandas DataFrame); empty when there is none yet."""
        import pandas as pd

        if not self.metrics_path.is_file():
            return pd.DataFrame()
        return pd.read_csv(self.metrics_path)

    def picker(self):
        """The tuned picker (:class:`crisp.picking.tune.PickerConfig`) from ``picker.yaml``, or None."""
        if not self.picker_path.is_file():
            return None
        from crisp.picking.tune import load_picker

        return load_picker(self.picker_path)

    def read_checkpoint(self, name: str = BEST) -> dict[str, Any]:
        """The checkpoint ``name`` read safely (:func:`read_checkpoint`)."""
        path = self.checkpoint_path(name)
        if not path.is_file():
            raise CrispError("the run has no such checkpoint (was training finished?)", path)
        return read_checkpoint(path)

    def network(self, checkpoint: str = BEST, device=None):
        """The trained network (:class:`crisp.models.network.SegmentationNetwork`) in eval mode.

        The network is built from the run's config and the checkpoint's weights are loaded strictly:
        a checkpoint of another network (another encoder, a CRF the config lacks or the other way
        round) is a CrispError naming the checkpoint and the mismatch. The global random state is
        left as it was.
        """
        import torch

        from crisp.training.module import SegmentationModule

        data = self.read_checkpoint(checkpoint)
        path = self.checkpoint_path(checkpoint)
        config = self.config
        with torch.random.fork_rng(devices=[]):
            module = SegmentationModule(config.model_copy(update={"encoder_weights": None}))
        _check_crf_parts(config, data, path)
        data = {**data, _STATE_KEY: _upcast(data[_STATE_KEY])}  # a bundled model's float16 weights
        _load_state(module, data, path, config)
        network = module.net
        network.eval()
        if device is not None:
            network.to(device)
        return network

    # ------------------------------------------------------------------------------------- writing
    def save_config(self, config) -> None:
        """Write ``config.yaml`` (creates the folder)."""
        from crisp.config import save_yaml

        self.check_writable("run")
        self.path.mkdir(parents=True, exist_ok=True)
        save_yaml(self.config_path, config)
        self._config = config

    def save_split(self, split) -> None:
        """Write the split manifest the run used."""
        from crisp.dataset import write_split

        self.check_writable("run")
        write_split(self.split_path, split)

    def write_metrics(self, table) -> None:
        """Write the per-epoch table ``metrics.csv`` (pandas DataFrame)."""
        self.check_writable("run")
        write_text_atomic(self.metrics_path, table.to_csv(index=False))

    def save_network(self, network, config, checkpoint: str = BEST) -> None:
        """Write ``network`` (built from ``config``) as checkpoint ``checkpoint`` with ``config.yaml``,
        as training would (for tools that make a run without training, e.g. random weights)."""
        import torch

        from crisp.atomic import atomic_path
        from crisp.training.module import CONFIG_KEY

        self.save_config(config)
        state = {_NETWORK_PREFIX + k: v for k, v in network.state_dict().items()}
        with atomic_path(self.checkpoint_path(checkpoint)) as tmp:
            torch.save({_STATE_KEY: state, CONFIG_KEY: config.model_dump(mode="json")}, tmp)

    def copy_to(self, dest: str | os.PathLike[str], **config_updates: Any) -> Run:
        """A new run folder ``dest`` with this run's settings changed by ``config_updates`` (e.g.
        ``tta=True``), its split and summary, and links to its checkpoints (the same weights)."""
        import shutil

        from crisp.config import validate_config

        new = Run(dest)
        values = self.config.model_dump()
        values.update(config_updates)
        new.save_config(validate_config(type(self.config), values))
        for source, target in ((self.split_path, new.split_path), (self.summary_path, new.summary_path)):
            if source.is_file():
                shutil.copy(source, target)
        new.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for name in (BEST, LAST):
            link = new.checkpoint_path(name)
            if self.checkpoint_path(name).is_file() and not link.exists():
                link.symlink_to(self.checkpoint_path(name).resolve())
        return new

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` (the mark of a finished run)."""
        self.check_writable("run")
        write_text_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")


def _upcast(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with float16/bfloat16 tensors as float32 (an exported checkpoint's are float16)."""
    import torch

    return {k: v.float() if torch.is_tensor(v) and v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in state.items()}


def _check_crf_parts(config, data: dict[str, Any], path: Path) -> None:
    has_crf = any(k.startswith(_CRF_PREFIX) for k in data[_STATE_KEY])
    kind = config.crf.kind
    if has_crf and kind == "none":
        raise CrispError("the checkpoint holds CRF weights but the run's config has no CRF (crf.kind: none); "
                         "its CRF would be dropped", path)
    if not has_crf and kind != "none":
        raise CrispError(f"the run's config has a CRF (crf.kind: {kind}) but the checkpoint holds no CRF "
                         "weights (a CNN-only checkpoint)", path)


def _load_state(module, data: dict[str, Any], path: Path, config) -> None:
    from crisp.models.zoo import load_network_state

    try:
        load_network_state(module, data[_STATE_KEY], path)
    except CrispError as err:
        from crisp.training.module import CONFIG_KEY

        saved = data.get(CONFIG_KEY)
        if isinstance(saved, dict):
            for field in ("arch", "encoder", "encoder_depth"):
                if saved.get(field) != getattr(config, field):
                    raise CrispError(f"the checkpoint was made for {field} {saved.get(field)}, the run's "
                                     f"config says {getattr(config, field)}", path) from None
        raise err from None
