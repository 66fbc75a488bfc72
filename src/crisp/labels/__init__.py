"""Real-data labels: particle masks from coordinates or refined poses.

Three methods, all making uint8 0/1 particle masks of the micrograph's shape (``x`` = column,
``y`` = row, pixels of the original micrograph):

* :func:`disk_mask` - filled discs of a given radius at each centre;
* :func:`threshold_mask` - each particle's own thresholded shape, clipped to its disc;
* :func:`reproject_mask` - a 3D mask projected at each particle's refined RELION pose.

For sparse or incomplete annotations, :mod:`crisp.labels.sparse` keeps a seeded subset of the
centres (:func:`keep_subset`) and turns a particle mask into a three-valued label map
(:func:`label_map`: 1 = particle, 0 = asserted background, 255 = unlabelled).

:func:`make_labels` (``crisp labels``) applies one of them to many micrographs and writes a
dataset folder (see :mod:`crisp.dataset`).
"""

from crisp.labels.disk import disk_mask
from crisp.labels.make import LABELS_FILE, QC_FILE, LabelConfig, LabelRun, make_labels
from crisp.labels.reproject import (
    Volume3D,
    project_volume,
    read_particles,
    read_volume,
    relion_euler_matrix,
    reproject_mask,
)
from crisp.labels.sparse import keep_subset, label_map
from crisp.labels.threshold import THRESHOLD_METHODS, ThresholdStats, threshold_mask

__all__ = [
    "LABELS_FILE", "QC_FILE", "THRESHOLD_METHODS", "LabelConfig", "LabelRun", "ThresholdStats", "Volume3D",
    "disk_mask", "keep_subset", "label_map", "make_labels", "project_volume", "read_particles", "read_volume",
    "relion_euler_matrix", "reproject_mask", "threshold_mask",
]
