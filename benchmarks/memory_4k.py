"""Peak memory and time of ``segment`` + ``pick`` for one 4096 x 4096 micrograph (issue 7's speed suite).

Runs in a fresh process so that the peak resident set size (``ru_maxrss``) belongs to this work
alone: load a trained run, segment one micrograph (tiled inference, float16 map at the original
size), pick it with the run's ``picker.yaml`` (or grid-nms defaults). Target: 4 GB or less.

Usage::

    python -m benchmarks.memory_4k RUN_DIR MICROGRAPH.mrc [--work /tmp/mem4k]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="training run directory")
    parser.add_argument("micrograph", type=Path, help="a 4096 x 4096 micrograph")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-mem4k"))
    parser.add_argument("--diameter", type=float, default=106.0,
                        help="particle diameter (px) when the run has no picker.yaml")
    args = parser.parse_args()

    from crisp.io.micrographs import read_micrograph_shape
    from crisp.picking.files import pick_files
    from crisp.picking.tune import PickerConfig, load_picker
    from crisp.predict import segment_files

    shutil.rmtree(args.work, ignore_errors=True)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    segment_files(args.run, [args.micrograph], args.work / "maps", progress=False)
    seg_s = time.perf_counter() - t0
    seg_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    picker_file = args.run / "picker.yaml"
    if picker_file.is_file():
        picker = load_picker(picker_file)
    else:
        picker = PickerConfig(finder="grid-nms", diameter_px=args.diameter)
    t0 = time.perf_counter()
    result = pick_files(args.work / "maps", args.work / "picks", picker)
    pick_s = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shape = read_micrograph_shape(args.micrograph)
    rows = [
        ("micrograph", f"{args.micrograph.name} ({shape[1]} x {shape[0]})"),
        ("peak RSS after imports (GB)", f"{base_kb / 2**20:.2f}"),
        ("peak RSS through segment (GB)", f"{seg_kb / 2**20:.2f}"),
        ("peak RSS through segment + pick (GB)", f"{peak_kb / 2**20:.2f}"),
        ("segment (s)", f"{seg_s:.2f}"),
        ("pick (s)", f"{pick_s:.2f}"),
        ("picks", str(sum(result.per_micrograph.values()))),
    ]
    print("| quantity | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
