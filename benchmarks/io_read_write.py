"""Time micrograph and coordinate I/O: 4k x 4k MRC (float32, uint16, float16), JPG, and picks tables.

Run: ``python -m benchmarks.io_read_write`` (writes to a temporary folder; uses the real 4k JPG of
../shared/data/empiar10017-dev when present). Prints a Markdown table of median times.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.io.coordinates import read_coordinates, write_autopick, write_coordinates
from crisp.io.micrographs import read_micrograph, write_mrc

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "empiar10017-dev" / "images"


def _median_s(func, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = rng.normal(size=(4096, 4096)).astype(np.float32)
        for dtype in (np.float32, np.uint16, np.float16):
            data = (image * 100 + 1000).astype(dtype) if dtype == np.uint16 else image.astype(dtype)
            path = folder / f"m_{np.dtype(dtype).name}.mrc"
            rows.append((f"write_mrc 4096^2 {np.dtype(dtype).name}",
                         _median_s(lambda p=path, d=data: write_mrc(p, d, pixel_size=1.0))))
            rows.append((f"read_micrograph 4096^2 MRC {np.dtype(dtype).name}",
                         _median_s(lambda p=path: read_micrograph(p))))
        mask = (image > 0).astype(np.uint8)
        rows.append(("write_mrc 4096^2 uint8 mask (mode 0)",
                     _median_s(lambda: write_mrc(folder / "mask.mrc", mask))))
        jpgs = sorted(REAL.glob("*.jpg")) if REAL.is_dir() else []
        if jpgs:
            rows.append(("read_micrograph 4096^2 JPG (real)", _median_s(lambda: read_micrograph(jpgs[0]))))
        n = 100_000
        picks = pd.DataFrame({"rlnMicrographName": [f"mic_{i % 100:03d}" for i in range(n)],
                              "rlnCoordinateX": rng.uniform(0, 4096, n),
                              "rlnCoordinateY": rng.uniform(0, 4096, n),
                              "rlnAutopickFigureOfMerit": rng.random(n)})
        for name in ("picks.star", "picks.txt"):
            rows.append((f"write_coordinates {n} picks {name}",
                         _median_s(lambda nm=name: write_coordinates(picks, folder / nm))))
            rows.append((f"read_coordinates {n} picks {name}",
                         _median_s(lambda nm=name: read_coordinates(folder / nm))))
        rows.append((f"write_autopick {n} picks, 100 micrographs",
                     _median_s(lambda: write_autopick(picks, folder / "AutoPick"))))
        rows.append((f"read_coordinates autopick.star ({n} picks)",
                     _median_s(lambda: read_coordinates(folder / "AutoPick" / "autopick.star"))))
    print("| operation | median of 3 (s) |")
    print("|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
