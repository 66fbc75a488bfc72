"""The general model (issue 18): zero-shot on real data, few-shot fine-tuning, held-out structures.

Three parts, each writing ``WORK/PART.json`` and printing a Markdown table (not run in CI):

``zero-shot``
    ``crisp segment-and-pick MODEL`` on the 10 EMPIAR-10017 development micrographs (4096² JPGs,
    1.77 Å/px, never used to build the model) with ``--diameter-A`` (default 190 Å: beta-galactosidase;
    the annotation's discs are 108 px = 191 Å) and the model's own picker: AP (every candidate ranked
    by score) and precision / recall / F1 at the picker's threshold, radius matching at 54 px (half
    the annotated diameter), on all 10 micrographs and on the 2 test micrographs of the real-data split
    (``make_split(names, 6, 2, seed=0, n_test=2)``); seconds per micrograph (whole call / 10). Other
    diameters with ``--diameters 160,190,220``.
``few-shot``
    Fine-tune from MODEL (``--init MODEL --diameter-px 108``: bin 4) or train from random
    initialisation on the first K training micrographs of that split (threshold labels, radius 54 px;
    ``FRACTION`` < 1: a seeded subset of the particles kept, the rest unlabelled, loss ``dice+nnpu``
    with the expected count), validation on the 2 fully annotated validation micrographs (best epoch
    and picker), test on the 2 test micrographs (the scoring of ``benchmarks.real_data``). Rows
    ``INIT:K:FRACTION`` (INIT = ``general`` or ``scratch``).
``held-out``
    Corpus micrographs (``crisp simulate-corpus``) of the held-out structures
    (:data:`crisp.simulate.corpus.HELD_OUT_STRUCTURES`, never in the training corpus) at fixed detector
    SNRs; segmented and picked with MODEL given each structure's size in Å: pixel IoU / F1 of the maps
    (>= 0.5) against the corpus's disc labels, picking P / R / F1 (model picker) and AP at half the
    particle diameter.

Usage::

    python -m benchmarks.general_model zero-shot --work W [--model general] [--diameters 160,190,220]
    python -m benchmarks.general_model few-shot --work W --rows general:2:1,general:1:1,scratch:2:1
    python -m benchmarks.general_model held-out --work W --snr 0.005,0.003 --count 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_data import DEFAULT_DATA, DIAMETER_PX, PIXEL_SIZE, _has_tabulate

NAME = "rlnMicrographName"


def dev_split(data: Path):
    """The real-data benchmark's split of the development set (6 / 2 / 2, seed 0)."""
    from crisp.dataset import make_split

    names = sorted(p.stem for p in (data / "images").glob("*.jpg"))
    return names, make_split(names, 6, 2, seed=0, n_test=2)


def _scores(picks: pd.DataFrame, truth: pd.DataFrame, threshold: float | None) -> dict:
    from crisp.metrics.picking import radius_match_metrics

    m = radius_match_metrics(picks, truth, DIAMETER_PX / 2, threshold=threshold)
    return {"AP": round(m["AP"], 4), "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
            "F1": round(m["F1"], 4), "best_F1": round(m["best_F1"], 4), "n_truth": int(m["n_truth"]),
            "n_picks_at_threshold": int((picks["rlnAutopickFigureOfMerit"] >= (threshold or -np.inf)).sum())}


def zero_shot(args) -> list[dict]:
    from crisp.dataset import read_true_centres
    from crisp.inference.segment_pick import segment_and_pick_files
    from crisp.run import Run
    from crisp.workflow.evaluate_run import read_picks

    names, split = dev_split(args.data)
    truth = read_true_centres(args.data, names)
    picker = Run.load(args.model).picker()
    rows = []
    for diameter in [float(d) for d in args.diameters.split(",")]:
        out = args.work / f"zero-shot-{diameter:g}A"
        start = time.perf_counter()
        segment_and_pick_files(args.model, [args.data / "images" / f"{n}.jpg" for n in names], out,
                               pixel_size=PIXEL_SIZE, diameter_A=diameter, threads=args.threads,
                               progress=False, save_maps="grid" if diameter == 190 else None)
        seconds = (time.perf_counter() - start) / len(names)
        picks = read_picks(out)
        picks[NAME] = picks[NAME].map(lambda s: Path(str(s)).stem)
        test = split.test
        rows.append({"diameter_A": diameter, "s_per_micrograph": round(seconds, 2),
                     "threshold": picker.threshold,
                     **{f"all10_{k}": v for k, v in _scores(picks, truth, picker.threshold).items()},
                     **{f"test_{k}": v for k, v in _scores(picks[picks[NAME].isin(test)],
                                                            truth[truth[NAME].isin(test)],
                                                            picker.threshold).items()}})
        if diameter == 190:
            draw(args.data, test[0], picks, truth, picker.threshold, args.work / "zero-shot-picks.png")
    return rows


def draw(data: Path, name: str, picks: pd.DataFrame, truth: pd.DataFrame, threshold: float,
         path: Path) -> None:
    """The micrograph with its picks above ``threshold`` (true positive green, false red) and the
    annotated particles that no pick matched (yellow)."""
    from benchmarks.real_data import draw_picks

    draw_picks(data, name, picks[picks[NAME] == name], truth[truth[NAME] == name], threshold, path)


def few_shot(args) -> list[dict]:
    from benchmarks.real_data import make_label_set, provided_masks, tune_and_score
    from benchmarks.sparse_labels import label_sets
    from crisp.dataset import Split, read_true_centres, write_split
    from crisp.predict import segment_files
    from crisp.run import Run
    from crisp.train import make_config, train
    from crisp.workflow.evaluate_run import read_maps

    names, split = dev_split(args.data)
    masks = provided_masks(args.data, names)
    centres = read_true_centres(args.data, names)
    rows = []
    for spec in [r for r in args.rows.split(",") if r.strip()]:
        init, k, fraction = spec.split(":")
        k, fraction = int(k), float(fraction)
        method = "present" if fraction >= 1 else "pu"
        if args.labels == "disc":  # discs of half the particle radius (the general model's own labels)
            if fraction < 1:
                raise SystemExit("--labels disc is for full labels (FRACTION 1) only")
            labels = make_label_set(args.data, args.work, "disk", masks, disk_fraction=0.5)
            sparse = full = Path(labels["dataset"])
        else:
            sparse, full = label_sets(args.data, args.work, split, fraction, method, centres, 0)
        sub = Split(train=split.train[:k], val=split.val, test=split.test, seed=split.seed)
        tag = f"{init}-{k}-{fraction:g}-e{args.epochs}"
        tag += "" if args.labels == "threshold" else f"-{args.labels}"
        tag += "" if args.lr is None else f"-lr{args.lr:g}"
        tag += "" if args.train_seed == 0 else f"-s{args.train_seed}"
        run_dir = args.work / f"run-{tag}"
        split_path = args.work / f"split-{tag}.yaml"
        write_split(split_path, sub)
        options: dict = {"loss": "dice"}
        if method == "pu":
            options = {"loss": "dice+nnpu", "expected_particles": float(
                centres[centres[NAME].isin(sub.train)].groupby(NAME).size().mean())}
        if args.lr is not None:
            options["lr"] = args.lr
        config = make_config("cpu", seed=args.train_seed, epochs=args.epochs, threads=args.threads,
                             init=None if init == "scratch" else args.model, **options)
        scale = {} if init == "scratch" else {"diameter_px": DIAMETER_PX}  # bin 4 for the general model
        start = time.perf_counter()
        if not Run(run_dir).is_finished:
            resume = Run(run_dir).can_resume
            train(config, sparse, run_dir, split=split_path, resume=resume, progress=False, val_dataset=full,
                  **({} if resume else scale))
        seconds = time.perf_counter() - start
        seg = args.work / f"seg-{tag}"
        eval_names = split.val + split.test
        extra = {"diameter_px": DIAMETER_PX} if Run(run_dir).config.particle_diameter_px else {}
        segment_files(run_dir, [full / "micrographs" / f"{n}.mrc" for n in eval_names], seg, progress=False,
                      threads=args.threads, **extra)
        prob = read_maps(seg, eval_names)
        row = {"init": init, "micrographs": k, "fraction": fraction, "labels": args.labels,
               "seed": args.train_seed,
               "lr": config.lr, "loss": options["loss"],
               "epochs": args.epochs, "bin": Run(run_dir).config.bin, "train_seconds": round(seconds, 1),
               "train_particles": int(centres[centres[NAME].isin(sub.train)].shape[0] * min(fraction, 1))}
        row.update(tune_and_score(prob, split, masks, centres, run_dir / "picker.yaml",
                                  overlay=(args.data, args.work / f"picks-{tag}.png")))
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def held_out(args) -> list[dict]:
    from crisp.dataset import DatasetFolder, read_true_centres
    from crisp.inference.segment_pick import segment_and_pick_files
    from crisp.io.micrographs import read_micrograph
    from crisp.metrics.picking import radius_match_metrics
    from crisp.metrics.pixel import pixel_metrics
    from crisp.run import Run
    from crisp.simulate.corpus import (
        GENERAL_DIAMETER_PX,
        HELD_OUT_STRUCTURES,
        make_corpus_config,
        simulate_corpus,
    )
    from crisp.workflow.evaluate_run import read_picks

    picker = Run.load(args.model).picker()
    rows = []
    for snr in [float(s) for s in args.snr.split(",")]:
        for structure in HELD_OUT_STRUCTURES:
            corpus = args.work / f"held-out-{structure}-snr{snr:g}"
            config = make_corpus_config(count=args.count, seed=args.seed, structures=(structure,),
                                        phantom_fraction=0.0, snr_detector=snr, prefix=structure)
            names = simulate_corpus(corpus, config, progress=False)
            table = pd.read_csv(corpus / "corpus.csv")
            d_A = float(table["d_A"].iloc[0])
            out = corpus.with_name(corpus.name + "-picks")
            folder = DatasetFolder(corpus)
            segment_and_pick_files(args.model, [folder.micrograph(n) for n in names], out, diameter_A=d_A,
                                   threads=args.threads, progress=False, save_maps="full", overwrite=True)
            maps = {n: read_micrograph(out / "maps" / f"{n}.mrc").data for n in names}
            masks = {n: read_micrograph(folder.mask(n)).data for n in names}
            _, pooled = pixel_metrics({n: (m >= 0.5).astype(np.uint8) for n, m in maps.items()}, masks)
            picks = read_picks(out)
            picks[NAME] = picks[NAME].map(lambda s: Path(str(s)).stem)
            truth = read_true_centres(corpus, names)
            # the particle spans d_A / pixel size = GENERAL_DIAMETER_PX * jitter pixels of each micrograph
            radius = float(np.median(table["diameter_px"])) / 2
            m = radius_match_metrics(picks, truth, radius, threshold=picker.threshold)
            rows.append({"structure": structure, "d_A": d_A, "snr_detector": snr, "micrographs": len(names),
                         "median_snr_grid": round(float(table["snr_grid"].median()), 3),
                         "pixel_IoU": round(pooled["iou"], 4), "pixel_F1": round(pooled["f1"], 4),
                         "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
                         "F1": round(m["F1"], 4), "AP": round(m["AP"], 4), "n_truth": int(m["n_truth"]),
                         "nominal_diameter_px": GENERAL_DIAMETER_PX})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("zero-shot", "few-shot", "held-out"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the empiar10017-dev folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-general"))
    parser.add_argument("--model", default="general", help="bundled model name or run folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--diameters", default="190", help="zero-shot: particle diameters to give, Å")
    parser.add_argument("--rows", default="general:2:1,general:1:1,general:2:0.2,scratch:2:1",
                        help="few-shot: INIT:K:FRACTION,...")
    parser.add_argument("--epochs", type=int, default=30, help="few-shot training epochs")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--labels", choices=("threshold", "disc"), default="threshold",
                        help="few-shot: threshold labels (radius 54 px) or discs of half the radius")
    parser.add_argument("--lr", type=float, default=None,
                        help="few-shot: learning rate (default: the preset's)")
    parser.add_argument("--snr", default="0.005,0.003", help="held-out: detector SNRs")
    parser.add_argument("--count", type=int, default=6, help="held-out: micrographs per structure and SNR")
    parser.add_argument("--seed", type=int, default=1000, help="held-out: corpus seed")
    args = parser.parse_args(argv)
    if args.part != "held-out" and not (args.data / "images").is_dir():
        print(f"real data not found at {args.data}; nothing to do")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    rows = {"zero-shot": zero_shot, "few-shot": few_shot, "held-out": held_out}[args.part](args)
    path = args.work / f"{args.part}.json"
    previous = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(previous + rows, indent=2, default=float))
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
