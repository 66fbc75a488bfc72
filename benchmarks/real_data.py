"""Real-data benchmark: labels by ``disk`` and by ``threshold`` on EMPIAR-10017, and what they train.

Data: the development set ``shared/data/empiar10017-dev`` (10 micrographs of 4096 x 4096, 8-bit JPG
renderings, CryoPPP centres, particle diameter ~108 px, provided disc masks). Steps:

1. Labels: ``crisp.labels.make_labels`` with each method (radius 54 px) into ``WORK/labels-METHOD``;
   the time it takes, and pixel IoU / F1 of the labels against the provided masks (JPG >= 128).
2. Split: 6 train, 2 validation, 2 test micrographs (``crisp.dataset.make_split``, fixed seed),
   the same for both methods.
3. Unless ``--labels-only``: train the ``cpu`` preset (``crisp.train.train``) on each label set,
   segment the validation and test micrographs (``crisp.predict.segment_files``), tune the picker on
   validation (``crisp.picking.tune.tune_picker``, truth = the provided centres), then on test:
   pixel IoU / F1 of the probability maps (>= 0.5) against the provided masks, and picking
   precision, recall, F1 (at the tuned threshold) and AP by radius matching at half the diameter
   (``crisp.metrics.picking.radius_match_metrics``). The tuned picker includes the edge margin
   (``border_fraction``) that fits the validation annotations. ``--tta`` segments with test-time
   augmentation; a rerun on a finished work folder skips the training, so ``--tta`` after a run scores
   its network with TTA.

Prints one table (Markdown) and writes ``WORK/results.json`` (``results-tta.json`` with ``--tta``).
Not run in CI.

Usage::

    python -m benchmarks.real_data --labels-only              # label generation only (~1-2 min)
    python -m benchmarks.real_data --work /tmp/crisp-real     # everything (training takes long)
    python -m benchmarks.real_data --work W --methods threshold --set encoder=resnet34 --set encoder_depth=5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "empiar10017-dev"
DIAMETER_PX = 108.0
PIXEL_SIZE = 1.77


def provided_masks(data: Path, names: list[str]) -> dict[str, np.ndarray]:
    from crisp.io.micrographs import read_micrograph

    return {n: (read_micrograph(data / "masks" / f"{n}_mask.jpg").data >= 128).astype(np.uint8)
            for n in names}


def provided_centres(data: Path, names: list[str]) -> pd.DataFrame:
    """The provided centres (``DATA/coordinates/NAME.star``) of the named micrographs."""
    from crisp.dataset import read_true_centres

    return read_true_centres(data, names)


def label_config(method: str, disk_fraction: float = 1.0, **settings):
    """The benchmark's label settings: ``method`` at the particle radius (54 px) and the dev set's pixel
    size; ``disk_fraction`` applies to ``disk`` only; ``settings``: further LabelConfig fields."""
    from crisp.labels import LabelConfig

    return LabelConfig(method=method, radius_px=DIAMETER_PX / 2, pixel_size=PIXEL_SIZE,
                       disk_fraction=disk_fraction if method == "disk" else 1.0, **settings)


def make_label_set(data: Path, work: Path, method: str, masks: dict[str, np.ndarray],
                   disk_fraction: float = 1.0) -> dict:
    from crisp.io.micrographs import read_micrograph
    from crisp.labels import make_labels
    from crisp.metrics.pixel import pixel_metrics

    config = label_config(method, disk_fraction)
    start = time.perf_counter()
    run = make_labels(data / "images", work / f"labels-{method}", config, coordinates=data / "coordinates",
                      progress=False, echo=lambda _: None)
    seconds = time.perf_counter() - start
    labels = {n: read_micrograph(run.out_dir / "masks" / f"{n}.mrc").data for n in run.names}
    _, pooled = pixel_metrics(labels, {n: masks[n] for n in labels})
    return {"dataset": str(run.out_dir), "names": run.names, "label_seconds": round(seconds, 1),
            "label_iou": pooled["iou"], "label_f1": pooled["f1"], "skipped": len(run.skipped)}


def train_and_evaluate(data: Path, work: Path, method: str, dataset: Path, split, masks, centres,
                       seed: int, epochs: int | None, threads: int | None = None,
                       options: dict | None = None, tta: bool = False) -> dict:
    from crisp.predict import segment_files
    from crisp.run import Run
    from crisp.train import make_config, train
    from crisp.workflow.evaluate_run import read_maps

    config = make_config("cpu", seed=seed, epochs=epochs, threads=threads, **(options or {}))
    run_dir = work / f"run-{method}"
    start = time.perf_counter()
    if not Run(run_dir).is_finished:  # resume an interrupted run, skip a finished one
        resume = Run(run_dir).can_resume
        train(config, dataset, run_dir, split=dataset / "split.yaml", resume=resume, progress=False)
    train_seconds = time.perf_counter() - start
    names = split.val + split.test
    suffix = "-tta" if tta else ""
    tag = method + suffix
    segment_files(run_dir, [dataset / "micrographs" / f"{n}.mrc" for n in names], work / f"seg-{tag}",
                  tta=tta, progress=False)
    prob = read_maps(work / f"seg-{tag}", names)
    return {"train_seconds": round(train_seconds, 1), "tta": tta,
            **tune_and_score(prob, split, masks, centres, run_dir / f"picker{suffix}.yaml",
                             overlay=(data, work / f"picks-{tag}.png"))}


def tune_and_score(prob: dict[str, np.ndarray], split, masks: dict[str, np.ndarray], centres: pd.DataFrame,
                   picker_path: Path, overlay: tuple[Path, Path] | None = None) -> dict:
    """Tune the picker on the validation maps (written to ``picker_path``), score the test maps.

    Pixel IoU / F1 of the test maps (>= 0.5) against the provided masks; picking precision, recall,
    F1 at the tuned threshold and AP by radius matching at half the diameter against the centres.
    ``overlay = (data folder, PNG)``: draw the first test micrograph with its true positives, false
    positives and misses (``crisp.report.plot_picks``).
    """
    from crisp.metrics.picking import radius_match_metrics
    from crisp.metrics.pixel import pixel_metrics
    from crisp.picking.tune import pick_maps, tune_picker, write_tuning

    val = {n: prob[n] for n in split.val}
    test = {n: prob[n] for n in split.test}
    picker, table = tune_picker(val, centres, DIAMETER_PX, progress=False)
    write_tuning(picker, table, picker_path)
    _, pixel = pixel_metrics(test, {n: masks[n] for n in test})
    picks = pick_maps(test, DIAMETER_PX, picker.finder, picker.params, picker.border_fraction)
    test_truth = centres[centres["rlnMicrographName"].isin(split.test)]
    picking = radius_match_metrics(picks, test_truth, DIAMETER_PX / 2, threshold=picker.threshold)
    if overlay is not None:
        draw_picks(overlay[0], split.test[0], picks, test_truth, picker.threshold, overlay[1])
    return {"test_pixel_iou": pixel["iou"], "test_pixel_f1": pixel["f1"], "finder": picker.finder,
            "border_fraction": picker.border_fraction, "pick_threshold": picker.threshold,
            "pick_precision": picking["precision"], "pick_recall": picking["recall"],
            "pick_F1": picking["F1"], "pick_AP": picking["AP"], "n_picks": picking["n_picks"],
            "n_truth": picking["n_truth"]}


def draw_picks(data: Path, name: str, picks: pd.DataFrame, truth: pd.DataFrame, threshold: float | None,
               path: Path) -> None:
    """Micrograph ``name`` with its picks (score >= threshold) coloured by radius matching."""
    from crisp.io.micrographs import read_micrograph
    from crisp.report import plot_picks
    from crisp.workflow.evaluate_run import match_picks

    mine = picks[picks["rlnMicrographName"] == name]
    if threshold is not None:
        mine = mine[mine["rlnAutopickFigureOfMerit"] >= threshold]
    marked, truth_marked = match_picks(mine, truth[truth["rlnMicrographName"] == name], DIAMETER_PX / 2)
    tp = int(marked["is_true_positive"].sum())
    plot_picks(read_micrograph(data / "images" / f"{name}.jpg").data, marked, path, DIAMETER_PX,
               truth=truth_marked, title=f"{name}: {tp} true positives, {len(marked) - tp} false positives, "
               f"{len(truth_marked) - tp} missed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the empiar10017-dev folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-real-data"), help="output folder")
    parser.add_argument("--methods", default="disk,threshold", help="label methods, comma-separated")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split (and of the training unless --train-seed)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the training (default: --seed); the split keeps --seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the training")
    parser.add_argument("--epochs", type=int, default=None, help="override the cpu preset's epochs")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the cpu training preset (a TrainConfig field, the "
                        "value read as YAML), e.g. --set arch=unetplusplus; repeatable")
    parser.add_argument("--tta", action="store_true", help="segment with test-time augmentation (the "
                        "mean of the 8 flips and rotations; maps in WORK/seg-METHOD-tta)")
    parser.add_argument("--labels-only", action="store_true", help="make and score the labels, no training")
    parser.add_argument("--disk-fraction", type=float, default=1.0,
                        help="disk labels: disc radius as a fraction of the particle radius")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"real data not found at {args.data}; nothing to do")
        return 0
    from crisp.dataset import make_split, write_split

    options = parse_options(args.options)

    names = sorted(p.stem for p in (args.data / "images").glob("*.jpg"))
    masks = provided_masks(args.data, names)
    centres = provided_centres(args.data, names)
    split = make_split(names, 6, 2, seed=args.seed, n_test=2)
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        row = {"method": method, **make_label_set(args.data, args.work, method, masks, args.disk_fraction)}
        dataset = Path(row.pop("dataset"))
        row.pop("names")
        write_split(dataset / "split.yaml", split)
        if not args.labels_only:
            row.update(train_and_evaluate(args.data, args.work, method, dataset, split, masks, centres,
                                          args.seed if args.train_seed is None else args.train_seed,
                                          args.epochs, args.threads, options, args.tta))
        rows.append(row)
    table = pd.DataFrame(rows)
    print(f"EMPIAR-10017 dev set: {len(names)} micrographs; split seed {args.seed}: "
          f"train {split.train}, val {split.val}, test {split.test}")
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False))
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"split": split.to_dict(), "rows": rows}
    (args.work / ("results-tta.json" if args.tta else "results.json")).write_text(
        json.dumps(results, indent=2, default=float))
    return 0


def parse_options(pairs: list[str]) -> dict:
    """``["arch=unetplusplus", "repeats=4"]`` -> ``{"arch": "unetplusplus", "repeats": 4}`` (YAML values)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set takes KEY=VALUE, got '{pair}'")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
