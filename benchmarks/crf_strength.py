"""How strongly must a CRF pull to change a trained network's maps? (issue 4's accuracy question)

Takes a trained run (CNN alone) and a dataset, segments a subset with it (maps kept in
``RUN/probabilities/SUBSET``), brings each map back to the network's binned grid (every ``bin``-th
pixel: :func:`crisp.predict.upsample_to` puts binned pixel ``j`` on original pixel ``j * bin``), and
refines it with an untrained CRF (:func:`crisp.models.crf.refine_probabilities`, 5 mean-field
iterations, paper thetas) of each kind at several kernel weights ``w`` (both kernels). Pooled over the
subset it reports pixel IoU against the binned true masks, the fraction of undecided pixels
(0.1 < p < 0.9) and the mean change of the map, and draws the probability histograms.

Usage::

    python -m benchmarks.crf_strength RUN DATASET [--subset val] [--weights 1,5,20,100] [--out FIG.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--subset", default="val")
    parser.add_argument("--weights", default="1,5,20,100")
    parser.add_argument("--kinds", default="crf,cd-crf")
    parser.add_argument("--out", type=Path, default=Path("crf_strength.png"))
    args = parser.parse_args(argv)
    from crisp.dataset import DatasetFolder
    from crisp.io.micrographs import read_micrograph
    from crisp.models.crf import CRFConfig, refine_probabilities
    from crisp.patches import bin_mask, prepare_image
    from crisp.report import plot_histogram_counts, probability_counts
    from crisp.run import Run
    from crisp.workflow.evaluate_run import segment_subset

    config = Run.load(args.run).config
    if config.crf.kind != "none":
        parser.error("give a run of the CNN alone (crf.kind none)")
    folder = DatasetFolder.open(args.dataset)
    names = folder.subset(args.subset)
    maps_dir = segment_subset(args.run, args.dataset, args.subset, args.run / "probabilities" / args.subset,
                              progress=False)
    step = config.bin
    weights = [float(w) for w in args.weights.split(",")]
    settings = [("CNN alone", None)]
    for kind in args.kinds.split(","):
        settings += [(f"{kind} w={w:g}", CRFConfig(kind=kind, w_appearance=w, w_smoothness=w))
                     for w in weights]
    stats = {label: np.zeros(5) for label, _ in settings}  # intersection, union, undecided, |change|, pixels
    hist = {label: np.zeros(50) for label, _ in settings}
    for name in names:
        prob = read_micrograph(maps_dir / f"{name}.mrc").data.astype(np.float32)[::step, ::step]
        image = prepare_image(read_micrograph(folder.micrograph(name)).data, config.bin, config.normalize)
        mask = bin_mask(read_micrograph(folder.mask(name)).data, config.bin).astype(bool)
        if image.shape != prob.shape or mask.shape != prob.shape:
            raise SystemExit(f"{name}: binned shapes differ ({prob.shape}, {image.shape}, {mask.shape}); "
                             "use micrographs whose size the binning divides")
        for label, crf in settings:
            out = prob if crf is None else refine_probabilities(prob, image, crf, scale=config.bin)
            fg = out >= 0.5
            stats[label] += [(fg & mask).sum(), (fg | mask).sum(), ((out > 0.1) & (out < 0.9)).sum(),
                             np.abs(out - prob).sum(), out.size]
            hist[label] += probability_counts(out, 50)
    print(f"{args.run} on {len(names)} {args.subset} micrograph(s), binned grid (bin {config.bin})\n")
    print("| setting | pixel IoU | 0.1 < p < 0.9 | mean abs change |\n|---|---|---|---|")
    for label, (inter, union, undecided, change, n) in stats.items():
        print(f"| {label} | {inter / union:.4f} | {undecided / n:.4f} | {change / n:.4f} |")
    plot_histogram_counts(hist, args.out, title=f"untrained CRF of growing weight on the {args.subset} maps")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
