"""Seconds per micrograph from the micrograph to its coordinates: ``crisp segment-and-pick`` against the
old path (``crisp segment`` full-size maps + ``crisp pick``), in one run.

Each case runs in a fresh Python process with a set torch thread count:

- ``new``: :func:`crisp.inference.segment_pick.segment_and_pick_files` (read, bin, normalise, one
  forward at the network's grid when it fits the memory budget, pick there, write the STAR files),
  without prefetching (so each item's seconds run from reading to writing), with the default
  backend (ONNX Runtime when installed); ``new-eager`` the same in eager PyTorch;
- ``old``: ``segment_files`` then ``pick_files`` of the code in ``--old-src`` (default: this
  repository's code before issue 16, unpacked there with ``git archive d5543eb src``): 256² tiles with
  float64 blending, the map upsampled to the micrograph's size and written, then read back and
  picked; with ``--old-src ''`` the current code's ``segment_files`` with ``--max-tile-px`` of the
  training patch (the old tiling on the new network path) then ``pick_files``;
- ``floor``: one bare network forward of a ``--floor-px`` square image (no I/O), eager in the default
  memory format and channels-last, and with ``--backends compile`` ``torch.compile`` (Inductor).

The seconds per micrograph are the batch engine's per-item seconds (read to outputs renamed), for
``old`` the sum of the ``segment`` and ``pick`` items of a micrograph; the median over the
micrographs after the first (whose item loads the network). Peak RSS is the process's
``ru_maxrss``. Networks have random weights (seed 0; the time does not depend on the weights) and the
presets' default binning (``cpu``: bin 4, ``paper``: bin 1). The picker is ``grid-nms`` with a
150 px diameter (about 20 nm at 1.34 Å/px).

Micrographs: ``--count`` synthetic ``--size`` squares (Gaussian noise on a smooth background,
1.34 Å/px), or ``--micrograph FILE`` linked ``--count`` times under different names (e.g. the raw
4096² EPU micrograph ``tests/test_data/epu2.9_example.mrc`` of mrcfile's source archive).

``--throughput N``: micrographs per minute of ``segment-and-pick`` over N micrographs (wall time of
the whole call, network loading included), without and with prefetching (the next micrograph read
and binned in a background thread while the network works). ``--device cuda`` runs the networks on
the GPU (then it also prints micrographs per second).

Usage::

    python -m benchmarks.segment_pick_speed --presets cpu --threads 1,2 --count 6
    python -m benchmarks.segment_pick_speed --presets cpu --threads 2 --throughput 100 --size 1024
    python -m benchmarks.segment_pick_speed --device cuda --presets cpu,paper --threads 2

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

PIXEL_SIZE = 1.34
DIAMETER_PX = 150.0


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_run(preset: str, run_dir: Path, seed: int = 0) -> Path:
    """A run folder with a random-weight network of ``preset`` (default binning) and a picker.yaml."""
    import torch

    from crisp.config import save_yaml
    from crisp.picking.tune import PickerConfig
    from crisp.run import Run
    from crisp.train import build_network, make_config

    config = make_config(preset, seed=seed)
    torch.manual_seed(seed)
    run = Run(run_dir)
    run.save_network(build_network(config), config)
    picker = PickerConfig(diameter_px=DIAMETER_PX, pixel_size=None, border_fraction=0.5)
    save_yaml(run.picker_path, picker)
    return run_dir


def make_micrographs(folder: Path, count: int, size: int, source: Path | None) -> Path:
    """``count`` micrographs in ``folder``: links to ``source`` or synthetic ``size`` squares."""
    import numpy as np

    from crisp.io.micrographs import write_mrc

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"mic{i:03d}.mrc"
        if path.exists():
            continue
        if source is not None:
            path.symlink_to(source.resolve())
            continue
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
        image = rng.standard_normal((size, size), dtype=np.float32) + 0.3 * np.sin(3 * xx + 2 * yy + i)
        write_mrc(path, image, pixel_size=PIXEL_SIZE)
    return folder


def _item_seconds(out: Path) -> dict[str, float]:
    from crisp.batch import STATE_DIR

    seconds = {}
    for path in sorted((out / STATE_DIR / "items").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "done":
            seconds[record["name"]] = float(record["seconds"])
    return seconds


def _summary(per_item: dict[str, float], first: str) -> dict:
    steady = [s for name, s in per_item.items() if name != first]
    return {"s_per_micrograph": statistics.median(steady), "all_s": per_item, "first_s": per_item.get(first)}


def case_new(run: Path, mics: Path, work: Path, threads: int, prefetch: bool, backend: str = "auto") -> dict:
    from crisp.batch import read_records
    from crisp.inference.segment_pick import segment_and_pick_files

    out = work / f"new-{run.name}-t{threads}-{mics.name}-{'prefetch' if prefetch else 'serial'}-{backend}"
    start = time.perf_counter()
    segment_and_pick_files(run, mics, out, threads=threads, overwrite=True, progress=False, prefetch=prefetch,
                           backend=backend)
    wall = time.perf_counter() - start
    records = read_records(out)
    first = sorted(records)[0]
    stages = {}
    for name, record in records.items():
        if name != first:
            for stage, s in record["result"]["seconds"].items():
                if stage != "prefetched":
                    stages.setdefault(stage, []).append(s)
    tiled = {record["result"]["tiled"] for record in records.values()}
    backends = {record["result"]["backend"] for record in records.values()}
    return {**_summary(_item_seconds(out), first), "wall_s": wall, "n": len(records), "tiled": sorted(tiled),
            "backend": sorted(backends), "stages": {k: statistics.median(v) for k, v in stages.items()}}


def case_old(run: Path, mics: Path, work: Path, threads: int, current: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    from crisp.picking.files import pick_files
    from crisp.picking.tune import load_picker
    from crisp.predict import segment_files
    from crisp.run import Run

    maps, picks = work / f"old-maps-{run.name}-t{threads}", work / f"old-picks-{run.name}-t{threads}"
    start = time.perf_counter()
    if current:
        segment_files(run, mics, maps, overwrite=True, progress=False, threads=threads,
                      max_tile_px=Run(run).config.patch_px)
    else:
        segment_files(run, mics, maps, overwrite=True, progress=False)
    pick_files(maps, picks, load_picker(Run(run).picker_path), micrographs=mics, overwrite=True,
               progress=False)
    wall = time.perf_counter() - start
    seg, pick = _item_seconds(maps), _item_seconds(picks)
    per_item = {name: seg[name] + pick.get(name, 0.0) for name in seg}
    first = sorted(per_item)[0]
    return {**_summary(per_item, first), "wall_s": wall, "n": len(per_item),
            "segment_s": statistics.median(v for k, v in seg.items() if k != first),
            "pick_s": statistics.median(v for k, v in pick.items() if k != first)}


def case_floor(preset: str, threads: int, side: int, backends: list[str], device: str) -> dict:
    import torch

    from crisp.train import build_network, make_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(make_config(preset)).eval().to(device)
    x = torch.randn(1, 1, side, side, device=device)

    def timed(fn, inp, repeats=3):
        times = []
        with torch.inference_mode():
            fn(inp)  # warm-up
            for _ in range(repeats):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn(inp)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    row = {"eager_s": timed(net, x)}
    with torch.inference_mode():
        reference = net(x)["refined"]
    cl = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    row["channels_last_s"] = timed(cl, xc)
    if "compile" in backends:
        start = time.perf_counter()
        compiled = torch.compile(cl)
        with torch.inference_mode():
            out = compiled(xc)["refined"]
        row["compile_first_s"] = time.perf_counter() - start
        row["compile_s"] = timed(compiled, xc)
        row["compile_max_abs_diff"] = float((out - reference).abs().max())
    return row


def run_child(args) -> dict:
    kind, preset, threads = args.one.split(":")
    threads = int(threads)
    if kind == "floor":
        row = case_floor(preset, threads, args.floor_px, args.backends.split(","), args.device)
    elif kind in ("new", "new-prefetch", "new-eager"):
        row = case_new(args.work / f"run-{preset}", args.mics, args.work, threads,
                       prefetch=kind == "new-prefetch", backend="eager" if kind == "new-eager" else "auto")
    else:
        row = case_old(args.work / f"run-{preset}", args.mics, args.work, threads,
                       current=kind == "old-current")
    import torch

    return {"case": kind, "preset": preset, "threads": threads, "torch_threads": torch.get_num_threads(),
            "peak_rss_gb": _rss_gb(), **row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="cpu", help="comma-separated presets (default: %(default)s)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (%(default)s)")
    parser.add_argument("--cases", default="floor,old,new-eager,new",
                        help="floor, old, old-current, new-eager, new (auto backend)")
    parser.add_argument("--count", type=int, default=6, help="micrographs (the first is not timed)")
    parser.add_argument("--size", type=int, default=4096, help="synthetic micrograph side (px)")
    parser.add_argument("--micrograph", type=Path, default=None, help="link this micrograph --count times")
    parser.add_argument("--old-src", default="/tmp/crisp-old/src",
                        help="src folder of the old code (git archive d5543eb src); '' to skip")
    parser.add_argument("--floor-px", type=int, default=1024, help="side of the bare forward's input")
    parser.add_argument("--backends", default="", help="floor extras: compile")
    parser.add_argument("--throughput", type=int, default=0, help="also: micrographs per minute over N")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--mics", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_child(args), default=str))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="crisp-segpick-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        mics = make_micrographs(work / "mics", args.count, args.size, args.micrograph)
        presets = args.presets.split(",")
        for preset in presets:
            make_run(preset, work / f"run-{preset}")
        jobs = [(kind, preset, int(t)) for preset in presets for t in args.threads.split(",")
                for kind in args.cases.split(",")]
        if args.throughput:
            tp = make_micrographs(work / "mics-throughput", args.throughput, args.size, args.micrograph)
            jobs += [(kind, preset, int(t)) for preset in presets for t in args.threads.split(",")
                     for kind in ("throughput", "throughput-prefetch")]
        for kind, preset, threads in jobs:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            if args.device != "cuda":  # hide GPUs from CPU timings; leave the GPU visible otherwise
                env["CUDA_VISIBLE_DEVICES"] = ""
            one, folder = f"{kind}:{preset}:{threads}", mics
            if kind.startswith("throughput"):
                one = f"{'new-prefetch' if kind.endswith('prefetch') else 'new'}:{preset}:{threads}"
                folder = tp
            if kind == "old":
                if not args.old_src:
                    continue
                env["PYTHONPATH"] = args.old_src
            command = [sys.executable, "-m", "benchmarks.segment_pick_speed", "--one", one,
                       "--mics", str(folder), "--work", str(work), "--floor-px", str(args.floor_px),
                       "--backends", args.backends,
                       "--device", args.device]
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                row = {"case": kind, "preset": preset, "threads": threads,
                       "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["case"] = kind
                if kind.startswith("throughput"):
                    row["micrographs_per_minute"] = 60.0 * row["n"] / row["wall_s"]
            row["load_average"] = os.getloadavg()[0]
            rows.append(row)
            print(f"{kind} {preset} {threads} threads: {time.perf_counter() - start:.0f} s, load average "
                  f"{os.getloadavg()[0]:.1f}: " + json.dumps({k: v for k, v in row.items() if k != "all_s"},
                                                                default=str), flush=True)
    print()
    print(markdown(rows, args))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str) + "\n")
    return 0


def markdown(rows: list[dict], args) -> str:
    lines = [f"{args.count} x {args.micrograph or f'synthetic {args.size}²'}; device {args.device}",
             "", "| case | preset | threads | s / micrograph (median) | floor eager / channels-last s | "
             "micrographs / min | peak RSS GB | load avg |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['preset']} | {r['threads']} | failed: {r['error']} | | | | |")
            continue
        per = f"{r['s_per_micrograph']:.2f}" if "s_per_micrograph" in r else ""
        floor = f"{r['eager_s']:.2f} / {r['channels_last_s']:.2f}" if "eager_s" in r else ""
        if "compile_s" in r:
            floor += f" / compile {r['compile_s']:.2f}"
        tp = f"{r['micrographs_per_minute']:.1f}" if "micrographs_per_minute" in r else ""
        lines.append(f"| {r['case']} | {r['preset']} | {r['threads']} | {per} | {floor} | {tp} | "
                     f"{r['peak_rss_gb']:.2f} | {r['load_average']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
