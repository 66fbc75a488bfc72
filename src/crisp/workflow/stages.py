"""A tiny stage runner: named steps that are skipped when their output exists, with timing."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crisp.errors import CrispError


@dataclass
class Stage:
    """One step of a workflow.

    Attributes
    ----------
    name
        Shown in the progress lines.
    done
        True when the stage's output is complete (the stage is then skipped).
    run
        Does the work (resumable: it may find part of its output already there).
    """

    name: str
    done: Callable[[], bool]
    run: Callable[[], object]


def changed_settings(path: str | os.PathLike[str], settings) -> list[str]:
    """The keys whose values differ between the settings file ``path`` (YAML, written by an earlier
    run of a workflow) and ``settings`` (a config model); empty when the file does not exist."""
    from crisp.config import read_yaml, to_plain

    if not Path(path).is_file():
        return []
    previous, current = read_yaml(path), to_plain(settings)
    return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))


def run_stages(stages: list[Stage], *, echo: Callable[[str], None] = print) -> dict[str, float | None]:
    """Run the stages in order; return seconds per stage (None when skipped).

    Each stage prints ``[k/n] NAME ...`` and then either ``done (12.3 s)`` or ``skipped (done before)``.
    """
    timings: dict[str, float | None] = {}
    total = time.perf_counter()
    for k, stage in enumerate(stages, start=1):
        prefix = f"[{k}/{len(stages)}] {stage.name}"
        if stage.done():
            echo(f"{prefix}: skipped (done before)")
            timings[stage.name] = None
            continue
        echo(f"{prefix} ...")
        start = time.perf_counter()
        stage.run()
        if not stage.done():
            raise CrispError(f"stage '{stage.name}' finished without its output")
        timings[stage.name] = time.perf_counter() - start
        echo(f"{prefix}: done in {timings[stage.name]:.1f} s (total {time.perf_counter() - total:.1f} s)")
    return timings


def remove_run_dir(path: str | os.PathLike[str]) -> None:
    """Delete a training run directory (refuses folders that do not look like one)."""
    from crisp.run import RUN_MARKERS

    path = Path(path)
    if not path.exists():
        return
    contents = {p.name for p in path.iterdir()}
    if contents and not contents & set(RUN_MARKERS):
        raise CrispError("refusing to delete a folder that is not a training run", path)
    shutil.rmtree(path)


# settings that change how fast a run trains, not what it learns
_NOT_DECIDING = ("threads", "num_workers")


def check_same_settings(run, config) -> None:
    """Refuse a run folder whose recorded training settings differ from ``config``.

    Parameters
    ----------
    run
        A :class:`crisp.run.Run` that holds a config.
    config
        The :class:`~crisp.training.config.TrainConfig` the caller wants.
    """
    from crisp.batch import canonical_json
    from crisp.train import _adopt_init_model

    before = {k: v for k, v in run.config.model_dump(mode="json").items() if k not in _NOT_DECIDING}
    after = {k: v for k, v in _adopt_init_model(config).model_dump(mode="json").items()
             if k not in _NOT_DECIDING}
    # training fills these in from the training micrographs and labels
    for key in ("pixel_size", "positive_fraction", "class_prior", "labelled_fraction"):
        if after.get(key) is None:
            after[key] = before.get(key)
    changed = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
               if canonical_json(before.get(k)) != canonical_json(after.get(k))]
    if changed:
        raise CrispError("holds a run trained with other settings (" + "; ".join(changed) + "); delete it "
                         "or choose another output folder", run.path)


def train_or_resume(config, dataset_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], *,
                    force: bool = False, progress: bool = True) -> Path:
    """Train into ``run_dir`` unless it holds a finished run; resume an interrupted one.

    A finished run has ``summary.json``; an interrupted one with ``checkpoints/last.ckpt`` is resumed;
    any other partial run directory is started again. ``force`` starts again in every case.

    Raises
    ------
    CrispError
        ``run_dir`` holds a finished or resumable run made with other settings (each differing
        setting is named): its results are never returned as if they were those of ``config``.
    """
    from crisp.run import Run
    from crisp.train import train

    run = Path(run_dir)
    if force:
        remove_run_dir(run)
    if Run(run).is_finished or Run(run).can_resume:
        check_same_settings(Run(run), config)
    if Run(run).is_finished:
        return run
    if Run(run).can_resume:
        return train(config, dataset_dir, run, resume=True, progress=progress)
    remove_run_dir(run)
    return train(config, dataset_dir, run, progress=progress)
