"""Run comparison tables, on run folders in the shapes ``crisp train`` and ``crisp evaluate`` write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from crisp.compare import compare_runs, flatten, to_markdown, write_comparison
from crisp.config import read_yaml, save_yaml
from crisp.errors import CrispError


@pytest.fixture
def make_run(tiny_demo):
    """Copies of a real run folder (the session's tiny demo CNN: config.yaml, summary.json and
    evaluation/test.json as training and evaluation wrote them) with a few values changed."""
    real = tiny_demo.project / "runs" / "cnn"

    def make(root: Path, name: str, arch: str, iou: float, params: int) -> Path:
        run = root / name
        (run / "evaluation").mkdir(parents=True)
        config = read_yaml(real / "config.yaml")
        config["arch"] = arch
        save_yaml(run / "config.yaml", config)
        summary = json.loads((real / "summary.json").read_text())
        summary.update(parameters=params, best_val_iou=iou - 0.01)
        (run / "summary.json").write_text(json.dumps(summary))
        record = json.loads((real / "evaluation" / "test.json").read_text())
        record["pixel"].update(iou=iou, f1=iou + 0.05)
        (run / "evaluation" / "test.json").write_text(json.dumps(record))
        shutil.copy(real / "metrics.csv", run / "metrics.csv")
        return run

    return make


def test_flatten_nested():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": 2, "e": "1,2"}


def test_compare_sorts_and_drops_constant_settings(tmp_path, make_run):
    runs = [make_run(tmp_path, "u", "unet", 0.80, 100), make_run(tmp_path, "upp", "unetplusplus", 0.90, 300),
            make_run(tmp_path, "fpn", "fpn", 0.85, 200)]
    table = compare_runs(runs, sort_by="test.pixel.iou")
    assert list(table["run"]) == ["upp", "fpn", "u"]
    assert "arch" in table and "encoder" not in table  # encoder equal in all runs
    assert "crf.theta_alpha" not in table  # a numeric setting is not a result
    assert list(table["summary.parameters"]) == [300, 200, 100]
    assert table["summary.best_val_iou"].tolist() == pytest.approx([0.89, 0.84, 0.79])
    assert {"summary.best_epoch", "summary.wall_time_s", "test.picking.F1", "test.box.mAP"} <= set(table)
    md, csv = write_comparison(table, tmp_path / "cmp")
    assert pd.read_csv(csv)["run"].tolist() == ["upp", "fpn", "u"]
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| run | arch |") and len(lines) == 5
    assert "0.9000" in to_markdown(table)


def test_compare_bad_inputs(tmp_path, make_run):
    with pytest.raises(CrispError, match="not found"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrispError, match="not a run directory"):
        compare_runs([tmp_path / "empty"])
    run = make_run(tmp_path, "a", "unet", 0.5, 1)
    with pytest.raises(CrispError, match="cannot sort by 'zzz'"):
        compare_runs([run], sort_by="zzz")
    (run / "summary.json").write_text("{not json")
    with pytest.raises(CrispError, match="not a readable JSON file"):
        compare_runs([run])


def test_compare_cli(tmp_path, capsys, make_run):
    from crisp.cli import main

    runs = [make_run(tmp_path, "u", "unet", 0.80, 100), make_run(tmp_path, "f", "fpn", 0.85, 200)]
    assert main(["compare", *map(str, runs), "--sort-by", "test.pixel.f1", "-o", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert out.index("| f |") < out.index("| u |")
    assert (tmp_path / "t.md").is_file() and (tmp_path / "t.csv").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: run directory not found" in capsys.readouterr().err
