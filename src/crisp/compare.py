"""Compare training runs: one table of their settings, test metrics and parameter counts.

A run directory (written by :func:`crisp.train.train`) holds ``config.yaml`` and ``summary.json``;
evaluations of it (``crisp evaluate``, ``crisp demo``, benchmarks) add JSON files under
``RUN/evaluation/``. This module flattens those into one row per run, so the paper's tables
(architectures, encoders, losses, CRF variants) come out of one call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crisp.atomic import write_text_atomic
from crisp.config import read_yaml
from crisp.errors import CrispError

#: Settings shown first, when a run has them (dotted keys of config.yaml).
SETTING_KEYS = ("arch", "encoder", "loss", "crf.kind", "crf.solver", "bin", "patch_px", "epochs", "seed")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys; lists are kept as strings."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CrispError(f"not a readable JSON file ({err})", path) from None
    if not isinstance(data, dict):
        raise CrispError("expected a JSON object", path)
    return data


def _settings_and_results(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    run = Path(run_dir)
    if not run.is_dir():
        raise CrispError("run directory not found", run)
    from crisp.run import Run

    config_path, summary_path = Run(run).config_path, Run(run).summary_path
    if not config_path.is_file() and not summary_path.is_file():
        raise CrispError("not a run directory (no config.yaml or summary.json)", run)
    settings = flatten(read_yaml(config_path)) if config_path.is_file() else {}
    results: dict[str, Any] = {}
    if summary_path.is_file():
        results.update(flatten(_read_json(summary_path), "summary."))
    for path in sorted(Run(run).evaluation_dir.glob("*.json")):
        results.update(flatten(_read_json(path), f"{path.stem}."))
    return settings, results


def run_row(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One run's settings and results as a flat mapping.

    Columns: ``run`` (folder name), the run's settings from ``config.yaml`` (dotted keys),
    ``summary.*`` from ``summary.json``, and ``<evaluation>.*`` for each JSON file under
    ``evaluation/`` (its stem as prefix).
    """
    settings, results = _settings_and_results(run_dir)
    return {"run": Path(run_dir).name, **settings, **results}


def compare_runs(
    run_dirs: Iterable[str | os.PathLike[str]],
    sort_by: str | None = None,
    ascending: bool = False,
    columns: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Table of runs, one row each.

    Parameters
    ----------
    run_dirs
        Run directories.
    sort_by
        Column to sort by (best first: descending unless ``ascending``).
    columns
        Columns to keep (besides ``run``); default: the usual settings, every numeric result
        and parameter counts, dropping settings that are equal in all runs.
    """
    parts = [(Path(d).name, *_settings_and_results(d)) for d in run_dirs]
    if not parts:
        raise CrispError("no run directories given")
    rows = [{"run": name, **settings, **results} for name, settings, results in parts]
    result_keys = {k for _, _, results in parts for k in results}
    table = pd.DataFrame(rows)
    if columns is not None:
        wanted = ["run"] + [c for c in columns if c != "run"]
        missing = [c for c in wanted if c not in table]
        if missing:
            raise CrispError(f"unknown column(s) {', '.join(missing)}; available: {', '.join(table.columns)}")
        table = table[wanted]
    else:
        settings = [k for k in SETTING_KEYS if k in table]
        results = [c for c in table.columns
                   if c in result_keys and pd.api.types.is_numeric_dtype(table[c])]
        varying = [k for k in settings if len(rows) == 1 or table[k].astype(str).nunique() > 1]
        table = table[["run"] + varying + results]
    if sort_by is not None:
        if sort_by not in table:
            raise CrispError(
                f"cannot sort by '{sort_by}': no such column; available: {', '.join(table.columns)}")
        table = table.sort_values(sort_by, ascending=ascending, kind="stable")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    """A GitHub-flavoured Markdown table (no optional dependency needed)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else float_format.format(value)
        return str(value)

    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_comparison(table: pd.DataFrame, out_prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<prefix>.md`` and ``<prefix>.csv`` atomically; return both paths."""
    prefix = Path(out_prefix)
    md, csv = prefix.with_suffix(".md"), prefix.with_suffix(".csv")
    write_text_atomic(md, to_markdown(table))
    write_text_atomic(csv, table.to_csv(index=False))
    return md, csv
