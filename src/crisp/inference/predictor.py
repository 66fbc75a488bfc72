"""The network applied to a whole binned micrograph: one forward when it fits, large tiles when not.

The networks are fully convolutional, so a binned micrograph (1024² for a 4096² micrograph at bin
4) goes through the network in one forward: the image is padded by reflection (half the tile
overlap on every side, as the tiler does, then up to a multiple of the encoder's output stride),
run once, and cropped. Only an image whose forward would need more memory than the budget is cut
into tiles, as large as the budget allows, and blended by the one tiler
(:func:`crisp.tiling.predict_probabilities`, squared-sine windows). ``max_tile_px=patch_px``
reproduces the tiling of training's validation (tiles of the training patch size with the run's
overlap) exactly.

The forward runs under ``torch.inference_mode`` in channels-last memory format (on this machine's
CPU 1.4x faster than the default format for the ``cpu`` preset's U-Net ResNet-18), or in ONNX
Runtime when it is installed (1.5x faster again; see benchmarks/README.md), and returns the
foreground probability only: ``sigmoid(l1 - l0)``, which equals the softmax's class 1 for
two classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from crisp.errors import CrispError
from crisp.tiling import dihedral_mean

#: fraction of the memory available at start that one forward may use by default
MEMORY_FRACTION = 0.5
#: ways to run the network (:class:`Predictor`'s ``backend``)
BACKENDS = ("auto", "eager", "onnx")


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package torch's exporter needs) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def default_threads() -> int:
    """CPU cores this process may use (``os.sched_getaffinity``; ``os.cpu_count`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def available_memory_bytes(device=None) -> int:
    """Memory free for a forward: the GPU's free memory for a CUDA device, else the host's
    ``MemAvailable`` (``/proc/meminfo``; total physical memory where that is missing)."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_budget_bytes(device=None, fraction: float = MEMORY_FRACTION) -> int:
    """Default memory budget of one forward: ``fraction`` of :func:`available_memory_bytes`."""
    return int(fraction * available_memory_bytes(device))


def output_stride(network) -> int:
    """The factor the input's sides must be divisible by (the encoder's output stride; 1 if unknown)."""
    cnn = getattr(network, "cnn", network)
    encoder = getattr(cnn, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    return int(stride) if stride else 1


def activation_bytes_per_px(network, stride: int, device=None) -> float:
    """Bytes of every module output of one forward per input pixel (an upper bound of the peak).

    Measured once with forward hooks on a ``4 stride`` square input: the sum of the sizes of all
    leaf modules' outputs, divided by the input's pixels. Under ``inference_mode`` most of these
    are freed as the forward goes on, so the real peak is lower (about 0.3-0.5 of this figure for
    the presets' U-Nets); the bound keeps the default budget safe for any architecture.
    """
    import torch

    side = max(4 * stride, 64)
    total = [0]

    def hook(module, args, out):
        outs = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
        for t in outs:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        param = next(network.parameters(), None)
        dev = param.device if param is not None else device
        with torch.inference_mode():
            network(torch.zeros(1, 1, side, side, device=dev))
    finally:
        for h in handles:
            h.remove()
    return total[0] / float(side * side)


class Predictor:
    """Foreground probability of binned, normalised micrographs from one network.

    Parameters
    ----------
    network
        A :class:`crisp.models.network.SegmentationNetwork` (or any module returning ``{"refined":
        [B, 2, H, W]}`` logits) in eval mode.
    patch_px, overlap
        The run's training patch size and tile overlap (pixels of the network's grid); used when
        tiling (tiles are never smaller than ``patch_px``).
    device
        torch device (default: the network's).
    tta
        Average the 8 flips and rotations (8x the time).
    max_tile_px
        Largest side of one forward (pixels of the network's grid). None: from ``memory_budget``.
    memory_budget
        Bytes one forward may use (default: :func:`memory_budget_bytes`); ignored with ``max_tile_px``.
    margin
        Reflected pixels added on every side before a whole-image forward (then up to a multiple of
        the stride at the bottom and right). None: half the overlap, as the tiler's margin, so the
        image's border gets the same context as in tiles (without it, the network's zero padding
        at the border gave maps of up to 1.0 where the tiles gave 0 within about 16 binned pixels of
        the edge on the EMPIAR-10017 micrographs); it costs (1 + overlap / side)² of the pixels.
    channels_last
        Run in channels-last memory format (default: True).
    batch_size
        Tiles per forward when tiling with tiles of the patch size.
    backend
        ``"eager"`` (PyTorch), ``"onnx"`` (the network exported once, with free image sizes, and run by
        ONNX Runtime: 1.5x faster than eager channels-last for the ``cpu`` preset on this machine's
        CPU, maps within 1e-4) or ``"auto"``: on a CPU with ``onnxruntime`` installed (``pip install
        crisp-em[onnx]``) ONNX Runtime, else eager: a fixed rule, never a timing, so that the same
        inputs give the same maps whatever the machine's load (ONNX Runtime is 1.5x faster for the
        ``cpu`` preset, about 8 % slower for ``paper``; ask for ``"eager"`` there). A network that
        does not export (the CRF layers do not) runs in eager PyTorch (with a warning when ``"onnx"``
        was asked for). :attr:`backend` tells the one in use.
    """

    def __init__(self, network, *, patch_px: int, overlap: int, device=None, tta: bool = False,
                 max_tile_px: int | None = None, memory_budget: int | None = None, margin: int | None = None,
                 channels_last: bool = True, batch_size: int = 8, backend: str = "auto") -> None:
        import torch

        if backend not in BACKENDS:
            raise CrispError(f"unknown inference backend {backend!r} (choose from {', '.join(BACKENDS)})")

        if max_tile_px is not None and max_tile_px < 1:
            raise CrispError(f"--max-tile-px must be positive (got {max_tile_px})")
        if not 0 <= overlap < patch_px:
            raise CrispError(f"overlap must be in [0, patch) (got overlap {overlap}, patch {patch_px})")
        param = next(network.parameters(), None)
        self.device = torch.device(device) if device is not None else (
            param.device if param is not None else torch.device("cpu"))
        self.network = network.to(self.device).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.patch_px, self.overlap, self.tta = int(patch_px), int(overlap), bool(tta)
        self.margin = int(overlap // 2 if margin is None else margin)
        self.batch_size = int(batch_size)
        self.stride = output_stride(network)
        self.max_tile_px = max_tile_px
        self._budget = memory_budget
        self._bytes_per_px: float | None = None
        self._session = None
        requested = backend
        if backend == "auto":
            backend = "onnx" if self.device.type == "cpu" and onnxruntime_available() else "eager"
        if backend == "onnx" and self.device.type != "cpu":
            raise CrispError(f"the onnx backend runs on the CPU only (the device is {self.device})")
        self.backend = backend
        if backend == "onnx":
            self._session = self._onnx_session(warn=requested == "onnx")

    def _onnx_session(self, warn: bool = True):
        """The network exported to ONNX (free batch, height and width) in an ONNX Runtime session with
        torch's thread count; None (and ``backend`` eager) when the export fails."""
        import io
        import warnings

        import torch

        try:
            import onnxruntime as ort
        except ImportError:
            raise CrispError("the onnx backend needs onnxruntime: pip install crisp-em[onnx]") from None

        class Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)["refined"]

        side = 4 * self.stride
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = self.network.to(memory_format=torch.contiguous_format)
                torch.onnx.export(Logits(net).cpu().eval(), (torch.zeros(1, 1, side, side),), buffer,
                                  input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                                  dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}})
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            # no memory arena: it keeps the largest forward's memory (cpu preset, 1024²: peak RSS 1.75
            # instead of 1.48 GB) for a few percent of speed
            options.enable_cpu_mem_arena = False
            session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - any export failure: eager PyTorch still works
            if warn:
                warnings.warn(f"the network does not export to ONNX ({type(err).__name__}: {str(err)[:200]})"
                              "; running it in eager PyTorch", stacklevel=2)
            self.backend = "eager"
            return None
        finally:
            self.network.eval()  # the exporter restores its wrapper's mode on the network
            if self.channels_last:
                self.network = self.network.to(memory_format=torch.channels_last)
        return session

    # ------------------------------------------------------------------------------------ planning
    def bytes_per_px(self) -> float:
        """:func:`activation_bytes_per_px` of the network (measured once; TTA runs its 8 views one
        after the other, so it does not add)."""
        if self._bytes_per_px is None:
            self._bytes_per_px = activation_bytes_per_px(self.network, self.stride, self.device)
        return self._bytes_per_px

    def budget(self) -> int:
        """Bytes one forward may use."""
        if self._budget is None:
            self._budget = memory_budget_bytes(self.device)
        return int(self._budget)

    def _round_up(self, n: int) -> int:
        return -(-n // self.stride) * self.stride

    def padded_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The shape of a whole-image forward of an image of ``shape``."""
        return tuple(self._round_up(int(n) + 2 * self.margin) for n in shape)  # type: ignore[return-value]

    def tile_px(self, shape: tuple[int, int]) -> int | None:
        """None when the image of ``shape`` goes through in one forward, else the tile side."""
        py, px = self.padded_shape(shape)
        if self.max_tile_px is not None:
            if max(py, px) <= self.max_tile_px:
                return None
            side = self.max_tile_px
        else:
            per_px = self.bytes_per_px()
            if py * px * per_px <= self.budget():
                return None
            side = int(math.sqrt(self.budget() / per_px))
        side = max(self.patch_px, side // self.stride * self.stride)
        if side <= self.patch_px:
            return self.patch_px
        # as few tiles as the largest side allows, then the smallest tile that still covers the image
        # with them (tiles of the largest side would leave a last tile mostly over the previous one)
        overlap = min(self.overlap, side - 1)
        length = max(shape) + 2 * (overlap // 2)
        count = -(-(length - overlap) // (side - overlap))
        even = self._round_up(-(-(length - overlap) // count) + overlap)
        return int(min(side, max(self.patch_px, even)))

    # ----------------------------------------------------------------------------------- computing
    def _forward(self, batch):
        """Foreground probability ``[B, 1, H, W]`` of a ``[B, 1, H, W]`` float32 tensor."""
        import torch

        session = self._session
        if session is None:
            batch = batch.to(self.device, non_blocking=True)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)

        def foreground(x):
            if session is not None:
                feed = {"x": np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)}
                refined = torch.from_numpy(session.run(None, feed)[0])
            else:
                refined = self.network(x)["refined"].float()
            return torch.sigmoid(refined[:, 1:2] - refined[:, 0:1])

        return dihedral_mean(foreground, batch) if self.tta else foreground(batch)

    def model_fn(self) -> Callable:
        """A ``model_fn`` for :func:`crisp.tiling.predict_probabilities` (output ``[B, 1, P, P]``)."""
        return self._forward

    def foreground(self, image) -> np.ndarray:
        """Foreground probability (float32, the shape of ``image``) of a binned, normalised image.

        ``image`` is a numpy array or a float32 torch tensor (e.g. prepared on the network's device by
        :func:`crisp.preprocess_torch.prepare_on_device`): a tensor is padded where it is (reflection,
        as ``numpy.pad`` does) and goes to the network without a trip through the host; only a tiled
        image, or one too small to reflect its margin once, is taken to the host first.
        """
        import torch

        if isinstance(image, torch.Tensor):
            if image.ndim != 2:
                raise CrispError(f"expected a 2-D image, got shape {tuple(image.shape)}")
            tensor_out = self._foreground_tensor(image)
            if tensor_out is not None:
                return tensor_out
            image = image.detach().float().cpu().numpy()
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise CrispError(f"expected a 2-D image, got shape {image.shape}")
        tile = self.tile_px(image.shape)
        with torch.inference_mode():
            if tile is not None:
                from crisp.tiling import predict_probabilities

                overlap = min(self.overlap, tile - 1)
                batch = self.batch_size if tile <= self.patch_px else 1
                return predict_probabilities(self._forward, image, tile, overlap, batch)[0]
            height, width = image.shape
            py, px = self.padded_shape(image.shape)
            m = self.margin
            pads = ((m, py - height - m), (m, px - width - m))
            mode = "reflect" if min(height, width) > 1 else "edge"
            padded = np.pad(image, pads, mode=mode) if (py, px) != (height, width) else image
            out = self._forward(torch.from_numpy(np.ascontiguousarray(padded))[None, None])
            return out[0, 0, m:m + height, m:m + width].float().cpu().numpy().astype(np.float32, copy=False)

    def _foreground_tensor(self, image) -> np.ndarray | None:
        """:meth:`foreground` of a 2-D tensor in one forward without leaving its device; None when the
        image is tiled, or a pad is as large as the image (``numpy.pad`` then reflects more than once,
        ``torch.nn.functional.pad`` refuses), and must go the host's way."""
        import torch
        import torch.nn.functional as F

        height, width = (int(n) for n in image.shape)
        if self.tile_px((height, width)) is not None:
            return None
        py, px = self.padded_shape((height, width))
        m = self.margin
        pad_y, pad_x = (m, py - height - m), (m, px - width - m)
        if max(pad_y) >= height or max(pad_x) >= width:
            return None
        with torch.inference_mode():
            batch = image.to(self.device, dtype=torch.float32)[None, None]
            if (py, px) != (height, width):
                # (left, right, top, bottom); "reflect" is numpy's "reflect" (the edge is not repeated)
                batch = F.pad(batch, (pad_x[0], pad_x[1], pad_y[0], pad_y[1]), mode="reflect")
            out = self._forward(batch.contiguous())
            return out[0, 0, m:m + height, m:m + width].float().cpu().numpy().astype(np.float32, copy=False)
