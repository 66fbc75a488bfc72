"""Tests of crisp.labels: disc, threshold and reprojection masks, and the Euler convention."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from crisp.errors import CrispError
from crisp.labels import (
    Volume3D,
    disk_mask,
    project_volume,
    read_particles,
    relion_euler_matrix,
    reproject_mask,
    threshold_mask,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


# ---------------------------------------------------------------- disk

def test_disk_hand_case():
    mask = disk_mask((5, 6), [2.0], [1.0], 1.0)
    expected = np.zeros((5, 6), np.uint8)
    expected[1, 1:4] = 1
    expected[0, 2] = expected[2, 2] = 1
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.uint8


def test_disk_matches_brute_force_loop():
    rng = np.random.default_rng(3)
    shape = (37, 45)
    x = np.concatenate([rng.uniform(-3, 48, 12), [0.0, 44.0]])
    y = np.concatenate([rng.uniform(-3, 40, 12), [36.0, 0.0]])
    radius = 4.7
    expected = np.zeros(shape, np.uint8)
    for r in range(shape[0]):
        for c in range(shape[1]):
            for xc, yc in zip(x, y, strict=True):
                if (c - xc) ** 2 + (r - yc) ** 2 <= radius ** 2:
                    expected[r, c] = 1
    np.testing.assert_array_equal(disk_mask(shape, x, y, radius), expected)


def test_disk_rejects_bad_radius():
    with pytest.raises(CrispError, match="positive"):
        disk_mask((10, 10), [1], [1], 0)


# ---------------------------------------------------------------- threshold

def _ellipse(shape, xc, yc, a, b, angle):
    rows, cols = np.mgrid[:shape[0], :shape[1]].astype(float)
    u = (cols - xc) * np.cos(angle) + (rows - yc) * np.sin(angle)
    v = -(cols - xc) * np.sin(angle) + (rows - yc) * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _blob_micrograph(seed=0, dark=True, noise=0.25):
    """Ellipses of known shape (inside their discs of radius 20) on a flat background."""
    rng = np.random.default_rng(seed)
    shape = (200, 260)
    centres = [(50, 50), (130, 60), (200, 140), (60, 150), (150, 150)]
    truth = np.zeros(shape, bool)
    shapes = []
    for i, (xc, yc) in enumerate(centres):
        s = _ellipse(shape, xc, yc, 18, 13, 0.5 * i)
        shapes.append(s)
        truth |= s
    image = np.where(truth, -1.0 if dark else 1.0, 0.0) + rng.normal(0, noise, shape)
    x = np.array([c[0] for c in centres], float)
    y = np.array([c[1] for c in centres], float)
    return image.astype(np.float32), x, y, truth, shapes


@pytest.mark.parametrize(("method", "min_iou"), [("li", 0.8), ("otsu", 0.93), ("local", 0.9)])
def test_threshold_recovers_known_shapes(method, min_iou):
    image, x, y, truth, _ = _blob_micrograph()
    mask, stats = threshold_mask(image, x, y, 20, method=method)
    assert iou(mask, truth) >= min_iou
    assert stats.n_particles == 5 and stats.n_dark == 5 and stats.n_fallback_disk == 0
    # far better than a disc of the same radius
    assert iou(mask, truth) > iou(disk_mask(image.shape, x, y, 20), truth) + 0.2


def test_threshold_auto_polarity_handles_light_particles():
    image, x, y, truth, _ = _blob_micrograph(dark=False)
    mask, stats = threshold_mask(image, x, y, 20, method="otsu")
    assert stats.n_light == 5
    assert iou(mask, truth) >= 0.93
    forced, _ = threshold_mask(image, x, y, 20, method="otsu", polarity="dark")
    assert iou(forced, truth) < 0.7


def test_threshold_keeps_only_the_component_at_the_centre():
    shape = (120, 160)
    a = _ellipse(shape, 60, 60, 16, 16, 0)
    b = _ellipse(shape, 95, 60, 14, 14, 0)  # a neighbour without a centre, touching a's disc
    c = _ellipse(shape, 60, 20, 3, 3, 0)    # a small speck inside a's window, outside the disc
    image = np.where(a | b | c, -1.0, 0.0).astype(np.float32)
    image += np.random.default_rng(1).normal(0, 0.1, shape).astype(np.float32)
    mask, _ = threshold_mask(image, [60.0], [60.0], 20, method="otsu")
    disc = disk_mask(shape, [60.0], [60.0], 20).astype(bool)
    assert not (mask.astype(bool) & ~disc).any()      # nothing beyond the disc
    assert not mask[c].any()                           # the speck is not kept
    assert iou(mask, a) >= 0.9


def test_threshold_centre_on_background_takes_nearest_component():
    shape = (100, 100)
    ring = _ellipse(shape, 50, 50, 15, 15, 0) & ~_ellipse(shape, 50, 50, 6, 6, 0)
    image = np.where(ring, -1.0, 0.0).astype(np.float32)
    mask, stats = threshold_mask(image, [50.0], [50.0], 20, lowpass_sigma_px=0)
    # the hole under the centre is filled: the whole disc of radius 15
    assert iou(mask, _ellipse(shape, 50, 50, 15, 15, 0)) >= 0.95
    assert stats.n_fallback_disk == 0


def test_threshold_bad_method_is_an_error():
    with pytest.raises(CrispError, match="unknown threshold method"):
        threshold_mask(np.zeros((10, 10)), [5], [5], 3, method="magic")


# ---------------------------------------------------------------- Euler convention and reprojection

def _phantom(n=40):
    """An asymmetric phantom: four Gaussian blobs of different sizes and weights, [z, y, x]."""
    c = n // 2
    z, y, x = np.mgrid[:n, :n, :n] - c
    vol = np.zeros((n, n, n))
    for bx, by, bz, s, w in [(8, 0, 0, 2.5, 1.0), (0, 11, 0, 2.5, 2.0), (0, 0, 6, 2.0, 3.0),
                             (-5, -6, 3, 1.8, 1.5)]:
        vol += w * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


def _brute_projection(vol, rot, tilt, psi):
    """RELION: P(x, y) = sum_z V(A^T (x, y, z)), x = column, y = row, centre n // 2."""
    n = vol.shape[0]
    c = n // 2
    z, y, x = (np.mgrid[:n, :n, :n] - c).reshape(3, -1).astype(float)
    src = relion_euler_matrix(rot, tilt, psi).T @ np.stack([x, y, z])
    sampled = ndimage.map_coordinates(vol, [src[2] + c, src[1] + c, src[0] + c], order=1)
    return sampled.reshape(n, n, n).sum(axis=0)


def test_relion_matrix_hand_case():
    # rot = 90: A maps x to -y (RELION's Euler_angles2matrix, A(1,0) = -sin(rot))
    np.testing.assert_allclose(relion_euler_matrix(90, 0, 0), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(relion_euler_matrix(0, 90, 0), [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-12)
    a = relion_euler_matrix([10, 200], [30, 100], [-40, 5])
    np.testing.assert_allclose(a @ np.swapaxes(a, -1, -2), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)


def test_aspire_projection_follows_relion_convention():
    vol = _phantom()
    poses = np.array([[30.0, 50.0, 70.0], [-120.0, 100.0, 15.0], [0.0, 0.0, 90.0]])
    projections = project_volume(vol, poses)
    for proj, pose in zip(projections, poses, strict=True):
        ref = _brute_projection(vol, *pose)
        assert np.corrcoef(proj.ravel(), ref.ravel())[0, 1] > 0.999
        com_a = np.array(ndimage.center_of_mass(np.clip(proj, 0, None)))
        com_b = np.array(ndimage.center_of_mass(ref))
        assert np.abs(com_a - com_b).max() < 0.2
        # the wrong convention (transposed matrix) is clearly worse
        wrong = _brute_projection(vol, -pose[2], -pose[1], -pose[0])
        assert np.corrcoef(proj.ravel(), wrong.ravel())[0, 1] < 0.9


def test_read_particles_applies_origin_and_optics(tmp_path):
    import starfile

    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnMicrographPixelSize": [2.0],
                           "rlnImagePixelSize": [4.0]})
    parts = pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/mic_001.mrc"] * 2,
                          "rlnCoordinateX": [100.0, 50.0], "rlnCoordinateY": [200.0, 60.0],
                          "rlnAngleRot": [10.0, 0.0], "rlnAngleTilt": [20.0, 0.0], "rlnAnglePsi": [30.0, 0.0],
                          "rlnOriginXAngst": [10.0, -4.0], "rlnOriginYAngst": [-6.0, 0.0],
                          "rlnOpticsGroup": [1, 1]})
    path = tmp_path / "run_data.star"
    starfile.write({"optics": optics, "particles": parts}, path)
    table = read_particles(path)
    np.testing.assert_allclose(table["rlnCoordinateX"], [95.0, 52.0])
    np.testing.assert_allclose(table["rlnCoordinateY"], [203.0, 60.0])
    np.testing.assert_allclose(table["rlnImagePixelSize"], [4.0, 4.0])


def test_reproject_mask_places_scaled_silhouette_at_centre():
    n = 32
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    # an elongated box mask, 21 x 9 x 9 voxels of 2 Å centred on voxel n // 2, along x
    box = ((np.abs(x) <= 10) & (np.abs(y) <= 4) & (np.abs(z) <= 4)).astype(np.float32)
    volume = Volume3D(data=box, voxel_size=2.0, is_mask=True)
    particles = pd.DataFrame({"rlnCoordinateX": [60.0], "rlnCoordinateY": [40.0], "rlnAngleRot": [0.0],
                              "rlnAngleTilt": [0.0], "rlnAnglePsi": [0.0]})
    mask = reproject_mask((100, 120), particles, volume, pixel_size=1.0)
    rows, cols = np.nonzero(mask)
    # 42 x 18 micrograph pixels (1 Å) around (60, 40), long side along x (columns)
    assert 39 <= cols.max() - cols.min() + 1 <= 45 and 15 <= rows.max() - rows.min() + 1 <= 21
    assert abs(cols.mean() - 60) < 0.5 and abs(rows.mean() - 40) < 0.5
    # psi = 90 turns it along y
    particles["rlnAnglePsi"] = 90.0
    turned = reproject_mask((100, 120), particles, volume, pixel_size=1.0)
    rows, cols = np.nonzero(turned)
    assert rows.max() - rows.min() > cols.max() - cols.min() + 15


# ---------------------------------------------------------------- pipeline and CLI

def _write_tiny_dataset(root, flip=False):
    """Two 8-bit JPG micrographs with dark discs, their STAR files, and one of each without partner."""
    import starfile
    from PIL import Image

    mics, coords = root / "mics", root / "coords"
    mics.mkdir()
    coords.mkdir()
    truth = {}
    rng = np.random.default_rng(0)
    shape = (64, 80)
    for name in ["mic_a", "mic_b", "mic_lonely"]:
        x = rng.uniform(10, 70, 4).round(1)
        y = rng.uniform(10, 54, 4).round(1)
        disc = disk_mask(shape, x, y, 6)
        image = np.clip(180 - 100 * disc + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(mics / f"{name}.jpg", quality=95)
        truth[name] = (x, y, disc)
        if name != "mic_lonely":
            y_file = (shape[0] - 1) - y if flip else y
            starfile.write(pd.DataFrame({"rlnCoordinateX": x, "rlnCoordinateY": y_file}),
                           coords / f"{name}.star")
    starfile.write(pd.DataFrame({"rlnCoordinateX": [5.0], "rlnCoordinateY": [5.0]}),
                   coords / "mic_orphan.star")
    return mics, coords, truth


def _run(argv):
    from crisp.cli import main

    return main(argv)


def test_cli_labels_disk_tiny_dataset(tmp_path, capsys):
    from crisp.config import read_yaml
    from crisp.io.micrographs import read_micrograph

    mics, coords, truth = _write_tiny_dataset(tmp_path)
    out = tmp_path / "ds"
    argv = ["labels", "--micrographs", str(mics), "--coords", str(coords), "-o", str(out), "--radius", "6",
            "--pixel-size", "2.5", "--no-progress"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "mic_lonely.jpg" in printed and "mic_orphan.star" in printed   # the no-partner report
    for name in ("mic_a", "mic_b"):
        mask = read_micrograph(out / "masks" / f"{name}.mrc")
        np.testing.assert_array_equal(mask.data, truth[name][2])
        assert mask.pixel_size == pytest.approx(2.5)
        mic = read_micrograph(out / "micrographs" / f"{name}.mrc")
        np.testing.assert_array_equal(mic.data, read_micrograph(mics / f"{name}.jpg").data)
        import starfile

        centres = starfile.read(out / "coordinates" / f"{name}.star")
        np.testing.assert_allclose(centres["rlnCoordinateX"], truth[name][0])
        np.testing.assert_allclose(centres["rlnCoordinateY"], truth[name][1])
    assert not (out / "masks" / "mic_lonely.mrc").exists()
    meta = read_yaml(out / "labels.yaml")
    assert meta["method"] == "disk" and meta["diameter_px"] == 12 and meta["pixel_size"] == 2.5
    assert meta["n_particles"] == 8 and meta["settings"]["radius_px"] == 6
    assert (out / "qc.png").is_file()
    # resumable: a rerun skips both, a rerun with other settings is refused
    stamp = (out / "masks" / "mic_a.mrc").stat().st_mtime_ns
    assert _run(argv) == 0
    assert "2 already done" in capsys.readouterr().out
    assert (out / "masks" / "mic_a.mrc").stat().st_mtime_ns == stamp
    assert _run(argv[:-5] + ["--radius", "7", "--pixel-size", "2.5", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_labels_disk_fraction_shrinks_discs_not_the_diameter(tmp_path):
    from crisp.config import read_yaml
    from crisp.dataset import dataset_diameter_px
    from crisp.io.micrographs import read_micrograph

    mics, coords, truth = _write_tiny_dataset(tmp_path)
    out = tmp_path / "ds"
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", "6",
                 "--disk-fraction", "0.5", "--qc-count", "0", "--no-progress"]) == 0
    x, y, _ = truth["mic_a"]
    expected = disk_mask(read_micrograph(mics / "mic_a.jpg").shape, x, y, 3.0)
    np.testing.assert_array_equal(read_micrograph(out / "masks" / "mic_a.mrc").data, expected)
    assert dataset_diameter_px(out) == 12  # the picker and the metrics still get the particle's size
    assert read_yaml(out / "labels.yaml")["settings"]["disk_fraction"] == 0.5
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", "6",
                 "--disk-fraction", "1.5", "--no-progress"]) == 2


def test_cli_labels_flip_y(tmp_path):
    from crisp.io.micrographs import read_micrograph

    mics, coords, truth = _write_tiny_dataset(tmp_path, flip=True)
    out = tmp_path / "ds"
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", "6", "--flip-y",
                 "--qc-count", "0", "--no-progress"]) == 0
    np.testing.assert_array_equal(read_micrograph(out / "masks" / "mic_a.mrc").data, truth["mic_a"][2])
    assert not (out / "qc.png").exists()
    unflipped = tmp_path / "ds2"
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(unflipped), "--radius", "6",
                 "--qc-count", "0", "--no-progress"]) == 0
    assert iou(read_micrograph(unflipped / "masks" / "mic_a.mrc").data, truth["mic_a"][2]) < 0.5


def test_cli_labels_threshold_method(tmp_path):
    from crisp.config import read_yaml
    from crisp.io.micrographs import read_micrograph

    mics, coords, truth = _write_tiny_dataset(tmp_path)
    out = tmp_path / "ds"
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", "8",
                 "--method", "threshold", "--threshold-method", "otsu", "--qc-count", "1",
                 "--no-progress"]) == 0
    assert iou(read_micrograph(out / "masks" / "mic_b.mrc").data, truth["mic_b"][2]) >= 0.8
    meta = read_yaml(out / "labels.yaml")
    assert meta["micrographs"]["mic_b"]["n_dark"] == 4


@pytest.mark.parametrize(("extra", "message"), [
    ([], "needs the particle radius"),
    (["--radius-A", "20"], "pixel size"),
    (["--radius", "6", "--method", "threshold", "--threshold-method", "magic"], "unknown threshold method"),
    (["--radius", "6", "--method", "reproject"], "needs --particles"),
])
def test_cli_labels_bad_options(tmp_path, capsys, extra, message):
    mics, coords, _ = _write_tiny_dataset(tmp_path)
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(tmp_path / "ds"), "--no-progress",
                 *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds" / "masks").exists()


def test_cli_labels_no_pairs_and_outside_coordinates(tmp_path, capsys):
    import starfile

    mics, coords, _ = _write_tiny_dataset(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    starfile.write(pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [1.0]}), other / "nothing.star")
    assert _run(["labels", "-m", str(mics), "-c", str(other), "-o", str(tmp_path / "ds"), "--radius", "6",
                 "--no-progress"]) == 2
    assert "no micrograph could be paired" in capsys.readouterr().err
    # coordinates of a binned-by-4 picker: all outside the micrograph
    starfile.write(pd.DataFrame({"rlnCoordinateX": [400.0, 300.0], "rlnCoordinateY": [500.0, 900.0]}),
                   coords / "mic_a.star")
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(tmp_path / "ds"), "--radius", "6",
                 "--no-progress"]) == 2
    assert "fall outside" in capsys.readouterr().err
    # some outside: warned and counted
    starfile.write(pd.DataFrame({"rlnCoordinateX": [40.0, 300.0], "rlnCoordinateY": [30.0, 900.0]}),
                   coords / "mic_a.star")
    assert _run(["labels", "-m", str(mics), "-c", str(coords), "-o", str(tmp_path / "ds3"), "--radius", "6",
                 "--no-progress"]) == 0
    assert "1 of 2 coordinates fall outside" in capsys.readouterr().out


def test_reproject_labels_match_simulator_masks(tmp_path):
    """Simulated micrograph with known poses: reprojected labels against the simulator's own masks."""
    import starfile

    from crisp.cli import main
    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.simulate import load_reference, make_config, simulate_dataset

    config = make_config("small", count=1, width_px=320, height_px=320, particles=(8, 8), seed=5)
    sim_dir = tmp_path / "sim"
    (name,) = simulate_dataset(sim_dir, config, progress=False)
    reference = load_reference(config)
    write_mrc(tmp_path / "map.mrc", reference.volume, pixel_size=config.pixel_size)
    truth = starfile.read(sim_dir / "coordinates" / f"{name}.star")
    # a RELION 3.1 refinement: coordinates off by a few pixels, corrected by the origins (Å)
    rng = np.random.default_rng(0)
    shift = rng.integers(-4, 5, size=(len(truth), 2)).astype(float)
    particles = pd.DataFrame({
        "rlnMicrographName": [f"MotionCorr/job003/{name}.mrc"] * len(truth),
        "rlnCoordinateX": truth["rlnCoordinateX"] + shift[:, 0],
        "rlnCoordinateY": truth["rlnCoordinateY"] + shift[:, 1],
        "rlnAngleRot": truth["rlnAngleRot"], "rlnAngleTilt": truth["rlnAngleTilt"],
        "rlnAnglePsi": truth["rlnAnglePsi"],
        "rlnOriginXAngst": shift[:, 0] * config.pixel_size,
        "rlnOriginYAngst": shift[:, 1] * config.pixel_size,
        "rlnOpticsGroup": 1})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnMicrographPixelSize": [config.pixel_size],
                           "rlnImagePixelSize": [config.pixel_size]})
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "run_data.star")
    out = tmp_path / "labels"
    assert main(["labels", "-m", str(sim_dir / "micrographs"), "-o", str(out), "--method", "reproject",
                 "--particles", str(tmp_path / "run_data.star"), "--mask3d", str(tmp_path / "map.mrc"),
                 "--qc-count", "1", "--no-progress"]) == 0
    mask = read_micrograph(out / "masks" / f"{name}.mrc").data
    expected = read_micrograph(sim_dir / "masks" / f"{name}.mrc").data
    assert iou(mask, expected) >= 0.9
    centres = starfile.read(out / "coordinates" / f"{name}.star")
    np.testing.assert_allclose(centres["rlnCoordinateX"], truth["rlnCoordinateX"], atol=1e-6)
    np.testing.assert_allclose(centres["rlnCoordinateY"], truth["rlnCoordinateY"], atol=1e-6)
    # the transposed rotation (a common convention slip) is visibly wrong
    particles["rlnAngleRot"], particles["rlnAnglePsi"] = -truth["rlnAnglePsi"], -truth["rlnAngleRot"]
    particles["rlnAngleTilt"] = -truth["rlnAngleTilt"]
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "run_data.star", overwrite=True)
    out2 = tmp_path / "labels_wrong"
    assert main(["labels", "-m", str(sim_dir / "micrographs"), "-o", str(out2), "--method", "reproject",
                 "--particles", str(tmp_path / "run_data.star"), "--mask3d", str(tmp_path / "map.mrc"),
                 "--qc-count", "0", "--no-progress"]) == 0
    assert iou(read_micrograph(out2 / "masks" / f"{name}.mrc").data, expected) < 0.8


def test_mask_or_map_detection(tmp_path):
    from crisp.io.micrographs import write_mrc
    from crisp.labels import read_volume

    n = 32
    r = np.sqrt(((np.mgrid[:n, :n, :n] - n // 2) ** 2).sum(axis=0))
    soft_mask = np.clip((12 - r) / 3, 0, 1).astype(np.float32)           # RELION-style soft edge
    density = np.exp(-(r / 6) ** 2).astype(np.float32)                     # a map, peak 1
    write_mrc(tmp_path / "mask.mrc", soft_mask, pixel_size=2.0)
    write_mrc(tmp_path / "map.mrc", density * 3.0, pixel_size=2.0)
    write_mrc(tmp_path / "map1.mrc", density, pixel_size=2.0)
    assert read_volume(tmp_path / "mask.mrc").is_mask
    assert read_volume(tmp_path / "mask.mrc").voxel_size == pytest.approx(2.0)
    assert not read_volume(tmp_path / "map.mrc").is_mask
    assert not read_volume(tmp_path / "map1.mrc").is_mask
    write_mrc(tmp_path / "flat.mrc", np.zeros((4, 5, 5), np.float32))
    with pytest.raises(CrispError, match="cubic"):
        read_volume(tmp_path / "flat.mrc")


def test_make_labels_resumes_an_interrupted_run(tmp_path):
    from crisp.config import read_yaml, save_yaml
    from crisp.labels import LabelConfig, make_labels

    mics, coords, truth = _write_tiny_dataset(tmp_path)
    out = tmp_path / "ds"
    config = LabelConfig(radius_px=6, qc_count=0)
    make_labels(mics, out, config, coordinates=coords, progress=False, echo=lambda _: None)
    first = read_yaml(out / "labels.yaml")
    # as if stopped after the first micrograph: no summary yet, the second mask missing
    save_yaml(out / "labels.yaml", {"settings": first["settings"], "complete": False})
    (out / "masks" / "mic_b.mrc").unlink()
    run = make_labels(mics, out, config, coordinates=coords, progress=False, echo=lambda _: None)
    assert run.made == ["mic_b"] and run.skipped == ["mic_a"]
    meta = read_yaml(out / "labels.yaml")
    assert meta["complete"] and meta["n_particles"] == 8
    # the skipped micrograph's entry comes whole from its batch record, as an uninterrupted run wrote it
    assert meta == first
    assert meta["micrographs"]["mic_a"]["coordinates"] == str(coords / "mic_a.star")
    assert meta["micrographs"]["mic_a"]["mask_fraction"] == pytest.approx(truth["mic_a"][2].mean(), abs=1e-6)


@pytest.mark.parametrize("suffix", [".mrc", ".tif", ".png"])
def test_make_labels_ingests_mrc_tiff_png(tmp_path, suffix):
    """Raw uint16 MRC (pixel size from the header, radius in Å), 16-bit TIFF, 8-bit PNG."""
    import starfile
    import tifffile
    from PIL import Image

    from crisp.config import read_yaml
    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.labels import LabelConfig, make_labels

    shape = (70, 90)
    x, y = np.array([20.0, 60.5]), np.array([30.0, 41.0])
    disc = disk_mask(shape, x, y, 8)
    image = (3000 - 500 * disc.astype(np.int32)).astype(np.uint16)
    mics = tmp_path / "mics"
    mics.mkdir()
    path = mics / f"raw_001{suffix}"
    if suffix == ".mrc":
        write_mrc(path, image, pixel_size=1.25, dtype=np.uint16)
    elif suffix == ".tif":
        tifffile.imwrite(path, image)
    else:
        Image.fromarray((image // 16).astype(np.uint8)).save(path)
    starfile.write(pd.DataFrame({"rlnCoordinateX": x, "rlnCoordinateY": y}),
                   tmp_path / "raw_001_autopick.star")
    pixel_size = None if suffix == ".mrc" else 1.25
    config = LabelConfig(radius_A=10.0, pixel_size=pixel_size, qc_count=0)
    make_labels(path, tmp_path / "ds", config, coordinates=tmp_path / "raw_001_autopick.star", progress=False,
                echo=lambda _: None)
    mask = read_micrograph(tmp_path / "ds" / "masks" / "raw_001.mrc")
    np.testing.assert_array_equal(mask.data, disc)                      # 10 Å / 1.25 Å = 8 px
    mic = read_micrograph(tmp_path / "ds" / "micrographs" / "raw_001.mrc")
    assert mic.data.dtype == np.float32 and mic.shape == shape and mic.pixel_size == pytest.approx(1.25)
    np.testing.assert_array_equal(mic.data, read_micrograph(path).data)
    meta = read_yaml(tmp_path / "ds" / "labels.yaml")
    assert meta["diameter_px"] == pytest.approx(16) and meta["pixel_size"] == pytest.approx(1.25)


def test_make_labels_from_one_multi_micrograph_file(tmp_path):
    """A single Topaz file listing the picks of several micrographs is split by image name."""
    from crisp.io.micrographs import read_micrograph
    from crisp.labels import LabelConfig, make_labels

    mics, _, truth = _write_tiny_dataset(tmp_path)
    lines = ["image_name\tx_coord\ty_coord\tscore"]
    for name in ("mic_a", "mic_b"):
        lines += [f"{name}\t{x}\t{y}\t1.0" for x, y in zip(truth[name][0], truth[name][1], strict=True)]
    (tmp_path / "picks.txt").write_text("\n".join(lines) + "\n")
    messages = []
    run = make_labels(mics, tmp_path / "ds", LabelConfig(radius_px=6, qc_count=0),
                      coordinates=tmp_path / "picks.txt", progress=False, echo=messages.append)
    assert run.made == ["mic_a", "mic_b"]
    assert "mic_lonely" in messages[0]
    for name in ("mic_a", "mic_b"):
        np.testing.assert_array_equal(read_micrograph(tmp_path / "ds" / "masks" / f"{name}.mrc").data,
                                      truth[name][2])
