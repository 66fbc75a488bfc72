"""Micrograph preparation in PyTorch (crisp.preprocess_torch) against the numpy/scipy reference.

Tolerances (measured on this machine's CPU, torch 2.14 / scipy 1.17, float32 FFTs on both sides):
Fourier resampling agrees within 4.1e-7 of the largest magnitude of its input or output (asserted:
2e-6); the GMM's fitted parameters within 1e-12 relative (float64 sums in another order; asserted:
1e-9), so the normalised images are equal (asserted: 1e-6 of their scale). Prepared network inputs
of the tiny run differ by at most 2.4e-6 (pixels up to 9), its maps by at most 2.7e-6 and its picks'
sub-pixel positions by 4e-5 px. The tests also run on a CUDA device when there is one (cuFFT rounds
differently: same tolerances).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crisp.errors import CrispError
from crisp.patches import prepare_image
from crisp.preprocess import binned_shape, fit_gmm_background, fourier_resize, normalize
from crisp.preprocess_torch import (
    fit_gmm_background_torch,
    fourier_bin_torch,
    fourier_resize_torch,
    normalize_gmm_torch,
    normalize_torch,
    prepare_on_device,
)

torch.set_num_threads(1)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]
RESAMPLE_RTOL = 2e-6  # of the largest magnitude of the reference's input or output
FIT_RTOL = 1e-9


def _close_to_reference(result: torch.Tensor, reference: np.ndarray, rtol: float = RESAMPLE_RTOL,
                        source: np.ndarray | None = None) -> None:
    """``result`` equals ``reference`` within ``rtol`` of the largest magnitude of the reference or of
    its ``source`` (float rounding of an FFT is relative to its input: resampling to 1 pixel leaves the
    mean, which may be much smaller than the pixels)."""
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    out = result.cpu().numpy()
    assert out.shape == reference.shape
    scale = max(float(np.abs(reference).max()), 0.0 if source is None else float(np.abs(source).max()), 1e-30)
    np.testing.assert_allclose(out, reference, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (50, 37), (1, 9), (2, 2)])
@pytest.mark.parametrize("target", [(32, 32), (31, 33), (17, 40), (128, 97), (3, 5), (1, 1)])
def test_fourier_resize_matches_scipy(device, shape, target):
    """Odd and even, square and non-square, binning and upsampling (also both at once), to 1 pixel: the
    same array as crisp.preprocess.fourier_resize (scipy.signal.resample per axis)."""
    x = np.random.default_rng(sum(shape) + sum(target)).normal(size=shape).astype(np.float32)
    result = fourier_resize_torch(torch.from_numpy(x).to(device), target)
    assert result.device.type == device
    _close_to_reference(result, fourier_resize(x, target), source=x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("factor", [4, 2.5, 3.3, 1.7, 0.5, 0.75, 1])
def test_fourier_bin_non_integer_factors_and_volumes(device, factor):
    rng = np.random.default_rng(7)
    image = (rng.normal(size=(203, 150)) + 5).astype(np.float32)
    target = binned_shape(image.shape, factor)
    _close_to_reference(fourier_resize_torch(torch.from_numpy(image).to(device), target),
                        fourier_resize(image, target))
    volume = rng.normal(size=(20, 17, 24)).astype(np.float32)
    target = binned_shape(volume.shape, factor)
    _close_to_reference(fourier_resize_torch(volume, target).to(device), fourier_resize(volume, target))
    if factor >= 1:
        _close_to_reference(fourier_bin_torch(torch.from_numpy(image).to(device), factor),
                            fourier_resize(image, binned_shape(image.shape, factor)))


def test_fourier_resize_known_answers():
    """Independent of scipy: a cosine below the new Nyquist frequency is sampled exactly on the binned
    grid (pixel 0 on pixel 0); the mean is kept; the size unchanged returns an equal copy."""
    n, m, k = 96, 40, 7  # 7 cycles over the image: below the binned grid's Nyquist (20)
    y = np.arange(n)[:, None] * np.ones((1, 60))
    image = (3.0 + np.cos(2 * np.pi * k * y / n)).astype(np.float32)
    out = fourier_resize_torch(torch.from_numpy(image), (m, 60)).numpy()
    expected = 3.0 + np.cos(2 * np.pi * k * np.arange(m)[:, None] / m) * np.ones((1, 60))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    noise = np.random.default_rng(0).normal(size=(45, 31)).astype(np.float32)
    assert fourier_resize_torch(noise, (20, 70)).numpy().mean() == pytest.approx(noise.mean(), abs=1e-6)
    source = torch.from_numpy(noise)
    same = fourier_resize_torch(source, (45, 31))
    assert torch.equal(same, source) and same.data_ptr() != source.data_ptr()
    with pytest.raises(CrispError):
        fourier_resize_torch(noise, (10,))


def _bimodal(shape, seed, fraction=0.15, offset=8.0):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.5, 2.0, size=shape)
    image[rng.random(shape) < fraction] += offset
    return image.astype(np.float32)


def _fits_agree(a, b) -> None:
    for name in ("mean_bg", "mean_fg", "std", "weight_bg"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=FIT_RTOL, abs=1e-12), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["bimodal", "dark-particles", "unimodal", "subsampled", "prior"])
def test_gmm_fit_and_normalisation_match_numpy(device, case):
    """The same EM (both starts, the stopping rule, the Beta prior, the seeded subsample) gives the
    reference's parameters, and the normalised image is the reference's."""
    kwargs = {}
    if case == "bimodal":
        image = _bimodal((120, 90), 0)
    elif case == "dark-particles":  # foreground below the background: the second start wins
        image = _bimodal((120, 90), 1, offset=-8.0)
    elif case == "unimodal":  # the prior decides
        image = np.random.default_rng(2).normal(size=(80, 70)).astype(np.float32)
    elif case == "subsampled":  # more pixels than max_samples: the same seeded subsample
        image = _bimodal((400, 333), 3)
        kwargs = {"seed": 5}
    else:
        image = _bimodal((100, 100), 4)
        kwargs = {"prior_alpha": 10.0, "prior_beta": 40.0, "max_samples": 5000, "n_iter": 7}
    reference = fit_gmm_background(image, **kwargs)
    tensor = torch.from_numpy(image).to(device)
    fit = fit_gmm_background_torch(tensor, **kwargs)
    _fits_agree(fit, reference)
    if case in ("bimodal", "subsampled"):  # the fit finds the planted mixture
        assert fit.weight_bg == pytest.approx(0.85, abs=0.02) and fit.std == pytest.approx(2.0, rel=0.05)
    out = normalize_gmm_torch(tensor, **kwargs)
    assert out.device.type == device
    _close_to_reference(out, normalize(image, "gmm", **kwargs), rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_methods_and_edge_cases(device):
    image = _bimodal((64, 48), 9)
    tensor = torch.from_numpy(image).to(device)
    _close_to_reference(normalize_torch(tensor, "zscore"), normalize(image, "zscore"), rtol=1e-6)
    none = normalize_torch(tensor, "none")
    assert torch.equal(none.cpu(), torch.from_numpy(image)) and none.data_ptr() != tensor.data_ptr()
    flat = torch.full((10, 10), 2.5, device=device)
    fit = fit_gmm_background_torch(flat)
    assert (fit.mean_bg, fit.std, fit.weight_bg) == (2.5, 0.0, 1.0)
    assert torch.equal(normalize_torch(flat, "gmm").cpu(), torch.zeros(10, 10))
    with pytest.raises(CrispError, match="fewer than 2 pixels"):
        fit_gmm_background_torch(torch.ones(1, device=device))
    with pytest.raises(CrispError, match="pseudo-counts"):
        fit_gmm_background_torch(tensor, prior_alpha=-1)
    with pytest.raises(CrispError, match="unknown normalisation"):
        normalize_torch(tensor, "minmax")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("factor", "method"), [(4, "gmm"), (2.5, "gmm"), (1, "gmm"), (3, "zscore"),
                                                (0.5, "zscore"), (2, "none")])
def test_prepare_on_device_matches_prepare_image(device, factor, method):
    """Bin, then normalise, on the device: crisp.patches.prepare_image's image; integer and half pixel
    types travel as they are."""
    image = _bimodal((301, 257), 11, offset=6.0)
    result = prepare_on_device(image, factor, method, device)
    assert result.device.type == device
    _close_to_reference(result, prepare_image(image, factor, method), rtol=1e-5)
    counts = np.random.default_rng(1).poisson(3.0, size=(128, 96)).astype(np.int16)
    _close_to_reference(prepare_on_device(counts, factor, method, device),
                        prepare_image(counts, factor, method), rtol=1e-5)
    half = image.astype(np.float16)
    _close_to_reference(prepare_on_device(half, factor, method, device), prepare_image(half, factor, method),
                        rtol=1e-5)
    with pytest.raises(CrispError, match="unknown normalisation"):
        prepare_on_device(image, factor, "minmax", device)


def test_predictor_takes_a_prepared_tensor():
    """A tensor goes through the same padding (numpy's reflection, in torch) and forward as an array:
    the same map bit for bit; a tensor that must be tiled, or is too small to reflect its margin once,
    takes the host's way and gives the array's map too."""
    from crisp.inference import Predictor
    from test_tiling import _tiny_unet

    net, config = _tiny_unet()
    image = np.random.default_rng(3).normal(size=(101, 67)).astype(np.float32)
    predictor = Predictor(net, patch_px=config.patch_px, overlap=config.val_overlap_px, max_tile_px=4096,
                          backend="eager")
    np.testing.assert_array_equal(predictor.foreground(torch.from_numpy(image)), predictor.foreground(image))
    tiled = Predictor(net, patch_px=64, overlap=16, max_tile_px=64, backend="eager")
    np.testing.assert_array_equal(tiled.foreground(torch.from_numpy(image)), tiled.foreground(image))
    small = image[:5, :6].copy()  # margin 8 > 4: numpy reflects twice
    np.testing.assert_array_equal(predictor.foreground(torch.from_numpy(small)), predictor.foreground(small))
    with pytest.raises(CrispError, match="2-D"):
        predictor.foreground(torch.zeros(1, 8, 8))


@pytest.fixture(scope="module")
def trained_gmm(tmp_path_factory):
    """A tiny run trained on GMM-normalised images (the normalisation the device path reimplements)."""
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    root = tmp_path_factory.mktemp("prep-device")
    ds = make_dataset(root / "ds", n=3, size=200, n_train=2, n_val=1)
    run = train(tiny_config(epochs=2, normalize="gmm"), ds, root / "run", progress=False)
    return run, ds / "micrographs"


def test_segment_and_pick_prepared_on_the_device(trained_gmm, tmp_path):
    """--prepare-on device on the CPU: maps within 1e-5 of the reference path's and the same picks (within
    1e-3 px);
    the default (auto, on a CPU) is the reference path bit for bit; a bad value is refused."""
    import starfile

    from crisp.batch import read_records
    from crisp.cli import main
    from crisp.config import save_yaml
    from crisp.inference.segment_pick import segment_and_pick_files
    from crisp.io.micrographs import read_micrograph
    from crisp.picking.base import X, Y
    from crisp.picking.tune import PickerConfig

    run, mics = trained_gmm
    picker = PickerConfig(diameter_px=20, pixel_size=2.0, border_fraction=0.5)
    common = dict(picker=picker, progress=False, threads=1, save_maps="grid", backend="eager")
    outs = {}
    for mode in ("cpu", "device", "auto"):
        outs[mode] = tmp_path / mode
        segment_and_pick_files(run, mics, outs[mode], prepare_on=mode, **common)
    records = {mode: read_records(out) for mode, out in outs.items()}
    assert {r["result"]["prepared_on"] for r in records["device"].values()} == {"cpu"}  # torch's CPU
    n_picks = 0
    for i in range(3):
        stem = f"mic{i:02d}"
        maps = {mode: read_micrograph(out / "maps" / f"{stem}.mrc").data.astype(np.float32)
                for mode, out in outs.items()}
        picks = {mode: starfile.read(out / f"{stem}_autopick.star")[[X, Y]].to_numpy()
                 for mode, out in outs.items()}
        np.testing.assert_array_equal(maps["auto"], maps["cpu"])
        np.testing.assert_array_equal(picks["auto"], picks["cpu"])
        # float16 maps: the difference is below their rounding (1e-5 in float32 before writing)
        np.testing.assert_allclose(maps["device"], maps["cpu"], atol=1e-3)
        # the same picks, in the same order; their sub-pixel positions move by float rounding (4e-5 px)
        assert picks["device"].shape == picks["cpu"].shape
        np.testing.assert_allclose(picks["device"], picks["cpu"], rtol=0, atol=1e-3)
        n_picks += len(picks["cpu"])
    assert n_picks > 10
    with pytest.raises(CrispError, match="--prepare-on"):
        segment_and_pick_files(run, mics, tmp_path / "bad", prepare_on="gpu", **common)
    save_yaml(tmp_path / "picker.yaml", picker)
    assert main(["segment-and-pick", str(run), str(mics), "-o", str(tmp_path / "cli"), "--picker",
                 str(tmp_path / "picker.yaml"), "--prepare-on", "gpu", "--no-progress"]) == 2


def test_device_input_matches_network_input_on_the_grid(trained_gmm):
    """The network's input prepared on the device equals the reference's within float rounding, and its
    map on the grid (float32, before any file) within 1e-5."""
    from crisp.inference.segment_pick import SegmentPicker
    from crisp.io.micrographs import read_micrograph
    from crisp.picking.tune import PickerConfig

    run, mics = trained_gmm
    fn = SegmentPicker(run, PickerConfig(diameter_px=20, pixel_size=2.0), names={}, formats={"star"},
                       threshold=None, box_size_px=None, save_maps=None, pixel_size=None, overlap=None,
                       tta=None, threads=1, backend="eager", prepare_on="device")
    ((config, predictor),) = fn.models()
    assert fn.preparation_device(predictor) == torch.device("cpu")
    path = mics / "mic01.mrc"
    mic = read_micrograph(path)
    reference = fn.network_input(config, mic, path)
    prepared = fn.device_input(config, mic, path, predictor.device)
    _close_to_reference(prepared, reference, rtol=1e-6)
    difference = np.abs(predictor.foreground(prepared) - predictor.foreground(reference))
    assert difference.max() < 1e-5
    assert SegmentPicker(run, None, names={}, formats=set(), threshold=None, box_size_px=None, save_maps=None,
                         pixel_size=None, overlap=None, tta=None).preparation_device(predictor) is None
