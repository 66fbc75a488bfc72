"""Kill a `crisp` command with SIGKILL part-way through a batch, for the interruption tests.

:func:`run_killed` starts ``python -m crisp.cli ARGS`` (or any argv), waits until the output folder
holds ``after`` finished item records (:mod:`crisp.batch`), kills the process with SIGKILL and
returns. The test then reruns the same command and compares the outputs with an uninterrupted run
(:func:`same_outputs`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from crisp.batch import MANIFEST, STATE_DIR


def crisp_argv(*args: str) -> list[str]:
    """argv that runs the crisp CLI in this interpreter."""
    return [sys.executable, "-c", "import sys; from crisp.cli import main; sys.exit(main(sys.argv[1:]))",
            *map(str, args)]


def run_killed(argv: list[str], out_dir: Path, after: int, timeout_s: float = 300.0) -> int:
    """Run ``argv``; SIGKILL it once ``out_dir`` holds ``after`` done item records.

    Returns the number of records seen when it was killed (the process may have finished first,
    in which case the test learns nothing: it should assert the returned count is below the total).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = Path(out_dir) / STATE_DIR / "items"
    deadline = time.monotonic() + timeout_s
    seen = 0
    while proc.poll() is None and time.monotonic() < deadline:
        seen = len(list(records.glob("*.json"))) if records.is_dir() else 0
        if seen >= after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    return seen


def output_files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every output file (not the batch's own bookkeeping)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and STATE_DIR not in p.parts and p.name != MANIFEST}


_MRC_LABELS = slice(224, 1024)  # the MRC header's ten 80-byte text labels (mrcfile stamps its write time)
_STARFILE_STAMP = re.compile(rb"# Created by the starfile Python package[^\n]*\n")


def output_data(folder: Path, rename: bool = False) -> dict[str, bytes]:
    """:func:`output_files` without the write times that mrcfile and starfile put into every file.

    An MRC file's text labels (header bytes 224-1024: "Created by mrcfile.py  DATE TIME") and a STAR
    file's "# Created by the starfile Python package ... at TIME on DATE" line are blanked; every other
    byte (the data, the rest of the header) is compared. Two runs a second apart compare equal when
    their data are. ``rename`` replaces the folder's own path inside the files by ``OUT`` (an index
    lists paths under the folder as given), so two folders can be compared.
    """
    found = {}
    for name, data in output_files(folder).items():
        if name.endswith((".mrc", ".mrcs")) and len(data) >= 1024:
            start, stop = _MRC_LABELS.start, _MRC_LABELS.stop
            data = data[:start] + bytes(stop - start) + data[stop:]
        elif name.endswith(".star"):
            data = _STARFILE_STAMP.sub(b"", data)
        found[name] = data.replace(str(folder).encode(), b"OUT") if rename else data
    return found


def leftover_temporaries(folder: Path) -> list[str]:
    """Temporary files or folders left in ``folder`` (should be none after a completed run)."""
    folder = Path(folder)
    tmp = folder / STATE_DIR / "tmp"
    left = [str(p) for p in folder.rglob("*") if ".part" in p.name]
    if tmp.is_dir():
        left += [str(p) for p in tmp.iterdir()]
    return left
