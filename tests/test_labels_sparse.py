"""Sparse labels (issue 17): seeded subsets of centres, three-valued label maps, background coordinates."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.batch import MANIFEST
from crisp.cli import main
from crisp.config import read_yaml
from crisp.dataset import BACKGROUND, PARTICLE, UNLABELLED
from crisp.io.micrographs import write_mrc
from crisp.labels import LabelConfig, disk_mask, keep_subset, label_map, make_labels
from crisp.labels.sparse import n_kept, name_seed

SHAPE = (128, 160)
RADIUS = 5
# 42 centres on a 20-px grid: discs of radius 5 never touch, and a dropped centre lies in no kept disc
GRID_X, GRID_Y = np.meshgrid(np.arange(15.0, 150.0, 20.0), np.arange(15.0, 120.0, 20.0))
CENTRES = pd.DataFrame({"rlnCoordinateX": GRID_X.ravel(), "rlnCoordinateY": GRID_Y.ravel()})


def _dataset(root, names=("a", "b")):
    """One MRC micrograph with dark discs and one STAR of the 42 grid centres per name."""
    mics, coords = root / "mics", root / "coords"
    mics.mkdir(parents=True, exist_ok=True)
    coords.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        image = rng.normal(0, 1, SHAPE).astype(np.float32) - 3 * disk_mask(
            SHAPE, CENTRES["rlnCoordinateX"], CENTRES["rlnCoordinateY"], RADIUS)
        write_mrc(mics / f"{name}.mrc", image, pixel_size=2.0)
        starfile.write(CENTRES, coords / f"{name}.star")
    return mics, coords


def _labels(mics, coords, out, *extra):
    return main(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", str(RADIUS),
                 "--qc-count", "0", "--no-progress", *map(str, extra)])


def _mask(out, name):
    with mrcfile.open(out / "masks" / f"{name}.mrc", permissive=True) as mrc:
        return np.array(mrc.data).astype(np.int64)


def _same_content(a, b):
    """Equal files but for the time stamps (MRC header label, starfile's comment line)."""
    if a.suffix == ".mrc":
        with mrcfile.open(a, permissive=True) as ma, mrcfile.open(b, permissive=True) as mb:
            return (ma.data.dtype == mb.data.dtype and np.array_equal(ma.data, mb.data)
                    and ma.header.tobytes()[:224] == mb.header.tobytes()[:224])
    return a.read_text().splitlines()[1:] == b.read_text().splitlines()[1:]


def _kept(out, name):
    table = starfile.read(out / "coordinates" / f"{name}.star")
    return table[["rlnCoordinateX", "rlnCoordinateY"]].reset_index(drop=True)


def _value_at(mask, centres):
    return mask[centres["rlnCoordinateY"].to_numpy(int), centres["rlnCoordinateX"].to_numpy(int)]


def _dropped(kept):
    merged = CENTRES.merge(kept, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"][["rlnCoordinateX", "rlnCoordinateY"]]


# ----------------------------------------------------------------------------------------------
# keep_subset
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "fraction", "expected"), [
    (42, 0.5, 21), (42, 0.1, 4), (42, 0.2, 8), (10, 0.25, 2), (10, 0.35, 4), (5, 0.1, 1), (1, 0.01, 1),
    (3, 1.0, 3), (0, 0.5, 0)])
def test_keep_subset_keeps_round_f_n_rows_of_the_input_in_order(n, fraction, expected):
    table = pd.DataFrame({"rlnCoordinateX": np.arange(n, dtype=float) * 3, "id": np.arange(n)})
    kept = keep_subset(table, fraction, seed=7, name="mic_001")
    assert n_kept(n, fraction) == expected
    assert len(kept) == expected
    assert set(kept["id"]) <= set(table["id"])
    assert kept["id"].is_unique and kept["id"].is_monotonic_increasing  # original order, no repeats
    np.testing.assert_array_equal(kept["rlnCoordinateX"], table.set_index("id").loc[kept["id"],
                                                                                      "rlnCoordinateX"])
    assert list(kept.index) == list(range(expected))


def test_keep_subset_is_seeded_by_seed_and_name():
    table = pd.DataFrame({"id": np.arange(100)})
    first = keep_subset(table, 0.3, seed=0, name="a")["id"].tolist()
    assert keep_subset(table, 0.3, seed=0, name="a")["id"].tolist() == first
    assert keep_subset(table, 0.3, seed=1, name="a")["id"].tolist() != first
    assert keep_subset(table, 0.3, seed=0, name="b")["id"].tolist() != first
    # the documented generator: default_rng([seed, crc32(name)])
    rng = np.random.default_rng([0, name_seed("a")])
    assert first == sorted(rng.choice(100, size=30, replace=False).tolist())
    assert name_seed("a") == 0xE8B7BE43  # zlib.crc32(b"a"): the same in every process


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_keep_subset_refuses_a_fraction_outside_0_1(fraction):
    from crisp.errors import CrispError

    with pytest.raises(CrispError, match="keep fraction"):
        keep_subset(pd.DataFrame({"id": [1, 2]}), fraction, seed=0, name="a")


def test_label_map_particles_win_over_background():
    particle = np.array([[1, 1, 0, 0]], np.uint8)
    background = np.array([[0, 1, 1, 0]], np.uint8)
    np.testing.assert_array_equal(label_map(particle, background), [[1, 1, 0, 255]])
    np.testing.assert_array_equal(label_map(particle), [[1, 1, 255, 255]])
    assert label_map(particle).dtype == np.uint8


# ----------------------------------------------------------------------------------------------
# crisp labels --keep-fraction / --seed
# ----------------------------------------------------------------------------------------------
def test_a_micrographs_subset_does_not_depend_on_the_other_micrographs(tmp_path):
    mics, coords = _dataset(tmp_path, names=("a", "b"))
    config = LabelConfig(radius_px=RADIUS, keep_fraction=0.2, keep_seed=3, qc_count=0)
    make_labels(mics, tmp_path / "ab", config, coordinates=coords, progress=False, echo=lambda _: None)
    make_labels(mics / "b.mrc", tmp_path / "b", config, coordinates=coords / "b.star", progress=False,
                echo=lambda _: None)
    for sub in ("coordinates/b.star", "masks/b.mrc"):
        assert _same_content(tmp_path / "ab" / sub, tmp_path / "b" / sub)
    assert len(_kept(tmp_path / "b", "b")) == 8  # round(0.2 x 42)
    assert not _kept(tmp_path / "ab", "a").equals(_kept(tmp_path / "ab", "b"))  # names seed differently


@pytest.mark.parametrize(("background", "dropped_value", "values"), [
    ("all", BACKGROUND, {0, 1}), ("none", UNLABELLED, {1, 255})])
def test_keep_fraction_draws_the_mask_from_the_kept_centres(tmp_path, background, dropped_value, values):
    mics, coords = _dataset(tmp_path, names=("a",))
    out = tmp_path / "ds"
    assert _labels(mics, coords, out, "--keep-fraction", 0.5, "--seed", 11, "--background", background) == 0
    kept = _kept(out, "a")
    expected = keep_subset(CENTRES, 0.5, 11, "a")
    pd.testing.assert_frame_equal(kept, expected, check_dtype=False)
    assert len(kept) == 21
    mask = _mask(out, "a")
    # the uint8 map is stored losslessly (MRC mode 0 for 0/1, mode 6 once 255 occurs): values read back
    assert set(np.unique(mask)) == values
    assert (_value_at(mask, kept) == PARTICLE).all()
    dropped = _dropped(kept)
    assert len(dropped) == 21 and (_value_at(mask, dropped) == dropped_value).all()
    particle = disk_mask(SHAPE, kept["rlnCoordinateX"], kept["rlnCoordinateY"], RADIUS)
    np.testing.assert_array_equal(mask == PARTICLE, particle == 1)
    stats = read_yaml(out / "labels.yaml")["micrographs"]["a"]
    assert (stats["n_annotated"], stats["n_used"], stats["keep_fraction"]) == (42, 21, 0.5)
    assert stats["mask_fraction"] == pytest.approx(float(particle.mean()), abs=1e-6)
    assert stats["unlabelled_fraction"] == pytest.approx(0.0 if background == "all" else 1 - particle.mean(),
                                                         abs=1e-6)


def test_defaults_and_their_explicit_values_give_the_unchanged_full_disc_labels(tmp_path):
    mics, coords = _dataset(tmp_path, names=("a",))
    default, explicit = tmp_path / "default", tmp_path / "explicit"
    assert _labels(mics, coords, default) == 0
    assert _labels(mics, coords, explicit, "--keep-fraction", "1", "--seed", "9", "--background", "all") == 0
    full = disk_mask(SHAPE, CENTRES["rlnCoordinateX"], CENTRES["rlnCoordinateY"], RADIUS)
    np.testing.assert_array_equal(_mask(default, "a"), full)
    for sub in ("masks/a.mrc", "coordinates/a.star", "micrographs/a.mrc"):
        assert _same_content(default / sub, explicit / sub)
    manifests = [json.loads((d / MANIFEST).read_text()) for d in (default, explicit)]
    assert manifests[0]["settings_hash"] == manifests[1]["settings_hash"]
    # the sparse settings at their defaults are left out, so folders labelled before them still match
    assert not {"keep_fraction", "keep_seed", "background"} & set(manifests[0]["settings"])
    assert len(_kept(default, "a")) == 42


def test_another_keep_fraction_is_refused_unless_overwrite(tmp_path, capsys):
    mics, coords = _dataset(tmp_path, names=("a",))
    out = tmp_path / "ds"
    assert _labels(mics, coords, out, "--keep-fraction", "0.5") == 0
    before = (out / "masks" / "a.mrc").read_bytes()
    capsys.readouterr()
    assert _labels(mics, coords, out, "--keep-fraction", "0.2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep_fraction: 0.5 -> 0.2" in err[0] and "--overwrite" in err[0]
    assert (out / "masks" / "a.mrc").read_bytes() == before
    assert _labels(mics, coords, out, "--keep-fraction", "0.2", "--overwrite") == 0
    assert len(_kept(out, "a")) == 8
    assert read_yaml(out / "labels.yaml")["micrographs"]["a"]["n_used"] == 8


# ----------------------------------------------------------------------------------------------
# --background-coords
# ----------------------------------------------------------------------------------------------
def test_background_coords_label_discs_0_the_rest_255_and_particles_win(tmp_path):
    mics, coords = _dataset(tmp_path, names=("a", "b"))
    bg = tmp_path / "bg"
    bg.mkdir()
    # (25, 25) lies between four particles; (21, 15) overlaps the particle at (15, 15)
    starfile.write(pd.DataFrame({"rlnCoordinateX": [25.0, 21.0], "rlnCoordinateY": [25.0, 15.0]}),
                   bg / "a.star")
    out = tmp_path / "ds"
    assert _labels(mics, coords, out, "--background-coords", bg) == 0
    mask = _mask(out, "a")
    assert set(np.unique(mask)) == {0, 1, 255}
    particle = disk_mask(SHAPE, CENTRES["rlnCoordinateX"], CENTRES["rlnCoordinateY"], RADIUS) == 1
    background = disk_mask(SHAPE, [25.0, 21.0], [25.0, 15.0], RADIUS) == 1
    np.testing.assert_array_equal(mask == PARTICLE, particle)
    np.testing.assert_array_equal(mask == BACKGROUND, background & ~particle)
    np.testing.assert_array_equal(mask == UNLABELLED, ~background & ~particle)
    assert mask[25, 25] == BACKGROUND and mask[25, 29] == BACKGROUND   # inside the free disc
    assert mask[15, 18] == PARTICLE    # in both discs: the particle wins
    assert mask[15, 24] == BACKGROUND  # only in the background disc
    assert mask[5, 25] == UNLABELLED and mask[25, 31] == UNLABELLED
    # b has no background file: particles and unlabelled only
    assert set(np.unique(_mask(out, "b"))) == {1, 255}
    summary = read_yaml(out / "labels.yaml")
    assert summary["background"] == "none" and summary["settings"]["background"] == "none"
    assert summary["micrographs"]["a"]["n_background"] == 2
    # a changed background file re-runs its micrograph only
    starfile.write(pd.DataFrame({"rlnCoordinateX": [25.0], "rlnCoordinateY": [25.0]}), bg / "a.star")
    run = make_labels(mics, out, LabelConfig(radius_px=RADIUS, background="none", qc_count=0),
                      coordinates=coords, background_coords=bg, progress=False, echo=lambda _: None)
    assert run.made == ["a"] and run.skipped == ["b"]
    assert _mask(out, "a")[15, 24] == UNLABELLED


def test_threshold_method_with_background_none_labels_only_particle_pixels(tmp_path):
    mics, coords = _dataset(tmp_path, names=("a",))
    out = tmp_path / "ds"
    assert _labels(mics, coords, out, "--method", "threshold", "--background", "none") == 0
    mask = _mask(out, "a")
    assert set(np.unique(mask)) == {1, 255}
    disc = disk_mask(SHAPE, CENTRES["rlnCoordinateX"], CENTRES["rlnCoordinateY"], RADIUS) == 1
    assert not ((mask == PARTICLE) & ~disc).any()  # thresholded shapes stay in their discs
    assert (mask == PARTICLE).sum() > 0.5 * disc.sum()


@pytest.mark.parametrize(("extra", "named"), [
    (["--keep-fraction", "0"], "--keep-fraction"),
    (["--keep-fraction", "1.5"], "--keep-fraction"),
    (["--keep-fraction", "nan"], "--keep-fraction"),
    (["--seed", "-1"], "--seed"),
    (["--background", "foo"], "--background"),
    (["--background", "all", "--background-coords", "BG"], "--background all"),
    (["--method", "reproject", "--background-coords", "BG"], "--background-coords"),
])
def test_bad_sparse_options_exit_2_with_one_line(tmp_path, capsys, extra, named):
    mics, coords = _dataset(tmp_path, names=("a",))
    bg = tmp_path / "bg"
    bg.mkdir()
    starfile.write(pd.DataFrame({"rlnCoordinateX": [25.0], "rlnCoordinateY": [25.0]}), bg / "a.star")
    extra = [str(bg) if e == "BG" else e for e in extra]
    assert _labels(mics, coords, tmp_path / "ds", *extra) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and named in err[0], err
    assert not (tmp_path / "ds" / "masks").exists()


# ----------------------------------------------------------------------------------------------
# the QC figure
# ----------------------------------------------------------------------------------------------
def test_qc_figure_shades_unlabelled_pixels_instead_of_outlining_them(tmp_path, monkeypatch):
    import crisp.qc as qc

    mics, coords = _dataset(tmp_path, names=("a",))
    out = tmp_path / "ds"
    assert _labels(mics, coords, out, "--background", "none") == 0
    mask = _mask(out, "a")
    outlined, shaded = [], []
    show, show_unlabelled = qc._show, qc._show_unlabelled

    def spy_show(ax, image, layer, x, y, marker_size):
        outlined.append(np.array(layer))
        show(ax, image, layer, x, y, marker_size)

    def spy_unlabelled(ax, layer):
        shaded.append(np.array(layer))
        show_unlabelled(ax, layer)

    monkeypatch.setattr(qc, "_show", spy_show)
    monkeypatch.setattr(qc, "_show_unlabelled", spy_unlabelled)
    figure = qc.labels_qc_figure(out, ["a"], tmp_path / "qc.png", display_px=80, zoom_px=64)
    assert figure.is_file() and figure.stat().st_size > 1000
    assert len(outlined) == 2 and len(shaded) == 2
    assert max(a.max() for a in outlined) <= 1.0  # 255 never reaches the particle outline
    r0, c0 = (SHAPE[0] - 64) // 2, (SHAPE[1] - 64) // 2
    np.testing.assert_array_equal(outlined[1], (mask == PARTICLE)[r0:r0 + 64, c0:c0 + 64])
    np.testing.assert_array_equal(shaded[1], (mask == UNLABELLED)[r0:r0 + 64, c0:c0 + 64])
    particle, unlabelled = qc.mask_layers(np.array([[0, 1, 255]], np.uint8))
    np.testing.assert_array_equal(particle, [[0, 1, 0]])
    np.testing.assert_array_equal(unlabelled, [[0, 0, 1]])
    assert qc.mask_layers(np.array([[0, 1]], np.uint8))[1] is None  # a full label map: nothing shaded
