"""Picking on files: probability maps in, RELION 4/5 AutoPick coordinate files out.

Layout written under ``PICKS_DIR``::

    PICKS_DIR/NAME_autopick.star   one table per micrograph: rlnCoordinateX/Y, rlnAutopickFigureOfMerit
    PICKS_DIR/autopick.star        index (data_coordinate_files): rlnMicrographName, rlnMicrographCoordinates
    PICKS_DIR/picker.yaml          the picker used (finder, parameters, recommended threshold)
    PICKS_DIR/box/NAME.box         optional EMAN boxes; topaz/NAME.txt (Topaz); cryoppp/NAME.csv (CryoPPP)

Coordinates are pixels of the original micrograph (probability maps have its size): x = column,
y = row. Every candidate keeps its score, so a threshold can be applied later (``crisp extract
--threshold``); ``threshold`` here drops candidates scoring below it at picking time. A rerun
skips micrographs whose coordinate file exists; the index is written last.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from crisp.config import save_yaml
from crisp.errors import CrispError
from crisp.picking.base import SCORE, drop_near_border
from crisp.picking.tune import PickerConfig

NAME = "rlnMicrographName"
FORMAT_FOLDERS = {"box": ("box", ".box"), "txt": ("topaz", ".txt"), "csv": ("cryoppp", ".csv")}
PICK_FORMATS = ("star", "box", "txt", "csv")


@dataclass
class PickResult:
    """What :func:`pick_files` did: the index, picks per micrograph, micrographs resumed."""

    index_path: Path
    per_micrograph: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0

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
    """Read one probability map (float32 array, [row, column])."""
    from crisp.io.micrographs import read_micrograph

    return read_micrograph(path).data


def _micrograph_names(maps: list[Path], micrographs: str | os.PathLike[str] | None) -> dict[str, str]:
    """Stem -> rlnMicrographName: the matching micrograph file, or the map's file name."""
    from crisp.io.coordinates import micrograph_stem

    if micrographs is None:
        return {micrograph_stem(p): p.name for p in maps}
    from crisp.io.micrographs import IMAGE_SUFFIXES, MRC_SUFFIXES

    folder = Path(micrographs)
    if not folder.is_dir():
        raise CrispError("not a folder of micrographs", folder)
    files = {micrograph_stem(p): p for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix.lower() in MRC_SUFFIXES + IMAGE_SUFFIXES}
    missing = [p.name for p in maps if micrograph_stem(p) not in files]
    if missing:
        raise CrispError(f"no micrograph for {len(missing)} probability map(s): {', '.join(missing[:5])}",
                         folder)
    return {micrograph_stem(p): str(files[micrograph_stem(p)]) for p in maps}


def _check_shape(prob_shape: tuple[int, int], micrograph: str, map_path: Path) -> None:
    """A probability map must have its micrograph's size (MRC headers only; others unchecked)."""
    import mrcfile

    if Path(micrograph).suffix.lower() not in (".mrc", ".mrcs"):
        return
    try:
        with mrcfile.open(micrograph, header_only=True, permissive=True) as mrc:
            shape = (int(mrc.header.ny), int(mrc.header.nx))
    except (ValueError, OSError, EOFError):
        return
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


def pick_files(prob_maps: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
               out_dir: str | os.PathLike[str], picker: PickerConfig, *, threshold: float | None = None,
               formats: Iterable[str] = ("star",), micrographs: str | os.PathLike[str] | None = None,
               box_size_px: float | None = None, progress: bool = True) -> PickResult:
    """Pick particles in probability maps and write RELION AutoPick files (module docstring).

    Parameters
    ----------
    prob_maps
        Folder of ``NAME.mrc`` foreground-probability maps at the micrographs' original size, a
        file, or a list of files.
    out_dir
        ``PICKS_DIR``.
    picker
        The finder, its parameters, the particle diameter and the edge margin (from ``crisp
        tune-picker``); the diameter is rescaled to each map's pixel size (:func:`map_diameter_px`)
        and picks closer than ``picker.border_fraction`` diameters to an edge are dropped.
    threshold
        Drop candidates with a score below it (default: keep every candidate).
    formats
        Any of ``star`` (always written), ``box``, ``txt`` (Topaz), ``csv`` (CryoPPP).
    micrographs
        Folder of the micrographs: their paths become ``rlnMicrographName`` and map sizes are
        checked against them. Default: the map's file name.
    box_size_px
        Box size of ``.box`` files (default: the particle diameter); CryoPPP ``.csv`` files get the
        particle diameter.
    progress
        Show a progress bar.

    Returns
    -------
    PickResult
    """
    from tqdm import tqdm

    from crisp.io.coordinates import micrograph_stem, read_coordinates, write_autopick, write_coordinates

    formats = {f.strip().lower() for f in formats if f.strip()} | {"star"}
    unknown = sorted(formats - set(PICK_FORMATS))
    if unknown:
        raise CrispError(f"unknown coordinate format(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(PICK_FORMATS)})")
    maps = list_maps(prob_maps)
    names = _micrograph_names(maps, micrographs)
    spec_params = picker.finder_params()
    from crisp.picking.registry import get_finder

    finder = get_finder(picker.finder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = PickResult(index_path=out / "autopick.star")
    frames = []
    for path in tqdm(maps, desc="pick", unit="mic", disable=not progress):
        stem = micrograph_stem(path)
        diameter = map_diameter_px(picker, path)
        box = float(box_size_px) if box_size_px is not None else round(diameter)
        star_path = out / f"{stem}_autopick.star"
        if star_path.is_file():
            picks = read_coordinates(star_path, micrograph_name=names[stem])
            picks[NAME] = names[stem]
            result.skipped_existing += 1
        else:
            prob = read_map(path)
            if micrographs is not None:
                _check_shape(prob.shape, names[stem], path)
            picks = drop_near_border(finder.function(prob, diameter, spec_params), prob.shape,
                                     picker.border_fraction * diameter)
            if threshold is not None:
                picks = picks[picks[SCORE] >= threshold].reset_index(drop=True)
            picks.insert(0, NAME, names[stem])
            write_coordinates(picks, star_path)
        for fmt in sorted(formats - {"star"}):
            folder, suffix = FORMAT_FOLDERS[fmt]
            target = out / folder / f"{stem}{suffix}"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                write_coordinates(picks, target, fmt, box_size=box if fmt == "box" else diameter)
        result.per_micrograph[stem] = len(picks)
        frames.append(picks)
    all_picks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({NAME: []})
    save_yaml(out / "picker.yaml", picker)
    write_autopick(all_picks, out, micrograph_paths=[names[micrograph_stem(p)] for p in maps])
    return result
