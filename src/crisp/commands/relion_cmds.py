"""CLI verbs for RELION: ``crisp relion`` (an External job) and ``crisp convert-maps`` (see crisp.cli)."""

from __future__ import annotations

from pathlib import Path

import typer

RELION_HELP = (
    "Run as a RELION External job (from the RELION project folder): segment and pick every micrograph "
    "of --in_mics with a trained run, writing RELION's AutoPick layout into the job folder --o "
    "(NAME_autopick.star files mirroring the micrographs' folders below jobNNN/, autopick.star, "
    "coords_suffix_autopick.star, RELION_OUTPUT_NODES.star) and RELION_JOB_EXIT_SUCCESS or "
    "RELION_JOB_EXIT_FAILURE. In RELION's External job tab: program `crisp relion`, input micrographs, "
    "and the parameters run (and optionally picker, threshold). Extract then with coordinates "
    "External/jobNNN/coords_suffix_autopick.star (RELION 3.1) or autopick.star (RELION 4/5)."
)

CONVERT_MAPS_HELP = (
    "Rewrite probability maps in another MRC storage type: float32 (mode 2; RELION 3.1 reads it), "
    "uint8 (mode 0, round(p * 127)) or float16 (mode 12, as crisp segment writes; RELION 4+ only)."
)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to ``app``."""

    @app.command("relion", help=RELION_HELP)
    def relion_cmd(
        in_mics: Path = typer.Option(..., "--in_mics", "--in-mics", help="RELION micrographs STAR "
                                     "(micrographs_ctf.star or corrected_micrographs.star)."),
        output: Path = typer.Option(..., "--o", "-o", "--output",
                                    help="The job folder, e.g. External/job010/."),
        run: Path = typer.Option(..., "--run", help="A trained CRISP run folder."),
        picker: Path = typer.Option(None, "--picker", help="picker.yaml (default: the run's tuned picker)."),
        threshold: float = typer.Option(None, "--threshold", help="Keep picks scoring at least this "
                                        "(default: the picker's tuned threshold)."),
        threads: int = typer.Option(1, "--j", help="CPU threads (RELION's --j)."),
        pipeline_control: Path = typer.Option(None, "--pipeline_control", hidden=True,
                                              help="Passed by RELION; not used."),
    ) -> None:
        from crisp.config import check_number
        from crisp.workflow.relion_job import run_relion_job

        check_number(threshold, "--threshold", ge=0, le=1)
        check_number(threads, "--j", ge=1)
        result = run_relion_job(in_mics, output, run, picker=picker, threshold=threshold, threads=threads)
        typer.echo(f"{result.n_picks} picks on {len(result.per_micrograph)} micrograph(s); coordinates "
                   f"{result.coords_suffix_path} (RELION 3.1) and {result.index_path} (RELION 4/5)")

    @app.command("convert-maps", help=CONVERT_MAPS_HELP)
    def convert_maps_cmd(
        inputs: Path = typer.Argument(..., metavar="IN", help="Folder of probability maps (or one map)."),
        output: Path = typer.Option(..., "-o", "--output", help="Output folder (NAME.mrc per map)."),
        dtype: str = typer.Option("float32", "--dtype", help="float32, uint8 or float16."),
    ) -> None:
        from crisp.config import check_output
        from crisp.io.stacks import convert_probability_maps

        check_output(output, "folder")
        written = convert_probability_maps(inputs, output, dtype)
        typer.echo(f"{len(written)} map(s) written as {dtype} to {output}")
