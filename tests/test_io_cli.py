"""The io verbs through crisp.cli.main: crisp convert and crisp match."""

from __future__ import annotations

import numpy as np
import pandas as pd
import starfile

from crisp.cli import main
from crisp.io.coordinates import read_autopick, read_coordinates, write_coordinates
from crisp.io.micrographs import write_mrc


def _picks(name, xs, ys):
    return pd.DataFrame({"rlnMicrographName": name, "rlnCoordinateX": xs, "rlnCoordinateY": ys})


def _star_folder(folder):
    write_coordinates(_picks("mic_001", [10.0, 20.0], [5.0, 90.0]), folder / "mic_001.star")
    write_coordinates(_picks("mic_002", [30.0], [40.0]), folder / "mic_002.star")
    return folder


def test_convert_file_to_box_and_back(tmp_path, capsys):
    src = write_coordinates(_picks("mic_001", [100.0, 200.0], [50.0, 60.0]), tmp_path / "mic_001.star")
    assert main(["convert", str(src), str(tmp_path / "mic_001.box"), "--box-size", "64"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "mic_001.box").read_text().splitlines() == ["68\t18\t64\t64", "168\t28\t64\t64"]
    assert main(["convert", str(tmp_path / "mic_001.box"), str(tmp_path / "back.star")]) == 0
    back = read_coordinates(tmp_path / "back.star")
    np.testing.assert_allclose(back[["rlnCoordinateX", "rlnCoordinateY"]], [[100, 50], [200, 60]])
    assert back["rlnMicrographName"].tolist() == ["mic_001", "mic_001"]


def test_convert_folder_to_topaz_and_csv_folders(tmp_path):
    src = _star_folder(tmp_path / "in")
    assert main(["convert", str(src), str(tmp_path / "all.txt")]) == 0
    topaz = read_coordinates(tmp_path / "all.txt")
    assert topaz["rlnMicrographName"].tolist() == ["mic_001", "mic_001", "mic_002"]
    assert main(["convert", str(src), str(tmp_path / "csv"), "--to", "csv", "--box-size", "108"]) == 0
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["mic_001.csv", "mic_002.csv"]
    one = read_coordinates(tmp_path / "csv" / "mic_001.csv")
    np.testing.assert_allclose(one[["rlnCoordinateX", "rlnCoordinateY", "rlnDiameter"]],
                               [[10, 5, 108], [20, 90, 108]])


def test_convert_to_autopick_with_flip_from_micrograph_headers(tmp_path):
    mics = tmp_path / "mics"
    write_mrc(mics / "mic_001.mrc", np.zeros((100, 80), np.float32), pixel_size=1.0)
    write_mrc(mics / "mic_002.mrc", np.zeros((50, 80), np.float32), pixel_size=1.0)
    src = _star_folder(tmp_path / "in")
    out = tmp_path / "AutoPick"
    assert main(["convert", str(src), str(out), "--flip-y", "--micrographs", str(mics)]) == 0
    index = starfile.read(out / "autopick.star")
    assert index["rlnMicrographName"].tolist() == [str(mics / "mic_001.mrc"), str(mics / "mic_002.mrc")]
    picks = read_autopick(out / "autopick.star")
    np.testing.assert_allclose(picks["rlnCoordinateY"], [99 - 5, 99 - 90, 49 - 40])  # each its own height
    np.testing.assert_allclose(picks["rlnCoordinateX"], [10, 20, 30])
    # the same shape for all micrographs
    assert main(["convert", str(src), str(tmp_path / "f.star"), "--flip-y", "--micrograph-shape", "1000",
                 "1000"]) == 0
    np.testing.assert_allclose(read_coordinates(tmp_path / "f.star")["rlnCoordinateY"], [994, 909, 959])
    # an index as input: its listed files are read once, names kept
    assert main(["convert", str(out), str(tmp_path / "again.star")]) == 0
    again = read_coordinates(tmp_path / "again.star")
    assert len(again) == 3 and again["rlnMicrographName"][0] == str(mics / "mic_001.mrc")


def test_convert_bad_input_exit_2(tmp_path, capsys):
    src = _star_folder(tmp_path / "in")
    cases = [
        (["convert", str(tmp_path / "absent.star"), str(tmp_path / "o.box")], "no such file or folder"),
        (["convert", str(src / "mic_001.star"), str(tmp_path / "o.box")], "needs a box size"),
        (["convert", str(src / "mic_001.star"), str(tmp_path / "o.box"), "--box-size", "-5"],
         "box size must be a positive"),
        (["convert", str(src), str(tmp_path / "o.box"), "--box-size", "64"], "belong to 2 micrographs"),
        (["convert", str(src), str(tmp_path / "o.star"), "--flip-y"], "needs the micrograph height"),
        (["convert", str(src), str(tmp_path / "o.star"), "--flip-y", "--micrograph-shape", "0", "5"],
         "--micrograph-shape must be"),
        (["convert", str(src), str(tmp_path / "o.xyz")], "unknown coordinate format"),
        (["convert", str(src), str(tmp_path / "o"), "--to", "pdb"], "unknown coordinate format 'pdb'"),
        (["convert", str(src), str(tmp_path / "o.cs")], "cannot write the 'cs' format"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
        assert "Traceback" not in err
    (src / "bad.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 abc\n")
    assert main(["convert", str(src / "bad.star"), str(tmp_path / "o.txt")]) == 2
    err = capsys.readouterr().err
    assert str(src / "bad.star") in err and "not numbers" in err
    assert not (tmp_path / "o.txt").exists() and not (tmp_path / "o.box").exists()
    assert main(["convert", str(src)]) == 2  # usage error: OUTPUT missing


def test_match_report_and_exit_status(tmp_path, capsys):
    mics = tmp_path / "mics"
    mics.mkdir()
    for name in ("mic_001.mrc", "mic_002.mrc", "012345678901234567890_mic_003.mrc"):
        (mics / name).write_bytes(b"")
    coords = tmp_path / "coords"
    coords.mkdir()
    for name in ("mic_001_autopick.star", "mic_003.box", "other.star"):
        (coords / name).write_text("")
    assert main(["match", str(mics), str(coords)]) == 0
    out = capsys.readouterr().out
    assert "2 micrograph(s) paired" in out
    assert "1 micrograph(s) without coordinates:" in out and "mic_002.mrc" in out
    assert "1 coordinate file(s) without a micrograph:" in out and "other.star" in out
    assert main(["match", str(mics), str(coords / "other.star")]) == 2
    captured = capsys.readouterr()
    assert "0 micrograph(s) paired" in captured.out and "no micrograph matches" in captured.err
    assert main(["match", str(tmp_path / "absent"), str(coords)]) == 2
    assert "absent: no such file or folder" in capsys.readouterr().err


def test_match_real_data(real_data_dir, capsys):
    assert main(["match", str(real_data_dir / "images"), str(real_data_dir / "coordinates")]) == 0
    out = capsys.readouterr().out
    assert "10 micrograph(s) paired" in out and "0 micrograph(s) without" in out


def test_convert_cryosparc_with_its_own_heights(tmp_path):
    arr = np.zeros(2, dtype=[("location/micrograph_path", "S80"), ("location/micrograph_shape", "<u4", (2,)),
                             ("location/center_x_frac", "<f4"), ("location/center_y_frac", "<f4")])
    arr["location/micrograph_path"] = [b"J1/imported/012345678901234567890_mic_001.mrc"] * 2
    arr["location/micrograph_shape"] = [[200, 100], [200, 100]]
    arr["location/center_x_frac"] = [0.5, 0.25]
    arr["location/center_y_frac"] = [0.25, 0.5]
    with open(tmp_path / "picks.cs", "wb") as handle:
        np.save(handle, arr)
    assert main(["convert", str(tmp_path / "picks.cs"), str(tmp_path / "out"), "--to", "box", "--flip-y",
                 "--box-size", "20"]) == 0
    box = read_coordinates(tmp_path / "out" / "mic_001.box")
    np.testing.assert_allclose(box[["rlnCoordinateX", "rlnCoordinateY"]], [[50, 199 - 50], [25, 199 - 100]])
