"""Report figures and the HTML page: what each figure draws, not only that a PNG exists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crisp.report as report
from crisp.report import (
    Section,
    plot_picks,
    plot_precision_recall,
    plot_probability_histogram,
    plot_segmentation,
    plot_training_curves,
    write_html,
)
from html_check import check_page, check_png


def test_block_mean_hand_case():
    from crisp.preprocess import block_mean

    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(block_mean(img, 2), [[2.5, 4.5], [10.5, 12.5]])


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """What each saved figure holds, keyed by the PNG's file name (recorded just before saving)."""
    record: dict[str, dict] = {}
    save = report._save

    def recording_save(fig, path, dpi=110):
        axes = fig.get_axes()
        record[path.name if hasattr(path, "name") else str(path)] = {
            "axes": len(axes),
            "lines": [[(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()
                       if len(line.get_xdata())] for ax in axes],
            "legend": [[t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
                       for ax in axes],
            "images": [len(ax.get_images()) for ax in axes],
            "collections": [len(ax.collections) for ax in axes],
            "titles": [ax.get_title() for ax in axes],
        }
        return save(fig, path, dpi)

    monkeypatch.setattr(report, "_save", recording_save)
    return record


def _inputs():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(300, 200)).astype(np.float32)
    prob = rng.uniform(size=image.shape).astype(np.float32)
    picks = pd.DataFrame({"rlnCoordinateX": [50.0, 120.0], "rlnCoordinateY": [40.0, 250.0],
                          "is_true_positive": [True, False]})
    truth = pd.DataFrame({"rlnCoordinateX": [50.0, 10.0], "rlnCoordinateY": [42.0, 10.0],
                          "is_matched": [True, False]})
    return image, prob, picks, truth


def test_picks_figure_colours_hits_false_positives_and_misses(tmp_path, drawn):
    image, _, picks, truth = _inputs()
    check_png(plot_picks(image, picks, tmp_path / "picks.png", 20, truth=truth, title="t"))
    fig = drawn["picks.png"]
    assert fig["axes"] == 1 and fig["images"] == [1] and fig["titles"] == ["t"]
    assert fig["collections"] == [3]  # true positives, false positives, misses: one circle each
    assert fig["legend"] == [["true positives (1)", "false positives (1)", "missed (1)"]]
    plot_picks(image, picks, tmp_path / "plain.png", 20)  # without truth: every pick one colour
    assert drawn["plain.png"]["legend"] == [["picks (2)"]]


def test_segmentation_figure_has_both_panels_the_colour_bar_and_the_mask_outline(tmp_path, drawn):
    image, prob, _, _ = _inputs()
    check_png(plot_segmentation(image, prob, tmp_path / "seg.png", truth_mask=prob > 0.5))
    fig = drawn["seg.png"]
    assert fig["axes"] == 3  # micrograph, probability overlay, colour bar
    assert fig["images"][:2] == [1, 2] and fig["collections"][0] == 0 and fig["collections"][1] >= 1
    plot_segmentation(image, prob, tmp_path / "seg2.png")
    assert drawn["seg2.png"]["collections"][1] == 0  # no mask, no outline


def test_histogram_figure_draws_the_pixel_fractions(tmp_path, drawn):
    _, prob, _, _ = _inputs()
    check_png(plot_probability_histogram({"cnn": prob, "crf": [prob**3]}, tmp_path / "h.png", bins=4))
    fig = drawn["h.png"]
    assert fig["legend"] == [["cnn", "crf"]]
    (x_cnn, y_cnn), (_, y_crf) = fig["lines"][0]
    np.testing.assert_allclose(x_cnn, [0, 0.25, 0.5, 0.75])
    expected = np.histogram(prob, bins=np.linspace(0, 1, 5))[0] / prob.size
    np.testing.assert_allclose(y_cnn, expected)
    # p**3 of a uniform p: P(p**3 < 0.25) = 0.25 ** (1/3) = 0.63
    assert y_crf[0] == pytest.approx(0.25 ** (1 / 3), abs=0.01) and y_crf.sum() == pytest.approx(1)


def test_training_curves_skip_the_nan_rows_of_lightnings_csv(tmp_path, drawn):
    metrics = pd.DataFrame({"epoch": [0, 0, 1, 1], "train_loss": [1.0, np.nan, 0.5, np.nan],
                            "val_iou": [np.nan, 0.3, np.nan, 0.6]})
    check_png(plot_training_curves(metrics, tmp_path / "c.png"))
    fig = drawn["c.png"]
    assert fig["axes"] == 2 and fig["titles"] == ["loss", "validation"]
    [(x_loss, y_loss)], [(x_val, y_val)] = fig["lines"]
    np.testing.assert_allclose(x_loss, [0, 1])
    np.testing.assert_allclose(y_loss, [1.0, 0.5])
    np.testing.assert_allclose(y_val, [0.3, 0.6])


def test_report_page_links_only_existing_figures(tmp_path, drawn):
    image, prob, picks, truth = _inputs()
    figs = [
        ("picks", plot_picks(image, picks, tmp_path / "figs" / "picks.png", 20, truth=truth)),
        ("seg", plot_segmentation(image, prob, tmp_path / "figs" / "seg.png", truth_mask=prob > 0.5)),
        ("pr", plot_precision_recall({"a": (np.linspace(0, 1, 5), np.linspace(1, 0.5, 5))},
                                     tmp_path / "figs" / "pr.png")),
    ]
    [(recall, precision)] = drawn["pr.png"]["lines"][0]
    np.testing.assert_allclose(recall, np.linspace(0, 1, 5))
    np.testing.assert_allclose(precision, np.linspace(1, 0.5, 5))
    table = pd.DataFrame({"model": ["cnn"], "iou": [0.912345]})
    page = write_html(tmp_path / "report" / "index.html", "CRISP <report>",
                      [Section("All", "text & more", [("metrics", table)], figs)])
    text = page.read_text()
    assert check_page(page) == ["../figs/picks.png", "../figs/seg.png", "../figs/pr.png"]
    assert "0.9123" in text and "&lt;report&gt;" in text and "text &amp; more" in text


def test_a_blank_figure_is_caught(tmp_path):
    """The figure check itself can fail: a blank PNG of the right size is refused."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3, 3))
    fig.savefig(tmp_path / "blank.png")
    plt.close(fig)
    with pytest.raises(AssertionError, match="blank"):
        check_png(tmp_path / "blank.png")


def test_report_refuses_missing_figure(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_html(tmp_path / "r.html", "t", [Section("s", figures=[("x", tmp_path / "missing.png")])])
    assert not (tmp_path / "r.html").exists()
