"""Build CRISP's general model (issue 18): corpus -> split -> train -> picker -> test -> export.

One resumable command (``crisp build-general-model -o WORK``) makes the pretrained model that ships
in the package (``crisp/data/models/general``). Stages, each skipped when its output is complete::

    WORK/build.yaml                    the build's settings (a rerun must use the same ones)
    WORK/corpus/                       the simulated corpus (crisp simulate-corpus) + split.yaml
    WORK/run/                          the training run (resumes from checkpoints/last.ckpt)
    WORK/maps/{val,test}/NAME.mrc      probability maps of the corpus's validation and test micrographs
    WORK/run/picker.yaml               the picker, tuned on the validation maps
    WORK/test.json                     picking metrics on the simulated test micrographs
    EXPORT/                            the bundled model (float16 weights, picker, MODEL_CARD.md)

The network sees every micrograph at :data:`crisp.simulate.corpus.GENERAL_DIAMETER_PX` pixels per
particle diameter (``particle_diameter_px`` in its config); users give the diameter
(``--diameter-A``) and the micrograph is resampled to that scale.

Held-out structures (:data:`crisp.simulate.corpus.HELD_OUT_STRUCTURES`) and the real EMPIAR-10017
development set are never used here: they are for the benchmarks (``benchmarks/general_model.py``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from crisp.atomic import write_text_atomic
from crisp.config import StageConfig, read_yaml, save_yaml, to_plain, validate_config
from crisp.errors import CrispError
from crisp.workflow.stages import Stage, changed_settings, run_stages, train_or_resume

BUILD_FILE = "build.yaml"
CORPUS_DIR = "corpus"
RUN_DIR = "run"
MAPS_DIR = "maps"
TEST_FILE = "test.json"
CARD_FILE = "MODEL_CARD.md"


class GeneralModelConfig(StageConfig):
    """Settings of a general-model build (corpus size, network, training length)."""

    seed: int = 0
    count: int = Field(360, ge=4, description="simulated micrographs in the corpus")
    n_val: int = Field(16, ge=1)
    n_test: int = Field(8, ge=1)
    size_px: int = Field(512, ge=128, description="corpus micrograph width and height, pixels")
    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_depth: int = Field(4, ge=1, le=5)
    loss: str = "dice"
    epochs: int = Field(5, ge=1)
    lr: float = Field(2e-3, gt=0)
    patch_px: int = Field(256, ge=32)
    patches_per_micrograph: int = Field(4, ge=1)
    micrographs_per_batch: int = Field(2, ge=1)
    repeats: int = Field(1, ge=1)
    val_every: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)
    finders: list[str] | None = Field(None, description="picker finders to try (None: all)")


BUILD_PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": dict(count=6, n_val=2, n_test=1, size_px=128, encoder_depth=3, epochs=1, patch_px=64,
                 patches_per_micrograph=2, finders=["grid-nms"]),
}


def make_build_config(size: str = "full", **overrides: Any) -> GeneralModelConfig:
    """Build settings from a preset (``full``; ``tiny`` for tests) and overrides (None = not given)."""
    if size not in BUILD_PRESETS:
        raise CrispError(f"unknown build size '{size}' (expected one of {', '.join(BUILD_PRESETS)})")
    values = {**BUILD_PRESETS[size], **{k: v for k, v in overrides.items() if v is not None}}
    return validate_config(GeneralModelConfig, values)


def corpus_config(cfg: GeneralModelConfig):
    """The :class:`crisp.simulate.corpus.CorpusConfig` of the build (default structures: the catalogue
    minus the held-out ones)."""
    from crisp.simulate.corpus import make_corpus_config

    return make_corpus_config(count=cfg.count, seed=cfg.seed, size=cfg.size_px)


def train_config(cfg: GeneralModelConfig):
    """The :class:`crisp.training.config.TrainConfig` of the network (``cpu`` preset, bin 1)."""
    from crisp.simulate.corpus import GENERAL_DIAMETER_PX
    from crisp.train import make_config

    return make_config("cpu", arch=cfg.arch, encoder=cfg.encoder, encoder_depth=cfg.encoder_depth,
                       loss=cfg.loss, bin=1, epochs=cfg.epochs, lr=cfg.lr, patch_px=cfg.patch_px,
                       patches_per_micrograph=cfg.patches_per_micrograph,
                       micrographs_per_batch=cfg.micrographs_per_batch, repeats=cfg.repeats,
                       val_every=cfg.val_every, val_overlap_px=min(64, cfg.patch_px // 4),
                       threads=cfg.threads, seed=cfg.seed,
                       particle_diameter_px=float(GENERAL_DIAMETER_PX))


def _check_settings(work: Path, cfg: GeneralModelConfig, force: bool) -> None:
    changed = [] if force else changed_settings(work / BUILD_FILE, cfg)
    if changed:
        raise CrispError("holds a build made with other settings (" + ", ".join(changed) + "); use "
                         "--force or another folder", work)
    save_yaml(work / BUILD_FILE, to_plain(cfg))


def build_general_model(work: str | os.PathLike[str], *, export_to: str | os.PathLike[str] | None = None,
                        size: str = "full", force: bool = False, progress: bool = True,
                        card_extra: str | os.PathLike[str] | None = None,
                        echo: Callable[[str], None] = print, **overrides: Any) -> Path:
    """Run (or resume) the build in ``work``; return the run folder (``WORK/run``).

    Parameters
    ----------
    work
        Build folder (created).
    export_to
        Folder to write the bundled model to (:func:`crisp.models.bundled.export_bundled`); None: no
        export. It must not be inside ``work``'s inputs; an existing model there is replaced.
    size
        ``full`` or ``tiny`` (tests).
    force
        Redo every stage.
    progress
        Progress bars of the stages.
    card_extra
        A Markdown file appended to the model card (measurements made after the build, e.g. on real
        data by ``benchmarks/general_model.py``).
    echo
        Where the per-stage lines go.
    **overrides
        Any :class:`GeneralModelConfig` field.
    """
    from crisp.dataset import DatasetFolder, make_split, read_split, write_split
    from crisp.run import Run
    from crisp.simulate.corpus import GENERAL_DIAMETER_PX, simulate_corpus

    cfg = make_build_config(size, **overrides)
    root = Path(work)
    if root.exists() and not root.is_dir():
        raise CrispError("the build folder exists and is not a folder", root)
    if card_extra is not None and not Path(card_extra).is_file():
        raise CrispError("model card addition not found", card_extra)
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, cfg, force)
    corpus, run = root / CORPUS_DIR, root / RUN_DIR
    maps = {sub: root / MAPS_DIR / sub for sub in ("val", "test")}
    tcfg = train_config(cfg)
    split_file = DatasetFolder(corpus).split_file

    def simulate() -> None:
        names = simulate_corpus(corpus, corpus_config(cfg), progress=progress, overwrite=force)
        n_train = len(names) - cfg.n_val - cfg.n_test
        if n_train < 1:
            raise CrispError(f"{len(names)} micrographs leave none for training after {cfg.n_val} "
                             f"validation and {cfg.n_test} test micrographs")
        write_split(split_file, make_split(names, n_train, cfg.n_val, seed=cfg.seed, n_test=cfg.n_test))

    def corpus_done() -> bool:
        return split_file.is_file() and len(DatasetFolder(corpus).names()) >= cfg.count

    def maps_done(sub: str) -> bool:
        return split_file.is_file() and all((maps[sub] / f"{n}.mrc").is_file()
                                            for n in read_split(split_file).subset(sub))

    def segment(sub: str) -> None:
        from crisp.predict import segment_files

        names = read_split(split_file).subset(sub)
        segment_files(run, [DatasetFolder(corpus).micrograph(n) for n in names], maps[sub],
                      overwrite=True, progress=progress, diameter_px=float(GENERAL_DIAMETER_PX))

    def tune() -> None:
        from crisp.config import save_yaml
        from crisp.workflow.evaluate_run import tune_on_maps

        # the corpus's pixel sizes differ from micrograph to micrograph, but its particles all span
        # about GENERAL_DIAMETER_PX pixels: the picker is diameter-scaled, with no pixel size
        picker = tune_on_maps(maps["val"], corpus, Run(run).picker_path, subset="val",
                              diameter_px=float(GENERAL_DIAMETER_PX), finders=cfg.finders, progress=progress)
        scaled = picker.model_copy(update={"pixel_size": None, "diameter_scaled": True})
        save_yaml(Run(run).picker_path, scaled)

    def test() -> None:
        write_text_atomic(root / TEST_FILE, json.dumps(score_subset(run, corpus, maps["test"], "test"),
                                                       indent=2) + "\n")

    exported: list[bool] = []  # the export is redone on every call (the run or the card may be newer)

    def export() -> None:
        import shutil

        from crisp.models.bundled import export_bundled

        card = model_card(root, cfg, extra=None if card_extra is None else Path(card_extra).read_text())
        dest = Path(export_to)
        staging = dest.with_name(f".{dest.name}.export-tmp")
        if staging.exists():
            shutil.rmtree(staging)
        export_bundled(run, staging, model_card=card)
        if dest.exists():
            if not (dest / "config.yaml").is_file():
                raise CrispError("the export folder exists and is not a bundled model; choose another", dest)
            shutil.rmtree(dest)
        staging.rename(dest)
        exported.append(True)

    stages = [
        Stage("simulate corpus", corpus_done, simulate),
        Stage("train", lambda: Run(run).is_finished,
              lambda: train_or_resume(tcfg, corpus, run, force=force, progress=progress)),
        Stage("segment validation", lambda: maps_done("val") and not force, lambda: segment("val")),
        Stage("tune picker", lambda: Run(run).picker_path.is_file() and not force, tune),
        Stage("segment test", lambda: maps_done("test") and not force, lambda: segment("test")),
        Stage("test", lambda: (root / TEST_FILE).is_file() and not force, test),
    ]
    if export_to is not None:
        stages.append(Stage("export", lambda: bool(exported), export))
    run_stages(stages, echo=echo)
    return run


def score_subset(run_dir: Path, corpus: Path, maps: Path, subset: str) -> dict[str, Any]:
    """Pick a subset's maps with the run's picker and score them (:func:`score_maps_picks`)."""
    from crisp.dataset import DatasetFolder, read_split
    from crisp.picking.tune import load_picker
    from crisp.run import Run
    from crisp.workflow.evaluate_run import score_maps_picks

    names = read_split(DatasetFolder(corpus).split_file).subset(subset)
    picker = load_picker(Run(run_dir).picker_path).model_copy(update={"pixel_size": None})
    picking, box = score_maps_picks(maps, corpus, names, picker)
    return {"subset": subset, "micrographs": len(names), "picking": picking, "box": box}


def model_card(work: Path, cfg: GeneralModelConfig, extra: str | None = None) -> str:
    """The model card (Markdown): training data, settings, simulated test figures, failure modes."""
    from crisp.run import Run
    from crisp.simulate.corpus import GENERAL_DIAMETER_PX, HELD_OUT_STRUCTURES

    corpus = read_yaml(work / CORPUS_DIR / "corpus.yaml")
    structures = corpus.get("structures", [])
    summary = Run(work / RUN_DIR).summary() if (work / RUN_DIR / "summary.json").is_file() else {}
    test = json.loads((work / TEST_FILE).read_text()) if (work / TEST_FILE).is_file() else {}
    lines = [
        "# CRISP general model: model card", "",
        f"Built {time.strftime('%Y-%m-%d')} with crisp {corpus.get('crisp_version', '?')} by "
        "`crisp build-general-model` (`crisp.workflow.general_model`), on "
        f"{platform.machine()} {platform.system()}, CPU only.", "",
        "## Use", "",
        "```", "crisp segment-and-pick general mics/ --diameter-A 190 -o picks/",
        "crisp segment general mics/ --diameter-A 190 -o maps/",
        "crisp train data/ --init general --diameter-A 190 -o runs/finetuned", "```", "",
        f"The network sees micrographs resampled so that the particle diameter is {GENERAL_DIAMETER_PX} px; "
        "give the diameter in Å (the pixel size comes from the header or `--pixel-size`) or in pixels "
        "(`--diameter-px`). Coordinates come back in pixels of the original micrograph.", "",
        "## Training data", "",
        f"{cfg.count} simulated micrographs of {cfg.size_px}² px (`crisp simulate-corpus`, seed {cfg.seed}; "
        f"{cfg.count - cfg.n_val - cfg.n_test} train, {cfg.n_val} validation, {cfg.n_test} test). "
        "No real micrograph was used for training or model selection.",
        "Structures (PDB entries shipped in PyPI packages, densities built with gemmi) and ASPIRE "
        "Gaussian-blob phantoms (60-400 Å):", "",
        "| structure | size, Å | source | licence |", "|---|---|---|---|",
    ]
    for s in structures:
        size = s.get("max_dimension_A", "60-400 (phantom)")
        lines.append(f"| {s.get('name')} | {size} | {s.get('source', '')} | {s.get('licence', '')} |")
    lines += ["", f"Held out (never in training): {', '.join(HELD_OUT_STRUCTURES)}.", "",
              "Nuisances: coloured (1/f^alpha) noise, SNR referred to a detector pixel, defocus 0.5-3.5 µm "
              "with astigmatism, B-factor envelope, ice-thickness gradients, carbon edges and holes, ice "
              "crystals and aggregates (labelled background), sparse to crowded particles. Every draw is "
              "in the corpus's corpus.csv. Settings:", "", "```",
              json.dumps(corpus.get("settings", {}), indent=1, default=str), "```", "",
              "## Network and training", "",
              f"{cfg.arch} / {cfg.encoder} depth {cfg.encoder_depth}, loss {cfg.loss}, random initialisation,"
              " "
              f"{cfg.epochs} epochs of {cfg.patch_px}² patches, lr {cfg.lr}, seed {cfg.seed}. "
              f"Training took {summary.get('wall_s', summary.get('train_seconds', '?'))} s. "
              "Weights stored as float16.", ""]
    if test:
        p = test["picking"]
        lines += ["## Simulated test micrographs", "",
                  f"{test['micrographs']} held-back corpus micrographs (structures of the training set): "
                  f"precision {p['precision']:.3f}, recall {p['recall']:.3f}, F1 {p['F1']:.3f}, "
                  f"AP {p['AP']:.3f} (matching radius {p['radius_px']:.0f} px).", ""]
    lines += ["## Known failure modes", "",
              "- Trained on simulation only: real micrographs with features the simulator lacks (gold "
              "grid bars, drift streaks, filaments, very thick ice) may give false picks.",
              "- A diameter more than about 20 % off the true one lowers recall (the corpus jitters the "
              "scale by 0.8-1.25).",
              "- Small particles (< 100 Å) at low SNR are the hardest case; fine-tune (`--init general`) "
              "on a few labelled micrographs when zero-shot picks are poor.", ""]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)
