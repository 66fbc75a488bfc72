"""Model zoo: architectures, encoders, encoder weights and losses by name."""

from __future__ import annotations

import pytest
import torch

from crisp.errors import CrispError
from crisp.models import zoo

torch.set_num_threads(1)


@pytest.mark.parametrize("name,key", [("Unet", "unet"), ("unet++", "unetplusplus"),
                                      ("UnetPlusPlus", "unetplusplus"), ("deeplabv3+", "deeplabv3plus"),
                                      ("FPN", "fpn"), ("segformer", "segformer")])
def test_architecture_aliases(name, key):
    assert zoo.resolve_architecture(name) == key


def test_every_smp_architecture_listed():
    import segmentation_models_pytorch as smp

    assert set(zoo.architecture_names()) == set(smp.MODEL_ARCHITECTURES_MAPPING)
    assert {"unet", "unetplusplus", "deeplabv3plus", "fpn", "pspnet", "linknet", "manet", "pan"} <= set(
        zoo.architecture_names())


@pytest.mark.parametrize("arch", ["unet", "unet++", "fpn", "deeplabv3+", "linknet"])
def test_build_one_channel_two_class_logits(arch):
    model = zoo.build_model(arch, "resnet18", encoder_depth=None if arch in ("fpn", "deeplabv3+") else 3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 2, 64, 64)


def test_timm_universal_encoder_without_download():
    model = zoo.build_model("unet", "tu-resnet10t", encoder_depth=3)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_unknown_names_are_clear_errors():
    with pytest.raises(CrispError, match="unknown architecture 'unetx'.*unetplusplus"):
        zoo.build_model("unetx", "resnet18")
    with pytest.raises(CrispError, match="unknown encoder 'resnet19'.*resnet18"):
        zoo.build_model("unet", "resnet19")
    with pytest.raises(CrispError, match="unknown timm encoder"):
        zoo.build_model("unet", "tu-no_such_model_xyz")
    with pytest.raises(CrispError, match="cannot be built"):  # DPT needs a timm ViT encoder
        zoo.build_model("dpt", "resnet18")


def test_encoder_weights_loaded_and_rgb_conv_summed(tmp_path):
    source = zoo.build_model("unet", "resnet18", encoder_depth=3)
    state = {k: v.clone() for k, v in source.encoder.state_dict().items()}
    conv = state["conv1.weight"]  # [64, 1, 7, 7]
    rgb = torch.cat([conv / 3, conv / 3, conv / 3], dim=1)  # a 3-channel conv that sums to conv
    state["conv1.weight"] = rgb
    state["extra.weight"] = torch.zeros(3)  # unexpected key: reported, not fatal
    path = tmp_path / "enc.pt"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="non-strictly"):
        target = zoo.build_model("unet", "resnet18", encoder_depth=3, encoder_weights=path)
    for key, value in source.encoder.state_dict().items():
        assert torch.allclose(target.encoder.state_dict()[key], value, atol=1e-6), key
    report = zoo.load_encoder_weights(target, path)
    assert report["unexpected"] == ["extra.weight"] and report["missing"] == []


def test_encoder_weights_bad_file(tmp_path):
    with pytest.raises(CrispError, match="not found"):
        zoo.build_model("unet", "resnet18", encoder_weights=tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a state dict")
    with pytest.raises(CrispError, match="not a readable"):
        zoo.build_model("unet", "resnet18", encoder_weights=bad)


def test_parse_loss_spec():
    assert zoo.parse_loss_spec("dice") == [{"name": "dice", "weight": 1.0, "params": {}}]
    terms = zoo.parse_loss_spec("dice + 0.5*focal")
    assert [(t["name"], t["weight"]) for t in terms] == [("dice", 1.0), ("focal", 0.5)]
    terms = zoo.parse_loss_spec([{"name": "tversky", "params": {"alpha": 0.3, "beta": 0.7}}])
    assert terms[0]["params"] == {"alpha": 0.3, "beta": 0.7}
    with pytest.raises(CrispError, match="unknown loss 'dise'"):
        zoo.parse_loss_spec("dise")
    with pytest.raises(CrispError, match="cannot parse"):
        zoo.parse_loss_spec("dice+*")


def test_losses_values():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    perfect = torch.stack([(labels == 0).float(), (labels == 1).float()], dim=1) * 40 - 20
    wrong = -perfect
    fraction = float((labels == 1).float().mean())  # the class prior of nnpu: everything labelled
    for name in zoo.LOSS_NAMES:
        loss = zoo.build_loss(name, {"prior": fraction, "labelled": fraction})
        assert float(loss(perfect, labels)) < 0.01, name
        assert float(loss(wrong, labels)) > 0.3, name
    # a weighted sum is the sum of its weighted terms
    logits = torch.randn(1, 2, 8, 8)
    combo = float(zoo.build_loss("dice+0.5*cross-entropy")(logits, labels))
    expected = float(zoo.build_loss("dice")(logits, labels)) + 0.5 * float(
        torch.nn.functional.cross_entropy(logits, labels))
    assert combo == pytest.approx(expected, rel=1e-6)


def test_tversky_params_change_value():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4] = 1
    logits = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    a = float(zoo.build_loss([{"name": "tversky", "params": {"alpha": 0.1, "beta": 0.9}}])(logits, labels))
    b = float(zoo.build_loss([{"name": "tversky", "params": {"alpha": 0.9, "beta": 0.1}}])(logits, labels))
    assert a != pytest.approx(b)


def test_encoder_parameter_count():
    assert zoo.encoder_parameter_count("resnet18") == pytest.approx(11.17e6, rel=0.02)


def _unused_parameters(model) -> int:
    """Brute force: parameters with no gradient after a forward and backward pass (eval mode)."""
    model.eval()
    model(torch.randn(1, 1, 64, 64)).sum().backward()
    unused = sum(p.numel() for p in model.parameters() if p.grad is None)
    model.zero_grad(set_to_none=True)
    return unused


@pytest.mark.parametrize(("arch", "encoder", "depth", "left"), [
    ("unet", "resnet18", 4, 0), ("unetplusplus", "resnet18", 4, 0), ("unet", "resnet34", 3, 0),
    ("unet", "resnet18", 5, 0),
    # EfficientNet runs the blocks of the next stage and discards their output: those are kept
    ("unet", "efficientnet-b0", 3, 368934),
])
def test_unused_encoder_stages_are_pruned_without_changing_outputs(arch, encoder, depth, left, monkeypatch):
    torch.manual_seed(0)
    model = zoo.build_model(arch, encoder, encoder_depth=depth)
    assert _unused_parameters(model) == left
    monkeypatch.setattr(zoo, "prune_unused_encoder_modules", lambda model, input_px=64: 0)
    torch.manual_seed(0)
    full = zoo.build_model(arch, encoder, encoder_depth=depth)  # the same seed, nothing pruned
    removed = _unused_parameters(full) - left
    assert zoo.parameter_count(full) - zoo.parameter_count(model) == removed
    assert (removed > 0) == (depth < 5)
    x = torch.randn(2, 1, 64, 96)
    model.eval(), full.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x), rtol=0, atol=0)
    # a state dict written before pruning (with the unused stages) loads into the pruned network
    zoo.load_network_state(model, full.state_dict())
    with pytest.raises(CrispError, match="does not fit"):
        zoo.load_network_state(model, {k: v for k, v in full.state_dict().items() if "decoder" not in k})
