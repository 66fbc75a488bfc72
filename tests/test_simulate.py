"""Synthetic micrographs: labels, SNR, CTF, determinism, resumability and bad inputs."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.dataset import DatasetFolder
from crisp.errors import CrispError
from crisp.simulate import (
    SIMULATION_FILE,
    load_reference,
    make_config,
    measure_diameter_px,
    simulate_dataset,
    simulate_micrograph,
)

SMALL = {"width_px": 256, "height_px": 256, "particles": (6, 6), "count": 2}


@pytest.fixture(scope="module")
def config():
    return make_config("small", **SMALL)


@pytest.fixture(scope="module")
def reference(config):
    return load_reference(config)


@pytest.fixture(scope="module")
def sim(reference, config):
    return simulate_micrograph(reference, config, 0)


def test_bundled_map_gives_a_sensible_particle(reference):
    assert reference.volume.shape == (64, 64, 64)  # 3.54 Å voxels, no resampling at 3.54 Å/px
    assert 40 < reference.diameter_px < 60  # 4JSV is ~180-190 Å across


def test_every_true_centre_lies_inside_the_mask_and_its_own_instance(sim):
    x = sim.truth["rlnCoordinateX"].to_numpy().astype(int)
    y = sim.truth["rlnCoordinateY"].to_numpy().astype(int)
    assert len(x) == 6
    assert sim.mask[y, x].all()
    assert np.array_equal(sim.instances[y, x], np.arange(1, 7))
    assert set(np.unique(sim.instances)) == set(range(7))
    assert np.array_equal(sim.mask > 0, sim.mask.astype(bool))
    assert ((sim.instances > 0) <= (sim.mask > 0)).all()
    assert 0.02 < sim.mask.mean() < 0.5


def test_non_square_micrograph_keeps_x_as_column(reference, config):
    cfg = config.model_copy(update={"width_px": 400, "height_px": 160, "particles": (5, 5)})
    s = simulate_micrograph(reference, cfg, 2)
    assert s.noisy.shape == s.mask.shape == s.instances.shape == (160, 400)
    x = s.truth["rlnCoordinateX"].to_numpy().astype(int)
    y = s.truth["rlnCoordinateY"].to_numpy().astype(int)
    assert x.max() > 160  # some centre is beyond the height: x really is the column
    assert np.array_equal(s.instances[y, x], np.arange(1, 6))


def test_measured_snr_matches_request(reference, config):
    for snr in (0.005, 0.1):
        s = simulate_micrograph(reference, config.model_copy(update={"snr": snr}), 1)
        measured = s.clean_ctf.var(dtype=np.float64) / (s.noisy - s.clean_ctf).var(dtype=np.float64)
        assert measured == pytest.approx(snr, rel=0.05)


def _analytic_first_zero(defocus_A, voltage_kV, cs_mm, amplitude_contrast):
    """First zero of -(sqrt(1-A^2) sin chi + A cos chi), chi = pi l df s^2 - pi/2 Cs l^3 s^4 (1/Å)."""
    volts = voltage_kV * 1e3
    lam = 12.2643 / math.sqrt(volts * (1 + 0.978466e-6 * volts))  # Å
    cs = cs_mm * 1e7
    phi = math.asin(amplitude_contrast)  # sin(chi + phi) = 0 at chi = pi - phi
    a, b, c = math.pi / 2 * cs * lam**3, -math.pi * lam * defocus_A, math.pi - phi
    u = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return math.sqrt(u)


def test_ctf_first_zero_where_the_formula_puts_it(reference, config):
    defocus = 20000.0
    cfg = config.model_copy(update={"width_px": 512, "height_px": 512, "particles": (24, 24),
                                    "defocus_A": (defocus, defocus), "amplitude_contrast": 0.1})
    s = simulate_micrograph(reference, cfg, 3)
    assert s.truth["rlnDefocusU"].iloc[0] == defocus
    n = 512
    power = np.abs(np.fft.fftshift(np.fft.fft2(s.clean_ctf))) ** 2
    yy, xx = np.indices(power.shape) - n // 2
    ring = np.round(np.hypot(xx, yy)).astype(int)
    radial = np.bincount(ring.ravel(), power.ravel()) / np.bincount(ring.ravel())
    s0 = _analytic_first_zero(defocus, cfg.voltage_kV, cfg.cs_mm, cfg.amplitude_contrast)
    expected_bin = s0 * cfg.pixel_size * n  # cycles/Å -> ring index
    assert 40 < expected_bin < 150
    lo, hi = int(0.75 * expected_bin), int(1.25 * expected_bin) + 1  # the second zero is at ~1.41
    measured_bin = lo + int(np.argmin(radial[lo:hi]))
    assert abs(measured_bin - expected_bin) <= 2
    assert radial[measured_bin] < 0.05 * radial[lo:hi].max()


def test_astigmatism_angle_is_measured_from_x_towards_y():
    from crisp.simulate import ctf_2d

    n, pixel, du, dv, angle = 512, 1.77, 20000.0, 15000.0, 30.0
    ctf = ctf_2d((n, n), pixel, du, dv, angle, 300.0, 2.7, 0.1)
    assert ctf.shape == (n, n // 2 + 1) and ctf[0, 0] == pytest.approx(-0.1)

    def first_zero_along(theta_deg):
        r = np.arange(0, 0.45, 0.0005)  # cycles/pixel
        fx, fy = r * np.cos(np.deg2rad(theta_deg)), r * np.sin(np.deg2rad(theta_deg))
        values = ctf[np.round(fy * n).astype(int) % n, np.round(fx * n).astype(int)]
        return r[np.argmax(values > 0)] / pixel  # first sign change, in 1/Å

    step = 1.5 / (n * pixel)  # nearest-grid sampling: within ~1.5 frequency bins
    assert abs(first_zero_along(angle) - _analytic_first_zero(du, 300.0, 2.7, 0.1)) < step
    assert abs(first_zero_along(angle - 90) - _analytic_first_zero(dv, 300.0, 2.7, 0.1)) < step


def test_same_seed_same_arrays_and_other_seed_differs(reference, config, sim):
    again = simulate_micrograph(reference, config, 0)
    for field in ("noisy", "clean", "clean_ctf", "mask", "instances"):
        assert np.array_equal(getattr(again, field), getattr(sim, field))
    pd.testing.assert_frame_equal(again.truth, sim.truth)
    other = simulate_micrograph(reference, config.model_copy(update={"seed": 1}), 0)
    assert not np.array_equal(other.noisy, sim.noisy)


def test_dataset_arrays_are_identical_whatever_the_count(tmp_path, config):
    # file bytes differ only by the creation timestamps mrcfile and starfile put in their headers
    a = simulate_dataset(tmp_path / "a", config.model_copy(update={"count": 1}), progress=False)
    b = simulate_dataset(tmp_path / "b", config.model_copy(update={"count": 2}), progress=False)
    assert a == ["synth_0000"] and b == ["synth_0000", "synth_0001"]
    for sub in ("micrographs", "masks", "instances"):
        with mrcfile.open(tmp_path / "a" / sub / "synth_0000.mrc") as ma, \
                mrcfile.open(tmp_path / "b" / sub / "synth_0000.mrc") as mb:
            assert ma.data.tobytes() == mb.data.tobytes() and ma.data.any()
    pd.testing.assert_frame_equal(starfile.read(tmp_path / "a" / "coordinates" / "synth_0000.star"),
                                  starfile.read(tmp_path / "b" / "coordinates" / "synth_0000.star"))


def test_dataset_layout_headers_and_truth_columns(tmp_path, config):
    out = tmp_path / "d"
    simulate_dataset(out, config.model_copy(update={"save_clean": True, "count": 1}), progress=False)
    folder = DatasetFolder.open(out)
    assert folder.names() == ["synth_0000"]
    # MRC mode 0 is read back as int8 by mrcfile; the mask holds only 0 and 1
    for path, dtype in ((folder.micrograph("synth_0000"), np.float32), (folder.mask("synth_0000"), np.int8),
                        (folder.instances("synth_0000"), np.int16), (folder.clean("synth_0000"), np.float32)):
        with mrcfile.open(path) as mrc:
            assert mrc.data.dtype == dtype and mrc.data.shape == (256, 256)
            if path.parent.name == "masks":
                assert set(np.unique(mrc.data)) == {0, 1}
            assert float(mrc.voxel_size.x) == pytest.approx(3.54)
    truth = starfile.read(folder.coordinates("synth_0000"))
    for col in ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt",
                "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
                "rlnSphericalAberration", "rlnAmplitudeContrast"):
        assert col in truth.columns
    assert len(truth) == 6
    record = (out / SIMULATION_FILE).read_text()
    assert "seed: 0" in record and "snr: 0.02" in record


def test_rerun_resumes_and_refuses_other_settings(tmp_path, config):
    out = tmp_path / "r"
    simulate_dataset(out, config, progress=False)
    mic = out / "micrographs" / "synth_0001.mrc"
    with mrcfile.open(mic) as first:  # the header's label holds the creation time: compare the rest
        original, voxel = first.data.copy(), first.voxel_size.copy()
    keep = (out / "micrographs" / "synth_0000.mrc").stat().st_mtime_ns
    mic.unlink()
    simulate_dataset(out, config, progress=False)
    with mrcfile.open(mic) as again:
        np.testing.assert_array_equal(again.data, original)
        assert again.voxel_size == voxel
    assert (out / "micrographs" / "synth_0000.mrc").stat().st_mtime_ns == keep
    with pytest.raises(CrispError, match="other settings"):
        simulate_dataset(out, config.model_copy(update={"snr": 0.5}), progress=False)


def test_defocus_drawn_from_a_star_file(tmp_path, reference, config):
    star = tmp_path / "ctf.star"
    starfile.write(pd.DataFrame({"rlnDefocusU": [12000.0, 23000.0], "rlnDefocusV": [11800.0, 22500.0],
                                 "rlnDefocusAngle": [30.0, 45.0]}), star)
    cfg = config.model_copy(update={"defocus_file": str(star)})
    from crisp.simulate import read_defocus_table

    table = read_defocus_table(star, "rlnDefocusU")
    seen = {simulate_micrograph(reference, cfg, i, table).truth["rlnDefocusU"].iloc[0] for i in range(6)}
    assert seen <= {12000.0, 23000.0} and len(seen) == 2
    bad = tmp_path / "bad.star"
    starfile.write(pd.DataFrame({"rlnDefocusU": [12000.0, -5.0]}), bad)
    with pytest.raises(CrispError, match="negative"):
        read_defocus_table(bad, "rlnDefocusU")
    with pytest.raises(CrispError, match="no column"):
        read_defocus_table(star, "rlnCtfMaxResolution")


def test_phantom_source(config):
    cfg = config.model_copy(update={"phantom": "d2", "particle_diameter_A": 120.0})
    ref = load_reference(cfg)
    assert ref.volume.shape == (34, 34, 34)
    s = simulate_micrograph(ref, cfg, 0)
    x = s.truth["rlnCoordinateX"].to_numpy().astype(int)
    y = s.truth["rlnCoordinateY"].to_numpy().astype(int)
    assert s.mask[y, x].all()


def test_resampled_map_keeps_its_centre(tmp_path):
    cfg = make_config("small", pixel_size=1.77, width_px=512, height_px=512, particles=(4, 4))
    ref = load_reference(cfg)
    assert ref.volume.shape == (128, 128, 128)
    from scipy.ndimage import center_of_mass

    assert np.allclose(center_of_mass(np.clip(ref.volume, 0, None)), 64, atol=0.3)
    assert ref.diameter_px == pytest.approx(2 * 53.57, rel=0.05)  # twice the diameter at 3.54 Å/px
    assert measure_diameter_px(ref.volume) == ref.diameter_px


@pytest.mark.parametrize("overrides,message", [
    ({"defocus_A": (-5000.0, 10000.0)}, "defocus"),
    ({"defocus_A": (0.0, 0.0)}, "defocus"),
    ({"snr": 0.0}, "SNR"),
    ({"snr": -1.0}, "SNR"),
    ({"cs_mm": -2.7}, "spherical aberration"),
    ({"amplitude_contrast": 1.0}, "amplitude contrast"),
    ({"voltage_kV": 0.0}, "positive"),
    ({"particles": (5, 2)}, "particle range"),
    ({"threshold": "magic"}, "unknown threshold"),
    ({"phantom": "q7"}, "unknown phantom"),
])
def test_bad_values_are_crisp_errors(overrides, message):
    with pytest.raises(CrispError, match=message):
        make_config("small", **overrides)


def test_bad_preset():
    with pytest.raises(CrispError, match="unknown preset 'huge'"):
        make_config("huge")


def test_bad_maps_write_nothing(tmp_path, config):
    text = tmp_path / "map.mrc"
    text.write_text("not a map")
    image = tmp_path / "image.mrc"
    with mrcfile.new(image) as mrc:
        mrc.set_data(np.ones((8, 8), np.float32))
    for path, message in ((tmp_path / "missing.mrc", "not found"), (text, "not a readable MRC"),
                          (image, "cubic 3-D")):
        out = tmp_path / f"out_{path.stem}"
        with pytest.raises(CrispError, match=message):
            simulate_dataset(out, config.model_copy(update={"map": str(path)}), progress=False)
        assert not out.exists()


def test_too_many_particles_writes_nothing(tmp_path, config):
    out = tmp_path / "crowded"
    with pytest.raises(CrispError, match="do not fit"):
        simulate_dataset(out, config.model_copy(update={"particles": (200, 200)}), progress=False)
    assert not out.exists()
