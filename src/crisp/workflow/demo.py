"""``crisp demo``: the whole CRISP workflow on synthetic data, from nothing to a report.

Stages (each one's output stays in the project folder; a rerun skips finished stages)::

    PROJECT/demo.yaml                         the demo's settings (a rerun must use the same ones)
    PROJECT/synthetic/                        simulated dataset from the bundled 4JSV map + split.yaml
    PROJECT/runs/cnn/                         CNN trained from scratch (the cpu preset, reduced)
    PROJECT/runs/cdcrf/                       CNN + CD-CRF fine-tuned from runs/cnn (CNN and CRF
                                              together, discriminative learning rates)
    PROJECT/probabilities/{cnn,cdcrf}/{val,test}/NAME.mrc   probability maps (float16)
    PROJECT/runs/{cnn,cdcrf}/picker.yaml      picker tuned by box mAP on the validation maps
    PROJECT/picks/{cnn,cdcrf}/                RELION AutoPick files of the test micrographs
    PROJECT/particles/                        particle stacks + particles.star (CNN + CD-CRF picks)
    PROJECT/runs/{cnn,cdcrf}/evaluation/test.json   test metrics (read by ``crisp compare``)
    PROJECT/report/index.html                 figures and tables
    PROJECT/results.md                        the final table

Every stage can be redone by hand with the single-stage verbs, e.g.
``crisp segment PROJECT/runs/cdcrf PROJECT/synthetic/micrographs -o seg/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from crisp.atomic import write_text_atomic
from crisp.config import StageConfig, save_yaml, validate_config
from crisp.errors import CrispError
from crisp.run import Run
from crisp.workflow.stages import Stage, changed_settings, run_stages, train_or_resume

MODELS = {"cnn": "CNN", "cdcrf": "CNN+CD-CRF"}
TABLE_COLUMNS = {"pixel IoU": ("pixel", "iou"), "pixel recall": ("pixel", "recall"),
                 "pixel F1": ("pixel", "f1"), "pick precision": ("picking", "precision"),
                 "pick recall": ("picking", "recall"), "pick F1": ("picking", "F1"),
                 "pick AP": ("picking", "AP"), "box mAP": ("box", "mAP")}


class DemoConfig(StageConfig):
    """Sizes of the demo (``crisp demo`` full, ``--quick``, and ``tiny`` for tests).

    Micrographs are simulated at ``pixel_size`` Å/px (the ``small`` simulation preset: twice the
    paper's pixel size, SNR 0.02) and binned by ``bin`` for the network.
    """

    size: str = "full"
    seed: int = 0
    micrographs: int = Field(16, ge=3)
    size_px: int = Field(1024, ge=64, description="micrograph width and height, pixels")
    pixel_size: float = Field(3.54, gt=0, description="Å per pixel")
    particles: tuple[int, int] = (60, 60)
    snr: float = Field(0.02, gt=0)
    n_train: int = Field(10, ge=1)
    n_val: int = Field(3, ge=1)
    bin: int = Field(4, ge=1)
    patch_px: int = Field(128, ge=32)
    encoder: str = "resnet18"
    encoder_depth: int = Field(4, ge=1, le=5)
    decoder_channels: list[int] | None = None
    epochs_cnn: int = Field(10, ge=1)
    epochs_crf: int = Field(2, ge=1)
    patches_per_micrograph: int = Field(4, ge=1)
    micrographs_per_batch: int = Field(2, ge=1)
    repeats: int = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0)
    lr_cnn: float = Field(1e-4, gt=0, description="CNN learning rate during CD-CRF fine-tuning")
    lr_crf: float = Field(1e-2, gt=0, description="CRF learning rate during CD-CRF fine-tuning")
    crf_solver: str = "mean-field"
    crf_iterations: int = Field(5, ge=1)
    finders: list[str] | None = Field(None, description="picker finders to try (None: all)")
    box_px: int | None = Field(None, description="extraction box, pixels (None: even ~1.5 diameters)")


DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": dict(micrographs=11, size_px=768, n_train=7, n_val=2, encoder_depth=3, epochs_cnn=6,
                  epochs_crf=1, crf_iterations=3),
    "tiny": dict(micrographs=6, size_px=256, pixel_size=7.08, particles=(6, 6), n_train=3, n_val=2,
                 bin=2, patch_px=64, encoder_depth=3, decoder_channels=[32, 16, 8], epochs_cnn=1,
                 epochs_crf=1, patches_per_micrograph=2, crf_iterations=2, finders=["grid-nms"]),
}


def make_demo_config(size: str = "full", seed: int = 0, **overrides: Any) -> DemoConfig:
    """Demo sizes from a preset (``full``, ``quick``, ``tiny``) and overrides (None = not given)."""
    if size not in DEMO_PRESETS:
        raise CrispError(f"unknown demo size '{size}' (expected one of {', '.join(DEMO_PRESETS)})")
    values = {"size": size, "seed": seed, **DEMO_PRESETS[size]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(DemoConfig, values)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    project: Path
    table: pd.DataFrame
    report: Path
    timings: dict[str, float | None] = field(default_factory=dict)
    wall_s: float = 0.0


def simulation_config(cfg: DemoConfig):
    """The :class:`crisp.simulate.SimulationConfig` of the demo's synthetic set."""
    from crisp.simulate import make_config

    return make_config("small", width_px=cfg.size_px, height_px=cfg.size_px, pixel_size=cfg.pixel_size,
                       count=cfg.micrographs, particles=cfg.particles, snr=cfg.snr, seed=cfg.seed)


def train_configs(cfg: DemoConfig, cnn_run: Path):
    """The :class:`crisp.train.TrainConfig` of the CNN and of the CD-CRF fine-tuning."""
    from crisp.train import make_config

    arch_params = {"decoder_channels": cfg.decoder_channels} if cfg.decoder_channels else None
    common = dict(bin=cfg.bin, patch_px=cfg.patch_px, encoder=cfg.encoder, encoder_depth=cfg.encoder_depth,
                  patches_per_micrograph=cfg.patches_per_micrograph,
                  micrographs_per_batch=cfg.micrographs_per_batch,
                  repeats=cfg.repeats, val_overlap_px=min(32, cfg.patch_px // 4), seed=cfg.seed,
                  arch_params=arch_params)
    cnn = make_config("cpu", epochs=cfg.epochs_cnn, lr=cfg.lr, **common)
    crf = make_config("cpu", epochs=cfg.epochs_crf, lr_cnn=cfg.lr_cnn, lr_crf=cfg.lr_crf, init=str(cnn_run),
                      crf=dict(kind="cd-crf", solver=cfg.crf_solver, iterations=cfg.crf_iterations), **common)
    return cnn, crf


def _box_px(cfg: DemoConfig, diameter_px: float) -> int:
    if cfg.box_px is not None:
        return int(cfg.box_px)
    return int(2 * round(0.75 * diameter_px))


def results_table(project: str | os.PathLike[str]) -> pd.DataFrame:
    """The final table: one row per model, the test metrics of ``runs/<model>/evaluation/test.json``."""
    from crisp.workflow.evaluate_run import read_evaluation

    rows = []
    for key, label in MODELS.items():
        record = read_evaluation(Path(project) / "runs" / key, "test")
        if record is None:
            continue
        row: dict[str, Any] = {"model": label}
        for column, (group, name) in TABLE_COLUMNS.items():
            row[column] = float((record.get(group) or {}).get(name, float("nan")))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *TABLE_COLUMNS])


def _check_settings(project: Path, cfg: DemoConfig, force: bool) -> None:
    path = project / "demo.yaml"
    if path.is_file() and not force:
        changed = changed_settings(path, cfg)
        if changed:
            raise CrispError(f"the project was made with other demo settings ({', '.join(changed)}); "
                             "use the same options, --force to start again, or another folder", path)
        return
    save_yaml(path, cfg)


def run_demo(out: str | os.PathLike[str] = "crisp-demo", *, quick: bool = False, tiny: bool = False,
             seed: int = 0, force: bool = False, progress: bool = True,
             echo: Callable[[str], None] = print, **overrides: Any) -> DemoResult:
    """Run the whole demo into the project folder ``out`` (see the module docstring).

    Parameters
    ----------
    out
        Project folder (created).
    quick
        Smaller sizes (a few minutes on a laptop CPU); still every stage.
    tiny
        Minimal sizes for tests (results are not meaningful).
    seed
        Seed of the simulation, split, training and picking.
    force
        Redo every stage (otherwise finished stages are skipped).
    progress
        Show the stages' progress bars.
    echo
        Where the per-stage progress lines go.
    **overrides
        Any :class:`DemoConfig` field.

    Returns
    -------
    DemoResult
        The project, the final table, the report's path and the seconds per stage.
    """
    import shutil

    from crisp.dataset import DatasetFolder, make_split, read_split, write_split
    from crisp.io.stacks import extract_particles
    from crisp.picking.files import pick_files
    from crisp.picking.tune import load_picker
    from crisp.simulate import simulate_dataset
    from crisp.workflow.evaluate_run import (
        dataset_diameter_px,
        evaluate_run,
        evaluation_path,
        read_picks,
        segment_subset,
        tune_on_maps,
    )
    from crisp.workflow.report_builder import build_report

    start = time.perf_counter()
    size = "tiny" if tiny else "quick" if quick else "full"
    cfg = make_demo_config(size, seed, **overrides)
    project = Path(out)
    if project.exists() and not project.is_dir():
        raise CrispError("the demo project path exists and is not a folder", project)
    project.mkdir(parents=True, exist_ok=True)
    _check_settings(project, cfg, force)
    dataset = project / "synthetic"
    runs = {key: project / "runs" / key for key in MODELS}
    probs = {key: project / "probabilities" / key for key in MODELS}
    picks = {key: project / "picks" / key for key in MODELS}
    particles = project / "particles"
    report = project / "report"
    cnn_config, crf_config = train_configs(cfg, runs["cnn"])

    def simulate() -> None:
        names = simulate_dataset(dataset, simulation_config(cfg), progress=progress, preview=True)
        split = make_split(names, cfg.n_train, cfg.n_val, seed=cfg.seed)
        write_split(DatasetFolder(dataset).split_file, split)

    def train_stage(key: str, config) -> Stage:
        return Stage(f"train {MODELS[key]}", lambda: Run(runs[key]).is_finished,
                     lambda: train_or_resume(config, dataset, runs[key], progress=progress))

    def maps_done(key: str) -> bool:
        if not (dataset / "split.yaml").is_file():
            return False
        split = read_split(dataset / "split.yaml")
        return all((probs[key] / sub / f"{n}.mrc").is_file() for sub in ("val", "test")
                   for n in split.subset(sub))

    def segment(key: str) -> None:
        for sub in ("val", "test"):
            segment_subset(runs[key], dataset, sub, probs[key] / sub, overwrite=force, progress=progress)

    def tune(key: str) -> None:
        tune_on_maps(probs[key] / "val", dataset, Run(runs[key]).picker_path, subset="val",
                     finders=cfg.finders, progress=progress)

    def pick(key: str) -> None:
        if picks[key].is_dir():
            shutil.rmtree(picks[key])
        names = read_split(dataset / "split.yaml").test
        pick_files([probs[key] / "test" / f"{n}.mrc" for n in names], picks[key],
                   load_picker(Run(runs[key]).picker_path), micrographs=dataset / "micrographs",
                   progress=progress)

    def extract() -> None:
        picker = load_picker(Run(runs["cdcrf"]).picker_path)
        names = read_split(dataset / "split.yaml").test
        folder = DatasetFolder(dataset)
        extract_particles([folder.micrograph(n) for n in names], read_picks(picks["cdcrf"]), particles,
                          _box_px(cfg, picker.diameter_px), threshold=picker.threshold, progress=progress)

    def evaluate(key: str) -> None:
        evaluate_run(runs[key], dataset, "test", prob_dir=probs[key] / "test",
                     picker=Run(runs[key]).picker_path, picks_dir=picks[key], progress=progress)

    def make_report() -> None:
        diameter = dataset_diameter_px(dataset)
        intro = (f"CRISP demo: {cfg.micrographs} synthetic micrographs of {cfg.size_px} px at "
                 f"{cfg.pixel_size} Å/px (bundled 4JSV map, particle diameter {diameter:.0f} px, SNR "
                 f"{cfg.snr}), split {cfg.n_train} train / {cfg.n_val} validation / "
                 f"{cfg.micrographs - cfg.n_train - cfg.n_val} test; networks on {cfg.bin}x binned "
                 f"micrographs. Metrics on the test micrographs: pixel metrics at p >= 0.5 pooled over "
                 "the micrographs; picking by radius matching at half the diameter (precision, recall, "
                 "F1 at the threshold tuned on validation; AP over all candidates) and box-IoU mAP.")
        build_report([runs[key] for key in MODELS], report, title="CRISP demo report", intro=intro)

    stages = [
        Stage("simulate + split", lambda: (dataset / "split.yaml").is_file(), simulate),
        train_stage("cnn", cnn_config),
        train_stage("cdcrf", crf_config),
    ]
    for key in MODELS:
        stages.append(Stage(f"segment val+test ({MODELS[key]})", lambda k=key: maps_done(k),
                            lambda k=key: segment(k)))
    for key in MODELS:
        stages.append(Stage(f"tune picker on val ({MODELS[key]})",
                            lambda k=key: Run(runs[k]).picker_path.is_file(), lambda k=key: tune(k)))
    for key in MODELS:
        stages.append(Stage(f"pick test ({MODELS[key]})",
                            lambda k=key: (picks[k] / "autopick.star").is_file(),
                            lambda k=key: pick(k)))
    stages.append(Stage("extract particles", lambda: (particles / "particles.star").is_file(), extract))
    for key in MODELS:
        stages.append(Stage(f"evaluate test ({MODELS[key]})",
                            lambda k=key: evaluation_path(runs[k]).is_file(),
                            lambda k=key: evaluate(k)))
    stages.append(Stage("report", lambda: (report / "index.html").is_file(), make_report))

    if force:  # every stage again: remove what the demo wrote (only its own folders)
        from crisp.workflow.stages import remove_run_dir

        for key in MODELS:
            remove_run_dir(runs[key])
        if (dataset / "simulation.yaml").is_file():
            shutil.rmtree(dataset)
        for path in [*probs.values(), *picks.values(), particles, report]:
            if path.is_dir():
                shutil.rmtree(path)
    timings = run_stages(stages, echo=echo)
    table = results_table(project)
    from crisp.compare import to_markdown

    text = to_markdown(table)
    if not (project / "results.md").is_file() or (project / "results.md").read_text() != text:
        write_text_atomic(project / "results.md", text)
    return DemoResult(project=project, table=table, report=report / "index.html", timings=timings,
                      wall_s=time.perf_counter() - start)
