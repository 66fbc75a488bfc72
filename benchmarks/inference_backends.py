"""Seconds of one bare network forward by backend: eager PyTorch (default and channels-last memory format),
``torch.compile`` (Inductor, with freezing) and ONNX Runtime, each checked against eager.

The ``--preset``'s network (random weights, seed 0) on a ``--size`` square input of unit Gaussian
noise, ``--threads`` CPU threads, under ``torch.inference_mode``; the median of ``--repeats`` calls
after one warm-up (compilation and export are timed apart). Reported per backend: seconds, the ratio
to eager, and the maximum absolute difference of the foreground probability
(``sigmoid(l1 - l0)``) from eager's. ONNX Runtime needs ``onnxruntime`` and ``onnx`` (not
dependencies of crisp-em); a backend that fails is reported with its error.

Usage::

    python -m benchmarks.inference_backends --preset cpu --size 1024 --threads 2

Prints a Markdown table. Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="eager,channels_last,compile,onnx")
    args = parser.parse_args(argv)

    import os

    import torch

    from crisp.train import build_network, make_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_network(make_config(args.preset)).eval()
    x = torch.randn(1, 1, args.size, args.size)

    def foreground(out):
        refined = out["refined"] if isinstance(out, dict) else out
        refined = torch.as_tensor(refined).float()
        return torch.sigmoid(refined[:, 1] - refined[:, 0])

    def timed(fn):
        with torch.inference_mode():
            first_start = time.perf_counter()
            out = fn()
            first = time.perf_counter() - first_start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return statistics.median(times), first, foreground(out)

    rows, reference = [], None
    for backend in args.backends.split(","):
        try:
            if backend == "eager":
                seconds, first, prob = timed(lambda: net(x))
            elif backend == "channels_last":
                cl = net.to(memory_format=torch.channels_last)
                xc = x.contiguous(memory_format=torch.channels_last)
                seconds, first, prob = timed(lambda cl=cl, xc=xc: cl(xc))
                net.to(memory_format=torch.contiguous_format)
            elif backend == "compile":
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
                cl = net.to(memory_format=torch.channels_last)
                xc = x.contiguous(memory_format=torch.channels_last)
                compiled = torch.compile(cl)
                seconds, first, prob = timed(lambda compiled=compiled, xc=xc: compiled(xc))
                net.to(memory_format=torch.contiguous_format)
            elif backend == "onnx":
                import onnxruntime as ort

                class Logits(torch.nn.Module):
                    def __init__(self, inner):
                        super().__init__()
                        self.inner = inner

                    def forward(self, inp):
                        return self.inner(inp)["refined"]

                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "net.onnx"
                    start = time.perf_counter()
                    torch.onnx.export(Logits(net).eval(), (x,), str(path), input_names=["x"],
                                      output_names=["y"], dynamo=False, opset_version=17)
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = args.threads
                    options.inter_op_num_threads = 1
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    export = time.perf_counter() - start
                    feed = {"x": x.numpy()}
                    seconds, first, prob = timed(lambda s=session, f=feed: s.run(None, f)[0])
                    first += export
            else:
                raise ValueError(f"unknown backend {backend}")
        except Exception as err:  # noqa: BLE001 - reported in the table
            rows.append((backend, None, None, None, f"{type(err).__name__}: {str(err)[:120]}"))
            continue
        if reference is None:
            reference = prob
        rows.append((backend, seconds, first, float((prob - reference).abs().max()), ""))
    eager = rows[0][1] if rows and rows[0][1] else None
    print(f"{args.preset} network, {args.size}² input, {args.threads} threads, median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| backend | s / forward | vs eager | first call s (compile / export) | max abs diff vs eager "
          "| note |")
    print("|---|---|---|---|---|---|")
    for backend, seconds, first, diff, note in rows:
        if seconds is None:
            print(f"| {backend} | | | | | {note} |")
            continue
        ratio = f"{seconds / eager:.2f}" if eager else ""
        print(f"| {backend} | {seconds:.3f} | {ratio} | {first:.1f} | {diff:.2e} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
