"""CRISP benchmarks: scripts that measure the figures in ``benchmarks/README.md``.

A package, so scripts share helpers by import (``from benchmarks.real_data import ...``) instead of
editing ``sys.path``. Run each one as a module from the repository root::

    python -m benchmarks.suite speed --quick
    python -m benchmarks.picking_speed --repeats 1
"""

#: The repository root: child processes that run ``python -m benchmarks.NAME`` start here.
from pathlib import Path as _Path

REPO = _Path(__file__).resolve().parents[1]
