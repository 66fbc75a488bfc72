"""Message-passing filters of the dense CRF against the brute-force float64 reference."""

from __future__ import annotations

import pytest
import torch

from crisp.errors import CrispError
from crisp.models import filters as fl
from crisp.models.crf import normalise_guide

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (tests/conftest.py)


def _blob_micrograph(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A noisy micrograph-like guide: dark disks (particles) on a flat background, [1, 1, H, W]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    img = torch.zeros(height, width, dtype=torch.float64)
    for cy, cx in [(0.25, 0.3), (0.65, 0.75), (0.8, 0.2)]:
        r2 = (yy - cy * height) ** 2 + (xx - cx * width) ** 2
        img -= torch.exp(-r2 / (2 * (0.12 * height) ** 2))
    img += 0.1 * torch.randn(height, width, generator=gen, dtype=torch.float64)
    return img.view(1, 1, height, width)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _random_q(b: int, c: int, h: int, w: int, seed: int = 1, sharpness: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(b, c, h, w, generator=gen, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("theta", [0.375, 0.75, 3.0, 12.0])
def test_separable_spatial_matches_brute_force(theta):
    values = _random_q(2, 3, 20, 27)
    exact = fl.BruteSpatialFilter(20, 27, theta)(values)
    fast = fl.SeparableGaussianFilter(20, 27, theta, dtype=torch.float64)(values)
    assert _relative_error(fast, exact) < 1e-5


def test_brute_spatial_is_the_definition():
    # 1 x 3 image, theta 1: m_0 = e^{-1/2} v_1 + e^{-2} v_2
    values = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64)
    out = fl.BruteSpatialFilter(1, 3, 1.0)(values)
    e1, e4 = torch.exp(torch.tensor(-0.5)), torch.exp(torch.tensor(-2.0))
    expected = torch.tensor([2 * e1 + 4 * e4, e1 + 4 * e1, e4 + 2 * e1], dtype=torch.float64)
    torch.testing.assert_close(out.view(-1), expected)


def _guides(height: int, width: int) -> dict[str, torch.Tensor]:
    """Normalised guides representative of the CRF's use: micrograph (1-D), CNN probabilities (1-D),
    two decoder-like channels (2-D)."""
    micrograph = normalise_guide(_blob_micrograph(height, width), "crf")
    logits = 4.0 * (-_blob_micrograph(height, width, seed=3) - 0.3)
    probs = normalise_guide(torch.cat([-logits, logits], dim=1), "cd-crf", "logits")
    two = torch.cat([micrograph, probs], dim=1)
    return {"micrograph": micrograph, "probabilities": probs, "two-channel": two}


@pytest.mark.parametrize("guide_name", ["micrograph", "probabilities", "two-channel"])
@pytest.mark.parametrize("theta_px", [20.0, 8.0])
def test_bilateral_grid_matches_brute_force(guide_name, theta_px):
    # defaults (theta_alpha 160 px, theta_beta 0.05) at binning 8 give 20 px on a 32 px patch
    guide = _guides(32, 32)[guide_name]
    for values in (_random_q(1, 2, 32, 32), _random_q(1, 2, 32, 32, sharpness=0.5)):
        exact = fl.BruteAppearanceFilter(guide, theta_px, 0.05)(values)
        approx = fl.BilateralGridFilter(guide, theta_px, 0.05)(values)
        assert _relative_error(approx, exact) < 0.03


def test_bilateral_grid_error_shrinks_with_cell_size():
    guide = _guides(24, 24)["micrograph"]
    values = _random_q(1, 2, 24, 24)
    exact = fl.BruteAppearanceFilter(guide, 10.0, 0.05)(values)
    errors = [
        _relative_error(fl.BilateralGridFilter(guide, 10.0, 0.05, cell=cell)(values), exact)
        for cell in (1.0, 0.5, 0.25)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


@pytest.mark.parametrize(
    "make",
    [
        lambda g: fl.BilateralGridFilter(g, 6.0, 0.05),
        lambda g: fl.BilateralGridFilter(g, 6.0, 0.1, order=2, cell=0.8),
        lambda g: fl.SeparableGaussianFilter(g.shape[-2], g.shape[-1], 1.5, dtype=torch.float64),
        lambda g: fl.BruteAppearanceFilter(g, 6.0, 0.05),
    ],
    ids=["grid-linear", "grid-quadratic", "separable", "brute"],
)
def test_filters_are_symmetric(make):
    guide = _guides(18, 22)["two-channel"]
    filt = make(guide)
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(1, 2, 18, 22, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 2, 18, 22, generator=gen, dtype=torch.float64)
    left = (u * filt(v)).sum()
    right = (filt(u) * v).sum()
    assert abs(float(left - right)) < 1e-10 * float(left.abs() + right.abs())


def test_bilateral_grid_has_no_self_interaction():
    # an isolated pixel (far from all others in feature space) receives no message from itself
    guide = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    guide[0, 0, 3, 4] = 1.0
    values = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    values[0, 0, 3, 4] = 1.0
    out = fl.BilateralGridFilter(guide, 4.0, 0.05)(values)
    assert float(out.abs().max()) < 1e-12


def test_bilateral_grid_batches_independently():
    guides = _guides(16, 16)
    guide = torch.cat([guides["micrograph"], guides["probabilities"]], dim=0)
    values = _random_q(2, 2, 16, 16)
    both = fl.BilateralGridFilter(guide, 8.0, 0.05)(values)
    for i in range(2):
        single = fl.BilateralGridFilter(guide[i : i + 1], 8.0, 0.05)(values[i : i + 1])
        torch.testing.assert_close(both[i : i + 1], single)


def test_bilateral_grid_is_differentiable_in_values_and_features():
    guide = _guides(8, 8)["micrograph"].clone().requires_grad_(True)
    values = _random_q(1, 2, 8, 8).requires_grad_(True)
    weights = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: (fl.BilateralGridFilter(guide.detach(), 4.0, 0.1)(v) * weights).sum(), (values,)
    )
    out = (fl.BilateralGridFilter(guide, 4.0, 0.1)(values) * weights).sum()
    out.backward()
    assert guide.grad is not None and torch.isfinite(guide.grad).all() and guide.grad.abs().sum() > 0


def test_registry_and_errors():
    assert {"separable", "brute"} <= set(fl.SPATIAL_BACKENDS)
    assert {"bilateral-grid", "brute"} <= set(fl.APPEARANCE_BACKENDS)
    with pytest.raises(CrispError, match="unknown spatial filter"):
        fl.make_spatial_filter("nope", 4, 4, 1.0)
    with pytest.raises(CrispError, match="unknown appearance filter"):
        fl.make_appearance_filter("nope", torch.zeros(1, 1, 4, 4), 1.0, 0.1)
    with pytest.raises(CrispError, match="small images"):
        fl.BruteSpatialFilter(100, 100, 1.0)
    with pytest.raises(CrispError, match="too large"):
        fl.BilateralGridFilter(torch.rand(1, 3, 64, 64), 1.0, 0.01)
