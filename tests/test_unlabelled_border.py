"""The unannotated border: edge distances, the band's width, ignored labels in the loss and in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crisp.dataset import DatasetFolder, make_split, write_split
from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc
from crisp.unlabelled_border import (
    IGNORE,
    annotation_margin_px,
    edge_distance,
    mark_unlabelled_border,
    resolve_border,
)

torch.set_num_threads(1)


def test_edge_distance_hand_computed():
    full = edge_distance((5, 6))
    assert full.tolist() == [[0, 0, 0, 0, 0, 0],
                             [0, 1, 1, 1, 1, 0],
                             [0, 1, 2, 2, 1, 0],
                             [0, 1, 1, 1, 1, 0],
                             [0, 0, 0, 0, 0, 0]]
    # binned by 2 from 6 x 8: binned pixel i covers original 2i, 2i + 1, centre 2i + 0.5
    binned = edge_distance((3, 4), (6, 8))
    rows = np.array([0.5, 2.5, 0.5])           # min(c, 5 - c) for c = 0.5, 2.5, 4.5
    cols = np.array([0.5, 2.5, 2.5, 0.5])      # min(c, 7 - c) for c = 0.5, 2.5, 4.5, 6.5
    assert np.allclose(binned, np.minimum(rows[:, None], cols[None, :]))


def test_mark_unlabelled_border_keeps_particles():
    mask = np.zeros((10, 10), np.uint8)
    mask[0:2, 4:6] = 1      # a particle inside the band
    mask[4:6, 4:6] = 1      # one in the interior
    marked = mark_unlabelled_border(mask, 2.0)
    near = edge_distance(mask.shape) < 2          # edge distance 0 or 1: the outer two rings
    assert near.sum() == 100 - 36
    assert np.all(marked[near & (mask == 0)] == IGNORE)
    assert np.all(marked[mask == 1] == 1)
    assert np.array_equal(marked[~near], mask[~near])
    assert np.array_equal(mark_unlabelled_border(mask, 0.0), mask)
    assert marked is not mask and mask.max() == 1


def _folder_with_centres(root: Path, centres: dict[str, list[tuple[float, float]]], shape=(100, 120),
                         diameter: float | None = 20.0) -> DatasetFolder:
    import starfile

    from crisp.config import save_yaml

    for name, xy in centres.items():
        write_mrc(root / "micrographs" / f"{name}.mrc", np.zeros(shape, np.float32), pixel_size=2.0)
        (root / "coordinates").mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"rlnCoordinateX": [p[0] for p in xy], "rlnCoordinateY": [p[1] for p in xy]})
        starfile.write(table, root / "coordinates" / f"{name}.star", overwrite=True)
    if diameter is not None:
        save_yaml(root / "labels.yaml", {"diameter_px": diameter})
    return DatasetFolder.open(root)


def test_annotation_margin_and_resolved_width(tmp_path):
    # 100 rows x 120 columns; edge distance of (x, y) = min(x, 119 - x, y, 99 - y)
    folder = _folder_with_centres(tmp_path / "a", {"m0": [(60, 50), (30, 40)],      # 30
                                                   "m1": [(95, 50), (60, 77)]})     # 24 and 22
    assert annotation_margin_px(folder, ["m0"]) == 30
    assert annotation_margin_px(folder, ["m0", "m1"]) == 22
    assert resolve_border("auto", folder, ["m0", "m1"], 20.0) == 22 + 10
    assert resolve_border("auto", folder, ["m0", "m1"], 50.0) == 0      # margin 22 <= radius 25
    assert resolve_border(None, folder, ["m0"], 20.0) == 0
    assert resolve_border(35.0, folder, ["m0"], None) == 35
    with pytest.raises(CrispError, match="particle diameter"):
        resolve_border("auto", folder, ["m0"], None)
    with pytest.raises(CrispError, match=">= 0"):
        resolve_border(-1.0, folder, ["m0"], 20.0)
    (folder.coordinates("m1")).unlink()
    with pytest.raises(CrispError, match="no coordinates"):
        annotation_margin_px(folder, ["m1"])


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "lovasz", "focal", "cross-entropy",
                                  "dice+0.5*focal"])
def test_losses_skip_ignored_pixels(name):
    from crisp.models.zoo import build_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=gen)
    labels = torch.randint(0, 2, (2, 16, 16), generator=gen)
    labels[:, :5] = IGNORE
    loss = build_loss(name, ignore_index=IGNORE)
    other = logits.clone()
    other[:, :, :5] = 10 * torch.randn(2, 2, 5, 16, generator=gen)   # change only the ignored pixels
    assert float(loss(other, labels)) == pytest.approx(float(loss(logits, labels)), abs=1e-6)
    changed = logits.clone()
    changed[:, 1, 8:] += 3.0                                          # a change of scored pixels counts
    assert float(loss(changed, labels)) != pytest.approx(float(loss(logits, labels)), abs=1e-6)


def test_ignored_loss_equals_loss_on_the_kept_pixels():
    """Brute force: cross-entropy and dice with ignored pixels = the same losses on the kept pixels."""
    from crisp.models.zoo import build_loss

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 2, 12, 12, generator=gen)
    labels = torch.randint(0, 2, (1, 12, 12), generator=gen)
    labels[0, :, :3] = IGNORE
    kept_logits = logits[:, :, :, 3:].reshape(1, 2, -1, 1)
    kept_labels = labels[:, :, 3:].reshape(1, -1, 1)
    ce = torch.nn.functional.cross_entropy(kept_logits, kept_labels)
    assert float(build_loss("cross-entropy", ignore_index=IGNORE)(logits, labels)) == pytest.approx(float(ce))
    probs = kept_logits.softmax(1)[0, :, :, 0]
    onehot = torch.stack([kept_labels[0, :, 0] == 0, kept_labels[0, :, 0] == 1]).float()
    dice = 1 - (2 * (probs * onehot).sum(1) / (probs.sum(1) + onehot.sum(1))).mean()
    assert float(build_loss("dice", ignore_index=IGNORE)(logits, labels)) == pytest.approx(float(dice),
                                                                                        abs=1e-5)


def _blob_dataset(root: Path, n=5, size=160, radius=6, margin=40) -> Path:
    """Micrographs with Gaussian blobs whose centres keep ``margin`` px from every edge, disc masks,
    coordinates and a labels.yaml that records the diameter (as ``crisp labels`` writes it)."""
    import starfile

    from crisp.config import save_yaml

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        name = f"mic{i:02d}"
        image = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        centres = rng.uniform(margin, size - 1 - margin, (8, 2))
        for cx, cy in centres:
            r2 = (xx - cx) ** 2 + (yy - cy) ** 2
            image += np.exp(-r2 / (2 * (radius / 2) ** 2)).astype(np.float32)
            mask[r2 <= radius ** 2] = 1
        write_mrc(root / "micrographs" / f"{name}.mrc", image, pixel_size=2.0)
        write_mrc(root / "masks" / f"{name}.mrc", mask, pixel_size=2.0)
        (root / "coordinates").mkdir(parents=True, exist_ok=True)
        starfile.write(pd.DataFrame({"rlnCoordinateX": centres[:, 0], "rlnCoordinateY": centres[:, 1]}),
                       root / "coordinates" / f"{name}.star", overwrite=True)
    save_yaml(root / "labels.yaml", {"diameter_px": 2.0 * radius})
    folder = DatasetFolder.open(root)
    write_split(folder.split_file, make_split(folder.names(), n - 2, 2, seed=0))
    return root


def test_training_ignores_the_border_in_validation(tmp_path, monkeypatch):
    """All-foreground validation predictions: precision = particle pixels / scored pixels, where the
    border's background is not scored; the run records the resolved width (margin + radius)."""
    from crisp.dataset import read_split
    from crisp.patches import bin_mask
    from crisp.train import train
    from test_train import stub_validation_foreground, tiny_config

    ds = _blob_dataset(tmp_path / "ds")
    folder = DatasetFolder.open(ds)
    split = read_split(folder.split_file)
    width = annotation_margin_px(folder, split.train) + 6.0
    assert width > 40 + 6 - 1e-9
    stub_validation_foreground(monkeypatch, lambda call: 1.0)
    from crisp.io.micrographs import read_micrograph

    masks = [bin_mask(read_micrograph(folder.mask(n)).data, 2) for n in split.val]
    near = [edge_distance(m.shape, (160, 160)) < width for m in masks]
    particle = sum(int((m == 1).sum()) for m in masks)
    scored = sum(int(((m == 1) | ~b).sum()) for m, b in zip(masks, near, strict=True))
    total = sum(m.size for m in masks)

    run = train(tiny_config(epochs=1, unlabelled_border="auto"), ds, tmp_path / "auto", progress=False)
    table = pd.read_csv(run / "metrics.csv")
    assert table["val_precision"][0] == pytest.approx(particle / scored)
    assert table["val_recall"][0] == pytest.approx(1.0)
    assert json.loads((run / "summary.json").read_text())["unlabelled_border_px"] == pytest.approx(width,
                                                                                                  abs=1e-3)
    plain = train(tiny_config(epochs=1), ds, tmp_path / "plain", progress=False)
    assert pd.read_csv(plain / "metrics.csv")["val_precision"][0] == pytest.approx(particle / total)
    assert json.loads((plain / "summary.json").read_text())["unlabelled_border_px"] == 0


def test_load_samples_marks_background_near_edges(tmp_path):
    from crisp.patches import bin_mask, load_samples

    ds = _blob_dataset(tmp_path / "ds", n=3)
    folder = DatasetFolder.open(ds)
    from crisp.io.micrographs import read_micrograph

    plain = bin_mask(read_micrograph(folder.mask("mic00")).data, 2)
    sample = load_samples(folder, ["mic00"], 2, "zscore", unlabelled_border_px=30.0)[0]
    near = edge_distance(plain.shape, (160, 160)) < 30.0
    assert np.array_equal(sample.mask == IGNORE, near & (plain == 0))
    assert np.array_equal(sample.mask == 1, plain == 1)


def test_cli_unlabelled_border(tmp_path, capsys):
    from crisp.cli import main

    ds = _blob_dataset(tmp_path / "ds", n=4)
    args = ["train", str(ds), "--preset", "cpu", "--arch", "unet", "--encoder", "resnet18",
            "--encoder-depth", "3", "--bin", "2", "--patch", "64", "--overlap", "16", "--epochs", "1",
            "--normalize", "zscore", "--threads", "1", "--no-progress"]
    assert main(args + ["-o", str(tmp_path / "run"), "--unlabelled-border", "auto", "--photometric"]) == 0
    assert "background labels ignored within" in capsys.readouterr().out
    import yaml

    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["unlabelled_border"] == "auto" and config["augment_photometric"] is True
    assert main(args + ["-o", str(tmp_path / "bad"), "--unlabelled-border", "wide"]) == 2
    assert "unlabelled_border" in capsys.readouterr().err
