"""Bin a dataset folder by 4 and store its micrographs as uint8, to carry it to a GPU machine.

The GPU machines lent to this project take at most 64 MiB of files per call; S1 (32 micrographs of
4096², float32) is 2 GB. This writes a dataset folder of the same names where each micrograph is
Fourier-binned by ``--bin`` (:func:`crisp.patches.bin_image`, the binning training uses), z-scored and
quantised to uint8 (``128 + 32 z``, clipped: 0.03 standard deviations per level, far below the
noise), masks binned on the same grid (:func:`crisp.patches.bin_mask`), coordinates divided by the
size ratio, ``split.yaml`` copied and ``labels.yaml`` with ``diameter_px`` divided by the factor; then
``OUT.tgz``. Train on it with ``bin: 1`` and the CRF lengths divided by the factor (``theta_alpha``,
``theta_gamma``), which is what ``bin`` would have done.

Usage::

    python -m benchmarks.prebin_dataset DATASET OUT [--bin 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bin", type=int, default=4)
    args = parser.parse_args(argv)
    from crisp.dataset import DatasetFolder, dataset_diameter_px
    from crisp.io.coordinates import read_coordinates, write_coordinates
    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.patches import bin_image, bin_mask

    src, out, factor = DatasetFolder.open(args.dataset), args.out, args.bin
    if out.exists():
        shutil.rmtree(out)
    for name in src.names():
        mic = read_micrograph(src.micrograph(name))
        binned = bin_image(mic.data, factor)
        ratio = mic.data.shape[1] / binned.shape[1]
        pixel = None if mic.pixel_size is None else mic.pixel_size * ratio
        z = (binned - binned.mean()) / binned.std()
        quantised = np.clip(np.round(128 + 32 * z), 0, 255).astype(np.uint8)
        write_mrc(out / "micrographs" / f"{name}.mrc", quantised, pixel_size=pixel)
        write_mrc(out / "masks" / f"{name}.mrc", bin_mask(read_micrograph(src.mask(name)).data, factor),
                  pixel_size=pixel)
        if src.coordinates(name).is_file():
            centres = read_coordinates(src.coordinates(name))
            centres["rlnCoordinateX"] /= ratio
            centres["rlnCoordinateY"] /= ratio
            write_coordinates(centres, out / "coordinates" / f"{name}.star")
    if src.split_file.is_file():
        shutil.copy(src.split_file, out / "split.yaml")
    diameter = dataset_diameter_px(src.root)
    (out / "labels.yaml").write_text(yaml.safe_dump({
        "method": f"{args.dataset} binned by {factor}, uint8",
        "diameter_px": None if diameter is None else diameter / factor, "bin": factor}))
    with tarfile.open(out.with_suffix(".tgz"), "w:gz") as archive:
        archive.add(out, arcname=out.name)
    print(f"wrote {out} and {out.with_suffix('.tgz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
