"""`crisp simulate` on the batch engine: interruption, settings, count, failures, shards."""

from __future__ import annotations

import json
import subprocess

import pytest

from crisp.batch import MANIFEST, STATE_DIR
from crisp.cli import main
from crisp.errors import CrispError
from crisp.simulate import make_config, simulate_dataset
from interrupt import crisp_argv, leftover_temporaries, output_data, run_killed

TINY = ["--size", "160", "--particles", "2", "--seed", "4", "--quiet"]


def _simulate(out, *extra):
    return main(["simulate", "-o", str(out), *TINY, *map(str, extra)])


def _names(folder, sub="micrographs"):
    return sorted(p.stem for p in (folder / sub).glob("*.mrc"))


def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(tmp_path):
    """SIGKILL after 2 of 5 micrographs; the rerun completes to the same files and leaves no temporary."""
    argv = crisp_argv("simulate", "--count", 5, "--save-clean", *TINY, "-o")
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run([*argv, str(reference)], check=True, capture_output=True)
    seen = run_killed([*argv, str(out)], out, after=2)
    assert 2 <= seen < 5
    assert not (out / "preview.png").exists()  # killed inside the batch, before the dataset-level files
    subprocess.run([*argv, str(out)], check=True, capture_output=True)
    expected = output_data(reference)
    assert _names(reference) == [f"synth_{i:04d}" for i in range(5)]
    assert {"simulation.yaml", "preview.png", "clean/synth_0004.mrc", "instances/synth_0004.mrc",
            "coordinates/synth_0004.star"} <= set(expected)
    assert output_data(out) == expected
    assert leftover_temporaries(out) == []


def test_other_settings_are_refused_by_name_then_overwritten(tmp_path, capsys):
    out = tmp_path / "sim"
    assert _simulate(out, "--count", 2) == 0
    first = output_data(out)
    capsys.readouterr()
    assert _simulate(out, "--count", 2, "--snr", 0.5) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "snr: 0.02 -> 0.5" in err and "--overwrite" in err
    assert output_data(out) == first
    assert _simulate(out, "--count", 2, "--snr", 0.5, "--overwrite") == 0
    again = output_data(out)
    assert again["micrographs/synth_0000.mrc"] != first["micrographs/synth_0000.mrc"]
    assert again["masks/synth_0000.mrc"] == first["masks/synth_0000.mrc"]  # same particles, other noise
    assert "snr: 0.5" in (out / "simulation.yaml").read_text()


def test_more_micrographs_later_makes_only_the_new_ones(tmp_path):
    out = tmp_path / "sim"
    assert _simulate(out, "--count", 2) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "micrographs").iterdir()}
    assert _simulate(out, "--count", 3) == 0
    assert _names(out) == ["synth_0000", "synth_0001", "synth_0002"]
    assert {n: (out / "micrographs" / n).stat().st_mtime_ns for n in stamps} == stamps
    assert "count: 3" in (out / "simulation.yaml").read_text()
    whole = tmp_path / "whole"
    assert _simulate(whole, "--count", 3) == 0
    assert output_data(out) == output_data(whole)


def test_two_shards_make_the_same_folder_as_one_run(tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert _simulate(whole, "--count", 3) == 0
    assert _simulate(sharded, "--count", 3, "--shard", "2/2") == 0
    assert _names(sharded) == ["synth_0001"] and not (sharded / "preview.png").exists()
    assert _simulate(sharded, "--count", 3, "--shard", "1/2") == 0
    assert output_data(sharded) == output_data(whole)
    assert json.loads((sharded / MANIFEST).read_text())["counts"] == {"done": 3, "failed": 0}


@pytest.mark.parametrize("shard", ["3/2", "0/1", "1-2"])
def test_bad_shard_is_exit_2_and_writes_nothing(tmp_path, capsys, shard):
    assert _simulate(tmp_path / "sim", "--shard", shard) == 2
    assert "--shard" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


def test_keep_going_makes_the_others_and_names_the_failure(tmp_path, monkeypatch):
    import crisp.simulate.dataset as dataset

    real = dataset.simulate_micrograph

    def failing(reference, config, index, table=None):
        if index == 1:
            raise CrispError("simulated failure")
        return real(reference, config, index, table)

    monkeypatch.setattr(dataset, "simulate_micrograph", failing)
    config = make_config("small", width_px=160, height_px=160, particles=(2, 2), count=3, seed=4)
    with pytest.raises(CrispError, match="simulated failure"):
        simulate_dataset(tmp_path / "stop", config, progress=False)
    assert _names(tmp_path / "stop") == ["synth_0000"]
    out = tmp_path / "go"
    with pytest.raises(CrispError, match=r"1 of 3 item\(s\) failed \(synth_0001: simulated failure\)"):
        simulate_dataset(out, config, progress=False, keep_going=True)
    assert _names(out) == ["synth_0000", "synth_0002"]
    assert json.loads((out / STATE_DIR / "items" / "synth_0001.json").read_text())["status"] == "failed"
    monkeypatch.setattr(dataset, "simulate_micrograph", real)
    assert simulate_dataset(out, config, progress=False) == ["synth_0000", "synth_0001", "synth_0002"]
    assert _names(out) == ["synth_0000", "synth_0001", "synth_0002"]


def test_an_unrecorded_folder_is_not_taken_as_done(tmp_path, capsys):
    """A folder with dataset files but no batch manifest (another tool, or crisp before the engine)."""
    out = tmp_path / "sim"
    (out / "micrographs").mkdir(parents=True)
    (out / "micrographs" / "synth_0000.mrc").write_bytes(b"not ours")
    assert _simulate(out, "--count", 1) == 2
    assert "did not record" in capsys.readouterr().err
    assert _simulate(out, "--count", 1, "--overwrite") == 0
    assert (out / "micrographs" / "synth_0000.mrc").read_bytes()[:8] != b"not ours"
