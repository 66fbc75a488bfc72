"""Dense CRF layer: solvers, energy, configuration and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from crisp.config import validate_config
from crisp.errors import CrispError
from crisp.models.crf import (
    CRFConfig,
    DenseCRF,
    build_crf,
    normalise_guide,
    probability_histogram,
    refine_probabilities,
    sparsemax,
    spatial_kernel_mass,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (tests/conftest.py)


def _inputs(b=1, c=2, h=12, w=14, seed=0, kind="crf", scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    if kind == "crf":
        guide = torch.randn(b, 1, h, w, generator=gen, dtype=torch.float64)
    else:
        guide = logits.clone()
    return logits, guide


def _crf(dtype=torch.float64, num_classes=2, scale=8.0, **settings) -> DenseCRF:
    settings.setdefault("kind", "crf")
    settings.setdefault("normalise_kernels", False)  # plain kernels: w is the per-pair weight
    crf = build_crf(CRFConfig(**settings), num_classes=num_classes, scale=scale)
    assert isinstance(crf, DenseCRF)
    return crf.to(dtype)


def test_build_crf_none_and_scale():
    assert build_crf(CRFConfig()) is None
    crf = build_crf(CRFConfig(kind="crf"), num_classes=3, scale=4.0)
    assert crf.theta_alpha_px == pytest.approx(40.0)
    assert crf.theta_gamma_px == pytest.approx(0.75)
    # Potts initialisation, one matrix per kernel, learnable by default
    mu_a, mu_s = crf.compatibilities()
    torch.testing.assert_close(mu_a, 1.0 - torch.eye(3))
    torch.testing.assert_close(mu_s, 1.0 - torch.eye(3))
    names = {name for name, _ in crf.named_parameters()}
    assert {"kernel_weights", "compat_appearance", "compat_smoothness"} <= names
    frozen = build_crf(CRFConfig(kind="crf", learnable=False))
    assert list(frozen.parameters()) == []


def test_kernel_normalisation_divides_by_the_spatial_mass():
    assert spatial_kernel_mass(40.0) == pytest.approx(2 * np.pi * 40.0**2 - 1, rel=1e-9)
    # 1 x 1 neighbourhood sum by hand for a narrow kernel: 4 e^{-1/2s^2} + 4 e^{-1/s^2} + ...
    s = 0.5
    by_hand = 4 * np.exp(-1 / (2 * s * s)) + 4 * np.exp(-1 / (s * s)) + 4 * np.exp(-2 / s**2)
    assert spatial_kernel_mass(s) == pytest.approx(by_hand, rel=1e-3)
    normalised = _crf(normalise_kernels=True, w_appearance=2.0, w_smoothness=3.0)
    ma, ms = spatial_kernel_mass(20.0), spatial_kernel_mass(3.0 / 8.0)
    plain = _crf(w_appearance=2.0 / ma, w_smoothness=3.0 / ms)
    logits, guide = _inputs()
    torch.testing.assert_close(normalised(logits, guide), plain(logits, guide))


def test_kernel_mass_of_a_huge_kernel_needs_no_huge_array():
    # the lattice sum and the closed form agree where the sum switches to it (1000 px) ...
    radius = int(np.ceil(12 * 999.0)) + 1
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    assert spatial_kernel_mass(999.0) == float(np.exp(-0.5 * (k / 999.0) ** 2).sum() ** 2 - 1.0)
    assert spatial_kernel_mass(1001.0) == pytest.approx(2 * np.pi * 1001.0**2 - 1, rel=1e-12)
    # ... and a kernel wider than any micrograph builds and runs (the sum over a 2.4e301-long array
    # raised before)
    crf = build_crf(CRFConfig(kind="crf", theta_alpha=1e300), scale=1.0)
    logits, guide = _inputs()
    assert torch.isfinite(crf.float()(logits.float(), guide.float())).all()


def test_config_validation_names_the_field():
    with pytest.raises(CrispError, match="solver"):
        validate_config(CRFConfig, {"kind": "crf", "solver": "gibbs"}, "crf.yaml")
    with pytest.raises(CrispError, match="unknown appearance filter"):
        build_crf(CRFConfig(kind="crf", appearance_backend="lattice"))


@pytest.mark.parametrize("solver", ["mean-field", "frank-wolfe"])
@pytest.mark.parametrize("kind", ["crf", "cd-crf"])
def test_zero_pairwise_weights_give_softmax(solver, kind):
    crf = _crf(kind=kind, solver=solver, w_appearance=0.0, w_smoothness=0.0)
    logits, guide = _inputs(kind=kind)
    out = crf(logits, guide)
    torch.testing.assert_close(torch.softmax(out, 1), torch.softmax(logits, 1), atol=1e-10, rtol=0)


def test_mean_field_is_the_crf_as_rnn_update():
    crf = _crf(solver="mean-field", iterations=1, spatial_backend="brute", appearance_backend="brute")
    logits, guide = _inputs()
    q0 = torch.softmax(logits, 1)
    filters = crf.build_filters(guide, *logits.shape[-2:])
    appearance, smoothness = filters
    potts = 1.0 - torch.eye(2, dtype=torch.float64)
    messages = torch.einsum("lm,bmhw->blhw", potts, appearance(q0) + smoothness(q0))
    expected = torch.log_softmax(logits - messages, 1)
    torch.testing.assert_close(crf(logits, guide), expected)


@pytest.mark.parametrize("kind", ["crf", "cd-crf"])
def test_frank_wolfe_entropy_lambda1_step1_equals_mean_field(kind):
    common = dict(kind=kind, iterations=5, w_appearance=0.7, w_smoothness=1.3)
    mf = _crf(solver="mean-field", **common)
    fw = _crf(
        solver="frank-wolfe", regulariser="entropy", fw_lambda=1.0, step="fixed", step_size=1.0, **common
    )
    logits, guide = _inputs(b=2, kind=kind)
    torch.testing.assert_close(
        torch.softmax(fw(logits, guide), 1), torch.softmax(mf(logits, guide), 1), atol=1e-6, rtol=0
    )


def _iterates(crf: DenseCRF, logits, guide, steps):
    qs = []
    for k in range(steps + 1):
        crf.config.iterations = k
        qs.append(torch.softmax(crf(logits, guide), 1))
    return qs


def _fw_energies(step, regulariser, fw_lambda, weight, seed, steps=4):
    crf = _crf(
        solver="frank-wolfe",
        step=step,
        regulariser=regulariser,
        fw_lambda=fw_lambda,
        w_appearance=weight,
        w_smoothness=1.5 * weight,
        scale=2.0,
    )
    with torch.no_grad():  # a non-Potts symmetric compatibility
        gen = torch.Generator().manual_seed(seed)
        crf.compat_appearance.add_(0.3 * torch.randn(2, 2, generator=gen, dtype=torch.float64))
    logits, guide = _inputs(b=2, seed=seed, scale=3.0)
    qs = _iterates(crf, logits, guide, steps)
    return torch.stack([crf.energy(q, logits, guide) for q in qs]).detach()  # [steps + 1, B]


# (regulariser, lambda, kernel weight): strong and weak pairwise terms, strong and weak regularisation
_FW_CASES = [
    ("entropy", 0.5, 2.0),
    ("l2", 0.5, 2.0),
    ("entropy", 3.0, 0.3),
    ("l2", 3.0, 0.3),
    ("entropy", 10.0, 0.05),
]


@pytest.mark.parametrize("seed", [0, 1])
def test_line_search_never_increases_the_energy(seed):
    decreased = increased_without = False
    for regulariser, fw_lambda, weight in _FW_CASES:
        energies = _fw_energies("line-search", regulariser, fw_lambda, weight, seed)
        change = energies[1:] - energies[:-1]
        assert (change <= 1e-9 * energies.abs().max()).all(), (regulariser, fw_lambda, energies)
        decreased |= bool((energies[-1] < energies[0] - 1.0).any())
        fixed = _fw_energies("fixed", regulariser, fw_lambda, weight, seed)
        increased_without |= bool((fixed[1:] - fixed[:-1] > 1.0).any())
    # the cases are hard enough: full steps do raise the energy, and line search does make progress
    assert decreased and increased_without


def test_mean_field_lowers_the_energy_on_a_denoising_problem():
    # a noisy two-region image: the CRF should make the labelling more consistent than the unary
    h = w = 16
    truth = torch.zeros(1, 1, h, w, dtype=torch.float64)
    truth[..., :, 8:] = 1
    gen = torch.Generator().manual_seed(4)
    noisy = truth + 0.6 * torch.randn(1, 1, h, w, generator=gen, dtype=torch.float64)
    logits = torch.cat([-(noisy - 0.5), noisy - 0.5], dim=1) * 2.0
    crf = _crf(
        kind="crf",
        solver="mean-field",
        scale=1.0,
        theta_alpha=8.0,
        theta_beta=0.2,
        theta_gamma=1.5,
        w_appearance=0.5,
        w_smoothness=0.5,
    )
    out = crf(logits, truth + 0.05 * torch.randn(1, 1, h, w, generator=gen, dtype=torch.float64))
    err_before = float((logits.argmax(1) != truth[:, 0].long()).double().mean())
    err_after = float((out.argmax(1) != truth[:, 0].long()).double().mean())
    assert err_after < 0.5 * err_before


@pytest.mark.parametrize(
    "solver,step", [("mean-field", "fixed"), ("frank-wolfe", "line-search"), ("frank-wolfe", "diminishing")]
)
def test_gradcheck_logits_and_kernel_weights(solver, step):
    crf = _crf(solver=solver, step=step, iterations=3, fw_lambda=0.7, scale=16.0)
    logits, guide = _inputs(h=6, w=5, scale=1.0)
    logits.requires_grad_(True)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in crf.named_parameters()}

    def run(lg, kw, ca, cs):
        values = {"kernel_weights": kw, "compat_appearance": ca, "compat_smoothness": cs}
        return functional_call(crf, values, (lg, guide))

    args = (logits, params["kernel_weights"], params["compat_appearance"], params["compat_smoothness"])
    assert torch.autograd.gradcheck(run, args)


def test_decoder_features_are_learned():
    crf = build_crf(
        CRFConfig(kind="cd-crf", feature_source="decoder", feature_channels=2), 2, scale=8.0, guide_channels=5
    )
    logits, _ = _inputs(b=2, scale=1.0, h=16, w=16)
    logits = logits.float()
    features = torch.randn(2, 5, 16, 16)
    out = crf(logits, features)
    assert out.shape == logits.shape and torch.isfinite(out).all()
    out[:, 1].sum().backward()
    grad = crf.reducer.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert crf.kernel_weights.grad.abs().sum() > 0


def test_output_is_log_probabilities_with_blend():
    crf = _crf(solver="frank-wolfe", regulariser="l2", blend_initial=0.25)
    logits, guide = _inputs()
    q = torch.exp(crf(logits, guide))
    torch.testing.assert_close(q.sum(1), torch.ones_like(q[:, 0]))
    # at least the blended quarter of the initial softmax survives
    assert (q >= 0.25 * torch.softmax(logits, 1) - 1e-9).all()


def test_float32_matches_float64():
    logits, guide = _inputs(kind="cd-crf", h=20, w=24)
    out64 = _crf(kind="cd-crf")(logits, guide)
    out32 = _crf(kind="cd-crf", dtype=torch.float32)(logits.float(), guide.float())
    torch.testing.assert_close(torch.softmax(out32.double(), 1), torch.softmax(out64, 1), atol=1e-4, rtol=0)


def test_fast_backends_agree_with_brute_force_crf():
    logits, guide = _inputs(kind="crf", h=24, w=24, scale=1.0)
    fast = _crf(kind="crf", iterations=5)
    brute = _crf(kind="crf", iterations=5, spatial_backend="brute", appearance_backend="brute")
    q_fast, q_brute = torch.softmax(fast(logits, guide), 1), torch.softmax(brute(logits, guide), 1)
    assert float((q_fast - q_brute).abs().mean().detach()) < 0.01


def test_bad_shapes_are_crisp_errors():
    crf = _crf()
    logits, guide = _inputs()
    with pytest.raises(CrispError, match="logits"):
        crf(logits[:, :1], guide)
    with pytest.raises(CrispError, match="guide"):
        crf(logits, guide[..., :-1])


def test_sparsemax_and_guide_normalisation():
    z = torch.tensor([[[[2.0]], [[1.0]], [[-3.0]]]])  # [1, 3, 1, 1]
    torch.testing.assert_close(sparsemax(z).view(-1), torch.tensor([1.0, 0.0, 0.0]))
    z = torch.tensor([[[[0.6]], [[0.4]], [[-3.0]]]])
    torch.testing.assert_close(sparsemax(z).view(-1), torch.tensor([0.6, 0.4, 0.0]))
    z = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(sparsemax(z).sum(1), torch.ones(2, 5, 5))
    g = 7.0 + 3.0 * torch.randn(2, 1, 30, 30)
    f = normalise_guide(g, "crf")
    assert float(f.min()) == 0.0 and float(f.max()) == 1.0
    p = normalise_guide(torch.randn(1, 3, 4, 4), "cd-crf", "logits")
    assert p.shape == (1, 2, 4, 4) and float(p.min()) >= 0 and float(p.max()) <= 1


def test_probability_histogram():
    counts, edges = probability_histogram(np.array([0.0, 0.05, 0.5, 0.99, 1.0, np.nan]), bins=10)
    assert counts.sum() == 5 and counts[0] == 2 and counts[5] == 1 and counts[-1] == 2
    np.testing.assert_allclose(edges, np.linspace(0, 1, 11))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    logits, guide = _inputs(kind="cd-crf", h=32, w=32)
    crf = _crf(kind="cd-crf", solver="frank-wolfe")
    cpu = crf(logits, guide)
    gpu = crf.cuda()(logits.cuda(), guide.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-8, rtol=1e-6)


def _ramp_map(height=64, width=300):
    xx = np.mgrid[:height, :width][1]
    return (0.3 + 0.4 * xx / width).astype(np.float32), np.zeros((height, width), np.float32)


def test_refine_probabilities_tiles_without_seams():
    # a smooth map and a flat micrograph: the appearance kernel acts as a wide spatial blur, whose
    # missing neighbours at a tile border would show as a step
    prob, image = _ramp_map()
    cfg = CRFConfig(kind="crf", w_appearance=0.002, w_smoothness=0.0, normalise_kernels=False)
    whole = refine_probabilities(prob, image, cfg, scale=8.0, tile=512)
    tiled = refine_probabilities(prob, image, cfg, scale=8.0, tile=100)
    abutted = refine_probabilities(prob, image, cfg, scale=8.0, tile=100, overlap=0)
    max_step = float(np.abs(np.diff(whole, axis=1)).max())
    assert np.abs(np.diff(tiled, axis=1)).max() <= 1.2 * max_step
    assert np.abs(np.diff(abutted, axis=1)).max() > 2.0 * max_step  # the control does show seams
    assert whole.shape == prob.shape and whole.dtype == np.float32


def test_refine_probabilities_on_a_noisy_map():
    rng = np.random.default_rng(0)
    h, w = 120, 150
    yy, xx = np.mgrid[:h, :w]
    truth = np.zeros((h, w))
    for cy, cx in rng.uniform(10, [h - 10, w - 10], size=(12, 2)):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 8**2] = 1
    image = -truth + rng.normal(0, 0.7, (h, w))
    prob = 1 / (1 + np.exp(-(3 * (truth - 0.5) + rng.normal(0, 1.2, (h, w)))))
    for kind in ("crf", "cd-crf"):
        cfg = CRFConfig(kind=kind)
        whole = refine_probabilities(prob, image, cfg, scale=8.0, tile=512)
        tiled = refine_probabilities(prob, image, cfg, scale=8.0, tile=80)
        assert np.abs(whole - tiled).mean() < 0.01
        assert ((whole > 0.5) == truth).mean() > ((prob > 0.5) == truth).mean()
    classes = np.stack([1 - prob, prob])
    out = refine_probabilities(classes, image, CRFConfig(kind="crf"), scale=8.0)
    assert out.shape == classes.shape
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_refine_probabilities_errors_and_none():
    prob, image = _ramp_map(8, 8)
    np.testing.assert_array_equal(refine_probabilities(prob, image, CRFConfig()), prob)
    with pytest.raises(CrispError, match="\\[0, 1\\]"):
        refine_probabilities(prob + 1.0, image, CRFConfig(kind="crf"))
    with pytest.raises(CrispError, match="micrograph"):
        refine_probabilities(prob, image[:4], CRFConfig(kind="crf"))
    with pytest.raises(CrispError, match="decoder"):
        refine_probabilities(prob, image, CRFConfig(kind="cd-crf", feature_source="decoder"))


def test_half_precision_logits_are_promoted_under_autocast():
    crf = build_crf(CRFConfig(kind="cd-crf"), 2, scale=8.0)
    logits, guide = _inputs(kind="cd-crf", h=16, w=16)
    reference = crf(logits.float(), guide.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = crf(logits.bfloat16(), guide.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(torch.softmax(out, 1), torch.softmax(reference, 1), atol=0.05, rtol=0)
