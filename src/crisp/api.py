"""The public Python API: every ``crisp`` verb as a library function, and the objects they share.

Import from here (or from :mod:`crisp`, which forwards these names) instead of from the modules
that implement them; the CLI (:mod:`crisp.cli`) only parses options and calls these functions.
Each name is imported on first use, so ``import crisp`` stays fast and does not load torch.

========================  ======================================================  ================
verb                      function                                                 returns
========================  ======================================================  ================
``crisp simulate``        :func:`simulate_dataset` (settings: :func:`simulation_config`)  names
``crisp simulate-corpus`` :func:`simulate_corpus` (settings: :func:`corpus_config`)  names
``crisp labels``          :func:`make_labels` (settings: :class:`LabelConfig`)    LabelRun
``crisp split``           :func:`make_split`, :func:`write_split`                 Split
``crisp preprocess``      :func:`preprocess_files` (:class:`PreprocessConfig`)    paths
``crisp train``           :func:`train_network` (settings: :func:`train_config`)  run folder
``crisp segment``         :func:`segment_files`                                   paths
``crisp segment-and-pick`` :func:`segment_and_pick_files`                         PickResult
``crisp evaluate``        :func:`evaluate_folder`                                 table, pooled
``crisp tune-picker``     :func:`tune_picker`, :func:`load_picker`                 PickerConfig
``crisp pick``            :func:`pick_files`                                      PickResult
``crisp extract``         :func:`extract_particles`                               ExtractionResult
``crisp convert``         :func:`read_coordinates`, :func:`write_coordinates`     DataFrame
``crisp relion``          :func:`run_relion_job` (a RELION External job)          RelionJobResult
``crisp convert-maps``    :func:`convert_probability_maps`                        paths
``crisp sweep``           :func:`run_sweep`                                       table
``crisp compare``         :func:`compare_runs`                                    table
``crisp report``          :func:`build_report`                                    path
``crisp demo``            :func:`run_demo`                                        path
``crisp build-general-model`` :func:`build_general_model`                         run folder
========================  ======================================================  ================

Shared objects: :class:`Run` (a trained network's folder; ``Run.load("general")`` opens the bundled
general model, :func:`export_bundled` writes one), :func:`run_batch` and :class:`Item`
(the batch engine of every per-micrograph verb), :class:`CrispError` (every bad input).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> "module:attribute"
EXPORTS: dict[str, str] = {
    "CrispError": "crisp.errors:CrispError",
    "Run": "crisp.run:Run",
    "Item": "crisp.batch:Item",
    "run_batch": "crisp.batch:run_batch",
    "simulate_dataset": "crisp.simulate:simulate_dataset",
    "simulation_config": "crisp.simulate:make_config",
    "make_labels": "crisp.labels.make:make_labels",
    "LabelConfig": "crisp.labels.make:LabelConfig",
    "make_split": "crisp.dataset:make_split",
    "write_split": "crisp.dataset:write_split",
    "read_split": "crisp.dataset:read_split",
    "preprocess_files": "crisp.preprocess:preprocess_files",
    "PreprocessConfig": "crisp.preprocess:PreprocessConfig",
    "train": "crisp.train:train",
    "train_network": "crisp.train:train",
    "train_config": "crisp.train:make_config",
    "TrainConfig": "crisp.train:TrainConfig",
    "segment_files": "crisp.predict:segment_files",
    "segment_and_pick_files": "crisp.inference.segment_pick:segment_and_pick_files",
    "evaluate_folder": "crisp.metrics.pixel:evaluate_folder",
    "tune_picker": "crisp.picking.tune:tune_picker",
    "load_picker": "crisp.picking.tune:load_picker",
    "PickerConfig": "crisp.picking.tune:PickerConfig",
    "pick_files": "crisp.picking.files:pick_files",
    "extract_particles": "crisp.io.stacks:extract_particles",
    "read_coordinates": "crisp.io.coordinates:read_coordinates",
    "write_coordinates": "crisp.io.coordinates:write_coordinates",
    "run_relion_job": "crisp.workflow.relion_job:run_relion_job",
    "convert_probability_maps": "crisp.io.stacks:convert_probability_maps",
    "write_probability_map": "crisp.io.stacks:write_probability_map",
    "read_micrograph": "crisp.io.micrographs:read_micrograph",
    "list_micrographs": "crisp.io.micrographs:list_micrographs",
    "run_sweep": "crisp.workflow.sweep:run_sweep",
    "compare_runs": "crisp.compare:compare_runs",
    "build_report": "crisp.workflow.report_builder:build_report",
    "run_demo": "crisp.workflow.demo:run_demo",
    "simulate_corpus": "crisp.simulate.corpus:simulate_corpus",
    "corpus_config": "crisp.simulate.corpus:make_corpus_config",
    "build_general_model": "crisp.workflow.general_model:build_general_model",
    "export_bundled": "crisp.models.bundled:export_bundled",
}

__all__ = sorted(EXPORTS)
# names that :mod:`crisp` forwards: all but those of its own submodules (``crisp.train`` is a module)
TOP_LEVEL = tuple(name for name in __all__ if name not in ("train",))


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use (PEP 562)."""
    try:
        target = EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'crisp.api' has no attribute {name!r}") from None
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
