"""Per-epoch callbacks of a training run: the metrics table and, for logs, one line per epoch."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import lightning.pytorch as pl

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_iou", "val_f1", "val_precision", "val_recall", "lr")


def _validated(trainer: pl.Trainer) -> bool:
    """Whether the epoch that just ended was validated (Lightning keeps stale values otherwise)."""
    return not (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch


class EpochTable(pl.Callback):
    """Writes the run's ``metrics.csv`` (one row per finished epoch) through :class:`crisp.run.Run`.

    A resumed run starts from the rows already there; a row for an epoch seen again replaces the old one.
    """

    def __init__(self, run) -> None:
        self.run = run
        self.rows = run.read_metrics().to_dict("records")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import pandas as pd

        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch}
        row.update({c: metrics.get(c, float("nan")) for c in METRIC_COLUMNS[1:-1]})
        if not _validated(trainer):
            row.update({c: float("nan") for c in METRIC_COLUMNS[1:-1] if c.startswith("val_")})
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        self.run.write_metrics(pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS)))


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class EpochLines(pl.Callback):
    """Prints one line per finished epoch, for logs where a progress bar is unreadable.

    ``epoch 3/50: train loss 0.4123, val loss 0.3998, val IoU 0.6512, val F1 0.7887, 41 s, about
    32 min 10 s left`` (the validation figures only after validated epochs; the time left is the
    mean epoch time of this part of the training times the epochs still to run).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._start = 0.0
        self._first_epoch: int | None = None
        self._part_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._part_start = time.perf_counter()
        self._first_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [f"epoch {epoch}/{total}"]
        if math.isfinite(metrics.get("train_loss", math.nan)):
            parts.append(f"train loss {metrics['train_loss']:.4f}")
        if _validated(trainer):
            parts += [f"val loss {metrics.get('val_loss', math.nan):.4f}",
                      f"val IoU {metrics.get('val_iou', math.nan):.4f}",
                      f"val F1 {metrics.get('val_f1', math.nan):.4f}"]
        parts.append(format_duration(now - self._start))
        done = epoch - (self._first_epoch or 0)
        left = (now - self._part_start) / max(done, 1) * (total - epoch)
        parts[-1] += f", about {format_duration(left)} left"
        stream = self.stream if self.stream is not None else sys.stderr
        print(": ".join([parts[0], ", ".join(parts[1:])]), file=stream, flush=True)


class ShuffleState(pl.Callback):
    """Keep the training loader's shuffling generator in the checkpoints, so a resumed run goes on
    with the same order of micrographs as an uninterrupted one.

    The generator's state (a uint8 tensor, so ``weights_only=True`` reads it) is saved with every
    checkpoint and restored when training resumes from one; without it a resumed run would start the
    generator from its seed again and repeat the first epoch's order.
    """

    def __init__(self, generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.generator.set_state(state_dict["generator_state"])

