"""CLI verbs of the labels area (see crisp.cli): ``crisp labels``."""

from __future__ import annotations

from pathlib import Path

import typer

from crisp.commands.common import SCHEDULER, WORKERS, execution


def _projection_threshold(value: str | None) -> float | str | None:
    from crisp.errors import CrispError

    if value is None or value == "li":
        return value
    try:
        return float(value)
    except ValueError:
        raise CrispError("--projection-threshold must be a fraction in (0, 1) or 'li' "
                         f"(got '{value}')") from None


def _check_numbers(radius: float | None, radius_a: float | None, pixel_size: float | None,
                   lowpass_sigma: float | None, window_factor: float, disk_fraction: float,
                   qc_count: int, keep_fraction: float = 1.0, seed: int = 0) -> None:
    from crisp.config import check_number

    check_number(radius, "--radius", gt=0)
    check_number(radius_a, "--radius-A", gt=0)
    check_number(pixel_size, "--pixel-size", gt=0)
    check_number(lowpass_sigma, "--lowpass-sigma", ge=0)
    check_number(window_factor, "--window-factor", ge=1)
    check_number(disk_fraction, "--disk-fraction", gt=0, le=1)
    check_number(qc_count, "--qc-count", ge=0)
    check_number(keep_fraction, "--keep-fraction", gt=0, le=1)
    check_number(seed, "--seed", ge=0)


def _check_background(background: str | None) -> None:
    from crisp.errors import CrispError

    if background is not None and background not in ("all", "none"):
        raise CrispError(f"--background must be 'all' or 'none' (got '{background}')")


def check_radius_fits(micrographs: list[str], radius_px: float | None, radius_a: float | None,
                      pixel_size: float | None) -> None:
    """Refuse a particle whose diameter exceeds the shorter side of a micrograph (read from headers).

    Such a radius is a typo (``--radius 100000``) and would make the disc stencil allocate hundreds of
    GiB; the error names the first micrograph it does not fit and both sizes in pixels.
    """
    from crisp.errors import CrispError
    from crisp.io.micrographs import list_micrographs, read_header_pixel_size, read_micrograph_shape

    if radius_px is None and radius_a is None:
        return
    for path in list_micrographs(micrographs):
        ny, nx = read_micrograph_shape(path)
        if radius_px is not None:
            radius, given = float(radius_px), f"--radius {radius_px:g}"
        else:
            size = pixel_size or read_header_pixel_size(path)
            if not size:
                continue  # make_labels says that the pixel size is missing
            radius, given = float(radius_a) / size, f"--radius-A {radius_a:g} Å at {size:g} Å/px"
        if 2 * radius > min(ny, nx):
            raise CrispError(f"particle radius {radius:.4g} px ({given}) does not fit in the micrograph "
                             f"({nx} x {ny} px): the diameter must be at most its shorter side", path)


LABELS_HELP = (
    "Make training labels from real data: masks from particle coordinates or refined poses.\n\n"
    "Writes OUTPUT/micrographs/NAME.mrc (float32 copy, original resolution), masks/NAME.mrc (uint8 label "
    "map: 1 = particle, 0 = background, 255 = unlabelled), coordinates/NAME.star (centres used), "
    "labels.yaml (every setting) and qc.png (mask outlines and centres over the first micrographs: check "
    "that the centres sit on particles). By default every pixel outside the particles is background (0); "
    "for sparse or incomplete annotations, --background none leaves it unlabelled (255), "
    "--background-coords labels discs around given background positions 0 and the rest 255, and "
    "--keep-fraction F --seed S keeps a seeded subset of each micrograph's particles (sparse training "
    "sets from full annotations). A rerun with the same settings skips micrographs already done; other "
    "settings are refused unless --overwrite. OUTPUT may not be a folder of the inputs."
)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to ``app``."""

    @app.command("labels", help=LABELS_HELP)
    def labels(
        micrographs: list[str] = typer.Option(
            ..., "--micrographs", "-m",
            help="Micrographs: a folder, a glob pattern or files (MRC, TIFF, PNG, JPG); repeatable."),
        output: Path = typer.Option(..., "-o", "--output", help="Dataset folder to write."),
        coords: list[str] = typer.Option(
            None, "--coords", "-c",
            help="Coordinate files or a folder of them (STAR, BOX, Topaz/CryoPPP text or CSV, cryoSPARC "
            ".cs), paired with micrographs by file stem; repeatable. x = column, y = row."),
        method: str = typer.Option("disk", "--method",
                                   help="disk | threshold | reproject (3D mask at refined poses)."),
        radius: float = typer.Option(None, "--radius", help="Particle radius in pixels (e.g. 54)."),
        radius_a: float = typer.Option(None, "--radius-A", help="Particle radius in Å (needs a pixel size)."),
        pixel_size: float = typer.Option(
            None, "--pixel-size", help="Å per pixel; overrides the MRC header (JPG/PNG/TIFF carry none)."),
        flip_y: bool = typer.Option(
            False, "--flip-y", help="Coordinates count rows from the other edge: y -> ny - 1 - y."),
        coord_format: str = typer.Option(
            None, "--coord-format", help="Coordinate file format (default: from the file name and content)."),
        threshold_method: str = typer.Option(
            "li", "--threshold-method",
            help="threshold: li, otsu, yen, triangle, mean, isodata (global in each particle's window) "
            "or local."),
        polarity: str = typer.Option(
            "auto", "--polarity",
            help="threshold: particles dark (raw micrographs), light (inverted renderings) or auto "
            "(decided per particle from the disc and its surrounding ring)."),
        lowpass_sigma: float = typer.Option(
            None, "--lowpass-sigma", help="threshold: Gaussian low-pass sigma in pixels (default radius/8)."),
        window_factor: float = typer.Option(
            2.0, "--window-factor", help="threshold: half-width of each particle's window, in radii."),
        disk_fraction: float = typer.Option(
            1.0, "--disk-fraction", help="disk: disc radius as a fraction of the particle radius (e.g. "
            "0.67 keeps touching particles apart; the picker still gets the full diameter)."),
        particles: Path = typer.Option(
            None, "--particles", help="reproject: RELION particle STAR of a 3D refinement."),
        mask3d: Path = typer.Option(None, "--mask3d", help="reproject: 3D mask or map (MRC)."),
        projection_threshold: str = typer.Option(
            None, "--projection-threshold",
            help="reproject: fraction of each projection's maximum, or 'li' (default 0.5 for a mask, "
            "li for a map)."),
        keep_fraction: float = typer.Option(
            1.0, "--keep-fraction",
            help="Keep a seeded random subset of round(F x n) of each micrograph's n particles (at least 1), "
            "0 < F <= 1: the mask and coordinates/NAME.star hold only these (sparse training sets)."),
        seed: int = typer.Option(
            0, "--seed", "--keep-seed",
            help="Seed of the --keep-fraction subsets; with a hash of the micrograph name, so a "
            "micrograph's subset does not depend on the other micrographs or on --shard."),
        background: str = typer.Option(
            None, "--background",
            help="all (default): every non-particle pixel is background (0); none: only particles are "
            "labelled (1), every other pixel is unlabelled (255). none is implied by --background-coords."),
        background_coords: list[str] = typer.Option(
            None, "--background-coords",
            help="Coordinate files or a folder of them (formats as --coords, paired by file stem) of "
            "positions known to be background: discs of the particle radius around them are labelled 0, "
            "all else not particle 255; particles win on overlap. disk and threshold methods; repeatable."),
        qc_count: int = typer.Option(4, "--qc-count", help="Micrographs shown in qc.png (0: no figure)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every micrograph, also those "
                                       "OUTPUT holds from other settings."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Go on with the other micrographs when "
                                        "one fails (exit 2 at the end, listing the failures)."),
        shard: str = typer.Option(None, "--shard", help="I/N: label only the I-th of N shares of the "
                                  "micrographs (e.g. one cluster job each)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Make training labels from real data (see LABELS_HELP)."""
        from crisp.batch import parse_shard
        from crisp.config import check_output, validate_config
        from crisp.labels import LabelConfig, make_labels

        _check_numbers(radius, radius_a, pixel_size, lowpass_sigma, window_factor, disk_fraction, qc_count,
                       keep_fraction, seed)
        _check_background(background)
        shard_spec = parse_shard(shard)
        check_output(output, "folder")
        if method != "reproject":
            check_radius_fits(micrographs, radius, radius_a, pixel_size)
        values = {
            "method": method, "radius_px": radius, "radius_A": radius_a, "pixel_size": pixel_size,
            "flip_y": flip_y, "coord_format": coord_format, "threshold_method": threshold_method,
            "polarity": polarity, "lowpass_sigma_px": lowpass_sigma, "window_factor": window_factor,
            "disk_fraction": disk_fraction, "qc_count": qc_count, "keep_fraction": keep_fraction,
            "keep_seed": seed, "projection_threshold": _projection_threshold(projection_threshold),
        }
        if background is not None:  # only when given: --background-coords implies none otherwise
            values["background"] = background
        config = validate_config(LabelConfig, values, "command line")
        with execution(workers, scheduler):
            run = make_labels(micrographs, output, config, coordinates=coords or None, particles=particles,
                              mask3d=mask3d, background_coords=background_coords or None, progress=progress,
                              echo=typer.echo, overwrite=overwrite, keep_going=keep_going, shard=shard_spec)
        n_particles = sum(s["n_used"] for s in run.micrographs.values())
        n_annotated = sum(s.get("n_annotated", s["n_used"]) for s in run.micrographs.values())
        kept = f", kept of {n_annotated} annotated" if n_annotated != n_particles else ""
        typer.echo(f"{len(run.made)} micrographs labelled, {len(run.skipped)} already done "
                   f"({n_particles} particles{kept}) in {run.seconds:.1f} s -> {run.out_dir}")
        if run.qc_figure is not None:
            typer.echo(f"check the overlay: {run.qc_figure}")
