"""CLI verbs of the segmentation area: models, train, segment, evaluate (see crisp.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from crisp.commands.common import (
    BACKEND,
    DIAMETER_A,
    DIAMETER_PX,
    MAX_TILE_PX,
    SCHEDULER,
    THREADS,
    WORKERS,
    execution,
)
from crisp.errors import CrispError


def register(app: typer.Typer) -> None:
    """Add this area's verbs to app."""

    @app.command("models")
    def models(
        counts: bool = typer.Option(False, "--counts",
                                    help="Parameter counts for every encoder (slow: builds each one)."),
    ) -> None:
        """List architectures, encoders (with parameter counts) and losses."""
        from crisp.models import zoo

        typer.echo("architectures: " + ", ".join(zoo.architecture_names()))
        typer.echo("  aliases: " + ", ".join(f"{a} -> {k}" for a, k in sorted(zoo.ARCH_ALIASES.items())))
        typer.echo("losses: " + ", ".join(zoo.LOSS_NAMES) + "  (weighted sums: 'dice+0.5*focal')")
        typer.echo("encoders (any timm model also works as tu-NAME; counts with 1 input channel):")
        names = zoo.encoder_names()
        shown = names if counts else [n for n in zoo.CURATED_ENCODERS]
        for name in shown:
            try:
                count = f"{zoo.encoder_parameter_count(name) / 1e6:8.2f} M"
            except CrispError as err:
                count = f"  (not buildable: {err})"
            typer.echo(f"  {name:32s}{count}")
        if not counts:
            rest = [n for n in names if n not in zoo.CURATED_ENCODERS]
            typer.echo("  others (use --counts for their sizes): " + ", ".join(rest))

    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder (micrographs/, masks/, split.yaml)."),
        output: Path = typer.Option(..., "-o", "--output", help="Run directory to create."),
        preset: str = typer.Option("auto", "--preset", help="paper | cpu | auto (paper with a GPU, cpu "
                                   "without; with --config, the file's own preset)."),
        config: Path = typer.Option(None, "--config", help="YAML file of TrainConfig values."),
        split: Path = typer.Option(None, "--split", help="Split manifest (default DATASET/split.yaml)."),
        val_dataset: Path = typer.Option(None, "--val-dataset", help="Dataset folder of the validation "
                                         "micrographs (e.g. fully annotated while DATASET's labels are "
                                         "sparse; default DATASET). Give it again with --resume."),
        arch: str = typer.Option(None, "--arch", help="Architecture (see `crisp models`)."),
        encoder: str = typer.Option(None, "--encoder", help="Encoder (smp name or tu-<timm model>)."),
        encoder_depth: int = typer.Option(None, "--encoder-depth", help="Encoder stages (3-5)."),
        encoder_weights: Path = typer.Option(None, "--encoder-weights",
                                             help="Local encoder state-dict file (default: random)."),
        loss: str = typer.Option(None, "--loss", help="Loss, e.g. dice or 'dice+0.5*focal'; nnpu (or "
                                 "'dice+nnpu', 'dice+nnpu-bce') learns from sparse labels as "
                                 "positive-unlabelled data."),
        expected_particles: float = typer.Option(
            None, "--expected-particles", help="Particles per training micrograph you expect, annotated or "
            "not (the class prior of the nnpu loss)."),
        positive_fraction: float = typer.Option(
            None, "--positive-fraction", help="Share of training patches placed on a labelled particle "
            "(default 0.5 when the label maps hold unlabelled pixels, else 0)."),
        bin_factor: int = typer.Option(None, "--bin", help="Binning factor of the micrographs."),
        normalize: str = typer.Option(None, "--normalize", help="gmm | zscore | none."),
        patch: int = typer.Option(None, "--patch", help="Patch size in binned pixels (multiple of 32)."),
        overlap: int = typer.Option(None, "--overlap", help="Tile overlap in validation (binned px)."),
        epochs: int = typer.Option(None, "--epochs", help="Number of epochs (default: the preset's; 50 when "
                                   "fine-tuning a CRF from --init, as in the paper)."),
        batch: int = typer.Option(None, "--batch", help="Micrographs per batch (4 patches each)."),
        repeats: int = typer.Option(None, "--repeats", help="Visits of each micrograph per epoch."),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (CNN alone)."),
        lr_cnn: float = typer.Option(None, "--lr-cnn", help="CNN learning rate when a CRF is trained."),
        lr_crf: float = typer.Option(None, "--lr-crf", help="CRF learning rate."),
        crf: str = typer.Option(None, "--crf", help="none | crf | cd-crf."),
        solver: str = typer.Option(None, "--solver", help="mean-field | frank-wolfe."),
        crf_iterations: int = typer.Option(None, "--crf-iterations", help="CRF solver iterations."),
        feature_source: str = typer.Option(None, "--feature-source", help="cd-crf guide: logits | decoder."),
        init: Path = typer.Option(None, "--init", help="Run directory (or bundled model, e.g. general) whose "
                                  "best CNN starts this run."),
        diameter_A: float = typer.Option(None, "--diameter-A", help="With a diameter-scaled --init "
                                         "(general): the particle diameter in Å; chooses --bin so that "
                                         "the particle has the model's size in pixels."),
        diameter_px: float = typer.Option(None, "--diameter-px", help="As --diameter-A, in pixels of the "
                                          "training micrographs."),
        patience: int = typer.Option(None, "--patience",
                                     help="Early stopping patience (validations; epochs by default)."),
        val_every: int = typer.Option(None, "--val-every", help="Validate after every n-th epoch only "
                                      "(epochs must be a multiple; saves time on a CPU)."),
        photometric: bool = typer.Option(None, "--photometric/--no-photometric",
                                         help="Jitter each training patch's contrast, blur and noise."),
        seed: int = typer.Option(None, "--seed", help="Random seed."),
        threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from last.ckpt."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Train a segmentation network (CNN, optionally with a CRF) on a dataset folder."""
        from crisp.run import Run
        from crisp.train import AUTO_PRESET, TrainConfig, make_config, train

        if resume:
            cfg = TrainConfig()  # replaced by the run's own config.yaml
        else:
            cfg = make_config(
                preset, config, arch=arch, encoder=encoder, encoder_depth=encoder_depth,
                encoder_weights=str(encoder_weights) if encoder_weights else None, loss=loss,
                bin=bin_factor, normalize=normalize, patch_px=patch, val_overlap_px=overlap, epochs=epochs,
                micrographs_per_batch=batch, repeats=repeats, lr=lr, lr_cnn=lr_cnn, lr_crf=lr_crf,
                init=str(init) if init else None, early_stopping_patience=patience, val_every=val_every,
                augment_photometric=photometric, seed=seed, threads=threads,
                expected_particles=expected_particles, positive_fraction=positive_fraction,
                crf=dict(kind=crf, solver=solver, iterations=crf_iterations, feature_source=feature_source))
            if preset == AUTO_PRESET and cfg.preset is not None:
                typer.echo(f"preset: {cfg.preset}")
        run = Run(train(cfg, dataset, output, split=split, resume=resume, progress=not no_progress,
                        val_dataset=val_dataset, diameter_A=diameter_A, diameter_px=diameter_px))
        summary = run.summary()
        typer.echo(f"best epoch {summary['best_epoch']}: val IoU {summary['best_val_iou']:.4f}, "
                   f"F1 {summary['best_val_f1']:.4f}; run directory {run.path}")

    @app.command("segment")
    def segment(
        run_dir: Path = typer.Argument(..., help="Training run directory, or a bundled model's name "
                                       "(general)."),
        micrographs: list[Path] = typer.Argument(..., help="Micrograph files or folders."),
        output: Path = typer.Option(..., "-o", "--output", help="Folder for the probability maps."),
        pixel_size: float = typer.Option(None, "--pixel-size", help="Pixel size in Å (overrides headers)."),
        diameter_A: float = DIAMETER_A,
        diameter_px: float = DIAMETER_PX,
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every map (also when OUTPUT "
                                       "holds maps of other settings, e.g. another run)."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Record a failing micrograph and go on "
                                        "with the others (exit 2 at the end)."),
        shard: str = typer.Option(None, "--shard", help="I/N: segment only the I-th of N shares of the "
                                  "micrographs (shards may run at once into one OUTPUT)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        batch_size: int = typer.Option(8, "--batch-size", help="Patches per network call."),
        tta: bool = typer.Option(None, "--tta/--no-tta", help="Average the 8 flips and rotations of "
                                 "every patch (8x the time; default: the run's tta setting)."),
        ensemble: list[Path] = typer.Option(None, "--ensemble", help="Another training run whose map is "
                                            "averaged with RUN_DIR's (repeatable: an ensemble of runs)."),
        max_tile_px: int = MAX_TILE_PX,
        threads: int = THREADS,
        backend: str = BACKEND,
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Write a float16 foreground-probability map (MRC) per micrograph, at the original size."""
        from crisp.batch import parse_shard
        from crisp.config import check_number, check_output
        from crisp.predict import segment_files

        check_number(batch_size, "--batch-size", ge=1)
        check_number(pixel_size, "--pixel-size", gt=0)
        check_number(max_tile_px, "--max-tile-px", ge=1)
        check_number(threads, "--threads", ge=1)
        check_output(output, "folder")

        runs = [run_dir, *(ensemble or [])]
        with execution(workers, scheduler):
            written = segment_files(runs, micrographs, output, overwrite=overwrite, batch_size=batch_size,
                                    pixel_size=pixel_size, tta=tta, progress=not no_progress,
                                    keep_going=keep_going, shard=parse_shard(shard), max_tile_px=max_tile_px,
                                    threads=threads, backend=backend, diameter_A=diameter_A,
                                    diameter_px=diameter_px)
        typer.echo(f"{len(written)} probability maps in {output}")

    @app.command("evaluate")
    def evaluate(
        prob_dir: Path = typer.Argument(..., help="Folder of probability maps (crisp segment)."),
        dataset: Path = typer.Argument(..., help="Dataset folder with the true masks."),
        subset: str = typer.Option("test", "--subset", help="train | val | test | all."),
        threshold: float = typer.Option(0.5, "--threshold", help="Foreground where p >= threshold."),
        output: Path = typer.Option(None, "-o", "--output", help="Write the metrics as JSON."),
        picker: Path = typer.Option(None, "--picker", help="picker.yaml: also pick the maps with it and "
                                    "score the picks against DATASET/coordinates (radius matching at "
                                    "half the diameter; box mAP)."),
        expected_particles: float = typer.Option(
            None, "--expected-particles", help="The truth is sparse (only some particles annotated) and "
            "you expect N particles per micrograph: report recall only, and with --picker the recall "
            "of the N best picks per micrograph; precision, F1, IoU, AP and mAP are left out."),
    ) -> None:
        """Pixel IoU, precision, recall, accuracy and F1 of probability maps against true masks.

        With --picker, also picking precision, recall, F1 and AP (radius matching at half the
        particle diameter, at the picker's threshold) and box mAP. With --expected-particles N
        (sparse truth), only recall: pixel recall, and with --picker the recall at the picker's
        threshold and the recall of the N highest-scoring picks of each micrograph.
        """
        from crisp.atomic import write_text_atomic
        from crisp.config import check_output
        from crisp.metrics.pixel import check_threshold, evaluate_folder
        from crisp.workflow.evaluate_run import SPARSE_NOTE, check_expected_particles

        check_threshold(threshold)
        expected_particles = check_expected_particles(expected_particles)
        check_output(output, "file")

        table, pooled = evaluate_folder(prob_dir, dataset, subset=subset, threshold=threshold)
        sparse = expected_particles is not None
        cols = ["micrograph", "recall"] if sparse else ["micrograph", "iou", "precision", "recall",
                                                        "accuracy", "f1"]
        typer.echo(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        typer.echo("pooled: " + ", ".join(f"{k} {pooled[k]:.4f}" for k in cols[1:]))
        data = {"subset": subset, "threshold": threshold, "pooled": pooled,
                "per_micrograph": table.to_dict("records")}
        if sparse:
            data = {"subset": subset, "threshold": threshold, "sparse_truth": True,
                    "expected_particles": expected_particles,
                    "pooled": {k: pooled[k] for k in ("recall", "tp", "fn", "micrographs") if k in pooled},
                    "per_micrograph": table[cols].to_dict("records")}
        if picker is not None:
            from crisp.workflow.evaluate_run import score_maps_picks

            picking, box = score_maps_picks(prob_dir, dataset, table["micrograph"].astype(str), picker,
                                            expected_particles)
            shown = (["recall", "recall_at_n", "picks_per_micrograph", "n_picks_at_threshold", "n_truth"]
                     if sparse else ["precision", "recall", "F1", "AP", "n_picks", "n_truth"])
            typer.echo(f"picking (radius {picking['radius_px']:.4g} px, threshold {picking['threshold']}): "
                       + ", ".join(f"{k} {picking[k]:.4g}" for k in shown)
                       + (f"; box mAP {box['mAP']:.4f}" if box else ""))
            data.update({"picking": picking, **({"box": box} if box else {})})
        if sparse:
            typer.echo(f"not reported: {SPARSE_NOTE}")
        if output is not None:
            write_text_atomic(output, json.dumps(data, indent=2) + "\n")
            typer.echo(f"wrote {output}")
