"""Particle extraction: centring, edge skipping, normalisation, files that RELION reads."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc
from crisp.io.stacks import background_mask, extract_particles, normalise_stack

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
BOX = 32
SHAPE = (200, 300)  # rows, columns


def blob_micrograph(centres, shape=SHAPE, sigma=2.5):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for x, y in centres:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img


INSIDE = [(40.0, 30.0), (150.3, 100.0), (260.0, 170.4), (100.7, 60.6)]  # fractions below and above 0.5
# boxes of 32 px that leave the 300 x 200 micrograph: near the left, top, right and bottom edges
OUTSIDE = [(10.0, 100.0), (150.0, 12.0), (290.0, 100.0), (200.0, 190.0)]


@pytest.fixture
def micrograph_dir(tmp_path):
    folder = tmp_path / "mics"
    write_mrc(folder / "m1.mrc", blob_micrograph(INSIDE + OUTSIDE), pixel_size=1.5)
    write_mrc(folder / "m2.mrc", blob_micrograph([(150.0, 100.0)]), pixel_size=1.5)
    return folder


def picks_table():
    xy = INSIDE + OUTSIDE
    df = pd.DataFrame({M: "m1.mrc", X: [p[0] for p in xy], Y: [p[1] for p in xy],
                       S: np.linspace(0.9, 0.2, len(xy)), "rlnDefocusU": 15000.0,
                       "rlnDefocusV": 14000.0, "rlnDefocusAngle": 30.0})
    other = pd.DataFrame({M: ["m2.mrc"], X: [150.0], Y: [100.0], S: [0.5], "rlnDefocusU": [20000.0],
                          "rlnDefocusV": [19000.0], "rlnDefocusAngle": [10.0]})
    return pd.concat([df, other], ignore_index=True)


def centroid(image):
    w = np.clip(image - np.median(image), 0, None)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()


def test_images_centred_on_picks_and_edges_skipped(micrograph_dir, tmp_path):
    out = tmp_path / "particles"
    result = extract_particles(micrograph_dir, picks_table(), out, BOX, invert=False, progress=False)
    assert result.n_outside == len(OUTSIDE)
    assert result.n_particles == len(INSIDE) + 1
    assert result.per_micrograph == {"m1": len(INSIDE), "m2": 1}
    with mrcfile.open(out / "Particles" / "m1.mrcs") as mrc:
        stack = np.asarray(mrc.data)
        assert mrc.voxel_size.x == pytest.approx(1.5)
        assert mrc.is_image_stack()
    assert stack.shape == (len(INSIDE), BOX, BOX)
    for k, (x, y) in enumerate(INSIDE):
        cx, cy = centroid(stack[k])
        # the pick is at pixel (BOX//2, BOX//2) up to the truncation of the pick to a pixel (RELION's)
        assert cx == pytest.approx(BOX // 2 + x - np.trunc(x), abs=0.05)
        assert cy == pytest.approx(BOX // 2 + y - np.trunc(y), abs=0.05)
        assert 0 <= cx - BOX // 2 < 1.05 and 0 <= cy - BOX // 2 < 1.05
    # binned by 2 (Fourier crop): pixel k of the box becomes pixel k / 2, so the centre stays centred
    extract_particles(micrograph_dir, picks_table(), tmp_path / "binned", BOX, bin_factor=2, invert=False,
                      progress=False)
    binned = mrcfile.read(tmp_path / "binned" / "Particles" / "m1.mrcs")
    assert binned.shape == (len(INSIDE), BOX // 2, BOX // 2)
    for k, (x, y) in enumerate(INSIDE):
        cx, cy = centroid(binned[k])
        assert cx == pytest.approx((BOX // 2 + x - np.trunc(x)) / 2, abs=0.1)
        assert cy == pytest.approx((BOX // 2 + y - np.trunc(y)) / 2, abs=0.1)


def test_star_file_reads_back(micrograph_dir, tmp_path):
    out = tmp_path / "particles"
    extract_particles(micrograph_dir, picks_table(), out, BOX, bin_factor=2, voltage=200, cs=2.0,
                      amplitude_contrast=0.07, progress=False)
    star = starfile.read(out / "particles.star", always_dict=True)
    assert list(star) == ["optics", "particles"]
    optics, particles = star["optics"], star["particles"]
    row = optics.iloc[0]
    assert row["rlnOpticsGroup"] == 1 and row["rlnImageDimensionality"] == 2
    assert row["rlnImageSize"] == BOX // 2
    assert row["rlnImagePixelSize"] == pytest.approx(3.0)
    assert row["rlnMicrographOriginalPixelSize"] == pytest.approx(1.5)
    assert (row["rlnVoltage"], row["rlnSphericalAberration"], row["rlnAmplitudeContrast"]) == (200, 2.0, 0.07)
    assert particles["rlnImageName"].tolist()[:2] == ["000001@Particles/m1.mrcs", "000002@Particles/m1.mrcs"]
    assert particles["rlnImageName"].iloc[-1] == "000001@Particles/m2.mrcs"
    assert particles[X].tolist()[:4] == [p[0] for p in INSIDE]
    assert set(particles["rlnDefocusU"]) == {15000.0, 20000.0}
    assert (particles["rlnOpticsGroup"] == 1).all()
    assert particles[M].iloc[0].endswith("m1.mrc")
    # every image name resolves, relative to the star file's folder, to an image of the right stack
    for name in particles["rlnImageName"]:
        index, stack = name.split("@")
        with mrcfile.open(out / stack, header_only=True) as mrc:
            assert 1 <= int(index) <= mrc.header.nz
            assert mrc.header.nx == BOX // 2
            assert mrc.voxel_size.x == pytest.approx(3.0)


def test_normalisation_and_inversion(micrograph_dir, tmp_path):
    rng = np.random.default_rng(0)
    noisy = blob_micrograph(INSIDE) * 10 + rng.normal(5.0, 3.0, SHAPE).astype(np.float32)
    write_mrc(micrograph_dir / "m1.mrc", noisy, pixel_size=1.5)
    picks = picks_table()
    picks = picks[picks[M] == "m1.mrc"]
    plain = tmp_path / "plain"
    inverted = tmp_path / "inverted"
    extract_particles(micrograph_dir, picks, plain, BOX, invert=False, progress=False)
    extract_particles(micrograph_dir, picks, inverted, BOX, progress=False)  # inverted by default
    stack = mrcfile.read(plain / "Particles" / "m1.mrcs")
    bg = stack[:, background_mask(BOX, 0.75 * BOX / 2)]
    assert np.allclose(bg.mean(axis=1), 0, atol=1e-5)
    assert np.allclose(bg.std(axis=1), 1, atol=1e-5)
    assert stack[:, BOX // 2, BOX // 2].min() > 2  # the blob stands out after normalisation
    assert np.allclose(mrcfile.read(inverted / "Particles" / "m1.mrcs"), -stack, atol=1e-6)


def test_normalise_stack_brute_force():
    rng = np.random.default_rng(1)
    stack = rng.normal(3, 2, (2, 16, 16)).astype(np.float32)
    out = normalise_stack(stack, bg_radius_px=5)
    for k in range(2):
        mask = np.array([[(c - 8) ** 2 + (r - 8) ** 2 > 25 for c in range(16)] for r in range(16)])
        bg = stack[k][mask]
        assert np.allclose(out[k], (stack[k] - bg.mean()) / bg.std(), atol=1e-5)


def test_threshold_resume_and_errors(micrograph_dir, tmp_path):
    out = tmp_path / "particles"
    result = extract_particles(micrograph_dir, picks_table(), out, BOX, threshold=0.55, progress=False)
    # scores 0.9 ... 0.2 over the 8 picks of m1 (step 0.1) and 0.5 for m2: five are below 0.55
    assert result.n_below_threshold == 5
    assert result.n_particles == 4  # the first four, all inside
    again = extract_particles(micrograph_dir, picks_table(), out, BOX, threshold=0.55, progress=False)
    assert again.skipped_existing == 1 and again.n_particles == 4
    with pytest.raises(CrispError, match="even"):
        extract_particles(micrograph_dir, picks_table(), out, 33, progress=False)
    with pytest.raises(CrispError, match="matches a micrograph"):
        extract_particles(micrograph_dir, picks_table().assign(**{M: "zz.mrc"}), out, BOX, progress=False)
    write_mrc(micrograph_dir / "m3.mrc", np.zeros((64, 64), np.float32))
    lone = pd.DataFrame({M: ["m3.mrc"], X: [32.0], Y: [32.0]})
    with pytest.raises(CrispError, match="pixel size"):
        extract_particles(micrograph_dir, lone, tmp_path / "p3", BOX, progress=False)


def test_real_particles_centred(real_data_dir, tmp_path):
    # expert picks on a real micrograph: the mean extracted particle is centred in its box, and
    # moving the picks along x (columns) moves it along x only (coordinate convention on real data)
    from crisp.io.coordinates import read_coordinates

    name = "Falcon_2012_06_12-14_33_35_0"
    micrograph = real_data_dir / "images" / f"{name}.jpg"
    truth = read_coordinates(real_data_dir / "coordinates" / f"{name}.star")
    shifted = truth.assign(rlnCoordinateX=truth[X] + 12)
    yy, xx = np.mgrid[:40, :40]
    central = (xx - 20) ** 2 + (yy - 20) ** 2 < 15**2
    centres = []
    for label, picks in (("a", truth), ("b", shifted)):
        result = extract_particles([micrograph], picks, tmp_path / label, 160, bin_factor=4, pixel_size=1.77,
                                   progress=False)
        assert result.n_particles + result.n_outside == len(picks)
        mean = mrcfile.read(tmp_path / label / "Particles" / f"{name}.mrcs").mean(axis=0)
        weight = np.abs(mean - np.median(mean)) * central
        centres.append(((weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()))
    (cx, cy), (sx, sy) = centres
    assert abs(cx - 20) < 1.0 and abs(cy - 20) < 1.0  # binned pixels (4 px of the micrograph)
    assert sx < cx - 1.5 and abs(sy - cy) < 0.5  # picks 12 px (3 binned) to the right: particle moves left
