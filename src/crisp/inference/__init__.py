"""Inference: the one tiler (:mod:`.tiler`) that validation, segmentation and evaluation share."""
