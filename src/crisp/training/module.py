"""The network a run trains (:func:`build_network`) and its LightningModule (:class:`SegmentationModule`).

The module trains on batches of random patches and validates on whole micrographs: each is
segmented by the one tiler (:mod:`crisp.tiling`) on the binned grid and scored with the
pixel metrics of ``crisp evaluate`` (:mod:`crisp.metrics.pixel`), pooled over the validation pixels:
``val_iou`` (the checkpoint criterion), ``val_f1``, ``val_precision``, ``val_recall``, and the mean
``val_loss`` of the micrographs.

Its state dict is the network under ``net.`` (and the loss's buffers, if any, under ``loss_fn.``);
checkpoints also hold the run's settings as a plain mapping under :data:`CONFIG_KEY`, so that a
checkpoint read with ``torch.load(..., weights_only=True)`` can say which network it was made for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from crisp.dataset import UNLABELLED
from crisp.metrics import pixel
from crisp.tiling import predict_probabilities
from crisp.training.config import TrainConfig

#: checkpoint key of the run's settings (``TrainConfig.model_dump(mode="json")``, plain types only)
CONFIG_KEY = "crisp_config"


def build_network(config: TrainConfig):
    """The CNN (random or ``encoder_weights``) plus the CRF described by ``config``."""
    from crisp.models.crf import build_crf, get_kind
    from crisp.models.network import SegmentationNetwork, decoder_channels
    from crisp.models.zoo import NUM_CLASSES, build_model

    cnn = build_model(config.arch, config.encoder, encoder_depth=config.encoder_depth,
                      encoder_weights=config.encoder_weights, arch_params=config.arch_params)
    guide_channels = None
    if get_kind(config.crf.kind).needs_decoder(config.crf.feature_source):
        guide_channels = decoder_channels(cnn)
    crf = build_crf(config.crf, num_classes=NUM_CLASSES, scale=config.bin, guide_channels=guide_channels)
    return SegmentationNetwork(cnn, crf, crf_kind=config.crf.kind, feature_source=config.crf.feature_source)


class SegmentationModule(pl.LightningModule):
    """Lightning wrapper: patch training, whole-micrograph validation, optimiser and schedule.

    Parameters
    ----------
    config
        The run's settings; the network is built from them (:func:`build_network`).
    val_samples
        :class:`crisp.patches.Sample` of the validation micrographs (binned, normalised); the
        validation loader yields their indices.
    steps_per_epoch
        Optimiser steps per epoch (the one-cycle schedule's length is ``epochs`` times this).
    """

    def __init__(self, config: TrainConfig, val_samples: Sequence[Any] = (), steps_per_epoch: int = 1):
        from crisp.models.zoo import build_loss

        super().__init__()
        self.config = config
        self.net = build_network(config)
        prior = None
        if config.class_prior is not None:
            prior = {"prior": config.class_prior, "labelled": config.labelled_fraction or 0.0}
        self.loss_fn = build_loss(config.loss, prior)
        self.val_samples = list(val_samples)
        self.steps_per_epoch = steps_per_epoch
        self._val_counts = np.zeros(4, np.float64)
        self._val_losses: list[float] = []

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
        self._val_counts = np.zeros(4, np.float64)  # tp, fp, fn, tn
        self._val_losses = []

    def validation_step(self, batch, batch_idx):
        sample = self.val_samples[int(batch[0])]
        cfg = self.config
        batch_size = cfg.micrographs_per_batch * cfg.patches_per_micrograph
        probs = predict_probabilities(self._foreground, sample.image, cfg.patch_px, cfg.val_overlap_px,
                                      batch_size)
        _table, pooled = pixel.pixel_metrics({sample.name: probs[1]}, {sample.name: sample.mask}, 0.5,
                                             ignore_value=UNLABELLED)
        self._val_counts += [pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"]]
        log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-7, 1.0)))[None]
        labels = torch.from_numpy(sample.mask.astype(np.int64))[None]  # 0, 1, 255 = unlabelled
        self._val_losses.append(float(self.loss_fn(log_probs, labels)))

    def _foreground(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the refined output) of patches, as inference makes them."""
        return torch.softmax(self.net(batch.to(self.device))["refined"].float(), dim=1)

    def on_validation_epoch_end(self):
        totals = torch.tensor([*self._val_counts, sum(self._val_losses), len(self._val_losses)],
                              dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:  # each process validated a share of the micrographs
            totals = self.all_gather(totals).reshape(-1, totals.numel()).sum(0)
        totals = totals.cpu()
        # crisp evaluate's pooled metrics on the pooled counts
        scores = pixel.scores_from_counts(*(float(totals[i]) for i in range(4)))
        loss_sum, loss_count = float(totals[4]), float(totals[5])
        values = dict(val_iou=scores["iou"], val_f1=scores["f1"], val_precision=scores["precision"],
                      val_recall=scores["recall"],
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config.model_dump(mode="json")
