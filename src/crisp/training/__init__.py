"""Training of the segmentation network: settings (:mod:`.config`), the LightningModule (:mod:`.module`),
the per-epoch callbacks (:mod:`.callbacks`); :func:`crisp.train.train` runs them and writes a
:class:`crisp.run.Run`."""
