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
