"""`crisp preprocess` on the batch engine: refuses another --bin or its input folder, ignores hidden
leftovers, and a SIGKILL then rerun equals an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from crisp.batch import MANIFEST, STATE_DIR
from crisp.cli import main
from crisp.io.micrographs import write_mrc
from interrupt import crisp_argv, leftover_temporaries, output_data, output_files, run_killed


def _inputs(root: Path, n: int = 3, size: int = 96) -> tuple[Path, Path]:
    """``n`` noisy micrographs (1 Å/px) and a STAR file of two coordinates for each but the last."""
    rng = np.random.default_rng(5)
    mics, coords = root / "mics", root / "coords"
    coords.mkdir(parents=True)
    for i in range(n):
        write_mrc(mics / f"m{i}.mrc", rng.normal(10, 3, (size, size)).astype(np.float32), pixel_size=1.0)
        if i < n - 1:
            starfile.write(pd.DataFrame({"rlnCoordinateX": [20.0 + i, 60.0], "rlnCoordinateY": [30.0, 50.0]}),
                           coords / f"m{i}.star")
    return mics, coords


def _preprocess(*args) -> int:
    return main(["preprocess", *map(str, args), "--quiet"])


def test_another_bin_is_refused_naming_it_then_overwritten(tmp_path, capsys):
    """Defect 3: preprocess with another --bin kept the old outputs (exit 0)."""
    mics, coords = _inputs(tmp_path)
    out = tmp_path / "out"
    assert _preprocess(mics, "-o", out, "--bin", "2", "--normalize", "zscore", "--coords", coords) == 0
    assert sorted(output_files(out)) == ["coordinates/m0.star", "coordinates/m1.star", "m0.mrc", "m1.mrc",
                                         "m2.mrc"]
    first = output_files(out)
    with mrcfile.open(out / "m0.mrc") as mrc:
        assert mrc.data.shape == (48, 48)
    assert starfile.read(out / "coordinates" / "m1.star")["rlnCoordinateX"].tolist() == [10.5, 30.0]
    capsys.readouterr()
    assert _preprocess(mics, "-o", out, "--bin", "4", "--normalize", "zscore", "--coords", coords) == 2
    err = capsys.readouterr().err
    assert "bin: 2.0 -> 4.0" in err and "--overwrite" in err
    assert output_files(out) == first  # untouched
    assert _preprocess(mics, "-o", out, "--bin", "2", "--normalize", "zscore") == 2  # without --coords
    assert "scale_coordinates: True -> False" in capsys.readouterr().err
    assert _preprocess(mics, "-o", out, "--bin", "4", "--normalize", "zscore", "--coords", coords,
                       "--overwrite") == 0
    with mrcfile.open(out / "m0.mrc") as mrc:
        assert mrc.data.shape == (24, 24) and float(mrc.voxel_size.x) == 4.0
    assert starfile.read(out / "coordinates" / "m1.star")["rlnCoordinateX"].tolist() == [5.25, 15.0]


def test_a_changed_coordinate_file_redoes_its_micrograph_only(tmp_path):
    mics, coords = _inputs(tmp_path)
    out = tmp_path / "out"
    args = (mics, "-o", out, "--bin", "2", "--normalize", "zscore", "--coords", coords)
    assert _preprocess(*args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")}
    starfile.write(pd.DataFrame({"rlnCoordinateX": [8.0], "rlnCoordinateY": [4.0]}), coords / "m0.star")
    assert _preprocess(*args) == 0
    assert starfile.read(out / "coordinates" / "m0.star")["rlnCoordinateX"].tolist() == [4.0]
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")}
    assert after["m0.mrc"] != stamps["m0.mrc"] and after["m1.mrc"] == stamps["m1.mrc"]


def test_the_input_folder_is_not_an_output_folder(tmp_path, capsys):
    import tifffile

    mics, _ = _inputs(tmp_path)
    tifffile.imwrite(mics / "t.tif", np.full((40, 40), 7, np.uint8))
    before = {p.name: p.read_bytes() for p in mics.iterdir()}
    assert _preprocess(mics, "-o", mics) == 2
    assert "input folder" in capsys.readouterr().err
    assert _preprocess(mics / "t.tif", "-o", mics, "--normalize", "none") == 2  # would add t.mrc there
    assert "holds input files" in capsys.readouterr().err
    assert _preprocess(mics, "-o", mics, "--overwrite") == 2
    assert {p.name: p.read_bytes() for p in mics.iterdir()} == before


def test_a_folder_of_maps_with_hidden_leftovers_is_an_input(tmp_path):
    """Defect 6: a `.NAME.part.mrc` left in a folder (e.g. maps of a killed segment) broke preprocess."""
    mics, _ = _inputs(tmp_path)
    (mics / ".m0.k2j4.part.mrc").write_bytes(b"half a file")
    (mics / STATE_DIR).mkdir()
    (mics / MANIFEST).write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".m1.zz9.part.mrc").write_bytes(b"half a file")  # a leftover of an older, killed run
    assert _preprocess(mics, "-o", out, "--normalize", "none", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR, MANIFEST, "m0.mrc", "m1.mrc", "m2.mrc"]
    assert leftover_temporaries(out) == []


def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(tmp_path):
    mics, coords = _inputs(tmp_path, n=6, size=192)
    reference, out = tmp_path / "reference", tmp_path / "out"
    args = ["--bin", "2", "--coords", str(coords)]
    assert _preprocess(mics, "-o", reference, *args) == 0
    seen = run_killed(crisp_argv("preprocess", mics, "-o", out, "--quiet", *args), out, after=2)
    assert 2 <= seen < 6
    assert len(list(out.glob("*.mrc"))) < 6
    assert _preprocess(mics, "-o", out, *args) == 0
    expected = output_data(reference)
    assert len(expected) == 11  # 6 micrographs, 5 coordinate files
    assert output_data(out) == expected
    assert leftover_temporaries(out) == []
