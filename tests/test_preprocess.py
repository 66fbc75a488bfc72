"""Preprocessing: Fourier binning, low-pass, GMM normalisation, the preprocess stage."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
import starfile

from crisp.errors import CrispError
from crisp.io.micrographs import Micrograph, write_mrc
from crisp.preprocess import (
    PreprocessConfig,
    bin_micrograph,
    binned_shape,
    binning_ratio,
    fit_gmm_background,
    fourier_bin,
    lowpass,
    normalize,
    preprocess_files,
    scale_coordinates,
)


def _mixture(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    fg = rng.random(n) < 0.15
    return np.where(fg, rng.normal(1.5, 0.5, n), rng.normal(0.2, 0.5, n))


def test_gmm_recovers_background_of_known_mixture():
    fit = fit_gmm_background(_mixture().reshape(400, 500))
    # 85 % N(0.2, 0.5^2) + 15 % N(1.5, 0.5^2): background mean within 5 % of the std, std within 3 %
    assert abs(fit.mean_bg - 0.2) < 0.05 * 0.5
    assert abs(fit.std - 0.5) < 0.03 * 0.5
    assert abs(fit.mean_fg - 1.5) < 0.1
    assert 0.8 < fit.weight_bg < 0.9


def test_gmm_background_is_the_heavier_component_whatever_the_sign():
    fit = fit_gmm_background(-_mixture(seed=1))
    assert abs(fit.mean_bg + 0.2) < 0.025 and fit.mean_fg < fit.mean_bg


def test_gmm_prior_holds_the_weight_on_a_single_gaussian():
    x = np.random.default_rng(2).normal(3.0, 2.0, 50_000)
    fit = fit_gmm_background(x, prior_alpha=9000, prior_beta=1000)
    assert abs(fit.weight_bg - 0.9) < 0.02


def test_normalize_gmm_standardises_background():
    img = _mixture(seed=3).reshape(400, 500) * 7.0 + 100.0  # background N(101.4, 3.5^2)
    out = normalize(img, "gmm")
    assert out.dtype == np.float32
    fit = fit_gmm_background(out)
    assert abs(fit.mean_bg) < 0.05 and abs(fit.std - 1) < 0.03


def test_normalize_zscore_none_and_unknown():
    img = np.random.default_rng(4).normal(5, 3, (64, 64))
    z = normalize(img, "zscore")
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    assert np.array_equal(normalize(img, "none"), img.astype(np.float32))
    with pytest.raises(CrispError, match="unknown normalisation"):
        normalize(img, "median")


def _blob(shape, x, y, sigma=5.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("factor", [2, 3, 1.5])
@pytest.mark.parametrize("x,y", [(100.3, 150.7), (37.0, 211.2), (251.5, 60.0)])
def test_binning_moves_blob_centre_to_x_over_b(factor, x, y):
    shape = (300, 301)
    img = _blob(shape, x, y)
    out = fourier_bin(img, factor)
    assert out.shape == binned_shape(shape, factor) == tuple(round(n / factor) for n in shape)
    cy, cx = scipy.ndimage.center_of_mass(np.clip(out, 0, None))
    bx, by = scale_coordinates(np.array([x]), np.array([y]), shape, out.shape)
    assert abs(cx - x / factor) < 0.5 and abs(cy - y / factor) < 0.5
    assert abs(cx - bx[0]) < 0.05 and abs(cy - by[0]) < 0.05  # exact convention x / actual ratio
    assert out.mean() == pytest.approx(img.mean(), rel=1e-4)


def test_binning_identity_and_errors():
    img = np.random.default_rng(5).normal(size=(33, 40)).astype(np.float32)
    assert np.allclose(fourier_bin(img, 1), img, atol=1e-5)
    with pytest.raises(CrispError):
        fourier_bin(img, 0.5)
    assert binning_ratio((4096, 4000), (1365, 1333)) == (4096 / 1365, 4000 / 1333)


def test_bin_micrograph_pixel_size_uses_actual_ratio():
    mic = Micrograph(np.zeros((100, 100), np.float32), 1.5)
    out = bin_micrograph(mic, 3)
    assert out.shape == (33, 33)
    assert out.pixel_size == pytest.approx(1.5 * 100 / 33)


def test_lowpass_halves_amplitude_at_the_resolution():
    n, pixel = 256, 2.0
    x = np.arange(n)
    wave = np.cos(2 * np.pi * 32 / n * x)[None, :] * np.ones((n, 1))  # 0.125 cycles/px = 1/16 Å
    out = lowpass(wave, resolution_A=16.0, pixel_size=pixel)
    assert np.allclose(out, 0.5 * wave, atol=1e-4)
    slow = np.cos(2 * np.pi * 2 / n * x)[None, :] * np.ones((n, 1))
    assert np.allclose(lowpass(slow, resolution_A=16.0, pixel_size=pixel), slow, atol=0.01)
    with pytest.raises(CrispError):
        lowpass(wave, resolution_A=16.0)


def test_preprocess_files_writes_binned_normalised_and_scaled_coordinates(tmp_path):
    rng = np.random.default_rng(6)
    src = tmp_path / "in"
    data = rng.normal(size=(120, 90)).astype(np.float32) * 4 + 10
    write_mrc(src / "a.mrc", data, pixel_size=1.0)
    coords = tmp_path / "coords"
    coords.mkdir()
    starfile.write(pd.DataFrame({"rlnCoordinateX": [30.0, 60.0], "rlnCoordinateY": [40.0, 90.0]}),
                   coords / "a.star")
    cfg = PreprocessConfig(bin=2, normalize="zscore", lowpass_A=8.0)
    out = preprocess_files([src], tmp_path / "out", cfg, coords_dir=coords, progress=False)
    with mrcfile.open(out[0]) as mrc:
        assert mrc.data.dtype == np.float32 and mrc.data.shape == (60, 45)
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)
        assert abs(float(mrc.data.mean())) < 1e-4
    scaled = starfile.read(tmp_path / "out" / "coordinates" / "a.star")
    assert np.allclose(scaled["rlnCoordinateX"], [15.0, 30.0])
    assert np.allclose(scaled["rlnCoordinateY"], [20.0, 45.0])
    stamp = out[0].stat().st_mtime_ns
    preprocess_files([src / "a.mrc"], tmp_path / "out", cfg, coords_dir=coords, progress=False)
    assert out[0].stat().st_mtime_ns == stamp  # done with the same settings: skipped
    with pytest.raises(CrispError, match="scale_coordinates: True -> False"):
        preprocess_files([src / "a.mrc"], tmp_path / "out", cfg, progress=False)  # other settings


def test_preprocess_missing_input_is_error(tmp_path):
    with pytest.raises(CrispError, match="no such file"):
        preprocess_files([tmp_path / "none.mrc"], tmp_path / "out", PreprocessConfig(), progress=False)
    assert not (tmp_path / "out").exists()
