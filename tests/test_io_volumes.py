"""3-D volume reading (maps and masks)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from crisp.errors import CrispError
from crisp.io.volumes import read_volume


def _write(path, data, voxel=0.0):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = voxel
    return path


def test_read_volume_round_trip(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8)).astype(np.float32)
    vol, voxel = read_volume(_write(tmp_path / "m.mrc", data, 2.5))
    np.testing.assert_array_equal(vol, data)
    assert voxel == pytest.approx(2.5)
    assert read_volume(_write(tmp_path / "z.mrc", data))[1] is None


@pytest.mark.parametrize(("data", "message"), [
    (np.ones((4, 4, 5)), "expected a cubic 3-D mask"),
    (np.ones((4, 4)), "expected a cubic 3-D mask"),
    (-np.ones((4, 4, 4)), "mask has no positive density"),
    (np.full((4, 4, 4), np.nan), "mask contains NaN"),
])
def test_read_volume_bad_content(tmp_path, data, message):
    path = _write(tmp_path / "bad.mrc", data)
    with pytest.raises(CrispError, match=message) as err:
        read_volume(path, what="mask")
    assert str(path) in str(err.value)


def test_read_volume_bad_files(tmp_path):
    with pytest.raises(CrispError, match="map file not found"):
        read_volume(tmp_path / "missing.mrc", what="map")
    text = tmp_path / "text.mrc"
    text.write_text("not an MRC file at all" * 100)
    with pytest.raises(CrispError, match="not a readable MRC map"):
        read_volume(text, what="map")


def test_voxel_size_given_or_required(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8)).astype(np.float32)
    headerless, with_header = _write(tmp_path / "z.mrc", data), _write(tmp_path / "h.mrc", data, 2.5)
    assert read_volume(with_header, voxel_size=1.5)[1] == pytest.approx(1.5)  # the given size wins
    assert read_volume(headerless, voxel_size=1.5)[1] == pytest.approx(1.5)
    assert read_volume(with_header, voxel_size_option="--x")[1] == pytest.approx(2.5)
    with pytest.raises(CrispError, match=r"no voxel size; pass the map's pixel size \(--map-px\)") as err:
        read_volume(headerless, what="map", voxel_size_option="--map-px")
    assert str(headerless) in str(err.value)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CrispError, match="voxel size must be a positive number"):
            read_volume(with_header, voxel_size=bad)


def test_looks_like_mask_hand_cases():
    from crisp.io.volumes import looks_like_mask

    cube = np.zeros((10, 10, 10), np.float32)
    cube[2:8, 2:8, 2:8] = 1
    assert looks_like_mask(cube)
    soft = cube.copy()
    soft[1, 2:8, 2:8] = 0.5  # a soft edge: 36 of 252 voxels in between
    assert looks_like_mask(soft)
    density = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 10, 10)  # few voxels near the top
    assert not looks_like_mask(density)
    assert not looks_like_mask(cube * 2)  # maximum 2, not 1
    assert not looks_like_mask(cube - 0.5)  # negative values


def test_the_other_volume_readers_are_this_one(tmp_path):
    """The simulation's map reader and the reprojection labels' reader give this reader's answers
    and errors (they are thin calls of it)."""
    from crisp.labels.reproject import read_volume as read_label_volume
    from crisp.simulate.physics import read_map

    data = np.random.default_rng(1).uniform(0, 1, (8, 8, 8)).astype(np.float32)
    path = _write(tmp_path / "m.mrc", data, 2.0)
    vol, voxel = read_map(path)
    np.testing.assert_array_equal(vol, data)
    assert voxel == 2.0 and read_map(path, pixel_size=3.0)[1] == 3.0
    with pytest.raises(CrispError, match=r"pass the density map's pixel size \(--map-pixel-size\)"):
        read_map(_write(tmp_path / "z.mrc", data))
    label_volume = read_label_volume(path)
    np.testing.assert_array_equal(label_volume.data, data)
    assert label_volume.voxel_size == 2.0 and not label_volume.is_mask
    nan = _write(tmp_path / "nan.mrc", np.full((4, 4, 4), np.nan))
    for reader in (read_map, read_label_volume):
        with pytest.raises(CrispError, match="contains NaN or infinite values"):
            reader(nan)
