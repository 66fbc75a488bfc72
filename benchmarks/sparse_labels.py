"""Sparse and incomplete annotations (issue 17): present training, ignore-unlabelled and PU, by fraction kept.

Data and scoring as ``benchmarks.real_data`` (EMPIAR-10017 dev set, split seed 0: 6 train, 2 val, 2
test; threshold labels, radius 54 px; the ``cpu`` preset; picker tuned on the validation maps against
the validation micrographs' full annotation; test scored against the full annotation by radius
matching at 54 px). Only the *training* labels change: a seeded subset of each training micrograph's
particles (``crisp labels --keep-fraction F --seed 0``) is kept, and the rest of the micrograph is

* ``present``: background (label 0), as every label method did before: today's training (``dice``);
* ``ignore``: unlabelled (255) except discs of asserted background (label 0) at as many random
  positions as particles kept, each at least one diameter from every annotated particle (what a
  user who clicks a few empty spots gives; ``--background-coords``); loss ``dice`` ignores 255;
* ``pu``: unlabelled (255) everywhere (``--background none``); loss ``dice+nnpu`` (positive-unlabelled
  risk, :mod:`crisp.models.pu_loss`) with the class prior from ``--expected-particles`` = the mean
  number of annotated particles per training micrograph times ``--pu-expected-scale`` (a user's
  estimate of how many particles a micrograph holds).

The validation micrographs are labelled in full in a separate dataset (``--val-dataset``) for the
checkpoint choice and the picker. Each row also reports the picker tuned with sparse truth only
(the validation micrographs' centres thinned to the same fraction, recall at the expected number of
particles: ``tune_picker(..., expected_particles=N)``), when that mode exists.

Usage::

    python -m benchmarks.sparse_labels --work W --rows 0.2:pu,0.2:present --epochs 24 --threads 1

``--ensemble-seeds 0,1`` trains (or reuses) the row's run for each seed and scores the mean of their
maps (``crisp segment --ensemble``). A finished row is not retrained (rerun = rescoring); an
interrupted training resumes. Prints a Markdown table and writes ``W/results-sparse.json`` (rows of
all invocations sharing ``W``). Not run in CI.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_data import (
    DEFAULT_DATA,
    DIAMETER_PX,
    parse_options,
    provided_centres,
    provided_masks,
    tune_and_score,
)

METHODS = ("present", "ignore", "pu")
NAME, X, Y = "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"


def background_positions(centres: pd.DataFrame, shape: tuple[int, int], count: int, seed: int,
                         min_distance: float) -> pd.DataFrame:
    """``count`` seeded random positions at least ``min_distance`` px from every centre (and from the
    edge by half a diameter), x = column, y = row."""
    rng = np.random.default_rng(seed)
    xy = centres[[X, Y]].to_numpy(float)
    margin = DIAMETER_PX / 2
    found: list[tuple[float, float]] = []
    for _ in range(200 * max(count, 1)):
        if len(found) >= count:
            break
        x, y = rng.uniform(margin, shape[1] - margin), rng.uniform(margin, shape[0] - margin)
        if not len(xy) or np.min(np.hypot(xy[:, 0] - x, xy[:, 1] - y)) >= min_distance:
            found.append((x, y))
    return pd.DataFrame(found, columns=[X, Y])


LABEL_SHAPES = {"threshold": ("threshold", 1.0), "disc": ("disk", 0.5)}  # --labels: (method, disk fraction)


def label_suffix(labels: str) -> str:
    """Folder-name suffix of a label shape (none for the default, threshold)."""
    return "" if labels == "threshold" else f"-{labels}"


def label_sets(data: Path, work: Path, split, fraction: float, method: str, centres: pd.DataFrame,
               seed: int, labels: str = "threshold") -> tuple[Path, Path]:
    """(training dataset with sparse labels, validation dataset with full labels), both made with the
    label shape ``labels`` (``threshold`` or ``disc``)."""
    from benchmarks.real_data import label_config
    from crisp.io.coordinates import write_star
    from crisp.labels import make_labels

    quiet = dict(progress=False, echo=lambda _: None)
    suffix, shape = label_suffix(labels), LABEL_SHAPES[labels]
    full = work / f"labels-full{suffix}"
    make_labels([data / "images" / f"{n}.jpg" for n in split.val + split.test], full, label_config(*shape),
                coordinates=data / "coordinates", **quiet)
    background = {"present": "all", "ignore": "none", "pu": "none"}[method]
    config = label_config(*shape, keep_fraction=fraction, keep_seed=seed, background=background)
    sparse = work / f"labels-{fraction:g}-{method}{suffix}"
    background_coords = None
    if method == "ignore":
        from crisp.labels.sparse import keep_subset

        background_coords = work / f"background-{fraction:g}"
        for name in split.train:
            mine = centres[centres[NAME] == name]
            kept = len(keep_subset(mine, fraction, seed, name))
            table = background_positions(mine, (4096, 4096), kept, seed, DIAMETER_PX)
            table.insert(0, NAME, f"{name}.jpg")
            path = background_coords / f"{name}.star"
            if not path.is_file():
                background_coords.mkdir(parents=True, exist_ok=True)
                write_star(table, path, version=False)
    make_labels([data / "images" / f"{n}.jpg" for n in split.train], sparse, config,
                coordinates=data / "coordinates", background_coords=background_coords, **quiet)
    return sparse, full


def run_row(data: Path, work: Path, split, fraction: float, method: str, masks, centres, args) -> dict:
    from crisp.dataset import write_split
    from crisp.predict import segment_files
    from crisp.run import Run
    from crisp.train import make_config, train
    from crisp.workflow.evaluate_run import read_maps

    sparse, full = label_sets(data, work, split, fraction, method, centres, args.label_seed, args.labels)
    write_split(sparse / "split.yaml", split)
    expected = float(centres[centres[NAME].isin(split.train)].groupby(NAME).size().mean())
    options = dict(parse_options(args.options))
    if method == "pu":
        options.setdefault("loss", args.pu_loss)
        options["expected_particles"] = expected * args.pu_expected_scale
    else:
        options.setdefault("loss", "dice")
    seeds = args.ensemble_seeds or [args.train_seed]
    run_dirs, start = [], time.perf_counter()
    for seed in seeds:  # one run per seed; several seeds are segmented as an ensemble
        run_dir = work / f"run-{row_tag(fraction, method, seed, args)}"
        config = make_config("cpu", seed=seed, epochs=args.epochs, threads=args.threads, **options)
        if not Run(run_dir).is_finished:
            train(config, sparse, run_dir, split=sparse / "split.yaml", resume=Run(run_dir).can_resume,
                  progress=False, val_dataset=full)
        run_dirs.append(run_dir)
    train_seconds = time.perf_counter() - start
    ensemble = len(run_dirs) > 1
    tag = row_tag(fraction, method, "+".join(map(str, seeds)), args)
    names = split.val + split.test
    tta = "-tta" if args.tta else ""
    seg = work / f"seg-{tag}{tta}"
    segment_files(run_dirs if ensemble else run_dirs[0],
                  [full / "micrographs" / f"{n}.mrc" for n in names], seg, progress=False,
                  threads=args.threads, tta=args.tta)
    prob = read_maps(seg, names)
    kept = _kept(centres, split.train, fraction, args.label_seed)
    picker_path = work / f"picker-{tag}{tta}.yaml" if ensemble else run_dirs[0] / f"picker{tta}.yaml"
    row = {"fraction": fraction, "method": method, "labels": args.labels, "tta": args.tta,
           "seed": "+".join(map(str, seeds)) if ensemble else seeds[0], "loss": options["loss"],
           "expected_particles": options.get("expected_particles"),
           "train_particles": int(sum(len(c) for c in kept)),
           "epochs": Run(run_dirs[0]).config.epochs, "train_seconds": round(train_seconds, 1),
           **tune_and_score(prob, split, masks, centres, picker_path,
                            overlay=(data, work / f"picks-{tag}{tta}.png"))}
    row.update(sparse_tuning(prob, split, centres, fraction, expected, args.label_seed))
    return row


def row_tag(fraction: float, method: str, seed, args) -> str:
    """Name of a row's run (one training seed) or maps (``seed`` "0+1": an ensemble of seeds)."""
    return f"{fraction:g}-{method}-s{seed}{label_suffix(args.labels)}" + (args.tag and f"-{args.tag}")


def _kept(centres: pd.DataFrame, names: list[str], fraction: float, seed: int) -> list[pd.DataFrame]:
    from crisp.labels.sparse import keep_subset

    return [keep_subset(centres[centres[NAME] == n], fraction, seed, n) for n in names]


def sparse_tuning(prob, split, centres, fraction, expected, seed) -> dict:
    """Test F1 / AP with the picker tuned on sparse validation truth (recall at ``expected``)."""
    import inspect

    from crisp.metrics.picking import radius_match_metrics
    from crisp.picking.tune import pick_maps, tune_picker

    if "expected_particles" not in inspect.signature(tune_picker).parameters:
        return {}
    val = {n: prob[n] for n in split.val}
    truth = pd.concat(_kept(centres, split.val, fraction, seed), ignore_index=True)
    picker, _ = tune_picker(val, truth, DIAMETER_PX, progress=False, expected_particles=expected)
    test = {n: prob[n] for n in split.test}
    picks = pick_maps(test, DIAMETER_PX, picker.finder, picker.params, picker.border_fraction)
    scores = radius_match_metrics(picks, centres[centres[NAME].isin(split.test)], DIAMETER_PX / 2,
                                  threshold=picker.threshold)
    return {"sparse_tuned_P": scores["precision"], "sparse_tuned_R": scores["recall"],
            "sparse_tuned_F1": scores["F1"]}


def row_key(row: dict) -> tuple:
    """What tells the rows of ``results-sparse.json`` apart (a rerun of the same row replaces it)."""
    return (row["fraction"], row["method"], row["seed"], row.get("tag", ""), row.get("labels", "threshold"),
            row.get("tta", False))


def _surrogate(loss) -> str:
    """The nnPU surrogate of a row's loss specification (``sigmoid`` or ``logistic``; ``no`` without an
    nnPU term), read from the loss module the registry builds for it."""
    from crisp.models.losses import PRIOR_LOSSES, parse_loss_spec, single_loss

    terms = [t for t in parse_loss_spec(loss) if t["name"] in PRIOR_LOSSES]
    return single_loss(terms[0]["name"], **{"prior": 0.5, **terms[0]["params"]}).surrogate if terms else "no"


def plot_results(rows: list[dict], path: Path, topaz: dict[str, dict] | None = None) -> None:
    """Test F1 and AP against the fraction of training annotations kept, one line per method (seed 0,
    threshold labels, no tag); PU with disc labels (seed 0, no test-time augmentation) as points, one
    marker per number of epochs and nnPU surrogate; ``topaz``: label -> Topaz result (``test_F1``,
    ``test_AP``) at 20 %, drawn as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = (("pick_F1", axes[0], "test F1 (validation threshold)"), ("pick_AP", axes[1], "test AP"))
    for key, ax, title in panels:
        for method, style in zip(METHODS, ("o-", "s--", "^-"), strict=True):
            mine = sorted((r["fraction"], r[key]) for r in rows
                          if r["method"] == method and r["seed"] == 0 and not r.get("tag")
                          and r.get("labels", "threshold") == "threshold" and not r.get("tta"))
            if mine:
                ax.plot([100 * f for f, _ in mine], [v for _, v in mine], style, label=method)
        disc = [r for r in rows if r["method"] == "pu" and r.get("labels") == "disc" and r["seed"] == 0
                and not r.get("tta")]
        variants = sorted({(r["epochs"], _surrogate(r["loss"])) for r in disc})
        for (epochs, surrogate), marker in zip(variants, ("D", "P", "*", "v"), strict=False):
            mine = [r for r in disc if (r["epochs"], _surrogate(r["loss"])) == (epochs, surrogate)]
            ax.plot([100 * r["fraction"] for r in mine], [r[key] for r in mine], marker, ms=8,
                    label=f"pu, disc labels, {epochs} epochs, {surrogate} nnPU")
        for (label, result), marker in zip((topaz or {}).items(), ("x", "+"), strict=False):
            ax.plot([20], [result["test_F1" if key == "pick_F1" else "test_AP"]], marker, ms=10, mew=2,
                    label=label)
        ax.set_xscale("log")
        ax.set_xticks([10, 20, 50, 100], ["10", "20", "50", "100"])
        ax.set_xlabel("training annotations kept (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=7.5)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-sparse"))
    parser.add_argument("--rows", default="0.2:present,0.2:pu", help="FRACTION:METHOD,... (methods: "
                        + ", ".join(METHODS) + ")")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--label-seed", type=int, default=0, help="seed of the kept subsets")
    parser.add_argument("--pu-loss", default="dice+nnpu")
    parser.add_argument("--pu-expected-scale", type=float, default=1.0,
                        help="expected particles = this x the mean annotated count per training micrograph")
    parser.add_argument("--labels", choices=tuple(LABEL_SHAPES), default="threshold",
                        help="label shape: threshold (radius 54 px) or discs of half the radius")
    parser.add_argument("--tta", action="store_true", help="segment with test-time augmentation (the mean of "
                        "the 8 flips and rotations; maps in W/seg-TAG-tta); a finished row is only rescored")
    parser.add_argument("--ensemble-seeds", type=lambda text: [int(t) for t in text.split(",")], default=None,
                        metavar="S,S,...", help="train (or reuse) one run per seed and segment with their "
                        "ensemble (the mean map, `crisp segment --ensemble`); the row's seed reads '0+1'")
    parser.add_argument("--tag", default="", help="suffix of the run folders (variants of a row)")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--figure", type=Path, default=None, help="only draw W/results-sparse.json (and the "
                        "Topaz results given with --topaz LABEL=JSON) into this PNG, then stop")
    parser.add_argument("--topaz", action="append", default=[], metavar="LABEL=JSON")
    args = parser.parse_args(argv)
    if args.figure is not None:
        topaz = {spec.split("=", 1)[0]: json.loads(Path(spec.split("=", 1)[1]).read_text())
                 for spec in args.topaz}
        plot_results(json.loads((args.work / "results-sparse.json").read_text()), args.figure, topaz)
        print(args.figure)
        return 0
    if not (args.data / "images").is_dir():
        print(f"real data not found at {args.data}; nothing to do")
        return 0
    from crisp.dataset import make_split

    names = sorted(p.stem for p in (args.data / "images").glob("*.jpg"))
    masks = provided_masks(args.data, names)
    centres = provided_centres(args.data, names)
    split = make_split(names, 6, 2, seed=0, n_test=2)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results-sparse.json"
    rows = []
    for spec in [s.strip() for s in args.rows.split(",") if s.strip()]:
        fraction, method = spec.split(":")
        if method not in METHODS:
            raise SystemExit(f"unknown method {method}; choose from {METHODS}")
        row = run_row(args.data, args.work, split, float(fraction), method, masks, centres, args)
        row["tag"] = args.tag
        rows.append(row)
        with open(args.work / ".results-sparse.lock", "w") as lock:  # runs sharing W finish at any time
            fcntl.flock(lock, fcntl.LOCK_EX)
            previous = json.loads(results.read_text()) if results.is_file() else []
            previous = [r for r in previous if row_key(r) != row_key(row)]
            tmp = results.with_suffix(f".{time.time_ns()}.tmp")
            tmp.write_text(json.dumps(previous + [row], indent=2, default=float))
            tmp.replace(results)
        print(json.dumps(row, default=float), flush=True)
    table = pd.DataFrame(rows)
    columns = [c for c in ("fraction", "method", "seed", "tag", "train_particles", "train_seconds",
                           "pick_precision", "pick_recall", "pick_F1", "pick_AP", "sparse_tuned_F1")
               if c in table]
    try:
        print(table[columns].to_markdown(index=False, floatfmt=".3f"))
    except ImportError:  # to_markdown needs tabulate, not a dependency
        print(table[columns].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
