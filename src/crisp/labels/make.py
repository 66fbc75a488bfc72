"""``crisp labels``: build a dataset folder (micrographs, masks, centres) from real data.

Inputs are micrographs (MRC, TIFF, PNG, JPG) and, per micrograph, particle coordinates in any format
:mod:`crisp.io.coordinates` reads (paired by file stem), or a RELION particle STAR of a refinement
together with a 3D mask for the ``reproject`` method. The output follows :mod:`crisp.dataset`:
``micrographs/NAME.mrc`` (float32 copy at the original resolution, pixel size in the header),
``masks/NAME.mrc`` (uint8 0/1), ``coordinates/NAME.star`` (the centres used, original pixels),
``labels.yaml`` (every setting and per-micrograph counts) and ``qc.png`` (overlay of the first
micrographs). A rerun with the same settings skips micrographs whose three files exist.
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

from crisp.config import StageConfig, read_yaml, save_yaml, to_plain
from crisp.dataset import DatasetFolder
from crisp.errors import CrispError

LABELS_FILE = "labels.yaml"
QC_FILE = "qc.png"
METHODS = ("disk", "threshold", "reproject")
_SETTINGS_IGNORED = ("qc_count",)  # settings that may change between a run and its resumption


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


def _settings(config: LabelConfig) -> dict:
    return {k: v for k, v in to_plain(config).items() if k not in _SETTINGS_IGNORED}


def _check_resume(out_dir: Path, settings: dict, inputs: dict) -> dict:
    """Previous labels.yaml content; error if it was made with other settings."""
    path = out_dir / LABELS_FILE
    if not path.is_file():
        return {}
    previous = read_yaml(path)
    defaults = _settings(LabelConfig())  # settings added later count as their defaults in older files
    before = {k: v for k, v in defaults.items() if k in settings} | previous.get("settings", {})
    changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise CrispError(f"holds labels made with other settings ({diffs}); choose another output folder "
                         "or delete this one", out_dir)
    return previous


def _drop_outside(df: pd.DataFrame, shape: tuple[int, int]) -> tuple[pd.DataFrame, int]:
    x = df["rlnCoordinateX"].to_numpy(float)
    y = df["rlnCoordinateY"].to_numpy(float)
    inside = (x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])
    return df[inside].reset_index(drop=True), int((~inside).sum())


def _write_star(path: Path, df: pd.DataFrame) -> None:
    import starfile

    from crisp.atomic import atomic_path

    with atomic_path(path) as tmp:
        starfile.write(df, tmp, overwrite=True)


def _read_star(path: Path) -> pd.DataFrame:
    import starfile

    df = starfile.read(path, always_dict=True)
    return next(iter(df.values())) if df else pd.DataFrame()


def _stats_from_files(folder: DatasetFolder, name: str, mic_path: Path, config: LabelConfig) -> dict:
    """Per-micrograph record rebuilt from the files of an interrupted run."""
    from crisp.io.micrographs import read_micrograph

    mask = read_micrograph(folder.mask(name))
    n_used = len(_read_star(folder.coordinates(name)))
    radius_px = None if config.method == "reproject" else config.radius_for(mask.pixel_size, mic_path)
    return {"source": str(mic_path), "coordinates": None, "shape": list(mask.shape),
            "pixel_size": mask.pixel_size, "radius_px": radius_px,
            "diameter_px": None if radius_px is None else 2 * radius_px, "n_coordinates": n_used,
            "n_used": n_used, "n_outside": 0, "mask_fraction": round(float(mask.data.mean()), 6),
            "resumed": True}


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


def make_labels(micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                out_dir: str | os.PathLike[str], config: LabelConfig | None = None, *,
                coordinates: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                particles: str | os.PathLike[str] | None = None,
                mask3d: str | os.PathLike[str] | None = None,
                progress: bool = True, echo: Callable[[str], None] | None = None) -> LabelRun:
    """Write a dataset folder of micrographs, label masks and centres.

    Parameters
    ----------
    micrographs
        A folder, glob pattern, file or list of these (MRC, TIFF, PNG, JPG).
    out_dir
        The dataset folder to write (see :mod:`crisp.dataset`).
    config
        :class:`LabelConfig`; ``method`` chooses ``disk``, ``threshold`` or ``reproject``.
    coordinates
        Coordinate files or a folder of them (methods ``disk`` and ``threshold``), paired with the
        micrographs by file stem. ``x`` = column and ``y`` = row of the micrograph as read; use
        ``config.flip_y`` when the picker counted rows from the other edge.
    particles, mask3d
        RELION particle STAR of a refinement and a 3D mask or map (MRC), for ``reproject``.
    progress
        Show a progress bar.
    echo
        Where to print the pairing report and warnings (default: ``tqdm.write``).

    Returns
    -------
    LabelRun

    Raises
    ------
    CrispError
        No micrographs, no pairs, radius missing, Å radius without pixel size, a coordinate file
        whose every centre falls outside its micrograph, settings that differ from those of a
        previous run in ``out_dir``, unreadable inputs.
    """
    from tqdm.auto import tqdm

    from crisp import __version__
    from crisp.io.coordinates import flip_y, read_coordinates
    from crisp.io.micrographs import list_micrographs, read_micrograph, write_mrc

    config = config or LabelConfig()
    _validate(config)
    say = echo or tqdm.write
    out = Path(out_dir)
    folder = DatasetFolder(out)
    started = time.perf_counter()
    mic_paths = list_micrographs(micrographs)
    volume = particle_table = None
    if config.method == "reproject":
        if particles is None or mask3d is None:
            raise CrispError("method 'reproject' needs --particles (RELION STAR of a refinement) and "
                             "--mask3d (3D mask or map, MRC)")
        from crisp.labels.reproject import read_particles, read_volume

        particle_table = read_particles(particles, config.pixel_size)
        volume = read_volume(mask3d)
        pairs, matching, report = _pair_table(mic_paths, particle_table, str(particles))
    else:
        if coordinates is None:
            raise CrispError(f"method '{config.method}' needs coordinates: give --coords")
        pairs, matching, report = _pair_coordinates(mic_paths, coordinates, config)
    say(report)
    if not pairs:
        raise CrispError("no micrograph could be paired with coordinates (pairing is by file stem); "
                         "nothing to do", out)
    settings = _settings(config)
    inputs = {"micrographs": [str(p) for p in mic_paths] if len(mic_paths) <= 50 else str(micrographs),
              "coordinates": None if coordinates is None else to_plain(coordinates),
              "particles": None if particles is None else str(particles),
              "mask3d": None if mask3d is None else str(mask3d)}
    previous = _check_resume(out, settings, inputs)
    stats: dict[str, dict] = dict(previous.get("micrographs") or {})
    if not previous:  # record the settings first, so that an interrupted run is resumed only with them
        save_yaml(out / LABELS_FILE, {"crisp_version": __version__, "method": config.method,
                                      "settings": settings, "inputs": inputs, "complete": False})
    names, made, skipped, messages = [], [], [], []
    for mic_path, source in tqdm(pairs, desc="labels", unit="micrograph", disable=not progress):
        name = mic_path.stem
        names.append(name)
        outputs = (folder.micrograph(name), folder.mask(name), folder.coordinates(name))
        if all(p.is_file() for p in outputs):
            if name not in stats:  # done by a run that was interrupted before writing its summary
                stats[name] = _stats_from_files(folder, name, mic_path, config)
            skipped.append(name)
            continue
        mic = read_micrograph(mic_path, pixel_size=config.pixel_size)
        if config.method == "reproject":
            pixel_size = config.pixel_size or mic.pixel_size
            table = flip_y(source, mic.shape[0]) if config.flip_y else source.copy()
            coord_source = str(particles)
            radius_px = None
            if not pixel_size:
                raise CrispError("pixel size unknown (no MRC header value, no rlnMicrographPixelSize): "
                                 "give --pixel-size", mic_path)
        else:
            pixel_size = mic.pixel_size
            radius_px = config.radius_for(pixel_size, mic_path)
            if isinstance(source, pd.DataFrame):
                table = flip_y(source, mic.shape[0]) if config.flip_y else source.copy()
                coord_source = str(inputs["coordinates"])
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
            messages.append(message)
            say("warning: " + message)
        mask, extra = _mask_for(config.method, config, mic.data, table, radius_px, pixel_size, volume)
        centres = table.copy()
        centres["rlnMicrographName"] = f"{name}.mrc"
        keep = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"] + [
            c for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAutopickFigureOfMerit")
            if c in centres.columns]
        _write_star(folder.coordinates(name), centres[keep])
        write_mrc(folder.micrograph(name), mic.data.astype(np.float32, copy=False), pixel_size=pixel_size)
        write_mrc(folder.mask(name), mask.astype(np.uint8, copy=False), pixel_size=pixel_size)
        stats[name] = {"source": str(mic_path), "coordinates": coord_source, "shape": list(mic.shape),
                       "pixel_size": pixel_size, "radius_px": radius_px,
                       "diameter_px": None if radius_px is None else 2 * radius_px,
                       "n_coordinates": n_read, "n_used": len(table), "n_outside": n_outside,
                       "mask_fraction": round(float(mask.mean()), 6), **extra}
        made.append(name)
    stats = {n: stats[n] for n in names if n in stats}
    radii = {s.get("radius_px") for s in stats.values()}
    pixel_sizes = {s.get("pixel_size") for s in stats.values()}
    summary = {
        "crisp_version": __version__,
        "method": config.method,
        "diameter_px": (2 * radii.pop()) if len(radii) == 1 and None not in radii else None,
        "radius_px": config.radius_px, "radius_A": config.radius_A,
        "pixel_size": pixel_sizes.pop() if len(pixel_sizes) == 1 else None,
        "settings": settings,
        "inputs": inputs,
        "matching": matching,
        "n_micrographs": len(stats),
        "n_particles": int(sum(s["n_used"] for s in stats.values())),
        "n_outside": int(sum(s["n_outside"] for s in stats.values())),
        "micrographs": stats,
        "complete": True,
    }
    save_yaml(out / LABELS_FILE, summary)
    from crisp.qc import labels_qc_figure

    qc = labels_qc_figure(out, names[:config.qc_count], out / QC_FILE) if config.qc_count > 0 else None
    return LabelRun(out_dir=out, names=names, made=made, skipped=skipped, micrographs=stats,
                    matching=matching, seconds=time.perf_counter() - started, messages=messages,
                    qc_figure=qc)
