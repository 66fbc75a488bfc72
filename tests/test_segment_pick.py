"""crisp segment-and-pick: one pass per micrograph, picks on the network's grid scaled back."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import starfile
import torch
from scipy.spatial import cKDTree

from crisp.picking.base import SCORE, X, Y
from crisp.picking.tune import PickerConfig

torch.set_num_threads(1)
PICKER = PickerConfig(diameter_px=20, pixel_size=2.0, border_fraction=0.5)


def _blobs(shape, centres, sigma):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    out = np.zeros(shape)
    for cy, cx in centres:
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return np.clip(out, 0, 1).astype(np.float32)


@pytest.mark.parametrize("factor", [2, 4])
def test_picks_on_the_grid_match_picks_on_the_upsampled_map(factor):
    """Known answer: blobs drawn on the binned grid at known positions. Picking the grid map with the
    coordinates scaled back gives the picks of the upsampled full-size map (what crisp segment +
    crisp pick do) within one original pixel, and both find the true centres."""
    from crisp.picking.files import pick_map
    from crisp.predict import upsample_to

    rng = np.random.default_rng(factor)
    full_shape = (480, 640)
    grid_shape = (full_shape[0] // factor, full_shape[1] // factor)
    diameter = 48.0  # original pixels
    # a jittered lattice: 4 x 6 well separated blobs, away from the edges, at sub-pixel positions
    centres = [np.array([y, x]) + rng.uniform(-10, 10, 2) for y in range(60, 400, 110)
               for x in range(60, 600, 110)]
    grid = _blobs(grid_shape, [c / factor for c in centres], 0.3 * diameter / factor)
    picker = PickerConfig(diameter_px=diameter, border_fraction=0.5)
    on_grid = pick_map(grid, picker, diameter, scale=(factor, factor), shape=full_shape)
    on_full = pick_map(upsample_to(grid, full_shape), picker, diameter)
    assert len(on_grid) == len(on_full) == len(centres)
    distance, _ = cKDTree(on_full[[X, Y]].to_numpy()).query(on_grid[[X, Y]].to_numpy())
    assert distance.max() < 1.0
    truth = np.array(centres)[:, ::-1]  # (x, y)
    error, _ = cKDTree(truth).query(on_grid[[X, Y]].to_numpy())
    assert error.max() < 1.5
    np.testing.assert_allclose(np.sort(on_grid[SCORE]), np.sort(on_full[SCORE]), atol=0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    root = tmp_path_factory.mktemp("segpick")
    ds = make_dataset(root / "ds", n=4, size=200, n_train=2, n_val=1)
    run = train(tiny_config(epochs=4), ds, root / "run", progress=False)
    return root, run, ds / "micrographs"


def _picks(folder, stem):
    table = starfile.read(folder / f"{stem}_autopick.star")
    return table[[X, Y]].to_numpy()


def test_segment_and_pick_matches_segment_then_pick(trained, tmp_path):
    from crisp.cli import main
    from crisp.config import save_yaml
    from crisp.io.micrographs import read_micrograph

    root, run, mics = trained
    picker = tmp_path / "picker.yaml"
    save_yaml(picker, PICKER)
    old_maps, old_picks, new = tmp_path / "seg", tmp_path / "picks-old", tmp_path / "picks-new"
    assert main(["segment", str(run), str(mics), "-o", str(old_maps), "--no-progress"]) == 0
    assert main(["pick", str(old_maps), "-o", str(old_picks), "--picker", str(picker),
                 "--micrographs", str(mics)]) == 0
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(new), "--picker", str(picker),
                 "--threads", "1", "--no-progress"]) == 0
    # the layout of crisp pick: per-micrograph STAR, the index, picker.yaml; no map
    names = sorted(p.name for p in new.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in old_picks.iterdir() if not p.name.startswith("."))
    assert not (new / "maps").exists()
    index = starfile.read(new / "autopick.star")
    assert list(index["rlnMicrographName"]) == [str(mics / f"mic{i:02d}.mrc") for i in range(4)]
    # the same picks within a pixel (a few near the score floor or on saturated plateaus may differ)
    matched = total = 0
    for i in range(4):
        a, b = _picks(old_picks, f"mic{i:02d}"), _picks(new, f"mic{i:02d}")
        assert abs(len(a) - len(b)) <= 0.15 * len(a) + 1
        distance, _ = cKDTree(b).query(a)
        matched += int((distance <= 1.0).sum())
        total += len(a)
    assert total > 40 and matched >= 0.8 * total
    # --save-maps full writes crisp segment's map; grid the network's map (its pixel size scaled)
    full, grid = tmp_path / "full", tmp_path / "grid"
    assert main(["segment-and-pick", str(run), str(mics / "mic00.mrc"), "-o", str(full), "--picker",
                 str(picker), "--save-maps", "full", "--no-progress"]) == 0
    np.testing.assert_array_equal(read_micrograph(full / "maps" / "mic00.mrc").data,
                                  read_micrograph(old_maps / "mic00.mrc").data)
    np.testing.assert_array_equal(_picks(full, "mic00"), _picks(new, "mic00"))
    assert main(["segment-and-pick", str(run), str(mics / "mic00.mrc"), "-o", str(grid), "--picker",
                 str(picker), "--save-maps", "grid", "--no-progress"]) == 0
    grid_map = read_micrograph(grid / "maps" / "mic00.mrc")
    assert grid_map.shape == (100, 100) and grid_map.pixel_size == pytest.approx(4.0)
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(tmp_path / "x"), "--picker",
                 str(picker), "--save-maps", "half"]) == 2


def test_segment_and_pick_batch_behaviour(trained, tmp_path, capsys):
    from crisp.cli import main
    from crisp.config import save_yaml
    from crisp.inference.segment_pick import segment_and_pick_files

    root, run, mics = trained
    out = tmp_path / "picks"
    result = segment_and_pick_files(run, mics, out, picker=PICKER, progress=False, threads=1)
    assert sorted(result.per_micrograph) == [f"mic{i:02d}" for i in range(4)] and result.n_picks > 0
    # reading and binning the next micrograph in a background thread changes nothing but the time
    serial = segment_and_pick_files(run, mics, tmp_path / "serial", picker=PICKER, progress=False,
                                    prefetch=False)
    assert serial.per_micrograph == result.per_micrograph
    for i in range(4):
        np.testing.assert_array_equal(_picks(out, f"mic{i:02d}"), _picks(tmp_path / "serial", f"mic{i:02d}"))
    from crisp.batch import read_records

    prefetched = [r["result"]["seconds"].get("prefetched", False) for r in read_records(out).values()]
    assert prefetched == [False, True, True, True]
    stamp = (out / "mic00_autopick.star").stat().st_mtime_ns
    again = segment_and_pick_files(run, mics, out, picker=PICKER, progress=False)
    assert again.skipped_existing == 4 and (out / "mic00_autopick.star").stat().st_mtime_ns == stamp
    # another picker is refused naming what differs; no picker.yaml in the run and none given
    other = tmp_path / "other.yaml"
    save_yaml(other, PICKER.model_copy(update={"diameter_px": 30.0}))
    capsys.readouterr()
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(out), "--picker", str(other)]) == 2
    assert "diameter_px" in capsys.readouterr().err
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(tmp_path / "none")]) == 2
    assert "picker.yaml" in capsys.readouterr().err
    # a rerun with the other tiling is other settings too (whole-image and tiled maps differ)
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(out), "--picker", str(other),
                 "--max-tile-px", "64", "--overwrite", "--no-progress"]) == 0


def test_item_function_pickles_without_its_network(trained):
    """Worker processes get the item function pickled: the network is not in it, and is loaded once
    at the first item of each process."""
    from crisp.inference.segment_pick import SegmentPicker

    _root, run, mics = trained
    fn = SegmentPicker(run, PICKER, names={}, formats={"star"}, threshold=None, box_size_px=None,
                       save_maps=None, pixel_size=None, overlap=None, tta=None, threads=1)
    models = fn.models()
    assert fn.models() is models  # loaded once
    copy = pickle.loads(pickle.dumps(fn))
    assert copy._models is None and copy._loaded == {}
    assert len(pickle.dumps(fn)) < 10_000  # no weights inside
