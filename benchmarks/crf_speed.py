"""Speed and memory of the dense CRF layer (crisp.models.crf) against pydensecrf's mean field.

Run: ``python -m benchmarks.crf_speed [--size 512] [--repeats 5] [--scale 4]``

Input: a synthetic two-class ``size x size`` patch (noisy dark disks on a flat background), CNN-like
logits from the same disks, 5 iterations. The kernels are the paper's (theta_alpha 160 px, theta_beta
0.05, theta_gamma 3 px at full resolution, weights 1) divided by the binning factor ``--scale``.
pydensecrf (``pip install pydensecrf2``, optional) gets the same kernels: a Gaussian kernel of std
theta_gamma and a bilateral kernel of std theta_alpha over the same normalised guide with std
theta_beta, Potts compatibility, single-threaded C++ with a permutohedral lattice.

Peak memory is measured for a ``2 * size`` square input in a fresh subprocess: resident set size
sampled every 2 ms (psutil) above the level after imports and input creation, inference and
inference + backward.
Prints a table; exits 0. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from crisp.models.crf import CRFConfig, build_crf, normalise_guide


def synthetic_patch(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [1, 2, S, S], micrograph [1, 1, S, S]) float32 with dark disks of radius size/20."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    particles = np.zeros((size, size), dtype=np.float32)
    radius = size / 20
    for cy, cx in rng.uniform(radius, size - radius, size=(max(4, size // 40), 2)):
        particles[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = 1.0
    micrograph = -particles + rng.normal(0.0, 1.0, size=particles.shape).astype(np.float32)
    score = 3.0 * (particles - 0.5) + rng.normal(0.0, 1.5, size=particles.shape).astype(np.float32)
    logits = np.stack([-score / 2, score / 2])[None]
    return torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(micrograph[None, None])


def time_ours(
    kind: str,
    solver: str,
    logits,
    micrograph,
    scale: float,
    repeats: int,
    threads: int,
    source: str = "logits",
    backward: bool = False,
) -> float:
    """Median seconds of one CRF call (5 iterations), optionally with the backward pass."""
    torch.set_num_threads(threads)
    config = CRFConfig(kind=kind, solver=solver, iterations=5, feature_source=source)
    crf = build_crf(config, num_classes=2, scale=scale, guide_channels=16)
    if kind == "crf":
        guide = micrograph
    elif source == "decoder":
        guide = torch.randn(1, 16, *logits.shape[-2:], generator=torch.Generator().manual_seed(0))
    else:
        guide = logits

    def run():
        if backward:
            x = logits.clone().requires_grad_(True)
            crf(x, guide)[:, 1].sum().backward()
        else:
            with torch.no_grad():
                crf(logits, guide)

    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_pydensecrf(logits, micrograph, scale: float, repeats: int) -> tuple[float, float] | None:
    """Median seconds of pydensecrf's 5 mean-field iterations, and label agreement with ours."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        return None
    cfg = CRFConfig(kind="crf", iterations=5)
    _, c, h, w = logits.shape
    guide = normalise_guide(micrograph.double(), "crf")[0].numpy()  # [1, H, W] in [0, 1]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    feats = np.concatenate(
        [
            (xx / (cfg.theta_alpha / scale))[None],
            (yy / (cfg.theta_alpha / scale))[None],
            (guide / cfg.theta_beta).astype(np.float32),
        ]
    ).reshape(3, -1)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    unary = np.ascontiguousarray(-logits[0].numpy().reshape(c, -1), dtype=np.float32)
    # the same per-pair weights as crisp (its kernels are normalised by their spatial mass)
    w_app, w_smooth = build_crf(cfg, num_classes=2, scale=scale).effective_weights().tolist()
    times = []
    q = None
    for _ in range(repeats + 1):
        start = time.perf_counter()
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(unary)
        plain = dcrf.NO_NORMALIZATION  # the plain Gaussian kernels, as in crisp
        d.addPairwiseGaussian(sxy=cfg.theta_gamma / scale, compat=w_smooth, normalization=plain)
        d.addPairwiseEnergy(feats, compat=w_app, normalization=plain)
        q = np.array(d.inference(5)).reshape(c, h, w)
        times.append(time.perf_counter() - start)
    torch.set_num_threads(2)
    crf = build_crf(cfg, num_classes=2, scale=scale)
    with torch.no_grad():
        ours = crf(logits, micrograph)[0].argmax(0).numpy()
    agreement = float((q.argmax(0) == ours).mean())
    return float(np.median(times[1:])), agreement


_MEMORY_CHILD = """
import json, sys, threading, time, psutil, torch
from benchmarks.crf_speed import synthetic_patch
from crisp.models.crf import CRFConfig, build_crf
size, scale, kind, backward = {size}, {scale}, {kind!r}, {backward}
logits, micrograph = synthetic_patch(size)
crf = build_crf(CRFConfig(kind=kind, solver="mean-field"), num_classes=2, scale=scale)
guide = micrograph if kind == "crf" else logits
small_l, small_g = logits[..., :64, :64].contiguous(), guide[..., :64, :64].contiguous()
crf(small_l, small_g)[:, 1].sum().backward()  # load kernels
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
if backward:
    logits.requires_grad_(True)
    crf(logits, guide)[:, 1].sum().backward()
else:
    with torch.no_grad():
        crf(logits, guide)
done.set()
thread.join()
peak[0] = max(peak[0], proc.memory_info().rss)
print(json.dumps({{"base_mb": base / 2**20, "peak_mb": peak[0] / 2**20}}))
"""


def peak_memory(size: int, scale: float, kind: str, backward: bool) -> dict:
    from benchmarks import REPO

    code = _MEMORY_CHILD.format(size=size, scale=scale, kind=kind, backward=backward)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=4.0, help="binning factor of the patch")
    args = parser.parse_args()
    logits, micrograph = synthetic_patch(args.size)
    print(
        f"CRF, 5 iterations, {args.size} x {args.size} x 2 classes, binning {args.scale:g} "
        f"(theta_alpha {160 / args.scale:g} px, theta_gamma {3 / args.scale:g} px, theta_beta 0.05); "
        f"torch {torch.__version__}, median of {args.repeats}"
    )
    rows = []
    for kind in ("crf", "cd-crf"):
        for solver in ("mean-field", "frank-wolfe"):
            for threads in (1, 2):
                seconds = time_ours(kind, solver, logits, micrograph, args.scale, args.repeats, threads)
                rows.append((f"crisp {kind} {solver}", threads, seconds, ""))
    for name, kind, source, backward in [
        ("crisp cd-crf decoder mean-field", "cd-crf", "decoder", False),
        ("crisp crf mean-field +backward", "crf", "logits", True),
        ("crisp cd-crf decoder mf +backward", "cd-crf", "decoder", True),
    ]:
        seconds = time_ours(
            kind, "mean-field", logits, micrograph, args.scale, args.repeats, 1, source, backward
        )
        rows.append((name, 1, seconds, "16 decoder channels -> 2" if source == "decoder" else ""))
    ref = time_pydensecrf(logits, micrograph, args.scale, args.repeats)
    if ref is None:
        rows.append(("pydensecrf mean-field", 1, float("nan"), "not installed"))
    else:
        rows.append(("pydensecrf mean-field", 1, ref[0], f"label agreement with crisp crf: {ref[1]:.3f}"))
    print(f"{'implementation':34s} {'threads':>7s} {'seconds':>8s}  note")
    for name, threads, seconds, note in rows:
        print(f"{name:34s} {threads:7d} {seconds:8.3f}  {note}")
    big = 2 * args.size
    print(f"\nPeak memory, {big} x {big} x 2 classes (sampled RSS above the level after imports and inputs)")
    print(f"{'case':34s} {'MB':>8s}")
    for kind in ("crf", "cd-crf"):
        for backward in (False, True):
            mem = peak_memory(big, args.scale, kind, backward)
            label = f"crisp {kind} mean-field {'forward+backward' if backward else 'inference'}"
            print(f"{label:34s} {mem['peak_mb'] - mem['base_mb']:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
