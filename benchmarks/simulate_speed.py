"""Speed and peak memory of ``crisp simulate`` per micrograph.

Targets (brief of issue 2): 4096 x 4096 with 150 particles <= 15 s and <= 3 GB peak memory;
1024 x 1024 <= 2 s. Each case runs in a fresh Python process so that its peak RSS is its own.

Usage::

    python -m benchmarks.simulate_speed            # all cases, table on stdout
    python -m benchmarks.simulate_speed --repeats 1 --cases small,1k

Columns: ``load`` = ASPIRE import + map resampling + reference projection (once per run);
``simulate`` = one micrograph in memory (projections, CTF, noise, labels), mean over repeats;
``write`` = writing its five files; ``peak RSS`` = the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks import REPO

CASES = {
    # name: (preset, overrides)
    "small": ("small", {"count": 1}),
    "1k": ("paper", {"width_px": 1024, "height_px": 1024, "particles": (10, 10), "count": 1}),
    "paper-4k": ("paper", {"count": 1}),
}


def run_one(name: str, repeats: int) -> dict:
    from pathlib import Path

    from crisp.dataset import DatasetFolder
    from crisp.simulate import load_reference, make_config, simulate_micrograph, write_simulated

    preset, overrides = CASES[name]
    config = make_config(preset, **overrides)
    t0 = time.perf_counter()
    reference = load_reference(config)
    load = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        sim = simulate_micrograph(reference, config, i)
        times.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_simulated(DatasetFolder(Path(tmp)), sim, config.pixel_size, save_clean=False)
        write = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    return {"case": name, "size": f"{config.width_px}x{config.height_px}", "pixel": config.pixel_size,
            "particles": len(sim.truth), "box": int(reference.volume.shape[0]), "load_s": load,
            "simulate_s": sum(times) / len(times), "write_s": write, "peak_gb": peak_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.repeats)))
        return
    rows = []
    for name in args.cases.split(","):
        out = subprocess.run([sys.executable, "-m", "benchmarks.simulate_speed", "--one", name, "--repeats",
                              str(args.repeats)], check=True, capture_output=True, text=True, cwd=REPO).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    header = (f"{'case':<10}{'size':>11}{'Å/px':>6}{'particles':>10}{'box':>5}{'load s':>8}"
              f"{'simulate s':>11}{'write s':>8}{'peak RSS GB':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:<10}{r['size']:>11}{r['pixel']:>6.2f}{r['particles']:>10}{r['box']:>5}"
              f"{r['load_s']:>8.2f}{r['simulate_s']:>11.2f}{r['write_s']:>8.2f}{r['peak_gb']:>12.2f}")


if __name__ == "__main__":
    main()
