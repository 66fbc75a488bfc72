"""CLI verbs that span stages: compare (and later sweep, report, demo)."""

from __future__ import annotations

from pathlib import Path

import typer


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

        cols = [c.strip() for c in columns.split(",")] if columns else None
        table = compare_runs(runs, sort_by=sort_by, ascending=ascending, columns=cols)
        typer.echo(to_markdown(table))
        if output is not None:
            md, csv = write_comparison(table, output)
            typer.echo(f"wrote {md} and {csv}")
