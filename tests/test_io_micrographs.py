"""Micrograph I/O: every MRC mode and image format by round trip, every bad input, atomic writes."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image

from crisp.errors import CrispError
from crisp.io import micrographs as mio
from crisp.io.micrographs import (
    list_micrographs,
    read_header_pixel_size,
    read_micrograph,
    read_micrograph_shape,
    write_mrc,
)

RNG = np.random.default_rng(17)


def _mrc(path, data, voxel=0.0, stack=False):
    with warnings.catch_warnings():  # mrcfile warns about NaN/inf, which some tests write on purpose
        warnings.simplefilter("ignore")
        _mrc_new(path, data, voxel, stack)
    return path


def _mrc_new(path, data, voxel, stack):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if stack:
            mrc.set_image_stack()
        mrc.voxel_size = voxel


def _ramp(dtype, shape=(24, 32)):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return RNG.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return RNG.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("dtype, mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2),
                                          (np.uint16, 6), (np.float16, 12)])
def test_mrc_modes_round_trip(tmp_path, dtype, mode):
    data = _ramp(dtype)
    path = _mrc(tmp_path / "m.mrc", data, voxel=1.34)
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == mode
    mic = read_micrograph(path)
    assert mic.data.dtype == np.float32 and mic.shape == (24, 32)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == pytest.approx(1.34, rel=1e-6)
    assert mic.path == path


def test_mrc_single_section_volume_and_stack(tmp_path):
    data = _ramp(np.float32, (1, 10, 12))
    for name, stack in (("vol.mrc", False), ("stk.mrcs", True)):
        mic = read_micrograph(_mrc(tmp_path / name, data, 2.0, stack=stack))
        np.testing.assert_array_equal(mic.data, data[0])


def test_pixel_size_unset_override_and_header_only(tmp_path):
    path = _mrc(tmp_path / "m.mrc", _ramp(np.float32))
    assert read_micrograph(path).pixel_size is None
    assert read_header_pixel_size(path) is None
    assert read_micrograph(path, pixel_size=0.885).pixel_size == 0.885
    path2 = _mrc(tmp_path / "p.mrc", _ramp(np.float32), voxel=3.5)
    assert read_header_pixel_size(path2) == pytest.approx(3.5)
    assert read_micrograph(path2, pixel_size=1.0).pixel_size == 1.0  # the user's value wins
    assert read_micrograph_shape(path2) == (24, 32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip(tmp_path, dtype):
    data = _ramp(dtype, (20, 30))
    tifffile.imwrite(tmp_path / "a.tif", data)
    mic = read_micrograph(tmp_path / "a.tif", pixel_size=1.1)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == 1.1
    assert read_micrograph(tmp_path / "a.tif").pixel_size is None
    assert read_micrograph_shape(tmp_path / "a.tif") == (20, 30)


def test_rgb_renderings_are_averaged(tmp_path):
    rgb = _ramp(np.uint8, (16, 18, 3))
    expected = rgb.astype(np.float32).mean(axis=-1)
    tifffile.imwrite(tmp_path / "c.tiff", rgb, photometric="rgb")
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    for name in ("c.tiff", "c.png"):
        np.testing.assert_allclose(read_micrograph(tmp_path / name).data, expected, rtol=1e-6)
    gray = np.repeat(_ramp(np.uint8, (16, 18))[..., None], 3, axis=-1)
    Image.fromarray(gray, "RGB").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "g.png").data, gray[..., 0].astype(np.float32))


def test_png_8_and_16_bit_and_jpg(tmp_path):
    data8 = _ramp(np.uint8, (21, 33))
    Image.fromarray(data8, "L").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "a.png").data, data8)
    data16 = _ramp(np.uint16, (21, 33))
    Image.fromarray(data16).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "b.png").data, data16)
    smooth = np.add.outer(np.arange(40), np.arange(50)).astype(np.uint8)  # JPG is lossy: smooth ramp
    Image.fromarray(smooth, "L").save(tmp_path / "c.jpg", quality=95)
    mic = read_micrograph(tmp_path / "c.jpg", pixel_size=1.77)
    assert mic.shape == (40, 50) and mic.data.dtype == np.float32 and mic.pixel_size == 1.77
    assert np.abs(mic.data - smooth).max() <= 3
    assert read_micrograph_shape(tmp_path / "c.jpg") == (40, 50)


def _assert_error(path, match, **kwargs):
    with pytest.raises(CrispError, match=match) as info:
        read_micrograph(path, **kwargs)
    assert str(path) in str(info.value)


def test_stacks_and_volumes_are_refused(tmp_path):
    _assert_error(_mrc(tmp_path / "s.mrcs", _ramp(np.float32, (3, 8, 8)), stack=True), "stack of 3")
    _assert_error(_mrc(tmp_path / "v.mrc", _ramp(np.float32, (4, 8, 8))), "volume of 4")
    tifffile.imwrite(tmp_path / "s.tif", _ramp(np.uint8, (5, 8, 8)))
    _assert_error(tmp_path / "s.tif", "stack of 5")
    with pytest.raises(CrispError, match="4 sections"):
        read_micrograph_shape(tmp_path / "v.mrc")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(tmp_path, bad):
    data = _ramp(np.float32)
    data[3, 4] = bad
    _assert_error(_mrc(tmp_path / "n.mrc", data), "1 NaN or infinite")
    tifffile.imwrite(tmp_path / "n.tif", data)
    _assert_error(tmp_path / "n.tif", "NaN or infinite")


def test_truncated_and_foreign_files(tmp_path):
    good = _mrc(tmp_path / "g.mrc", _ramp(np.float32, (64, 64)), 1.0).read_bytes()
    (tmp_path / "t.mrc").write_bytes(good[:-100])
    _assert_error(tmp_path / "t.mrc", "truncated")
    (tmp_path / "h.mrc").write_bytes(good[:500])  # shorter than the 1024-byte header
    _assert_error(tmp_path / "h.mrc", "not an MRC file")
    (tmp_path / "png.mrc").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4000))
    _assert_error(tmp_path / "png.mrc", "not an MRC file")
    Image.fromarray(_ramp(np.uint8, (64, 64)), "L").save(tmp_path / "ok.png")
    (tmp_path / "t.png").write_bytes((tmp_path / "ok.png").read_bytes()[:200])
    _assert_error(tmp_path / "t.png", "not a readable PNG")
    (tmp_path / "text.jpg").write_text("not an image")
    _assert_error(tmp_path / "text.jpg", "not a readable JPG")


def test_missing_unknown_and_bad_pixel_size(tmp_path):
    _assert_error(tmp_path / "absent.mrc", "file not found")
    (tmp_path / "a.dat").write_bytes(b"x")
    _assert_error(tmp_path / "a.dat", "unknown micrograph format '.dat'")
    good = _mrc(tmp_path / "g.mrc", _ramp(np.float32), 1.0)
    for bad in (0.0, -1.5, float("nan")):
        _assert_error(good, "pixel size must be a positive", pixel_size=bad)
    with pytest.raises(CrispError, match="file not found"):
        read_header_pixel_size(tmp_path / "absent.mrc")
    with pytest.raises(CrispError, match="file not found"):
        read_micrograph_shape(tmp_path / "absent.png")


@pytest.mark.parametrize("dtype, mode", [(np.float32, 2), (np.float16, 12), (np.int8, 0),
                                          (np.int16, 1), (np.uint16, 6), (np.float64, 2)])
def test_write_mrc_round_trip(tmp_path, dtype, mode):
    data = _ramp(np.int8 if dtype == np.int8 else dtype, (12, 14)).astype(dtype)
    path = write_mrc(tmp_path / "w.mrc", data, pixel_size=2.5)
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == mode
        assert float(mrc.voxel_size.x) == pytest.approx(2.5)
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == pytest.approx(2.5)
    assert [p.name for p in tmp_path.iterdir()] == ["w.mrc"]


def test_uint8_masks_are_stored_as_mode_0(tmp_path):
    mask = (RNG.random((30, 40)) > 0.5).astype(np.uint8)
    path = write_mrc(tmp_path / "mask.mrc", mask)
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == 0
    assert path.stat().st_size == 1024 + mask.size  # one byte per pixel
    np.testing.assert_array_equal(read_micrograph(path).data, mask)
    from_bool = write_mrc(tmp_path / "b.mrc", mask.astype(bool))
    np.testing.assert_array_equal(read_micrograph(from_bool).data, mask)
    np.testing.assert_array_equal(read_micrograph(write_mrc(tmp_path / "d.mrc", mask.astype(np.float32),
                                                            dtype=np.uint8)).data, mask)
    full = np.arange(256, dtype=np.uint8).reshape(16, 16)  # values above 127 need mode 6
    path = write_mrc(tmp_path / "full.mrc", full)
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == 6
    np.testing.assert_array_equal(read_micrograph(path).data, full)


def test_integer_labels_and_stacks(tmp_path):
    labels = np.arange(12 * 14, dtype=np.int64).reshape(12, 14)
    np.testing.assert_array_equal(read_micrograph(write_mrc(tmp_path / "l.mrc", labels)).data, labels)
    big = labels * 1000  # beyond int16/uint16: float32, still exact
    np.testing.assert_array_equal(read_micrograph(write_mrc(tmp_path / "big.mrc", big)).data, big)
    stack = _ramp(np.float32, (3, 8, 9))
    path = write_mrc(tmp_path / "s.mrcs", stack, pixel_size=1.0)
    with mrcfile.open(path) as mrc:
        assert mrc.is_image_stack()
        np.testing.assert_array_equal(mrc.data, stack)


def test_failed_writes_leave_nothing(tmp_path, monkeypatch):
    for bad in (np.zeros(5), np.zeros((2, 2, 2, 2)), np.zeros((4, 4), np.complex64),
                np.full((4, 4), 2**40, np.int64)):
        with pytest.raises(CrispError, match="w.mrc"):
            write_mrc(tmp_path / "w.mrc", bad)
    with pytest.raises(CrispError, match="pixel size"):
        write_mrc(tmp_path / "w.mrc", np.zeros((4, 4)), pixel_size=-1)
    assert list(tmp_path.iterdir()) == []

    def broken_set_data(self, data):
        raise OSError("disk full")

    monkeypatch.setattr(mrcfile.mrcfile.MrcFile, "set_data", broken_set_data)
    with pytest.raises(OSError, match="disk full"):
        write_mrc(tmp_path / "w.mrc", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_overwrites_atomically(tmp_path):
    write_mrc(tmp_path / "w.mrc", np.zeros((4, 4), np.float32))
    write_mrc(tmp_path / "w.mrc", np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(read_micrograph(tmp_path / "w.mrc").data, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["w.mrc"]


def test_list_micrographs(tmp_path):
    for name in ("b.mrc", "a.tif", "c.JPG", "notes.txt", ".a.part.mrc"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"")
    expected = [tmp_path / n for n in ("a.tif", "b.mrc", "c.JPG")]
    assert list_micrographs(tmp_path) == expected
    assert list_micrographs(str(tmp_path)) == expected
    assert list_micrographs(str(tmp_path / "*.mrc")) == [tmp_path / "b.mrc"]
    assert list_micrographs([tmp_path / "sub", tmp_path / "b.mrc", tmp_path / "b.mrc"]) == [
        tmp_path / "b.mrc", tmp_path / "sub" / "d.png"]
    with pytest.raises(CrispError, match="no micrographs found"):
        list_micrographs(tmp_path / "sub" / "*.mrc")
    with pytest.raises(CrispError, match="no such file or folder"):
        list_micrographs(tmp_path / "absent")
    with pytest.raises(CrispError, match="unknown micrograph format"):
        list_micrographs([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrispError, match="empty: no micrographs found"):
        list_micrographs(tmp_path / "empty")


def test_real_jpg_reads_as_4k(real_data_dir):
    path = sorted((real_data_dir / "images").glob("*.jpg"))[0]
    assert read_micrograph_shape(path) == (4096, 4096)
    mic = read_micrograph(path, pixel_size=1.77)
    assert mic.shape == (4096, 4096) and mic.data.dtype == np.float32
    assert 0 <= mic.data.min() < mic.data.max() <= 255


def test_module_constants_cover_brief():
    assert {".mrc", ".tif", ".tiff", ".png", ".jpg"} <= set(mio.MICROGRAPH_SUFFIXES)
