"""Coordinate I/O: round trips for every format, hand-written files, flip, pairing, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crisp.cli import main
from crisp.errors import CrispError
from crisp.io.coordinates import (
    FORMATS,
    CoordinateMatch,
    convert_coordinates,
    flip_y,
    group_by_micrograph,
    list_coordinate_files,
    match_coordinates,
    micrograph_stem,
    read_autopick,
    read_coordinates,
    resolve_format,
    scale_coordinates,
    sniff_format,
    write_autopick,
    write_coordinates,
)
from crisp.io.micrographs import write_mrc

# A RELION 3.1 particles file as RELION writes it (backslash-newlines only wrap the long lines here).
RELION31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
_rlnImagePixelSize #7
_rlnImageSize #8
_rlnImageDimensionality #9
opticsGroup1            1     0.885000   200.000000     1.400000     0.100000     1.770000    \
      256            2
opticsGroup2            2     0.885000   300.000000     2.700000     0.070000     1.770000    \
      256            2


# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnAutopickFigureOfMerit #3
_rlnClassNumber #4
_rlnAnglePsi #5
_rlnImageName #6
_rlnMicrographName #7
_rlnOpticsGroup #8
_rlnDefocusU #9
_rlnDefocusV #10
_rlnDefocusAngle #11
  1219.000000   1093.000000     1.231200            1   -999.00000\
 000001@Extract/job007/Movies/mic_001.mrcs MotionCorr/job002/Movies/mic_001.mrc            1\
 10864.146484 10575.793945    77.995003
   436.000000   2862.000000     0.982100            1   -999.00000\
 000002@Extract/job007/Movies/mic_001.mrcs MotionCorr/job002/Movies/mic_001.mrc            1\
 10864.146484 10575.793945    77.995003
  3105.500000    202.250000     1.002000            1   -999.00000\
 000001@Extract/job007/Movies/mic_002.mrcs MotionCorr/job002/Movies/mic_002.mrc            2\
 21011.000000 20700.500000    12.500000
"""


def _picks(names=("mic_001", "mic_002"), n=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for name in names:
        for _ in range(n):
            rows.append({"rlnMicrographName": name,
                         "rlnCoordinateX": float(rng.integers(0, 4096)) + 0.25,
                         "rlnCoordinateY": float(rng.integers(0, 4096)) + 0.5,
                         "rlnAutopickFigureOfMerit": round(float(rng.random()), 6)})
    return pd.DataFrame(rows)


def _same(a, b, columns=("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"), atol=1e-6):
    key = list(columns)
    a = a[key].sort_values(key).reset_index(drop=True)
    b = b[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False, atol=atol, rtol=0)


def _fails(match, func, *args, path=None, **kwargs):
    with pytest.raises(CrispError, match=match) as info:
        func(*args, **kwargs)
    if path is not None:
        assert str(path) in str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name, stem", [
    ("mic_001.mrc", "mic_001"),
    ("/data/MotionCorr/job002/Movies/mic_001.mrc", "mic_001"),
    ("AutoPick/job007/Movies/mic_001_autopick.star", "mic_001"),
    ("mic_001_manualpick.star", "mic_001"),
    ("mic_001.mrc.box", "mic_001"),
    ("mic_001.JPG", "mic_001"),
    ("mic_001.tiff", "mic_001"),
    ("mic_001.cs", "mic_001"),
    ("J12/motioncorrected/012345678901234567890_mic_001_patch_aligned_doseweighted.mrc",
     "mic_001_patch_aligned_doseweighted"),
    ("20240423_193203_fractions.mrc", "20240423_193203_fractions"),  # a date is part of the name
    ("0001_mic.mrc", "0001_mic"),
    ("C:\\data\\mic_001.tif", "mic_001"),
    ("Falcon_2012_06_12-14_33_35_0", "Falcon_2012_06_12-14_33_35_0"),
    ("_autopick.star", "_autopick"),
])
def test_micrograph_stem(name, stem):
    assert micrograph_stem(name) == stem


def test_resolve_format():
    assert resolve_format("a.STAR") == "star"
    assert resolve_format("a.tsv") == "txt"
    assert resolve_format("a.dat", "topaz") == "txt"
    assert resolve_format("a.dat", "cryosparc") == "cs"
    _fails("unknown coordinate format '.dat'", resolve_format, "x/a.dat", path="x/a.dat")
    _fails("unknown coordinate format 'pdb'", resolve_format, "a.star", "pdb")


# ------------------------------------------------------------------------------------------ STAR
def test_star_30_round_trip(tmp_path):
    picks = _picks()
    picks["rlnAnglePsi"] = 12.5
    picks["rlnClassNumber"] = 1
    path = write_coordinates(picks, tmp_path / "picks.star")
    text = path.read_text()
    assert "data_\n" in text and "data_optics" not in text and "# version" not in text  # a 3.0 file
    back = read_coordinates(path)
    _same(back, picks, ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
                        "rlnAutopickFigureOfMerit", "rlnAnglePsi", "rlnClassNumber"))
    assert list(back.columns[:3]) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]


def test_star_31_round_trip_with_optics(tmp_path):
    picks = _picks()
    optics = {"rlnVoltage": 300.0, "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1,
              "rlnMicrographPixelSize": 0.885}
    path = write_coordinates(picks, tmp_path / "p.star", optics=optics)
    text = path.read_text()
    assert "# version 30001\n\ndata_optics\n" in text and "# version 30001\n\ndata_particles\n" in text
    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    assert blocks["optics"]["rlnOpticsGroupName"].tolist() == ["opticsGroup1"]
    assert "rlnVoltage" not in blocks["particles"].columns
    back = read_coordinates(path)
    _same(back, picks)
    assert (back["rlnVoltage"] == 300.0).all() and (back["rlnMicrographPixelSize"] == 0.885).all()
    # writing the merged table again with its optics keeps one value per group, not per particle
    again = write_coordinates(back, tmp_path / "q.star", optics=blocks["optics"])
    assert "rlnVoltage" not in starfile.read(again, always_dict=True)["particles"].columns


def test_hand_written_relion31_file(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(RELION31)
    df = read_coordinates(path)
    assert len(df) == 3
    assert df["rlnMicrographName"].tolist() == ["MotionCorr/job002/Movies/mic_001.mrc"] * 2 + [
        "MotionCorr/job002/Movies/mic_002.mrc"]
    np.testing.assert_allclose(df["rlnCoordinateX"], [1219.0, 436.0, 3105.5])
    np.testing.assert_allclose(df["rlnCoordinateY"], [1093.0, 2862.0, 202.25])
    np.testing.assert_allclose(df["rlnVoltage"], [200, 200, 300])
    np.testing.assert_allclose(df["rlnSphericalAberration"], [1.4, 1.4, 2.7])
    np.testing.assert_allclose(df["rlnAmplitudeContrast"], [0.1, 0.1, 0.07])
    np.testing.assert_allclose(df["rlnImagePixelSize"], 1.77)
    np.testing.assert_allclose(df["rlnDefocusAngle"], [77.995003, 77.995003, 12.5])
    assert set(group_by_micrograph(df)) == {"mic_001", "mic_002"}


def test_optics_group_mismatch(tmp_path):
    bad = RELION31.replace("mic_002.mrc            2", "mic_002.mrc            7")
    (tmp_path / "bad.star").write_text(bad)
    _fails(r"optics group\(s\) \[7\]", read_coordinates, tmp_path / "bad.star", path=tmp_path / "bad.star")
    picks = _picks().assign(rlnOpticsGroup=3)
    _fails(r"optics group\(s\) \[3\]", write_coordinates, picks, tmp_path / "w.star",
           optics={"rlnVoltage": 300.0})
    assert not (tmp_path / "w.star").exists()


def test_single_micrograph_star_takes_name_from_file(tmp_path):
    (tmp_path / "mic_007_autopick.star").write_text(
        "\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 20\n30.5 40\n")
    df = read_coordinates(tmp_path / "mic_007_autopick.star")
    assert df["rlnMicrographName"].tolist() == ["mic_007", "mic_007"]
    df = read_coordinates(tmp_path / "mic_007_autopick.star", micrograph_name="Movies/mic_007.mrc")
    assert df["rlnMicrographName"].tolist() == ["Movies/mic_007.mrc"] * 2
    np.testing.assert_allclose(df["rlnCoordinateX"], [10, 30.5])


# -------------------------------------------------------------------------------------- autopick
def test_autopick_layout_round_trip(tmp_path):
    picks = _picks(("mic_001", "mic_002"))
    picks["rlnAnglePsi"] = -999.0
    mics = ["MotionCorr/job002/Movies/mic_001.mrc", "MotionCorr/job002/Movies/mic_002.mrc",
            "MotionCorr/job002/Movies/mic_003.mrc"]
    index = write_autopick(picks, tmp_path / "AutoPick", micrograph_paths=mics)
    assert index == tmp_path / "AutoPick" / "autopick.star"
    assert "# version 30001\n\ndata_coordinate_files\n" in index.read_text()
    table = starfile.read(index)
    assert table["rlnMicrographName"].tolist() == mics
    assert table["rlnMicrographCoordinates"].tolist() == [
        str(tmp_path / "AutoPick" / "Movies" / f"mic_00{i}_autopick.star") for i in (1, 2, 3)]
    one = starfile.read(tmp_path / "AutoPick" / "Movies" / "mic_001_autopick.star")
    assert list(one.columns) == ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit",
                                 "rlnAnglePsi"]
    assert len(starfile.read(tmp_path / "AutoPick" / "Movies" / "mic_003_autopick.star")) == 0  # no picks
    expected = picks.assign(rlnMicrographName=picks["rlnMicrographName"].map(
        lambda n: f"MotionCorr/job002/Movies/{n}.mrc"))
    for back in (read_autopick(index), read_coordinates(index)):
        _same(back, expected, ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
                               "rlnAutopickFigureOfMerit"))


def test_autopick_relative_to_project_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    picks = _picks(("mic_001",)).drop(columns="rlnAutopickFigureOfMerit")
    write_autopick(picks, "AutoPick/job900")
    table = starfile.read(tmp_path / "AutoPick/job900/autopick.star")
    assert table["rlnMicrographCoordinates"].tolist() == ["AutoPick/job900/mic_001_autopick.star"]
    assert (starfile.read(tmp_path / "AutoPick/job900/mic_001_autopick.star")["rlnAutopickFigureOfMerit"]
            == -999).all()
    monkeypatch.chdir(tmp_path / "AutoPick")  # elsewhere: resolved through the index's ancestors
    back = read_autopick(tmp_path / "AutoPick/job900/autopick.star")
    _same(back, picks)


def test_autopick_errors(tmp_path):
    index = tmp_path / "autopick.star"
    index.write_text("\ndata_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
                     "mic_001.mrc Movies/mic_001_autopick.star\n")
    err = _fails("Movies/mic_001_autopick.star' listed in the index not found", read_autopick, index)
    assert str(index) in str(err)
    index.write_text(index.read_text().replace("Movies/", f"{tmp_path}/Movies/"))
    _fails(f"'{tmp_path}/Movies/mic_001_autopick.star' listed in the index not found", read_autopick, index,
           path=index)
    (tmp_path / "Movies").mkdir()
    (tmp_path / "Movies" / "mic_001_autopick.star").write_text("")  # empty: no picks
    assert len(read_autopick(index)) == 0
    _fails("share the name stem 'mic_001'", write_autopick, _picks(("mic_001",)), tmp_path / "o",
           micrograph_paths=["a/mic_001.mrc", "b/mic_001.mrc"])
    _fails(r"1 micrograph name\(s\) of the picks match none", write_autopick, _picks(("mic_001", "mic_009")),
           tmp_path / "o", micrograph_paths=["a/mic_001.mrc"])


# -------------------------------------------------------------------------- box, Topaz, CryoPPP
def test_box_round_trip_and_hand_case(tmp_path):
    (tmp_path / "mic_001.box").write_text("100\t200\t50\t50\n0 0 64 64\n")
    df = read_coordinates(tmp_path / "mic_001.box")
    np.testing.assert_allclose(df[["rlnCoordinateX", "rlnCoordinateY"]], [[125, 225], [32, 32]])
    assert df["rlnMicrographName"].tolist() == ["mic_001", "mic_001"]
    picks = _picks(("mic_001",))
    path = write_coordinates(picks, tmp_path / "out.box", box_size=51)
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    # integer corners (RELION reads .box with sscanf("%d")): the whole corner nearest centre - size / 2
    assert all(field.lstrip("-").isdigit() for line in lines for field in line)
    assert lines[0][2:] == ["51", "51"]
    assert int(lines[0][0]) == picks["rlnCoordinateX"][0] - 25.25  # x = k + 0.25: corner k - 25
    assert int(lines[0][1]) == picks["rlnCoordinateY"][0] - 25.5  # y = k + 0.5: corner k - 25
    back = read_coordinates(path, micrograph_name="mic_001")
    _same(back, picks, atol=0.5)  # a .box centre is within half a pixel
    np.testing.assert_allclose(back["rlnCoordinateX"] - picks["rlnCoordinateX"], 0.25)
    assert back.attrs["box_size_px"] == 51
    half = write_coordinates(picks, tmp_path / "half.box", box_size=50.5)  # whole pixels: 51
    assert half.read_text() == path.read_text()
    write_coordinates(back, tmp_path / "again.box")  # the box size travels with the table
    assert (tmp_path / "again.box").read_text() == path.read_text()


def test_topaz_round_trip_and_hand_case(tmp_path):
    (tmp_path / "t.txt").write_text("image_name\tx_coord\ty_coord\tscore\nmic_001\t10\t20\t-1.5\n"
                                    "mic_002\t30\t40\t2.25\n")
    df = read_coordinates(tmp_path / "t.txt")
    assert df["rlnMicrographName"].tolist() == ["mic_001", "mic_002"]
    (tmp_path / "n.txt").write_text("image_name\tx_coord\ty_coord\n001\t1\t2\n")
    assert read_coordinates(tmp_path / "n.txt")["rlnMicrographName"].tolist() == ["001"]
    np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], [-1.5, 2.25])
    picks = _picks().assign(rlnMicrographName=lambda d: "Movies/" + d["rlnMicrographName"] + ".mrc")
    path = write_coordinates(picks, tmp_path / "out.txt")
    assert path.read_text().splitlines()[0] == "image_name\tx_coord\ty_coord\tscore"
    assert path.read_text().splitlines()[1].startswith("mic_001\t")  # Topaz names: no folder, no extension
    back = read_coordinates(path)
    _same(back, picks.assign(rlnMicrographName=picks["rlnMicrographName"].map(micrograph_stem)),
          ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"))


def test_cryoppp_round_trip_and_hand_case(tmp_path):
    (tmp_path / "mic_001.csv").write_text("X-Coordinate,Y-Coordinate,Diameter,Confidence\n10,20,108,0.9\n"
                                          "30.5,40,108,0.8\n")
    df = read_coordinates(tmp_path / "mic_001.csv")
    assert list(df.columns) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnDiameter"]
    np.testing.assert_allclose(df["rlnCoordinateX"], [10, 30.5])
    picks = _picks(("mic_001",))
    path = write_coordinates(picks, tmp_path / "o.csv", box_size=108)
    assert path.read_text().splitlines()[0] == "X-Coordinate,Y-Coordinate,Diameter"
    back = read_coordinates(path, micrograph_name="mic_001")
    _same(back, picks)
    assert (back["rlnDiameter"] == 108).all()
    write_coordinates(back, tmp_path / "o2.csv")  # diameter from rlnDiameter
    assert (tmp_path / "o2.csv").read_text() == path.read_text()
    _fails("needs a diameter", write_coordinates, picks, tmp_path / "o3.csv")


# ------------------------------------------------------------------------------------- cryoSPARC
def _write_cs(path, fields=None):
    dtype = [("uid", "<u8"), ("location/micrograph_path", "S80"), ("location/micrograph_shape", "<u4", (2,)),
             ("location/center_x_frac", "<f4"), ("location/center_y_frac", "<f4"),
             ("pick_stats/ncc_score", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
             ("ctf/df_angle_rad", "<f4")]
    if fields is not None:
        dtype = [d for d in dtype if d[0] in fields]
    arr = np.zeros(3, dtype=dtype)
    names = arr.dtype.names
    if "location/micrograph_path" in names:
        arr["location/micrograph_path"] = [
            b"J12/motioncorrected/012345678901234567890_mic_001_patch_aligned_doseweighted.mrc"] * 2 + [
            b"J12/motioncorrected/012345678901234567891_mic_002_patch_aligned_doseweighted.mrc"]
    if "location/micrograph_shape" in names:
        arr["location/micrograph_shape"] = [[4000, 3000], [4000, 3000], [2000, 1000]]
    values_by_field = {"location/center_x_frac": [0.5, 0.25, 0.1], "location/center_y_frac": [0.5, 0.75, 0.2],
                       "pick_stats/ncc_score": [0.5, 0.25, 1.0], "ctf/df1_A": [12000, 12000, 15000],
                       "ctf/df2_A": [11000, 11000, 14000], "ctf/df_angle_rad": [np.pi / 2, np.pi / 2, 0]}
    for key, values in values_by_field.items():
        if key in names:
            arr[key] = values
    with open(path, "wb") as handle:  # np.save on a name would append .npy
        np.save(handle, arr)
    return path


def test_cryosparc_cs(tmp_path):
    path = _write_cs(tmp_path / "particles.cs")
    df = read_coordinates(path)
    np.testing.assert_allclose(df["rlnCoordinateX"], [1500, 750, 100])
    np.testing.assert_allclose(df["rlnCoordinateY"], [2000, 3000, 400])
    np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], [0.5, 0.25, 1.0])
    np.testing.assert_allclose(df["rlnDefocusAngle"], [90, 90, 0], atol=1e-4)
    assert df["rlnMicrographName"][0].startswith("J12/motioncorrected/0123")
    assert sorted(group_by_micrograph(df)) == ["mic_001_patch_aligned_doseweighted",
                                               "mic_002_patch_aligned_doseweighted"]
    flipped = read_coordinates(path, flip_y=True)  # each micrograph's own height from the file
    np.testing.assert_allclose(flipped["rlnCoordinateY"], [3999 - 2000, 3999 - 3000, 1999 - 400])
    given = read_coordinates(path, flip_y=True, micrograph_shape=(5000, 5000))
    np.testing.assert_allclose(given["rlnCoordinateY"], 4999 - df["rlnCoordinateY"])
    bare_path = _write_cs(tmp_path / "bare.cs", fields=(
        "location/micrograph_shape", "location/center_x_frac", "location/center_y_frac"))
    bare = read_coordinates(bare_path, micrograph_name="m")
    assert bare["rlnMicrographName"].tolist() == ["m"] * 3
    _fails("cannot write the 'cs' format", write_coordinates, df, tmp_path / "o.cs")
    nox = _write_cs(tmp_path / "nox.cs", fields=("location/center_y_frac",))
    _fails("lacks field", read_coordinates, nox, path=nox)
    (tmp_path / "junk.cs").write_bytes(b"not numpy")
    _fails("not a readable cryoSPARC", read_coordinates, tmp_path / "junk.cs", path=tmp_path / "junk.cs")


# ------------------------------------------------------------------------------- flip and scale
def test_flip_y_hand_case_and_involution(tmp_path):
    df = pd.DataFrame({"rlnMicrographName": "m", "rlnCoordinateX": [5.0, 6.0, 7.0],
                       "rlnCoordinateY": [0.0, 99.0, 10.5]})
    flipped = flip_y(df, 100)
    np.testing.assert_allclose(flipped["rlnCoordinateY"], [99, 0, 88.5])
    np.testing.assert_allclose(flipped["rlnCoordinateX"], df["rlnCoordinateX"])
    pd.testing.assert_frame_equal(flip_y(flipped, 100), df)
    assert df["rlnCoordinateY"].tolist() == [0.0, 99.0, 10.5]  # the input is untouched
    for bad in (0, -5, 10.5):
        _fails("positive whole number", flip_y, df, bad)
    path = write_coordinates(df, tmp_path / "m.star")
    _fails("needs the micrograph height", read_coordinates, path, flip_y=True, path=path)
    flipped_read = read_coordinates(path, flip_y=True, micrograph_shape=(100, 80))
    np.testing.assert_allclose(flipped_read["rlnCoordinateY"], [99, 0, 88.5])


def test_scale_coordinates():
    df = pd.DataFrame({"rlnCoordinateX": [10.0, 3.0], "rlnCoordinateY": [20.0, 1.0]})
    half = scale_coordinates(df, 2)
    np.testing.assert_allclose(half[["rlnCoordinateX", "rlnCoordinateY"]], [[5, 10], [1.5, 0.5]])
    pd.testing.assert_frame_equal(scale_coordinates(half, 0.5), df)
    for bad in (0, -2, float("inf")):
        _fails("positive", scale_coordinates, df, bad)


# -------------------------------------------------------------------------------------- pairing
def test_match_coordinates_with_uid_prefix_and_report(tmp_path):
    mics, coords = tmp_path / "mics", tmp_path / "coords"
    mics.mkdir()
    coords.mkdir()
    uid = mics / "J12" / "motioncorrected"
    uid.mkdir(parents=True)
    for name in ("mic_001.mrc", "mic_002.mrc", "mic_003.mrc", "mic_005_patch_aligned_doseweighted.mrc"):
        (mics / name).write_bytes(b"")
    (uid / "012345678901234567890_mic_004_patch_aligned_doseweighted.mrc").write_bytes(b"")
    for name in ("mic_001_autopick.star", "mic_002.box", "mic_004_patch_aligned_doseweighted.star",
                 "mic_005.txt", "extra_999.star", "notes.md"):
        (coords / name).write_text("")
    match = match_coordinates([mics, uid], coords)
    assert isinstance(match, CoordinateMatch)
    assert [(m.name, c.name) for m, c in match.pairs] == [
        ("012345678901234567890_mic_004_patch_aligned_doseweighted.mrc",
         "mic_004_patch_aligned_doseweighted.star"),
        ("mic_001.mrc", "mic_001_autopick.star"), ("mic_002.mrc", "mic_002.box"),
        ("mic_005_patch_aligned_doseweighted.mrc", "mic_005.txt")]
    assert match.micrographs_without == [mics / "mic_003.mrc"]
    assert match.coordinates_without == [coords / "extra_999.star"]
    report = match.report()
    assert "4 micrograph(s) paired" in report
    assert "1 micrograph(s) without coordinates:" in report and "mic_003.mrc" in report
    assert "1 coordinate file(s) without a micrograph:" in report and "extra_999.star" in report
    assert "... and 1 more" in CoordinateMatch(micrographs_without=[mics / "a", mics / "b"]).report(limit=1)
    (coords / "mic_001.star").write_text("")
    _fails("share the name stem 'mic_001'", match_coordinates, mics, coords)


def test_match_expands_autopick_index(tmp_path, monkeypatch):
    (tmp_path / "mics").mkdir()
    for i in (1, 2):
        (tmp_path / "mics" / f"mic_00{i}.mrc").write_bytes(b"")
    write_autopick(_picks(("mic_001", "mic_002")), tmp_path / "AutoPick")
    match = match_coordinates(tmp_path / "mics", tmp_path / "AutoPick" / "autopick.star")
    assert [c.name for _, c in match.pairs] == ["mic_001_autopick.star", "mic_002_autopick.star"]
    assert list_coordinate_files(tmp_path / "AutoPick") == sorted((tmp_path / "AutoPick").iterdir())
    # an index listing absolute paths, its folder given as a relative path: each file counted once
    monkeypatch.chdir(tmp_path)
    match = match_coordinates("mics", "AutoPick")
    assert [c.name for _, c in match.pairs] == ["mic_001_autopick.star", "mic_002_autopick.star"]


def test_group_by_micrograph():
    df = _picks(("a/mic_001.mrc", "mic_002"))
    groups = group_by_micrograph(df)
    assert list(groups) == ["mic_001", "mic_002"] and all(len(g) == 4 for g in groups.values())
    _fails("share the stem 'mic_001'", group_by_micrograph, _picks(("a/mic_001.mrc", "b/mic_001.mrc")))
    _fails("no rlnMicrographName", group_by_micrograph, df.drop(columns="rlnMicrographName"))


# ----------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_file(tmp_path):
    _fails("file not found", read_coordinates, tmp_path / "absent.star", path=tmp_path / "absent.star")
    (tmp_path / "a.pdb").write_text("x")
    _fails("unknown coordinate format '.pdb'", read_coordinates, tmp_path / "a.pdb", path=tmp_path / "a.pdb")
    cases = {
        "nox.star": ("data_\n\nloop_\n_rlnCoordinateY #1\n1\n", "no table with rlnCoordinateX"),
        "abc.star": ("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 abc\n2 3\n",
                     r"'rlnCoordinateY' holds 1 value\(s\) that are not numbers \(first: 'abc' in row 1\)"),
        "junk.star": ("hello world\n", "holds no data block"),
        "short.box": ("1 2 3\n", "need 4 columns"),
        "text.box": ("1 2 x 4\n", "not numbers"),
        "ragged.box": ("1 2 3 4\n1 2 3 4 5\n", "ragged lines"),
        "neg.box": ("1 2 -64 -64\n", "box size that is not positive"),
        "noy.txt": ("image_name\tx_coord\tscore\nm\t1\t0.5\n", "missing Topaz column 'y_coord'"),
        "bad.txt": ("image_name\tx_coord\ty_coord\nm\t1\tfoo\n", "not numbers"),
        "empty.txt": ("", "empty Topaz file"),
        "noy.csv": ("X-Coordinate,Diameter\n1,2\n", "missing CryoPPP column 'Y-Coordinate'"),
        "neg.csv": ("X-Coordinate,Y-Coordinate,Diameter\n1,2,-5\n", "diameter that is not positive"),
        "inf.csv": ("X-Coordinate,Y-Coordinate,Diameter\n1,inf,5\n", "infinite"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        _fails(match, read_coordinates, tmp_path / name, path=tmp_path / name)
    _fails("micrograph_shape must be", read_coordinates, tmp_path / "neg.csv", micrograph_shape=(5,))


def test_bad_writes_leave_nothing(tmp_path, monkeypatch):
    picks = _picks()
    out = tmp_path / "out"
    out.mkdir()
    _fails("needs a box size", write_coordinates, picks.iloc[:2], out / "a.box", path=out / "a.box")
    _fails("box size must be a positive", write_coordinates, picks.iloc[:2], out / "a.box", box_size=-3)
    _fails("belong to 2 micrographs", write_coordinates, picks, out / "a.box", box_size=64)
    _fails("belong to 2 micrographs", write_coordinates, picks, out / "a.csv", box_size=64)
    _fails("missing required column 'rlnCoordinateY'", write_coordinates,
           picks.drop(columns="rlnCoordinateY"), out / "a.star")
    _fails("unknown coordinate format", write_coordinates, picks, out / "a.xyz")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(starfile, "write", broken)
    with pytest.raises(OSError):
        write_coordinates(picks, out / "a.star")
    assert list(out.iterdir()) == []


def test_empty_tables_round_trip(tmp_path):
    empty = pd.DataFrame({"rlnMicrographName": pd.Series(dtype=str),
                          "rlnCoordinateX": pd.Series(dtype=float), "rlnCoordinateY": pd.Series(dtype=float)})
    cases = (("e.star", {}), ("e.box", {"box_size": 10}), ("e.txt", {}), ("e.csv", {"box_size": 10}))
    for name, kwargs in cases:
        back = read_coordinates(write_coordinates(empty, tmp_path / name, **kwargs))
        assert len(back) == 0 and {"rlnCoordinateX", "rlnCoordinateY"} <= set(back.columns)
    index = write_autopick(pd.DataFrame({"rlnMicrographName": []}), tmp_path / "ap",
                           micrograph_paths=["m.mrc"])
    assert len(read_autopick(index)) == 0 and (tmp_path / "ap" / "m_autopick.star").is_file()


def test_convert_library_folder_to_autopick(tmp_path):
    src = tmp_path / "boxes"
    for stem in ("mic_001", "mic_002"):
        write_coordinates(_picks((stem,)), src / f"{stem}.box", box_size=64)
    written = convert_coordinates(src, tmp_path / "AutoPick", micrograph_shape=(4096, 4096), flip=True)
    assert [p.name for p in written] == ["autopick.star", "mic_001_autopick.star", "mic_002_autopick.star"]
    back = read_autopick(written[0])
    _same(flip_y(back, 4096), _picks(("mic_001",)).pipe(lambda d: pd.concat([d, _picks(("mic_002",))])),
          atol=0.5)  # through .box: integer corners


def test_real_coordinates_and_images_match(real_data_dir):
    stars = sorted((real_data_dir / "coordinates").glob("*.star"))
    assert len(stars) == 10
    counts = {}
    for path in stars:
        df = read_coordinates(path, micrograph_shape=(4096, 4096))
        assert df["rlnCoordinateX"].between(0, 4095).all() and df["rlnCoordinateY"].between(0, 4095).all()
        counts[micrograph_stem(path)] = len(df)
    assert all(500 <= n <= 900 for n in counts.values()) and sum(counts.values()) == 6511
    match = match_coordinates(real_data_dir / "images", real_data_dir / "coordinates")
    assert len(match.pairs) == 10 and not match.micrographs_without and not match.coordinates_without
    assert counts["Falcon_2012_06_12-14_33_35_0"] == 629


# ------------------------------------------------------------------------------------ properties
_positions = st.lists(st.tuples(st.integers(0, 8_000_000), st.integers(0, 8_000_000)), min_size=1,
                      max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=_positions, box=st.integers(2, 400))
def test_text_formats_round_trip_any_positions(tmp_path, positions, box):
    # positions on a 1/1000 pixel grid: every format keeps three decimals, .box whole corners
    xy = np.asarray(positions, dtype=float) / 1000
    picks = _picks(("mic_001",), n=len(xy)).assign(rlnCoordinateX=xy[:, 0], rlnCoordinateY=xy[:, 1])
    for name, atol in (("p.star", 1e-6), ("p.box", 0.5), ("p.txt", 1e-6), ("p.csv", 1e-6)):
        back = read_coordinates(write_coordinates(picks, tmp_path / name, box_size=box),
                                micrograph_name="mic_001")
        np.testing.assert_allclose(back[["rlnCoordinateX", "rlnCoordinateY"]], xy, atol=atol, rtol=0)
    np.testing.assert_allclose(flip_y(flip_y(picks, 4096), 4096)["rlnCoordinateY"], xy[:, 1], atol=1e-9)


# -------------------------------------------------------------------------------------- registry
def _write_any(fmt, picks, path, box_size=64):
    """Write ``picks`` in format ``fmt``: its own writer, or by hand for a read-only format (.cs)."""
    if FORMATS[fmt].write is not None:
        return write_coordinates(picks, path, fmt, box_size=box_size)
    assert fmt == "cs"
    arr = np.zeros(len(picks), dtype=[("location/micrograph_path", "S80"),
                                      ("location/micrograph_shape", "<u4", (2,)),
                                      ("location/center_x_frac", "<f8"), ("location/center_y_frac", "<f8")])
    arr["location/micrograph_path"] = [n.encode() for n in picks["rlnMicrographName"]]
    arr["location/micrograph_shape"] = [[5000, 6000]] * len(picks)
    arr["location/center_x_frac"] = picks["rlnCoordinateX"] / 6000
    arr["location/center_y_frac"] = picks["rlnCoordinateY"] / 5000
    with open(path, "wb") as handle:
        np.save(handle, arr)
    return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips_within_its_precision(tmp_path, fmt):
    kind = FORMATS[fmt]
    picks = _picks(("mic_001",), n=7, seed=3)
    picks["rlnCoordinateX"] += 0.123  # not on any grid a format might keep exactly
    path = _write_any(fmt, picks, tmp_path / f"mic_001{kind.suffixes[0]}")
    assert sniff_format(path) == fmt and resolve_format(path) == fmt
    back = read_coordinates(path)
    assert list(back.columns[:3]) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    assert back["rlnMicrographName"].map(micrograph_stem).tolist() == ["mic_001"] * 7
    assert 0 < kind.precision_px <= 0.5
    error = np.abs(back[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
                   - picks[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy())
    assert error.max() <= kind.precision_px
    if kind.write is None:
        _fails(f"cannot write the '{fmt}' format", write_coordinates, picks,
               tmp_path / f"o{kind.suffixes[0]}")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe garbage \x93NUMPY\n\x01", b"hello world\n1 2\n"])
def test_every_reader_names_the_file_on_empty_or_garbage(tmp_path, fmt, content):
    path = tmp_path / f"mic_001{FORMATS[fmt].suffixes[0]}"
    path.write_bytes(content)
    if fmt == "box" and content == b"":  # an empty .box is a micrograph without picks
        assert len(read_coordinates(path)) == 0
        return
    with pytest.raises(CrispError) as info:
        read_coordinates(path)
    assert info.value.path == str(path)


def test_unknown_extension_suggests_the_format_its_content_has(tmp_path):
    path = write_coordinates(_picks(("mic_001",)), tmp_path / "picks.txt")
    path = path.rename(tmp_path / "picks.dat")
    _fails("looks like 'txt'", read_coordinates, path, path=path)
    assert len(read_coordinates(path, "topaz")) == 4


# ------------------------------------------------------------------ RELION 3.1 optics kept (#15.4)
def test_convert_relion31_star_keeps_the_optics_block(tmp_path, capsys):
    src = tmp_path / "particles.star"
    src.write_text(RELION31)
    out = tmp_path / "one.star"
    assert main(["convert", str(src), str(out)]) == 0
    text = out.read_text()
    assert "# version 30001\n\ndata_optics\n" in text and "# version 30001\n\ndata_particles\n" in text
    blocks = starfile.read(out, always_dict=True)
    original = starfile.read(src, always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    pd.testing.assert_frame_equal(blocks["optics"], original["optics"])
    assert "rlnVoltage" not in blocks["particles"].columns  # one value per optics group, not per particle
    assert blocks["particles"]["rlnOpticsGroup"].tolist() == [1, 1, 2]
    pd.testing.assert_frame_equal(read_coordinates(out), read_coordinates(src), check_like=True)
    # asked for explicitly: RELION 3.0, one table with the optics values per particle
    assert main(["convert", str(src), str(tmp_path / "old.star"), "--star-version", "3.0"]) == 0
    old = (tmp_path / "old.star").read_text()
    assert "data_optics" not in old and "# version" not in old
    np.testing.assert_allclose(starfile.read(tmp_path / "old.star")["rlnVoltage"], [200, 200, 300])
    # the library keeps it too: read -> write
    again = write_coordinates(read_coordinates(src), tmp_path / "again.star")
    assert list(starfile.read(again, always_dict=True)) == ["optics", "particles"]
    # inputs that disagree on an optics group are refused rather than merged wrongly
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.star").write_text(RELION31)
    (tmp_path / "in" / "b.star").write_text(RELION31.replace("200.000000", "120.000000")
                                            .replace("mic_00", "mic_10"))
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "both.star")]) == 2
    assert "different optics values for optics group 1" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "both.star"), "--star-version", "3.0"]) == 0
    np.testing.assert_allclose(read_coordinates(tmp_path / "both.star")["rlnVoltage"], [200, 200, 300, 120,
                                                                                        120, 300])
    (tmp_path / "in" / "b.star").write_text(RELION31.replace("mic_00", "mic_10"))  # the same optics: kept
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "same.star")]) == 0
    assert len(starfile.read(tmp_path / "same.star", always_dict=True)["optics"]) == 2
    assert main(["convert", str(src), str(tmp_path / "x.star"), "--star-version", "3.2"]) == 2
    assert "unknown RELION STAR version" in capsys.readouterr().err
    _fails("needs optics values", write_coordinates, _picks(), tmp_path / "n.star", star_version="3.1")


# ------------------------------------------------------------------------- .box corners (#15.5)
def test_convert_to_box_writes_integer_corners(tmp_path):
    picks = pd.DataFrame({"rlnMicrographName": "mic_001", "rlnCoordinateX": [100.4, 20.6, 31.5],
                          "rlnCoordinateY": [50.5, 10.2, 0.0]})
    src = write_coordinates(picks, tmp_path / "mic_001.star")
    assert main(["convert", str(src), str(tmp_path / "mic_001.box"), "--box-size", "20"]) == 0
    rows = [line.split("\t") for line in (tmp_path / "mic_001.box").read_text().splitlines()]
    assert rows == [["90", "41", "20", "20"], ["11", "0", "20", "20"], ["22", "-10", "20", "20"]]


# ---------------------------------------------------------------------- flip with heights (#14.8)
def test_convert_flip_y_refuses_picks_outside_the_micrograph_height(tmp_path, capsys):
    picks = pd.DataFrame({"rlnMicrographName": "mic_001", "rlnCoordinateX": [10.0, 20.0],
                          "rlnCoordinateY": [5.0, 150.0]})
    src = write_coordinates(picks, tmp_path / "mic_001.star")
    out = tmp_path / "o.star"
    # a height the picks do not fit (e.g. binned micrographs): refused, instead of writing y = -51
    assert main(["convert", str(src), str(out), "--flip-y", "--micrograph-shape", "100", "100"]) == 2
    err = capsys.readouterr().err
    assert "1 pick(s) lie outside the rows of a micrograph 100 pixels high" in err and "Traceback" not in err
    assert not out.exists()
    mics = tmp_path / "mics"
    write_mrc(mics / "mic_001.mrc", np.zeros((100, 80), np.float32), pixel_size=1.0)
    assert main(["convert", str(src), str(out), "--flip-y", "--micrographs", str(mics)]) == 2
    assert str(mics / "mic_001.mrc") in capsys.readouterr().err and not out.exists()
    # unknown height: refused as well
    assert main(["convert", str(src), str(out), "--flip-y"]) == 2
    assert "needs the micrograph height" in capsys.readouterr().err and not out.exists()
    # the height of the micrograph file given, when the picks fit it
    write_mrc(mics / "mic_001.mrc", np.zeros((200, 80), np.float32), pixel_size=1.0)
    assert main(["convert", str(src), str(out), "--flip-y", "--micrographs", str(mics)]) == 0
    np.testing.assert_allclose(read_coordinates(out)["rlnCoordinateY"], [194, 49])
    assert (read_coordinates(out)["rlnCoordinateY"] >= 0).all()


def test_topaz_micrograph_named_like_a_missing_value(tmp_path):
    """A micrograph called "nan" (or "NA") is a name, not a missing value (found by the fuzz test)."""
    from crisp.io.coordinates import read_coordinates

    path = tmp_path / "picks.txt"
    path.write_text("x_coord\timage_name\ty_coord\n0\tnan\t0\n5\tNA\t3\n")
    table = read_coordinates(path, "topaz")
    assert list(table["rlnMicrographName"]) == ["nan", "NA"]
    assert table["rlnCoordinateY"].tolist() == [0.0, 3.0]
    path.write_text("x_coord\timage_name\ty_coord\n0\ta\tnan\n")  # a missing number is still refused
    with pytest.raises(CrispError, match="empty value"):
        read_coordinates(path, "topaz")
