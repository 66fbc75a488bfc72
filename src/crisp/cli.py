"""The ``crisp`` command: one Typer app; each verb parses options and calls the library.

Verbs live in :mod:`crisp.commands`, one module per area, each exposing ``register(app)``.
Heavy libraries (torch, aspire) are imported inside the verbs, so ``crisp --help`` stays fast.
Every :class:`~crisp.errors.CrispError` is printed without a traceback and exits with status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from crisp import __version__
from crisp.errors import CrispError

COMMAND_MODULES = (
    "crisp.commands.io_cmds",
    "crisp.commands.data_cmds",
    "crisp.commands.segmentation_cmds",
    "crisp.commands.picking_cmds",
    "crisp.commands.inference_cmds",
    "crisp.commands.labels_cmds",
    "crisp.commands.workflow_cmds",
    "crisp.commands.relion_cmds",
)

app = typer.Typer(
    name="crisp",
    help="CRISP: segment cryo-EM micrographs at the pixel level and pick particles from the "
    "segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"crisp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True,
        help="Print the version and exit."),
) -> None:
    """CRISP: cryo-EM image segmentation and processing with a conditional random field."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


try:  # typer >= 0.24 vendors click; older releases use click itself
    from typer._click.exceptions import UsageError as _USAGE_ERRORS
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError as _USAGE_ERRORS
_ABORT = typer.Abort


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (2 for a :class:`CrispError` or a usage error)."""
    try:
        code = app(args=argv, prog_name="crisp", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except _USAGE_ERRORS as err:  # a bad option or argument: one line, like every other bad input
        if type(err).__name__ == "NoArgsIsHelpError":  # `crisp` or `crisp GROUP` alone: the help
            err.show()
            return 2
        verb = err.ctx is not None and err.ctx.parent is not None
        where = f"crisp {err.ctx.info_name}" if verb else "crisp"
        message = " ".join(err.format_message().split())
        typer.echo(f"error: {where}: {message} (see '{where} --help')", err=True)
        return 2
    except _ABORT:
        typer.echo("interrupted: completed outputs are kept; rerun to resume", err=True)
        return 130
    except CrispError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted: completed outputs are kept; rerun to resume", err=True)
        return 130
    return code if isinstance(code, int) else 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
