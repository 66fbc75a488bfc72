"""Run comparison tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from crisp.compare import compare_runs, flatten, to_markdown, write_comparison
from crisp.config import save_yaml
from crisp.errors import CrispError


def _run(root, name, arch, iou, params):
    run = root / name
    run.mkdir()
    save_yaml(run / "config.yaml", {"arch": arch, "encoder": "resnet18", "seed": 1,
                                    "crf": {"kind": "none", "theta_alpha": 160.0}})
    (run / "summary.json").write_text(json.dumps({"parameters": params, "best": {"val_iou": iou - 0.01}}))
    (run / "evaluation").mkdir()
    (run / "evaluation" / "test.json").write_text(json.dumps({"pooled": {"iou": iou, "f1": iou + 0.05}}))
    return run


def test_flatten_nested():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": 2, "e": "1,2"}


def test_compare_sorts_and_drops_constant_settings(tmp_path):
    runs = [_run(tmp_path, "u", "unet", 0.80, 100), _run(tmp_path, "upp", "unetplusplus", 0.90, 300),
            _run(tmp_path, "fpn", "fpn", 0.85, 200)]
    table = compare_runs(runs, sort_by="test.pooled.iou")
    assert list(table["run"]) == ["upp", "fpn", "u"]
    assert "arch" in table and "encoder" not in table  # encoder equal in all runs
    assert "crf.theta_alpha" not in table  # a numeric setting is not a result
    assert list(table["summary.parameters"]) == [300, 200, 100]
    md, csv = write_comparison(table, tmp_path / "cmp")
    assert pd.read_csv(csv)["run"].tolist() == ["upp", "fpn", "u"]
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| run | arch |") and len(lines) == 5
    assert "0.9000" in to_markdown(table)


def test_compare_bad_inputs(tmp_path):
    with pytest.raises(CrispError, match="not found"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrispError, match="not a run directory"):
        compare_runs([tmp_path / "empty"])
    run = _run(tmp_path, "a", "unet", 0.5, 1)
    with pytest.raises(CrispError, match="cannot sort by 'zzz'"):
        compare_runs([run], sort_by="zzz")


def test_compare_cli(tmp_path, capsys):
    from crisp.cli import main

    runs = [_run(tmp_path, "u", "unet", 0.80, 100), _run(tmp_path, "f", "fpn", 0.85, 200)]
    assert main(["compare", *map(str, runs), "--sort-by", "test.pooled.f1", "-o", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert out.index("| f |") < out.index("| u |")
    assert (tmp_path / "t.md").is_file() and (tmp_path / "t.csv").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: run directory not found" in capsys.readouterr().err
