"""CLI verb of fast inference: segment-and-pick (see crisp.cli)."""

from __future__ import annotations

from pathlib import Path

import typer

from crisp.commands.common import (
    BACKEND,
    DIAMETER_A,
    DIAMETER_PX,
    MAX_TILE_PX,
    PREPARE_ON,
    SCHEDULER,
    THREADS,
    WORKERS,
    execution,
)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to app."""

    @app.command("segment-and-pick")
    def segment_and_pick(
        run_dir: Path = typer.Argument(..., help="Training run directory, or a bundled model's name "
                                       "(general)."),
        micrographs: list[Path] = typer.Argument(..., help="Micrograph files or folders."),
        output: Path = typer.Option(..., "-o", "--output", help="PICKS_DIR: coordinate files as `crisp pick` "
                                    "writes them (NAME_autopick.star, autopick.star index, picker.yaml)."),
        picker: Path = typer.Option(None, "--picker", help="picker.yaml (default: RUN_DIR/picker.yaml "
                                    "from `crisp tune-picker`)."),
        threshold: float = typer.Option(None, "--threshold", help="Drop candidates scoring below it "
                                        "(default: keep all; apply it later with `crisp extract`)."),
        formats: str = typer.Option("star", "--format", help="Comma-separated: star, box, txt (Topaz), "
                                    "csv (CryoPPP); star is always written."),
        box_size: float = typer.Option(None, "--box-size", help="Box size of .box files in pixels "
                                       "(default: the particle diameter)."),
        save_maps: str = typer.Option(None, "--save-maps", help="Also write OUTPUT/maps/NAME.mrc: 'grid' "
                                      "(the network's grid) or 'full' (the micrograph's size)."),
        pixel_size: float = typer.Option(None, "--pixel-size", help="Pixel size in Å (overrides headers)."),
        diameter_A: float = DIAMETER_A,
        diameter_px: float = DIAMETER_PX,
        tta: bool = typer.Option(None, "--tta/--no-tta", help="Average the 8 flips and rotations (8x the "
                                 "time; default: the run's tta setting)."),
        max_tile_px: int = MAX_TILE_PX,
        threads: int = THREADS,
        backend: str = BACKEND,
        prepare_on: str = PREPARE_ON,
        prefetch: bool = typer.Option(None, "--prefetch/--no-prefetch", help="Read and bin the next "
                                      "micrograph while the network works (default: on, off with --workers "
                                      "or --scheduler)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every micrograph, also when "
                                       "OUTPUT holds outputs made with other settings."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Record a failing micrograph and go on "
                                        "with the others (exit 2 at the end)."),
        shard: str = typer.Option(None, "--shard", help="I/N: only the I-th of N shares of the micrographs "
                                  "(shards may run at once into one OUTPUT)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Segment and pick each micrograph in one pass (no full-size map unless --save-maps)."""
        from crisp.batch import parse_shard
        from crisp.config import check_number, check_output
        from crisp.errors import CrispError
        from crisp.inference.segment_pick import segment_and_pick_files
        from crisp.picking.tune import load_picker

        check_number(threshold, "--threshold", ge=0, le=1)
        check_number(box_size, "--box-size", gt=0)
        check_number(pixel_size, "--pixel-size", gt=0)
        check_number(max_tile_px, "--max-tile-px", ge=1)
        check_number(threads, "--threads", ge=1)
        if save_maps is not None and save_maps not in ("grid", "full"):
            raise CrispError(f"--save-maps must be grid or full (got {save_maps!r})")
        check_output(output, "folder")
        from crisp.models.bundled_names import picker_path

        config = load_picker(picker_path(picker)) if picker is not None else None
        with execution(workers, scheduler):
            result = segment_and_pick_files(
                run_dir, micrographs, output, picker=config, threshold=threshold, formats=formats.split(","),
                box_size_px=box_size, save_maps=save_maps, pixel_size=pixel_size, tta=tta,
                max_tile_px=max_tile_px, threads=threads, backend=backend, prefetch=prefetch,
                prepare_on=prepare_on,
                overwrite=overwrite, keep_going=keep_going,
                shard=parse_shard(shard), progress=not no_progress, diameter_A=diameter_A,
                diameter_px=diameter_px)
        typer.echo(f"{result.n_picks} picks on {len(result.per_micrograph)} micrograph(s) "
                   f"({result.skipped_existing} done before); index {result.index_path}")
