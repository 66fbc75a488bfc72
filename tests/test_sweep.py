"""``crisp sweep``: one run per grid point, resumable, validated up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crisp.cli import main
from crisp.config import read_yaml, save_yaml
from crisp.workflow.sweep import load_sweep, run_name, run_sweep

TINY_BASE = {"epochs": 1, "bin": 2, "patch_px": 64, "encoder_depth": 3, "val_overlap_px": 16,
             "patches_per_micrograph": 2, "arch_params": {"decoder_channels": [16, 8, 4]}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from crisp.dataset import make_split, write_split
    from crisp.simulate import make_config, simulate_dataset

    root = tmp_path_factory.mktemp("sweep") / "data"
    config = make_config("small", width_px=256, height_px=256, pixel_size=7.08, count=5, particles=(5, 5))
    names = simulate_dataset(root, config, progress=False)
    write_split(root / "split.yaml", make_split(names, 2, 1, seed=0))
    return root


def write_grid(folder: Path, dataset: Path, grid: dict, **extra) -> Path:
    path = folder / "grid.yaml"
    save_yaml(path, {"dataset": str(dataset),
                     "out": "sweep", "preset": "cpu", "base": TINY_BASE, "grid": grid, "evaluate": "test",
                     **extra})
    return path


def test_two_runs_then_a_rerun_skips_both(dataset, tmp_path, capsys):
    grid = write_grid(tmp_path, dataset, {"loss": ["dice", "jaccard"], "crf.kind": ["none"]}, picker="tune")
    lines: list[str] = []
    table = run_sweep(grid, progress=False, echo=lines.append)
    out = tmp_path / "sweep"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["loss-dice", "loss-jaccard"]
    assert list(table["run"]) == ["loss-dice", "loss-jaccard"]
    assert "loss" in table and "test.pixel.iou" in table
    assert table["test.pixel.iou"].between(0, 1).all()
    assert table["test.picking.F1"].between(0, 1).all() and table["test.box.mAP"].between(0, 1).all()
    assert (out / "loss-dice" / "picker.yaml").is_file()
    assert (out / "comparison.md").is_file() and (out / "comparison.csv").is_file()
    for i, run in enumerate(("loss-dice", "loss-jaccard")):  # the table holds each run's own evaluation
        record = json.loads((out / run / "evaluation" / "test.json").read_text())
        assert table["test.pixel.iou"].iloc[i] == pytest.approx(record["pixel"]["iou"])
        assert table["test.picking.F1"].iloc[i] == pytest.approx(record["picking"]["F1"])
        assert record["micrographs"] == 2  # the 5 micrographs minus 2 train and 1 validation
        assert read_yaml(out / run / "config.yaml")["loss"] == run.split("-")[1]
    # the seed is the same in every run, so only the design differs
    configs = [(out / r / "config.yaml").read_text() for r in ("loss-dice", "loss-jaccard")]
    assert configs[0].replace("jaccard", "dice") == configs[1].replace("jaccard", "dice")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    capsys.readouterr()
    assert main(["sweep", str(grid)]) == 0  # the CLI on the finished sweep: both skipped, table printed
    out_text = capsys.readouterr().out
    assert out_text.count("skipped (done before)") == 2
    assert "| run |" in out_text and "loss-jaccard" in out_text and "comparison.md" in out_text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes
    # the base settings changed since: the finished runs are not passed off as runs of the new settings
    spec = read_yaml(grid)
    spec["base"] = {**spec["base"], "epochs": 2}
    save_yaml(grid, spec)
    assert main(["sweep", str(grid)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "epochs: 1 -> 2" in err_lines[0] and "loss-dice" in err_lines[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes


def test_bad_key_exits_2_naming_the_key_and_file(dataset, tmp_path, capsys):
    grid = write_grid(tmp_path, dataset, {"arch": ["unet"], "crf.kindd": ["none"]})
    assert main(["sweep", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "crf.kindd" in err and "grid.yaml" in err and "Traceback" not in err
    grid = write_grid(tmp_path, dataset, {"learning_rate": [0.1]})
    assert main(["sweep", str(grid)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_bad_value_is_refused_before_anything_runs(dataset, tmp_path):
    from crisp.errors import CrispError

    grid = write_grid(tmp_path, dataset, {"patch_px": [64, 100]})
    with pytest.raises(CrispError, match="patch_px"):
        load_sweep(grid)
    assert not (tmp_path / "sweep").exists()


def test_paths_are_relative_to_the_grid_file(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = {"dataset": "../data", "out": "runs/s", "grid": {"loss": ["dice"]}}
    save_yaml(tmp_path / "sub" / "g.yaml", spec)
    plan = load_sweep(tmp_path / "sub" / "g.yaml")
    assert plan.dataset == tmp_path / "sub" / ".." / "data"
    assert plan.out == tmp_path / "sub" / "runs" / "s"
    assert list(plan.runs) == ["run"]


def test_run_names_are_filesystem_safe():
    name = run_name({"encoder": "tu-mobilenetv3/small 100", "crf.kind": "cd-crf"}, ["encoder", "crf.kind"])
    assert "/" not in name and " " not in name
    assert name == "encoder-tu-mobilenetv3-small-100_kind-cd-crf"


def test_expected_particles_tunes_and_evaluates_by_recall(dataset, tmp_path):
    """With sparse truth (``expected_particles``) the picker is tuned on recall at N picks per
    micrograph and the evaluation holds recall only, as ``crisp tune-picker/evaluate
    --expected-particles`` do."""
    from crisp.errors import CrispError

    grid = write_grid(tmp_path, dataset, {"loss": ["dice"]}, picker="tune", expected_particles=5)
    run_sweep(grid, progress=False, echo=lambda _: None)
    run = tmp_path / "sweep" / "run"  # one grid point: nothing varies
    picker = read_yaml(run / "picker.yaml")
    assert picker["expected_particles"] == 5 and "recall" in picker["tuned_on"]
    record = json.loads((run / "evaluation" / "test.json").read_text())
    assert record["picking"]["expected_particles"] == 5
    assert "recall_at_n" in record["picking"] and "precision" not in record["picking"]
    for bad in (0, "many"):
        with pytest.raises(CrispError, match="expected_particles"):
            load_sweep(write_grid(tmp_path, dataset, {"loss": ["dice"]}, expected_particles=bad))
