"""``crisp demo`` end to end at tiny sizes: every stage's output, the table, the report, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crisp.workflow.demo import TABLE_COLUMNS, make_demo_config, results_table, run_demo
from html_check import check_page

TINY = dict(tiny=True, progress=False)




def tiny_project(tmp_path_factory) -> tuple[Path, list[str]]:
    """One tiny demo project per test session (later calls resume it: every stage skipped)."""
    project = tmp_path_factory.getbasetemp() / "tiny-demo"
    lines: list[str] = []
    run_demo(project, echo=lines.append, **TINY)
    return project, lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    project, lines = tiny_project(tmp_path_factory)
    return project, lines


STAGE_OUTPUTS = [
    "demo.yaml", "synthetic/split.yaml", "synthetic/preview.png", "synthetic/micrographs",
    "runs/cnn/summary.json", "runs/cnn/metrics.csv", "runs/cnn/checkpoints/best.ckpt",
    "runs/cdcrf/summary.json", "runs/cnn/picker.yaml", "runs/cdcrf/picker.yaml",
    "runs/cnn/evaluation/test.json", "runs/cdcrf/evaluation/test.json",
    "picks/cnn/autopick.star", "picks/cdcrf/autopick.star", "particles/particles.star",
    "report/index.html", "results.md",
]


def test_every_stage_output_exists(demo):
    project, lines = demo
    for rel in STAGE_OUTPUTS:
        assert (project / rel).exists(), rel
    test_names = (project / "synthetic" / "split.yaml").read_text()
    assert "test" in test_names
    for key in ("cnn", "cdcrf"):
        assert sorted((project / "probabilities" / key / "test").glob("*.mrc"))
        assert sorted((project / "probabilities" / key / "val").glob("*.mrc"))
    assert list((project / "particles").rglob("*.mrcs"))
    # the fine-tuned run has a CD-CRF and started from the CNN
    config = (project / "runs" / "cdcrf" / "config.yaml").read_text()
    assert "cd-crf" in config and "runs/cnn" in config
    assert any("train CNN+CD-CRF" in line for line in lines)


def test_final_table_has_both_models_and_metrics_in_unit_range(demo):
    project, _ = demo
    table = results_table(project)
    assert list(table["model"]) == ["CNN", "CNN+CD-CRF"]
    assert list(table.columns) == ["model", *TABLE_COLUMNS]
    values = table[list(TABLE_COLUMNS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    record = json.loads((project / "runs" / "cdcrf" / "evaluation" / "test.json").read_text())
    assert record["picking"]["radius_px"] == pytest.approx(record["diameter_px"] / 2)


def test_report_is_valid_html_with_existing_images(demo):
    project, _ = demo
    images = check_page(project / "report" / "index.html")
    text = (project / "report" / "index.html").read_text()
    assert "probability histogram" in text and "precision-recall" in text
    assert any("picks" in src for src in images) and any("training" in src for src in images)


def test_rerun_skips_every_stage_and_rewrites_nothing(demo, tmp_path_factory):
    project, _ = demo
    watched = [p for rel in STAGE_OUTPUTS if (p := project / rel).is_file()]
    before = {p: p.stat().st_mtime_ns for p in watched}
    lines: list[str] = []
    result = run_demo(project, echo=lines.append, **TINY)
    assert all(seconds is None for seconds in result.timings.values())
    assert all("skipped" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_compare_reads_the_demo_runs(demo):
    from crisp.compare import compare_runs

    project, _ = demo
    table = compare_runs([project / "runs" / "cnn", project / "runs" / "cdcrf"])
    assert "test.pixel.iou" in table and "test.picking.AP" in table and "crf.kind" in table


def test_other_settings_in_an_existing_project_are_refused(demo):
    from crisp.errors import CrispError

    project, _ = demo
    with pytest.raises(CrispError, match="seed"):
        run_demo(project, seed=5, echo=lambda _: None, **TINY)


def test_demo_sizes_are_validated():
    from crisp.errors import CrispError

    assert make_demo_config("quick").micrographs < make_demo_config("full").micrographs
    with pytest.raises(CrispError, match="huge"):
        make_demo_config("huge")


def test_demo_cli_resumes_and_prints_the_table(demo, capsys):
    from crisp.cli import main

    project, _ = demo
    assert main(["demo", "-o", str(project), "--tiny"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (done before)") == 13
    assert "| model | pixel IoU |" in out and "CNN+CD-CRF" in out
    assert f"report: {project / 'report' / 'index.html'}" in out


def test_stage_runner_skips_done_stages_and_checks_outputs(tmp_path):
    from crisp.errors import CrispError
    from crisp.workflow.stages import Stage, remove_run_dir, run_stages

    marker = tmp_path / "out.txt"
    calls: list[str] = []
    stages = [Stage("write", marker.is_file, lambda: (calls.append("write"), marker.write_text("x"))),
              Stage("done already", lambda: True, lambda: calls.append("never"))]
    lines: list[str] = []
    timings = run_stages(stages, echo=lines.append)
    assert calls == ["write"] and timings["done already"] is None and timings["write"] >= 0
    assert lines[0] == "[1/2] write ..." and lines[1].startswith("[1/2] write: done in ")
    assert lines[2] == "[2/2] done already: skipped (done before)"
    with pytest.raises(CrispError, match="without its output"):
        run_stages([Stage("lazy", lambda: False, lambda: None)], echo=lines.append)
    # only training run folders are ever deleted
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("keep me")
    with pytest.raises(CrispError, match="not a training run"):
        remove_run_dir(tmp_path / "notes")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    remove_run_dir(tmp_path / "run")
    assert not (tmp_path / "run").exists() and (tmp_path / "notes" / "thesis.tex").is_file()
