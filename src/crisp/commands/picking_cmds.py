"""CLI verbs of the picking area: tune-picker, pick, extract (see crisp.cli)."""

from __future__ import annotations

from pathlib import Path

import typer

from crisp.commands.common import SCHEDULER, WORKERS, execution
from crisp.errors import CrispError


def _validation_maps(source: Path, names: list[str], micrographs: list[Path], subset: str) -> Path:
    """Folder holding NAME.mrc maps for every name: SOURCE itself, a previous segmentation of the
    run's subset, or a fresh one made with crisp.predict.segment_files."""
    from crisp.run import Run

    for folder in (source, Run(source).maps_dir(subset)):
        if folder.is_dir() and all((folder / f"{n}.mrc").is_file() for n in names):
            return folder
    if any((source / f"{n}.mrc").is_file() for n in names):
        missing = [n for n in names if not (source / f"{n}.mrc").is_file()]
        raise CrispError(f"probability maps missing for {len(missing)} {subset} micrograph(s): "
                         f"{', '.join(missing[:5])}", source)
    if not Run(source).config_path.is_file():
        raise CrispError(f"is neither a folder of probability maps of the dataset's {subset} micrographs "
                         "(NAME.mrc) nor a training run directory (no config.yaml)", source)
    try:
        from crisp.predict import segment_files
    except ImportError:
        raise CrispError("is a training run but crisp.predict is not available to segment the "
                         f"{subset} micrographs; segment them first and pass the maps folder",
                         source) from None
    out = source / "probabilities" / subset
    from crisp.models.bundled_names import check_writable

    check_writable(out, "maps (give a folder of maps made with crisp segment -o)")
    typer.echo(f"segmenting {len(micrographs)} {subset} micrograph(s) into {out}")
    segment_files(source, micrographs, out)
    return out


def _tuning_summary(table) -> str:
    """The tuning table as text: finder, its grid setting in one column, the metrics."""
    import json

    setting = table["params"].map(lambda p: " ".join(f"{k}={v}" for k, v in json.loads(p).items()))
    metrics = ["border_fraction", "mAP", "AP50", "AP75", "precision", "recall", "F1", "best_threshold",
               "best_F1", "recall_at_n", "threshold_at_n", "picks_per_micrograph", "n_picks", "n_truth",
               "seconds"]
    metrics = [m for m in metrics if m in table.columns]  # box mAP or, sparse annotation, recall at N
    shown = table[["finder"]].assign(setting=setting).join(table[metrics].round(4))
    return shown.to_string(index=False)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to app."""

    @app.command("tune-picker")
    def tune_picker_cmd(
        source: Path = typer.Argument(..., help="Folder of probability maps NAME.mrc, or a training "
                                      "run directory (maps of the subset made in SOURCE/probabilities/)."),
        dataset: Path = typer.Argument(..., help="Dataset folder with coordinates/ and split.yaml."),
        output: Path = typer.Option(..., "-o", "--output", help="picker.yaml to write (the table of every "
                                    "setting tried goes beside it as <stem>_tuning.csv)."),
        diameter: float = typer.Option(None, "--diameter", help="Particle diameter in pixels (default: "
                                       "diameter_px of DATASET/simulation.yaml or labels.yaml)."),
        subset: str = typer.Option("val", "--subset", help="Split subset to tune on: train, val or test."),
        finders: str = typer.Option(None, "--finders", help="Comma-separated finders to try (default all)."),
        expected_particles: float = typer.Option(
            None, "--expected-particles", help="The subset's annotation is sparse (only some particles "
            "annotated) and you expect N particles per micrograph: choose by the recall of the N "
            "best picks per micrograph instead of box mAP; the threshold keeps about N picks."),
    ) -> None:
        """Choose the centre finder and its parameters by box mAP on validation micrographs.

        With --expected-particles N (sparse annotation, where precision cannot be measured), by the
        recall of the annotated centres among the N highest-scoring picks of each micrograph (radius
        matching at half the diameter); the threshold is the median score of the N-th pick.
        """
        from crisp.config import check_number, check_output
        from crisp.workflow.evaluate_run import check_expected_particles

        check_number(diameter, "--diameter", gt=0)
        expected_particles = check_expected_particles(expected_particles)
        check_output(output, "file")
        from crisp.dataset import DatasetFolder, dataset_diameter_px, read_true_centres
        from crisp.io.micrographs import median_pixel_size
        from crisp.picking.files import read_map
        from crisp.picking.tune import tune_picker, write_tuning

        folder = DatasetFolder.open(dataset)
        names = folder.subset(subset)
        if diameter is None:
            diameter = dataset_diameter_px(folder.root)
            if diameter is None:
                raise CrispError("no diameter_px in simulation.yaml or labels.yaml: give --diameter",
                                 folder.root)
        truth = read_true_centres(folder.root, names)
        maps_dir = _validation_maps(source, names, [folder.micrograph(n) for n in names], subset)
        prob_maps = {name: read_map(maps_dir / f"{name}.mrc") for name in names}
        chosen = [f.strip() for f in finders.split(",") if f.strip()] if finders else None
        config, table = tune_picker(prob_maps, truth, diameter, finders=chosen,
                                    pixel_size=median_pixel_size([maps_dir / f"{n}.mrc" for n in names]),
                                    source=maps_dir, expected_particles=expected_particles)
        yaml_path, csv_path = write_tuning(config, table, output)
        typer.echo(_tuning_summary(table))
        if expected_particles is None:
            score = (f"mAP {config.validation['mAP']:.4f}; F1-maximising threshold {config.threshold}")
        else:
            score = (f"recall at {expected_particles:g} picks per micrograph "
                     f"{config.validation['recall_at_n']:.4f}; threshold {config.threshold} (median score "
                     f"of the {expected_particles:g}-th pick; precision is not measurable on sparse "
                     "annotations)")
        typer.echo(f"best: {config.finder} {config.params}, edge margin {config.border_fraction:g} "
                   f"diameters, {score}")
        typer.echo(f"wrote {yaml_path} and {csv_path}")

    @app.command("pick")
    def pick_cmd(
        prob_maps: Path = typer.Argument(..., help="Folder of probability maps NAME.mrc (or one map)."),
        output: Path = typer.Option(..., "-o", "--output", help="PICKS_DIR: NAME_autopick.star files and "
                                    "an autopick.star index (RELION 4/5 layout)."),
        picker: Path = typer.Option(..., "--picker", help="picker.yaml from `crisp tune-picker`, or a "
                                    "run folder or bundled model name (e.g. general): its picker.yaml."),
        diameter_A: float = typer.Option(None, "--diameter-A", help="Particle diameter in Å (with the maps' "
                                         "pixel size): replaces the picker's; needed with a bundled "
                                         "model's picker."),
        diameter_px: float = typer.Option(None, "--diameter-px", help="Particle diameter in pixels of the "
                                          "maps (replaces the picker's)."),
        threshold: float = typer.Option(None, "--threshold", help="Drop candidates scoring below it "
                                        "(default: keep all; apply it later with `crisp extract`)."),
        formats: str = typer.Option("star", "--format", help="Comma-separated: star, box, txt (Topaz), "
                                    "csv (CryoPPP); star is always written."),
        micrographs: Path = typer.Option(None, "--micrographs", help="Folder of the micrographs: their "
                                         "paths become rlnMicrographName; map sizes are checked."),
        box_size: float = typer.Option(None, "--box-size", help="Box size of .box files in pixels "
                                       "(default: the particle diameter)."),
        border_fraction: float = typer.Option(None, "--border-fraction", help="Drop picks closer "
                                              "than this many particle diameters to a micrograph edge "
                                              "(default: the picker's tuned value)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every micrograph, also when "
                                       "OUTPUT holds picks made with other settings."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Go on after a micrograph fails "
                                        "(failures are listed at the end, exit 2)."),
        shard: str = typer.Option(None, "--shard", help="I/N: pick only the I-th of N shares of the maps "
                                  "(shards may run at the same time into one OUTPUT)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
    ) -> None:
        """Pick particles in probability maps with a tuned picker."""
        from crisp.config import check_number, check_output
        from crisp.picking.files import pick_files

        check_number(threshold, "--threshold", ge=0, le=1)
        check_number(border_fraction, "--border-fraction", ge=0, le=10)
        check_number(box_size, "--box-size", gt=0)
        check_output(output, "folder")
        from crisp.models.bundled_names import picker_path
        from crisp.picking.tune import load_picker

        config = load_picker(picker_path(picker))
        if border_fraction is not None:
            config = config.model_copy(update={"border_fraction": border_fraction})
        from crisp.batch import parse_shard

        with execution(workers, scheduler):
            result = pick_files(prob_maps, output, config, threshold=threshold, formats=formats.split(","),
                                micrographs=micrographs, box_size_px=box_size, overwrite=overwrite,
                                keep_going=keep_going, shard=parse_shard(shard), diameter_A=diameter_A,
                                diameter_px=diameter_px)
        typer.echo(f"{result.n_picks} picks on {len(result.per_micrograph)} micrograph(s) "
                   f"({result.skipped_existing} done before) with {config.finder}; index {result.index_path}")
        if threshold is None and config.threshold is not None:
            kind = ("F1-maximising" if config.expected_particles is None else
                    f"about-{config.expected_particles:g}-per-micrograph (sparse annotation)")
            typer.echo(f"all candidates kept; the picker's {kind} threshold is {config.threshold:.4g} "
                       "(`crisp extract` applies it by default)")

    @app.command("extract")
    def extract_cmd(
        micrographs: Path = typer.Argument(..., help="Folder of micrographs (or one micrograph)."),
        picks: Path = typer.Argument(..., help="PICKS_DIR from `crisp pick` (its autopick.star), an index "
                                     "or coordinate STAR file, or a folder of coordinate files."),
        output: Path = typer.Option(..., "-o", "--output", help="Folder for particles.star and Particles/."),
        box: int = typer.Option(256, "--box", help="Box size in pixels of the micrograph (even)."),
        bin_factor: int = typer.Option(1, "--bin", help="Binning of the extracted images (Fourier crop)."),
        invert: bool = typer.Option(True, "--invert/--no-invert", help="Invert the contrast: white "
                                    "particles, as RELION 3D needs (RELION's --invert_contrast; default). "
                                    "--no-invert keeps the micrographs' contrast."),
        threshold: float = typer.Option(None, "--threshold", help="Keep picks scoring at least this "
                                        "(default: PICKS_DIR/picker.yaml's threshold if present, else all)."),
        pixel_size: float = typer.Option(None, "--pixel-size", help="Å per pixel (default: MRC header)."),
        voltage: float = typer.Option(300.0, "--voltage", help="Acceleration voltage in kV."),
        cs: float = typer.Option(2.7, "--cs", help="Spherical aberration in mm."),
        amplitude_contrast: float = typer.Option(0.1, "--amplitude-contrast", help="Amplitude contrast."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every stack, also when OUTPUT "
                                       "holds stacks made with other settings or picks."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Go on after a micrograph fails "
                                        "(failures are listed at the end, exit 2)."),
        shard: str = typer.Option(None, "--shard", help="I/N: extract only the I-th of N shares of the "
                                  "micrographs (shards may run at the same time into one OUTPUT)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        project_dir: Path = typer.Option(Path("."), "--project-dir", help="The folder RELION runs in "
                                         "(its project folder): rlnImageName and rlnMicrographName are "
                                         "written relative to it. Default: the working folder."),
    ) -> None:
        """Extract particle images into .mrcs stacks with a RELION 3.1+ particles.star.

        Boxes are cut and normalised exactly as RELION 3.1's extraction with --norm --no_ramp
        (and --invert_contrast unless --no-invert); boxes leaving the micrograph are skipped.
        """
        from crisp.config import check_number, check_output
        from crisp.io.stacks import extract_particles

        check_number(box, "--box", gt=0)
        check_number(bin_factor, "--bin", ge=1)
        check_number(threshold, "--threshold")
        check_number(pixel_size, "--pixel-size", gt=0)
        check_number(voltage, "--voltage", gt=0)
        check_number(cs, "--cs", ge=0)
        check_number(amplitude_contrast, "--amplitude-contrast", ge=0, lt=1)
        check_output(output, "folder")

        table, picker_yaml = _read_picks(picks)
        if threshold is None and picker_yaml is not None:
            from crisp.config import read_yaml

            threshold = read_yaml(picker_yaml).get("threshold")
            if threshold is not None:
                typer.echo(f"threshold {threshold:.4g} from {picker_yaml} (give --threshold to change)")
        from crisp.batch import parse_shard

        shard_spec = parse_shard(shard)
        with execution(workers, scheduler):
            result = extract_particles(micrographs, table, output, box, bin_factor=bin_factor, invert=invert,
                                       threshold=threshold, pixel_size=pixel_size, voltage=voltage, cs=cs,
                                       amplitude_contrast=amplitude_contrast, overwrite=overwrite,
                                       keep_going=keep_going, shard=shard_spec,
                                       input_dirs=[picks] if picks.is_dir() else [], project_dir=project_dir)
        typer.echo(f"{result.n_particles} particles from {len(result.per_micrograph)} micrograph(s) -> "
                   f"{result.star_path}; skipped: {result.n_outside} boxes leaving the micrograph, "
                   f"{result.n_below_threshold} below the threshold, {result.n_unmatched_picks} picks "
                   "without a micrograph")


def _read_picks(picks: Path):
    """Picks table from a PICKS_DIR, an index, a coordinate file or a folder of coordinate files;
    also the PICKS_DIR's picker.yaml when there is one."""
    import pandas as pd

    from crisp.io.coordinates import list_coordinate_files, read_autopick, read_coordinates

    picker_yaml = None
    if picks.is_dir():
        picker_yaml = picks / "picker.yaml" if (picks / "picker.yaml").is_file() else None
        if (picks / "autopick.star").is_file():
            return read_autopick(picks / "autopick.star"), picker_yaml
        files = list_coordinate_files(picks, expand_index=True)
        return pd.concat([read_coordinates(f) for f in files], ignore_index=True), picker_yaml
    if not picks.is_file():
        raise CrispError("no such file or folder", picks)
    head = picks.read_text(encoding="utf-8", errors="replace")[:4096]
    if "_rlnMicrographCoordinates" in head:
        return read_autopick(picks), picker_yaml
    return read_coordinates(picks), picker_yaml
