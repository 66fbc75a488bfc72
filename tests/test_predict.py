"""Tiled inference: seamless stitching, grid alignment of the resampled map, segment_files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crisp.errors import CrispError
from crisp.predict import blend_window, predict_probabilities, upsample_to

torch.set_num_threads(1)


def test_window_positive_and_peaked():
    w = blend_window(128)
    assert w.min() > 0
    assert w[64, 64] == pytest.approx(w.max(), rel=1e-3)
    assert w[0, 0] < 1e-3 * w.max()


@pytest.mark.parametrize("shape", [(300, 517), (100, 90), (128, 128), (129, 257), (7, 300)])
def test_identity_model_reproduces_input(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        assert batch.shape[-2:] == (128, 128)
        return batch

    out = predict_probabilities(identity, image, patch=128, overlap=64, batch_size=3)
    assert out.shape == (1,) + shape
    assert np.max(np.abs(out[0] - image)) < 1e-5
    assert calls


def test_constant_model_gives_constant():
    image = np.zeros((300, 517), np.float32)

    def constant(batch):
        return torch.stack([torch.full_like(batch[:, 0], 0.25), torch.full_like(batch[:, 0], 0.75)], dim=1)

    out = predict_probabilities(constant, image, patch=128, overlap=32)
    assert out.shape == (2, 300, 517)
    np.testing.assert_allclose(out[0], 0.25, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.75, atol=1e-6)


def test_tiles_blend_each_tile_result():
    """A model whose output depends on the tile (its mean) still yields a smooth, bounded blend."""
    image = np.linspace(0, 1, 400 * 400, dtype=np.float32).reshape(400, 400)
    out = predict_probabilities(lambda b: b.mean(dim=(2, 3), keepdim=True).expand_as(b), image, 128, 64)[0]
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
    assert np.max(np.abs(np.diff(out, axis=1))) < 0.02  # no seams


def test_bad_overlap():
    with pytest.raises(CrispError, match="overlap"):
        predict_probabilities(lambda b: b, np.zeros((10, 10)), patch=64, overlap=64)


def test_upsample_aligns_with_original_grid():
    """A blob binned by crisp.preprocess and resampled back sits where it was (pixel grid kept)."""
    from crisp.patches import bin_image

    ny, nx = 203, 310
    y0, x0 = 91.0, 187.0
    yy, xx = np.mgrid[:ny, :nx]
    blob = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 8.0 ** 2)).astype(np.float32)
    for factor in (2, 4):
        binned = bin_image(blob, factor)
        back = upsample_to(binned, (ny, nx))
        assert back.shape == (ny, nx)
        w = np.clip(back, 0, None) ** 4
        cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
        assert abs(cy - y0) < 0.25 and abs(cx - x0) < 0.25, (factor, cy, cx)
        assert np.abs(back - blob).max() < 0.08  # bilinear blunting of the peak


def test_segment_files(tmp_path):
    from crisp.cli import main
    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.predict import segment_files
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    ds = make_dataset(tmp_path / "ds", n=4, size=200, n_train=2, n_val=1)
    run = train(tiny_config(epochs=1), ds, tmp_path / "run", progress=False)
    mics = ds / "micrographs"
    # an odd-sized TIFF-free extra input: a 150 x 230 MRC without a pixel size
    odd = tmp_path / "extra" / "odd.mrc"
    write_mrc(odd, np.random.default_rng(1).normal(size=(150, 230)).astype(np.float32))
    out = tmp_path / "seg"
    paths = segment_files(run, [mics, odd], out, progress=False, pixel_size=None)
    assert [p.name for p in paths] == [f"mic{i:02d}.mrc" for i in range(4)] + ["odd.mrc"]
    first = read_micrograph(paths[0])
    assert first.shape == (200, 200) and first.pixel_size == pytest.approx(2.0)
    assert 0.0 <= first.data.min() and first.data.max() <= 1.0
    import mrcfile

    with mrcfile.open(paths[0]) as mrc:
        assert mrc.data.dtype == np.float16
    assert read_micrograph(paths[-1]).shape == (150, 230)
    # a rerun skips what exists; --overwrite recomputes
    stamp = paths[0].stat().st_mtime_ns
    segment_files(run, [mics], out, progress=False)
    assert paths[0].stat().st_mtime_ns == stamp
    assert main(["segment", str(run), str(mics / "mic00.mrc"), "-o", str(out), "--overwrite",
                 "--no-progress"]) == 0
    assert paths[0].stat().st_mtime_ns != stamp
    assert main(["segment", str(tmp_path / "nope"), str(mics), "-o", str(out), "--overwrite"]) == 2
    # an ensemble: the mean of the runs' maps (a run with itself gives its own map)
    other = train(tiny_config(epochs=1, seed=7), ds, tmp_path / "run7", progress=False)
    single7 = read_micrograph(segment_files(other, [mics / "mic00.mrc"], tmp_path / "seg7",
                                            progress=False)[0]).data.astype(np.float32)
    single = read_micrograph(paths[0]).data.astype(np.float32)
    assert np.abs(single7 - single).mean() > 1e-3  # two different networks
    assert main(["segment", str(run), str(mics / "mic00.mrc"), "-o", str(tmp_path / "ens"), "--ensemble",
                 str(other), "--no-progress"]) == 0
    both = read_micrograph(tmp_path / "ens" / "mic00.mrc").data.astype(np.float32)
    np.testing.assert_allclose(both, (single + single7) / 2, atol=1e-3)  # float16 maps: ~5e-4 steps
    self_pair = segment_files([run, run], [mics / "mic00.mrc"], tmp_path / "self", progress=False)[0]
    np.testing.assert_array_equal(read_micrograph(self_pair).data, read_micrograph(paths[0]).data)
    assert main(["segment", str(run), str(mics / "mic00.mrc"), "-o", str(tmp_path / "bad"), "--ensemble",
                 str(tmp_path / "nope")]) == 2


class _AsymmetricNet(torch.nn.Module):
    """A network with no symmetry: a random 5x5 convolution (2 classes), fixed seed."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("kernel", torch.randn(2, 1, 5, 5, generator=gen))

    def forward(self, x):
        return {"refined": torch.nn.functional.conv2d(x, self.kernel, padding=2)}


def test_tta_is_the_average_over_the_dihedral_group_and_equivariant():
    from crisp.predict import foreground_fn

    net = _AsymmetricNet()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    plain, tta = foreground_fn(net), foreground_fn(net, tta=True)
    # brute force in numpy: the 8 transforms of the image, each output mapped back, averaged
    reference = np.zeros((3, 2, 16, 16))
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(x.numpy(), turns, axes=(2, 3))
            view = view[..., ::-1] if flip else view
            out = plain(torch.from_numpy(np.ascontiguousarray(view))).numpy()
            out = out[..., ::-1] if flip else out
            reference += np.rot90(out, -turns, axes=(2, 3)) / 8
    np.testing.assert_allclose(tta(x).numpy(), reference, atol=1e-6)
    # equivariance: TTA of a rotated / flipped input is the rotated / flipped TTA output; not so without
    rotated = torch.rot90(x, 1, dims=(2, 3))
    np.testing.assert_allclose(tta(rotated).numpy(), torch.rot90(tta(x), 1, dims=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(tta(torch.flip(x, dims=(2,))).numpy(), torch.flip(tta(x), dims=(2,)).numpy(),
                               atol=1e-6)
    assert np.abs(plain(rotated).numpy() - torch.rot90(plain(x), 1, dims=(2, 3)).numpy()).max() > 0.01


def test_multichannel_input_and_shrink_to_image():
    """The one tiler takes [C, H, W] stacks (the CRF's logits and guide); a model of any input size can
    get one tile of the image's own size instead of a padded patch."""
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(3, 70, 150)).astype(np.float32)
    shapes = []

    def identity(batch):
        shapes.append(tuple(batch.shape))
        return batch

    out = predict_probabilities(identity, stack, patch=64, overlap=16, batch_size=4)
    assert out.shape == stack.shape and np.abs(out - stack).max() < 1e-5
    assert {s[1:] for s in shapes} == {(3, 64, 64)}
    shapes.clear()
    small = predict_probabilities(identity, stack, patch=256, overlap=16, shrink_to_image=True)
    assert shapes == [(1, 3, 70 + 16, 150 + 16)]  # one tile: the image and its reflected margins
    assert np.abs(small - stack).max() < 1e-5
    shapes.clear()
    predict_probabilities(identity, stack, patch=100, overlap=16, shrink_to_image=True)
    assert {s[2:] for s in shapes} == {(86, 100)}  # shrunk along y only
