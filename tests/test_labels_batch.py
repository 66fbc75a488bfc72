"""`crisp labels` on the batch engine: interruption, settings, inputs, failures, shards."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.batch import MANIFEST, STATE_DIR
from crisp.cli import main
from crisp.config import read_yaml
from crisp.labels import disk_mask
from interrupt import crisp_argv, leftover_temporaries, output_data, run_killed

SHAPE = (96, 128)
RADIUS = 6


def _dataset(root, n=4, shape=SHAPE, seed=0):
    """``n`` MRC micrographs with dark discs and one STAR of centres each."""
    from crisp.io.micrographs import write_mrc

    mics, coords = root / "mics", root / "coords"
    mics.mkdir(parents=True)
    coords.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.uniform(10, shape[1] - 10, 5).round(1)
        y = rng.uniform(10, shape[0] - 10, 5).round(1)
        image = rng.normal(0, 1, shape).astype(np.float32) - 3 * disk_mask(shape, x, y, RADIUS)
        write_mrc(mics / f"m{i:02d}.mrc", image, pixel_size=2.0)
        starfile.write(pd.DataFrame({"rlnCoordinateX": x, "rlnCoordinateY": y}), coords / f"m{i:02d}.star")
    return mics, coords


def _labels(mics, coords, out, *extra):
    return main(["labels", "-m", str(mics), "-c", str(coords), "-o", str(out), "--radius", str(RADIUS),
                 "--qc-count", "2", "--no-progress", *map(str, extra)])


def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(tmp_path):
    """SIGKILL after 2 of 10 micrographs; the rerun completes to the same files and leaves no temporary."""
    mics, coords = _dataset(tmp_path, n=10, shape=(512, 512))
    argv = crisp_argv("labels", "-m", mics, "-c", coords, "--radius", RADIUS,
                      "--qc-count", "1", "--no-progress", "-o")
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run([*argv, str(reference)], check=True, capture_output=True)
    seen = run_killed([*argv, str(out)], out, after=2)
    assert 2 <= seen < 10
    assert not (out / "labels.yaml").exists()  # killed inside the batch, before the summary
    subprocess.run([*argv, str(out)], check=True, capture_output=True)
    expected = output_data(reference)
    assert len([n for n in expected if n.startswith("masks/")]) == 10
    assert {"labels.yaml", "qc.png"} <= set(expected)
    assert output_data(out) == expected
    assert leftover_temporaries(out) == []
    assert read_yaml(out / "labels.yaml")["complete"] is True


@pytest.mark.parametrize("which", ["micrographs", "coordinates"])
def test_output_folder_may_not_be_an_input_folder(tmp_path, capsys, which):
    mics, coords = _dataset(tmp_path, n=2)
    target = mics if which == "micrographs" else coords
    before = sorted(p.name for p in target.iterdir())
    assert _labels(mics, coords, target) == 2
    err = capsys.readouterr().err
    assert "input folder" in err and str(target) in err
    assert sorted(p.name for p in target.iterdir()) == before  # nothing written there


def test_other_settings_are_refused_by_name_then_overwritten(tmp_path, capsys):
    mics, coords = _dataset(tmp_path)
    out = tmp_path / "ds"
    assert _labels(mics, coords, out) == 0
    masks = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    capsys.readouterr()
    assert _labels(mics, coords, out, "--disk-fraction", "0.5") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "disk_fraction: 1.0 -> 0.5" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == masks
    # --qc-count decides no output: a rerun with another one is no conflict and redoes nothing
    assert _labels(mics, coords, out, "--qc-count", "0") == 0
    assert "0 micrographs labelled, 4 already done" in capsys.readouterr().out
    assert _labels(mics, coords, out, "--disk-fraction", "0.5", "--overwrite") == 0
    assert "4 micrographs labelled, 0 already done" in capsys.readouterr().out
    assert read_yaml(out / "labels.yaml")["settings"]["disk_fraction"] == 0.5
    assert all(p.read_bytes() != masks[p.name] for p in (out / "masks").iterdir())


def test_a_changed_coordinate_file_redoes_only_its_micrograph(tmp_path, capsys):
    mics, coords = _dataset(tmp_path)
    out = tmp_path / "ds"
    assert _labels(mics, coords, out) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    starfile.write(pd.DataFrame({"rlnCoordinateX": [50.0], "rlnCoordinateY": [40.0]}), coords / "m02.star",
                   overwrite=True)
    capsys.readouterr()
    assert _labels(mics, coords, out) == 0
    assert "1 micrographs labelled, 3 already done" in capsys.readouterr().out
    changed = [n for n, t in stamps.items() if (out / "masks" / n).stat().st_mtime_ns != t]
    assert changed == ["m02.mrc"]
    from crisp.io.micrographs import read_micrograph

    np.testing.assert_array_equal(read_micrograph(out / "masks" / "m02.mrc").data,
                                  disk_mask(SHAPE, np.array([50.0]), np.array([40.0]), RADIUS))
    meta = read_yaml(out / "labels.yaml")
    assert meta["micrographs"]["m02"]["n_used"] == 1 and meta["n_particles"] == 16


def test_keep_going_labels_the_others_and_names_the_failure(tmp_path, capsys):
    mics, coords = _dataset(tmp_path)
    starfile.write(pd.DataFrame({"rlnCoordinateX": [900.0], "rlnCoordinateY": [900.0]}), coords / "m01.star",
                   overwrite=True)  # all outside: this micrograph fails
    stop = tmp_path / "stop"
    assert _labels(mics, coords, stop) == 2
    assert "fall outside" in capsys.readouterr().err
    assert sorted(p.name for p in (stop / "masks").iterdir()) == ["m00.mrc"]  # stopped at the failure
    out = tmp_path / "go"
    assert _labels(mics, coords, out, "--keep-going") == 2
    err = capsys.readouterr().err
    assert "1 of 4 item(s) failed" in err and "m01" in err and "fall outside" in err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["m00.mrc", "m02.mrc", "m03.mrc"]
    meta = read_yaml(out / "labels.yaml")
    assert meta["complete"] is False and sorted(meta["micrographs"]) == ["m00", "m02", "m03"]
    record = json.loads((out / STATE_DIR / "items" / "m01.json").read_text())
    assert record["status"] == "failed" and "fall outside" in record["error"]


def test_two_shards_make_the_same_folder_as_one_run(tmp_path):
    mics, coords = _dataset(tmp_path, n=5)
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert _labels(mics, coords, whole) == 0
    assert _labels(mics, coords, sharded, "--shard", "2/2") == 0
    assert sorted(p.name for p in (sharded / "masks").iterdir()) == ["m01.mrc", "m03.mrc"]
    assert read_yaml(sharded / "labels.yaml")["complete"] is False
    assert _labels(mics, coords, sharded, "--shard", "1/2") == 0
    assert output_data(sharded) == output_data(whole)
    assert json.loads((sharded / MANIFEST).read_text())["counts"] == {"done": 5, "failed": 0}


@pytest.mark.parametrize("shard", ["3/2", "0/2", "a/b"])
def test_bad_shard_is_exit_2(tmp_path, capsys, shard):
    mics, coords = _dataset(tmp_path, n=1)
    assert _labels(mics, coords, tmp_path / "ds", "--shard", shard) == 2
    assert "--shard" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
