"""The simulated training corpus of the general model (crisp.simulate.corpus, ``crisp simulate-corpus``)."""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from crisp.errors import CrispError
from crisp.simulate import corpus as C
from crisp.simulate import nuisances as N

SIZE = 96


def _config(**kw) -> C.CorpusConfig:
    base = dict(count=2, seed=11, size=SIZE, coverage=(0.05, 0.12), structures=("4ake", "3iey"))
    base.update(kw)
    return C.make_corpus_config(**base)


def _files(root: Path) -> dict[str, bytes]:
    """Contents of the micrographs, masks (data and pixel size) and coordinates (the table; the files
    carry a creation time)."""
    from crisp.io.coordinates import read_coordinates

    out = {}
    for sub in ("micrographs", "masks"):
        for p in sorted((root / sub).glob("*.mrc")):
            with mrcfile.open(p) as m:
                out[f"{sub}/{p.name}"] = m.data.tobytes() + np.float32(m.voxel_size.x).tobytes()
    for p in sorted((root / "coordinates").glob("*.star")):
        out[f"coordinates/{p.name}"] = read_coordinates(p).to_csv().encode()
    return out


def test_same_seed_gives_identical_files_and_index_is_independent_of_count(tmp_path):
    cfg = _config(phantom_fraction=0.5)
    C.simulate_corpus(tmp_path / "a", cfg, progress=False, preview=False)
    C.simulate_corpus(tmp_path / "b", cfg, progress=False, preview=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 6 and a == b
    C.simulate_corpus(tmp_path / "c", _config(phantom_fraction=0.5, count=3), progress=False, preview=False)
    c = _files(tmp_path / "c")
    assert len(c) == 9 and all(c[k] == v for k, v in a.items())
    other = C.simulate_corpus_micrograph(_config(phantom_fraction=0.5, seed=12), 0)
    assert not np.array_equal(other.image, C.simulate_corpus_micrograph(cfg, 0).image)


def test_folder_opens_as_a_dataset_with_labels_tables_and_pixel_size(tmp_path):
    from crisp.dataset import DatasetFolder
    from crisp.io.coordinates import read_coordinates

    out = tmp_path / "corpus"
    names = C.simulate_corpus(out, _config(count=3, phantom_fraction=0.5), progress=False, preview=True)
    folder = DatasetFolder.open(out)
    assert folder.names() == names == [f"corpus_{i:06d}" for i in range(3)]
    import pandas as pd

    table = pd.read_csv(out / C.TABLE_FILE)
    assert list(table["name"]) == names
    for _, row in table.iterrows():
        assert folder.mask(row["name"]).is_file() and folder.coordinates(row["name"]).is_file()
        # p = d_A / (28 j): the particle is 28 j pixels across on the simulated grid
        assert row["pixel_size_A"] == pytest.approx(row["d_A"] / (C.GENERAL_DIAMETER_PX * row["jitter"]),
                                                    rel=1e-9)
        assert 0.8 <= row["jitter"] <= 1.25
        with mrcfile.open(folder.micrograph(row["name"])) as m:
            assert float(m.voxel_size.x) == pytest.approx(row["pixel_size_A"], rel=1e-6)
            assert m.data.shape == (SIZE, SIZE) and m.data.dtype == np.float32
        assert len(read_coordinates(folder.coordinates(row["name"]))) == row["n_particles"] > 0
        assert row["snr_grid"] == pytest.approx(
            row["snr_detector"] * (row["pixel_size_A"] / row["detector_pixel_A"]) ** 2, rel=1e-9)
    assert (out / C.PREVIEW_FILE).stat().st_size > 0
    meta = __import__("yaml").safe_load((out / C.CORPUS_FILE).read_text())
    assert {r["name"] for r in meta["structures"] if r["kind"] == "structure"} == {"4ake", "3iey"}
    assert all(r["licence"] for r in meta["structures"])


def test_phantom_is_built_at_the_fixed_scale():
    sim = C.simulate_corpus_micrograph(_config(phantom_fraction=1.0, structures=()), 0)
    r = sim.record
    assert r["kind"] == "phantom" and 60 <= r["d_A"] <= 400
    target = C.GENERAL_DIAMETER_PX * r["jitter"]
    assert r["measured_diameter_px"] == pytest.approx(target, rel=0.12)
    assert r["pixel_size_A"] == pytest.approx(r["d_A"] / target)


@pytest.mark.parametrize("label", ["disc", "footprint"])
def test_truth_centres_in_mask_and_ice_crystals_are_background(label):
    cfg = _config(size=160, p_ice_crystal=1.0, p_aggregate=1.0, p_carbon=1.0, coverage=(0.2, 0.3),
                  label=label)
    for index in range(3):
        sim = C.simulate_corpus_micrograph(cfg, index)
        assert sim.record["ice_crystal"] and sim.excluded.any()
        x = sim.truth["rlnCoordinateX"].to_numpy().astype(int)
        y = sim.truth["rlnCoordinateY"].to_numpy().astype(int)
        assert len(x) > 0
        assert (sim.mask[y, x] == 1).all()
        assert not sim.excluded[y, x].any()
        assert (sim.mask[sim.excluded] == 0).all()
        if label == "disc":  # discs of a quarter diameter: area n * pi r^2 (less overlaps and clipping)
            r = C.DISC_RADIUS_FRACTION * sim.record["diameter_px"]
            assert sim.mask.sum() <= len(x) * math.pi * (r + 1) ** 2


def test_snr_on_the_grid_measured_from_signal_and_noise():
    cfg = _config(size=256, coverage=(0.2, 0.2), p_ice_crystal=0, p_aggregate=0, p_carbon=0)
    for index in range(2):
        sim = C.simulate_corpus_micrograph(cfg, index)
        r = sim.record
        n = len(sim.truth)
        s = sim.signal.astype(np.float64)
        power = ((s - s.mean()) ** 2).sum() / (n * math.pi * (r["diameter_px"] / 2) ** 2)
        assert power / sim.noise.var(dtype=np.float64) == pytest.approx(r["snr_grid"], rel=0.05)
        assert s.var() / sim.noise.var() == pytest.approx(r["snr_micrograph"], rel=0.05)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_power_law_noise_spectrum_slope(alpha):
    image = N.power_law_noise(np.random.default_rng(0), (512, 512), alpha)
    assert image.std() == pytest.approx(1.0, rel=1e-4)
    power = np.abs(np.fft.fft2(image)) ** 2
    fy = np.fft.fftfreq(512)[:, None]
    fx = np.fft.fftfreq(512)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    bins = np.geomspace(4 / 512, 0.45, 20)
    idx = np.digitize(f.ravel(), bins)
    centres, means = [], []
    for k in range(1, len(bins)):
        sel = idx == k
        centres.append(f.ravel()[sel].mean())
        means.append(power.ravel()[sel].mean())
    slope = np.polyfit(np.log(centres), np.log(means), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.08)


def test_coloured_noise_has_the_requested_std():
    noise, params = N.coloured_noise(np.random.default_rng(1), (256, 256), 2.5)
    assert noise.std() == pytest.approx(2.5, rel=0.03)
    assert 0.5 <= params["noise_alpha"] <= 1.5 and 0 <= params["noise_coloured_weight"] <= 1


def test_bad_settings_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(CrispError, match="unknown structure 'nope'"):
        C.simulate_corpus(out, _config(structures=("nope",)))
    with pytest.raises(CrispError, match="structure list is empty"):
        C.simulate_corpus(out, _config(structures=(), phantom_fraction=0.5))
    with pytest.raises(CrispError, match="snr-detector"):
        C.simulate_corpus(out, _config(snr_detector=(0.05, 0.003)))
    with pytest.raises(CrispError, match="label"):
        C.simulate_corpus(out, _config(label="circle"))
    with pytest.raises(CrispError, match="phantom-fraction"):
        C.simulate_corpus(out, _config(phantom_fraction=1.5))
    assert not out.exists()


@pytest.mark.parametrize("argv, name", [
    (["--structures", "4ake,nope"], "unknown structure 'nope'"),
    (["--exclude-structures", "nope"], "unknown structure 'nope'"),
    (["--structures", "4ake", "--exclude-structures", "4ake"], "structure list is empty"),
    (["--snr-detector", "0.05,0.003"], "--snr-detector"),
    (["--snr-detector", "abc"], "--snr-detector"),
    (["--count", "0"], "--count"),
    (["--label", "circle"], "--label"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, name):
    from crisp.cli import main

    out = tmp_path / "c"
    status = main(["simulate-corpus", "-o", str(out), "--count", "2", "--size", "96", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error:") and name in err[0]
    assert not out.exists()


def test_cli_makes_a_corpus(tmp_path, capsys):
    from crisp.cli import main

    out = tmp_path / "c"
    status = main(["simulate-corpus", "-o", str(out), "--count", "2", "--size", "96", "--seed", "4",
                   "--structures", "4ake", "--phantom-fraction", "0", "--snr-detector", "0.01",
                   "--no-preview", "--quiet"])
    assert status == 0, capsys.readouterr()
    import pandas as pd

    table = pd.read_csv(out / C.TABLE_FILE)
    assert set(table["structure"]) == {"4ake"}
    assert np.allclose(table["snr_detector"], 0.01)
    # a rerun skips what is done; other settings are refused
    assert main(["simulate-corpus", "-o", str(out), "--count", "2", "--size", "96", "--seed", "5",
                 "--structures", "4ake", "--phantom-fraction", "0", "--quiet"]) == 2
