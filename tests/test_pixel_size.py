"""Micrographs of another pixel size than the training set's: segment resamples, pick rescales diameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from crisp.io.coordinates import read_coordinates
from crisp.io.micrographs import median_pixel_size, read_micrograph, write_mrc
from crisp.metrics.picking import radius_match_metrics
from crisp.picking.files import map_diameter_px, pick_files
from crisp.picking.tune import PickerConfig
from crisp.predict import input_binning, segment_files
from crisp.preprocess import fourier_resize
from crisp.train import make_config

torch.set_num_threads(1)


@pytest.mark.parametrize(("run_bin", "run_pixel", "pixel", "expected"), [
    (4, 1.77, 1.77, 4.0),                   # same pixel size: the run's factor
    (4, 1.77, 0.666, 4 * 1.77 / 0.666),     # raw 0.666 Å/px: bin 10.63 to reach 7.08 Å/px
    (4, 1.77, 1.78, 4.0),                   # within 1 %: the run's factor
    (2, 2.0, 8.0, 0.5),                     # coarser than the network's input: upsample 2x
    (4, None, 0.666, 4.0),                  # run without a recorded pixel size
    (4, 1.77, None, 4.0),                   # micrograph without one (JPG)
])
def test_input_binning_hand_cases(run_bin, run_pixel, pixel, expected):
    config = make_config("cpu", bin=run_bin, pixel_size=run_pixel)
    assert input_binning(config, pixel) == pytest.approx(expected, rel=1e-12)


class LaplacianOfGaussian(torch.nn.Module):
    """A scale-sensitive stand-in network: logits +-(LoG of the input at sigma 1.5 px)."""

    def __init__(self):
        super().__init__()
        r = np.arange(-6, 7)
        yy, xx = np.meshgrid(r, r, indexing="ij")
        s2 = 1.5 ** 2
        log = (yy ** 2 + xx ** 2 - 2 * s2) / s2 ** 2 * np.exp(-(yy ** 2 + xx ** 2) / (2 * s2))
        self.register_buffer("kernel", torch.tensor(log - log.mean(), dtype=torch.float32)[None, None])

    def forward(self, x):
        y = -4.0 * torch.nn.functional.conv2d(x, self.kernel, padding=6)
        return {"refined": torch.cat([-y, y], dim=1)}


def _blobs(size, radius, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    for cy, cx in rng.uniform(8, size - 8, (12, 2)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2)).astype(np.float32)
    return image + rng.normal(0, 0.05, image.shape).astype(np.float32)


def test_segment_resamples_to_the_training_pixel_size(tmp_path, monkeypatch):
    """The same specimen at 2 Å/px and at 1 Å/px (Fourier-upsampled) gives the same map on the
    common grid; without the pixel size the finer micrograph reaches the network at the wrong scale."""
    import crisp.predict

    config = make_config("cpu", bin=2, pixel_size=2.0, patch_px=64, val_overlap_px=16, normalize="zscore")
    monkeypatch.setattr(crisp.predict, "load_run", lambda run_dir, checkpoint="best.ckpt":
                        (config, LaplacianOfGaussian().eval()))
    coarse = _blobs(128, 3.0, seed=0)
    fine = fourier_resize(coarse, (256, 256))
    write_mrc(tmp_path / "in" / "coarse.mrc", coarse, pixel_size=2.0)
    write_mrc(tmp_path / "in" / "fine.mrc", fine, pixel_size=1.0)
    write_mrc(tmp_path / "in2" / "fine.mrc", fine)  # no pixel size: binned by the run's factor 2
    (c,) = segment_files("run", [tmp_path / "in" / "coarse.mrc"], tmp_path / "seg", progress=False)
    (f,) = segment_files("run", [tmp_path / "in" / "fine.mrc"], tmp_path / "seg", progress=False)
    with pytest.warns(UserWarning, match="no pixel size"):
        (u,) = segment_files("run", [tmp_path / "in2" / "fine.mrc"], tmp_path / "seg2", progress=False)
    map_c, map_f, map_u = (read_micrograph(p).data.astype(np.float32) for p in (c, f, u))
    assert map_f.shape == (256, 256) and read_micrograph(f).pixel_size == pytest.approx(1.0)
    assert map_c.std() > 0.1  # the stand-in network responds to the blobs
    matched = np.abs(map_f[::2, ::2] - map_c).mean()
    unmatched = np.abs(map_u[::2, ::2] - map_c).mean()
    assert matched < 0.01
    assert unmatched > 10 * matched


def test_training_records_the_pixel_size(tmp_path):
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    ds = make_dataset(tmp_path / "ds", n=3, size=128, n_train=2, n_val=1)  # written at 2.0 Å/px
    run = train(tiny_config(epochs=1), ds, tmp_path / "run", progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["pixel_size"] == pytest.approx(2.0)


def test_picker_diameter_follows_the_map_pixel_size(tmp_path):
    from test_picking_finders import DIAMETER, synthetic_map

    prob, centres = synthetic_map(seed=3, shape=(256, 320), n=12, n_pairs=1)
    fine = np.clip(fourier_resize(prob, (512, 640)), 0, 1)  # the same map at 1 Å/px
    write_mrc(tmp_path / "maps" / "fine.mrc", fine, pixel_size=1.0, dtype=np.float16)
    write_mrc(tmp_path / "bare" / "fine.mrc", fine, dtype=np.float16)
    picker = PickerConfig(finder="grid-nms", diameter_px=DIAMETER, pixel_size=2.0, threshold=0.5)
    assert map_diameter_px(picker, tmp_path / "maps" / "fine.mrc") == pytest.approx(2 * DIAMETER)
    assert map_diameter_px(picker, tmp_path / "bare" / "fine.mrc") == pytest.approx(DIAMETER)
    assert median_pixel_size([tmp_path / "maps" / "fine.mrc"]) == pytest.approx(1.0)
    assert median_pixel_size([tmp_path / "bare" / "fine.mrc"]) is None
    truth = pd.DataFrame({"rlnMicrographName": "fine", "rlnCoordinateX": 2 * centres[:, 0],
                          "rlnCoordinateY": 2 * centres[:, 1]})
    scores = {}
    for folder in ("maps", "bare"):
        pick_files(tmp_path / folder, tmp_path / f"picks-{folder}", picker, threshold=0.5, progress=False)
        picks = read_coordinates(tmp_path / f"picks-{folder}" / "fine_autopick.star", micrograph_name="fine")
        picks["rlnMicrographName"] = "fine"
        scores[folder] = radius_match_metrics(picks, truth, DIAMETER, threshold=0.5)
    assert scores["maps"]["F1"] >= 0.95
    assert scores["bare"]["precision"] < 0.8  # half the diameter: several picks per particle


def test_median_pixel_size_warns_when_the_headers_disagree(tmp_path):
    for name, size in (("a", 1.0), ("b", 2.0), ("c", 2.0)):
        write_mrc(tmp_path / f"{name}.mrc", np.zeros((4, 4), np.float32), pixel_size=size)
    with pytest.warns(UserWarning, match="pixel sizes differ"):
        assert median_pixel_size([tmp_path / f"{n}.mrc" for n in "abc"]) == pytest.approx(2.0)
    assert median_pixel_size([]) is None
