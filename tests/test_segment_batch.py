"""`crisp segment` on the batch engine: not into its inputs, refuses other runs, survives SIGKILL."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crisp.batch import MANIFEST, STATE_DIR
from crisp.cli import main
from crisp.io.micrographs import write_mrc
from interrupt import crisp_argv, leftover_temporaries, output_data, run_killed

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny trained runs on one tiny dataset (seeds 0 and 7: different networks)."""
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    root = tmp_path_factory.mktemp("segment-runs")
    ds = make_dataset(root / "ds", n=3, size=128, n_train=2, n_val=1)
    first = train(tiny_config(epochs=1), ds, root / "run0", progress=False)
    second = train(tiny_config(epochs=1, seed=7), ds, root / "run7", progress=False)
    return first, second


def _micrographs(folder: Path, n: int = 6, size: int = 160) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        for cy, cx in rng.uniform(12, size - 12, (6, 2)):
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0).astype(np.float32)
        write_mrc(folder / f"m{i}.mrc", image, pixel_size=2.0)
    return folder


def _segment(*args) -> int:
    return main(["segment", *map(str, args), "--no-progress"])


def _maps(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.mrc"))}


def test_output_folder_that_is_the_input_folder_is_refused(runs, tmp_path, capsys):
    """Defect 2: `crisp segment RUN mics/ -o mics/ --overwrite` replaced the micrographs with maps."""
    mics = _micrographs(tmp_path / "mics", n=2)
    before = {p.name: p.read_bytes() for p in mics.iterdir()}
    assert _segment(runs[0], mics, "-o", mics, "--overwrite") == 2
    assert "input folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in mics.iterdir()} == before  # untouched, nothing added
    # a single micrograph file whose folder is the output folder: also refused
    assert _segment(runs[0], mics / "m0.mrc", "-o", mics, "--overwrite") == 2
    assert {p.name: p.read_bytes() for p in mics.iterdir()} == before


def test_another_run_is_refused_naming_it_then_overwritten(runs, tmp_path, capsys):
    """Defect 3: segment with another run into the same folder kept the old maps with exit 0."""
    mics = _micrographs(tmp_path / "mics", n=2)
    out = tmp_path / "seg"
    assert _segment(runs[0], mics, "-o", out) == 0
    first = _maps(out)
    assert sorted(first) == ["m0.mrc", "m1.mrc"]
    capsys.readouterr()
    assert _segment(runs[1], mics, "-o", out) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "runs:" in err and "--overwrite" in err
    assert _maps(out) == first  # the old maps are untouched
    assert _segment(runs[1], mics, "-o", out, "--overwrite") == 0
    second = _maps(out)
    assert sorted(second) == sorted(first) and all(second[n] != first[n] for n in first)
    # the same run again: everything is skipped (the files are not rewritten)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")}
    assert _segment(runs[1], mics, "-o", out) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")} == stamps


def test_a_retrained_run_in_the_same_folder_is_refused(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    mics = _micrographs(tmp_path / "mics", n=1)
    out = tmp_path / "seg"
    assert _segment(run, mics, "-o", out) == 0
    shutil.copyfile(runs[1] / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt")  # "retrained"
    capsys.readouterr()
    assert _segment(run, mics, "-o", out) == 2
    assert "checkpoint_sha256" in capsys.readouterr().err


def test_other_tta_or_overlap_is_refused_but_batch_size_is_not(runs, tmp_path, capsys):
    mics = _micrographs(tmp_path / "mics", n=1)
    out = tmp_path / "seg"
    assert _segment(runs[0], mics, "-o", out) == 0
    capsys.readouterr()
    assert _segment(runs[0], mics, "-o", out, "--tta") == 2
    assert "tta: None -> True" in capsys.readouterr().err
    assert _segment(runs[0], mics, "-o", out, "--batch-size", "3") == 0


def test_done_maps_do_not_load_the_network(runs, tmp_path, monkeypatch):
    import crisp.predict
    from crisp.predict import segment_files

    mics = _micrographs(tmp_path / "mics", n=2)
    out = tmp_path / "seg"
    segment_files(runs[0], mics, out, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("the network was loaded although every map is done")

    monkeypatch.setattr(crisp.predict, "load_run", refuse)
    assert segment_files(runs[0], mics, out, progress=False) == [out / "m0.mrc", out / "m1.mrc"]


def test_keep_going_and_shards(runs, tmp_path, capsys):
    mics = _micrographs(tmp_path / "mics", n=3)
    (mics / "a_bad.mrc").write_bytes(b"not an mrc file")
    stop = tmp_path / "stop"
    assert _segment(runs[0], mics, "-o", stop) == 2
    assert "a_bad" in capsys.readouterr().err and _maps(stop) == {}  # stops at the first (sorted) item
    going = tmp_path / "going"
    assert _segment(runs[0], mics, "-o", going, "--keep-going") == 2
    assert "1 of 4 item(s) failed (a_bad:" in capsys.readouterr().err
    assert sorted(_maps(going)) == ["m0.mrc", "m1.mrc", "m2.mrc"]
    (mics / "a_bad.mrc").unlink()
    sharded = tmp_path / "sharded"
    assert _segment(runs[0], mics, "-o", sharded, "--shard", "2/2") == 0
    assert sorted(_maps(sharded)) == ["m1.mrc"]
    assert _segment(runs[0], mics, "-o", sharded, "--shard", "1/2") == 0
    assert output_data(sharded) == output_data(going)
    assert _segment(runs[0], mics, "-o", sharded, "--shard", "3/2") == 2


def test_hidden_leftovers_are_neither_inputs_nor_kept(runs, tmp_path):
    """Defect 6: a `.NAME.part.mrc` left by a killed run broke the next segment of that folder."""
    mics = _micrographs(tmp_path / "mics", n=2)
    (mics / ".m0.x1y2.part.mrc").write_bytes(b"half a file")  # e.g. a folder of maps from a killed run
    out = tmp_path / "seg"
    out.mkdir()
    (out / ".m1.abcd.part.mrc").write_bytes(b"half a file")
    assert _segment(runs[0], mics, "-o", out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR, MANIFEST, "m0.mrc", "m1.mrc"]


def test_sigkill_then_rerun_gives_the_uninterrupted_maps(runs, tmp_path):
    """Defect 6: SIGKILL part-way; the rerun completes, equals an uninterrupted run, leaves no temporary."""
    mics = _micrographs(tmp_path / "mics", n=6, size=256)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert _segment(runs[0], mics, "-o", reference) == 0  # one thread here as in the killed process
    seen = run_killed(crisp_argv("segment", runs[0], mics, "--no-progress", "-o", out), out, after=2)
    assert 2 <= seen < 6
    assert len(list(out.glob("*.mrc"))) < 6
    assert _segment(runs[0], mics, "-o", out) == 0
    expected = output_data(reference)
    assert sorted(expected) == [f"m{i}.mrc" for i in range(6)]
    assert output_data(out) == expected
    assert leftover_temporaries(out) == []
