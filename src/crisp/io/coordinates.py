"""Particle coordinates: one in-memory table, many file formats.

In memory, picks are a :class:`pandas.DataFrame` with RELION column names (no leading underscore,
as :mod:`starfile` reads them): ``rlnMicrographName``, ``rlnCoordinateX``, ``rlnCoordinateY`` and
optional ``rlnAutopickFigureOfMerit``, ``rlnAngleRot/Tilt/Psi``, ``rlnDefocusU/V``,
``rlnDefocusAngle``, ``rlnOriginXAngst/YAngst``, ``rlnClassNumber``, ... ``rlnCoordinateX`` is the
column and ``rlnCoordinateY`` the row of the micrograph array as :mod:`mrcfile` returns it, in
pixels of the original (unbinned) micrograph. Other conventions come in only through an explicit
:func:`flip_y`.

Formats (``fmt``; by default from the file extension):

==========  =========  ==============================================================================
fmt         extension  content
==========  =========  ==============================================================================
``star``    .star      RELION: 3.0 single table; 3.1+ ``optics`` + ``particles`` (optics merged in per
                       ``rlnOpticsGroup``); or an ``autopick.star`` index (``data_coordinate_files``:
                       ``rlnMicrographName``, ``rlnMicrographCoordinates``) whose per-micrograph
                       files are all read.
``box``     .box       EMAN: ``x_corner y_corner width height`` per line; centre = corner + size / 2.
``txt``     .txt/.tsv  Topaz: tab-separated, header ``image_name x_coord y_coord score``.
``csv``     .csv       CryoPPP: ``X-Coordinate,Y-Coordinate,Diameter`` (extra columns ignored).
``cs``      .cs        cryoSPARC (read only): numpy structured array with ``location/center_x_frac``,
                       ``location/center_y_frac``, ``location/micrograph_shape`` ([ny, nx]) and
                       ``location/micrograph_path``; x = frac_x * nx, y = frac_y * ny.
==========  =========  ==============================================================================

``.box`` and ``.csv`` files hold the picks of one micrograph; they carry no micrograph name, so
the name given by the caller or the file's stem is used. Micrographs and coordinate files are paired
by :func:`micrograph_stem`.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from crisp.atomic import atomic_path, write_text_atomic
from crisp.errors import CrispError

NAME = "rlnMicrographName"
X = "rlnCoordinateX"
Y = "rlnCoordinateY"
FOM = "rlnAutopickFigureOfMerit"
DIAMETER = "rlnDiameter"
COORDS_FILE = "rlnMicrographCoordinates"
OPTICS_GROUP = "rlnOpticsGroup"
OPTICS_GROUP_NAME = "rlnOpticsGroupName"
RELION_STAR_VERSION = 30001

FORMAT_SUFFIXES = {"star": (".star",), "box": (".box",), "txt": (".txt", ".tsv"), "csv": (".csv",),
                   "cs": (".cs",)}
FORMAT_ALIASES = {"relion": "star", "eman": "box", "topaz": "txt", "tsv": "txt", "cryoppp": "csv",
                  "cryosparc": "cs"}
WRITE_FORMATS = ("star", "box", "txt", "csv")
COORDINATE_SUFFIXES = tuple(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
_STRING_COLUMNS = [NAME, COORDS_FILE, "rlnImageName", OPTICS_GROUP_NAME, "rlnMicrographMovieName",
                   "rlnCtfImage", "rlnMtfFileName", "rlnImageOriginalName"]
_STEM_EXTENSIONS = {".mrc", ".mrcs", ".map", ".st", ".rec", ".tif", ".tiff", ".png", ".jpg", ".jpeg",
                    ".eer", ".star", ".box", ".txt", ".tsv", ".csv", ".cs"}
_PICK_SUFFIXES = ("_autopick", "_manualpick", "_topazpick", "_picks", "_pick", "_coordinates", "_coords")
_MOTION_SUFFIXES = ("_patch_aligned_doseweighted", "_rigid_aligned_doseweighted", "_patch_aligned",
                    "_rigid_aligned", "_doseweighted", "_dw")
# cryoSPARC prefixes imported and motion-corrected files with a 20-21 digit UID; shorter digit runs
# (dates such as 20240423_, frame numbers such as 0001_) are part of real names and are kept.
_CRYOSPARC_UID = re.compile(r"^\d{15,}_(?=.)")


# ----------------------------------------------------------------------------------------------
# names and formats
# ----------------------------------------------------------------------------------------------
def micrograph_stem(name: str | os.PathLike[str]) -> str:
    """The name by which micrographs and coordinate files are paired.

    Drops the folder, known extensions (``.mrc``, ``.mrcs``, ``.tif``, ``.tiff``, ``.png``, ``.jpg``,
    ``.star``, ``.box``, ``.txt``, ``.csv``, ``.cs``, ...; repeatedly, so ``a.mrc.star`` gives ``a``),
    pick-file suffixes (``_autopick``, ``_manualpick``, ``_topazpick``, ``_pick(s)``, ``_coords``) and
    cryoSPARC's leading UID (a run of at least 15 digits followed by ``_``).

    Examples
    --------
    >>> micrograph_stem("J12/motioncorrected/012345678901234567890_mic_007_patch_aligned_doseweighted.mrc")
    'mic_007_patch_aligned_doseweighted'
    >>> micrograph_stem("AutoPick/job007/Movies/mic_007_autopick.star")
    'mic_007'
    """
    base = PurePosixPath(str(name).replace("\\", "/")).name
    while True:
        suffix = PurePosixPath(base).suffix
        if not suffix or suffix.lower() not in _STEM_EXTENSIONS or len(suffix) == len(base):
            break
        base = base[: -len(suffix)]
    for tail in _PICK_SUFFIXES:
        if base.lower().endswith(tail) and len(base) > len(tail):
            base = base[: -len(tail)]
            break
    return _CRYOSPARC_UID.sub("", base)


def _loose_stem(name: str | os.PathLike[str]) -> str:
    """:func:`micrograph_stem` without motion-correction suffixes (a fallback for pairing)."""
    stem = micrograph_stem(name)
    for tail in _MOTION_SUFFIXES:
        if stem.lower().endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def resolve_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The canonical format name (``star``, ``box``, ``txt``, ``csv``, ``cs``) of ``path``.

    ``fmt`` (any name of the module table, or an alias: relion, eman, topaz, cryoppp, cryosparc)
    wins over the extension.
    """
    if fmt is not None:
        key = str(fmt).lower().lstrip(".")
        key = FORMAT_ALIASES.get(key, key)
        if key not in FORMAT_SUFFIXES:
            raise CrispError(f"unknown coordinate format '{fmt}' (expected one of "
                             f"{', '.join(FORMAT_SUFFIXES)} or {', '.join(FORMAT_ALIASES)})", path)
        return key
    suffix = Path(path).suffix.lower()
    for key, suffixes in FORMAT_SUFFIXES.items():
        if suffix in suffixes:
            return key
    raise CrispError(f"unknown coordinate format '{suffix}' (expected a file ending in "
                     f"{', '.join(COORDINATE_SUFFIXES)}, or give the format)", path)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _numeric(df: pd.DataFrame, column: str, path: Path | str | None, required: bool = True) -> None:
    """Convert ``df[column]`` to float in place; CrispError on missing or unparsable values."""
    if column not in df.columns:
        if required:
            present = ", ".join(map(str, df.columns)) or "none"
            raise CrispError(f"missing required column '{column}' (columns: {present})", path)
        return
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CrispError(f"column '{column}' holds {int(bad.sum())} value(s) that are not numbers "
                         f"(first: {df[column].iloc[row]!r} in row {row + 1})", path)
    if required and values.isna().any():
        raise CrispError(f"column '{column}' has {int(values.isna().sum())} empty value(s)", path)
    if not np.isfinite(values.dropna().to_numpy(dtype=float)).all():
        raise CrispError(f"column '{column}' holds infinite values", path)
    df[column] = values.astype(float)


def _finish(df: pd.DataFrame, path: Path | str | None, default_name: str | None) -> pd.DataFrame:
    """Validate coordinates, add the micrograph name, put the standard columns first."""
    df = df.reset_index(drop=True).copy()
    if len(df) == 0:  # an empty table needs no coordinate columns to be valid
        for column in (X, Y):
            if column not in df.columns:
                df[column] = pd.Series(dtype=float)
    for column in (X, Y):
        _numeric(df, column, path)
    for column in (FOM, DIAMETER, "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnAnglePsi"):
        _numeric(df, column, path, required=False)
    if NAME not in df.columns:
        df[NAME] = default_name if default_name is not None else micrograph_stem(path or "")
    df[NAME] = df[NAME].astype(str)
    first = [c for c in (NAME, X, Y) if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def _check_ny(ny: int | float, path: Path | str | None = None) -> int:
    if not (np.isfinite(ny) and ny > 0 and float(ny).is_integer()):
        raise CrispError(f"micrograph height must be a positive whole number of pixels (got {ny})", path)
    return int(ny)


def flip_y(df: pd.DataFrame, ny: int) -> pd.DataFrame:
    """Count rows from the other edge: ``y' = ny - 1 - y`` (a copy; flipping twice is the identity).

    Parameters
    ----------
    df
        Picks table.
    ny
        Height of the micrograph in pixels (its number of rows).
    """
    ny = _check_ny(ny)
    out = df.copy()
    out[Y] = (ny - 1) - out[Y].astype(float)
    return out


_flip_y = flip_y  # read_coordinates has a parameter of the same name


def scale_coordinates(df: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Positions in pixels of a micrograph binned by ``factor``: ``x / factor``, ``y / factor`` (a copy).

    Use ``1 / factor`` to go back to the original pixels.
    """
    if not (np.isfinite(factor) and factor > 0):
        raise CrispError(f"scale factor must be a positive number (got {factor})")
    out = df.copy()
    out[X] = out[X].astype(float) / factor
    out[Y] = out[Y].astype(float) / factor
    return out


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def read_star_tables(path: str | os.PathLike[str], what: str = "STAR file") -> dict[str, pd.DataFrame]:
    """Every data block of a STAR file as a DataFrame (a key-value block becomes one row).

    Raises
    ------
    CrispError
        Missing file (``what`` names it in the message), unparsable file, or no data block.
    """
    import starfile

    path = Path(path)
    if not path.is_file():
        raise CrispError(f"{what} not found", path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=_STRING_COLUMNS)
    except Exception as err:  # noqa: BLE001 - any parser failure is a malformed file
        raise CrispError(f"not a readable STAR file ({type(err).__name__}: {err})", path) from None
    tables = {}
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            tables[name] = block
        elif isinstance(block, Mapping):  # a key-value block: one row
            tables[name] = pd.DataFrame([dict(block)])
    if not tables:
        raise CrispError("not a STAR file, or it holds no data block", path)
    return tables


def _merge_optics(particles: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    extra = [c for c in optics.columns if c not in particles.columns or c == OPTICS_GROUP]
    optics = optics[extra]
    if OPTICS_GROUP not in particles.columns:
        if len(optics) != 1:
            raise CrispError(f"particles have no {OPTICS_GROUP} column but there are {len(optics)} "
                             "optics groups", path)
        return particles.assign(**{c: optics[c].iloc[0] for c in extra if c != OPTICS_GROUP})
    if OPTICS_GROUP not in optics.columns:
        raise CrispError(f"the optics block has no {OPTICS_GROUP} column", path)
    missing = set(particles[OPTICS_GROUP]) - set(optics[OPTICS_GROUP])
    if missing:
        raise CrispError(f"particles refer to optics group(s) {sorted(missing)} absent from the optics block",
                         path)
    return particles.merge(optics, on=OPTICS_GROUP, how="left", validate="many_to_one")


def _read_star(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    tables = read_star_tables(path)
    if any(COORDS_FILE in t.columns for t in tables.values()):
        return read_autopick(path)
    if "particles" in tables and {X, Y} <= set(tables["particles"].columns):
        particles = tables["particles"]
    else:
        candidates = [t for t in tables.values() if {X, Y} <= set(t.columns)]
        if not candidates:
            raise CrispError(f"no table with {X} and {Y} (blocks: "
                             f"{', '.join(repr(n or 'data_') for n in tables)})", path)
        particles = candidates[0]
    if "optics" in tables and tables["optics"] is not particles:
        particles = _merge_optics(particles, tables["optics"], path)
    return _finish(particles, path, micrograph_name)


def _read_box(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():  # an empty file is a micrograph without picks
            warnings.simplefilter("ignore", UserWarning)
            rows = np.loadtxt(path, ndmin=2, dtype=float)
    except (ValueError, UnicodeDecodeError) as err:
        raise CrispError(f"EMAN .box file with values that are not numbers, or ragged lines ({err})",
                         path) from None
    if rows.size == 0:
        rows = np.zeros((0, 4))
    if rows.shape[1] < 4:
        raise CrispError(f"EMAN .box lines need 4 columns (x y width height); found {rows.shape[1]}", path)
    if not np.isfinite(rows[:, :4]).all():
        raise CrispError("EMAN .box file holds NaN or infinite values", path)
    if (rows[:, 2:4] <= 0).any():
        raise CrispError("EMAN .box file holds a box size that is not positive", path)
    df = pd.DataFrame({X: rows[:, 0] + rows[:, 2] / 2, Y: rows[:, 1] + rows[:, 3] / 2})
    df = _finish(df, path, micrograph_name)
    if len(rows) and np.all(rows[:, 2:4] == rows[0, 2]):
        df.attrs["box_size_px"] = float(rows[0, 2])
    return df


def _read_table(path: Path, sep: str, what: str) -> pd.DataFrame:
    try:  # names stay text: "001" must not become 1
        return pd.read_csv(path, sep=sep, skipinitialspace=True, dtype={"image_name": str})
    except pd.errors.EmptyDataError:
        raise CrispError(f"empty {what} file (no header line)", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise CrispError(f"not a readable {what} file ({err})", path) from None


def _require_columns(table: pd.DataFrame, columns: tuple[str, ...], fmt: str, expected: str,
                     path: Path) -> None:
    """CrispError naming the first of ``columns`` the table lacks, the expected header and what it has."""
    for column in columns:
        if column not in table.columns:
            raise CrispError(f"missing {fmt} column '{column}' (expected {expected}; found "
                             f"{', '.join(table.columns)})", path)


def _read_topaz(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    table = _read_table(path, "\t", "Topaz")
    if len(table.columns) == 1:  # space-separated variant
        table = _read_table(path, r"\s+", "Topaz")
    table.columns = [str(c).strip() for c in table.columns]
    _require_columns(table, ("x_coord", "y_coord"), "Topaz", "header image_name, x_coord, y_coord, score",
                     path)
    rename = {"x_coord": X, "y_coord": Y}
    if "score" in table.columns:
        rename["score"] = FOM
    if "image_name" in table.columns:
        table["image_name"] = table["image_name"].astype(str)
        rename["image_name"] = NAME
    return _finish(table.rename(columns=rename)[list(rename.values())], path, micrograph_name)


def _read_cryoppp(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    table = _read_table(path, ",", "CryoPPP .csv")
    table.columns = [str(c).strip() for c in table.columns]
    _require_columns(table, ("X-Coordinate", "Y-Coordinate"), "CryoPPP",
                     "X-Coordinate, Y-Coordinate, Diameter", path)
    rename = {"X-Coordinate": X, "Y-Coordinate": Y}
    if "Diameter" in table.columns:
        rename["Diameter"] = DIAMETER
    df = _finish(table.rename(columns=rename)[list(rename.values())], path, micrograph_name)
    if DIAMETER in df.columns and (df[DIAMETER] <= 0).any():
        raise CrispError("CryoPPP .csv holds a diameter that is not positive", path)
    return df


def _read_cs(path: Path, micrograph_name: str | None, ny: int | None, flip: bool) -> pd.DataFrame:
    try:
        cs = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CrispError(f"not a readable cryoSPARC .cs file ({err}); CRISP reads .cs files in numpy "
                         "format, as cryoSPARC exports them", path) from None
    names = cs.dtype.names or ()
    required = ("location/center_x_frac", "location/center_y_frac", "location/micrograph_shape")
    missing = [f for f in required if f not in names]
    if missing:
        raise CrispError(f"cryoSPARC .cs file lacks field(s) {', '.join(missing)} (export particles with "
                         "their location)", path)
    shape = np.asarray(cs["location/micrograph_shape"], dtype=float).reshape(len(cs), -1)
    df = pd.DataFrame({X: np.asarray(cs["location/center_x_frac"], float) * shape[:, 1],
                       Y: np.asarray(cs["location/center_y_frac"], float) * shape[:, 0]})
    if "location/micrograph_path" in names:
        paths = cs["location/micrograph_path"]
        df.insert(0, NAME, [p.decode() if isinstance(p, bytes) else str(p) for p in paths])
    optional = {"pick_stats/ncc_score": FOM, "ctf/df1_A": "rlnDefocusU", "ctf/df2_A": "rlnDefocusV"}
    for source, column in optional.items():
        if source in names:
            df[column] = np.asarray(cs[source], dtype=float)
    if "ctf/df_angle_rad" in names:
        df["rlnDefocusAngle"] = np.degrees(np.asarray(cs["ctf/df_angle_rad"], dtype=float))
    df = _finish(df, path, micrograph_name)
    if flip and ny is None:  # the file knows every micrograph's height
        df[Y] = (shape[:, 0] - 1) - df[Y]
    return df


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
        in pixels is kept in ``df.attrs["box_size_px"]``.

    Raises
    ------
    CrispError
        Missing file, unknown format, missing required columns, values that are not numbers,
        ``flip_y`` without ``micrograph_shape``. The message names the file.
    """
    path = Path(path)
    kind = resolve_format(path, fmt)
    if not path.is_file():
        raise CrispError("file not found" if not path.exists() else "is not a file", path)
    ny = None
    if micrograph_shape is not None:
        if len(tuple(micrograph_shape)) != 2:
            raise CrispError(f"micrograph_shape must be (ny, nx); got {micrograph_shape}", path)
        ny = _check_ny(tuple(micrograph_shape)[0], path)
    if flip_y and ny is None and kind != "cs":
        raise CrispError("flipping y needs the micrograph height: give micrograph_shape=(ny, nx) "
                         "(CLI: --micrograph-shape NY NX or --micrographs DIR)", path)
    if kind == "star":
        df = _read_star(path, micrograph_name)
    elif kind == "box":
        df = _read_box(path, micrograph_name)
    elif kind == "txt":
        df = _read_topaz(path, micrograph_name)
    elif kind == "csv":
        df = _read_cryoppp(path, micrograph_name)
    else:
        df = _read_cs(path, micrograph_name, ny, flip_y)
        if ny is None:
            return df
    if flip_y:
        attrs = dict(df.attrs)
        df = _flip_y(df, ny)
        df.attrs.update(attrs)
    return df


def _resolve_listed(entry: str, index: Path) -> Path:
    """A path listed in an index STAR file: absolute, or relative to the index's folder, one of its
    ancestors (RELION lists paths relative to the project folder), or the working folder."""
    listed = Path(entry)
    if listed.is_absolute():
        if listed.is_file():
            return listed
        raise CrispError(f"coordinate file '{entry}' listed in the index not found", index)
    for base in (index.parent, *index.parent.parents, Path.cwd()):
        if (base / listed).is_file():
            return base / listed
    raise CrispError(f"coordinate file '{entry}' listed in the index not found (looked beside the index, "
                     "in the folders above it, and in the working folder)", index)


def read_autopick(index_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a RELION ``autopick.star`` index and every per-micrograph coordinate file it lists.

    Parameters
    ----------
    index_path
        STAR file with a table (RELION: ``data_coordinate_files``) of ``rlnMicrographName`` and
        ``rlnMicrographCoordinates``. Listed paths are absolute, or relative to the index's folder,
        to a folder above it (RELION writes paths relative to the project folder), or to the
        working folder.

    Returns
    -------
    pandas.DataFrame
        All picks; ``rlnMicrographName`` is the index's name for each file.
    """
    index_path = Path(index_path)
    if not index_path.is_file():
        raise CrispError("file not found", index_path)
    tables = read_star_tables(index_path)
    table = tables.get("coordinate_files")
    if table is None or COORDS_FILE not in table.columns:
        table = next((t for t in tables.values() if COORDS_FILE in t.columns), None)
    if table is None or NAME not in table.columns:
        raise CrispError(f"not an autopick index: no table with {NAME} and {COORDS_FILE}", index_path)
    frames = []
    for name, entry in zip(table[NAME].astype(str), table[COORDS_FILE].astype(str), strict=True):
        source = _resolve_listed(entry, index_path)
        if source.stat().st_size == 0:
            continue  # an empty file: no picks on this micrograph
        tables_one = read_star_tables(source)
        picks = next((t for t in tables_one.values() if {X, Y} <= set(t.columns)), None)
        if picks is None:
            if all(len(t) == 0 for t in tables_one.values()):
                continue  # an empty coordinate file: no picks on this micrograph
            raise CrispError(f"no table with {X} and {Y}", source)
        picks = picks.drop(columns=[NAME], errors="ignore")
        frames.append(_finish(picks, source, name))
    if not frames:
        return _finish(pd.DataFrame({NAME: pd.Series(dtype=str), X: pd.Series(dtype=float),
                                     Y: pd.Series(dtype=float)}), index_path, None)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _number(value: float) -> str:
    """Compact decimal: whole numbers without a fraction, others to 3 decimals."""
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _single_micrograph(df: pd.DataFrame, path: Path, kind: str) -> None:
    if NAME in df.columns and df[NAME].nunique() > 1:
        raise CrispError(f"the picks belong to {df[NAME].nunique()} micrographs but a {kind} file holds one "
                         "micrograph; write to a folder (crisp convert) or split with group_by_micrograph",
                         path)


def _positive_size(value, what: str, path: Path) -> float:
    if value is None:
        raise CrispError(f"writing {what} needs a box size in pixels (box_size / --box-size)", path)
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise CrispError(f"box size must be a positive number of pixels (got {value})", path)
    return value


def _write_star_file(data, path: Path, version: bool = True) -> None:
    """Write STAR blocks atomically with :mod:`starfile`.

    With ``version``, each block is headed by ``# version 30001`` as RELION 3.1+ writes them. RELION
    reads that line to tell 3.1 files from 3.0 ones (a particle file without an optics block and
    without the line is converted as a 3.0 file), so 3.0-style single tables are written without it.
    """
    import starfile

    with atomic_path(path) as tmp:
        starfile.write(data, tmp)
        if not version:
            return
        lines = tmp.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if line.startswith("data_") and (i == 0 or not lines[i - 1].strip()):
                lines[i] = f"# version {RELION_STAR_VERSION}\n\n{line}"
        tmp.write_text("\n".join(lines), encoding="utf-8")


def _write_star(df: pd.DataFrame, path: Path, optics) -> None:
    particles = df.reset_index(drop=True)
    if optics is None:
        _write_star_file(particles, path, version=False)
        return
    table = pd.DataFrame([dict(optics)]) if isinstance(optics, Mapping) else pd.DataFrame(optics).copy()
    if table.empty:
        raise CrispError("the optics table is empty", path)
    if OPTICS_GROUP not in table.columns:
        table.insert(0, OPTICS_GROUP, np.arange(1, len(table) + 1))
    if OPTICS_GROUP_NAME not in table.columns:
        table.insert(0, OPTICS_GROUP_NAME, [f"opticsGroup{int(g)}" for g in table[OPTICS_GROUP]])
    if OPTICS_GROUP not in particles.columns:
        if len(table) != 1:
            raise CrispError(f"picks have no {OPTICS_GROUP} column but {len(table)} optics groups were "
                             "given", path)
        particles = particles.assign(**{OPTICS_GROUP: table[OPTICS_GROUP].iloc[0]})
    missing = set(particles[OPTICS_GROUP]) - set(table[OPTICS_GROUP])
    if missing:
        raise CrispError(f"picks refer to optics group(s) {sorted(missing)} absent from the optics table",
                         path)
    particles = particles.drop(columns=[c for c in table.columns if c != OPTICS_GROUP], errors="ignore")
    _write_star_file({"optics": table, "particles": particles}, path)


def _write_box(df: pd.DataFrame, path: Path, box_size) -> None:
    _single_micrograph(df, path, ".box")
    size = _positive_size(box_size if box_size is not None else df.attrs.get("box_size_px"), ".box", path)
    lines = [f"{_number(x - size / 2)}\t{_number(y - size / 2)}\t{_number(size)}\t{_number(size)}\n"
             for x, y in zip(df[X].astype(float), df[Y].astype(float), strict=True)]
    write_text_atomic(path, "".join(lines))


def _write_topaz(df: pd.DataFrame, path: Path) -> None:
    names = (df[NAME].map(lambda n: PurePosixPath(str(n).replace("\\", "/")).name) if NAME in df.columns
             else pd.Series([micrograph_stem(path)] * len(df)))
    names = names.map(lambda n: n.rsplit(".", 1)[0] if Path(n).suffix.lower() in _STEM_EXTENSIONS else n)
    scores = df[FOM].astype(float) if FOM in df.columns else pd.Series([0.0] * len(df))
    lines = ["image_name\tx_coord\ty_coord\tscore\n"]
    lines += [f"{n}\t{_number(x)}\t{_number(y)}\t{float(s):.6g}\n"
              for n, x, y, s in zip(names, df[X], df[Y], scores, strict=True)]
    write_text_atomic(path, "".join(lines))


def _write_cryoppp(df: pd.DataFrame, path: Path, box_size) -> None:
    _single_micrograph(df, path, "CryoPPP .csv")
    if box_size is not None:
        diameters = [_positive_size(box_size, "CryoPPP .csv", path)] * len(df)
    elif DIAMETER in df.columns:
        diameters = [_positive_size(d, "CryoPPP .csv", path) for d in df[DIAMETER]]
    else:
        raise CrispError(f"writing CryoPPP .csv needs a diameter: box_size (--box-size) or a {DIAMETER} "
                         "column", path)
    lines = ["X-Coordinate,Y-Coordinate,Diameter\n"]
    lines += [f"{_number(x)},{_number(y)},{_number(d)}\n" for x, y, d in zip(df[X], df[Y], diameters,
                                                                             strict=True)]
    write_text_atomic(path, "".join(lines))


def write_coordinates(df: pd.DataFrame, path: str | os.PathLike[str], fmt: str | None = None, *,
                      box_size: float | None = None, optics=None) -> Path:
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
        Box size in pixels: required for ``.box`` (unless ``df.attrs["box_size_px"]`` holds it) and
        gives the ``Diameter`` of ``.csv`` (else the ``rlnDiameter`` column).
    optics
        For ``.star``: a dict (one optics group) or a DataFrame (one row per group) of RELION optics
        values (``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``,
        ``rlnMicrographPixelSize``, ...). Given: a RELION 3.1+ file with ``data_optics`` and
        ``data_particles``, each headed by ``# version 30001``; otherwise a RELION 3.0 single table
        (no version line, so RELION converts it as a 3.0 file).

    Returns
    -------
    Path

    Raises
    ------
    CrispError
        Unknown or read-only format, missing columns, a missing or non-positive box size, picks of
        several micrographs for a one-micrograph format, optics groups that do not match.
    """
    path = Path(path)
    kind = resolve_format(path, fmt)
    if kind not in WRITE_FORMATS:
        raise CrispError(f"cannot write the '{kind}' format (write .star and import it instead; writable: "
                         f"{', '.join(WRITE_FORMATS)})", path)
    df = _finish(df, path, micrograph_stem(path))
    if kind == "star":
        _write_star(df, path, optics)
    elif kind == "box":
        _write_box(df, path, box_size)
    elif kind == "txt":
        _write_topaz(df, path)
    else:
        _write_cryoppp(df, path, box_size)
    return path


def _micrograph_lookup(micrograph_paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for entry in micrograph_paths:
        stem = micrograph_stem(entry)
        if stem in lookup and lookup[stem] != str(entry):
            raise CrispError(f"micrographs {lookup[stem]} and {entry} share the name stem '{stem}'")
        lookup[stem] = str(entry)
    return lookup


def write_autopick(df: pd.DataFrame, out_dir: str | os.PathLike[str], *, suffix: str = "_autopick.star",
                   micrograph_paths: Iterable[str | os.PathLike[str]] | None = None) -> Path:
    """Write picks in RELION 4/5's AutoPick layout: one STAR per micrograph plus an index.

    Each micrograph's picks go to ``out_dir/<stem><suffix>`` (one table ``data_`` with
    ``rlnCoordinateX``, ``rlnCoordinateY``, ``rlnAutopickFigureOfMerit`` (-999 where unknown, as RELION
    writes for manual picks) and any other ``rln`` column). The index ``out_dir/autopick.star``
    (table ``data_coordinate_files``) lists ``rlnMicrographName`` and ``rlnMicrographCoordinates``;
    the coordinate paths are ``out_dir/<file>`` exactly as ``out_dir`` was given, so a relative
    ``out_dir`` given from the RELION project folder yields RELION's project-relative paths. The
    index is written last: its presence means the set is complete.

    Parameters
    ----------
    df
        Picks table with ``rlnMicrographName``.
    out_dir
        Output folder (created).
    suffix
        Ending of the per-micrograph files.
    micrograph_paths
        The micrograph files as RELION should find them (e.g. ``MotionCorr/job002/Movies/a.mrc``),
        matched to the picks by :func:`micrograph_stem`; they become ``rlnMicrographName``, and a
        micrograph without picks gets an empty coordinate file. Default: the names in ``df``.

    Returns
    -------
    Path
        The index file.
    """
    out = Path(out_dir)
    df = _finish(df, out, None)
    groups = group_by_micrograph(df) if len(df) else {}
    names = {stem: str(g[NAME].iloc[0]) for stem, g in groups.items()}
    if micrograph_paths is not None:
        lookup = _micrograph_lookup(micrograph_paths)
        unmatched = sorted(set(groups) - set(lookup))
        if unmatched:
            raise CrispError(f"{len(unmatched)} micrograph name(s) of the picks match none of the given "
                             f"micrograph files: {', '.join(unmatched[:5])}", out)
        names = lookup
    columns = [X, Y, FOM] + [c for c in df.columns if str(c).startswith("rln")
                             and c not in (NAME, X, Y, FOM, COORDS_FILE)]
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in (X, Y, FOM)})
    index_rows = []
    for stem in sorted(names):
        picks = groups.get(stem)
        if picks is None:
            table = empty
        else:
            table = picks.assign(**({} if FOM in picks.columns else {FOM: -999.0}))
            table = table[[c for c in columns if c in table.columns]].reset_index(drop=True)
        target = out / f"{stem}{suffix}"
        _write_star_file(table, target)
        index_rows.append({NAME: names[stem], COORDS_FILE: str(target)})
    index = pd.DataFrame(index_rows, columns=[NAME, COORDS_FILE])
    index_path = out / "autopick.star"
    _write_star_file({"coordinate_files": index}, index_path)
    return index_path


# ----------------------------------------------------------------------------------------------
# grouping and pairing
# ----------------------------------------------------------------------------------------------
def group_by_micrograph(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a picks table by micrograph: ``{micrograph_stem(name): picks}``, in stem order.

    Raises
    ------
    CrispError
        No ``rlnMicrographName`` column, or two different names with the same stem.
    """
    if NAME not in df.columns:
        raise CrispError(f"the picks have no {NAME} column; cannot group them by micrograph")
    names = df[NAME].astype(str)
    stems = names.map(micrograph_stem)
    clashes = names.groupby(stems).nunique()
    if (clashes > 1).any():
        stem = clashes[clashes > 1].index[0]
        raise CrispError(f"different micrograph names share the stem '{stem}': "
                         f"{', '.join(sorted(set(names[stems == stem])))}")
    return {stem: group.reset_index(drop=True) for stem, group in df.groupby(stems, sort=True)}


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
        for path in [p for p in found if p.suffix.lower() == ".star" and _is_index(p)]:
            found.discard(path)
            tables = read_star_tables(path)
            table = next(t for t in tables.values() if COORDS_FILE in t.columns)
            listed = {_resolve_listed(str(e), path) for e in table[COORDS_FILE]}
            resolved = {p.resolve() for p in listed}
            found = {p for p in found if p.resolve() not in resolved} | listed  # the same file once
    if not found:
        raise CrispError("no coordinate files found (expected files ending in "
                         f"{', '.join(COORDINATE_SUFFIXES)})", items[0] if len(items) == 1 else None)
    return sorted(found)


def _is_index(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    return "_rlnMicrographCoordinates" in head


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
    loose_m = pd.Series(list(rest_m)).map(_loose_stem).value_counts() if rest_m else pd.Series(dtype=int)
    loose_c = pd.Series(list(rest_c)).map(_loose_stem).value_counts() if rest_c else pd.Series(dtype=int)
    by_loose_c = {_loose_stem(s): s for s in rest_c}
    for stem in list(rest_m):
        key = _loose_stem(stem)
        if loose_m.get(key, 0) == 1 and loose_c.get(key, 0) == 1:
            c_stem = by_loose_c[key]
            paired[stem] = (rest_m.pop(stem), rest_c.pop(c_stem))
    pairs = sorted(paired.values())
    return CoordinateMatch(pairs=pairs, micrographs_without=sorted(rest_m.values()),
                           coordinates_without=sorted(rest_c.values()))


# ----------------------------------------------------------------------------------------------
# conversion (crisp convert)
# ----------------------------------------------------------------------------------------------
def _listed_by_index(index: Path) -> set[Path]:
    tables = read_star_tables(index)
    table = next(t for t in tables.values() if COORDS_FILE in t.columns)
    listed = set()
    for entry in table[COORDS_FILE].astype(str):
        try:
            listed.add(_resolve_listed(entry, index).resolve())
        except CrispError:
            continue  # reported when the index is read
    return listed


def convert_coordinates(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                        output: str | os.PathLike[str], fmt: str | None = None, *,
                        input_format: str | None = None, box_size: float | None = None, flip: bool = False,
                        micrograph_shape: tuple[int, int] | None = None,
                        micrographs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
                        ) -> list[Path]:
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
        Count rows from the other edge (``y' = ny - 1 - y``); needs ``micrograph_shape`` or
        ``micrographs`` (whose headers give each height), except for cryoSPARC ``.cs`` inputs.
    micrograph_shape
        (ny, nx) in pixels, the same for every micrograph.
    micrographs
        Micrograph files (folder, glob, list), paired with the picks by :func:`micrograph_stem`: they
        give the heights for ``flip`` and become ``rlnMicrographName`` in STAR outputs.

    Returns
    -------
    list of Path
        The files written.
    """
    from crisp.io.micrographs import list_micrographs, read_micrograph_shape

    out = Path(output)
    if box_size is not None:
        _positive_size(box_size, "coordinates", out)
    files = list_coordinate_files(inputs)
    indexes = [p for p in files if p.suffix.lower() == ".star" and _is_index(p)]
    skip = set().union(*(_listed_by_index(p) for p in indexes)) if indexes else set()
    files = [p for p in files if p.resolve() not in skip]
    lookup = _micrograph_lookup(list_micrographs(micrographs)) if micrographs is not None else None
    flip_each = flip and micrograph_shape is None and lookup is None
    frames, box_sizes = [], set()
    for path in files:
        if flip_each and resolve_format(path, input_format) != "cs":
            raise CrispError("flipping y needs the micrograph height: give --micrograph-shape NY NX or "
                             "--micrographs DIR", path)
        frame = read_coordinates(path, input_format, flip_y=flip_each)
        box_sizes.add(frame.attrs.get("box_size_px"))
        frames.append(frame)
    picks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({NAME: [], X: [], Y: []})
    if box_size is None and len(box_sizes) == 1:
        box_size = box_sizes.pop()
    groups = group_by_micrograph(picks) if len(picks) else {}
    if lookup is not None:
        unmatched = sorted(set(groups) - set(lookup))
        if unmatched:
            raise CrispError(f"{len(unmatched)} micrograph name(s) of the picks match no micrograph file: "
                             f"{', '.join(unmatched[:5])}", str(micrographs))
    if flip and not flip_each:
        for stem, group in groups.items():
            shape = micrograph_shape if micrograph_shape is not None else read_micrograph_shape(lookup[stem])
            ny = _check_ny(shape[0], out)
            groups[stem] = _flip_y(group, ny)
    if lookup is not None:
        groups = {stem: g.assign(**{NAME: lookup[stem]}) for stem, g in groups.items()}
    picks = pd.concat(list(groups.values()), ignore_index=True) if groups else picks
    single_file = out.suffix.lower() in COORDINATE_SUFFIXES and not out.is_dir()
    if single_file:
        return [write_coordinates(picks, out, fmt, box_size=box_size)]
    if fmt is None and out.suffix and not out.is_dir():
        resolve_format(out)  # an unknown extension: refuse rather than make a folder of that name
    kind = resolve_format(out, fmt) if fmt is not None else "star"
    if kind not in WRITE_FORMATS:
        raise CrispError(f"cannot write the '{kind}' format", out)
    if kind == "star":
        index = write_autopick(picks, out, micrograph_paths=None if lookup is None else
                               [lookup[s] for s in groups])
        return [index, *sorted(out / f"{stem}_autopick.star" for stem in groups)]
    extension = FORMAT_SUFFIXES[kind][0]
    return [write_coordinates(group, out / f"{stem}{extension}", kind, box_size=box_size)
            for stem, group in groups.items()]
