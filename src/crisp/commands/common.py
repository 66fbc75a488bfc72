"""Options shared by every per-micrograph verb: where its batch runs (``--workers``, ``--scheduler``);
and by the verbs that run the network: how it runs (``--max-tile-px``, ``--threads``, ``--backend``,
``--prepare-on``).

``--shard I/N`` stays with each verb (its help names what is sharded). A verb declares

    workers: int | None = WORKERS, scheduler: str | None = SCHEDULER

and runs its library call inside ``with execution(workers, scheduler):``
(:func:`crisp.distributed.execution`), which every :func:`crisp.batch.run_batch` inside obeys.
"""

from __future__ import annotations

import typer

from crisp.distributed import execution

__all__ = ["BACKEND", "DIAMETER_A", "DIAMETER_PX", "MAX_TILE_PX", "PREPARE_ON", "SCHEDULER", "THREADS",
           "WORKERS", "execution"]

WORKERS = typer.Option(None, "--workers", help="Run the micrographs on a local Dask cluster of N worker "
                       "processes (needs Dask: the cluster extra of crisp-em); default: in this process.")
SCHEDULER = typer.Option(None, "--scheduler", help="Run the micrographs on the workers of this Dask "
                         "scheduler, e.g. tcp://node01:8786 from dask-jobqueue (the workers must see "
                         "the same folders).")

# how the network runs, for every verb that runs it (segment, segment-and-pick)
MAX_TILE_PX = typer.Option(None, "--max-tile-px", help="Largest side of one network forward in binned px "
                           "(default: the whole binned micrograph when it fits half the available memory, "
                           "else tiles that do).")
THREADS = typer.Option(None, "--threads", help="torch CPU threads per process (default: the cores this "
                       "process may use).")
BACKEND = typer.Option("auto", "--backend", help="auto | eager | onnx: how the network runs (auto: ONNX "
                       "Runtime on a CPU when installed, crisp-em[onnx]).")

PREPARE_ON = typer.Option("auto", "--prepare-on", help="auto | cpu | device: where each micrograph is binned "
                          "and normalised: cpu (numpy/scipy, the reference), device (PyTorch on the "
                          "network's device, e.g. the GPU; the same maps to float rounding), auto: device "
                          "when the network runs on CUDA, else cpu.")

# the particle diameter, for a diameter-scaled run (a bundled general model; segment, segment-and-pick)
DIAMETER_A = typer.Option(None, "--diameter-A", help="Particle diameter in Å, for a diameter-scaled model "
                          "(general): each micrograph is resampled so that the particle has the model's "
                          "size in pixels (needs the pixel size: header or --pixel-size).")
DIAMETER_PX = typer.Option(None, "--diameter-px", help="Particle diameter in pixels of the micrographs, "
                           "for a diameter-scaled model (instead of --diameter-A; no pixel size needed).")
