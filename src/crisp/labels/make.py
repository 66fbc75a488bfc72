"""``crisp labels``: build a dataset folder (micrographs, masks, centres) from real data.

Inputs are micrographs (MRC, TIFF, PNG, JPG) and, per micrograph, particle coordinates in any format
:mod:`crisp.io.coordinates` reads (paired by file stem), or a RELION particle STAR of a refinement
together with a 3D mask for the ``reproject`` method. The output follows :mod:`crisp.dataset`:
``micrographs/NAME.mrc`` (float32 copy at the original resolution, pixel size in the header),
``masks/NAME.mrc`` (uint8 label map: 1 = particle, 0 = background, 255 = unlabelled),
``coordinates/NAME.star`` (the centres used, original pixels), ``labels.yaml`` (every setting and
per-micrograph counts) and ``qc.png`` (overlay of the first micrographs).

Sparse labels (see :mod:`crisp.labels.sparse`): ``keep_fraction`` keeps a seeded subset of each
micrograph's centres; ``background="none"`` labels only particle pixels (every other pixel is 255),
and ``background_coords`` adds discs of asserted background (0) to such a map. With the defaults
(``keep_fraction=1``, ``background="all"``, no background coordinates) every non-particle pixel is
background, as before.

The per-micrograph work runs on the batch engine (:mod:`crisp.batch`), one item per micrograph: a
rerun skips micrographs done with the same settings and unchanged inputs, refuses other settings
(naming them) unless ``overwrite``, and never leaves a half-written file. ``labels.yaml`` and
``qc.png`` are written after the batch from the items' records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from crisp.config import StageConfig, save_yaml, to_plain
from crisp.dataset import COORDINATES, MASKS, MICROGRAPHS, PARTICLE, UNLABELLED
from crisp.errors import CrispError

LABELS_FILE = "labels.yaml"
QC_FILE = "qc.png"
METHODS = ("disk", "threshold", "reproject")
VERB = "labels"
_SETTINGS_IGNORED = ("qc_count",)  # settings that do not decide the outputs
# sparse-label settings left out of the batch settings (and labels.yaml) at these values, so that a
# folder labelled before they existed is still recognised as made with the same settings
_SPARSE_DEFAULTS = {"keep_fraction": 1.0, "keep_seed": 0, "background": "all"}


class LabelConfig(StageConfig):
    """Settings of label generation (units: Å, or pixels where the name ends in ``_px``)."""

    method: Literal["disk", "threshold", "reproject"] = "disk"
    radius_px: float | None = None
    radius_A: float | None = None
    pixel_size: float | None = None
    flip_y: bool = False
    coord_format: str | None = None
    threshold_method: str = "li"
    polarity: Literal["auto", "dark", "light"] = "auto"
    lowpass_sigma_px: float | None = None
    window_factor: float = 2.0
    disk_fraction: float = Field(1.0, gt=0, le=1, description="disk: label discs of this fraction of the "
                                 "particle radius, so that particles packed edge to edge stay apart in the "
                                 "mask; the recorded particle diameter stays 2 x radius")
    projection_threshold: float | str | None = None
    keep_fraction: float = Field(1.0, gt=0, le=1, description="keep a seeded random subset of round(F x n) "
                                 "of each micrograph's n centres (at least 1): sparse training sets "
                                 "from full annotations")
    keep_seed: int = Field(0, ge=0, description="seed of the keep_fraction subsets (with a hash of the "
                           "micrograph name, so a micrograph's subset does not depend on the others)")
    background: Literal["all", "none"] = Field(
        "all", description="all: every pixel that is not particle is background (0); none: only particle "
        "pixels are labelled (1), every other pixel is unlabelled (255); background coordinates imply none")
    qc_count: int = 4

    def radius_for(self, pixel_size: float | None, where: str | os.PathLike[str] | None = None) -> float:
        """Particle radius in pixels for a micrograph of ``pixel_size`` Å/px."""
        if self.radius_px is not None:
            return float(self.radius_px)
        if self.radius_A is None:
            raise CrispError(f"method '{self.method}' needs the particle radius: give --radius (pixels) "
                             "or --radius-A (Å)")
        if not pixel_size:
            raise CrispError("the radius is given in Å but the pixel size is unknown (no MRC header "
                             "value): give --pixel-size", where)
        return float(self.radius_A) / float(pixel_size)


@dataclass
class LabelRun:
    """What :func:`make_labels` did."""

    out_dir: Path
    names: list[str]
    made: list[str]
    skipped: list[str]
    micrographs: dict[str, dict]
    matching: dict
    seconds: float
    messages: list[str] = field(default_factory=list)
    qc_figure: Path | None = None
    failed: dict[str, str] = field(default_factory=dict)


def _validate(config: LabelConfig) -> None:
    from crisp.labels.threshold import check_threshold_options

    if config.radius_px is not None and not config.radius_px > 0:
        raise CrispError(f"--radius must be positive (got {config.radius_px} px)")
    if config.radius_A is not None and not config.radius_A > 0:
        raise CrispError(f"--radius-A must be positive (got {config.radius_A} Å)")
    if config.radius_px is not None and config.radius_A is not None:
        raise CrispError("give the radius once: --radius (pixels) or --radius-A (Å), not both")
    if config.pixel_size is not None and not config.pixel_size > 0:
        raise CrispError(f"--pixel-size must be positive (got {config.pixel_size} Å)")
    if config.method in ("disk", "threshold") and config.radius_px is None and config.radius_A is None:
        raise CrispError(f"method '{config.method}' needs the particle radius: give --radius (pixels) "
                         "or --radius-A (Å)")
    if config.method == "threshold":
        check_threshold_options(config.threshold_method, config.polarity)
    if config.window_factor < 1:
        raise CrispError(f"window factor must be at least 1 (got {config.window_factor})")
    if not 0 < config.keep_fraction <= 1:
        raise CrispError(f"--keep-fraction must be in (0, 1] (got {config.keep_fraction})")
    if config.keep_seed < 0:
        raise CrispError(f"--seed must be a non-negative integer (got {config.keep_seed})")


def _with_background_coords(config: LabelConfig, background_coords) -> LabelConfig:
    """``config`` with ``background="none"`` when background coordinates are given (they imply it)."""
    if background_coords is None:
        return config
    if config.method == "reproject":
        raise CrispError("--background-coords works with methods disk and threshold, not reproject")
    if config.background == "all" and "background" in config.model_fields_set:
        raise CrispError("--background all labels every non-particle pixel as background; it cannot go "
                         "with --background-coords (which leaves pixels outside their discs unlabelled)")
    return config.model_copy(update={"background": "none"})


def _settings(config: LabelConfig) -> dict:
    settings = {k: v for k, v in to_plain(config).items() if k not in _SETTINGS_IGNORED}
    if config.keep_fraction == 1:
        settings.pop("keep_seed")  # no subset is drawn: the seed decides nothing
    for key, default in _SPARSE_DEFAULTS.items():
        if key in settings and settings[key] == default:
            del settings[key]
    return settings


def _drop_outside(df: pd.DataFrame, shape: tuple[int, int]) -> tuple[pd.DataFrame, int]:
    x = df["rlnCoordinateX"].to_numpy(float)
    y = df["rlnCoordinateY"].to_numpy(float)
    inside = (x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])
    return df[inside].reset_index(drop=True), int((~inside).sum())


def _mask_for(method: str, config: LabelConfig, image: np.ndarray, centres: pd.DataFrame,
              radius_px: float | None, pixel_size: float | None, volume) -> tuple[np.ndarray, dict]:
    x = centres["rlnCoordinateX"].to_numpy(float)
    y = centres["rlnCoordinateY"].to_numpy(float)
    if method == "disk":
        from crisp.labels.disk import disk_mask

        return disk_mask(image.shape, x, y, radius_px * config.disk_fraction), {}
    if method == "threshold":
        from crisp.labels.threshold import threshold_mask

        mask, stats = threshold_mask(image, x, y, radius_px, method=config.threshold_method,
                                     polarity=config.polarity, lowpass_sigma_px=config.lowpass_sigma_px,
                                     window_factor=config.window_factor)
        return mask, stats.as_dict()
    from crisp.labels.reproject import reproject_mask

    return reproject_mask(image.shape, centres, volume, pixel_size,
                          threshold=config.projection_threshold), {}


def _pair_coordinates(mic_paths: list[Path], coordinates, config: LabelConfig
                      ) -> tuple[list[tuple[Path, Path | pd.DataFrame]], dict, str]:
    """Pair micrographs with coordinate files by stem, or with the rows of one multi-micrograph file."""
    from crisp.io.coordinates import NAME, list_coordinate_files, match_coordinates, read_coordinates

    files = list_coordinate_files(coordinates, expand_index=True)
    if len(files) == 1 and files[0].suffix.lower() in (".star", ".txt", ".tsv", ".cs"):
        table = read_coordinates(files[0], config.coord_format)
        if NAME in table.columns and table[NAME].nunique() > 1:
            pairs, matching, report = _pair_table(mic_paths, table, str(files[0]))
            return pairs, matching, report
    match = match_coordinates(mic_paths, files)
    matching = {"n_pairs": len(match.pairs),
                "micrographs_without_coordinates": [str(p) for p in match.micrographs_without],
                "coordinates_without_micrograph": [str(p) for p in match.coordinates_without]}
    return [(Path(m), Path(c)) for m, c in match.pairs], matching, match.report()


def _pair_table(mic_paths: list[Path], particles: pd.DataFrame, source: str
                ) -> tuple[list[tuple[Path, pd.DataFrame]], dict, str]:
    """Pair micrographs with the rows of one table by the stem of ``rlnMicrographName``."""
    from crisp.io.coordinates import group_by_micrograph, micrograph_stem

    groups = group_by_micrograph(particles)
    pairs, without = [], []
    for path in mic_paths:
        group = groups.pop(micrograph_stem(path.name), None)
        if group is None:
            without.append(path)
        else:
            pairs.append((path, group))
    matching = {"n_pairs": len(pairs), "micrographs_without_coordinates": [str(p) for p in without],
                "particle_micrographs_without_file": sorted(groups)}
    lines = [f"{len(pairs)} micrograph(s) paired with rows of {source}"]
    if without:
        lines.append(f"{len(without)} micrograph(s) without coordinates: "
                     + ", ".join(p.name for p in without[:10]) + (" ..." if len(without) > 10 else ""))
    if groups:
        lines.append(f"{len(groups)} micrograph name(s) of the table without a micrograph file: "
                     + ", ".join(sorted(groups)[:10]) + (" ..." if len(groups) > 10 else ""))
    return pairs, matching, "\n".join(lines)


def _paths(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def _item_inputs(mic_path: Path, source: Path | pd.DataFrame, table_file: Path | None) -> tuple[Path, ...]:
    if isinstance(source, pd.DataFrame):
        return (mic_path,) if table_file is None else (mic_path, table_file)
    return (mic_path, source)


def _source_inputs(source: Path | pd.DataFrame | None, table_file: Path | None) -> tuple[Path, ...]:
    """The files behind one micrograph's background coordinates (none, its file, or the shared table)."""
    if source is None:
        return ()
    if isinstance(source, pd.DataFrame):
        return () if table_file is None else (table_file,)
    return (source,)


def _table_file(pairs: list, coordinates) -> Path | None:
    """The one multi-micrograph table the pairs' rows came from, if they came from one."""
    from crisp.io.coordinates import list_coordinate_files

    if pairs and isinstance(pairs[0][1], pd.DataFrame):
        return list_coordinate_files(coordinates, expand_index=True)[0]
    return None


class _Labeller:
    """The batch item function of :func:`make_labels`: one micrograph -> micrograph, mask, centres."""

    def __init__(self, config: LabelConfig, coord_source: str, volume, say: Callable[[str], None]) -> None:
        self.config, self.coord_source, self.volume, self.say = config, coord_source, volume, say
        self.messages: list[str] = []

    def __call__(self, item, staging) -> dict:
        from crisp.io.coordinates import flip_y, read_coordinates, write_star
        from crisp.io.micrographs import read_micrograph, write_mrc

        config, name = self.config, item.name
        mic_path, source, background_source = item.data
        mic = read_micrograph(mic_path, pixel_size=config.pixel_size)
        if config.method == "reproject":
            pixel_size = config.pixel_size or mic.pixel_size
            table = flip_y(source, mic.shape[0]) if config.flip_y else source.copy()
            coord_source = self.coord_source
            radius_px = None
            if not pixel_size:
                raise CrispError("pixel size unknown (no MRC header value, no rlnMicrographPixelSize): "
                                 "give --pixel-size", mic_path)
        else:
            pixel_size = mic.pixel_size
            radius_px = config.radius_for(pixel_size, mic_path)
            if isinstance(source, pd.DataFrame):
                table = flip_y(source, mic.shape[0]) if config.flip_y else source.copy()
                coord_source = self.coord_source
            else:
                table = read_coordinates(source, config.coord_format, micrograph_name=mic_path.name,
                                         micrograph_shape=mic.shape, flip_y=config.flip_y)
                coord_source = str(source)
        n_read = len(table)
        table, n_outside = _drop_outside(table, mic.shape)
        if n_read and n_outside == n_read:
            raise CrispError(f"all {n_read} coordinates fall outside the {mic.shape[1]} x {mic.shape[0]} "
                             f"micrograph {mic_path.name}: wrong binning, or rows counted from the other "
                             "edge (--flip-y)?", coord_source)
        if n_outside:
            message = (f"{name}: {n_outside} of {n_read} coordinates fall outside the micrograph and are "
                       "ignored")
            self.messages.append(message)
            self.say("warning: " + message)
        n_annotated = len(table)
        if config.keep_fraction < 1:
            from crisp.labels.sparse import keep_subset

            table = keep_subset(table, config.keep_fraction, config.keep_seed, name)
        mask, extra = _mask_for(config.method, config, mic.data, table, radius_px, pixel_size, self.volume)
        n_background = None
        if config.background != "all":
            from crisp.labels.sparse import label_map

            background = None
            if background_source is not None:
                centres_bg = self._background_centres(background_source, mic_path, mic.shape)
                n_background = len(centres_bg)
                background = self._background_discs(mic.shape, centres_bg, radius_px)
            mask = label_map(mask, background)
        centres = table.copy()
        centres["rlnMicrographName"] = f"{name}.mrc"
        keep = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"] + [
            c for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAutopickFigureOfMerit")
            if c in centres.columns]
        write_star(centres[keep], staging.path(_output(COORDINATES, name, ".star")), version=False)
        write_mrc(staging.path(_output(MICROGRAPHS, name)), mic.data.astype(np.float32, copy=False),
                  pixel_size=pixel_size)
        write_mrc(staging.path(_output(MASKS, name)), mask.astype(np.uint8, copy=False),
                  pixel_size=pixel_size)
        stats = to_plain({"source": str(mic_path), "coordinates": coord_source, "shape": list(mic.shape),
                          "pixel_size": pixel_size, "radius_px": radius_px,
                          "diameter_px": None if radius_px is None else 2 * radius_px,
                          "n_coordinates": n_read, "n_outside": n_outside, "n_annotated": n_annotated,
                          "n_used": len(table), "keep_fraction": config.keep_fraction,
                          "background": config.background, "n_background": n_background,
                          "mask_fraction": round(float((mask == PARTICLE).mean()), 6),
                          "unlabelled_fraction": round(float((mask == UNLABELLED).mean()), 6), **extra})
        # the record's JSON sorts keys: keep their order for labels.yaml
        return {"stats": stats, "keys": list(stats), "messages": self.messages[-1:] if n_outside else []}

    def _background_centres(self, source: Path | pd.DataFrame, mic_path: Path,
                            shape: tuple[int, int]) -> pd.DataFrame:
        """The asserted background positions of one micrograph (same --coord-format and --flip-y)."""
        from crisp.io.coordinates import flip_y, read_coordinates

        if isinstance(source, pd.DataFrame):
            return flip_y(source, shape[0]) if self.config.flip_y else source.copy()
        return read_coordinates(source, self.config.coord_format, micrograph_name=mic_path.name,
                                micrograph_shape=shape, flip_y=self.config.flip_y)

    @staticmethod
    def _background_discs(shape: tuple[int, int], centres: pd.DataFrame, radius_px: float) -> np.ndarray:
        """Discs of the particle radius (pixels) around asserted background positions (0/1)."""
        from crisp.labels.disk import disk_mask

        return disk_mask(shape, centres["rlnCoordinateX"].to_numpy(float),
                         centres["rlnCoordinateY"].to_numpy(float), radius_px)


def _output(sub: str, name: str, suffix: str = ".mrc") -> str:
    return f"{sub}/{name}{suffix}"


def _ordered(result: dict) -> dict:
    stats = result.get("stats") or {}
    keys = [k for k in result.get("keys") or [] if k in stats]
    return {k: stats[k] for k in keys + sorted(set(stats) - set(keys))}


def make_labels(micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                out_dir: str | os.PathLike[str], config: LabelConfig | None = None, *,
                coordinates: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                particles: str | os.PathLike[str] | None = None,
                mask3d: str | os.PathLike[str] | None = None,
                background_coords: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                progress: bool = True, echo: Callable[[str], None] | None = None,
                overwrite: bool = False, keep_going: bool = False,
                shard: tuple[int, int] | None = None) -> LabelRun:
    """Write a dataset folder of micrographs, label masks and centres.

    Parameters
    ----------
    micrographs
        A folder, glob pattern, file or list of these (MRC, TIFF, PNG, JPG).
    out_dir
        The dataset folder to write (see :mod:`crisp.dataset`); not a folder of the inputs.
    config
        :class:`LabelConfig`; ``method`` chooses ``disk``, ``threshold`` or ``reproject``.
    coordinates
        Coordinate files or a folder of them (methods ``disk`` and ``threshold``), paired with the
        micrographs by file stem. ``x`` = column and ``y`` = row of the micrograph as read; use
        ``config.flip_y`` when the picker counted rows from the other edge.
    particles, mask3d
        RELION particle STAR of a refinement and a 3D mask or map (MRC), for ``reproject``.
    background_coords
        Coordinate files or a folder of them (any format ``coordinates`` may have, read with the same
        ``coord_format`` and ``flip_y``), paired with the micrographs by file stem: positions the user
        asserts are background. Discs of the particle radius around them are labelled background (0),
        every other pixel that is not particle unlabelled (255); particle pixels win where they overlap.
        A micrograph without such a file has no background disc. Implies ``config.background="none"``;
        refused with an explicit ``background="all"`` and with the ``reproject`` method.
    progress
        Show a progress bar.
    echo
        Where to print the pairing report and warnings (default: ``tqdm.write``).
    overwrite
        Recompute every micrograph, also those ``out_dir`` holds from other settings.
    keep_going
        Go on with the other micrographs when one fails; the failures are listed in one error at
        the end (after ``labels.yaml`` is written).
    shard
        ``(I, N)``: label only the I-th of N shares of the micrographs (:func:`crisp.batch.select_shard`);
        ``labels.yaml`` then records every micrograph done so far by any shard.

    Returns
    -------
    LabelRun

    Raises
    ------
    CrispError
        No micrographs, no pairs, radius missing, Å radius without pixel size, a coordinate file
        whose every centre falls outside its micrograph, a keep fraction outside (0, 1], background
        coordinates with ``background="all"`` or ``reproject``, settings that differ from those of a
        previous run in ``out_dir`` (without ``overwrite``), an output folder that is an input
        folder, unreadable inputs.
    """
    from tqdm.auto import tqdm

    from crisp import __version__
    from crisp.batch import Item, read_records, run_batch
    from crisp.io.micrographs import list_micrographs

    config = _with_background_coords(config or LabelConfig(), background_coords)
    _validate(config)
    say = echo or tqdm.write
    out = Path(out_dir)
    started = time.perf_counter()
    mic_paths = list_micrographs(micrographs)
    volume = None
    table_file: Path | None = None
    if config.method == "reproject":
        if particles is None or mask3d is None:
            raise CrispError("method 'reproject' needs --particles (RELION STAR of a refinement) and "
                             "--mask3d (3D mask or map, MRC)")
        from crisp.labels.reproject import read_particles, read_volume

        particle_table = read_particles(particles, config.pixel_size)
        volume = read_volume(mask3d)
        pairs, matching, report = _pair_table(mic_paths, particle_table, str(particles))
        coord_source = str(particles)
    else:
        if coordinates is None:
            raise CrispError(f"method '{config.method}' needs coordinates: give --coords")
        pairs, matching, report = _pair_coordinates(mic_paths, coordinates, config)
        coord_source = str(to_plain(coordinates))
        table_file = _table_file(pairs, coordinates)
    say(report)
    if not pairs:
        raise CrispError("no micrograph could be paired with coordinates (pairing is by file stem); "
                         "nothing to do", out)
    background_by_mic: dict[Path, Path | pd.DataFrame] = {}
    background_table: Path | None = None
    if background_coords is not None:
        bg_pairs, bg_matching, bg_report = _pair_coordinates(mic_paths, background_coords, config)
        background_table = _table_file(bg_pairs, background_coords)
        background_by_mic = dict(bg_pairs)
        matching["background"] = bg_matching
        say("background coordinates: " + bg_report)
    settings = _settings(config)
    inputs = {"micrographs": [str(p) for p in mic_paths] if len(mic_paths) <= 50 else str(micrographs),
              "coordinates": None if coordinates is None else to_plain(coordinates),
              "particles": None if particles is None else str(particles),
              "mask3d": None if mask3d is None else str(mask3d)}
    if background_coords is not None:
        inputs["background_coords"] = to_plain(background_coords)
    extra_inputs = tuple(Path(p) for p in (particles, mask3d) if p is not None)
    items = [Item(mic_path.stem, inputs=_item_inputs(mic_path, source, table_file) + extra_inputs
                  + _source_inputs(background_by_mic.get(mic_path), background_table),
                  outputs=(_output(MICROGRAPHS, mic_path.stem), _output(MASKS, mic_path.stem),
                           _output(COORDINATES, mic_path.stem, ".star")),
                  data=(mic_path, source, background_by_mic.get(mic_path))) for mic_path, source in pairs]
    input_dirs = [p for p in _paths(micrographs) + _paths(coordinates) + _paths(background_coords)
                  if Path(p).is_dir()]
    labeller = _Labeller(config, coord_source, volume, say)
    result = run_batch(VERB, items, labeller, out, settings, overwrite=overwrite, keep_going=keep_going,
                       progress=progress, shard=shard, input_dirs=input_dirs)
    names = [item.name for item in items]
    records = {n: r for n, r in read_records(out).items() if r.get("status") == "done"}
    stats = {n: _ordered(records[n].get("result") or {}) for n in names if n in records}
    radii = {s.get("radius_px") for s in stats.values()}
    pixel_sizes = {s.get("pixel_size") for s in stats.values()}
    summary = {
        "crisp_version": __version__,
        "method": config.method,
        "diameter_px": (2 * radii.pop()) if len(radii) == 1 and None not in radii else None,
        "radius_px": config.radius_px, "radius_A": config.radius_A,
        "pixel_size": pixel_sizes.pop() if len(pixel_sizes) == 1 else None,
        "background": config.background,
        "keep_fraction": config.keep_fraction,
        "settings": settings,
        "inputs": inputs,
        "matching": matching,
        "n_micrographs": len(stats),
        "n_particles": int(sum(s["n_used"] for s in stats.values())),
        "n_annotated": int(sum(s.get("n_annotated", s["n_used"]) for s in stats.values())),
        "n_outside": int(sum(s["n_outside"] for s in stats.values())),
        "micrographs": stats,
        "complete": len(stats) == len(names),
    }
    save_yaml(out / LABELS_FILE, summary)
    from crisp.qc import labels_qc_figure

    shown = [n for n in names if n in stats][:config.qc_count]
    qc = labels_qc_figure(out, shown, out / QC_FILE) if config.qc_count > 0 and shown else None
    run = LabelRun(out_dir=out, names=result.names, made=list(result.done), skipped=list(result.skipped),
                   micrographs=stats, matching=matching, seconds=time.perf_counter() - started,
                   messages=labeller.messages, qc_figure=qc, failed=dict(result.failed))
    result.raise_failures()
    return run
