"""``crisp demo`` end to end at tiny sizes: every stage's output, the table, the report, resumption.

The project is made once per session by the ``tiny_demo`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from crisp.workflow.demo import DEMO_PRESETS, TABLE_COLUMNS, make_demo_config, results_table, run_demo
from html_check import check_page

TINY = dict(tiny=True, progress=False)
SIZES = DEMO_PRESETS["tiny"]  # 6 micrographs of 256 px, 3 train, 2 val, 1 test, 6 particles each


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo.project, tiny_demo.lines


@pytest.fixture
def split(demo):
    from crisp.dataset import read_split

    project, _ = demo
    return read_split(project / "synthetic" / "split.yaml")


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
    missing = [rel for rel in STAGE_OUTPUTS if not (project / rel).exists()]
    assert missing == []
    # the fine-tuned run has a CD-CRF and started from the CNN
    from crisp.config import read_yaml

    config = read_yaml(project / "runs" / "cdcrf" / "config.yaml")
    assert config["crf"]["kind"] == "cd-crf"
    assert Path(config["init"]).resolve() == (project / "runs" / "cnn").resolve()
    assert read_yaml(project / "runs" / "cnn" / "config.yaml")["crf"]["kind"] == "none"
    assert [line for line in lines if line.endswith(" ...")][:3] == [
        "[1/13] simulate + split ...", "[2/13] train CNN ...", "[3/13] train CNN+CD-CRF ..."]


def test_split_partitions_the_simulated_micrographs(demo, split):
    project, _ = demo
    simulated = sorted(p.stem for p in (project / "synthetic" / "micrographs").glob("*.mrc"))
    assert len(simulated) == SIZES["micrographs"]
    assert (len(split.train), len(split.val), len(split.test)) == (
        SIZES["n_train"], SIZES["n_val"], SIZES["micrographs"] - SIZES["n_train"] - SIZES["n_val"])
    assert sorted(split.train + split.val + split.test) == simulated  # disjoint and complete
    assert split.seed == 0
    for run in ("cnn", "cdcrf"):  # each run recorded the split it trained on
        from crisp.dataset import read_split

        assert read_split(project / "runs" / run / "split.yaml") == split
    # the truth: the preset's particle count on every micrograph, inside the micrograph
    for name in simulated:
        centres = starfile.read(project / "synthetic" / "coordinates" / f"{name}.star")
        assert len(centres) == SIZES["particles"][0]
        assert centres["rlnCoordinateX"].between(0, SIZES["size_px"]).all()


def test_probability_maps_cover_exactly_the_split_subsets(demo, split):
    project, _ = demo
    for key in ("cnn", "cdcrf"):
        for subset in ("val", "test"):
            folder = project / "probabilities" / key / subset
            assert sorted(p.stem for p in folder.glob("*.mrc")) == split.subset(subset)
            for name in split.subset(subset):
                with mrcfile.open(folder / f"{name}.mrc") as mrc:
                    dtype, prob = mrc.data.dtype, np.asarray(mrc.data, np.float32)
                assert dtype == np.float16 and prob.shape == (SIZES["size_px"],) * 2
                assert prob.min() >= 0 and prob.max() <= 1 and prob.std() > 0


def test_picks_and_particles_are_the_test_micrographs_picks(demo, split):
    from crisp.io.coordinates import read_autopick
    from crisp.io.stacks import box_corners, inside
    from crisp.picking.tune import load_picker

    project, _ = demo
    for key in ("cnn", "cdcrf"):
        picks = read_autopick(project / "picks" / key / "autopick.star")
        assert sorted({Path(n).stem for n in picks["rlnMicrographName"]}) == split.test
        assert sorted(p.name for p in (project / "picks" / key).glob("*_autopick.star")) == [
            f"{n}_autopick.star" for n in split.test]
        record = json.loads((project / "runs" / key / "evaluation" / "test.json").read_text())
        assert record["picking"]["n_picks"] == len(picks) > 0  # every candidate kept, with its score
        assert record["picking"]["n_truth"] == SIZES["particles"][0] * len(split.test)
    # particles: the CNN+CD-CRF picks at its tuned threshold whose box fits in the micrograph
    picker = load_picker(project / "runs" / "cdcrf" / "picker.yaml")
    picks = read_autopick(project / "picks" / "cdcrf" / "autopick.star")
    kept = picks[picks["rlnAutopickFigureOfMerit"] >= picker.threshold]
    box = int(2 * round(0.75 * picker.diameter_px))
    x0, y0 = box_corners(kept["rlnCoordinateX"].to_numpy(), kept["rlnCoordinateY"].to_numpy(), box)
    kept = kept[inside(x0, y0, box, (SIZES["size_px"],) * 2)]
    particles = starfile.read(project / "particles" / "particles.star")["particles"]
    assert len(particles) == len(kept) > 0
    np.testing.assert_allclose(np.sort(particles["rlnCoordinateX"]), np.sort(kept["rlnCoordinateX"]),
                               atol=1e-4)
    stacks = sorted((project / "particles").rglob("*.mrcs"))
    assert [p.stem for p in stacks] == split.test
    with mrcfile.open(stacks[0]) as mrc:
        assert mrc.data.shape == (len(particles), box, box)


def test_final_table_has_both_models_and_the_evaluation_records(demo):
    project, _ = demo
    table = results_table(project)
    assert list(table["model"]) == ["CNN", "CNN+CD-CRF"]
    assert list(table.columns) == ["model", *TABLE_COLUMNS]
    for i, key in enumerate(("cnn", "cdcrf")):
        record = json.loads((project / "runs" / key / "evaluation" / "test.json").read_text())
        for column, (group, name) in TABLE_COLUMNS.items():
            assert table[column].iloc[i] == pytest.approx(record[group][name]), (key, column)
    values = table[list(TABLE_COLUMNS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    record = json.loads((project / "runs" / "cdcrf" / "evaluation" / "test.json").read_text())
    assert record["picking"]["radius_px"] == pytest.approx(record["diameter_px"] / 2)
    assert (project / "results.md").read_text().count("\n") == 4  # header, rule, two models


def test_report_is_valid_html_with_non_blank_figures(demo, split):
    project, _ = demo
    images = check_page(project / "report" / "index.html")
    text = (project / "report" / "index.html").read_text()
    assert "probability histogram" in text and "precision-recall" in text
    names = sorted(Path(src).name for src in images)
    test_name = split.test[0]
    per_run = [f"{k}_{test_name}_{kind}.png" for k in ("cnn", "cdcrf") for kind in ("picks", "seg")]
    assert names == sorted(per_run + ["cnn_training.png", "cdcrf_training.png", "precision_recall.png",
                                      "probability_histogram.png", "preview.png"])


def test_rerun_skips_every_stage_and_rewrites_nothing(demo):
    project, _ = demo
    watched = [p for p in project.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in watched}
    lines: list[str] = []
    result = run_demo(project, echo=lines.append, **TINY)
    assert all(seconds is None for seconds in result.timings.values()) and len(result.timings) == 13
    assert len(lines) == 13 and all(line.endswith("skipped (done before)") for line in lines)
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert {p for p in project.rglob("*") if p.is_file()} == set(watched)


def test_compare_reads_the_demo_runs(demo):
    from crisp.compare import compare_runs

    project, _ = demo
    table = compare_runs([project / "runs" / "cnn", project / "runs" / "cdcrf"])
    assert list(table["run"]) == ["cnn", "cdcrf"]
    assert list(table["crf.kind"]) == ["none", "cd-crf"]
    cdcrf = json.loads((project / "runs" / "cdcrf" / "evaluation" / "test.json").read_text())
    assert table["test.pixel.iou"].iloc[1] == pytest.approx(cdcrf["pixel"]["iou"])
    assert table["test.picking.AP"].iloc[1] == pytest.approx(cdcrf["picking"]["AP"])


def test_other_settings_in_an_existing_project_are_refused(demo):
    from crisp.errors import CrispError

    project, _ = demo
    before = (project / "demo.yaml").read_text()
    with pytest.raises(CrispError, match="seed"):
        run_demo(project, seed=5, echo=lambda _: None, **TINY)
    assert (project / "demo.yaml").read_text() == before


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
    assert (project / "results.md").read_text().strip() in out
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


def test_one_truth_reader_gives_the_simulated_centres_and_masks(demo, split, tmp_path):
    from crisp.dataset import read_true_centres, read_true_masks
    from crisp.errors import CrispError

    project, _ = demo
    data = project / "synthetic"
    names = [*split.test, *split.val]
    truth = read_true_centres(data, names)
    assert list(truth.columns) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    assert list(dict.fromkeys(truth["rlnMicrographName"])) == names  # in the order asked
    first = starfile.read(data / "coordinates" / f"{names[0]}.star")
    np.testing.assert_array_equal(truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()[:len(first)],
                                  first[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy())
    masks = read_true_masks(data, names)
    assert list(masks) == names and set(np.unique(masks[names[0]])) == {0.0, 1.0}
    # a folder with one micrograph's truth missing
    (tmp_path / "coordinates").mkdir()
    shutil.copy(data / "coordinates" / f"{names[0]}.star", tmp_path / "coordinates")
    with pytest.raises(CrispError, match=f"no true coordinates for micrograph '{names[1]}'") as err:
        read_true_centres(tmp_path, names)
    assert f"{names[1]}.star" in str(err.value)
    assert read_true_centres(tmp_path, names, required=False) is None
    assert len(read_true_centres(tmp_path, names[:1])) == len(first)
    with pytest.raises(CrispError, match=f"no true mask for micrograph '{names[0]}'"):
        read_true_masks(tmp_path, names)
    assert read_true_masks(tmp_path, names, required=False) == {}
