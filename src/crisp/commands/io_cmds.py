"""CLI verbs of the io area (see crisp.cli): ``crisp convert`` and ``crisp match``."""

from __future__ import annotations

from pathlib import Path

import typer

CONVERT_HELP = (
    "Convert particle coordinates between formats: RELION STAR (3.0, 3.1+ with optics, autopick.star "
    "index), EMAN .box, Topaz .txt, CryoPPP .csv, cryoSPARC .cs (read only).\n\n"
    "INPUT is a file, a folder of files or a glob pattern. OUTPUT is a file (all picks in it; format "
    "from its extension or --to) or a folder: one file per micrograph, and for STAR the RELION AutoPick "
    "layout (NAME_autopick.star files plus autopick.star). x = column, y = row of the micrograph in "
    "pixels; --flip-y counts rows from the other edge (y -> ny - 1 - y) with each micrograph's height "
    "(--micrograph-shape, --micrographs, or a .cs file's own shapes), and refuses picks outside that "
    "height. A RELION 3.1 input keeps its optics table in a .star output unless --star-version 3.0. "
    "EMAN .box output has integer corners."
)

MATCH_HELP = (
    "Pair micrographs with coordinate files by name (folder, extension, pick suffixes such as "
    "_autopick and cryoSPARC UID prefixes ignored) and report the pairs and the files left over."
)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to ``app``."""

    @app.command("convert", help=CONVERT_HELP)
    def convert(
        inputs: str = typer.Argument(..., metavar="INPUT", help="Coordinate file, folder or glob pattern."),
        output: Path = typer.Argument(..., metavar="OUTPUT", help="Output file or folder."),
        to: str = typer.Option(None, "--to",
                               help="Output format: star, box, txt (Topaz), csv (CryoPPP); default from "
                               "OUTPUT's extension, star for a folder."),
        input_format: str = typer.Option(None, "--from",
                                         help="Input format (default: from each file's extension)."),
        box_size: float = typer.Option(None, "--box-size",
                                       help="Box size in pixels (needed for .box; the Diameter of .csv)."),
        flip: bool = typer.Option(False, "--flip-y",
                                  help="Count rows from the other edge: y -> ny - 1 - y (needs "
                                  "--micrograph-shape or --micrographs)."),
        micrograph_shape: tuple[int, int] = typer.Option(
            None, "--micrograph-shape", metavar="NY NX",
            help="Micrograph height and width in pixels (for --flip-y)."),
        micrographs: str = typer.Option(
            None, "--micrographs",
            help="Micrographs (folder or glob): heights for --flip-y, and their paths become "
            "rlnMicrographName in STAR outputs."),
        star_version: str = typer.Option(
            None, "--star-version", metavar="3.0|3.1",
            help="RELION STAR table for a .star file output: 3.1 (optics block + particles; the default "
            "when the inputs have an optics table) or 3.0 (one table, optics values per particle)."),
    ) -> None:
        from crisp.errors import CrispError
        from crisp.io.coordinates import convert_coordinates

        shape = None if not micrograph_shape else (int(micrograph_shape[0]), int(micrograph_shape[1]))
        if shape is not None and (shape[0] <= 0 or shape[1] <= 0):
            raise CrispError(f"--micrograph-shape must be two positive numbers of pixels (got {shape})")
        written = convert_coordinates(inputs, output, to, input_format=input_format, box_size=box_size,
                                      flip=flip, micrograph_shape=shape, micrographs=micrographs,
                                      star_version=star_version)
        shown = written[0] if len(written) == 1 else f"{len(written)} files under {output}"
        typer.echo(f"wrote {shown}")

    @app.command("match", help=MATCH_HELP)
    def match(
        micrographs: str = typer.Argument(..., help="Micrographs: folder, glob pattern or file."),
        coordinates: str = typer.Argument(..., help="Coordinate files: folder, glob pattern or file."),
    ) -> None:
        from crisp.errors import CrispError
        from crisp.io.coordinates import match_coordinates

        result = match_coordinates(micrographs, coordinates)
        typer.echo(result.report())
        if not result.pairs:
            raise CrispError("no micrograph matches any coordinate file by name")
