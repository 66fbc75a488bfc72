"""Finding coordinate files and pairing them with micrographs by :func:`micrograph_stem`."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from crisp.errors import CrispError
from crisp.io.coordinates._common import loose_stem, micrograph_stem
from crisp.io.coordinates.registry import COORDINATE_SUFFIXES
from crisp.io.coordinates.star import index_table, is_index, listed_by_index, resolve_listed


def micrographs_by_stem(micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                        ) -> dict[str, Path]:
    """Micrograph files by the name they pair on: the one lister and the one pairing rule together.

    Parameters
    ----------
    micrographs
        What :func:`crisp.io.micrographs.list_micrographs` takes: a folder, glob pattern, file, or a
        list of these.

    Returns
    -------
    dict
        :func:`micrograph_stem` -> file, sorted by file.

    Raises
    ------
    CrispError
        Nothing found, a missing file, or two micrographs with the same stem.
    """
    from crisp.io.micrographs import list_micrographs

    lookup: dict[str, Path] = {}
    for path in list_micrographs(micrographs):
        stem = micrograph_stem(path)
        if stem in lookup:
            raise CrispError(f"micrographs {lookup[stem]} and {path} share the name stem '{stem}'")
        lookup[stem] = path
    return lookup


def list_coordinate_files(folder_or_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                          expand_index: bool = False) -> list[Path]:
    """Expand a folder, a glob pattern, a file, or a list of these to coordinate files.

    Parameters
    ----------
    folder_or_files
        Folder (its files ending in a coordinate extension, not recursive; hidden files skipped),
        glob pattern, file, or a list of these.
    expand_index
        Replace a RELION ``autopick.star`` index by the per-micrograph files it lists.

    Returns
    -------
    list of Path
        Sorted, without duplicates.
    """
    items = [folder_or_files] if isinstance(folder_or_files, (str, os.PathLike)) else list(folder_or_files)
    found: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                         and p.suffix.lower() in COORDINATE_SUFFIXES)
        elif path.is_file():
            found.add(path)
        elif glob.has_magic(str(item)):
            found.update(Path(p) for p in glob.glob(str(item))
                         if Path(p).is_file() and Path(p).suffix.lower() in COORDINATE_SUFFIXES)
        else:
            raise CrispError("no such file or folder", path)
    if expand_index:
        for path in [p for p in found if p.suffix.lower() == ".star" and is_index(p)]:
            found.discard(path)
            listed = {resolve_listed(str(e), path) for e in index_table(path)["rlnMicrographCoordinates"]}
            resolved = {p.resolve() for p in listed}
            found = {p for p in found if p.resolve() not in resolved} | listed  # the same file once
    if not found:
        raise CrispError("no coordinate files found (expected files ending in "
                         f"{', '.join(COORDINATE_SUFFIXES)})", items[0] if len(items) == 1 else None)
    return sorted(found)


def skip_listed(files: list[Path]) -> list[Path]:
    """``files`` without those an ``autopick.star`` index among them lists (so each is read once)."""
    indexes = [p for p in files if p.suffix.lower() == ".star" and is_index(p)]
    skip = set().union(*(listed_by_index(p) for p in indexes)) if indexes else set()
    return [p for p in files if p.resolve() not in skip]


@dataclass
class CoordinateMatch:
    """Micrographs paired with coordinate files by :func:`micrograph_stem`.

    Attributes
    ----------
    pairs
        (micrograph, coordinate file), in micrograph order.
    micrographs_without
        Micrographs with no coordinate file.
    coordinates_without
        Coordinate files with no micrograph.
    """

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    micrographs_without: list[Path] = field(default_factory=list)
    coordinates_without: list[Path] = field(default_factory=list)

    def report(self, limit: int = 10) -> str:
        """A few lines for a person: counts, then up to ``limit`` unmatched names per side."""
        lines = [f"{len(self.pairs)} micrograph(s) paired with a coordinate file"]
        for label, paths in (("micrograph(s) without coordinates", self.micrographs_without),
                             ("coordinate file(s) without a micrograph", self.coordinates_without)):
            lines.append(f"{len(paths)} {label}" + (":" if paths else ""))
            lines += [f"  {p}" for p in paths[:limit]]
            if len(paths) > limit:
                lines.append(f"  ... and {len(paths) - limit} more")
        return "\n".join(lines)


def _by_stem(paths: list[Path], key, what: str) -> dict[str, Path]:
    table: dict[str, Path] = {}
    for path in paths:
        stem = key(path.name)
        if stem in table:
            raise CrispError(f"{what} {table[stem]} and {path} share the name stem '{stem}'; "
                             "keep one of them (e.g. one format per folder)")
        table[stem] = path
    return table


def match_coordinates(micrograph_paths, coordinate_paths) -> CoordinateMatch:
    """Pair micrographs with coordinate files by :func:`micrograph_stem`.

    Stems must be equal; micrographs still unpaired are then tried without motion-correction
    suffixes (``_patch_aligned_doseweighted``, ``_doseweighted``, ``_DW``, ...) when that name is unique
    on both sides.

    Parameters
    ----------
    micrograph_paths
        Folder, glob, file, or list of these (see :func:`crisp.io.micrographs.list_micrographs`).
    coordinate_paths
        Folder, glob, file, or list of these; a RELION ``autopick.star`` index stands for the files it
        lists.

    Returns
    -------
    CoordinateMatch

    Raises
    ------
    CrispError
        No micrographs or coordinate files, or two files on one side with the same stem.
    """
    from crisp.io.micrographs import list_micrographs

    mics = _by_stem(list_micrographs(micrograph_paths), micrograph_stem, "micrographs")
    coords = _by_stem(list_coordinate_files(coordinate_paths, expand_index=True), micrograph_stem,
                      "coordinate files")
    paired = {stem: (mics[stem], coords[stem]) for stem in mics.keys() & coords.keys()}
    rest_m = {s: p for s, p in mics.items() if s not in paired}
    rest_c = {s: p for s, p in coords.items() if s not in paired}
    loose_m = pd.Series(list(rest_m)).map(loose_stem).value_counts() if rest_m else pd.Series(dtype=int)
    loose_c = pd.Series(list(rest_c)).map(loose_stem).value_counts() if rest_c else pd.Series(dtype=int)
    by_loose_c = {loose_stem(s): s for s in rest_c}
    for stem in list(rest_m):
        key = loose_stem(stem)
        if loose_m.get(key, 0) == 1 and loose_c.get(key, 0) == 1:
            c_stem = by_loose_c[key]
            paired[stem] = (rest_m.pop(stem), rest_c.pop(c_stem))
    pairs = sorted(paired.values())
    return CoordinateMatch(pairs=pairs, micrographs_without=sorted(rest_m.values()),
                           coordinates_without=sorted(rest_c.values()))
