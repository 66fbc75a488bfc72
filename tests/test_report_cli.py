"""``crisp report`` on a demo project and on single runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisp.cli import main
from crisp.workflow.report_builder import build_report, find_runs


@pytest.fixture
def project(tiny_demo) -> Path:
    """The session's tiny demo project (tests/conftest.py)."""
    return tiny_demo.project


def _images(page: Path) -> list[str]:
    from html_check import check_page

    return check_page(page)


def test_report_cli_on_the_demo_project(project, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(project), "-o", str(out), "--title", "my runs"]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    images = _images(out / "index.html")
    names = {Path(src).name for src in images}
    assert {"cnn_training.png", "cdcrf_training.png", "probability_histogram.png",
            "precision_recall.png"} <= names
    assert any(n.endswith("_picks.png") for n in names) and any(n.endswith("_seg.png") for n in names)
    text = (out / "index.html").read_text()
    assert "my runs" in text and "cd-crf" in text


def test_report_of_one_run_shows_only_it(project, tmp_path):
    page = build_report([project / "runs" / "cdcrf"], tmp_path / "one")
    names = {Path(src).name for src in _images(page)}
    assert "cdcrf_training.png" in names and "cnn_training.png" not in names


def test_runs_are_found_in_projects_and_folders(project):
    assert [p.name for p in find_runs([project])] == ["cdcrf", "cnn"]
    assert [p.name for p in find_runs([project / "runs", project / "runs" / "cnn"])] == ["cdcrf", "cnn"]


def test_not_a_run_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r")]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_match_picks_marks_hand_made_case():
    import numpy as np
    import pandas as pd

    from crisp.workflow.evaluate_run import match_picks, precision_recall_curve

    picks = pd.DataFrame({"rlnMicrographName": ["a", "a", "a", "b"],
                          "rlnCoordinateX": [200.0, 10.0, 50.0, 12.0],
                          "rlnCoordinateY": [200.0, 10.0, 50.0, 10.0],
                          "rlnAutopickFigureOfMerit": [0.7, 0.9, 0.8, 0.95]})
    truth = pd.DataFrame({"rlnMicrographName": ["a", "a", "a", "b"],
                          "rlnCoordinateX": [12.0, 50.0, 100.0, 300.0],
                          "rlnCoordinateY": [10.0, 55.0, 100.0, 300.0]})
    marked_picks, marked_truth = match_picks(picks, truth, radius_px=8)
    # the pick on b is 2 px from a's first truth but on another micrograph: a false positive
    assert marked_picks["is_true_positive"].tolist() == [False, True, True, False]
    assert marked_truth["is_matched"].tolist() == [True, True, False, False]
    recall, precision = precision_recall_curve(picks, truth, radius_px=8)
    # ranked by score: b (FP), a10 (TP), a50 (TP), a200 (FP)
    np.testing.assert_allclose(recall, [0, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(precision, [0, 0.5, 2 / 3, 0.5])
