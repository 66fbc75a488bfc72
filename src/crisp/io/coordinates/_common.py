"""The picks table shared by every coordinate format: column names, validation, names, flip, grouping.

Each format module (:mod:`.star`, :mod:`.box`, :mod:`.topaz`, :mod:`.cryoppp`, :mod:`.cs`) builds on
this module and declares one :class:`CoordinateFormat`; :mod:`.registry` lists them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from crisp.errors import CrispError

NAME = "rlnMicrographName"
X = "rlnCoordinateX"
Y = "rlnCoordinateY"
FOM = "rlnAutopickFigureOfMerit"
DIAMETER = "rlnDiameter"
COORDS_FILE = "rlnMicrographCoordinates"
OPTICS_GROUP = "rlnOpticsGroup"
OPTICS_GROUP_NAME = "rlnOpticsGroupName"

_STEM_EXTENSIONS = {".mrc", ".mrcs", ".map", ".st", ".rec", ".tif", ".tiff", ".png", ".jpg", ".jpeg",
                    ".eer", ".star", ".box", ".txt", ".tsv", ".csv", ".cs"}
_PICK_SUFFIXES = ("_autopick", "_manualpick", "_topazpick", "_picks", "_pick", "_coordinates", "_coords")
_MOTION_SUFFIXES = ("_patch_aligned_doseweighted", "_rigid_aligned_doseweighted", "_patch_aligned",
                    "_rigid_aligned", "_doseweighted", "_dw")
# cryoSPARC prefixes imported and motion-corrected files with a 20-21 digit UID; shorter digit runs
# (dates such as 20240423_, frame numbers such as 0001_) are part of real names and are kept.
_CRYOSPARC_UID = re.compile(r"^\d{15,}_(?=.)")


@dataclass(frozen=True)
class CoordinateFormat:
    """One coordinate file format: how to recognise, read and write it.

    Attributes
    ----------
    name
        Canonical name (``star``, ``box``, ...), the key in :data:`crisp.io.coordinates.FORMATS`.
    suffixes
        File endings (lower case, with the dot); the first is used for new files.
    read
        ``read(path, micrograph_name) -> DataFrame``: the picks table; raises :class:`CrispError`
        naming the file for anything it cannot read.
    write
        ``write(df, path, **options) -> None`` writing atomically, or ``None`` for a read-only format.
        Options a writer does not use are ignored (``box_size``, ``optics``, ``star_version``).
    sniff
        ``sniff(head) -> bool``: whether the first bytes of a file look like this format (used to
        suggest a format for a file with an unknown extension).
    aliases
        Other names accepted for the format (``relion``, ``eman``, ...).
    precision_px
        Largest difference between a written and a re-read coordinate, in pixels.
    one_micrograph
        A file holds the picks of one micrograph and carries no micrograph name.
    heights
        ``heights(path) -> array``: each pick's micrograph height in pixels when the file records it
        (cryoSPARC), so that flipping y needs no height from the user; ``None`` otherwise.
    description
        One line for help texts.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, str | None], pd.DataFrame]
    write: Callable[..., None] | None
    sniff: Callable[[bytes], bool]
    aliases: tuple[str, ...] = ()
    precision_px: float = 0.0
    one_micrograph: bool = False
    heights: Callable[[Path], np.ndarray] | None = None
    description: str = ""


# ----------------------------------------------------------------------------------------------
# names
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


def loose_stem(name: str | os.PathLike[str]) -> str:
    """:func:`micrograph_stem` without motion-correction suffixes (a fallback for pairing)."""
    stem = micrograph_stem(name)
    for tail in _MOTION_SUFFIXES:
        if stem.lower().endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def image_name(name: str) -> str:
    """A micrograph name without folder and without a known image/coordinate extension (Topaz names)."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    return base.rsplit(".", 1)[0] if Path(base).suffix.lower() in _STEM_EXTENSIONS else base


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def numeric(df: pd.DataFrame, column: str, path: Path | str | None, required: bool = True) -> None:
    """Convert ``df[column]`` to float in place; CrispError on missing, unparsable or infinite values."""
    if column not in df.columns:
        if required:
            present = ", ".join(map(str, df.columns)) or "none"
            raise CrispError(f"missing required column '{column}' (columns: {present})", path)
        return
    series = df[column]
    if isinstance(series, pd.DataFrame):  # a header that appears twice
        raise CrispError(f"column '{column}' appears {series.shape[1]} times", path)
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CrispError(f"column '{column}' holds {int(bad.sum())} value(s) that are not numbers "
                         f"(first: {series.iloc[row]!r} in row {row + 1})", path)
    if required and values.isna().any():
        raise CrispError(f"column '{column}' has {int(values.isna().sum())} empty value(s)", path)
    if not np.isfinite(values.dropna().to_numpy(dtype=float)).all():
        raise CrispError(f"column '{column}' holds infinite values", path)
    df[column] = values.astype(float)


def finish(df: pd.DataFrame, path: Path | str | None, default_name: str | None) -> pd.DataFrame:
    """Validate coordinates, add the micrograph name, put the standard columns first."""
    df = df.reset_index(drop=True).copy()
    duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicated:
        raise CrispError(f"column(s) {', '.join(duplicated)} appear more than once", path)
    if len(df) == 0:  # an empty table needs no coordinate columns to be valid
        for column in (X, Y):
            if column not in df.columns:
                df[column] = pd.Series(dtype=float)
    for column in (X, Y):
        numeric(df, column, path)
    for column in (FOM, DIAMETER, "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnAnglePsi"):
        numeric(df, column, path, required=False)
    if NAME not in df.columns:
        df[NAME] = default_name if default_name is not None else micrograph_stem(path or "")
    df[NAME] = df[NAME].astype(str)
    first = [c for c in (NAME, X, Y) if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def empty_picks() -> pd.DataFrame:
    """A picks table without rows."""
    return pd.DataFrame({NAME: pd.Series(dtype=str), X: pd.Series(dtype=float), Y: pd.Series(dtype=float)})


def check_ny(ny: int | float, path: Path | str | None = None) -> int:
    """The micrograph height as an int; CrispError unless it is a positive whole number."""
    try:
        value = float(ny)
    except (TypeError, ValueError):
        raise CrispError(f"micrograph height must be a positive whole number of pixels (got {ny!r})",
                         path) from None
    if not (np.isfinite(value) and value > 0 and value.is_integer()):
        raise CrispError(f"micrograph height must be a positive whole number of pixels (got {ny})", path)
    return int(value)


def positive_size(value, what: str, path: Path) -> float:
    """A box size in pixels; CrispError when missing or not a positive finite number."""
    if value is None:
        raise CrispError(f"writing {what} needs a box size in pixels (box_size / --box-size)", path)
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise CrispError(f"box size must be a positive number of pixels (got {value})", path)
    return value


def single_micrograph(df: pd.DataFrame, path: Path, kind: str) -> None:
    """CrispError when ``df`` holds picks of several micrographs (for one-micrograph formats)."""
    if NAME in df.columns and df[NAME].nunique() > 1:
        raise CrispError(f"the picks belong to {df[NAME].nunique()} micrographs but a {kind} file holds one "
                         "micrograph; write to a folder (crisp convert) or split with group_by_micrograph",
                         path)


def number(value: float) -> str:
    """Compact decimal: whole numbers without a fraction, others to 3 decimals."""
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def read_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file (for sniffing); empty when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def flip_y(df: pd.DataFrame, ny: int) -> pd.DataFrame:
    """Count rows from the other edge: ``y' = ny - 1 - y`` (a copy; flipping twice is the identity).

    Parameters
    ----------
    df
        Picks table.
    ny
        Height of the micrograph in pixels (its number of rows).
    """
    ny = check_ny(ny)
    out = df.copy()
    out[Y] = (ny - 1) - out[Y].astype(float)
    return out


def check_inside_height(df: pd.DataFrame, ny: int, path: Path | str | None = None) -> None:
    """CrispError when a pick lies outside the rows of a micrograph of height ``ny``.

    The micrograph covers ``-0.5 <= y <= ny - 0.5`` (pixel centres at 0 ... ny - 1). A pick outside it
    would get a y outside the micrograph (negative, or beyond the last row) when flipped, which means
    the height is wrong (e.g. picks in pixels of another binning), so flipping refuses it.
    """
    y = df[Y].to_numpy(dtype=float)
    outside = (y < -0.5) | (y > ny - 0.5)
    if outside.any():
        raise CrispError(f"{int(outside.sum())} pick(s) lie outside the rows of a micrograph {ny} pixels "
                         f"high (y from {y.min():g} to {y.max():g}), so flipping y would put them outside "
                         "it; "
                         "check the micrograph height (--micrograph-shape / --micrographs) and that the "
                         "picks are in pixels of that micrograph", path)


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
# grouping
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


def micrograph_lookup(micrograph_paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """``{micrograph_stem(path): path}``; CrispError when two paths share a stem."""
    lookup: dict[str, str] = {}
    for entry in micrograph_paths:
        stem = micrograph_stem(entry)
        if stem in lookup and lookup[stem] != str(entry):
            raise CrispError(f"micrographs {lookup[stem]} and {entry} share the name stem '{stem}'")
        lookup[stem] = str(entry)
    return lookup


# ----------------------------------------------------------------------------------------------
# delimited text (Topaz, CryoPPP)
# ----------------------------------------------------------------------------------------------
#: pandas' default missing-value strings (read_csv's documentation), kept for every column but the names
_PANDAS_NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                     "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


def read_delimited(path: Path, sep: str, what: str) -> pd.DataFrame:
    """A delimited text table with a header line; CrispError for empty or unparsable files."""
    import csv

    try:  # names stay text: "001" must not become 1, nor a micrograph called "nan" a missing value
        header = pd.read_csv(path, sep=sep, skipinitialspace=True, nrows=0, encoding="utf-8")
        na_values = {c: list(_PANDAS_NA_VALUES) for c in header.columns if str(c).strip() != "image_name"}
        table = pd.read_csv(path, sep=sep, skipinitialspace=True, dtype={"image_name": str},
                            encoding="utf-8", keep_default_na=False, na_values=na_values)
    except pd.errors.EmptyDataError:
        raise CrispError(f"empty {what} file (no header line)", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise CrispError(f"not a readable {what} file ({err})", path) from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def require_columns(table: pd.DataFrame, columns: tuple[str, ...], fmt: str, expected: str,
                    path: Path) -> None:
    """CrispError naming the first of ``columns`` the table lacks, the expected header and what it has."""
    for column in columns:
        if column not in table.columns:
            raise CrispError(f"missing {fmt} column '{column}' (expected {expected}; found "
                             f"{', '.join(map(str, table.columns))})", path)
