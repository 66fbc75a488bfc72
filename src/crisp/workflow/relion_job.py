"""CRISP as a RELION External job: segment and pick every micrograph of a RELION micrographs STAR.

RELION (3.1, and 4/5) runs an External job's program from the project folder as::

    PROGRAM --o External/job010/ --in_mics CtfFind/job003/micrographs_ctf.star [--j N] [--PARAM VALUE ...]

(and may add ``--pipeline_control External/job010/``). :func:`run_relion_job` writes into the job
folder ``--o``::

    External/job010/Movies/NAME_autopick.star   the picks of MotionCorr/job002/Movies/NAME.mrc (folders below
                                                the micrographs' jobNNN/ mirrored, as RELION's AutoPick does)
    External/job010/autopick.star               index (rlnMicrographName, rlnMicrographCoordinates), RELION 4+
    External/job010/coords_suffix_autopick.star RELION 3.1's coordinates node: names the micrographs STAR
    External/job010/RELION_OUTPUT_NODES.star    the output node, so the pipeline offers it to Extract
    External/job010/picker.yaml, crisp-batch.json, .crisp-batch/  the picker and the batch records
    External/job010/crisp_maps/NAME.mrc          the probability maps (float16; kept so a rerun skips them)
    External/job010/RELION_JOB_EXIT_SUCCESS      or RELION_JOB_EXIT_FAILURE (with the error on stderr)

RELION 3.1's Extract job then reads the coordinates with ``--coord_dir External/job010/ --coord_suffix
_autopick.star`` (what the GUI derives from the ``coords_suffix_autopick.star`` node); RELION 4/5's
with ``--coord_list External/job010/autopick.star``. Both runs are resumable: a rerun of the job
skips micrographs whose maps and picks are done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from crisp.errors import CrispError

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
OUTPUT_NODES = "RELION_OUTPUT_NODES.star"
COORDS_SUFFIX_FILE = "coords_suffix_autopick.star"
MAPS_FOLDER = "crisp_maps"
NODE_MIC_COORDS = 2
"""RELION 3.1's pipeline node type of a coordinates node (``coords_suffix_*.star``)."""


@dataclass
class RelionJobResult:
    """What :func:`run_relion_job` wrote: the job folder, picks per micrograph, the index."""

    job_dir: Path
    index_path: Path
    coords_suffix_path: Path
    per_micrograph: dict[str, int] = field(default_factory=dict)

    @property
    def n_picks(self) -> int:
        return int(sum(self.per_micrograph.values()))


def read_micrographs_star(path: str | os.PathLike[str]) -> list[str]:
    """The ``rlnMicrographName`` entries of a RELION micrographs STAR file (3.0 or 3.1+), in order.

    Raises
    ------
    CrispError
        Missing or unreadable file, no table with ``rlnMicrographName``, or no micrographs.
    """
    from crisp.io.coordinates import NAME, read_star_tables

    tables = read_star_tables(path, "micrographs STAR file")
    table = tables.get("micrographs")
    if table is None or NAME not in table.columns:
        table = next((t for t in tables.values() if NAME in t.columns), None)
    if table is None:
        raise CrispError(f"no table with {NAME} (a RELION micrographs STAR such as micrographs_ctf.star "
                         "is expected)", path)
    names = [str(n) for n in table[NAME]]
    if not names:
        raise CrispError("the micrographs STAR file lists no micrographs", path)
    return names


def write_output_nodes(job_dir: Path) -> Path:
    """``RELION_OUTPUT_NODES.star``: the job's coordinates node for RELION 3.1's pipeline."""
    import pandas as pd

    from crisp.io.coordinates import write_star

    nodes = pd.DataFrame({"rlnPipeLineNodeName": [str(job_dir / COORDS_SUFFIX_FILE)],
                          "rlnPipeLineNodeType": [NODE_MIC_COORDS]})
    return write_star({"output_nodes": nodes}, job_dir / OUTPUT_NODES)


def run_relion_job(in_mics: str | os.PathLike[str], job_dir: str | os.PathLike[str],
                   run: str | os.PathLike[str], *, picker: str | os.PathLike[str] | None = None,
                   threshold: float | None = None, threads: int = 1,
                   progress: bool = False) -> RelionJobResult:
    """Segment and pick every micrograph of ``in_mics`` into a RELION External job folder.

    Run it from the RELION project folder (paths in ``in_mics`` are relative to it, as RELION
    writes them). Writes the layout of the module docstring, ending with ``RELION_JOB_EXIT_SUCCESS``;
    on any error it writes ``RELION_JOB_EXIT_FAILURE`` instead and re-raises.

    Parameters
    ----------
    in_mics
        RELION micrographs STAR (``micrographs_ctf.star``, ``corrected_micrographs.star``).
    job_dir
        The job folder (RELION's ``--o``, e.g. ``External/job010/``), relative to the project.
    run
        A trained CRISP run folder.
    picker
        ``picker.yaml`` (default: the run's tuned picker).
    threshold
        Keep picks scoring at least this (default: the picker's tuned threshold; RELION's
        extraction takes every listed pick).
    threads
        CPU threads for the network (RELION's ``--j``).
    progress
        Show progress bars.

    Returns
    -------
    RelionJobResult

    Raises
    ------
    CrispError
        Bad inputs (the micrographs STAR, a micrograph missing, no picker) or failed micrographs.
    """
    job = Path(job_dir)
    job.mkdir(parents=True, exist_ok=True)
    for name in (SUCCESS, FAILURE):
        (job / name).unlink(missing_ok=True)
    try:
        result = _run(Path(in_mics), job, Path(run), picker, threshold, threads, progress)
    except BaseException:
        (job / FAILURE).touch()
        raise
    (job / SUCCESS).touch()
    return result


def _run(in_mics: Path, job: Path, run: Path, picker_path, threshold, threads: int,
         progress: bool) -> RelionJobResult:
    from crisp.atomic import atomic_path
    from crisp.picking.files import pick_files
    from crisp.picking.tune import load_picker
    from crisp.predict import segment_files
    from crisp.run import Run

    if threads < 1:
        raise CrispError(f"--j must be at least 1 (got {threads})")
    micrographs = read_micrographs_star(in_mics)
    missing = [m for m in micrographs if not Path(m).is_file()]
    if missing:
        raise CrispError(f"{len(missing)} micrograph(s) listed are not found from the working folder "
                         f"{Path.cwd()} (run from the RELION project folder), e.g. {missing[0]}", in_mics)
    if picker_path is None:
        picker_path = Run(run).picker_path
        if not Path(picker_path).is_file():
            raise CrispError("the run has no tuned picker (picker.yaml); give one (--picker)", run)
    picker = load_picker(picker_path)
    if threshold is None:
        threshold = picker.threshold
    import torch

    torch.set_num_threads(int(threads))
    maps = segment_files(run, micrographs, job / MAPS_FOLDER, progress=progress)
    picked = pick_files(maps, job, picker, threshold=threshold, micrographs=micrographs, progress=progress)
    coords_suffix = job / COORDS_SUFFIX_FILE
    with atomic_path(coords_suffix) as tmp:  # RELION 3.1: the file names the micrographs STAR
        tmp.write_text(f"{in_mics}\n", encoding="utf-8")
    write_output_nodes(job)
    return RelionJobResult(job_dir=job, index_path=picked.index_path, coords_suffix_path=coords_suffix,
                           per_micrograph=dict(picked.per_micrograph))
