"""Benchmark S1: pixel segmentation of simulated micrographs with the `cpu` training preset.

Full run (long: simulation of 32 4k micrographs + ~20 min of training on 2 CPU cores)::

    python -m benchmarks.s1_segmentation --out /tmp/s1

Reduced check (4 micrographs of 1024 px: 2 train, 1 val, 1 test, 2 epochs)::

    python -m benchmarks.s1_segmentation --out /tmp/s1-small --reduced

Steps: `crisp simulate` with the `paper` preset (bundled reference map, SNR 0.005, seed 1) but
``--count`` micrographs, a fixed split, `crisp train` with the `cpu` preset, `crisp segment` of the
test micrographs, `crisp evaluate`. Prints one table: pixel IoU, recall, precision, F1 on the test
set, training wall time and inference seconds per micrograph. Target (full run): IoU >= 0.85 and
F1 >= 0.92 within 20 minutes of training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from crisp.run import Run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (dataset, run, maps)")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--val", type=int, default=6)
    parser.add_argument("--size", type=int, default=None, help="micrograph width = height (px)")
    parser.add_argument("--snr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the cpu preset's epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--reduced", action="store_true",
                        help="4 micrographs of 1024 px (2 train, 1 val, 1 test), 2 epochs")
    args = parser.parse_args()
    if args.reduced:
        args.count, args.train, args.val, args.size = 4, 2, 1, 1024
        args.epochs = args.epochs or 2

    from crisp.dataset import DatasetFolder, make_split, read_split, write_split
    from crisp.metrics.pixel import evaluate_folder
    from crisp.predict import segment_files
    from crisp.simulate import make_config as sim_config
    from crisp.simulate import simulate_dataset
    from crisp.train import make_config
    from crisp.workflow.stages import train_or_resume

    out = args.out
    data, run, maps = out / "data", out / "run", out / "maps"
    extra = {}
    if args.size is not None:  # keep the paper's particle density (150 per 4096 x 4096)
        per_mic = max(4, round(150 * args.size ** 2 / 4096 ** 2))
        extra = {"width_px": args.size, "height_px": args.size, "particles": (per_mic, per_mic)}
    sim = sim_config("paper", count=args.count, snr=args.snr, seed=args.seed, **extra)
    t0 = time.perf_counter()
    simulate_dataset(data, sim, progress=True)
    sim_s = time.perf_counter() - t0
    folder = DatasetFolder.open(data)
    if not folder.split_file.is_file():
        write_split(folder.split_file, make_split(folder.names(), args.train, args.val, seed=args.seed))
    split = read_split(folder.split_file)

    config = make_config("cpu", epochs=args.epochs, threads=args.threads, seed=args.seed)
    train_or_resume(config, data, run, progress=True)  # skips a finished run, resumes an interrupted one
    summary = Run(run).summary()

    t0 = time.perf_counter()
    segment_files(run, [folder.micrograph(n) for n in split.test], maps, overwrite=True, progress=True)
    infer_s = (time.perf_counter() - t0) / max(1, len(split.test))
    _, pooled = evaluate_folder(maps, data, subset="test")

    rows = [
        ("micrographs (train/val/test)", f"{len(split.train)}/{len(split.val)}/{len(split.test)}"),
        ("micrograph size (px)", f"{sim.width_px} x {sim.height_px}"),
        ("training preset", f"cpu ({config.arch}, {config.encoder}, bin {config.bin}, "
                            f"patch {config.patch_px}, {summary['epochs_run']} epochs)"),
        ("simulation time (s)", f"{sim_s:.1f}"),
        ("training wall time (s)", f"{summary['wall_time_s']:.1f}"),
        ("best epoch / val IoU", f"{summary['best_epoch']} / {summary['best_val_iou']:.4f}"),
        ("inference (s / micrograph)", f"{infer_s:.2f}"),
        ("test pixel IoU", f"{pooled['iou']:.4f}"),
        ("test pixel recall", f"{pooled['recall']:.4f}"),
        ("test pixel precision", f"{pooled['precision']:.4f}"),
        ("test pixel F1", f"{pooled['f1']:.4f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\n| {'quantity':{width}s} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:{width}s} | {value} |")
    (out / "s1_result.json").write_text(json.dumps(dict(rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
