"""Real-data benchmark of an ensemble: the mean map of several runs of ``real_data.py``.

Each ``--work`` folder is one run of ``benchmarks/real_data.py`` with the same split seed (same
train / validation / test micrographs; typically another ``--train-seed``). For each member alone
and for the ensemble of all of them (``crisp.predict.segment_files`` with a list of runs: the
mean of the members' probability maps), the picker is tuned on the validation maps and the test
maps are scored as in ``real_data.py`` (:func:`real_data.tune_and_score`: pixel IoU / F1 against
the provided masks; picking precision, recall, F1 at the tuned threshold and AP, radius matching
at half the diameter). Members' maps are read from ``WORK/seg-METHOD`` (made there by
``real_data.py``); the ensemble's go to ``--out``/``seg``.

Prints one table (Markdown) and writes ``OUT/results.json``. Not run in CI.

Usage::

    python -m benchmarks.real_ensemble --work W0 W1 W2 --out /tmp/crisp-real-ensemble
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from benchmarks.real_data import DEFAULT_DATA, _has_tabulate, provided_centres, provided_masks, tune_and_score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the empiar10017-dev folder")
    parser.add_argument("--work", type=Path, nargs="+", required=True, help="real_data.py work folders")
    parser.add_argument("--method", default="disk", help="label method of the runs (run-METHOD)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/crisp-real-ensemble"), help="output folder")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"real data not found at {args.data}; nothing to do")
        return 0
    from crisp.dataset import read_split
    from crisp.predict import segment_files
    from crisp.workflow.evaluate_run import read_maps

    dataset = args.work[0] / f"labels-{args.method}"
    split = read_split(dataset / "split.yaml")
    for work in args.work[1:]:
        other = read_split(work / f"labels-{args.method}" / "split.yaml")
        if (other.val, other.test) != (split.val, split.test):
            print(f"error: {work}: another split than {args.work[0]} (use the same --seed)", file=sys.stderr)
            return 2
    names = split.val + split.test
    masks = provided_masks(args.data, split.test)
    centres = provided_centres(args.data, names)
    runs = [work / f"run-{args.method}" for work in args.work]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, work in enumerate(args.work):
        prob = read_maps(work / f"seg-{args.method}", names)
        rows.append({"maps": str(work), **tune_and_score(prob, split, masks, centres,
                                                         args.out / f"picker-member{k}.yaml")})
    seg = segment_files(runs, [dataset / "micrographs" / f"{n}.mrc" for n in names], args.out / "seg",
                        progress=True)
    prob = read_maps(seg[0].parent, names)
    rows.append({"maps": f"ensemble of {len(runs)}",
                 **tune_and_score(prob, split, masks, centres, args.out / "picker.yaml")})
    table = pd.DataFrame(rows)
    print(f"split: val {split.val}, test {split.test}")
    print(table.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else table.to_string(index=False))
    (args.out / "results.json").write_text(json.dumps({"split": split.to_dict(), "rows": rows}, indent=2,
                                                      default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
