"""Training on sparse labels: unlabelled pixels (255) in losses, binning, patches, metrics; the nnPU risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from crisp.dataset import UNLABELLED
from crisp.errors import CrispError

torch.set_num_threads(1)


def _logits_labels(seed=0, shape=(2, 8, 10)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], 2, *shape[1:]), generator=gen)
    labels = (torch.rand(shape, generator=gen) < 0.4).long()
    return logits, labels


# ------------------------------------------------------------------------------- ignore index
@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "cross-entropy", "focal", "lovasz"])
def test_segmentation_losses_ignore_unlabelled_pixels(name):
    """A loss over a batch whose right half is unlabelled equals the loss over the left half alone."""
    from crisp.models.losses import build_loss

    loss = build_loss(name)
    logits, labels = _logits_labels()
    half = labels.shape[-1] // 2
    masked = labels.clone()
    masked[..., half:] = UNLABELLED
    left = loss(logits[..., :half].contiguous(), labels[..., :half].contiguous())
    assert float(loss(logits, masked)) == pytest.approx(float(left), rel=1e-5, abs=1e-6)
    # and the ignored half matters when it is labelled
    assert float(loss(logits, labels)) != pytest.approx(float(left), rel=1e-3)


def test_dice_without_unlabelled_pixels_is_smp_dice():
    import segmentation_models_pytorch as smp

    from crisp.models.losses import build_loss

    logits, labels = _logits_labels(1)
    reference = smp.losses.DiceLoss(smp.losses.MULTICLASS_MODE)(logits, labels)
    assert float(build_loss("dice")(logits, labels)) == pytest.approx(float(reference), rel=1e-6)


# ------------------------------------------------------------------------------------- nnPU
def _brute_force_pu(logits, labels, prior, labelled):
    z = (logits[:, 1] - logits[:, 0]).numpy().ravel()
    lab = labels.numpy().ravel()
    pos, unl = z[lab == 1], z[lab != 1]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    prior_u = (prior - labelled) / (1 - labelled)
    positive = prior * sig(-pos).mean()
    negative = (1 - labelled) * (sig(unl).mean() - prior_u * sig(pos).mean())
    return positive, negative


def test_nnpu_risk_matches_hand_formula():
    from crisp.models.losses import build_loss

    logits, labels = _logits_labels(2)
    labels[0, :2] = UNLABELLED  # unlabelled and 0 both count as unlabelled
    loss = build_loss("nnpu", {"prior": 0.45, "labelled": 0.2})
    positive, negative = _brute_force_pu(logits, labels, 0.45, 0.2)
    pu = loss.terms[0]
    got_pos, got_neg = pu.risks(logits, labels)
    assert float(got_pos) == pytest.approx(positive, rel=1e-5)
    assert float(got_neg) == pytest.approx(negative, rel=1e-5)
    assert negative > 0
    assert float(loss(logits, labels)) == pytest.approx(positive + negative, rel=1e-5)


def test_nnpu_with_everything_labelled_is_the_plain_risk():
    """prior == labelled: pi_u = 0, the risk is lambda E_L[l+] + (1 - lambda) E_U[l-]."""
    from crisp.models.pu_loss import NonNegativePULoss

    logits, labels = _logits_labels(3)
    lam = float((labels == 1).float().mean())
    z = logits[:, 1] - logits[:, 0]
    expected = lam * torch.sigmoid(-z[labels == 1]).mean() + (1 - lam) * torch.sigmoid(z[labels != 1]).mean()
    assert float(NonNegativePULoss(lam, lam)(logits, labels)) == pytest.approx(float(expected), rel=1e-5)


def test_nnpu_bce_with_everything_labelled_is_binary_cross_entropy():
    """The logistic surrogate with prior == labelled == the batch's particle fraction: the risk is the
    mean binary cross-entropy of sigmoid(margin) over all pixels (torch's reference), and the registry
    name is the same loss as nnpu with ``surrogate: logistic``."""
    from torch.nn import functional as F

    from crisp.models.losses import build_loss

    logits, labels = _logits_labels(4)
    labels[0, :2] = UNLABELLED  # counted as unlabelled, i.e. background here
    lam = float((labels == 1).float().mean())
    z = logits[:, 1] - logits[:, 0]
    reference = F.binary_cross_entropy_with_logits(z, (labels == 1).float())
    prior = {"prior": lam, "labelled": lam}
    for spec in ("nnpu-bce", "nnpu-logistic", [{"name": "nnpu", "params": {"surrogate": "logistic"}}]):
        assert float(build_loss(spec, prior)(logits, labels)) == pytest.approx(float(reference), rel=1e-5)
    assert float(build_loss("nnpu", prior)(logits, labels)) != pytest.approx(float(reference), rel=1e-3)


def test_nnpu_clips_a_negative_background_risk():
    """Overfitting: labelled particles called particle, every unlabelled pixel confidently background,
    with a large prior. The background part of the risk estimate is below zero; the loss is -gamma times
    it, and its gradient step raises the particle logit of the unlabelled pixels."""
    from crisp.models.pu_loss import NonNegativePULoss

    labels = torch.zeros((1, 4, 4), dtype=torch.long)
    labels[0, 0, :2] = 1
    logits = torch.zeros((1, 2, 4, 4))
    logits[:, 1] = -4.0  # unlabelled pixels called background ...
    logits[0, 1, 0, :2] = 4.0  # ... and labelled particles called particle
    logits.requires_grad_(True)
    loss = NonNegativePULoss(prior=0.9, labelled=0.125, gamma=1.0)
    _, negative = loss.risks(logits, labels)
    negative = negative.detach()
    assert float(negative) < 0
    value = loss(logits, labels)
    assert float(value) == pytest.approx(-float(negative), rel=1e-6)
    value.backward()
    # descent (minus the gradient) raises the particle logit of an unlabelled pixel
    assert float(logits.grad[0, 1, 2, 2]) < 0


def test_nnpu_needs_a_prior_and_checks_it():
    from crisp.models.losses import build_loss, needs_prior

    assert needs_prior("dice+nnpu") and not needs_prior("dice")
    assert not needs_prior([{"name": "nnpu", "params": {"prior": 0.3}}])
    with pytest.raises(CrispError, match="expected-particles"):
        build_loss("dice+nnpu")
    with pytest.raises(CrispError, match="prior"):
        build_loss("nnpu", {"prior": 1.5, "labelled": 0.1})
    with pytest.raises(CrispError, match="labelled fraction"):
        build_loss("nnpu", {"prior": 0.2, "labelled": 0.3})
    build_loss("0.5*nnpu+dice", {"prior": 0.3, "labelled": 0.1})


# ------------------------------------------------------------------------ binning and patches
def test_bin_mask_keeps_unlabelled_regions():
    from crisp.patches import bin_mask

    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = UNLABELLED
    mask[8:16, 8:16] = 1
    mask[40:48, 40:48] = 1  # a particle inside the unlabelled half stays a particle
    binned = bin_mask(mask, 2)
    assert binned.shape == (32, 32)
    assert set(np.unique(binned)) == {0, 1, UNLABELLED}
    assert (binned[:, 17:][binned[:, 17:] != 1] == UNLABELLED).all()
    assert (binned[4:8, 4:8] == 1).all() and (binned[20:24, 20:24] == 1).all()
    assert (binned[:, :15][binned[:, :15] != 1] == 0).all()
    # without unlabelled pixels: the 0/1 result of the particle indicator alone
    full = (mask == 1).astype(np.uint8)
    assert set(np.unique(bin_mask(full, 2))) == {0, 1}
    assert np.array_equal(bin_mask(mask, 1), mask)


def test_patches_on_labelled_particles():
    """One labelled particle in a sea of unlabelled pixels: positive_fraction 1 puts it in every patch;
    positive_fraction 0 draws the same patches as the default."""
    from crisp.patches import random_patches

    image = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    mask = np.full((256, 256), UNLABELLED, np.uint8)
    mask[200:204, 30:34] = 1
    images, masks = random_patches(image, mask, 32, 40, np.random.default_rng(1), positive_fraction=1.0)
    assert all((m == 1).any() for m in masks)
    _, plain = random_patches(image, mask, 32, 40, np.random.default_rng(1))
    assert sum((m == 1).any() for m in plain) < 10
    i0, m0 = random_patches(image, mask, 32, 5, np.random.default_rng(2), positive_fraction=0.0)
    i1, m1 = random_patches(image, mask, 32, 5, np.random.default_rng(2))
    assert np.array_equal(i0, i1) and np.array_equal(m0, m1)


def test_pixel_metrics_leave_out_unlabelled_pixels():
    from crisp.metrics.pixel import pixel_metrics

    truth = np.array([[1, 1, 0, 0], [UNLABELLED, UNLABELLED, 0, 1]], np.uint8)
    pred = np.array([[0.9, 0.2, 0.8, 0.1], [0.9, 0.1, 0.1, 0.7]], np.float32)
    _, pooled = pixel_metrics({"a": pred}, {"a": truth}, 0.5, ignore_value=UNLABELLED)
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"]) == (2, 1, 1, 2)
    _, old = pixel_metrics({"a": pred}, {"a": truth}, 0.5)  # default: 255 is foreground, as before
    assert (old["tp"], old["fp"], old["fn"], old["tn"]) == (3, 1, 2, 2)


# ---------------------------------------------------------------------------------- training
def _sparse_dataset(root, keep_every=3):
    """The tiny dataset of test_train with only every third particle labelled, the rest unlabelled."""
    import starfile
    from scipy import ndimage

    from crisp.dataset import DatasetFolder
    from crisp.io.micrographs import read_micrograph, write_mrc
    from test_train import make_dataset

    make_dataset(root)
    folder = DatasetFolder.open(root)
    counts = {}
    for name in folder.names():
        mask = read_micrograph(folder.mask(name)).data
        blobs, n = ndimage.label(mask)
        sparse = np.full(mask.shape, UNLABELLED, np.uint8)
        kept = range(1, n + 1, keep_every)
        for k in kept:
            sparse[blobs == k] = 1
        write_mrc(folder.mask(name), sparse, pixel_size=2.0)
        centres = ndimage.center_of_mass(mask, blobs, list(kept))
        folder.coordinates(name).parent.mkdir(exist_ok=True)
        table = pd.DataFrame({"rlnCoordinateX": [c[1] for c in centres],
                              "rlnCoordinateY": [c[0] for c in centres]})
        starfile.write({"particles": table}, folder.coordinates(name), overwrite=True)
        counts[name] = (len(kept), int((sparse == 1).sum()), sparse.size)
    return counts


def test_class_prior_from_expected_particles(tmp_path):
    from crisp.dataset import DatasetFolder
    from crisp.train import class_prior

    counts = _sparse_dataset(tmp_path / "ds")
    folder = DatasetFolder.open(tmp_path / "ds")
    names = folder.names()[:2]
    masks = [np.where(np.arange(100).reshape(10, 10) < 10 * (i + 1), 1, UNLABELLED).astype(np.uint8)
             for i in range(2)]  # 10 and 20 labelled pixels of 100 each
    n_labelled = sum(counts[n][0] for n in names)
    prior, labelled = class_prior(folder, names, masks, expected_particles=5)
    assert labelled == pytest.approx(30 / 200)
    assert prior == pytest.approx(min(5 * (30 / n_labelled) * 2 / 200, 0.95))
    prior, _ = class_prior(folder, names, masks, expected_particles=0.01)
    assert prior == pytest.approx(labelled)  # never below the labelled fraction


def test_train_nnpu_on_sparse_labels(tmp_path):
    """nnpu on a dataset with unlabelled pixels: the run records the prior and the patch share, and
    trains; without --expected-particles it is refused before anything is written."""
    from crisp.train import train
    from test_train import tiny_config

    _sparse_dataset(tmp_path / "ds")
    with pytest.raises(CrispError, match="expected-particles"):
        train(tiny_config(loss="dice+nnpu"), tmp_path / "ds", tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    run = train(tiny_config(loss="dice+nnpu", expected_particles=10), tmp_path / "ds", tmp_path / "run",
                progress=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["positive_fraction"] == 0.5
    assert 0 < config["labelled_fraction"] < config["class_prior"] < 0.95
    metrics = (run / "metrics.csv").read_text()
    assert "nan" not in metrics.lower()
