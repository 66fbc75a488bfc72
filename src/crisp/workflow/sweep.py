"""``crisp sweep grid.yaml``: train and evaluate one run per point of a grid of training settings.

The grid file (YAML)::

    dataset: path/to/dataset      # relative to the YAML file's folder
    out: runs/sweep               # relative to the YAML file's folder
    preset: cpu                   # TrainConfig preset (optional)
    seed: 0                       # the same for every run, so differences come from the design
    base: {epochs: 5}             # settings common to every run (any TrainConfig key)
    grid:                         # key -> list of values; dotted keys for nested settings
      arch: [unet, unetplusplus]
      loss: [dice, jaccard]
      crf.kind: [none]
    evaluate: test                # subset each run is evaluated on (null: no evaluation)
    picker: tune                  # optional: 'tune' (per run, on the validation maps) or a picker.yaml
    expected_particles: 650       # optional: the dataset's annotation is sparse; tune the picker on
                                  # recall at 650 picks per micrograph and report recall only

Every combination of the grid values is one run directory ``OUT/<name>``, named from the values
that vary (``arch-unet_loss-dice``). A run with ``summary.json`` and ``evaluation/<subset>.json``
is skipped; an interrupted one is resumed; a run folder trained with other settings (the base or
the preset changed since) is refused, naming each differing setting. At the end the
:mod:`crisp.compare` table of the runs is printed and written to ``OUT/comparison.md`` and
``OUT/comparison.csv``.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crisp.config import read_yaml, validate_config
from crisp.errors import CrispError
from crisp.run import Run

GRID_FILE_KEYS = ("dataset", "out", "preset", "seed", "base", "grid", "evaluate", "picker", "config",
                  "expected_particles")


@dataclass
class SweepPlan:
    """A validated grid: the dataset, the output folder and one config per run."""

    source: Path
    dataset: Path
    out: Path
    evaluate: str | None
    picker: str | Path | None
    expected_particles: float | None = None  # sparse truth: picker tuning and evaluation by recall
    runs: dict[str, Any] = field(default_factory=dict)  # name -> TrainConfig


def _check_key(key: str, source: Path) -> None:
    """A grid/base key must name a TrainConfig field (dotted: a field of a nested settings model)."""
    from pydantic import BaseModel

    from crisp.train import TrainConfig

    head, _, rest = key.partition(".")
    fields = TrainConfig.model_fields
    if head not in fields:
        raise CrispError(f"unknown training setting '{key}' (valid keys: {', '.join(fields)})", source)
    if not rest:
        return
    annotation = fields[head].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        sub = rest.partition(".")[0]
        if sub not in annotation.model_fields:
            raise CrispError(f"unknown training setting '{key}' ('{head}' has: "
                             f"{', '.join(annotation.model_fields)})", source)
    elif head != "arch_params":
        raise CrispError(f"training setting '{head}' has no sub-settings (got '{key}')", source)


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "-", text).strip("-.") or "x"


def run_name(setting: dict[str, Any], varying: list[str]) -> str:
    """Filesystem-safe run name from the grid values that vary (``run`` when none varies)."""
    parts = [f"{_safe(k.split('.')[-1] if k.count('.') else k)}-{_safe(str(setting[k]))}" for k in varying]
    return "_".join(parts) or "run"


def load_sweep(path: str | os.PathLike[str]) -> SweepPlan:
    """Read and validate a grid file; every run's TrainConfig is built before anything runs."""
    from crisp.train import make_config

    source = Path(path)
    spec = read_yaml(source)
    unknown = sorted(set(spec) - set(GRID_FILE_KEYS))
    if unknown:
        raise CrispError(f"unknown key(s) {', '.join(unknown)} in the sweep file "
                         f"(expected: {', '.join(GRID_FILE_KEYS)})", source)
    base_dir = source.parent
    if not spec.get("dataset"):
        raise CrispError("the sweep file needs 'dataset' (a dataset folder)", source)
    dataset = base_dir / str(spec["dataset"])
    out = base_dir / str(spec.get("out") or "sweep")
    grid = spec.get("grid") or {}
    base = spec.get("base") or {}
    if not isinstance(grid, dict) or not isinstance(base, dict):
        raise CrispError("'grid' and 'base' must be mappings of setting -> value(s)", source)
    for key in [*base, *grid]:
        _check_key(str(key), source)
    grid = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in grid.items()}
    for key, values in grid.items():
        if not values:
            raise CrispError(f"grid key '{key}' has no values", source)
    varying = [k for k, v in grid.items() if len(v) > 1]
    preset = spec.get("preset")
    start = make_config(preset, spec.get("config") and base_dir / str(spec["config"])).model_dump()
    if "seed" in spec:
        start["seed"] = int(spec["seed"])
    for key, value in base.items():
        _set_dotted(start, str(key), value)
    evaluate = spec.get("evaluate", "test")
    picker = spec.get("picker")
    if picker not in (None, "tune"):
        picker = base_dir / str(picker)
        if not picker.is_file():
            raise CrispError("picker file not found", picker)
    expected = spec.get("expected_particles")
    if expected is not None:
        from crisp.workflow.evaluate_run import check_expected_particles

        try:
            expected = check_expected_particles(float(expected), "expected_particles")
        except (TypeError, ValueError):
            raise CrispError(f"expected_particles must be a number (got {expected!r})", source) from None
        except CrispError as err:
            raise CrispError(err.reason, source) from None
    plan = SweepPlan(source=source, dataset=dataset, out=out, evaluate=evaluate, picker=picker,
                     expected_particles=expected)
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, combo, strict=True))
        values = copy.deepcopy(start)
        for key, value in setting.items():
            _set_dotted(values, key, value)
        name = run_name(setting, varying)
        if name in plan.runs:
            raise CrispError(f"two grid points give the same run name '{name}'", source)
        try:
            plan.runs[name] = validate_config(type(make_config()), values, source)
        except CrispError as err:
            raise CrispError(f"grid point {setting}: {err.reason}", source) from None
    return plan


def run_sweep(path: str | os.PathLike[str], *, progress: bool = True,
              echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Run (or resume) every run of a grid file, evaluate each, write and return the comparison table."""
    import time

    from crisp.compare import compare_runs, write_comparison
    from crisp.dataset import DatasetFolder
    from crisp.workflow.evaluate_run import evaluate_run, evaluation_path, run_picker
    from crisp.workflow.stages import check_same_settings, train_or_resume

    plan = load_sweep(path)
    DatasetFolder.open(plan.dataset)
    plan.out.mkdir(parents=True, exist_ok=True)
    for k, (name, config) in enumerate(plan.runs.items(), start=1):
        run = plan.out / name
        if Run(run).is_finished or Run(run).can_resume:  # never skip or resume a run of other settings
            check_same_settings(Run(run), config)
        finished = Run(run).is_finished and (
            plan.evaluate is None or evaluation_path(run, plan.evaluate).is_file())
        prefix = f"[{k}/{len(plan.runs)}] {name}"
        if finished:
            echo(f"{prefix}: skipped (done before)")
            continue
        echo(f"{prefix} ...")
        start = time.perf_counter()
        train_or_resume(config, plan.dataset, run, progress=progress)
        if plan.evaluate is not None:
            picker = plan.picker
            if picker == "tune":
                picker = run_picker(run, plan.dataset, progress=progress,
                                    expected_particles=plan.expected_particles)
            evaluate_run(run, plan.dataset, plan.evaluate, picker=picker, progress=progress,
                         expected_particles=plan.expected_particles)
        echo(f"{prefix}: done in {time.perf_counter() - start:.1f} s")
    table = compare_runs([plan.out / name for name in plan.runs])
    write_comparison(table, plan.out / "comparison")
    return table
