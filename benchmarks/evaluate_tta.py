"""Test-time augmentation on a trained run: the same network evaluated with and without TTA.

Copies the run's settings (with ``tta: true``) and links its best checkpoint into ``OUT``, then
segments the validation micrographs, tunes the picker on them, and evaluates the test micrographs
(``crisp.workflow.evaluate_run``), exactly as ``crisp sweep`` does for the run itself. Prints the run's
own test figures (``RUN/evaluation/test.json``, when present) beside those with TTA.

Usage::

    python -m benchmarks.evaluate_tta RUN DATASET OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    from crisp.run import Run
    from crisp.workflow.evaluate_run import evaluate_run, read_evaluation, run_picker

    out = args.out
    Run.load(args.run).copy_to(out, tta=True)
    evaluate_run(out, args.dataset, "test", picker=run_picker(out, args.dataset, progress=False),
                 progress=False)
    rows = {"without TTA": read_evaluation(args.run, "test"), "with TTA": read_evaluation(out, "test")}
    print("| run | pixel IoU | pixel recall | pixel F1 | pick P | pick R | pick F1 | pick AP | box mAP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, rec in rows.items():
        if rec is None:
            continue
        px, pk = rec["pixel"], rec["picking"]
        print(f"| {label} | {px['iou']:.4f} | {px['recall']:.4f} | {px['f1']:.4f} | {pk['precision']:.4f} | "
              f"{pk['recall']:.4f} | {pk['F1']:.4f} | {pk['AP']:.4f} | {rec['box']['mAP']:.4f} |")
    (out / "tta_comparison.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
