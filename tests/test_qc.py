"""The labels QC figure shows the low-passed micrograph, not the raw pixels."""

from __future__ import annotations

import numpy as np
import pytest

from crisp.io.micrographs import write_mrc
from crisp.preprocess import block_mean, lowpass
from crisp.qc import LOWPASS_SIGMA_PER_FACTOR, labels_qc_figure, qc_panels


def _noisy_disc(shape=(90, 120), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = ((yy - 40) ** 2 + (xx - 70) ** 2 <= 12**2).astype(np.float32)
    return (-0.3 * disc + rng.normal(0, 1, shape)).astype(np.float32), disc


def test_qc_panels_are_the_low_passed_micrograph():
    image, disc = _noisy_disc()
    panels = qc_panels(image, display_px=40, zoom_px=50)
    assert panels.factor == 3  # ceil(120 / 40)
    expected = lowpass(image, sigma_px=LOWPASS_SIGMA_PER_FACTOR * 3)
    np.testing.assert_allclose(panels.smooth, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(panels.overview, block_mean(expected, 3), rtol=0, atol=1e-6)
    assert panels.origin == (20, 35)  # ((90 - 50) // 2, (120 - 50) // 2)
    np.testing.assert_allclose(panels.zoom, expected[20:70, 35:85], rtol=0, atol=1e-6)
    # the low-pass makes the particle stand out: its contrast against the noise is far higher
    raw_contrast = (image[disc == 0].mean() - image[disc == 1].mean()) / image.std()
    smooth_contrast = (expected[disc == 0].mean() - expected[disc == 1].mean()) / expected.std()
    assert smooth_contrast > 3 * raw_contrast


def test_labels_qc_figure_draws_the_low_passed_panels(tmp_path, monkeypatch):
    import crisp.qc as qc

    image, disc = _noisy_disc()
    write_mrc(tmp_path / "micrographs" / "m.mrc", image, pixel_size=1.0)
    write_mrc(tmp_path / "masks" / "m.mrc", disc.astype(np.uint8))
    drawn = []
    original = qc._show

    def spy(ax, shown, mask, x, y, marker_size):
        drawn.append(np.array(shown))
        original(ax, shown, mask, x, y, marker_size)

    monkeypatch.setattr(qc, "_show", spy)
    out = labels_qc_figure(tmp_path, ["m"], tmp_path / "qc.png", display_px=40, zoom_px=50)
    assert out.is_file() and out.stat().st_size > 1000
    panels = qc_panels(image, display_px=40, zoom_px=50)
    assert len(drawn) == 2
    np.testing.assert_allclose(drawn[0], panels.overview, atol=1e-6)
    np.testing.assert_allclose(drawn[1], panels.zoom, atol=1e-6)
    with pytest.raises(AssertionError):  # not the raw micrograph
        np.testing.assert_allclose(drawn[1], image[20:70, 35:85], atol=1e-3)
