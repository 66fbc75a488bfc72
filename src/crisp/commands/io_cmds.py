"""CLI verbs of the io area (see crisp.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's verbs to ``app``."""
