"""Every entry of the CRF-kind, CRF-solver and loss registries, as smp's BaseModelTester does for models.

The cases are generated from the registries, so a new kind, solver or loss is tested by adding it.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from crisp.config import validate_config
from crisp.errors import CrispError
from crisp.models import losses as L
from crisp.models.crf import (
    CRF_KINDS,
    CRF_SOLVERS,
    CRFConfig,
    CRFKind,
    CRFSolver,
    DenseCRF,
    build_crf,
    get_kind,
    get_solver,
)
from crisp.models.network import SegmentationNetwork

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (tests/conftest.py)


LAYER_KINDS = [name for name, kind in CRF_KINDS.items() if kind.builds_layer]
FEATURE_SOURCES = ["logits", "decoder"]
CRF_CASES = list(itertools.product(LAYER_KINDS, CRF_SOLVERS, FEATURE_SOURCES))
IDS = ["-".join(case) for case in CRF_CASES]
DECODER_CHANNELS = 5


def _config(kind, solver, source, **settings) -> CRFConfig:
    settings.setdefault("iterations", 3)
    return CRFConfig(kind=kind, solver=solver, feature_source=source, **settings)


def _inputs(seed=0, b=2, h=16, w=20):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 1, h, w, generator=gen)
    logits = 2.0 * torch.randn(b, 2, h, w, generator=gen)
    decoder = torch.randn(b, DECODER_CHANNELS, h, w, generator=gen)
    return image, logits, decoder


def _run(crf: DenseCRF, kind: str, source: str, image, logits, decoder):
    guide = get_kind(kind).select_guide(source, image=image, logits=logits, decoder=decoder)
    return crf(logits, guide)


def test_registries_hold_the_paper_variants():
    assert list(CRF_KINDS) == ["none", "crf", "cd-crf"]
    assert list(CRF_SOLVERS) == ["mean-field", "frank-wolfe"]
    assert LAYER_KINDS == ["crf", "cd-crf"]
    assert all(isinstance(k, CRFKind) and k.name == n for n, k in CRF_KINDS.items())
    assert all(isinstance(s, CRFSolver) and s.name == n for n, s in CRF_SOLVERS.items())


@pytest.mark.parametrize("solver", list(CRF_SOLVERS))
@pytest.mark.parametrize("kind", [n for n, k in CRF_KINDS.items() if not k.builds_layer])
def test_kinds_without_a_layer_build_nothing(kind, solver):
    assert build_crf(_config(kind, solver, "logits")) is None
    with pytest.raises(CrispError, match="layer"):
        DenseCRF(_config(kind, solver, "logits"))


@pytest.mark.parametrize("kind,solver,source", CRF_CASES, ids=IDS)
def test_crf_entry_gives_a_probability_map(kind, solver, source):
    torch.manual_seed(0)
    crf = build_crf(_config(kind, solver, source), num_classes=2, scale=4.0, guide_channels=DECODER_CHANNELS)
    assert isinstance(crf, DenseCRF)
    image, logits, decoder = _inputs()
    out = _run(crf, kind, source, image, logits, decoder)
    assert out.shape == logits.shape and torch.isfinite(out).all()
    q = out.detach().exp()  # the layer returns log q
    assert float(q.min()) >= 0.0 and float(q.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(q.sum(dim=1), torch.ones_like(q[:, 0]), atol=1e-5, rtol=0)
    # the pairwise term does something: the output is not the CNN's softmax
    assert float((q - torch.softmax(logits, 1)).abs().max()) > 1e-4


@pytest.mark.parametrize("kind,solver,source", CRF_CASES, ids=IDS)
def test_crf_entry_without_pairwise_weights_is_the_softmax(kind, solver, source):
    crf = build_crf(_config(kind, solver, source, w_appearance=0.0, w_smoothness=0.0, iterations=4),
                    scale=4.0, guide_channels=DECODER_CHANNELS)
    image, logits, decoder = _inputs(seed=3)
    out = _run(crf, kind, source, image, logits, decoder)
    torch.testing.assert_close(out.exp(), torch.softmax(logits, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind,solver,source", CRF_CASES, ids=IDS)
def test_crf_entry_removes_an_isolated_wrong_pixel(kind, solver, source):
    # background everywhere with one pixel mildly foreground: the smoothness kernel outvotes it
    logits = torch.zeros(1, 2, 12, 12)
    logits[:, 0] = 3.0
    logits[:, 1, 6, 6] = 3.5
    image = torch.zeros(1, 1, 12, 12)
    image[..., ::2, :] = 1.0  # a guide with some spread, the same on both sides of the pixel
    decoder = torch.ones(1, DECODER_CHANNELS, 12, 12)
    crf = build_crf(_config(kind, solver, source, w_appearance=0.0, w_smoothness=10.0, iterations=5),
                    scale=1.0, guide_channels=DECODER_CHANNELS)
    before = torch.softmax(logits, 1)[0, 1, 6, 6]
    after = _run(crf, kind, source, image, logits, decoder).exp()[0, 1, 6, 6]
    assert before > 0.6 and after < 0.1


@pytest.mark.parametrize("kind,solver,source", CRF_CASES, ids=IDS)
def test_crf_entry_is_deterministic_for_a_seed(kind, solver, source):
    outs = []
    for _ in range(2):
        torch.manual_seed(7)  # the decoder reduction starts from random weights
        crf = build_crf(_config(kind, solver, source), scale=4.0, guide_channels=DECODER_CHANNELS)
        outs.append(_run(crf, kind, source, *_inputs(seed=1)).detach())
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("kind,solver,source", CRF_CASES, ids=IDS)
def test_crf_entry_passes_gradients(kind, solver, source):
    torch.manual_seed(0)
    crf = build_crf(_config(kind, solver, source), scale=4.0, guide_channels=DECODER_CHANNELS)
    image, logits, decoder = _inputs(seed=2)
    logits.requires_grad_(True)
    decoder.requires_grad_(True)
    out = _run(crf, kind, source, image, logits, decoder)
    labels = (image[:, 0] > 0).long()
    nn.functional.nll_loss(out, labels).backward()
    for name, tensor in [("logits", logits.grad), ("kernel_weights", crf.kernel_weights.grad),
                         ("compat_appearance", crf.compat_appearance.grad)]:
        assert tensor is not None and torch.isfinite(tensor).all() and tensor.abs().sum() > 0, name
    learned = get_kind(kind).needs_decoder(source)
    assert (crf.reducer is not None) == learned
    if learned:
        assert crf.reducer.weight.grad.abs().sum() > 0 and decoder.grad.abs().sum() > 0
    else:
        assert decoder.grad is None  # a fixed guide: no gradient through the features


class _TinyCNN(nn.Module):
    """Stands in for an smp model: a body and a ``segmentation_head`` (the decoder-feature hook)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(1, DECODER_CHANNELS, 3, padding=1)
        self.segmentation_head = nn.Conv2d(DECODER_CHANNELS, 2, 1)

    def forward(self, x):
        return self.segmentation_head(torch.relu(self.body(x)))


@pytest.mark.parametrize("kind,solver,source", CRF_CASES + [("none", "mean-field", "logits")],
                         ids=[*IDS, "none"])
def test_network_hands_each_kind_its_guide(kind, solver, source):
    torch.manual_seed(0)
    cnn = _TinyCNN()
    crf = build_crf(_config(kind, solver, source), scale=4.0, guide_channels=DECODER_CHANNELS)
    net = SegmentationNetwork(cnn, crf, crf_kind=kind, feature_source=source)
    seen = {}
    if crf is not None:
        crf.register_forward_hook(lambda mod, args, out: seen.update(guide=args[1]))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    out = net(x)
    assert out["refined"].shape == (2, 2, 16, 16)
    if crf is None:
        assert out["refined"] is out["logits"] and "decoder" not in out
        return
    source_of_guide = get_kind(kind).guide_source(source)
    expected = {"image": x, "logits": out["logits"], "decoder": out.get("decoder")}[source_of_guide]
    assert seen["guide"] is expected
    assert ("decoder" in out) == (source_of_guide == "decoder")


def test_unknown_names_are_clear_errors():
    with pytest.raises(CrispError, match="crf.yaml: .*kind: .*unknown CRF kind 'gibbs'.*cd-crf"):
        validate_config(CRFConfig, {"kind": "gibbs"}, "crf.yaml")
    with pytest.raises(CrispError, match="crf.yaml: .*solver: .*unknown CRF solver 'icm'.*frank-wolfe"):
        validate_config(CRFConfig, {"kind": "crf", "solver": "icm"}, "crf.yaml")
    with pytest.raises(CrispError, match="unknown CRF kind"):
        get_kind("cdcrf")
    with pytest.raises(CrispError, match="unknown CRF solver"):
        get_solver(["mean-field"])
    with pytest.raises(CrispError, match="w_appearance"):
        validate_config(CRFConfig, {"kind": "crf", "w_appearance": float("nan")}, "crf.yaml")


def test_a_new_solver_is_one_class_and_one_entry(monkeypatch):
    class KeepCNN(CRFSolver):
        name = "keep-cnn"
        description = "returns the CNN's softmax"

        def solve(self, crf, logits, filters):
            return torch.softmax(logits, 1), logits

    monkeypatch.setitem(CRF_SOLVERS, KeepCNN.name, KeepCNN())
    crf = build_crf(CRFConfig(kind="crf", solver="keep-cnn"), scale=4.0)
    image, logits, _ = _inputs()
    torch.testing.assert_close(crf(logits, image), torch.log_softmax(logits, 1))


def test_a_new_kind_is_one_class_and_one_entry(monkeypatch):
    class FlatCRF(CRFKind):
        name = "flat-crf"
        description = "appearance kernel on a constant guide (a second smoothness kernel)"

        def guide_source(self, feature_source):
            return "image"

        def features(self, guide, feature_source, reducer=None):
            return torch.zeros_like(guide[:, :1])

    monkeypatch.setitem(CRF_KINDS, FlatCRF.name, FlatCRF())
    config = CRFConfig(kind="flat-crf", iterations=2)
    crf = build_crf(config, scale=4.0)
    image, logits, _ = _inputs()
    # with a constant guide the appearance kernel does not depend on the image
    out = crf(logits, image)
    torch.testing.assert_close(out, crf(logits, torch.randn_like(image)))


# ---------------------------------------------------------------------------------------------- losses
LOSS_CASES = list(L.LOSS_NAMES) + sorted(L.LOSS_ALIASES)


def _labels():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[0, 4:10, 3:12] = 1
    labels[1, 8:14, 8:14] = 1
    return labels


def _logits_for(labels, margin):
    onehot = torch.stack([(labels == 0).float(), (labels == 1).float()], dim=1)
    return (2 * onehot - 1) * margin


def _build(spec):
    """build_loss with the class prior of _labels() (everything labelled: pi = lambda) for nnpu."""
    fraction = float((_labels() == 1).float().mean())
    return L.build_loss(spec, {"prior": fraction, "labelled": fraction})


def test_loss_registry_names_and_aliases():
    assert L.LOSS_NAMES == ("dice", "jaccard", "tversky", "lovasz", "cross-entropy", "focal", "nnpu",
                            "nnpu-bce")
    assert L.LOSS_ALIASES == {"iou": "jaccard", "ce": "cross-entropy", "crossentropy": "cross-entropy",
                              "cross_entropy": "cross-entropy", "pu": "nnpu",
                              "nnpu-logistic": "nnpu-bce"}
    for alias, name in L.LOSS_ALIASES.items():
        assert L.resolve_loss(alias.upper()) == name


@pytest.mark.parametrize("name", LOSS_CASES)
def test_loss_entry_orders_perfect_random_wrong(name):
    labels = _labels()
    loss = _build(name)
    perfect = float(loss(_logits_for(labels, 20.0), labels))
    random = float(loss(torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)), labels))
    wrong = float(loss(_logits_for(labels, -20.0), labels))
    assert all(map(torch.isfinite, map(torch.tensor, (perfect, random, wrong))))
    assert abs(perfect) < 1e-3
    assert perfect < random < wrong
    assert wrong > 0.3


@pytest.mark.parametrize("name", LOSS_CASES)
def test_loss_entry_passes_gradients_and_matches_its_canonical_name(name):
    labels = _labels()
    logits = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    value = _build(name)(logits, labels)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    canonical = _build(L.resolve_loss(name))(logits, labels)
    assert float(value.detach()) == float(canonical)


@pytest.mark.parametrize("first,second", list(itertools.combinations(L.LOSS_NAMES, 2)))
def test_weighted_sum_of_two_entries(first, second):
    labels = _labels()
    logits = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    combo = _build(f"{first} + 0.25*{second}")
    assert combo.names == [first, second] and combo.weights == [1.0, 0.25]
    expected = float(_build(first)(logits, labels)) + 0.25 * float(_build(second)(logits, labels))
    assert float(combo(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_a_new_loss_is_one_entry(monkeypatch):
    entry = L.LossEntry("mse-prob", lambda **p: _ProbMSE(**p), ("mse",), "squared error of the probabilities")
    monkeypatch.setitem(L.LOSSES, entry.name, entry)
    monkeypatch.setitem(L.LOSS_ALIASES, "mse", entry.name)
    labels = _labels()
    loss = _build("dice + 2*MSE")
    assert loss.names == ["dice", "mse-prob"]
    assert float(loss(_logits_for(labels, 20.0), labels)) < 1e-3


class _ProbMSE(nn.Module):
    def forward(self, logits, labels):
        return ((torch.softmax(logits, 1)[:, 1] - labels.float()) ** 2).mean()


@pytest.mark.parametrize("spec,message", [
    ("dice+0*focal", "positive"),
    ("dice+1e999*focal", "finite"),
    (42, "a loss is a name"),
    ([{"name": 3}], "must be a string"),
    ([{"name": "dice", "weight": "heavy"}], "must be a number"),
    ([{"name": "dice", "weight": True}], "must be a number"),
    ([{"name": "dice", "params": [1, 2]}], "params must be a mapping"),
    ([{"name": "dice", "params": {"smooth": "x"}}], "cannot be evaluated"),
    ([{"name": "cross-entropy", "params": {"weight": [1.0, 2.0]}}], "bad parameters|cannot be evaluated"),
    ([{"name": "tversky", "params": {"alpha": float("nan")}}], "non-finite"),
    ([{"name": "focal", "params": {"colour": 1}}], "bad parameters"),
])
def test_bad_loss_specs_are_crisp_errors(spec, message):
    # before the registry, all but the last two raised TypeError, AttributeError or ValueError, or gave
    # a loss (0 weight, inf weight, NaN)
    with pytest.raises(CrispError, match=message):
        _build(spec)
