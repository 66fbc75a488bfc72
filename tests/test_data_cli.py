"""The data verbs through crisp.cli.main: simulate, preprocess, split."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.cli import main
from crisp.commands.data_cmds import parse_range
from crisp.dataset import read_split
from crisp.errors import CrispError

QUICK = ["--size", "256", "--particles", "5", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synthetic"
    assert main(["simulate", "-o", str(out), "--count", "4", "--seed", "7", *QUICK]) == 0
    return out


def test_simulate_writes_a_dataset_folder(dataset):
    names = sorted(p.stem for p in (dataset / "micrographs").glob("*.mrc"))
    assert names == [f"synth_{i:04d}" for i in range(4)]
    for sub in ("masks", "instances"):
        assert sorted(p.stem for p in (dataset / sub).glob("*.mrc")) == names
    truth = starfile.read(dataset / "coordinates" / "synth_0002.star")
    assert len(truth) == 5
    text = (dataset / "simulation.yaml").read_text()
    assert "seed: 7" in text and "width_px: 256" in text
    assert (dataset / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_rerun_is_a_no_op(dataset, capsys):
    stamp = (dataset / "micrographs" / "synth_0000.mrc").stat().st_mtime_ns
    assert main(["simulate", "-o", str(dataset), "--count", "4", "--seed", "7", *QUICK]) == 0
    assert (dataset / "micrographs" / "synth_0000.mrc").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("args,message", [
    (["--defocus", "-5000"], "defocus"),
    (["--snr", "0"], "SNR"),
    (["--snr", "-0.1"], "SNR"),
    (["--preset", "huge"], "unknown preset"),
    (["--map", "MISSING"], "not found"),
    (["--map", "NOTMRC"], "not a readable MRC"),
    (["--amplitude-contrast", "1.5"], "amplitude contrast"),
    (["--cs", "-1"], "spherical aberration"),
    (["--particles", "many"], "--particles"),
])
def test_simulate_bad_input_is_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    notmrc = tmp_path / "map.mrc"
    notmrc.write_text("hello")
    args = [{"MISSING": str(tmp_path / "none.mrc"), "NOTMRC": str(notmrc)}.get(a, a) for a in args]
    out = tmp_path / "out"
    assert main(["simulate", "-o", str(out), *QUICK, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_simulate_with_defocus_file_and_phantom(tmp_path):
    star = tmp_path / "ctf.star"
    starfile.write(pd.DataFrame({"rlnDefocusU": [15000.0]}), star)
    out = tmp_path / "ph"
    assert main(["simulate", "-o", str(out), "--count", "1", "--phantom", "c4", "--diameter-A", "110",
                 "--defocus-file", str(star), "--save-clean", *QUICK]) == 0
    truth = starfile.read(out / "coordinates" / "synth_0000.star")
    assert (truth["rlnDefocusU"] == 15000.0).all()
    assert (out / "clean" / "synth_0000.mrc").is_file()


def test_simulate_repeats_a_recorded_simulation(dataset, tmp_path):
    again = tmp_path / "again"
    assert main(["simulate", "-o", str(again), "--config", str(dataset / "simulation.yaml"), "--count", "1",
                 "--quiet"]) == 0
    with mrcfile.open(dataset / "micrographs" / "synth_0000.mrc") as a, \
            mrcfile.open(again / "micrographs" / "synth_0000.mrc") as b:
        assert np.array_equal(a.data, b.data)


def test_split_writes_manifest_and_guards_it(dataset, capsys):
    assert main(["split", str(dataset), "--train", "2", "--val", "1", "--seed", "3"]) == 0
    split = read_split(dataset / "split.yaml")
    assert (len(split.train), len(split.val), len(split.test)) == (2, 1, 1)
    assert sorted(split.train + split.val + split.test) == [f"synth_{i:04d}" for i in range(4)]
    assert main(["split", str(dataset), "--train", "2", "--val", "1", "--seed", "3"]) == 0
    assert main(["split", str(dataset), "--train", "3", "--val", "1"]) == 2
    assert "different split" in capsys.readouterr().err
    assert main(["split", str(dataset), "--train", "3", "--val", "1", "--force"]) == 0
    assert len(read_split(dataset / "split.yaml").train) == 3
    assert main(["split", str(dataset), "--train", "16", "--val", "6", "--force"]) == 2


def test_preprocess_verb_bins_and_scales_coordinates(dataset, tmp_path):
    out = tmp_path / "pre"
    assert main(["preprocess", str(dataset / "micrographs" / "synth_0000.mrc"), "-o", str(out),
                 "--bin", "2", "--normalize", "gmm", "--lowpass-A", "20",
                 "--coords", str(dataset / "coordinates"), "--quiet"]) == 0
    with mrcfile.open(out / "synth_0000.mrc") as mrc:
        assert mrc.data.shape == (128, 128) and mrc.data.dtype == np.float32
        assert float(mrc.voxel_size.x) == pytest.approx(2 * 3.54)
    truth = starfile.read(dataset / "coordinates" / "synth_0000.star")
    scaled = starfile.read(out / "coordinates" / "synth_0000.star")
    assert np.allclose(scaled["rlnCoordinateX"], truth["rlnCoordinateX"] / 2)
    assert main(["preprocess", str(tmp_path / "nothing.mrc"), "-o", str(out)]) == 2
    assert main(["preprocess", str(dataset / "micrographs"), "-o", str(out), "--normalize", "x"]) == 2


def test_parse_range():
    assert parse_range("150", "--particles", integer=True) == (150, 150)
    assert parse_range("100-300", "--particles", integer=True) == (100, 300)
    assert parse_range("1e4:2.5e4", "--defocus") == (10000.0, 25000.0)
    with pytest.raises(CrispError):
        parse_range("1.5", "--particles", integer=True)
