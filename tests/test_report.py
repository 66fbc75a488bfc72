"""Report figures and the HTML page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crisp.report import (
    Section,
    plot_picks,
    plot_precision_recall,
    plot_probability_histogram,
    plot_segmentation,
    plot_training_curves,
    write_html,
)
from html_check import check_page


def test_block_mean_hand_case():
    from crisp.preprocess import block_mean

    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(block_mean(img, 2), [[2.5, 4.5], [10.5, 12.5]])


def test_report_page_links_only_existing_figures(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(300, 200)).astype(np.float32)
    prob = rng.uniform(size=image.shape).astype(np.float32)
    picks = pd.DataFrame({"rlnCoordinateX": [50.0, 120.0], "rlnCoordinateY": [40.0, 250.0],
                          "is_true_positive": [True, False]})
    truth = pd.DataFrame({"rlnCoordinateX": [50.0, 10.0], "rlnCoordinateY": [42.0, 10.0],
                          "is_matched": [True, False]})
    figs = [
        ("picks", plot_picks(image, picks, tmp_path / "figs" / "picks.png", 20, truth=truth)),
        ("seg", plot_segmentation(image, prob, tmp_path / "figs" / "seg.png", truth_mask=prob > 0.5)),
        ("hist", plot_probability_histogram({"cnn": prob, "crf": [prob**3]}, tmp_path / "figs" / "h.png")),
        ("curves", plot_training_curves(
            pd.DataFrame({"epoch": [0, 0, 1, 1], "train_loss": [1.0, np.nan, 0.5, np.nan],
                          "val_iou": [np.nan, 0.3, np.nan, 0.6]}), tmp_path / "figs" / "c.png")),
        ("pr", plot_precision_recall({"a": (np.linspace(0, 1, 5), np.linspace(1, 0.5, 5))},
                                     tmp_path / "figs" / "pr.png")),
    ]
    table = pd.DataFrame({"model": ["cnn"], "iou": [0.912345]})
    page = write_html(tmp_path / "report" / "index.html", "CRISP <report>",
                      [Section("All", "text & more", [("metrics", table)], figs)])
    text = page.read_text()
    assert len(check_page(page)) == 5
    assert "0.9123" in text and "&lt;report&gt;" in text


def test_report_refuses_missing_figure(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_html(tmp_path / "r.html", "t", [Section("s", figures=[("x", tmp_path / "missing.png")])])
    assert not (tmp_path / "r.html").exists()
