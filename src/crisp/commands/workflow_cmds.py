"""CLI verbs that span stages: compare, sweep, report, demo."""

from __future__ import annotations

from pathlib import Path

import typer

DEMO_HELP = (
    "The whole workflow on synthetic data: simulate, train CNN and CNN+CD-CRF, pick, report.\n\n"
    "Every stage's output stays in the project folder (synthetic/, runs/cnn, runs/cdcrf, probabilities/, "
    "picks/, particles/, report/index.html, results.md); a rerun skips finished stages. Under 10 minutes "
    "on 2 CPU cores, about 1 minute when they are free (--quick: under 3, about half a minute).")
SWEEP_HELP = (
    "Train and evaluate one run per point of a grid of training settings; print the comparison.\n\n"
    "The YAML names the dataset and out folder (relative to the YAML's folder), a preset, base settings, "
    "the grid (any training setting; dotted keys such as crf.kind), the subset to evaluate on "
    "(evaluate: test) and optionally picker: tune or a picker.yaml. Finished runs are skipped; "
    "OUT/comparison.md and OUT/comparison.csv are written at the end.")
BUILD_HELP = (
    "Build CRISP's general model: simulate the corpus (crisp simulate-corpus), train at 28 px per particle "
    "diameter, tune the picker on simulated validation micrographs, score the simulated test ones and "
    "export the bundled model (float16 weights, picker.yaml, MODEL_CARD.md).\n\n"
    "Resumable: a rerun skips finished stages and resumes training from its last checkpoint.")


def register(app: typer.Typer) -> None:
    """Add this area's verbs to ``app``."""

    @app.command("compare")
    def compare(
        runs: list[Path] = typer.Argument(..., help="Run directories to compare."),
        sort_by: str = typer.Option(None, "--sort-by", help="Column to sort by, best first."),
        ascending: bool = typer.Option(False, "--ascending", help="Sort smallest first."),
        columns: str = typer.Option(None, "--columns", help="Comma-separated columns to show."),
        output: Path = typer.Option(None, "-o", "--output",
                                    help="Write OUTPUT.md and OUTPUT.csv (prefix; suffix ignored)."),
    ) -> None:
        """One table of runs' settings, test metrics and parameter counts (printed, Markdown, CSV)."""
        from crisp.compare import compare_runs, to_markdown, write_comparison
        from crisp.config import check_output

        check_output(output, "file")
        cols = [c.strip() for c in columns.split(",")] if columns else None
        table = compare_runs(runs, sort_by=sort_by, ascending=ascending, columns=cols)
        typer.echo(to_markdown(table))
        if output is not None:
            md, csv = write_comparison(table, output)
            typer.echo(f"wrote {md} and {csv}")

    @app.command("demo", help=DEMO_HELP)
    def demo(
        output: Path = typer.Option(Path("crisp-demo"), "-o", "--output", help="Project folder."),
        quick: bool = typer.Option(False, "--quick", help="Smaller sizes (under 3 minutes); every stage."),
        seed: int = typer.Option(0, "--seed", help="Seed of simulation, split, training and picking."),
        force: bool = typer.Option(False, "--force", help="Redo every stage (default: skip finished ones)."),
        progress: bool = typer.Option(False, "--progress", help="Show each stage's progress bars too."),
        tiny: bool = typer.Option(False, "--tiny", hidden=True, help="Minimal sizes (tests only)."),
    ) -> None:
        """The whole workflow on synthetic data: simulate, train CNN and CNN+CD-CRF, pick, report."""
        import warnings

        from crisp.compare import to_markdown
        from crisp.config import check_output
        from crisp.workflow.demo import run_demo

        check_output(output, "folder")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*")
            _quiet_lightning()
            result = run_demo(output, quick=quick, tiny=tiny, seed=seed, force=force, progress=progress,
                              echo=typer.echo)
        typer.echo("")
        typer.echo(to_markdown(result.table))
        project = result.project
        typer.echo(f"picks (RELION AutoPick): {project / 'picks' / 'cdcrf' / 'autopick.star'}")
        typer.echo(f"particles: {project / 'particles' / 'particles.star'}")
        typer.echo(f"compare: crisp compare {project / 'runs' / 'cnn'} {project / 'runs' / 'cdcrf'}")
        typer.echo(f"report: {result.report}")
        typer.echo(f"project folder: {project} ({result.wall_s:.0f} s)")

    @app.command("sweep", help=SWEEP_HELP)
    def sweep(
        grid: Path = typer.Argument(..., help="Sweep file (YAML)."),
        progress: bool = typer.Option(False, "--progress", help="Show training progress bars."),
    ) -> None:
        """Train and evaluate one run per point of a grid of training settings; print the comparison."""
        from crisp.compare import to_markdown
        from crisp.workflow.sweep import load_sweep, run_sweep

        plan = load_sweep(grid)  # validates every grid point before anything runs
        typer.echo(f"{len(plan.runs)} run(s) in {plan.out}")
        _quiet_lightning()
        table = run_sweep(grid, progress=progress, echo=typer.echo)
        typer.echo(to_markdown(table))
        typer.echo(f"wrote {plan.out / 'comparison.md'} and {plan.out / 'comparison.csv'}")

    @app.command("build-general-model", help=BUILD_HELP)
    def build_general_model(
        output: Path = typer.Option(..., "-o", "--output", help="Build folder (corpus, run, maps)."),
        export: Path = typer.Option(None, "--export", help="Write the bundled model folder here "
                                    "(the package's is src/crisp/data/models/general)."),
        seed: int = typer.Option(0, "--seed", help="Seed of corpus, split and training."),
        count: int = typer.Option(None, "--count", help="Simulated micrographs (default 360)."),
        epochs: int = typer.Option(None, "--epochs", help="Training epochs (default 5)."),
        threads: int = typer.Option(None, "--threads", help="Torch threads (default: all the cores)."),
        card_extra: Path = typer.Option(None, "--card-extra", help="Markdown appended to the model card."),
        force: bool = typer.Option(False, "--force", help="Redo every stage (default: skip finished ones)."),
        progress: bool = typer.Option(False, "--progress", help="Show each stage's progress bars."),
        tiny: bool = typer.Option(False, "--tiny", hidden=True, help="Minimal sizes (tests only)."),
    ) -> None:
        """Simulate the corpus, train, tune the picker and export CRISP's general model (resumable)."""
        import warnings

        from crisp.config import check_output
        from crisp.workflow.general_model import build_general_model as build

        check_output(output, "folder")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*")
            _quiet_lightning()
            run = build(output, export_to=export, size="tiny" if tiny else "full", force=force,
                        progress=progress, card_extra=card_extra, echo=typer.echo, seed=seed, count=count,
                        epochs=epochs, threads=threads)
        typer.echo(f"run: {run}")
        if export is not None:
            typer.echo(f"bundled model: {export}")

    @app.command("report")
    def report(
        inputs: list[Path] = typer.Argument(..., help="Run directories, demo projects or sweep folders."),
        output: Path = typer.Option(Path("report"), "-o", "--output", help="Report folder (index.html)."),
        subset: str = typer.Option("test", "--subset", help="Which evaluation to show "
                                   "(RUN/evaluation/SUBSET.json)."),
        title: str = typer.Option("CRISP report", "--title", help="Page title."),
    ) -> None:
        """A static HTML page with figures (picks, overlays, histograms, curves) and metric tables."""
        from crisp.config import check_output
        from crisp.workflow.report_builder import build_report

        check_output(output, "folder")
        page = build_report(inputs, output, subset=subset, title=title)
        typer.echo(f"report: {page}")


def _quiet_lightning() -> None:
    """Keep Lightning's start-up notices (GPU/TPU availability, tips) out of the stage lines."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
