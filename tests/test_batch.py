"""The batch engine: skip, refuse, redo, fail, shard, and survive SIGKILL (crisp.batch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crisp.batch import MANIFEST, STATE_DIR, Item, parse_shard, read_records, run_batch, select_shard
from crisp.errors import CrispError


def _inputs(tmp_path: Path, n: int = 4) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"m{i}.txt"
        path.write_text(f"{i * 7}\n")
        paths.append(path)
    return paths


def _items(paths: list[Path]) -> list[Item]:
    return [Item(p.stem, inputs=(p,), outputs=(f"{p.stem}.out", f"sub/{p.stem}.txt")) for p in paths]


class Doubler:
    """Writes twice the input number (plus an offset setting) to two outputs; counts its calls."""

    def __init__(self, offset: int = 0, fail: set[str] | None = None) -> None:
        self.offset, self.fail, self.calls = offset, fail or set(), []

    def __call__(self, item: Item, staging) -> dict:
        self.calls.append(item.name)
        if item.name in self.fail:
            raise CrispError("cannot read", item.inputs[0])
        value = 2 * int(item.inputs[0].read_text()) + self.offset
        staging.path(f"{item.name}.out").write_text(f"{value}\n")
        staging.path(f"sub/{item.name}.txt").write_text("x\n")
        return {"value": value}


def _run(paths, out, fn, offset=0, **kwargs):
    return run_batch("double", _items(paths), fn, out, {"offset": offset}, progress=False, **kwargs)


def test_runs_every_item_then_skips_them(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    first = _run(paths, out, Doubler())
    assert first.done == ["m0", "m1", "m2", "m3"] and not first.skipped
    assert [(out / f"m{i}.out").read_text() for i in range(4)] == ["0\n", "14\n", "28\n", "42\n"]
    assert first.records["m3"] == {"value": 42}
    again = Doubler()
    second = _run(paths, out, again)
    assert again.calls == [] and second.skipped == ["m0", "m1", "m2", "m3"]
    assert second.records == first.records
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["verb"] == "double" and manifest["settings"] == {"offset": 0}
    assert manifest["counts"] == {"done": 4, "failed": 0}
    assert set(read_records(out)) == {"m0", "m1", "m2", "m3"}


def test_other_settings_are_refused_naming_the_setting_then_overwritten(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler())
    with pytest.raises(CrispError, match=r"offset: 0 -> 5"):
        _run(paths, out, Doubler(5), offset=5)
    assert (out / "m1.out").read_text() == "14\n"  # the old outputs are untouched
    redo = Doubler(5)
    _run(paths, out, redo, offset=5, overwrite=True)
    assert redo.calls == ["m0", "m1", "m2", "m3"] and (out / "m1.out").read_text() == "19\n"


def test_another_verb_in_the_same_folder_is_refused(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler())
    with pytest.raises(CrispError, match="crisp double"):
        run_batch("triple", _items(paths), Doubler(), out, {"offset": 0}, progress=False)


def test_changed_input_or_missing_output_redoes_only_that_item(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler())
    time.sleep(0.01)
    paths[1].write_text("100\n")
    (out / "sub" / "m3.txt").unlink()
    again = Doubler()
    _run(paths, out, again)
    assert again.calls == ["m1", "m3"]
    assert (out / "m1.out").read_text() == "200\n" and (out / "sub" / "m3.txt").is_file()


def test_unrecorded_files_in_the_folder_are_not_taken_as_done(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "m0.out").write_text("stale\n")
    with pytest.raises(CrispError, match="did not record"):
        _run(paths, out, Doubler())
    _run(paths, out, Doubler(), overwrite=True)
    assert (out / "m0.out").read_text() == "0\n"


@pytest.mark.parametrize("where", ["input-folder", "file"])
def test_bad_output_folders(tmp_path, where):
    paths = _inputs(tmp_path)
    out = paths[0].parent
    if where == "file":
        out = tmp_path / "a-file"
        out.write_text("")
    with pytest.raises(CrispError) as err:
        _run(paths, out, Doubler())
    assert str(out) in str(err.value)
    assert not (out.parent / MANIFEST).exists() and not (paths[0].parent / MANIFEST).exists()


def test_output_folder_given_as_input_folder_is_refused(tmp_path):
    paths = _inputs(tmp_path)
    items = [Item(p.stem, outputs=(f"{p.stem}.out",)) for p in paths]  # inputs not even declared
    with pytest.raises(CrispError, match="input folder"):
        run_batch("double", items, Doubler(), paths[0].parent, {}, input_dirs=[paths[0].parent],
                  progress=False)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where nobody can create files")
def test_unwritable_output_folder(tmp_path):
    paths = _inputs(tmp_path)
    with pytest.raises(CrispError, match="does not accept new files"):
        _run(paths, Path("/proc/crisp-out"), Doubler())


def test_failures_stop_or_are_recorded_and_retried(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    with pytest.raises(CrispError, match="cannot read"):
        _run(paths, out, Doubler(fail={"m1"}))
    assert not (out / "m2.out").exists()
    result = _run(paths, out, Doubler(fail={"m1"}), keep_going=True)
    assert result.failed.keys() == {"m1"} and "cannot read" in result.failed["m1"]
    assert result.done == ["m2", "m3"] and result.skipped == ["m0"]
    with pytest.raises(CrispError, match="1 of 4 item"):
        result.raise_failures()
    retry = Doubler()
    _run(paths, out, retry)
    assert retry.calls == ["m1"]
    assert not list((out / STATE_DIR / "tmp").glob("*")) if (out / STATE_DIR / "tmp").exists() else True


def test_an_item_must_write_all_its_outputs(tmp_path):
    paths, out = _inputs(tmp_path, 1), tmp_path / "out"

    def lazy(item, staging):
        staging.path(f"{item.name}.out").write_text("1\n")

    with pytest.raises(RuntimeError, match="did not write"):
        _run(paths, out, lazy)
    assert not (out / "m0.out").exists()


def test_shards_together_equal_the_whole(tmp_path):
    paths = _inputs(tmp_path, 7)
    _run(paths, tmp_path / "whole", Doubler())
    for i in (2, 1, 3):  # any order, one folder
        _run(paths, tmp_path / "sharded", Doubler(), shard=(i, 3))
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.out"))
    parts = sorted(p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded").rglob("*.out"))
    assert whole == parts and len(whole) == 7
    for rel in whole:
        assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "sharded" / rel).read_bytes()
    names = [item.name for item in _items(paths)]
    shares = [{i.name for i in select_shard(_items(paths), (k, 3))} for k in (1, 2, 3)]
    assert set().union(*shares) == set(names) and sum(map(len, shares)) == len(names)


def test_parse_shard():
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(CrispError, match="--shard"):
            parse_shard(bad)


def test_stale_temporaries_are_removed(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler())
    import socket

    dead = out / STATE_DIR / "tmp" / f"{socket.gethostname()}--999999999-abcd" / "x"
    dead.mkdir(parents=True)
    (dead / "0000.out").write_text("half")
    legacy = out / ".m0.abc123.part.out"
    legacy.write_text("half")
    _run(paths, out, Doubler())
    assert not dead.parent.exists() and not legacy.exists()


_KILL_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from crisp.batch import Item, run_batch

inputs = sorted(Path(sys.argv[1]).glob("*.txt"))
def slow(item, staging):
    value = 2 * int(item.inputs[0].read_text())
    with open(staging.path(item.name + ".out"), "w") as fh:
        fh.write(str(value))
        fh.flush()
        if item.name == os.environ.get("KILL_AT"):
            os.kill(os.getpid(), signal.SIGKILL)  # half-written output, at a known item
        fh.write("\\n")
    staging.path("sub/" + item.name + ".txt").write_text("x\\n")
    return {"value": value}
items = [Item(p.stem, inputs=(p,), outputs=(p.stem + ".out", "sub/" + p.stem + ".txt")) for p in inputs]
run_batch("double", items, slow, sys.argv[2], {"offset": 0}, progress=False)
"""


@pytest.mark.parametrize("kill_at", ["m0", "m5", "m11"])
def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(tmp_path, kill_at):
    paths = _inputs(tmp_path, 12)
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT)
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(script), str(paths[0].parent), str(reference)], check=True)
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, str(script), str(paths[0].parent), str(out)],
                            env={**os.environ, "KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL
    assert not (out / f"{kill_at}.out").exists()  # the half-written file is not under its final name
    before = sorted(p.stem for p in paths).index(kill_at)  # items before it, in the script's (sorted) order
    assert len(list(out.glob("*.out"))) == before
    subprocess.run([sys.executable, str(script), str(paths[0].parent), str(out)], check=True)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and STATE_DIR not in p.parts)
    ref_files = sorted(str(p.relative_to(reference)) for p in reference.rglob("*")
                       if p.is_file() and STATE_DIR not in p.parts)
    assert files == ref_files
    for rel in ref_files:
        if rel != MANIFEST:
            assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert not [p for p in out.rglob("*") if ".part" in p.name or "tmp" in p.relative_to(out).parts]


def test_overwrite_recomputes_only_the_work_list_and_drops_other_settings(tmp_path):
    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler())
    redo = Doubler()
    run_batch("double", _items(paths[:1]), redo, out, {"offset": 0}, overwrite=True, progress=False)
    assert redo.calls == ["m0"]  # the same settings: the other items' outputs are kept
    assert sorted(p.name for p in out.glob("*.out")) == ["m0.out", "m1.out", "m2.out", "m3.out"]
    shard = Doubler()
    _run(paths, out, shard, shard=(2, 2), overwrite=True)
    assert shard.calls == ["m1", "m3"] and len(list(out.glob("*.out"))) == 4  # shard 1's outputs kept
    other = Doubler(5)
    run_batch("double", _items(paths[:1]), other, out, {"offset": 5}, overwrite=True, progress=False)
    # other settings: no output of the previous settings stays beside the new one
    assert sorted(p.name for p in out.glob("*.out")) == ["m0.out"]
    assert (out / "m0.out").read_text() == "5\n" and set(read_records(out)) == {"m0"}


def test_a_shard_starting_while_another_writes_is_not_refused(tmp_path, monkeypatch):
    """Shard 2 finds no manifest, then shard 1's manifest and first outputs appear before its clash
    check: they are shard 1's outputs (same settings), not unrecorded files."""
    import crisp.batch as batch

    paths, out = _inputs(tmp_path), tmp_path / "out"
    _run(paths, out, Doubler(), shard=(1, 2))  # shard 1 done: manifest + m0, m2
    hidden = tmp_path / "manifest-written-later"
    (out / MANIFEST).rename(hidden)  # as shard 2 saw the folder when it looked for the manifest
    real_read = batch._read_json

    def written_meanwhile(path):
        if path.name == MANIFEST and hidden.exists():
            hidden.rename(out / MANIFEST)  # shard 1 writes it before any output
        return real_read(path)

    monkeypatch.setattr(batch, "_read_json", written_meanwhile)
    second = Doubler()
    _run(paths, out, second, shard=(2, 2))
    assert second.calls == ["m1", "m3"] and len(read_records(out)) == 4
