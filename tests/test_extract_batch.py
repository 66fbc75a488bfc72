"""`crisp extract` on the batch engine: resume byte-identical, other settings or picks refused, shards."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.batch import read_records
from crisp.cli import main
from crisp.errors import CrispError
from crisp.io.coordinates import write_autopick, write_coordinates
from crisp.io.micrographs import write_mrc
from crisp.io.stacks import extract_particles
from interrupt import crisp_argv, leftover_temporaries, output_data, run_killed

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
N_MICS = 8


def _project(root, n=N_MICS, shape=(512, 512), per_mic=40):
    """Noise micrographs and picks at non-integer positions (some near the edges, to be skipped)."""
    rng = np.random.default_rng(3)
    mics = root / "mics"
    frames = []
    for k in range(n):
        name = f"m{k:02d}"
        write_mrc(mics / f"{name}.mrc", rng.normal(0, 1, shape).astype(np.float32), pixel_size=1.5)
        frames.append(pd.DataFrame({M: f"{name}.mrc", X: rng.uniform(5, shape[1] - 5, per_mic),
                                    Y: rng.uniform(5, shape[0] - 5, per_mic), S: rng.uniform(0, 1, per_mic),
                                    "rlnDefocusU": rng.uniform(1e4, 2e4, per_mic)}))
    picks = pd.concat(frames, ignore_index=True)
    write_autopick(picks, root / "picks")
    return mics, root / "picks", picks


def test_sigkill_then_rerun_gives_the_uninterrupted_particles(tmp_path):
    mics, picks, _ = _project(tmp_path)
    args = ["extract", str(mics), str(picks), "--box", "64", "--bin", "2", "--threshold", "0.2"]
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main([*args, "-o", str(reference), "--project-dir", str(reference)]) == 0
    seen = run_killed(crisp_argv(*args, "-o", str(out), "--project-dir", str(out)), out, after=1)
    assert 1 <= seen < N_MICS, f"killed after {seen} of {N_MICS} micrographs"
    assert not (out / "particles.star").exists()  # written after the batch
    assert main([*args, "-o", str(out), "--project-dir", str(out)]) == 0
    expected = output_data(reference)
    assert "Particles/m07.mrcs" in expected and "particles.star" in expected
    assert output_data(out) == expected
    assert leftover_temporaries(out) == []


def test_other_settings_or_picks_are_refused_then_overwritten(tmp_path, capsys):
    mics, picks, table = _project(tmp_path, n=2)
    out = tmp_path / "particles"
    args = ["extract", str(mics), str(picks), "-o", str(out), "--box", "32"]
    assert main(args) == 0
    before = output_data(out)
    capsys.readouterr()
    assert main([*args[:-1], "48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}:") and "box_px: 32 -> 48" in err[0]
    assert main([*args, "--no-invert"]) == 2
    assert "invert: True -> False" in capsys.readouterr().err
    assert output_data(out) == before  # nothing rewritten
    # other picks: stacks of the earlier picks are not mixed with new ones
    moved = table.assign(**{X: table[X] + 0.75})
    with pytest.raises(CrispError, match="picks: "):
        extract_particles(mics, moved, out, 32, progress=False)
    result = extract_particles(mics, moved, out, 32, progress=False, overwrite=True)
    assert result.skipped_existing == 0 and len(result.per_micrograph) == 2
    fresh = extract_particles(mics, moved, tmp_path / "fresh", 32, progress=False)
    assert output_data(out) == output_data(tmp_path / "fresh") and fresh.n_particles == result.n_particles
    # --overwrite through the CLI: the new box size
    assert main([*args[:-1], "48", "--overwrite"]) == 0
    assert mrcfile.read(out / "Particles" / "m00.mrcs").shape[1:] == (48, 48)


def test_output_folder_may_not_be_an_input_folder(tmp_path, capsys):
    mics, picks, _ = _project(tmp_path, n=1)
    for folder in (mics, picks):
        assert main(["extract", str(mics), str(picks), "-o", str(folder), "--box", "32"]) == 2
        err = capsys.readouterr().err
        assert "input" in err and str(folder) in err
        assert not (folder / "Particles").exists() and not (folder / "particles.star").exists()


def test_shards_into_one_folder_give_one_particles_star(tmp_path):
    mics, picks, _ = _project(tmp_path, n=5, shape=(256, 256), per_mic=10)
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    args = ["extract", str(mics), str(picks), "--box", "32"]
    assert main([*args, "-o", str(whole), "--project-dir", str(whole)]) == 0
    for shard in ("1/3", "3/3", "2/3"):
        assert main([*args, "-o", str(sharded), "--shard", shard, "--project-dir", str(sharded)]) == 0
    assert set(read_records(sharded)) == {f"m{k:02d}" for k in range(5)}
    assert output_data(sharded) == output_data(whole)
    star = starfile.read(sharded / "particles.star", always_dict=True)["particles"]
    assert sorted(star[M].map(lambda p: p.rsplit("/", 1)[-1]).unique()) == [f"m{k:02d}.mrc" for k in range(5)]


def test_keep_going_skips_an_unreadable_micrograph(tmp_path, capsys):
    mics, picks, _ = _project(tmp_path, n=3, shape=(256, 256), per_mic=10)
    path = mics / "m01.mrc"
    with mrcfile.open(path, mode="r+") as mrc:  # a header that says 256 x 256, data cut short
        mrc.header.map = b"MAP "
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 4096])
    out = tmp_path / "particles"
    assert main(["extract", str(mics), str(picks), "-o", str(out), "--box", "32", "--keep-going",
                 "--project-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 item(s) failed" in err and "m01" in err
    star = starfile.read(out / "particles.star", always_dict=True)["particles"]
    assert sorted(star["rlnImageName"].str.split("@").str[1].unique()) == ["Particles/m00.mrcs",
                                                                          "Particles/m02.mrcs"]


def test_a_picks_star_file_beside_the_output_is_allowed(tmp_path):
    # only folders the inputs were listed from are refused: a picks file in the working folder is fine
    mics, _, table = _project(tmp_path, n=1, shape=(256, 256), per_mic=10)
    write_coordinates(table, tmp_path / "work" / "picks.star")
    assert main(["extract", str(mics), str(tmp_path / "work" / "picks.star"), "-o", str(tmp_path / "work"),
                 "--box", "32"]) == 0
    assert (tmp_path / "work" / "particles.star").is_file()
