"""Picking on files: probability maps in, RELION 4/5 AutoPick coordinate files out.

Layout written under ``PICKS_DIR``::

    PICKS_DIR/NAME_autopick.star   one table per micrograph: rlnCoordinateX/Y, rlnAutopickFigureOfMerit
                                   (micrographs of a RELION project, e.g. MotionCorr/job002/Movies/NAME.mrc:
                                   PICKS_DIR/Movies/NAME_autopick.star, RELION's AutoPick layout, where
                                   relion_preprocess --coord_dir PICKS_DIR/ --coord_suffix _autopick.star
                                   finds them)
    PICKS_DIR/autopick.star        index (data_coordinate_files): rlnMicrographName, rlnMicrographCoordinates
    PICKS_DIR/picker.yaml          the picker used (finder, parameters, recommended threshold)
    PICKS_DIR/box/NAME.box         optional EMAN boxes; topaz/NAME.txt (Topaz); cryoppp/NAME.csv (CryoPPP)
    PICKS_DIR/crisp-batch.json     the batch manifest (settings); .crisp-batch/ the per-micrograph records

Coordinates are pixels of the original micrograph (probability maps have its size): x = column,
y = row. Every candidate keeps its score, so a threshold can be applied later (``crisp extract
--threshold``); ``threshold`` here drops candidates scoring below it at picking time.

Picking runs on the batch engine (:mod:`crisp.batch`, verb ``pick``; its manifest
``crisp-batch.json`` and records ``.crisp-batch/`` sit beside the picks): one item per map, whose
outputs are all its coordinate files, written from one in-memory table. A rerun skips micrographs
done with the same settings (:func:`pick_settings`), refuses other settings naming the one that
differs (unless ``overwrite``), and redoes a micrograph whose map changed. ``picker.yaml`` and the
index are written after the batch, the index from the records of every micrograph done in the
folder (so shards of one work list give one index).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.batch import Item, Staging, read_records, run_batch
from crisp.config import save_yaml
from crisp.errors import CrispError
from crisp.picking.base import SCORE, drop_near_border
from crisp.picking.tune import PickerConfig

NAME = "rlnMicrographName"
FORMAT_FOLDERS = {"box": ("box", ".box"), "txt": ("topaz", ".txt"), "csv": ("cryoppp", ".csv")}
PICK_FORMATS = ("star", "box", "txt", "csv")
STAR_SUFFIX = "_autopick.star"
INDEX_NAME = "autopick.star"


@dataclass
class PickResult:
    """What :func:`pick_files` did: the index, picks per micrograph of this run's work list,
    micrographs done before (skipped), micrographs that failed (name -> error)."""

    index_path: Path
    per_micrograph: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def n_picks(self) -> int:
        return int(sum(self.per_micrograph.values()))


def list_maps(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Probability maps: a folder's ``*.mrc`` files (sorted), one file, or a list of files."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            maps = sorted(p for p in path.glob("*.mrc") if not p.name.startswith("."))
            if not maps:
                raise CrispError("no probability maps (*.mrc) in the folder", path)
            return maps
        if not path.is_file():
            raise CrispError("no such file or folder", path)
        return [path]
    maps = [Path(p) for p in source]
    for path in maps:
        if not path.is_file():
            raise CrispError("file not found", path)
    return maps


def read_map(path: str | os.PathLike[str]):
    """Read one probability map (float32 array, [row, column]); values outside [0, 1] (a micrograph
    given instead of ``crisp segment``'s map) are a :class:`CrispError` naming the file."""
    from crisp.io.micrographs import read_micrograph
    from crisp.picking.base import check_probability_range

    data = read_micrograph(path).data
    check_probability_range(data, path)
    return data


def _micrograph_names(maps: list[Path], micrographs) -> dict[str, str]:
    """Stem -> rlnMicrographName: the matching micrograph file (from a folder or a list of files),
    or the map's file name."""
    from crisp.io.coordinates import micrograph_stem

    if micrographs is None:
        return {micrograph_stem(p): p.name for p in maps}
    if isinstance(micrographs, (str, os.PathLike)):
        from crisp.io.coordinates.pairing import micrographs_by_stem

        folder = Path(micrographs)
        if not folder.is_dir():
            raise CrispError("not a folder of micrographs", folder)
        files = micrographs_by_stem(folder)
    else:  # a list of micrograph files (e.g. a RELION micrographs STAR's rlnMicrographName)
        files = {micrograph_stem(p): Path(p) for p in micrographs}
        folder = Path(next(iter(files.values()), Path("."))).parent
    missing = [p.name for p in maps if micrograph_stem(p) not in files]
    if missing:
        raise CrispError(f"no micrograph for {len(missing)} probability map(s): {', '.join(missing[:5])}",
                         folder)
    return {micrograph_stem(p): str(files[micrograph_stem(p)]) for p in maps}


def _check_shape(prob_shape: tuple[int, int], micrograph: str, map_path: Path) -> None:
    """A probability map must have its micrograph's size (read from the header of any format:
    MRC, TIFF, PNG, JPG)."""
    from crisp.io.micrographs import read_micrograph_shape

    shape = read_micrograph_shape(micrograph)
    if shape != tuple(prob_shape):
        raise CrispError(f"probability map is {prob_shape[1]} x {prob_shape[0]} px but its micrograph "
                         f"{micrograph} is {shape[1]} x {shape[0]} px (maps must be at original size)",
                         map_path)


def map_diameter_px(picker: PickerConfig, path: str | os.PathLike[str]) -> float:
    """The picker's particle diameter in pixels of the map ``path``.

    ``picker.diameter_px`` rescaled by ``picker.pixel_size / map pixel size`` when both are known
    and differ by more than 1 % (a picker tuned at 1.77 Å/px applied to a 0.666 Å/px micrograph's
    map finds particles 2.66 times wider in pixels); otherwise ``picker.diameter_px`` unchanged.
    """
    from crisp.io.micrographs import pixel_size_ratio, read_header_pixel_size

    return picker.diameter_px * pixel_size_ratio(picker.pixel_size, read_header_pixel_size(path))


def with_diameter(picker: PickerConfig, maps: Iterable[str | os.PathLike[str]], diameter_A: float | None,
                  diameter_px: float | None) -> PickerConfig:
    """The picker set to a particle diameter the user gives: ``diameter_px`` (pixels of the maps) or
    ``diameter_A`` (Å, converted with the maps' header pixel sizes, which must be known).

    A picker of a diameter-scaled run (``diameter_scaled``, a bundled general model) needs one: its
    finder settings are relative to the diameter, its ``diameter_px`` belongs to the network's grid.
    Without either, any other picker is returned unchanged.

    Raises
    ------
    CrispError
        Both diameters, a non-positive one, a diameter-scaled picker without one, or ``diameter_A``
        with a map that has no pixel size.
    """
    from crisp.io.micrographs import read_header_pixel_size
    from crisp.predict import diameter_given

    if not diameter_given(diameter_A, diameter_px):
        if picker.diameter_scaled:
            raise CrispError("the picker belongs to a diameter-scaled model: give the particle diameter "
                             "with --diameter-A or --diameter-px")
        return picker
    if diameter_px is not None:
        return picker.model_copy(update={"diameter_px": float(diameter_px), "pixel_size": None,
                                         "diameter_scaled": False})
    reference = None
    for path in maps:
        pixel_size = read_header_pixel_size(path)
        if pixel_size is None:
            raise CrispError("the map has no pixel size to convert --diameter-A: give --diameter-px", path)
        reference = reference or pixel_size
    if reference is None:
        raise CrispError("no probability maps to pick")
    return picker.model_copy(update={"diameter_px": float(diameter_A) / reference, "pixel_size": reference,
                                     "diameter_scaled": False})


def pick_settings(picker: PickerConfig, *, threshold: float | None, formats: Iterable[str],
                  box_size_px: float | None) -> dict:
    """Every setting that decides the picks and their files (the batch's settings).

    The finder's parameters are resolved (defaults filled in) and listed one key each
    (``params.NAME``), so a refused rerun names the parameter that differs.
    """
    params = picker.finder_params().model_dump(mode="json")
    settings = {"finder": picker.finder, **{f"params.{k}": v for k, v in sorted(params.items())},
                "diameter_px": picker.diameter_px, "pixel_size": picker.pixel_size,
                "border_fraction": picker.border_fraction, "threshold": threshold,
                "picker_threshold": picker.threshold, "picker_validation": dict(picker.validation),
                "formats": sorted(formats), "box_size_px": box_size_px}
    return settings


def pick_map(prob: np.ndarray, picker: PickerConfig, diameter_px: float, *,
             scale: tuple[float, float] = (1.0, 1.0), shape: tuple[int, int] | None = None,
             threshold: float | None = None) -> pd.DataFrame:
    """Pick one in-memory probability map; coordinates in pixels of the micrograph.

    Parameters
    ----------
    prob
        Foreground probability ``[row, column]``, on the micrograph's grid or on a coarser one
        (the network's: Fourier binning puts map pixel ``j`` at micrograph coordinate ``j * scale``).
    picker
        Finder, parameters and ``border_fraction``.
    diameter_px
        Particle diameter in pixels of the micrograph; the finder gets it in pixels of ``prob``
        (divided by the geometric mean of ``scale``).
    scale
        ``(row, column)`` micrograph pixels per map pixel (``N / M`` per axis; 1 for a full-size map).
    shape
        The micrograph's shape (default: the map's); picks closer than ``border_fraction``
        diameters to its edges are dropped.
    threshold
        Drop candidates scoring below it (None: keep all).

    Returns
    -------
    DataFrame
        ``rlnCoordinateX/Y`` (micrograph pixels), ``rlnAutopickFigureOfMerit``, by decreasing score.
    """
    from crisp.picking.base import X, Y
    from crisp.picking.registry import get_finder

    scale_y, scale_x = (float(v) for v in scale)
    picks = get_finder(picker.finder).function(prob, diameter_px / float(np.sqrt(scale_y * scale_x)),
                                               picker.finder_params())
    if (scale_y, scale_x) != (1.0, 1.0):
        picks[X] = picks[X] * scale_x
        picks[Y] = picks[Y] * scale_y
    picks = drop_near_border(picks, tuple(shape) if shape is not None else prob.shape,
                             picker.border_fraction * diameter_px)
    if threshold is not None:
        picks = picks[picks[SCORE] >= threshold].reset_index(drop=True)
    return picks


def _outputs(stem: str, name: str, formats: set[str]) -> tuple[str, ...]:
    """An item's files, relative to ``PICKS_DIR``: the STAR file (RELION's layout for micrographs
    of a RELION project, :func:`crisp.io.coordinates.coordinate_file_name`), then the other formats."""
    from crisp.io.coordinates import coordinate_file_name

    others = [f"{FORMAT_FOLDERS[f][0]}/{stem}{FORMAT_FOLDERS[f][1]}" for f in sorted(formats - {"star"})]
    return (coordinate_file_name(name, STAR_SUFFIX), *others)


def _write_picks(picks: pd.DataFrame, stem: str, name: str, staging: Staging, formats: set[str],
                 box: float, diameter: float) -> None:
    """Write one micrograph's picks in every format from the same table (no format is derived
    from another's rounded text)."""
    from crisp.io.coordinates import coordinate_file_name, write_autopick, write_coordinates

    relative = coordinate_file_name(name, STAR_SUFFIX)
    star = staging.path(relative)
    scratch = star.parent / "star"  # write_autopick's own per-micrograph layout, then just that file
    write_autopick(picks, scratch, micrograph_paths=[name])
    os.replace(scratch / relative, star)
    for fmt in sorted(formats - {"star"}):
        folder, suffix = FORMAT_FOLDERS[fmt]
        write_coordinates(picks, staging.path(f"{folder}/{stem}{suffix}"), fmt,
                          box_size=box if fmt == "box" else diameter)


def write_index(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``PICKS_DIR/autopick.star`` from the batch records of every micrograph done in the folder.

    Shards of one work list run into one folder therefore give one index of all their micrographs.
    The coordinate paths are ``out_dir/NAME_autopick.star`` (or RELION's layout, see
    :func:`_outputs`) exactly as ``out_dir`` was given (a relative ``out_dir`` given from a RELION
    project folder gives project-relative paths).
    """
    from crisp.io.coordinates import COORDS_FILE, coordinate_file_name, write_star

    out = Path(out_dir)
    rows = []
    for _stem, record in sorted(read_records(out).items()):
        name = record.get("result", {}).get("micrograph")
        if record.get("status") != "done" or name is None:
            continue
        target = out / coordinate_file_name(name, STAR_SUFFIX)
        if target.is_file():
            rows.append({NAME: name, COORDS_FILE: str(target)})
    index = pd.DataFrame(rows, columns=[NAME, COORDS_FILE])
    return write_star({"coordinate_files": index}, out / INDEX_NAME)


def pick_files(prob_maps: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
               out_dir: str | os.PathLike[str], picker: PickerConfig, *, threshold: float | None = None,
               formats: Iterable[str] = ("star",),
               micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
               box_size_px: float | None = None, progress: bool = True, overwrite: bool = False,
               keep_going: bool = False, shard: tuple[int, int] | None = None,
               input_dirs: Iterable[str | os.PathLike[str]] = (), diameter_A: float | None = None,
               diameter_px: float | None = None) -> PickResult:
    """Pick particles in probability maps and write RELION AutoPick files (module docstring).

    Runs on the batch engine (:func:`crisp.batch.run_batch`, verb ``pick``): one item per map,
    whose outputs are its coordinate files in every format asked for; the settings are
    :func:`pick_settings`. ``picker.yaml`` and the index are written after the batch.

    Parameters
    ----------
    prob_maps
        Folder of ``NAME.mrc`` foreground-probability maps at the micrographs' original size, a
        file, or a list of files.
    out_dir
        ``PICKS_DIR``. It may not be the maps' or the micrographs' folder.
    picker
        The finder, its parameters, the particle diameter and the edge margin (from ``crisp
        tune-picker``); the diameter is rescaled to each map's pixel size (:func:`map_diameter_px`)
        and picks closer than ``picker.border_fraction`` diameters to an edge are dropped.
    threshold
        Drop candidates with a score below it (default: keep every candidate).
    formats
        Any of ``star`` (always written), ``box``, ``txt`` (Topaz), ``csv`` (CryoPPP).
    micrographs
        Folder of the micrographs, or a list of micrograph files: their paths become
        ``rlnMicrographName`` (and decide the coordinate files' layout) and map sizes are checked
        against them. Default: the map's file name.
    box_size_px
        Box size of ``.box`` files (default: the particle diameter); CryoPPP ``.csv`` files get the
        particle diameter.
    progress
        Show a progress bar.
    overwrite
        Recompute every micrograph, also when ``out_dir`` holds picks of other settings (without
        it, other settings are refused naming the setting that differs).
    keep_going
        Go on after a micrograph fails (they are listed at the end); default: stop at the first.
    shard
        ``(I, N)``: pick only the I-th of N shares of the maps (:func:`crisp.batch.select_shard`).
    input_dirs
        Further folders the inputs came from (``out_dir`` may not be one of them).
    diameter_A, diameter_px
        The particle diameter, replacing the picker's (:func:`with_diameter`): needed with the
        picker of a diameter-scaled run (a bundled general model), whose ``diameter_px`` is not that
        of your particle.

    Returns
    -------
    PickResult

    Raises
    ------
    CrispError
        Bad inputs, other settings in ``out_dir`` without ``overwrite``, or failed micrographs.
    """
    from crisp.io.coordinates import micrograph_stem
    from crisp.picking.base import check_probability_range
    from crisp.picking.registry import get_finder

    formats = {f.strip().lower() for f in formats if f.strip()} | {"star"}
    unknown = sorted(formats - set(PICK_FORMATS))
    if unknown:
        raise CrispError(f"unknown coordinate format(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(PICK_FORMATS)})")
    from crisp.models.bundled_names import check_writable

    check_writable(out_dir, "picks")
    maps = list_maps(prob_maps)
    picker = with_diameter(picker, maps, diameter_A, diameter_px)  # a diameter-scaled picker needs one
    names = _micrograph_names(maps, micrographs)
    if micrographs is not None:  # every size checked from the headers before anything is written
        from crisp.io.micrographs import read_micrograph_shape

        for path in maps:
            _check_shape(read_micrograph_shape(path), names[micrograph_stem(path)], path)
    get_finder(picker.finder)  # an unknown finder before anything is written
    settings = pick_settings(picker, threshold=threshold, formats=formats, box_size_px=box_size_px)
    items = []
    for path in maps:
        stem = micrograph_stem(path)
        inputs = (path,) if micrographs is None else (path, Path(names[stem]))
        items.append(Item(stem, inputs=inputs, outputs=_outputs(stem, names[stem], formats), data=path))

    def pick_one(item: Item, staging: Staging) -> dict:
        path, stem = item.data, item.name
        diameter = map_diameter_px(picker, path)
        box = float(box_size_px) if box_size_px is not None else round(diameter)
        prob = read_map(path)
        check_probability_range(prob, path)
        picks = pick_map(prob, picker, diameter, threshold=threshold)
        picks.insert(0, NAME, names[stem])
        _write_picks(picks, stem, names[stem], staging, formats, box, diameter)
        return {"micrograph": names[stem], "n_picks": len(picks)}

    folders = [*input_dirs, *(p for p in (prob_maps, micrographs)
                              if isinstance(p, (str, os.PathLike)) and Path(p).is_dir())]
    if micrographs is not None and not isinstance(micrographs, (str, os.PathLike)):
        folders += sorted({str(Path(names[micrograph_stem(p)]).parent) for p in maps})
    out = Path(out_dir)
    batch = run_batch("pick", items, pick_one, out, settings, overwrite=overwrite, keep_going=keep_going,
                      progress=progress, shard=shard, input_dirs=folders)
    return finish_picks(out, picker, batch)


def finish_picks(out_dir: str | os.PathLike[str], picker: PickerConfig, batch) -> PickResult:
    """After a picking batch: write ``picker.yaml`` and the ``autopick.star`` index of every micrograph
    picked in ``out_dir`` (all shards), and raise the batch's failures, if any, after that."""
    out = Path(out_dir)
    save_yaml(out / "picker.yaml", picker)
    result = PickResult(index_path=write_index(out), skipped_existing=len(batch.skipped),
                        failed=dict(batch.failed))
    result.per_micrograph = {name: int(batch.records[name]["n_picks"]) for name in batch.names
                             if name in batch.records}
    batch.raise_failures()
    return result
