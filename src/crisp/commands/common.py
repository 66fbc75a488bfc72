"""Options shared by every per-micrograph verb: where its batch runs (``--workers``, ``--scheduler``).

``--shard I/N`` stays with each verb (its help names what is sharded). A verb declares

    workers: int | None = WORKERS, scheduler: str | None = SCHEDULER

and runs its library call inside ``with execution(workers, scheduler):``
(:func:`crisp.distributed.execution`), which every :func:`crisp.batch.run_batch` inside obeys.
"""

from __future__ import annotations

import typer

from crisp.distributed import execution

__all__ = ["SCHEDULER", "WORKERS", "execution"]

WORKERS = typer.Option(None, "--workers", help="Run the micrographs on a local Dask cluster of N worker "
                       "processes (needs Dask: the cluster extra of crisp-em); default: in this process.")
SCHEDULER = typer.Option(None, "--scheduler", help="Run the micrographs on the workers of this Dask "
                         "scheduler, e.g. tcp://node01:8786 from dask-jobqueue (the workers must see "
                         "the same folders).")
