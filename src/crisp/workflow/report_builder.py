"""Build the static HTML report of projects and runs from what the stages wrote.

Input: run directories (``config.yaml`` + ``summary.json``), or folders holding run directories
(a demo project's ``runs/``, a sweep's output folder). For each run the builder reads
``metrics.csv`` (training curves), ``RUN/evaluation/<subset>.json`` (metrics and where the
probability maps and picks of the evaluated micrographs are, see
:mod:`crisp.workflow.evaluate_run`), ``picker.yaml`` when present, and the dataset the evaluation
names (micrographs, true masks and centres). Figures (PNG, :mod:`crisp.report`) go to
``OUT/figures/``; the page is ``OUT/index.html``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crisp.errors import CrispError
from crisp.workflow.evaluate_run import (
    read_evaluation,
    read_maps,
    read_picks,
    resolve_recorded,
)

#: Result columns shown in the report's table, when present (compare's flattened names).
RESULT_COLUMNS = ("pixel.iou", "pixel.precision", "pixel.recall", "pixel.f1", "picking.precision",
                  "picking.recall", "picking.F1", "picking.AP", "box.mAP")
SETTING_COLUMNS = ("arch", "encoder", "loss", "crf.kind", "crf.solver", "bin", "patch_px", "epochs",
                   "init")


@dataclass
class RunView:
    """What the report needs of one run (paths resolved)."""

    label: str
    run_dir: Path
    evaluation: dict[str, Any] | None
    subset: str

    @property
    def dataset(self) -> Path | None:
        return resolve_recorded(self.run_dir, (self.evaluation or {}).get("dataset"))

    @property
    def probabilities(self) -> Path | None:
        return resolve_recorded(self.run_dir, (self.evaluation or {}).get("probabilities"))

    @property
    def picks(self) -> Path | None:
        return resolve_recorded(self.run_dir, (self.evaluation or {}).get("picks"))


def is_run_dir(path: Path) -> bool:
    """A finished training run directory (:class:`crisp.run.Run`: config and summary)."""
    from crisp.run import Run

    run = Run(path)
    return run.config_path.is_file() and run.is_finished


def find_runs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories named directly, or found one level down (also under ``runs/``)."""
    runs: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if not path.is_dir():
            raise CrispError("no such folder", path)
        if is_run_dir(path):
            found = [path]
        else:
            found = [p for base in (path, path / "runs") if base.is_dir()
                     for p in sorted(base.iterdir()) if p.is_dir() and is_run_dir(p)]
        if not found:
            raise CrispError("neither a run directory (config.yaml + summary.json) nor a folder of runs",
                             path)
        runs.extend(p for p in found if p.resolve() not in {r.resolve() for r in runs})
    return runs


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _labels(runs: list[Path]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.parent.name}/{r.name}" for r in runs]


def _results_table(views: list[RunView]) -> pd.DataFrame:
    from crisp.compare import run_row

    rows = []
    for view in views:
        row = run_row(view.run_dir)
        out: dict[str, Any] = {"run": view.label}
        out.update({k: row[k] for k in SETTING_COLUMNS if k in row and row[k] is not None})
        prefix = f"{view.subset}."
        out.update({k: row[prefix + k] for k in RESULT_COLUMNS if prefix + k in row})
        for key in ("summary.best_val_iou", "summary.epochs_run", "summary.wall_time_s"):
            if key in row:
                out[key.removeprefix("summary.")] = row[key]
        rows.append(out)
    table = pd.DataFrame(rows)
    constant = [c for c in SETTING_COLUMNS if c in table and len(views) > 1
                and table[c].astype(str).nunique() == 1]
    return table.drop(columns=constant)


def _picker_table(views: list[RunView]) -> pd.DataFrame | None:
    from crisp.config import read_yaml
    from crisp.run import Run

    rows = []
    for view in views:
        path = Run(view.run_dir).picker_path
        if not path.is_file():
            continue
        picker = read_yaml(path)
        params = ", ".join(f"{k}={v}" for k, v in (picker.get("params") or {}).items())
        validation = picker.get("validation") or {}
        rows.append({"run": view.label, "finder": picker.get("finder"), "parameters": params,
                     "threshold": picker.get("threshold"), "val mAP": validation.get("mAP"),
                     "val F1": validation.get("best_F1")})
    return pd.DataFrame(rows) if rows else None


def _evaluated_names(view: RunView) -> list[str]:
    folder = view.probabilities
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.mrc"))


def _histogram_sample(prob_dir: Path, names: list[str], max_maps: int = 16,
                      max_pixels: int = 1 << 20) -> list[np.ndarray]:
    """Pixels of up to ``max_maps`` maps, each strided down to at most ``max_pixels`` (bounded memory)."""
    sample = []
    step = max(1, len(names) // max_maps)
    for prob in read_maps(prob_dir, names[::step][:max_maps]).values():
        stride = max(1, int(np.ceil(np.sqrt(prob.size / max_pixels))))
        sample.append(np.ascontiguousarray(prob[::stride, ::stride]))
    return sample


def build_report(inputs: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                 subset: str = "test", title: str = "CRISP report", max_micrographs: int = 2,
                 intro: str = "") -> Path:
    """Write ``OUT/index.html`` and its figures for the runs found in ``inputs``; return the page.

    Parameters
    ----------
    inputs
        Run directories or folders of runs (see :func:`find_runs`).
    out_dir
        Report folder (created); figures in ``OUT/figures``.
    subset
        Which evaluation (``RUN/evaluation/<subset>.json``) to show.
    max_micrographs
        Micrographs drawn per run (segmentation overlay and picks).
    intro
        A paragraph at the top of the page.
    """
    from crisp.dataset import DatasetFolder, read_true_centres, read_true_masks
    from crisp.io.micrographs import read_micrograph
    from crisp.report import (
        Section,
        plot_picks,
        plot_precision_recall,
        plot_probability_histogram,
        plot_segmentation,
        plot_training_curves,
        write_html,
    )
    from crisp.workflow.evaluate_run import match_picks, precision_recall_curve

    runs = find_runs(inputs)
    out = Path(out_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    views = [RunView(label, run, read_evaluation(run, subset), subset)
             for label, run in zip(_labels(runs), runs, strict=True)]

    sections = []
    summary = Section("Results", text=intro or (
        f"Metrics on the '{subset}' micrographs. Pixel metrics: foreground where p >= 0.5, pooled over "
        "the micrographs. Picking: radius matching at half the particle diameter (precision, recall, "
        "F1 at the picker's threshold; AP over all candidates) and box-IoU mAP (IoU 0.50-0.95)."))
    summary.tables.append(("runs", _results_table(views)))
    pickers = _picker_table(views)
    if pickers is not None:
        summary.tables.append(("picker chosen on the validation micrographs", pickers))
    sections.append(summary)

    datasets = {v.dataset.resolve() for v in views if v.dataset is not None and v.dataset.is_dir()}
    previews = [d / "preview.png" for d in sorted(datasets) if (d / "preview.png").is_file()]
    if previews:
        sections.append(Section("Data", text="First micrograph of the dataset with its true labels.",
                                figures=[(f"dataset {p.parent.name}", p) for p in previews]))

    training = Section("Training", text="Loss and validation metrics per epoch (RUN/metrics.csv).")
    for view in views:
        if (view.run_dir / "metrics.csv").is_file():
            path = plot_training_curves(view.run_dir / "metrics.csv",
                                        figures / f"{_safe(view.label)}_training.png")
            training.figures.append((f"{view.label}: training curves", path))
    if training.figures:
        sections.append(training)

    segmentation = Section("Segmentation", text="Particle probability over the micrograph; green: true mask.")
    histograms: dict[str, list[np.ndarray]] = {}
    picks_section = Section("Picks", text="Green: true positives, red: false positives, blue: missed "
                            "particles (radius matching at half the diameter), picks above the picker's "
                            "threshold.")
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for view in views:
        names = _evaluated_names(view)
        dataset = view.dataset
        if not names or dataset is None or not dataset.is_dir():
            continue
        folder = DatasetFolder(dataset)
        histograms[view.label] = _histogram_sample(view.probabilities, names)
        maps = read_maps(view.probabilities, names[:max_micrographs])
        shown = names[:max_micrographs]
        masks = read_true_masks(dataset, shown, required=False)
        for name in shown:
            image = read_micrograph(folder.micrograph(name)).data
            mask = masks.get(name)
            stem = f"{_safe(view.label)}_{_safe(name)}"
            path = plot_segmentation(image, maps[name], figures / f"{stem}_seg.png", truth_mask=mask,
                                     title=f"{view.label}: {name}")
            segmentation.figures.append((f"{view.label}: {name}", path))
        picks_dir = view.picks
        if picks_dir is None or not (picks_dir / "autopick.star").is_file():
            continue
        picks = read_picks(picks_dir)
        truth = read_true_centres(dataset, names, required=False)
        diameter = float(view.evaluation.get("diameter_px") or 0)
        if truth is not None and diameter > 0:
            curves[view.label] = precision_recall_curve(picks, truth, diameter / 2)
        threshold = (view.evaluation.get("picking") or {}).get("threshold")
        kept = picks if threshold is None else picks[picks["rlnAutopickFigureOfMerit"] >= threshold]
        if truth is not None:
            kept, truth = match_picks(kept, truth, diameter / 2)
        stems = kept["rlnMicrographName"].astype(str).map(lambda s: Path(s).stem)
        for name in shown:
            one_truth = None if truth is None else truth[truth["rlnMicrographName"] == name]
            image = read_micrograph(folder.micrograph(name)).data
            stem = f"{_safe(view.label)}_{_safe(name)}"
            path = plot_picks(image, kept[stems == name], figures / f"{stem}_picks.png",
                              diameter_px=diameter or 20.0, truth=one_truth, title=f"{view.label}: {name}")
            picks_section.figures.append((f"{view.label}: {name}", path))
    if segmentation.figures:
        sections.append(segmentation)
    if histograms:
        path = plot_probability_histogram(histograms, figures / "probability_histogram.png")
        sections.append(Section("Probability histogram", text=(
            "Fraction of pixels per predicted probability (log scale). A CRF pushes probabilities "
            "toward 0 and 1 (the CRISP paper's Appendix 7)."), figures=[("probability histogram", path)]))
    if picks_section.figures:
        sections.append(picks_section)
    if curves:
        path = plot_precision_recall(curves, figures / "precision_recall.png")
        sections.append(Section("Precision-recall", text="Picks ranked by score, radius matching.",
                                figures=[("precision-recall curves", path)]))
    return write_html(out / "index.html", title, sections)
