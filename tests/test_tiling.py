"""Fast inference (crisp.inference.Predictor): whole-image forward vs the one tiler, memory planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crisp.errors import CrispError
from crisp.inference import Predictor
from crisp.inference.predictor import activation_bytes_per_px, output_stride

torch.set_num_threads(1)


class _LocalNet(torch.nn.Module):
    """Two classes from one random 5x5 convolution: each output pixel sees only a 5x5 neighbourhood."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(2, 1, 5, 5, generator=gen))
            self.conv.bias.zero_()

    def forward(self, x):
        return {"refined": self.conv(x)}


def _tiny_unet():
    from crisp.train import build_network, make_config

    config = make_config("cpu", arch="unet", encoder="resnet18", encoder_depth=3, patch_px=64,
                         val_overlap_px=16)
    torch.manual_seed(0)
    return build_network(config).eval(), config


def test_whole_image_equals_tiles_for_a_local_network():
    """A network that sees only 5x5 pixels: one forward (with a reflected margin as the tiler's) gives
    the softmax of the convolution of the reflected image exactly; the tiler with tiles of the patch
    size agrees but for the 2 px inside each tile's edge, where the convolution sees the tile's zero
    padding (the smooth window weighs them little, not zero)."""
    net = _LocalNet()
    image = np.random.default_rng(0).normal(size=(150, 233)).astype(np.float32)
    whole = Predictor(net, patch_px=64, overlap=16, margin=8, channels_last=False).foreground(image)
    tiled_predictor = Predictor(net, patch_px=64, overlap=16, max_tile_px=64, channels_last=False)
    assert tiled_predictor.tile_px(image.shape) == 64
    tiled = tiled_predictor.foreground(image)
    assert whole.shape == tiled.shape == image.shape and whole.dtype == np.float32
    padded = np.pad(image, 2, mode="reflect")
    with torch.no_grad():
        logits = torch.nn.functional.conv2d(torch.from_numpy(padded)[None, None], net.conv.weight)[0]
    np.testing.assert_allclose(whole, torch.softmax(logits, 0)[1].numpy(), atol=2e-6)
    difference = np.abs(whole - tiled)
    assert difference.max() < 0.05 and difference.mean() < 1e-3
    # channels_last changes the memory layout only
    fast = Predictor(net, patch_px=64, overlap=16, margin=8, channels_last=True).foreground(image)
    np.testing.assert_allclose(fast, whole, atol=2e-6)


def test_whole_image_pads_to_the_stride_and_crops():
    net, config = _tiny_unet()
    # by default a reflected margin of half the overlap on every side, as the tiler's
    assert Predictor(net, patch_px=64, overlap=16).padded_shape((101, 67)) == (120, 88)  # 117, 83 up to 8
    predictor = Predictor(net, patch_px=config.patch_px, overlap=config.val_overlap_px, max_tile_px=4096,
                          margin=0)
    assert predictor.stride == output_stride(net) == 8
    assert predictor.padded_shape((101, 67)) == (104, 72)
    image = np.random.default_rng(1).normal(size=(101, 67)).astype(np.float32)
    out = predictor.foreground(image)
    assert out.shape == (101, 67) and np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    # the foreground is softmax class 1 of the network's output on the padded image
    padded = np.pad(image, ((0, 3), (0, 5)), mode="reflect")
    with torch.no_grad():
        reference = torch.softmax(net(torch.from_numpy(padded)[None, None])["refined"], 1)[0, 1, :101, :67]
    np.testing.assert_allclose(out, reference.numpy(), atol=1e-5)


def test_memory_budget_decides_whole_or_tiles():
    net, config = _tiny_unet()
    per_px = activation_bytes_per_px(net, 8)
    assert per_px > 100  # bytes of activations per input pixel (a 1-channel float32 input is 4)
    shape = (300, 300)
    whole = Predictor(net, patch_px=64, overlap=16, memory_budget=int(per_px * 320 * 320))
    assert whole.tile_px(shape) is None
    small = Predictor(net, patch_px=64, overlap=16, memory_budget=int(per_px * 130 * 130))
    # at most 128 px (the largest multiple of the stride within the budget): 3 tiles along 300 + 2 x 8
    # px of margin, each as small as covering it allows: 120 px (120 + 2 x (120 - 16) >= 316)
    assert small.tile_px(shape) == 120
    tiny = Predictor(net, patch_px=64, overlap=16, memory_budget=10)
    assert tiny.tile_px(shape) == 64  # never below the training patch
    image = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    maps = {name: p.foreground(image) for name, p in (("whole", whole), ("120", small), ("64", tiny))}
    for name, prob in maps.items():
        assert prob.shape == shape and np.isfinite(prob).all(), name
    # tiles of the patch size are the tiling of training's validation (the one tiler, same overlap)
    from crisp.predict import foreground_fn
    from crisp.tiling import predict_probabilities

    old = predict_probabilities(foreground_fn(net), image, 64, 16, batch_size=8)[1]
    np.testing.assert_allclose(maps["64"], old, atol=1e-5)
    with pytest.raises(CrispError, match="max-tile-px"):
        Predictor(net, patch_px=64, overlap=16, max_tile_px=0)


def test_tta_whole_image_is_equivariant():
    """TTA on a whole (non-square) image: the map of the flipped image is the flipped map."""
    net = _LocalNet()
    image = np.random.default_rng(3).normal(size=(40, 57)).astype(np.float32)
    predictor = Predictor(net, patch_px=32, overlap=8, tta=True, channels_last=False)
    out = predictor.foreground(image)
    flipped = predictor.foreground(np.ascontiguousarray(image[:, ::-1]))
    np.testing.assert_allclose(flipped[:, ::-1][:, 3:-3], out[:, 3:-3], atol=1e-5)


def test_onnx_backend_agrees_with_eager_and_leaves_the_network_alone():
    """ONNX Runtime (one export with free sizes) gives eager's map within float rounding on images of
    several shapes; the export leaves the network's mode and statistics as they were. A CRF network
    does not export: auto runs it in eager PyTorch without a word, onnx says so."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import warnings

    net, config = _tiny_unet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    eager = Predictor(net, patch_px=64, overlap=16, backend="eager")
    onnx = Predictor(net, patch_px=64, overlap=16, backend="onnx")
    assert onnx.backend == "onnx" and not net.training
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    for shape in ((64, 64), (101, 67), (150, 233)):
        image = np.random.default_rng(4).normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(onnx.foreground(image), eager.foreground(image), atol=1e-4)
    tiled = {b: Predictor(net, patch_px=64, overlap=16, backend=b, max_tile_px=64) for b in ("onnx", "eager")}
    np.testing.assert_allclose(tiled["onnx"].foreground(image), tiled["eager"].foreground(image), atol=1e-4)
    from crisp.train import build_network, make_config

    crf_config = make_config("cpu", arch="unet", encoder="resnet18", encoder_depth=3, patch_px=64,
                             val_overlap_px=16, crf=dict(kind="crf"))
    crf_net = build_network(crf_config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(crf_net, patch_px=64, overlap=16, backend="auto").backend == "eager"
    with pytest.warns(UserWarning, match="does not export to ONNX"):
        assert Predictor(crf_net, patch_px=64, overlap=16, backend="onnx").backend == "eager"
    with pytest.raises(CrispError, match="backend"):
        Predictor(net, patch_px=64, overlap=16, backend="tensorrt")
