"""Selection of the finder by box mAP, picking on files, and the tune-picker / pick / extract verbs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.cli import main
from crisp.config import save_yaml
from crisp.dataset import make_split, write_split
from crisp.errors import CrispError
from crisp.io.coordinates import read_autopick, read_coordinates, write_coordinates
from crisp.io.micrographs import write_mrc
from crisp.metrics.picking import box_map
from crisp.picking.files import pick_files
from crisp.picking.tune import (
    BORDER_FRACTIONS,
    PickerConfig,
    load_picker,
    pick_maps,
    tune_picker,
    write_tuning,
)
from test_picking_finders import DIAMETER, disc_map, synthetic_map

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
NAMES = ["mic_a", "mic_b", "mic_c"]


@pytest.fixture(scope="module")
def maps_and_truth():
    maps, frames = {}, []
    for k, name in enumerate(NAMES):
        prob, centres = synthetic_map(seed=k + 10, shape=(256, 320), n=12, n_pairs=1)
        maps[name] = prob
        frames.append(pd.DataFrame({M: f"{name}.mrc", X: centres[:, 0], Y: centres[:, 1]}))
    return maps, pd.concat(frames, ignore_index=True)


def test_tune_picker_chooses_by_map(maps_and_truth, tmp_path):
    maps, truth = maps_and_truth
    grids = {"contour": {"threshold": [0.5, 0.97]}, "grid-nms": {"cell_fraction": [0.5],
                                                                   "iou_threshold": [0.3]}}
    config, table = tune_picker(maps, truth, DIAMETER, finders=["contour", "grid-nms"], grids=grids,
                                progress=False, border_fractions=())
    assert len(table) == 3 and config.border_fraction == 0
    assert table["mAP"].is_monotonic_decreasing
    assert config.validation["mAP"] == pytest.approx(table["mAP"].max())
    best = table.iloc[0]
    assert config.finder == best["finder"]
    assert json.loads(best["params"]).items() <= config.params.items()
    # a threshold of 0.97 on a map of 0.9 + noise finds almost nothing: it must rank last
    assert table.iloc[-1]["finder"] == "contour" and table.iloc[-1]["threshold"] == 0.97
    assert config.validation["mAP"] > 0.5
    # the stored threshold reproduces the best F1 when applied to the chosen picks
    picks = pick_maps(maps, DIAMETER, config.finder, config.params)
    kept = picks[picks[S] >= config.threshold]
    assert box_map(kept, truth, DIAMETER)["F1"] == pytest.approx(config.validation["best_F1"])
    yaml_path, csv_path = write_tuning(config, table, tmp_path / "picker.yaml")
    assert load_picker(yaml_path) == config
    assert len(pd.read_csv(csv_path)) == 3


def test_tune_picker_default_grids_cover_every_finder(maps_and_truth):
    maps, truth = maps_and_truth
    one = {NAMES[0]: maps[NAMES[0]]}
    _, table = tune_picker(one, truth, DIAMETER, progress=False)
    assert set(table["finder"]) == {"grid-nms", "crocker-grier", "contour"}
    # 27 grid settings without edge margin, then each non-zero margin on the best of them
    assert len(table) == 27 + len(BORDER_FRACTIONS) - 1
    assert (table["border_fraction"] == 0).sum() == 27
    assert (table["n_truth"] == (truth[M] == f"{NAMES[0]}.mrc").sum()).all()


def lattice_with_unannotated_rim():
    """Discs on a 48 px lattice whose outer ring sits 20 px (0.625 diameters) from the edges; the
    truth leaves that ring out, as annotators leave out particles whose box crosses an edge."""
    coords_y, coords_x = np.arange(20, 261, 48), np.arange(20, 309, 48)
    shape = (281, 329)  # the last row and column are 20 px from the far edges too
    centres = np.array([(x, y) for y in coords_y for x in coords_x], float)
    prob = disc_map(shape, centres, DIAMETER) * 0.9 + 0.05
    edge = np.minimum(np.minimum(centres[:, 0], shape[1] - 1 - centres[:, 0]),
                      np.minimum(centres[:, 1], shape[0] - 1 - centres[:, 1]))
    inner = centres[edge > 40]
    truth = pd.DataFrame({M: "rim.mrc", X: inner[:, 0], Y: inner[:, 1]})
    return {"rim": prob}, truth, len(centres)


def test_tune_picker_learns_the_edge_margin_of_the_annotations(tmp_path):
    maps, truth, n_discs = lattice_with_unannotated_rim()
    assert len(truth) == 5 * 4 and n_discs == 7 * 6
    grids = {"grid-nms": {"iou_threshold": [0.3]}}
    plain, _ = tune_picker(maps, truth, DIAMETER, finders=["grid-nms"], grids=grids, progress=False,
                           border_fractions=())
    assert plain.validation["precision"] == pytest.approx(20 / 42, abs=0.03)  # the rim picks are false
    config, table = tune_picker(maps, truth, DIAMETER, finders=["grid-nms"], grids=grids, progress=False)
    # the rim is at 20 px = 0.625 diameters, the first annotated ring at 68 px = 2.1 diameters:
    # the smallest margin that drops the rim is 0.7 of the grid 0, 0.1, ..., 1.5
    assert config.border_fraction == pytest.approx(0.7)
    assert config.validation["precision"] == 1.0 and config.validation["recall"] == 1.0
    assert table.iloc[0]["border_fraction"] == pytest.approx(0.7)
    picks = pick_maps(maps, DIAMETER, config.finder, config.params, config.border_fraction)
    assert len(picks) == 20
    # picking on files applies the picker's margin, and `crisp pick --border-fraction` overrides it
    write_mrc(tmp_path / "maps" / "rim.mrc", maps["rim"], pixel_size=2.0, dtype=np.float16)
    pick_files(tmp_path / "maps", tmp_path / "picks", config, progress=False)
    assert len(read_autopick(tmp_path / "picks" / "autopick.star")) == 20
    save_yaml(tmp_path / "picker.yaml", config)
    assert main(["pick", str(tmp_path / "maps"), "-o", str(tmp_path / "all"), "--picker",
                 str(tmp_path / "picker.yaml"), "--border-fraction", "0"]) == 0
    assert len(read_autopick(tmp_path / "all" / "autopick.star")) == 42


def test_tune_picker_errors(maps_and_truth):
    maps, truth = maps_and_truth
    with pytest.raises(CrispError, match="no parameter"):
        tune_picker(maps, truth, DIAMETER, finders=["contour"], grids={"contour": {"bogus": [1]}},
                    progress=False)
    with pytest.raises(CrispError, match="no true centres"):
        tune_picker(maps, truth.assign(**{M: "other.mrc"}), DIAMETER, progress=False)
    with pytest.raises(CrispError, match="unknown finder"):
        tune_picker(maps, truth, DIAMETER, finders=["nope"], progress=False)


def test_bad_picker_yaml_names_file(tmp_path):
    path = tmp_path / "picker.yaml"
    save_yaml(path, {"finder": "contour", "params": {"nope": 1}, "diameter_px": 30})
    with pytest.raises(CrispError, match="picker.yaml"):
        load_picker(path)


def test_pick_files_writes_relion_layout_and_resumes(maps_and_truth, tmp_path):
    maps, truth = maps_and_truth
    folder = tmp_path / "maps"
    for name, prob in maps.items():
        write_mrc(folder / f"{name}.mrc", prob, pixel_size=2.0, dtype=np.float16)
    config = PickerConfig(finder="grid-nms", diameter_px=DIAMETER, threshold=0.5)
    out = tmp_path / "picks"
    result = pick_files(folder, out, config, formats=["star", "box", "txt", "csv"], progress=False)
    assert result.skipped_existing == 0 and set(result.per_micrograph) == set(NAMES)
    back = read_autopick(out / "autopick.star")
    assert len(back) == result.n_picks
    assert box_map(back[back[S] >= 0.5], truth, DIAMETER)["recall"] >= 0.95
    index = starfile.read(out / "autopick.star", always_dict=True)
    assert list(index) == ["coordinate_files"]
    for name in NAMES:
        assert (out / f"{name}_autopick.star").is_file()
        assert (out / "box" / f"{name}.box").is_file()
        assert (out / "cryoppp" / f"{name}.csv").is_file()
        topaz = read_coordinates(out / "topaz" / f"{name}.txt")
        assert len(topaz) == result.per_micrograph[name]
    assert load_picker(out / "picker.yaml") == config
    again = pick_files(folder, out, config, formats=["star", "box", "txt", "csv"], progress=False)
    assert again.skipped_existing == 3 and again.per_micrograph == result.per_micrograph
    # a threshold at pick time drops low-scoring candidates
    strict = pick_files(folder, tmp_path / "strict", config, threshold=0.8, progress=False)
    assert (read_autopick(tmp_path / "strict" / "autopick.star")[S] >= 0.8).all()
    assert strict.n_picks <= result.n_picks


def make_dataset(root, maps, truth):
    """A dataset folder: micrographs (blobs at the true centres), coordinates, split, simulation.yaml."""
    yy, xx = np.mgrid[:256, :320]
    for name in NAMES:
        centres = truth[truth[M] == f"{name}.mrc"]
        image = np.zeros((256, 320), np.float32)
        for x, y in zip(centres[X], centres[Y], strict=True):
            image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 50.0)
        write_mrc(root / "micrographs" / f"{name}.mrc", image, pixel_size=2.0)
        write_coordinates(centres.reset_index(drop=True), root / "coordinates" / f"{name}.star")
    write_split(root / "split.yaml", make_split(NAMES, 1, 2, seed=0))
    save_yaml(root / "simulation.yaml", {"reference": {"diameter_px": DIAMETER}})


def test_cli_tune_pick_extract(maps_and_truth, tmp_path, capsys):
    maps, truth = maps_and_truth
    dataset = tmp_path / "data"
    make_dataset(dataset, maps, truth)
    folder = tmp_path / "maps"
    for name, prob in maps.items():
        write_mrc(folder / f"{name}.mrc", prob, pixel_size=2.0, dtype=np.float16)
    picker = tmp_path / "run" / "picker.yaml"
    assert main(["tune-picker", str(folder), str(dataset), "-o", str(picker), "--finders",
                 "grid-nms,contour"]) == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "best:" in printed
    assert (tmp_path / "run" / "picker_tuning.csv").is_file()
    config = load_picker(picker)
    assert config.diameter_px == DIAMETER and config.finder in ("grid-nms", "contour")
    picks = tmp_path / "picks"
    assert main(["pick", str(folder), "-o", str(picks), "--picker", str(picker), "--micrographs",
                 str(dataset / "micrographs"), "--format", "star,box"]) == 0
    table = read_autopick(picks / "autopick.star")
    assert table[M].str.endswith(".mrc").all() and "micrographs" in table[M].iloc[0]
    parts = tmp_path / "particles"
    assert main(["extract", str(dataset / "micrographs"), str(picks), "-o", str(parts), "--box", "32"]) == 0
    out = capsys.readouterr().out
    assert "threshold" in out
    star = starfile.read(parts / "particles.star", always_dict=True)
    kept = table[table[S] >= config.threshold] if config.threshold is not None else table
    assert 0 < len(star["particles"]) <= len(kept)
    assert star["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(2.0)


def test_cli_errors(maps_and_truth, tmp_path, capsys):
    maps, truth = maps_and_truth
    dataset = tmp_path / "data"
    make_dataset(dataset, maps, truth)
    picker = tmp_path / "picker.yaml"
    # neither maps nor a training run: a CrispError, exit status 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["tune-picker", str(empty), str(dataset), "-o", str(picker)]) == 2
    assert "nor a training run directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []
    (dataset / "simulation.yaml").unlink()
    assert main(["tune-picker", str(empty), str(dataset), "-o", str(picker)]) == 2
    assert "give --diameter" in capsys.readouterr().err
    assert main(["pick", str(empty), "-o", str(tmp_path / "p"), "--picker", str(picker)]) == 2
    assert "picker.yaml: file not found" in capsys.readouterr().err


def test_cli_tune_from_run_directory_segments_the_subset(maps_and_truth, tmp_path, monkeypatch):
    # a training run as SOURCE: the subset's micrographs are segmented into SOURCE/probabilities/val/
    import crisp.predict

    maps, truth = maps_and_truth
    dataset = tmp_path / "data"
    make_dataset(dataset, maps, truth)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    calls = []

    def fake_segment_files(run_dir, micrograph_paths, out_dir, **kwargs):
        paths = list(micrograph_paths)
        calls.append((run_dir, [p.stem for p in paths], out_dir))
        return [write_mrc(out_dir / f"{p.stem}.mrc", maps[p.stem], dtype=np.float16) for p in paths]

    monkeypatch.setattr(crisp.predict, "segment_files", fake_segment_files)
    assert main(["tune-picker", str(run), str(dataset), "-o", str(run / "picker.yaml"), "--finders",
                 "grid-nms"]) == 0
    val = sorted(make_split(NAMES, 1, 2, seed=0).val)
    assert calls == [(run, val, run / "probabilities" / "val")]
    assert load_picker(run / "picker.yaml").finder == "grid-nms"
    # a second run finds the maps and does not segment again
    assert main(["tune-picker", str(run), str(dataset), "-o", str(run / "picker.yaml"), "--finders",
                 "grid-nms"]) == 0
    assert len(calls) == 1


def test_tune_picker_on_maps_marking_no_particle(maps_and_truth, tmp_path):
    # a network trained for one epoch gives maps without any candidate; before the fix the edge-margin
    # search died with pandas' "No objects to concatenate"
    _, truth = maps_and_truth
    zeros = {name: np.zeros((256, 320), np.float32) for name in NAMES}
    with pytest.raises(CrispError, match="mark no particle") as err:
        tune_picker(zeros, truth, DIAMETER, finders=["grid-nms"], progress=False, source=tmp_path / "maps")
    assert err.value.path == str(tmp_path / "maps")


def _messages(stderr: str) -> list[str]:
    """The lines of stderr other than tqdm progress bars."""
    import re

    return [line for line in stderr.strip().splitlines() if not re.match(r"^[\w -]+:\s+\d+%\|", line)]


def _one_map_folder(tmp_path, maps):
    folder = tmp_path / "maps"
    write_mrc(folder / f"{NAMES[0]}.mrc", maps[NAMES[0]], pixel_size=2.0, dtype=np.float16)
    picker = tmp_path / "picker.yaml"
    save_yaml(picker, PickerConfig(finder="grid-nms", diameter_px=DIAMETER))
    return folder, picker


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_pick_checks_map_size_against_image_micrographs(maps_and_truth, tmp_path, capsys, suffix):
    # before the fix only MRC micrographs were checked: a PNG/TIFF/JPG of another size got picks
    # outside the image, exit 0
    from PIL import Image

    maps, _ = maps_and_truth
    folder, picker = _one_map_folder(tmp_path, maps)   # map 320 x 256 px
    mics = tmp_path / "mics"
    mics.mkdir()
    Image.fromarray(np.zeros((128, 160), np.uint8)).save(mics / f"{NAMES[0]}{suffix}")  # 160 x 128 px
    out = tmp_path / "picks"
    argv = ["pick", str(folder), "-o", str(out), "--picker", str(picker), "--micrographs", str(mics)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert f"{NAMES[0]}.mrc" in err[0] and f"{NAMES[0]}{suffix}" in err[0] and "160 x 128" in err[0]
    assert not list(out.glob("*.star"))
    # the same micrograph at the map's size is accepted
    Image.fromarray(np.zeros((256, 320), np.uint8)).save(mics / f"{NAMES[0]}{suffix}")
    assert main(argv) == 0


def test_pick_refuses_a_micrograph_given_as_probability_map(tmp_path, capsys):
    # a raw float32 micrograph (negative values) gave 0 picks without a word before the fix
    rng = np.random.default_rng(0)
    folder = tmp_path / "mics_not_maps"
    write_mrc(folder / "m.mrc", rng.normal(0, 1, (128, 128)).astype(np.float32), pixel_size=2.0)
    picker = tmp_path / "picker.yaml"
    save_yaml(picker, PickerConfig(finder="grid-nms", diameter_px=DIAMETER))
    assert main(["pick", str(folder), "-o", str(tmp_path / "p"), "--picker", str(picker)]) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"error: {folder / 'm.mrc'}:")
    assert "does not look like a probability map" in err[0] and "crisp segment" in err[0]
    with pytest.raises(CrispError, match="values span"):
        pick_maps({"m": rng.normal(0, 1, (64, 64))}, DIAMETER, "grid-nms")


@pytest.mark.parametrize(("option", "value"), [
    ("--threshold", "nan"), ("--threshold", "inf"), ("--threshold", "-0.5"), ("--threshold", "1.5"),
    ("--border-fraction", "nan"), ("--border-fraction", "inf"), ("--box-size", "nan"),
    ("--box-size", "-4"), ("--box-size", "0"),
])
def test_pick_refuses_non_finite_or_out_of_range_numbers(maps_and_truth, tmp_path, capsys, option, value):
    # before the fix `--threshold nan` gave 0 picks with exit 0
    maps, _ = maps_and_truth
    folder, picker = _one_map_folder(tmp_path, maps)
    out = tmp_path / "picks"
    assert main(["pick", str(folder), "-o", str(out), "--picker", str(picker), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and option in err[0]
    assert not out.exists()
