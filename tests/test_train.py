"""Patch sampling and Lightning training: run directory, best checkpoint, seeds, resume, CRF, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from crisp.dataset import DatasetFolder, make_split, write_split
from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc

torch.set_num_threads(1)


def make_dataset(root, n=6, size=192, seed=0, radius=10, n_train=3, n_val=2):
    """A tiny dataset folder: noisy Gaussian blobs and their disk masks, with a split manifest."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        clean = np.zeros((size, size), np.float32)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(10):
            cy, cx = rng.uniform(radius, size - radius, 2)
            r2 = (yy - cy) ** 2 + (xx - cx) ** 2
            clean += np.exp(-r2 / (2 * (radius / 2) ** 2)).astype(np.float32)
            mask[r2 <= radius ** 2] = 1
        image = clean + rng.normal(0, 0.3, clean.shape).astype(np.float32)
        write_mrc(root / "micrographs" / f"mic{i:02d}.mrc", image, pixel_size=2.0)
        write_mrc(root / "masks" / f"mic{i:02d}.mrc", mask, pixel_size=2.0)
    folder = DatasetFolder.open(root)
    write_split(folder.split_file, make_split(folder.names(), n_train, n_val, seed=0))
    return root


def tiny_config(**overrides):
    from crisp.train import make_config

    values = dict(arch="unet", encoder="resnet18", encoder_depth=3, bin=2, patch_px=64, epochs=2,
                  micrographs_per_batch=2, patches_per_micrograph=2, val_overlap_px=16, normalize="zscore",
                  threads=1)
    values.update(overrides)
    return make_config("cpu", **values)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"))


# ----------------------------------------------------------------------------------------- patches
def test_bin_mask_follows_image_grid():
    from crisp.patches import bin_image, bin_mask

    mask = np.zeros((100, 130), np.uint8)
    mask[30:50, 70:90] = 1
    binned = bin_mask(mask, 2)
    assert binned.shape == bin_image(mask.astype(np.float32), 2).shape == (50, 65)
    assert binned.dtype == np.uint8
    ys, xs = np.nonzero(binned)
    # the square [30, 50) x [70, 90) becomes [15, 25) x [35, 45) on the binned grid (pixel 0 on pixel 0)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 24, 35, 44)
    assert np.array_equal(bin_mask(mask, 1), mask)


def test_random_patches_augment_consistently():
    from crisp.patches import random_patches

    rng = np.random.default_rng(0)
    image = rng.normal(size=(90, 70)).astype(np.float32)
    mask = (image > 0.5).astype(np.uint8)
    images, masks = random_patches(image, mask, 32, 16, np.random.default_rng(1))
    assert images.shape == (16, 1, 32, 32) and masks.shape == (16, 32, 32)
    assert np.array_equal(masks, (images[:, 0] > 0.5).astype(np.int64))
    again, _ = random_patches(image, mask, 32, 16, np.random.default_rng(1))
    assert np.array_equal(images, again)
    small, small_masks = random_patches(image[:20, :25], mask[:20, :25], 32, 2, np.random.default_rng(2))
    assert small.shape == (2, 1, 32, 32)  # padded by reflection
    # each patch is a rotation/flip of some window of the image: its value multiset is one
    flat = np.sort(images[0, 0].ravel())
    assert any(np.allclose(flat, np.sort(np.rot90(image[y:y + 32, x:x + 32], 0).ravel()))
               for y in range(90 - 31) for x in range(70 - 31))


def test_photometric_jitter_hand_cases(monkeypatch):
    from scipy import ndimage

    import crisp.patches
    from crisp.patches import photometric_jitter

    rng = np.random.default_rng(0)
    patch = rng.normal(size=(32, 32)).astype(np.float32)
    fixed = dict(gain=(2.0, 2.0), offset=(1.0, 1.0), blur_sigma_px=(1.0, 1.0), noise_sigma=(0.5, 0.5))
    monkeypatch.setattr(crisp.patches, "PHOTOMETRIC_RANGES", dict(fixed, p_blur=0.0, p_noise=0.0))
    np.testing.assert_allclose(photometric_jitter(patch, rng), 2 * patch + 1, rtol=1e-6)
    monkeypatch.setattr(crisp.patches, "PHOTOMETRIC_RANGES", dict(fixed, p_blur=1.0, p_noise=0.0))
    blurred = ndimage.gaussian_filter(patch, 1.0, mode="reflect")
    np.testing.assert_allclose(photometric_jitter(patch, rng), 2 * blurred + 1, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(crisp.patches, "PHOTOMETRIC_RANGES", dict(fixed, p_blur=0.0, p_noise=1.0))
    noisy = photometric_jitter(np.zeros((256, 256), np.float32), rng)
    assert noisy.mean() == pytest.approx(1.0, abs=0.02) and noisy.std() == pytest.approx(1.0, abs=0.02)


def test_photometric_patches_keep_masks_and_positions():
    """The first patch's geometric draws come first, so its mask is the plain run's, and its image is
    a blurred, noisy, rescaled copy of the plain image patch (default ranges)."""
    from crisp.patches import PHOTOMETRIC_RANGES, random_patches

    rng = np.random.default_rng(3)
    image = rng.normal(size=(120, 120)).astype(np.float32)
    mask = (image > 1).astype(np.uint8)
    plain, plain_masks = random_patches(image, mask, 48, 1, np.random.default_rng(7))
    jittered, masks = random_patches(image, mask, 48, 1, np.random.default_rng(7), photometric=True)
    assert np.array_equal(masks, plain_masks)
    assert not np.allclose(jittered, plain)
    constant, _ = random_patches(np.zeros((60, 60), np.float32), np.zeros((60, 60), np.uint8), 32, 20,
                                 np.random.default_rng(1), photometric=True)
    low, high = PHOTOMETRIC_RANGES["offset"]
    means = constant.mean(axis=(1, 2, 3))
    assert np.all((means >= low - 0.05) & (means <= high + 0.05)) and np.ptp(means) > 0.1


def test_patch_dataset_epochs():
    from crisp.patches import PatchDataset, Sample

    rng = np.random.default_rng(0)
    samples = [Sample(f"m{i}", rng.normal(size=(80, 80)).astype(np.float32),
                      np.zeros((80, 80), np.uint8)) for i in range(3)]
    ds = PatchDataset(samples, 32, patches_per_micrograph=4, seed=5, repeats=2)
    assert len(ds) == 6
    a0, _ = ds[1]
    assert a0.shape == (4, 1, 32, 32)
    assert torch.equal(ds[1][0], a0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a0)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], a0)


# ---------------------------------------------------------------------------------------- training
def stub_validation_foreground(monkeypatch, foreground):
    """Replace the validation's predictions by a constant map: ``foreground(k)`` is the foreground
    probability of the k-th call (0-based). Returns the call counter ``{"n": calls so far}``."""
    import crisp.training.module

    real = crisp.training.module.predict_probabilities
    calls = {"n": 0}

    def stubbed(model_fn, image, patch, overlap=64, batch_size=8):
        out = real(model_fn, image, patch, overlap, batch_size)
        fg = foreground(calls["n"])
        calls["n"] += 1
        out[1], out[0] = fg, 1.0 - fg
        return out

    monkeypatch.setattr(crisp.training.module, "predict_probabilities", stubbed)
    return calls


def test_train_run_directory_and_best_checkpoint(dataset, tmp_path, monkeypatch):
    """Force epoch 1 to be the best (stub validation predictions): best.ckpt must be epoch 1, not last;
    early stopping with patience 1 ends the 5-epoch run after epoch 2."""
    from crisp.train import train

    n_val = 2
    # epoch 1: all foreground (IoU > 0); others: IoU 0
    stub_validation_foreground(monkeypatch, lambda call: 1.0 if call // n_val == 1 else 0.0)
    run = train(tiny_config(epochs=5, early_stopping_patience=1), dataset, tmp_path / "run", progress=False)
    for name in ("config.yaml", "split.yaml", "metrics.csv", "summary.json", "training_curves.png",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    table = pd.read_csv(run / "metrics.csv")
    assert list(table["epoch"]) == [0, 1, 2]
    for col in ("train_loss", "val_loss", "val_iou", "val_f1", "val_precision", "val_recall", "lr"):
        assert table[col].notna().all(), col
    assert int(table["val_iou"].idxmax()) == 1 and table["val_iou"][0] == 0.0
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 2
    assert "optimizer_states" not in best and "optimizer_states" in last  # best: weights only
    key = next(k for k in best["state_dict"] if k.endswith("weight"))
    assert not torch.equal(best["state_dict"][key], last["state_dict"][key])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 3
    assert summary["best_val_iou"] == pytest.approx(table["val_iou"].max())
    assert summary["parameters"] > 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 0 and config["crf"]["kind"] == "none" and config["patch_px"] == 64
    with pytest.raises(CrispError, match="already holds a run"):
        train(tiny_config(), dataset, run, progress=False)


def test_validation_every_second_epoch(dataset, tmp_path, monkeypatch):
    """val_every=2 over 4 epochs: validation only after epochs 1 and 3 (0-based), empty val cells in the
    other rows, and best.ckpt from the better of the two validated epochs (stubbed: the first)."""
    from crisp.train import train

    n_val = 2
    calls = stub_validation_foreground(monkeypatch, lambda call: 1.0 if call < n_val else 0.0)
    run = train(tiny_config(epochs=4, val_every=2), dataset, tmp_path / "run", progress=False)
    assert calls["n"] == 2 * n_val
    table = pd.read_csv(run / "metrics.csv")
    assert list(table["epoch"]) == [0, 1, 2, 3]
    assert table["train_loss"].notna().all()
    for col in ("val_loss", "val_iou", "val_f1", "val_precision", "val_recall"):
        assert list(table[col].notna()) == [False, True, False, True], col
    assert table["val_iou"][1] > 0 and table["val_iou"][3] == 0.0
    assert torch.load(run / "checkpoints/best.ckpt", weights_only=True)["epoch"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 4
    with pytest.raises(CrispError, match="multiple of val_every"):
        tiny_config(epochs=5, val_every=2)


def _state(run):
    return torch.load(Path(run) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_same_seed_same_weights(dataset, tmp_path):
    from crisp.train import train

    a = _state(train(tiny_config(epochs=1, seed=3), dataset, tmp_path / "a", progress=False))
    b = _state(train(tiny_config(epochs=1, seed=3), dataset, tmp_path / "b", progress=False))
    c = _state(train(tiny_config(epochs=1, seed=4), dataset, tmp_path / "c", progress=False))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_from_last(dataset, tmp_path):
    from crisp.train import train

    run = train(tiny_config(epochs=1, schedule="constant"), dataset, tmp_path / "run", progress=False)
    first = pd.read_csv(run / "metrics.csv")
    # pretend the run had been planned for 2 epochs and was interrupted after the first
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["epochs"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    first_log = (run / "logs" / "metrics.csv").read_text()
    train(tiny_config(), dataset, run, resume=True, progress=False)
    # Lightning's own log of the first part is kept; the resumed part logs beside it
    assert (run / "logs" / "metrics.csv").read_text() == first_log
    assert set(pd.read_csv(run / "logs" / "version_0" / "metrics.csv")["epoch"]) == {1}
    table = pd.read_csv(run / "metrics.csv")
    assert list(table["epoch"]) == [0, 1]
    assert table["train_loss"][0] == pytest.approx(first["train_loss"][0])
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
    with pytest.raises(CrispError, match="nothing to resume"):
        train(tiny_config(), dataset, tmp_path / "empty", resume=True, progress=False)


@pytest.mark.parametrize("crf", [dict(kind="crf"), dict(kind="cd-crf", feature_source="decoder")])
def test_crf_training_from_init(dataset, tmp_path, crf):
    from crisp.train import train

    base = train(tiny_config(epochs=1), dataset, tmp_path / "base", progress=False)
    # with --init the model comes from the init run even when the config names another encoder
    run = train(tiny_config(epochs=1, init=str(base), crf=dict(crf, iterations=2), encoder="resnet34",
                            schedule="constant", lr_cnn=1e-12),
                dataset, tmp_path / "crf", progress=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["encoder"] == "resnet18" and config["crf"]["kind"] == crf["kind"]
    base_state, state = _state(base), _state(run)
    crf_keys = [k for k in state if k.startswith("net.crf.")]
    assert crf_keys
    conv = "net.cnn.encoder.conv1.weight"
    # the CNN starts from the init run's weights (and barely moves at lr_cnn 1e-12)
    assert torch.allclose(state[conv], base_state[conv], atol=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters_crf"] > 0


def test_missing_split_and_no_val(tmp_path):
    from crisp.train import train

    ds = make_dataset(tmp_path / "ds", n=3, size=96, n_train=2, n_val=1)
    (ds / "split.yaml").unlink()
    with pytest.raises(CrispError, match="no split manifest"):
        train(tiny_config(), ds, tmp_path / "run", progress=False)
    write_split(ds / "split.yaml", make_split(["mic00", "mic01", "mic02"], 3, 0))
    with pytest.raises(CrispError, match="no validation"):
        train(tiny_config(), ds, tmp_path / "run", progress=False)


def test_config_presets_and_validation(tmp_path):
    from crisp.train import PRESETS, TrainConfig, make_config

    paper = make_config("paper")
    assert (paper.arch, paper.encoder, paper.loss, paper.patch_px, paper.bin, paper.epochs) == (
        "unetplusplus", "efficientnet-b5", "dice", 512, 1, 50)
    assert paper.micrographs_per_batch * paper.patches_per_micrograph == 8 and paper.lr == 1e-3
    assert set(PRESETS) == {"paper", "cpu"}
    file = tmp_path / "c.yaml"
    file.write_text("preset: cpu\nepochs: 7\ncrf:\n  kind: crf\n")
    cfg = make_config(None, file, epochs=None, lr=5e-4)
    assert cfg.epochs == 7 and cfg.lr == 5e-4 and cfg.crf.kind == "crf"
    assert cfg.encoder == PRESETS["cpu"]["encoder"]
    with pytest.raises(CrispError, match="patch_px"):
        make_config("cpu", patch_px=100)
    with pytest.raises(CrispError, match="val_overlap_px"):
        make_config("cpu", patch_px=64, val_overlap_px=64)
    with pytest.raises(CrispError, match="unknown preset"):
        make_config("fast")
    with pytest.raises(CrispError, match="invalid settings"):
        make_config("cpu", crf=dict(kind="bogus"))
    assert TrainConfig().crf.kind == "none"


def test_cli_train_and_models(dataset, tmp_path, capsys):
    from crisp.cli import main

    out = tmp_path / "run"
    code = main(["train", str(dataset), "-o", str(out), "--preset", "cpu", "--arch", "unet",
                 "--encoder", "resnet18", "--encoder-depth", "3", "--bin", "2", "--patch", "64",
                 "--overlap", "16", "--epochs", "1", "--normalize", "zscore", "--threads", "1",
                 "--no-progress"])
    assert code == 0
    assert "best epoch 0" in capsys.readouterr().out
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["augment_photometric"] is False
    assert main(["train", str(dataset), "-o", str(tmp_path / "x"), "--arch", "nonet"]) == 2
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "unetplusplus" in text and "resnet18" in text and "dice" in text and "M" in text


@pytest.mark.parametrize(("extra", "epochs"), [
    (["--init", "RUN", "--crf", "cd-crf"], 50),                  # CRF fine-tuning: the paper's 50 epochs
    (["--init", "RUN", "--crf", "crf", "--epochs", "3"], 3),     # unless told otherwise
    (["--init", "RUN"], 12),                                     # CNN from init: the preset's epochs
    (["--crf", "crf"], 12),                                      # CRF from scratch: the preset's epochs
])
def test_cli_train_epoch_default_for_crf_fine_tuning(dataset, tmp_path, monkeypatch, extra, epochs):
    import crisp.train
    from crisp.cli import main

    seen = {}

    def fake_train(config, dataset_dir, out_dir, **kwargs):
        seen["config"] = config
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "summary.json").write_text(json.dumps({"best_epoch": 0, "best_val_iou": 0.5,
                                                                 "best_val_f1": 0.5}))
        return Path(out_dir)

    monkeypatch.setattr(crisp.train, "train", fake_train)
    argv = ["train", str(dataset), "-o", str(tmp_path / "run"), "--preset", "cpu",
            *[str(tmp_path) if a == "RUN" else a for a in extra]]
    assert main(argv) == 0
    assert seen["config"].epochs == epochs
    assert seen["config"].augment_photometric is False
    assert main(argv[:2] + ["-o", str(tmp_path / "run2"), "--preset", "cpu", "--photometric"]) == 0
    assert seen["config"].augment_photometric is True


@pytest.mark.parametrize(("setting", "on_gpu", "expected"), [
    (None, False, True), (None, True, False), (True, False, True), (True, True, "warn"),
    (False, False, False), (False, True, False),
])
def test_trainer_determinism_table(setting, on_gpu, expected):
    from crisp.train import trainer_determinism

    assert trainer_determinism(setting, on_gpu) == expected
