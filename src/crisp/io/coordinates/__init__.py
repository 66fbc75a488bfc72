"""Particle coordinates: one in-memory table, many file formats.

In memory, picks are a :class:`pandas.DataFrame` with RELION column names (no leading underscore,
as :mod:`starfile` reads them): ``rlnMicrographName``, ``rlnCoordinateX``, ``rlnCoordinateY`` and
optional ``rlnAutopickFigureOfMerit``, ``rlnAngleRot/Tilt/Psi``, ``rlnDefocusU/V``,
``rlnDefocusAngle``, ``rlnOriginXAngst/YAngst``, ``rlnClassNumber``, ... ``rlnCoordinateX`` is the
column and ``rlnCoordinateY`` the row of the micrograph array as :mod:`mrcfile` returns it, in
pixels of the original (unbinned) micrograph. Other conventions come in only through an explicit
:func:`flip_y`.

Formats (``fmt``; by default from the file extension), one module each, listed in :data:`FORMATS`
(:mod:`.registry`); a new format is one module with a :class:`CoordinateFormat` and one entry there:

==========  =========  ==============================================================================
fmt         extension  content
==========  =========  ==============================================================================
``star``    .star      RELION (:mod:`.star`): 3.0 single table; 3.1+ ``optics`` + ``particles``
                       (optics merged in per ``rlnOpticsGroup``, the optics table kept in
                       ``df.attrs["optics"]`` so that STAR output keeps it); or an ``autopick.star``
                       index (``data_coordinate_files``: ``rlnMicrographName``,
                       ``rlnMicrographCoordinates``) whose per-micrograph files are all read.
``box``     .box       EMAN (:mod:`.box`): ``x_corner y_corner width height`` per line, integers;
                       centre = corner + size / 2.
``txt``     .txt/.tsv  Topaz (:mod:`.topaz`): tab-separated, header ``image_name x_coord y_coord score``.
``csv``     .csv       CryoPPP (:mod:`.cryoppp`): ``X-Coordinate,Y-Coordinate,Diameter`` (extra
                       columns ignored).
``cs``      .cs        cryoSPARC (:mod:`.cs`, read only): numpy structured array with
                       ``location/center_x_frac``, ``location/center_y_frac``,
                       ``location/micrograph_shape`` ([ny, nx]) and ``location/micrograph_path``;
                       x = frac_x * nx, y = frac_y * ny.
==========  =========  ==============================================================================

``.box`` and ``.csv`` files hold the picks of one micrograph; they carry no micrograph name, so
the name given by the caller or the file's stem is used. Micrographs and coordinate files are paired
by :func:`micrograph_stem`. Every STAR file of this package is written by :func:`write_star`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from crisp.errors import CrispError
from crisp.io.coordinates._common import (
    COORDS_FILE,
    DIAMETER,
    FOM,
    NAME,
    OPTICS_GROUP,
    OPTICS_GROUP_NAME,
    CoordinateFormat,
    X,
    Y,
    check_inside_height,
    check_ny,
    finish,
    flip_y,
    group_by_micrograph,
    micrograph_lookup,
    micrograph_stem,
    positive_size,
    scale_coordinates,
)
from crisp.io.coordinates.pairing import (
    CoordinateMatch,
    list_coordinate_files,
    match_coordinates,
    skip_listed,
)
from crisp.io.coordinates.registry import (
    COORDINATE_SUFFIXES,
    FORMAT_ALIASES,
    FORMAT_SUFFIXES,
    FORMATS,
    WRITE_FORMATS,
    get_format,
    resolve_format,
    sniff_format,
)
from crisp.io.coordinates.star import (
    RELION_STAR_VERSION,
    STAR_VERSIONS,
    coordinate_file_name,
    optics_table,
    read_autopick,
    read_star_tables,
    write_autopick,
    write_star,
)

__all__ = [
    "COORDINATE_SUFFIXES", "COORDS_FILE", "DIAMETER", "FOM", "FORMATS", "FORMAT_ALIASES", "FORMAT_SUFFIXES",
    "NAME", "OPTICS_GROUP", "OPTICS_GROUP_NAME", "RELION_STAR_VERSION", "STAR_VERSIONS", "WRITE_FORMATS", "X",
    "Y", "CoordinateFormat", "CoordinateMatch", "convert_coordinates", "coordinate_file_name", "flip_y",
    "get_format",
    "group_by_micrograph", "list_coordinate_files", "match_coordinates", "micrograph_stem", "optics_table",
    "read_autopick", "read_coordinates", "read_star_tables", "resolve_format", "scale_coordinates",
    "sniff_format", "write_autopick", "write_coordinates", "write_star",
]


# ----------------------------------------------------------------------------------------------
# one file
# ----------------------------------------------------------------------------------------------
def read_coordinates(path: str | os.PathLike[str], fmt: str | None = None, *,
                     micrograph_name: str | None = None, micrograph_shape: tuple[int, int] | None = None,
                     flip_y: bool = False) -> pd.DataFrame:
    """Read a coordinate file into the picks table (see the module docstring).

    Parameters
    ----------
    path
        The file.
    fmt
        ``star``, ``box``, ``txt``, ``csv``, ``cs`` (or an alias); default from the extension.
    micrograph_name
        ``rlnMicrographName`` for formats or files that carry none (default: the file's
        :func:`micrograph_stem`).
    micrograph_shape
        (ny, nx) of the micrograph in pixels; needed for ``flip_y`` (except for ``.cs``, which
        stores each micrograph's shape).
    flip_y
        The file counts rows from the other edge: apply :func:`flip_y` after reading.

    Returns
    -------
    pandas.DataFrame
        ``rlnMicrographName``, ``rlnCoordinateX``, ``rlnCoordinateY`` first, then any other column
        (``rlnAutopickFigureOfMerit`` from Topaz scores, ``rlnDiameter`` from CryoPPP, optics values
        merged per ``rlnOpticsGroup`` from RELION 3.1+). For ``.box`` files with one box size, the size
        in pixels is kept in ``df.attrs["box_size_px"]``; for RELION 3.1+ files the optics table in
        ``df.attrs["optics"]``.

    Raises
    ------
    CrispError
        Missing file, unknown format, missing required columns, values that are not numbers,
        ``flip_y`` without ``micrograph_shape``. The message names the file.
    """
    path = Path(path)
    kind = get_format(path, fmt)
    if not path.is_file():
        raise CrispError("file not found" if not path.exists() else "is not a file", path)
    ny = None
    if micrograph_shape is not None:
        if len(tuple(micrograph_shape)) != 2:
            raise CrispError(f"micrograph_shape must be (ny, nx); got {micrograph_shape}", path)
        ny = check_ny(tuple(micrograph_shape)[0], path)
    if flip_y and ny is None and kind.heights is None:
        raise CrispError("flipping y needs the micrograph height: give micrograph_shape=(ny, nx) "
                         "(CLI: --micrograph-shape NY NX or --micrographs DIR)", path)
    df = kind.read(path, micrograph_name)
    if flip_y:
        attrs = dict(df.attrs)
        if ny is not None:
            df = _flip(df, ny)
        else:  # the file records each micrograph's height
            df = df.copy()
            df[Y] = (kind.heights(path) - 1) - df[Y].to_numpy(dtype=float)
        df.attrs.update(attrs)
    return df


_flip = flip_y  # read_coordinates has a parameter of the same name


def write_coordinates(df: pd.DataFrame, path: str | os.PathLike[str], fmt: str | None = None, *,
                      box_size: float | None = None, optics=None, star_version: str | None = None) -> Path:
    """Write a picks table to one file, atomically.

    Parameters
    ----------
    df
        Picks table (``rlnCoordinateX``, ``rlnCoordinateY`` required).
    path
        Destination.
    fmt
        ``star``, ``box``, ``txt`` or ``csv`` (or an alias); default from the extension.
    box_size
        Box size in pixels: required for ``.box`` (unless ``df.attrs["box_size_px"]`` holds it; rounded
        to whole pixels there, as ``.box`` corners and sizes are integers) and gives the ``Diameter``
        of ``.csv`` (else the ``rlnDiameter`` column).
    optics
        For ``.star``: a dict (one optics group) or a DataFrame (one row per group) of RELION optics
        values (``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``,
        ``rlnMicrographPixelSize``, ...). Default: the optics table the picks were read with
        (``df.attrs["optics"]``, from a RELION 3.1+ file). With optics: a RELION 3.1+ file with
        ``data_optics`` and ``data_particles``, each headed by ``# version 30001``; without: a RELION
        3.0 single table (no version line, so RELION converts it as a 3.0 file).
    star_version
        ``"3.0"`` forces a single table (optics values as per-particle columns); ``"3.1"`` requires
        optics; ``None`` chooses by whether optics are known.

    Returns
    -------
    Path

    Raises
    ------
    CrispError
        Unknown or read-only format, missing columns, a missing or non-positive box size, picks of
        several micrographs for a one-micrograph format, optics groups that do not match,
        ``star_version="3.1"`` without optics.
    """
    path = Path(path)
    kind = get_format(path, fmt)
    if kind.write is None:
        raise CrispError(f"cannot write the '{kind.name}' format (write .star and import it instead; "
                         f"writable: {', '.join(WRITE_FORMATS)})", path)
    df = finish(df, path, micrograph_stem(path))
    kind.write(df, path, box_size=box_size, optics=optics, star_version=star_version)
    return path


# ----------------------------------------------------------------------------------------------
# conversion (crisp convert)
# ----------------------------------------------------------------------------------------------
def _combined_optics(frames: list[pd.DataFrame], out: Path) -> pd.DataFrame | None:
    """One optics table for picks read from several files (None when none came with optics)."""
    tables = [optics_table(f) for f in frames]
    if all(t is None for t in tables):
        return None
    if any(t is None and len(f) for t, f in zip(tables, frames, strict=True)):
        raise CrispError("some inputs have a RELION 3.1 optics table and others do not, so one RELION 3.1 "
                         "file cannot hold them; convert them separately, or write RELION 3.0 "
                         "(--star-version 3.0)", out)
    table = pd.concat([t for t in tables if t is not None], ignore_index=True).drop_duplicates()
    if OPTICS_GROUP in table.columns and table[OPTICS_GROUP].duplicated().any():
        group = table.loc[table[OPTICS_GROUP].duplicated(), OPTICS_GROUP].iloc[0]
        raise CrispError(f"the inputs give different optics values for optics group {group}; convert them "
                         "separately, or write RELION 3.0 (--star-version 3.0)", out)
    return table.reset_index(drop=True)


def _flip_groups(groups: dict[str, pd.DataFrame], out: Path, micrograph_shape, lookup) -> None:
    """Flip each micrograph's picks in place with its height; refuse picks outside that height."""
    from crisp.io.micrographs import read_micrograph_shape

    for stem, group in groups.items():
        if micrograph_shape is not None:
            ny, where = check_ny(micrograph_shape[0], out), out
        else:
            where = lookup[stem]
            ny = check_ny(read_micrograph_shape(where)[0], where)
        check_inside_height(group, ny, where)
        groups[stem] = _flip(group, ny)


def convert_coordinates(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                        output: str | os.PathLike[str], fmt: str | None = None, *,
                        input_format: str | None = None, box_size: float | None = None, flip: bool = False,
                        micrograph_shape: tuple[int, int] | None = None,
                        micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                        star_version: str | None = None) -> list[Path]:
    """Convert coordinate files between formats.

    Parameters
    ----------
    inputs
        A coordinate file, a folder of them, a glob pattern, or a list of these. An ``autopick.star``
        index stands for the files it lists (listed files beside it are not read twice).
    output
        A file (its extension, or ``fmt``, gives the format; all picks go into it) or a folder: one
        file per micrograph named ``<stem>.<ext>``; for ``star`` the RELION AutoPick layout of
        :func:`write_autopick` (``<stem>_autopick.star`` files and ``autopick.star``).
    fmt
        Output format (default: from ``output``'s extension; ``star`` for a folder).
    input_format
        Format of the inputs (default: from each file's extension).
    box_size
        Box size in pixels for ``.box`` and the diameter of ``.csv``.
    flip
        Count rows from the other edge (``y' = ny - 1 - y``) with each micrograph's height ``ny``:
        from ``micrograph_shape``, else from ``micrographs`` (their headers), else from the file itself
        (cryoSPARC ``.cs``). Refused when the height is unknown, and when a pick lies outside the rows
        of its micrograph (its flipped y would be outside the micrograph, e.g. negative).
    micrograph_shape
        (ny, nx) in pixels, the same for every micrograph.
    micrographs
        Micrograph files (folder, glob, list), paired with the picks by :func:`micrograph_stem`: they
        give the heights for ``flip`` and become ``rlnMicrographName`` in STAR outputs.
    star_version
        For a single ``.star`` output: ``None`` keeps the RELION 3.1 optics table of the inputs (a
        3.0 table when they have none), ``"3.0"`` writes one table with optics values per particle,
        ``"3.1"`` requires optics.

    Returns
    -------
    list of Path
        The files written.
    """
    from crisp.io.micrographs import list_micrographs

    out = Path(output)
    if box_size is not None:
        positive_size(box_size, "coordinates", out)
    if star_version is not None and str(star_version) not in STAR_VERSIONS:
        raise CrispError(f"unknown RELION STAR version '{star_version}' (expected 3.0 or 3.1)")
    files = skip_listed(list_coordinate_files(inputs))
    lookup = micrograph_lookup(list_micrographs(micrographs)) if micrographs is not None else None
    own_heights = flip and micrograph_shape is None and lookup is None
    frames, box_sizes = [], set()
    for path in files:
        if own_heights and get_format(path, input_format).heights is None:
            raise CrispError("flipping y needs the micrograph height: give --micrograph-shape NY NX or "
                             "--micrographs DIR", path)
        frame = read_coordinates(path, input_format, flip_y=own_heights)
        box_sizes.add(frame.attrs.get("box_size_px"))
        frames.append(frame)
    picks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({NAME: [], X: [], Y: []})
    picks.attrs = {}
    if box_size is None and len(box_sizes) == 1:
        box_size = box_sizes.pop()
    groups = group_by_micrograph(picks) if len(picks) else {}
    if lookup is not None:
        unmatched = sorted(set(groups) - set(lookup))
        if unmatched:
            raise CrispError(f"{len(unmatched)} micrograph name(s) of the picks match no micrograph file: "
                             f"{', '.join(unmatched[:5])}", str(micrographs))
    if flip and not own_heights:
        _flip_groups(groups, out, micrograph_shape, lookup)
    if lookup is not None:
        groups = {stem: g.assign(**{NAME: lookup[stem]}) for stem, g in groups.items()}
    picks = pd.concat(list(groups.values()), ignore_index=True) if groups else picks
    single_file = out.suffix.lower() in COORDINATE_SUFFIXES and not out.is_dir()
    if single_file:
        kind = resolve_format(out, fmt)
        optics = _combined_optics(frames, out) if kind == "star" and star_version != "3.0" else None
        return [write_coordinates(picks, out, fmt, box_size=box_size, optics=optics,
                                  star_version=star_version)]
    if fmt is None and out.suffix and not out.is_dir():
        resolve_format(out)  # an unknown extension: refuse rather than make a folder of that name
    kind = resolve_format(out, fmt) if fmt is not None else "star"
    if kind not in WRITE_FORMATS:
        raise CrispError(f"cannot write the '{kind}' format", out)
    if kind == "star":
        index = write_autopick(picks, out, micrograph_paths=None if lookup is None else
                               [lookup[s] for s in groups])
        named = [lookup[stem] if lookup is not None else str(g[NAME].iloc[0]) for stem, g in groups.items()]
        return [index, *sorted(out / coordinate_file_name(name) for name in named)]
    extension = FORMATS[kind].suffixes[0]
    return [write_coordinates(group, out / f"{stem}{extension}", kind, box_size=box_size)
            for stem, group in groups.items()]
