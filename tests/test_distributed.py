"""Batches on Dask (--workers, --scheduler) and in shards give a serial run's outputs (crisp.distributed).

One LocalCluster of 2 worker processes serves the module; each comparison runs the same batch
serially and on the cluster and compares every output byte (write times blanked) and every record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
import torch  # noqa: E402

from crisp.batch import MANIFEST, Item, read_records, run_batch  # noqa: E402
from crisp.cli import main  # noqa: E402
from crisp.config import save_yaml  # noqa: E402
from crisp.distributed import execution  # noqa: E402
from crisp.errors import CrispError  # noqa: E402
from crisp.io.coordinates import read_autopick  # noqa: E402
from crisp.io.micrographs import write_mrc  # noqa: E402
from interrupt import crisp_argv, leftover_temporaries, output_data  # noqa: E402

torch.set_num_threads(1)
N_MICS = 6
# the item functions below travel by value: a worker need not import this module (and torch) to run them
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def scheduler():
    """Address of a local Dask cluster: 2 worker processes, 1 thread each."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder holding a tiny network with seeded random weights (no training)."""
    from crisp.run import Run
    from crisp.train import build_network
    from test_train import tiny_config

    config = tiny_config()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "run"
    Run(path).save_network(build_network(config), config)
    return path


@pytest.fixture(scope="module")
def mics(tmp_path_factory) -> Path:
    """Six small micrographs with Gaussian blobs on noise."""
    folder = tmp_path_factory.mktemp("mics")
    rng = np.random.default_rng(3)
    size = 128
    yy, xx = np.mgrid[:size, :size]
    for i in range(N_MICS):
        image = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        for cy, cx in rng.uniform(12, size - 12, (6, 2)):
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0).astype(np.float32)
        write_mrc(folder / f"m{i}.mrc", image, pixel_size=2.0)
    return folder


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    """Six synthetic probability maps with well-separated particles."""
    from test_picking_finders import synthetic_map

    folder = tmp_path_factory.mktemp("maps")
    for k in range(N_MICS):
        prob, _ = synthetic_map(seed=k + 20, shape=(192, 224), n=10, n_pairs=1)
        write_mrc(folder / f"mic_{k:02d}.mrc", prob, pixel_size=2.0, dtype=np.float32)
    return folder


@pytest.fixture(scope="module")
def picker_yaml(tmp_path_factory) -> Path:
    from crisp.picking.tune import PickerConfig
    from test_picking_finders import DIAMETER

    path = tmp_path_factory.mktemp("picker") / "picker.yaml"
    save_yaml(path, PickerConfig(finder="grid-nms", params={"min_score": 0.05}, diameter_px=DIAMETER))
    return path


def _results(out: Path) -> dict[str, tuple]:
    """Name -> (status, outputs and their sizes, returned result) of every record (not the seconds)."""
    return {n: (r["status"], r.get("outputs"), r.get("result")) for n, r in read_records(out).items()}


# ------------------------------------------------------------------------------------------------
# trivial items (no network): the engine's own behaviour
# ------------------------------------------------------------------------------------------------
class Writer:
    """Writes ``name * 3`` to NAME.out; remembers one id per unpickled copy (its first call)."""

    def __init__(self, fail: frozenset[str] = frozenset(), kill: str | None = None,
                 marker: Path | None = None) -> None:
        self.fail, self.kill, self.marker, self.copy_id = fail, kill, marker, None

    def __call__(self, item: Item, staging) -> dict:
        if self.copy_id is None:
            self.copy_id = os.urandom(8).hex()  # a "network load": once per copy of this object
        if item.name in self.fail:
            raise CrispError("cannot read this micrograph", f"in/{item.name}.mrc")
        staging.path(f"{item.name}.out").write_text(item.name * 3)
        if item.name == self.kill and not self.marker.exists():
            self.marker.write_text("killed once")
            os._exit(13)  # the worker process dies mid-item, its output staged but not renamed
        return {"pid": os.getpid(), "copy": self.copy_id}


def _items(n: int = N_MICS) -> list[Item]:
    return [Item(f"m{i}", outputs=(f"m{i}.out",)) for i in range(n)]


def _outputs_and_names(out: Path) -> tuple[dict, dict]:
    return output_data(out), {n: (r["status"], r.get("outputs")) for n, r in read_records(out).items()}


def test_in_process_path_imports_no_dask(tmp_path):
    code = ("import sys; from crisp.batch import Item, run_batch; import crisp.cli, crisp.api\n"
            "run_batch('w', [Item('a', outputs=('a.out',))], "
            "lambda item, st: st.path('a.out').write_text('x'), sys.argv[1], {}, progress=False)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "a.out").read_text() == "x"


def test_items_on_two_workers_equal_the_serial_run_and_load_once_per_process(tmp_path, scheduler):
    def run(out: Path, **options):
        return run_batch("w", _items(), Writer(), out, {"k": 1}, progress=False, **options)

    serial = run(tmp_path / "serial")
    dask = run(tmp_path / "dask", scheduler=scheduler)
    assert output_data(tmp_path / "dask") == output_data(tmp_path / "serial")
    assert dask.done == serial.done == [f"m{i}" for i in range(N_MICS)]
    pids = {r["pid"] for r in dask.records.values()}
    copies = {r["copy"] for r in dask.records.values()}
    assert os.getpid() not in pids and len(copies) == len(pids)  # one unpickled function per process
    assert leftover_temporaries(tmp_path / "dask") == []
    # a rerun skips everything in this process: no task is submitted
    again = run(tmp_path / "dask", scheduler=scheduler)
    assert again.skipped == serial.done and not again.done and again.records == dask.records


def test_a_worker_killed_mid_item_is_retried_and_the_run_completes(tmp_path):
    """A local cluster of 2 (--workers 2): the worker running m3 dies once; Dask reruns m3 elsewhere."""
    marker = tmp_path / "killed"
    run_batch("w", _items(), Writer(), tmp_path / "serial", {}, progress=False)
    result = run_batch("w", _items(), Writer(kill="m3", marker=marker), tmp_path / "dask", {}, progress=False,
                       workers=2)
    assert marker.read_text() == "killed once"  # the kill did happen
    assert result.done == [f"m{i}" for i in range(N_MICS)] and not result.failed
    assert _outputs_and_names(tmp_path / "dask") == _outputs_and_names(tmp_path / "serial")
    assert leftover_temporaries(tmp_path / "dask") == []


def test_failures_stop_the_run_or_are_recorded_with_keep_going(tmp_path, scheduler):
    with pytest.raises(CrispError, match="cannot read this micrograph") as caught:
        run_batch("w", _items(), Writer(fail=frozenset({"m2"})), tmp_path / "a", {}, progress=False,
                  scheduler=scheduler)
    assert caught.value.path == "in/m2.mrc"  # the item's own error, as in a serial run
    assert read_records(tmp_path / "a")["m2"]["status"] == "failed"
    result = run_batch("w", _items(), Writer(fail=frozenset({"m2", "m4"})), tmp_path / "b", {},
                       progress=False, keep_going=True, scheduler=scheduler)
    assert list(result.failed) == ["m2", "m4"] and "cannot read" in result.failed["m4"]
    assert result.done == ["m0", "m1", "m3", "m5"]
    with pytest.raises(CrispError, match="2 of 6 item"):
        result.raise_failures()
    # the rerun (the failure fixed) redoes only the failed items
    fixed = run_batch("w", _items(), Writer(), tmp_path / "b", {}, progress=False, scheduler=scheduler)
    assert fixed.done == ["m2", "m4"] and len(fixed.skipped) == 4


def test_missing_dask_and_bad_options_are_one_line_errors(tmp_path, maps, picker_yaml, monkeypatch, capsys):
    with pytest.raises(CrispError, match="not both"):
        run_batch("w", _items(), Writer(), tmp_path / "o", {}, workers=2, scheduler="tcp://x:1")
    with pytest.raises(CrispError, match="at least 1"):
        run_batch("w", _items(), Writer(), tmp_path / "o", {}, workers=0)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(CrispError, match=r"install crisp-em\[cluster\]"):
        run_batch("w", _items(), Writer(), tmp_path / "o", {}, workers=2)
    with pytest.raises(CrispError, match=r"install crisp-em\[cluster\]"), execution(workers=2):
        run_batch("w", _items(), Writer(), tmp_path / "o", {})
    assert not (tmp_path / "o").exists()  # refused before the output folder is made
    monkeypatch.undo()
    assert main(["pick", str(maps), "-o", str(tmp_path / "p"), "--picker", str(picker_yaml),
                 "--workers", "2", "--scheduler", "tcp://x:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not both" in err


# ------------------------------------------------------------------------------------------------
# real verbs
# ------------------------------------------------------------------------------------------------
def test_segment_on_two_workers_equals_the_serial_run(tmp_path, tiny_run, mics, scheduler):
    from crisp.predict import segment_files

    serial = segment_files(tiny_run, mics, tmp_path / "serial", progress=False)
    with execution(scheduler=scheduler):
        dask = segment_files(tiny_run, mics, tmp_path / "dask", progress=False)
    assert [p.name for p in dask] == [p.name for p in serial] == [f"m{i}.mrc" for i in range(N_MICS)]
    assert output_data(tmp_path / "dask") == output_data(tmp_path / "serial")
    assert _results(tmp_path / "dask") == _results(tmp_path / "serial")
    assert leftover_temporaries(tmp_path / "dask") == []


def test_pick_on_two_workers_equals_the_serial_run(tmp_path, maps, picker_yaml, scheduler):
    def pick(out: Path, *extra: str) -> int:
        return main(["pick", str(maps), "-o", str(out), "--picker", str(picker_yaml), "--format", "star,box",
                     *extra])

    assert pick(tmp_path / "serial") == 0
    assert pick(tmp_path / "dask", "--scheduler", scheduler) == 0
    assert output_data(tmp_path / "dask", rename=True) == output_data(tmp_path / "serial", rename=True)
    assert _results(tmp_path / "dask") == _results(tmp_path / "serial")
    picks = read_autopick(tmp_path / "dask" / "autopick.star")  # the index and every file it lists
    assert picks["rlnMicrographName"].nunique() == N_MICS and len(picks) > 5 * N_MICS


def test_two_shards_in_separate_processes_merge_into_the_unsharded_run(tmp_path, maps, picker_yaml):
    def argv(out: Path, *extra: str) -> list[str]:
        return crisp_argv("pick", maps, "-o", out, "--picker", picker_yaml, "--format", "star,box", *extra)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(argv(tmp_path / "whole"), env=env, capture_output=True).returncode == 0
    shards = [subprocess.Popen(argv(tmp_path / "sharded", "--shard", f"{i}/2"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (1, 2)]
    for proc in shards:
        assert proc.wait() == 0, proc.stderr.read().decode()
    sharded = tmp_path / "sharded"
    assert len(read_records(sharded)) == N_MICS
    stamps = {p: p.stat().st_mtime_ns for p in sharded.glob("*_autopick.star")}
    # one final pick over the folder: every micrograph is skipped and the index lists them all
    final = subprocess.run(argv(sharded), env=env, capture_output=True, text=True)
    assert final.returncode == 0 and f"({N_MICS} done before)" in final.stdout
    assert {p: p.stat().st_mtime_ns for p in sharded.glob("*_autopick.star")} == stamps
    assert output_data(sharded, rename=True) == output_data(tmp_path / "whole", rename=True)
    assert read_autopick(sharded / "autopick.star")["rlnMicrographName"].nunique() == N_MICS
    assert (sharded / MANIFEST).is_file() and leftover_temporaries(sharded) == []
