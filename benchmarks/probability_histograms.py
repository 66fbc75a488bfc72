"""Probability histograms of evaluated runs (the paper's Appendix 7): does a CRF push pixels to 0 and 1?

For each run directory (evaluated by ``crisp sweep`` / ``crisp evaluate-run``: ``RUN/evaluation/
SUBSET.json`` names its probability maps), the foreground probabilities of every pixel of the
subset's maps are binned into 50 equal bins on [0, 1]. Prints one table (run, pixels, fraction of
pixels with 0.1 < p < 0.9, fraction with p >= 0.5) and writes a PNG with one curve per run
(fraction of pixels per bin, log scale) and a JSON of the counts.

Usage::

    python -m benchmarks.probability_histograms RUN [RUN ...] --out hist.png [--subset test] [--labels a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BINS = 50


def run_histogram(run: Path, subset: str) -> np.ndarray:
    """Counts of the run's foreground probabilities on ``subset`` in ``BINS`` bins on [0, 1]."""
    from crisp.io.micrographs import read_micrograph
    from crisp.report import probability_counts
    from crisp.workflow.evaluate_run import read_evaluation

    record = read_evaluation(run, subset)
    if record is None:
        raise SystemExit(f"{run}: no evaluation/{subset}.json (evaluate the run first)")
    folder = run / record["probabilities"]
    counts = np.zeros(BINS)
    for path in sorted(folder.glob("*.mrc")):  # one map in memory at a time
        counts += probability_counts(read_micrograph(path).data, BINS)
    if not counts.sum():
        raise SystemExit(f"{folder}: no probability maps")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (and the same name .json)")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--labels", default=None, help="comma-separated curve labels (default: folder names)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [f"{r.parent.name}/{r.name}" for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error("--labels needs one label per run")
    edges = np.linspace(0.0, 1.0, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    table, record = [], {"bin_edges": edges.tolist(), "runs": {}}
    for run, label in zip(args.runs, labels, strict=True):
        counts = run_histogram(run, args.subset)
        fraction = counts / counts.sum()
        middle = fraction[(centres > 0.1) & (centres < 0.9)].sum()
        table.append((label, int(counts.sum()), middle, fraction[centres >= 0.5].sum()))
        record["runs"][label] = {"run": str(run), "counts": counts.tolist()}
    from crisp.report import plot_histogram_counts

    plot_histogram_counts({label: rec["counts"] for label, rec in record["runs"].items()}, args.out,
                          title=f"probability histogram ({args.subset} micrographs)")
    args.out.with_suffix(".json").write_text(json.dumps(record))
    print("| run | pixels | 0.1 < p < 0.9 | p >= 0.5 |\n|---|---|---|---|")
    for label, n, middle, positive in table:
        print(f"| {label} | {n} | {middle:.4f} | {positive:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
