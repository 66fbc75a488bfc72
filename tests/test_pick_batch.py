"""`crisp pick` on the batch engine: other pickers refused, resume byte-identical, shards, input folders."""

from __future__ import annotations

import numpy as np
import pytest

from crisp.batch import MANIFEST, read_records
from crisp.cli import main
from crisp.config import save_yaml
from crisp.io.coordinates import read_autopick, read_coordinates
from crisp.io.micrographs import write_mrc
from crisp.picking.files import pick_files
from crisp.picking.tune import PickerConfig, load_picker
from interrupt import crisp_argv, leftover_temporaries, output_data, output_files, run_killed
from test_picking_finders import DIAMETER, synthetic_map

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
# scores below 0.1: Topaz's "%.6g" keeps one digit more than the STAR file's 6 decimals, so a .txt
# rebuilt from the STAR (the old resume) differs from one written from the picks in memory
LOW = 0.095
LOW_PICKER = PickerConfig(finder="grid-nms", params={"min_score": 0.01}, diameter_px=DIAMETER)


def _maps(folder, n=3, shape=(256, 320), scale=LOW):
    for k in range(n):
        prob, _ = synthetic_map(seed=k + 20, shape=shape, n=12, n_pairs=1)
        write_mrc(folder / f"mic_{k:02d}.mrc", prob * scale, pixel_size=2.0, dtype=np.float32)
    return folder


def _picker(path, config=LOW_PICKER):
    save_yaml(path, config)
    return path


def test_picks_have_non_round_coordinates_and_low_scores(tmp_path):
    # the premise of the resume tests below: digits beyond the STAR file's precision
    maps = _maps(tmp_path / "maps", n=1)
    pick_files(maps, tmp_path / "picks", LOW_PICKER, formats=["star", "txt"], progress=False)
    picks = read_coordinates(tmp_path / "picks" / "topaz" / "mic_00.txt")
    assert len(picks) > 5
    assert (picks[X] % 1 != 0).all() and (picks[S] < 0.1).all()


def test_topaz_txt_of_a_redone_micrograph_is_written_from_the_picks_not_the_rounded_star(tmp_path):
    # defect 7: a resumed pick rebuilt topaz/NAME.txt from the rounded NAME_autopick.star; now an item
    # with a missing output is redone whole, every format from the same table
    maps = _maps(tmp_path / "maps", n=2)
    out = tmp_path / "picks"
    pick_files(maps, out, LOW_PICKER, formats=["star", "txt"], progress=False)
    first = (out / "topaz" / "mic_01.txt").read_text()
    (out / "topaz" / "mic_01.txt").unlink()
    again = pick_files(maps, out, LOW_PICKER, formats=["star", "txt"], progress=False)
    assert again.skipped_existing == 1
    assert (out / "topaz" / "mic_01.txt").read_text() == first


@pytest.mark.parametrize("formats", ["star,txt", "star,box,txt,csv"])
def test_sigkill_then_rerun_gives_the_uninterrupted_picks(tmp_path, formats):
    maps = _maps(tmp_path / "maps", n=8, shape=(768, 1024))
    picker = _picker(tmp_path / "picker.yaml")
    args = ["pick", str(maps), "--picker", str(picker), "--format", formats]
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main([*args, "-o", str(reference)]) == 0
    seen = run_killed(crisp_argv(*args, "-o", str(out)), out, after=1)
    assert 1 <= seen < 8, f"killed after {seen} of 8 micrographs"
    assert not (out / "autopick.star").exists()  # the index is written after the batch
    assert main([*args, "-o", str(out)]) == 0
    expected = output_data(reference, rename=True)
    assert "topaz/mic_07.txt" in expected and "mic_07_autopick.star" in expected
    assert output_data(out, rename=True) == expected
    assert leftover_temporaries(out) == []


def test_another_picker_into_the_same_folder_is_refused_then_overwritten(tmp_path, capsys):
    # defect 3: pick with another picker kept the old picks and wrote the new picker.yaml beside them
    maps = _maps(tmp_path / "maps", n=2, scale=1.0)
    first = _picker(tmp_path / "a.yaml", PickerConfig(finder="grid-nms", diameter_px=DIAMETER))
    other_config = PickerConfig(finder="grid-nms", params={"iou_threshold": 0.1}, diameter_px=DIAMETER)
    other = _picker(tmp_path / "b.yaml", other_config)
    out = tmp_path / "picks"
    assert main(["pick", str(maps), "-o", str(out), "--picker", str(first)]) == 0
    before = output_files(out)
    capsys.readouterr()
    assert main(["pick", str(maps), "-o", str(out), "--picker", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}:")
    assert "params.iou_threshold: 0.3 -> 0.1" in err[0] and "--overwrite" in err[0]
    assert output_files(out) == before  # old picks and the old picker.yaml untouched
    assert load_picker(out / "picker.yaml").params == {}
    # a pick-time threshold is a setting too
    assert main(["pick", str(maps), "-o", str(out), "--picker", str(first), "--threshold", "0.5"]) == 2
    assert "threshold: None -> 0.5" in capsys.readouterr().err
    # --overwrite recomputes: the folder then equals a fresh pick with the other picker
    assert main(["pick", str(maps), "-o", str(out), "--picker", str(other), "--overwrite"]) == 0
    fresh = tmp_path / "fresh"
    assert main(["pick", str(maps), "-o", str(fresh), "--picker", str(other)]) == 0
    assert load_picker(out / "picker.yaml") == other_config
    assert output_data(out, rename=True) == output_data(fresh, rename=True)
    assert len(read_autopick(out / "autopick.star")) == len(read_autopick(fresh / "autopick.star"))


def test_output_folder_may_not_be_an_input_folder(tmp_path, capsys):
    maps = _maps(tmp_path / "maps", n=1, scale=1.0)
    mics = tmp_path / "mics"
    write_mrc(mics / "mic_00.mrc", np.zeros((256, 320), np.float32), pixel_size=2.0)
    picker = _picker(tmp_path / "picker.yaml")
    for folder in (maps, mics):
        assert main(["pick", str(maps), "-o", str(folder), "--picker", str(picker), "--micrographs",
                     str(mics)]) == 2
        err = capsys.readouterr().err
        assert "input" in err and str(folder) in err
    assert sorted(p.name for p in maps.iterdir()) == ["mic_00.mrc"]
    assert sorted(p.name for p in mics.iterdir()) == ["mic_00.mrc"]


def test_shards_into_one_folder_give_one_index_of_all_micrographs(tmp_path):
    maps = _maps(tmp_path / "maps", n=5)
    picker = _picker(tmp_path / "picker.yaml")
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert main(["pick", str(maps), "-o", str(whole), "--picker", str(picker), "--format", "star,txt"]) == 0
    for shard in ("2/2", "1/2"):
        assert main(["pick", str(maps), "-o", str(sharded), "--picker", str(picker), "--format", "star,txt",
                     "--shard", shard]) == 0
    assert set(read_records(sharded)) == {f"mic_{k:02d}" for k in range(5)}
    assert output_data(sharded, rename=True) == output_data(whole, rename=True)
    assert main(["pick", str(maps), "-o", str(sharded), "--picker", str(picker), "--shard", "3/2"]) == 2


def test_keep_going_records_a_bad_map_and_picks_the_others(tmp_path, capsys):
    maps = _maps(tmp_path / "maps", n=3, scale=1.0)
    write_mrc(maps / "mic_01.mrc", np.full((256, 320), 5.0, np.float32), pixel_size=2.0)  # not a map
    picker = _picker(tmp_path / "picker.yaml")
    out = tmp_path / "picks"
    assert main(["pick", str(maps), "-o", str(out), "--picker", str(picker), "--keep-going"]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 item(s) failed" in err and "mic_01" in err and "probability map" in err
    # the others are picked and indexed
    assert sorted(read_autopick(out / "autopick.star")[M].unique()) == ["mic_00.mrc", "mic_02.mrc"]
    assert (out / MANIFEST).is_file()
    # without --keep-going the first failure stops the run
    assert main(["pick", str(maps), "-o", str(tmp_path / "stop"), "--picker", str(picker)]) == 2
