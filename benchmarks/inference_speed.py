"""Seconds per micrograph of ``crisp segment`` (crisp.predict.segment_files) by training preset and binning.

Each case (a training preset and a binning factor) runs in a fresh Python process: the network of
``crisp.train.build_network(make_config(preset, bin=BIN))`` with random weights (seed 0; no
training, the time does not depend on the weights) is saved as a run directory (``config.yaml`` +
``checkpoints/best.ckpt``, what ``crisp.predict.load_run`` reads), then
``segment_files(run, [micrograph], out, overwrite=True)`` is called once as a warm-up and
``--repeats`` times more: read, bin (Fourier cropping), normalise (GMM), prediction (since issue 16
one whole-image forward when it fits the memory budget, ONNX Runtime when installed; the
``patches`` column counts the old 256² tiling's patches), bilinear upsampling to the original
grid, float16 MRC written. For segment + pick in one pass see ``benchmarks.segment_pick_speed``.
This is the real code path; its stages are timed by wrapping the functions it calls
(no change to them). CPU threads: ``--threads`` (default: the cores the process may use). Peak
RSS: the process's ``ru_maxrss``.

The micrograph is synthetic (Gaussian noise on a smooth background, 1.77 Å/px) of ``--size`` px
square (default 4096), or ``--micrograph FILE``. Columns: ``load`` = building the network and
loading the checkpoint (once per ``crisp segment`` call); ``s / micrograph`` = median over the
repeats of ``segment_files`` minus ``load``; then the median of each stage over the repeats (with
two repeats medians are means, so the stages add up to the total); ``first`` = the warm-up call,
load included. On a machine shared with other work, ``--threads 1`` gives steadier figures than
torch's default (oversubscribed OpenMP threads wait for each other).

Usage::

    python -m benchmarks.inference_speed                          # cpu: bin 4, 2, 1; paper: bin 4, 2
    python -m benchmarks.inference_speed --cases paper:1 --repeats 1
    python -m benchmarks.inference_speed --size 1024 --cases cpu:4,paper:4 --repeats 1   # quick check

Prints a Markdown table, exits 0; ``--json FILE`` writes the rows. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO

DEFAULT_CASES = "cpu:4,cpu:2,cpu:1,paper:4,paper:2"
STAGES = ("read", "bin+normalise", "predict", "upsample", "write")


def make_random_run(preset: str, binning: int, run_dir: Path, seed: int = 0) -> Path:
    """A run directory holding a network of ``preset`` at ``binning`` with random weights (seed ``seed``)."""
    import torch

    from crisp.run import Run
    from crisp.train import build_network, make_config

    config = make_config(preset, bin=binning, seed=seed)
    torch.manual_seed(seed)
    Run(run_dir).save_network(build_network(config), config)
    return run_dir


def synthetic_micrograph(path: Path, size: int, seed: int = 0) -> Path:
    """Write a float32 ``size`` x ``size`` MRC (1.77 Å/px): unit Gaussian noise on a smooth background."""
    import numpy as np

    from crisp.io.micrographs import write_mrc

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    image = rng.standard_normal((size, size), dtype=np.float32) + 0.3 * np.sin(3 * xx + 2 * yy)
    write_mrc(path, image.astype(np.float32), pixel_size=1.77)
    return path


class _StageTimer:
    """Wrap the functions ``segment_files`` calls so that each call's seconds add up per stage."""

    def __init__(self):
        import crisp.io.micrographs as mics
        import crisp.patches as patches
        import crisp.predict as predict

        self.seconds: dict[str, float] = {}
        self._wrap(mics, "read_micrograph", "read")
        self._wrap(mics, "write_mrc", "write")
        self._wrap(patches, "prepare_image", "bin+normalise")
        from crisp.inference.predictor import Predictor

        self._wrap(Predictor, "foreground", "predict")  # whole-image forward or tiles (issue 16)
        self._wrap(predict, "upsample_to", "upsample")
        self._wrap(predict, "load_run", "load")

    def _wrap(self, module, name: str, stage: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        setattr(module, name, timed)

    def reset(self) -> None:
        self.seconds = {}


def _patch_count(binned: int, patch: int, overlap: int) -> int:
    from crisp.predict import _starts

    margin = overlap // 2
    padded = binned + 2 * margin + max(0, patch - (binned + 2 * margin))
    return len(_starts(padded, patch, patch - overlap)) ** 2


def run_case(preset: str, binning: int, micrograph: Path, work: Path, repeats: int,
             threads: int | None = None) -> dict:
    """Time ``segment_files`` for one case in this process; return one row."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from crisp.io.micrographs import read_micrograph_shape
    from crisp.models.zoo import parameter_count
    from crisp.predict import load_run, segment_files

    base_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    run = make_random_run(preset, binning, work / f"run-{preset}-bin{binning}")
    config, network = load_run(run)
    params = parameter_count(network)
    del network
    timer = _StageTimer()
    out = work / f"maps-{preset}-bin{binning}"
    totals, stages = [], []
    for _ in range(repeats + 1):
        timer.reset()
        start = time.perf_counter()
        segment_files(run, [micrograph], out, overwrite=True, progress=False, threads=threads)
        totals.append(time.perf_counter() - start)
        stages.append(dict(timer.seconds))
    per_mic = [t - s.get("load", 0.0) for t, s in zip(totals[1:], stages[1:], strict=True)]
    height, width = read_micrograph_shape(micrograph)
    binned = round(width / binning)
    return {
        "preset": preset, "network": f"{config.arch} {config.encoder}", "parameters": params,
        "bin": binning, "micrograph": f"{width} x {height}", "binned_px": binned,
        "patch_px": config.patch_px,
        "patches": _patch_count(binned, config.patch_px, config.val_overlap_px),
        "threads": torch.get_num_threads(), "repeats": repeats,
        "load_s": statistics.median(s.get("load", 0.0) for s in stages[1:]),
        "s_per_micrograph": statistics.median(per_mic), "all_s_per_micrograph": per_mic,
        **{f"{k}_s": statistics.median(s.get(k, 0.0) for s in stages[1:]) for k in STAGES},
        "first_call_s": totals[0],
        "rss_after_import_gb": base_gb,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def parse_cases(text: str) -> list[tuple[str, int]]:
    cases = []
    for item in text.split(","):
        preset, _, binning = item.strip().partition(":")
        cases.append((preset, int(binning or 1)))
    return cases


def markdown(rows: list[dict]) -> str:
    head = ("preset", "network", "bin", "binned px", "patches", "s / micrograph", "load s", "read",
            "bin+norm", "predict", "upsample", "write", "first call s", "peak RSS GB")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | {r['bin']} | | | failed: {r['error']} |" + " |" * 8)
            continue
        values = (r["preset"], f"{r['network']} ({r['parameters'] / 1e6:.1f} M)", r["bin"], r["binned_px"],
                  r["patches"], f"{r['s_per_micrograph']:.2f}", f"{r['load_s']:.2f}",
                  *(f"{r[f'{k}_s']:.2f}" for k in STAGES), f"{r['first_call_s']:.2f}",
                  f"{r['peak_rss_gb']:.2f}")
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated PRESET:BIN (default: %(default)s)")
    parser.add_argument("--size", type=int, default=4096, help="synthetic micrograph width = height (px)")
    parser.add_argument("--micrograph", type=Path, default=None, help="use this micrograph instead")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # child process: one case
        preset, binning = parse_cases(args.one)[0]
        print(json.dumps(run_case(preset, binning, args.micrograph, args.work, args.repeats, args.threads)))
        return 0

    with tempfile.TemporaryDirectory(prefix="crisp-inference-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        micrograph = args.micrograph
        if micrograph is None:
            micrograph = synthetic_micrograph(work / f"synthetic_{args.size}.mrc", args.size)
        rows = []
        for preset, binning in parse_cases(args.cases):
            start = time.perf_counter()
            command = [sys.executable, "-m", "benchmarks.inference_speed", "--one", f"{preset}:{binning}",
                       "--micrograph", str(micrograph), "--work", str(work), "--repeats", str(args.repeats)]
            command += ["--threads", str(args.threads)] if args.threads else []
            proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                error = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(proc.stderr, file=sys.stderr)
                rows.append({"preset": preset, "bin": binning, "error": error})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{preset} bin {binning}: done in {time.perf_counter() - start:.0f} s "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    load = os.getloadavg()
    source = str(args.micrograph) if args.micrograph else f"synthetic {args.size} x {args.size} micrograph"
    print(f"\ncrisp segment (segment_files) on one {source}; random-weight networks; median of "
          f"{args.repeats} after one warm-up; torch threads {rows[0].get('threads', '?')}; "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end\n")
    print(markdown(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"micrograph": source, "repeats": args.repeats,
                                         "loadavg": load, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
