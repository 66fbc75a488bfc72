"""Throughput, scheduler overhead and worker memory of batches on Dask (``--workers``, ``--scheduler``).

Three measurements, all through :func:`crisp.batch.run_batch` as the verbs call it:

1. ``crisp segment`` (:func:`crisp.predict.segment_files`, one torch thread per process) of ``--mics``
   synthetic ``--size``² micrographs with a tiny random-weight network (U-Net ResNet-18 depth 3,
   bin 2, 64 px patches, saved as a run; no training): micrographs per minute in this process, with
   ``workers=1`` and ``workers=2`` (a LocalCluster started by the batch: its start-up and every
   worker's network load counted), and on an already running LocalCluster of 1 and 2 workers
   (``scheduler=``; torch imported on every worker and one warm-up batch run first: the steady state
   of a long run).
2. Scheduler overhead: ``--items`` trivial items (each writes one tiny file) in this process and on a
   running LocalCluster of 2 workers; overhead per item = (Dask time - in-process time) / items.
3. Peak memory per worker process (``ru_maxrss``, read on the workers with ``client.run``) and its
   resident memory at the end (psutil), after the segment run on the running cluster.

Usage::

    python -m benchmarks.distributed                    # 12 micrographs of 512², 1,000 items
    python -m benchmarks.distributed --mics 4 --items 200 --json /tmp/dist.json   # quick check

Prints a Markdown table; ``--json FILE`` writes the figures. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def tiny_run(path: Path) -> Path:
    """A run folder with a tiny random-weight U-Net (seed 0)."""
    import torch

    from crisp.run import Run
    from crisp.train import build_network, make_config

    config = make_config("cpu", arch="unet", encoder="resnet18", encoder_depth=3, bin=2, patch_px=64,
                         val_overlap_px=16, normalize="zscore", threads=1)
    torch.manual_seed(0)
    Run(path).save_network(build_network(config), config)
    return path


def micrographs(folder: Path, n: int, size: int) -> Path:
    """``n`` float32 MRC micrographs of ``size``² px (2 Å/px): Gaussian blobs on noise."""
    import numpy as np

    from crisp.io.micrographs import write_mrc

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        for cy, cx in rng.uniform(12, size - 12, (size // 16, 2)):
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0).astype(np.float32)
        write_mrc(folder / f"mic{i:04d}.mrc", image, pixel_size=2.0)
    return folder


def write_one(item, staging) -> dict:
    """The trivial item: one 2-byte file."""
    staging.path(item.outputs[0]).write_text("x\n")
    return {}


def worker_memory() -> dict:
    """Peak and current resident memory of this process, in MB."""
    import psutil

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    rss = psutil.Process().memory_info().rss
    return {"peak_mb": round(peak_kb / 1024, 1), "rss_mb": round(rss / 2**20, 1)}


def import_inference() -> None:
    """Import torch and the inference code in a worker (so the timed runs do not include it)."""
    import torch  # noqa: F401

    import crisp.predict  # noqa: F401


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mics", type=int, default=12, help="micrographs segmented per case (12)")
    parser.add_argument("--size", type=int, default=512, help="micrograph side in px (512)")
    parser.add_argument("--items", type=int, default=1000, help="trivial items of the overhead test (1000)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from crisp.batch import Item, run_batch
    from crisp.distributed import execution
    from crisp.predict import segment_files

    torch.set_num_threads(1)
    figures: dict = {"mics": args.mics, "size": args.size, "items": args.items, "cpus": os.cpu_count(),
                     "load_average": os.getloadavg()}
    items = [Item(f"i{k:05d}", outputs=(f"i{k:05d}.txt",)) for k in range(args.items)]
    with tempfile.TemporaryDirectory(prefix="crisp-dist-") as tmp:
        root = Path(tmp)
        run, mics = tiny_run(root / "run"), micrographs(root / "mics", args.mics, args.size)

        def segment(out: str, **options) -> float:
            with execution(**options):  # as the CLI's --workers / --scheduler
                return _timed(lambda: segment_files(run, mics, root / out, progress=False, threads=1))

        def trivial(out: str, **options) -> float:
            return _timed(lambda: run_batch("trivial", items, write_one, root / out, {}, progress=False,
                                            **options))

        rate = {"in-process": segment("serial"),
                "workers=1 (cluster started)": segment("w1", workers=1),
                "workers=2 (cluster started)": segment("w2", workers=2)}
        memory, seconds = {}, {"in-process": trivial("ts")}
        for n in (1, 2):
            with (LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0") as cluster, Client(cluster) as client):
                address = cluster.scheduler_address
                client.run(import_inference)
                segment(f"warm{n}", scheduler=address)  # each worker loads the network (once)
                rate[f"{n} running worker(s)"] = segment(f"s{n}", scheduler=address)
                memory[n] = list(client.run(worker_memory).values())
                if n == 2:
                    seconds["2 running workers"] = trivial("td", scheduler=address)
        seconds["workers=2 (cluster started)"] = trivial("tw", workers=2)
    figures["segment_seconds"] = {k: round(v, 2) for k, v in rate.items()}
    figures["micrographs_per_minute"] = {k: round(60 * args.mics / v, 1) for k, v in rate.items()}
    figures["trivial_items_seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    overhead = seconds["2 running workers"] - seconds["in-process"]
    figures["overhead_ms_per_item"] = round(1000 * overhead / args.items, 2)
    figures["worker_memory_mb"] = memory
    figures["parent_peak_mb"] = worker_memory()["peak_mb"]

    print(f"segment of {args.mics} micrographs of {args.size}² (tiny network, 1 thread per process; "
          f"{figures['cpus']} CPUs, load average {figures['load_average'][0]:.1f})\n")
    print("| case | seconds | micrographs / min |\n|---|---|---|")
    for case, seconds in figures["segment_seconds"].items():
        print(f"| {case} | {seconds} | {figures['micrographs_per_minute'][case]} |")
    print(f"\n{args.items} trivial items: " + ", ".join(f"{k} {v} s" for k, v in
                                                      figures["trivial_items_seconds"].items())
          + f"; scheduler overhead {figures['overhead_ms_per_item']} ms per item")
    print("worker memory (MB, peak / resident at the end): " + "; ".join(
        f"{n} worker(s): " + ", ".join(f"{m['peak_mb']} / {m['rss_mb']}" for m in mems)
        for n, mems in memory.items()) + f"; this process's peak {figures['parent_peak_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":  # the guard LocalCluster's spawned workers need
    main()
