"""Trainable dense CRF layer (grayscale CRF and CNN-driven CD-CRF), pure PyTorch, CPU and GPU.

The CRF refines the scores of a segmentation network. For an image of ``N`` pixels and ``C`` classes,
with ``q`` the relaxed labelling (a probability vector per pixel), the energy is

.. math::

    E(q) = \\sum_i \\langle u_i, q_i \\rangle
         + \\tfrac12 \\sum_k \\sum_{i \\ne j} k_k(i, j)\\, q_i^\\top \\mu_k q_j ,
    \\qquad u = -\\text{logits},

with two Gaussian kernels (Krähenbühl & Koltun 2011):

* appearance ``w_appearance * exp(-|p_i-p_j|^2 / (2 theta_alpha^2) - |f_i-f_j|^2 / (2 theta_beta^2))``,
* smoothness ``w_smoothness * exp(-|p_i-p_j|^2 / (2 theta_gamma^2))``,

where ``p`` are pixel positions (pixels of the CRF input), ``f`` the normalised guide features, and
``mu_k`` a symmetric class-compatibility matrix per kernel, initialised to the Potts model
(``1 - identity``) and learnable. There is no self-interaction (``i != j``): the filters in
:mod:`crisp.models.filters` remove the self term exactly (see there).

Kernel normalisation (``normalise_kernels=True``, the default): each kernel weight is divided by the
kernel's spatial mass ``m = sum_{(dy, dx) != 0} exp(-(dy^2 + dx^2) / (2 theta^2))`` (about
``2 pi theta^2``; :func:`spatial_kernel_mass`), so ``w`` is the weight of a whole neighbourhood that
disagrees and the same ``w`` works at every binning. With the plain kernels (``False``, as in
pydensecrf with ``NO_NORMALIZATION``) the appearance messages of a 40 px kernel sum over thousands of
pixels and ``w = 1`` swamps any CNN logits; there ``w`` must be of the order of ``1 / m``.

Solvers (``iterations`` steps each, 5 by default as in CRF-as-RNN) are a registry,
:data:`CRF_SOLVERS` (:mod:`crisp.models.crf.solvers`):

* ``"mean-field"``: ``q <- softmax(logits - P q)`` with ``P q = sum_k (w_k / m_k) mu_k (K_k q)``.
* ``"frank-wolfe"``: the regularised Frank-Wolfe of Lê-Huu & Alahari (NeurIPS 2021). With
  ``g = grad E(x) = P x - logits``, the regularised linear oracle gives ``s = softmax(-g / lambda)``
  (entropy regulariser) or ``s = sparsemax(-g / lambda)`` (L2 regulariser), and
  ``x <- x + alpha (s - x)`` with ``alpha`` fixed, ``2 / (k + 2)`` (k = 0, 1, ...) or the exact line
  search of the quadratic energy on the segment ``[x, s]`` (closed form, so the energy never
  increases; the default, as in the authors' code). ``x0 = softmax(logits)``. With the entropy
  regulariser, ``lambda = 1`` and a fixed step of 1 the iterates are exactly those of mean field.

Both solvers may blend the result with the initial softmax: ``q <- (1 - b) q + b softmax(logits)``.
The layer returns ``log q`` (usable as logits: ``softmax`` of the output gives back ``q``).

CRF kinds are a registry too, :data:`CRF_KINDS` (:mod:`crisp.models.crf.kinds`): a kind says which
image guides the appearance kernel and how the guide is normalised, so that ``theta_beta`` has one
meaning (like 13/255 for RGB in the original dense CRF); every guide channel is mapped into ``[0, 1]``:

* ``kind="none"``: no layer;
* ``kind="crf"`` (the micrograph, F channels, usually 1): per image and channel, the 1st and 99th
  percentiles map to 0 and 1, values outside are clipped;
* ``kind="cd-crf"``, ``feature_source="logits"``: the class probabilities ``softmax(logits)`` without
  the first (background) channel, i.e. the ``C - 1`` free coordinates of the probability simplex
  (for two classes: the foreground probability);
* ``kind="cd-crf"``, ``feature_source="decoder"``: the decoder features are standardised per image and
  channel (zero mean, unit variance), reduced by a learned 1x1 convolution to ``feature_channels``
  and squashed by a logistic sigmoid.

A new kind or solver is one class (in :mod:`~crisp.models.crf.kinds`, :mod:`~crisp.models.crf.solvers`
or its own module) and one registry entry; :class:`CRFConfig` accepts every registered name.

The micrograph and the logits guide are treated as fixed images (detached): gradients reach the CNN
through the unary term. Decoder features stay in the graph, so the 1x1 reduction is learned. At most
3 feature channels: the bilateral grid is dense in the feature dimensions.

Units and binning: ``theta_alpha`` and ``theta_gamma`` are given in pixels of the full-resolution
micrograph (paper: 160 px and 3 px). :func:`build_crf` takes the binning factor ``scale`` of the CRF
input and uses ``theta / scale`` binned pixels: with binning 4 the defaults become 40 px
(appearance) and 0.75 px (smoothness); with binning 8, 20 px and 0.375 px (a smoothness kernel
narrower than half a pixel has almost no effect: ``exp(-1 / (2 * 0.375^2)) = 0.03`` for the nearest
neighbours).

Modules: :mod:`~crisp.models.crf.config` (:class:`CRFConfig`), :mod:`~crisp.models.crf.kinds`,
:mod:`~crisp.models.crf.solvers`, :mod:`~crisp.models.crf.layer` (:class:`DenseCRF`,
:func:`build_crf`), :mod:`~crisp.models.crf.refine` (whole-map refinement).
"""

from crisp.models.crf.config import CRFConfig
from crisp.models.crf.kinds import CRF_KINDS, CRFKind, get_kind, normalise_guide
from crisp.models.crf.layer import DenseCRF, build_crf, spatial_kernel_mass
from crisp.models.crf.refine import probability_histogram, refine_probabilities
from crisp.models.crf.solvers import CRF_SOLVERS, FW_ORACLES, CRFSolver, get_solver, sparsemax

__all__ = [
    "CRF_KINDS",
    "CRF_SOLVERS",
    "FW_ORACLES",
    "CRFConfig",
    "CRFKind",
    "CRFSolver",
    "DenseCRF",
    "build_crf",
    "get_kind",
    "get_solver",
    "normalise_guide",
    "probability_histogram",
    "refine_probabilities",
    "sparsemax",
    "spatial_kernel_mass",
]
