"""Topaz trained on sparse picks (issue 17): ``topaz train`` with its PU objective, scored like CRISP.

The Topaz row of issue 17's sparse-annotation benchmark. On the EMPIAR-10017 development set
(``shared/data/empiar10017-dev``, split as ``benchmarks.real_data``: ``make_split(names, 6, 2, seed=0,
n_test=2)``):

1. Topaz 0.3.20 runs from its own virtualenv (``--topaz-venv``; ``benchmarks.topaz_side_by_side.
   ensure_topaz``). The 10 JPGs are written as float32 MRC (``write_mrcs``) and preprocessed once with
   ``topaz preprocess -s 8`` (Fourier binning by 8 to 512², GMM normalisation).
2. The training picks: ``--picks DIR`` holds ``NAME.star`` (RELION ``rlnCoordinateX/Y``, pixels of the
   4096² micrograph) for the 6 training micrographs, e.g. ``crisp labels --keep-fraction F``'s
   ``DATASET/coordinates``. They are divided by 8 and rounded, and written as Topaz's text table
   (``image_name x_coord y_coord``). Nothing else about the training micrographs is given to Topaz.
3. ``topaz train --method GE-binomial`` (Topaz's positive-unlabelled objective and default), ``-m resnet8``
   (32 units, ``--no-pretrained`` unless ``--pretrained``: from scratch like CRISP, whereas Topaz by
   default starts from its shipped ``resnet8_u32``), ``-r 3`` (Topaz's default training radius, the
   positive disc around each pick at bin 8; the particle radius is 6.75 px at bin 8), class prior from N
   expected particles per micrograph (``--expected-particles``; default: the mean number annotated per
   training micrograph in the full ``coordinates/``, the estimate a user would give). Topaz 0.3.20's
   ``-n`` counts (2r + 1) x the disc's pixels per particle (``stats.pixels_given_radius`` builds a 3-D
   grid in 2-D) in both its prior and its observed positive fraction, so GE-binomial's unlabelled
   positives' share comes out 7x too large for r = 3; the script passes ``--pi`` chosen so that the share
   is N x 29 px / 512² minus the observed fraction (``--topaz-n`` passes ``-n N`` as is). Minibatches of
   256 (Topaz's default), ``--epochs 5 --epoch-size 100`` (500 updates, about 15-20 min on one CPU core;
   Topaz's default 10 x 1000 would take hours). No validation set during training (the threshold is
   chosen afterwards on the validation micrographs; Topaz's per-epoch test pass would only cost time).
   Seeded: ``random``, ``numpy`` and ``torch`` are seeded with ``--seed`` before Topaz's ``main`` runs
   in the virtualenv's Python. CPU, ``-j THREADS``, ``--num-workers 0``. The model of the last epoch is
   used.
4. ``topaz extract -r 7 -t -20`` with that model on the 2 validation and 2 test micrographs (every
   candidate kept). Coordinates x8 back to the full frame (``read_topaz``). Scoring
   (``topaz_side_by_side.score``: ``radius_match_metrics`` at 54 px against the FULL annotation):
   threshold = best F1 on the validation micrographs; test precision, recall, F1 at it, and test AP.

Every step is skipped when its output is already in ``--work`` (a rerun retrains nothing); delete the
step's output to redo it. Topaz cannot resume a stopped training, so an interrupted ``train`` starts again.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python -m benchmarks.topaz_sparse --picks DATASET/coordinates --work W \\
        --threads 1 --json W/topaz.json

Prints the per-epoch training loss, one Markdown row and the timings; ``--json FILE`` writes them.
Not run in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.topaz_side_by_side import (
    DATA,
    TOPAZ_RADIUS,
    TOPAZ_SCALE,
    ensure_topaz,
    read_topaz,
    score,
    write_mrcs,
)

#: Topaz's training radius at bin 8 (its default; positive disc around each pick).
TRAIN_RADIUS = 3
#: Side of the binned micrographs (4096 / 8).
BINNED_SIDE = 4096 // TOPAZ_SCALE

_SEEDED_MAIN = (
    "import random, sys\n"
    "import numpy, torch\n"
    "seed = int(sys.argv.pop(1))\n"
    "random.seed(seed); numpy.random.seed(seed); torch.manual_seed(seed)\n"
    "sys.argv[0] = 'topaz'\n"
    "from topaz.main import main\n"
    "main()\n"
)


def disc_pixels(radius: int) -> int:
    """Pixels of Topaz's positive disc of ``radius`` px (``x² + y² <= r²``; 29 for r = 3)."""
    grid = np.arange(-radius, radius + 1)
    return int((grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).sum())


def read_star_picks(folder: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """``folder/NAME.star`` of each of ``names`` as a table with ``rlnCoordinateX/Y`` (full-size pixels)."""
    import starfile

    from crisp.errors import CrispError

    picks = {}
    for name in names:
        path = folder / f"{name}.star"
        if not path.exists():
            raise CrispError(f"no training picks for micrograph {name}", path)
        tables = starfile.read(path, always_dict=True)  # no data block: no picks on this micrograph
        table = next(iter(tables.values()), pd.DataFrame(columns=["rlnCoordinateX", "rlnCoordinateY"]))
        if not {"rlnCoordinateX", "rlnCoordinateY"} <= set(table.columns):
            raise CrispError("expected the columns rlnCoordinateX and rlnCoordinateY", path)
        picks[name] = table
    return picks


def topaz_targets(picks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``picks`` scaled by 1 / TOPAZ_SCALE and rounded, as Topaz's coordinate table."""
    return pd.concat([pd.DataFrame({
        "image_name": name,
        "x_coord": np.round(t["rlnCoordinateX"].to_numpy(float) / TOPAZ_SCALE).astype(int),
        "y_coord": np.round(t["rlnCoordinateY"].to_numpy(float) / TOPAZ_SCALE).astype(int)})
        for name, t in picks.items()], ignore_index=True)


def write_table(table: pd.DataFrame, path: Path) -> None:
    """``table`` as a tab-separated text file (Topaz's format for coordinate tables and image lists)."""
    from crisp.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def epoch_curve(curve: Path) -> list[dict]:
    """Per-epoch means of Topaz's training log (``-o`` table: one row per minibatch)."""
    table = pd.read_csv(curve, sep="\t")
    table = table[table["split"] == "train"]
    columns = [c for c in table.columns if c not in ("epoch", "iter", "split", "auprc")]
    means = table.groupby("epoch")[columns].apply(lambda g: g.apply(pd.to_numeric, errors="coerce").mean())
    return [{"epoch": int(e), **{c: round(float(v), 4) for c, v in row.items()}}
            for e, row in means.iterrows()]


def run_step(command: list[str], env: dict[str, str], done: Path, log: Path | None = None) -> float | None:
    """Run ``command`` unless ``done`` exists; its wall seconds (those of the earlier run when skipped).

    The seconds are kept beside ``done`` in ``DONE.seconds`` so that a rerun can report them.
    """
    record = done.with_name(done.name + ".seconds")
    if done.exists():
        print(f"skip (exists): {done}", flush=True)
        return float(record.read_text()) if record.exists() else None
    print("$ " + " ".join("'<seed random, numpy, torch; run topaz.main>'" if c == _SEEDED_MAIN else c
                          for c in command), flush=True)
    start = time.perf_counter()
    if log is None:
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    else:
        with log.open("w") as out:
            subprocess.run(command, check=True, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = round(time.perf_counter() - start, 1)
    record.write_text(f"{seconds}\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--picks", type=Path, required=True,
                        help="folder of NAME.star training picks (full-size px), one per training micrograph")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-topaz-sparse"))
    parser.add_argument("--topaz-venv", type=Path, default=Path("/tmp/topaz-venv"))
    parser.add_argument("--topaz-torch", default="torch==2.14.1",
                        help="pip requirement(s) for torch if the virtualenv must be created")
    parser.add_argument("--expected-particles", type=float, default=None,
                        help="Topaz's -n (particles per micrograph); default: mean annotated per training "
                             "micrograph in DATA/coordinates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5, help="Topaz --num-epochs (its default: 10)")
    parser.add_argument("--epoch-size", type=int, default=100,
                        help="Topaz --epoch-size, minibatches per epoch (its default: 1000)")
    parser.add_argument("--minibatch-size", type=int, default=256)
    parser.add_argument("--radius", type=int, default=TRAIN_RADIUS, help="Topaz training radius at bin 8")
    parser.add_argument("--method", default="GE-binomial", choices=["GE-binomial", "GE-KL", "PU", "PN"])
    parser.add_argument("--pretrained", action="store_true",
                        help="start from Topaz's shipped resnet8_u32 (its default) instead of from scratch")
    parser.add_argument("--topaz-n", action="store_true",
                        help="pass -n to Topaz as is (its 0.3.20 prior is 7x too large, see the docstring) "
                             "instead of the prior computed here and passed as --pi")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--label", default=None, help="row label (default: the picks folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from crisp.dataset import make_split, read_true_centres

    names = sorted(p.stem for p in (DATA / "images").glob("*.jpg"))
    split = make_split(names, 6, 2, seed=args.split_seed, n_test=2)
    picks = read_star_picks(args.picks, split.train)
    full = read_true_centres(DATA, split.train)
    n_full = full.groupby("rlnMicrographName").size()
    expected = args.expected_particles
    if expected is None:
        expected = float(n_full.mean())
    n_picks = {n: len(t) for n, t in picks.items()}
    n_train = len(split.train)
    print(f"split {args.split_seed}: train {split.train}, val {split.val}, test {split.test}")
    print(f"training picks: {sum(n_picks.values())} of {int(n_full.sum())} annotated "
          f"({100 * sum(n_picks.values()) / n_full.sum():.1f} %); per micrograph {n_picks}")
    print(f"expected particles per micrograph (-n): {expected:g}", flush=True)

    topaz = ensure_topaz(args.topaz_venv, args.topaz_torch)
    python = args.topaz_venv / "bin" / "python"
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
    seconds: dict[str, float | None] = {}

    mrcs = write_mrcs(DATA / "images", work / "mrc")
    pre = work / "pre"
    seconds["preprocess"] = run_step(
        [str(topaz), "preprocess", "-s", str(TOPAZ_SCALE), "-d", "-1", "-t", "0", "-j", t, "-o", str(pre),
         *map(str, mrcs)], env, pre / f"{names[-1]}.mrc")

    # Topaz 0.3.20 counts (2r + 1) x the disc's pixels per particle both in -n's prior and in the observed
    # positive fraction p_obs, and GE-binomial uses pi - p_obs as the unlabelled positives' share: so
    # -n N gives (2r + 1) x the right share. --pi = pi_true - p_obs_true + p_obs_topaz gives the right one.
    area = n_train * BINNED_SIDE * BINNED_SIDE
    disc, n_given = disc_pixels(args.radius), sum(n_picks.values())
    pi_true, p_obs = expected * n_train * disc / area, n_given * disc / area
    pi_arg = pi_true - p_obs + n_given * disc * (2 * args.radius + 1) / area
    prior = ["-n", f"{expected:g}"] if args.topaz_n else ["--pi", f"{pi_arg:.6g}"]
    print(f"class prior: {' '.join(prior)} (true pi {pi_true:.4f} = {expected:g} x {disc} px / "
          f"{BINNED_SIDE}^2, observed positives {p_obs:.4f}, unlabelled positives' share "
          f"{pi_true - p_obs:.4f}; Topaz's -n would give {(2 * args.radius + 1) * (pi_true - p_obs):.4f})",
          flush=True)
    tag = (f"{args.method}-r{args.radius}-{'n' if args.topaz_n else 'pi'}{expected:g}"
           f"-e{args.epochs}x{args.epoch_size}-b{args.minibatch_size}"
           f"-{'pre' if args.pretrained else 'scratch'}-s{args.seed}")
    table = topaz_targets(picks)
    digest = hashlib.sha1(table.to_csv(sep="\t", index=False).encode()).hexdigest()[:8]
    train_dir = work / "train" / f"picks-{digest}-{tag}"  # one folder per set of picks and settings
    train_dir.mkdir(parents=True, exist_ok=True)
    targets, images = train_dir / "targets.txt", train_dir / "images.txt"
    write_table(table, targets)
    write_table(pd.DataFrame({"image_name": split.train,
                              "path": [str(pre / f"{n}.mrc") for n in split.train]}), images)
    digits = int(np.ceil(np.log10(args.epochs))) if args.epochs > 1 else 0
    model = train_dir / f"model_epoch{args.epochs:0{digits}d}.sav"
    curve = train_dir / "curve.txt"
    seconds["train"] = run_step(
        [str(python), "-c", _SEEDED_MAIN, str(args.seed), "train", "-d", "-1", "-j", t, "--num-workers", "0",
         "--train-images", str(images), "--train-targets", str(targets), "--format", "coord",
         *prior, "-r", str(args.radius), "--method", args.method, "-m", "resnet8",
         "--pretrained" if args.pretrained else "--no-pretrained",
         "--minibatch-size", str(args.minibatch_size), "--epoch-size", str(args.epoch_size),
         "--num-epochs", str(args.epochs), "--save-prefix", str(train_dir / "model"), "-o", str(curve)],
        env, model, log=train_dir / "train.log")

    extracted = train_dir / "extract.txt"
    seconds["extract"] = run_step(
        [str(topaz), "extract", "-m", str(model), "-r", str(TOPAZ_RADIUS), "-t", "-20", "-d", "-1", "-j", t,
         "--num-workers", "0", "-o", str(extracted),
         *(str(pre / f"{n}.mrc") for n in split.val + split.test)],
        env, extracted)

    epochs = epoch_curve(curve)
    print("Topaz training, per-epoch means of the minibatch log:")
    for row in epochs:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    result = score(read_topaz(extracted), split.val, split.test, None)
    label = args.label or f"Topaz {args.method} ({args.picks})"
    print("| method | training picks | test P | test R | test F1 (val threshold) | test AP | threshold |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {label} | {sum(n_picks.values())} | {result['test_precision']:.3f} | "
          f"{result['test_recall']:.3f} | {result['test_F1']:.4f} | {result['test_AP']:.4f} | "
          f"{result['threshold']:.3f} |")
    print(f"wall seconds per step: {seconds}; settings: {tag}; work folder: {train_dir}")
    if args.json:
        out = {"label": label, "picks": str(args.picks), "n_training_picks": n_picks,
               "expected_particles": expected, "settings": tag, "threads": args.threads,
               "split": {"train": split.train, "val": split.val, "test": split.test},
               "seconds": seconds, "epochs": epochs, **result}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
