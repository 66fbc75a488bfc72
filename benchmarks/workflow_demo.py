"""Wall time of ``crisp demo --quick`` and ``crisp demo`` per stage, with the final table.

Usage::

    python -m benchmarks.workflow_demo [--quick-only] [--out /tmp/crisp-demo-bench]

Each size runs from scratch (``--force``) into OUT/quick and OUT/full. Prints one table of seconds
per stage and the metrics of each size. The targets: quick <= 3 min, full <= 10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/crisp-demo-bench"))
    parser.add_argument("--quick-only", action="store_true")
    args = parser.parse_args()

    import pandas as pd

    from crisp.compare import to_markdown
    from crisp.workflow.demo import run_demo

    sizes = ["quick"] if args.quick_only else ["quick", "full"]
    timings, tables = {}, []
    for size in sizes:
        start = time.perf_counter()
        result = run_demo(args.out / size, quick=size == "quick", force=True, progress=False,
                          echo=lambda line, s=size: print(f"  {s}: {line}", flush=True))
        timings[size] = {**result.timings,
                         "TOTAL": time.perf_counter() - start}
        table = result.table.copy()
        table.insert(0, "size", size)
        tables.append(table)
    print(f"\ncpu cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    print(to_markdown(pd.DataFrame(timings).rename_axis("stage").reset_index(), "{:.1f}"))
    print(to_markdown(pd.concat(tables, ignore_index=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
