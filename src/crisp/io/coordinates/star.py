"""RELION STAR coordinates: 3.0 single tables, 3.1+ ``optics`` + ``particles``, ``autopick.star`` indexes.

Reading a 3.1+ file merges the optics values into every particle (per ``rlnOpticsGroup``) and keeps
the optics table in ``df.attrs["optics"]`` (a list of rows), so that writing the table to STAR again
gives a 3.1+ file with the same optics block instead of a 3.0 table with optics values per particle.

:func:`write_star` is the one function of this package that writes STAR files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from crisp.atomic import atomic_path
from crisp.errors import CrispError
from crisp.io.coordinates._common import (
    COORDS_FILE,
    FOM,
    NAME,
    OPTICS_GROUP,
    OPTICS_GROUP_NAME,
    CoordinateFormat,
    X,
    Y,
    empty_picks,
    finish,
    group_by_micrograph,
    micrograph_lookup,
    micrograph_stem,
)

RELION_STAR_VERSION = 30001
STAR_VERSIONS = ("3.0", "3.1")
OPTICS_ATTR = "optics"
_STRING_COLUMNS = [NAME, COORDS_FILE, "rlnImageName", OPTICS_GROUP_NAME, "rlnMicrographMovieName",
                   "rlnCtfImage", "rlnMtfFileName", "rlnImageOriginalName"]


# ----------------------------------------------------------------------------------------------
# the one STAR reader and writer
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
    for name, block in (blocks or {}).items():
        if isinstance(block, pd.DataFrame):
            tables[name] = block
        elif isinstance(block, Mapping):  # a key-value block: one row
            tables[name] = pd.DataFrame([dict(block)])
    if not tables:
        raise CrispError("not a STAR file, or it holds no data block", path)
    return tables


def write_star(blocks: pd.DataFrame | Mapping[str, pd.DataFrame | Mapping], path: str | os.PathLike[str], *,
               version: bool = True) -> Path:
    """Write STAR data blocks atomically with :mod:`starfile`.

    Parameters
    ----------
    blocks
        One table (written as ``data_``) or ``{block name: table or key-value dict}``, in order.
    path
        Destination (written to a temporary name, then renamed).
    version
        Head each block by ``# version 30001`` as RELION 3.1+ writes them. RELION reads that line to
        tell 3.1 files from 3.0 ones (a particle file without an optics block and without the line is
        converted as a 3.0 file), so 3.0-style single tables are written without it.

    Returns
    -------
    Path
    """
    import starfile

    path = Path(path)
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp)
        if version:
            lines = tmp.read_text(encoding="utf-8").split("\n")
            for i, line in enumerate(lines):
                if line.startswith("data_") and (i == 0 or not lines[i - 1].strip()):
                    lines[i] = f"# version {RELION_STAR_VERSION}\n\n{line}"
            tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# particles / coordinates
# ----------------------------------------------------------------------------------------------
def _merge_optics(particles: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    if optics.columns.duplicated().any():
        raise CrispError("the optics block has a column that appears more than once", path)
    extra = [c for c in optics.columns if c not in particles.columns or c == OPTICS_GROUP]
    optics = optics[extra]
    if OPTICS_GROUP not in particles.columns:
        if len(optics) != 1:
            raise CrispError(f"particles have no {OPTICS_GROUP} column but there are {len(optics)} "
                             "optics groups", path)
        return particles.assign(**{c: optics[c].iloc[0] for c in extra if c != OPTICS_GROUP})
    if OPTICS_GROUP not in optics.columns:
        raise CrispError(f"the optics block has no {OPTICS_GROUP} column", path)
    if optics[OPTICS_GROUP].duplicated().any():
        raise CrispError(f"the optics block lists an {OPTICS_GROUP} more than once", path)
    missing = set(particles[OPTICS_GROUP]) - set(optics[OPTICS_GROUP])
    if missing:
        shown = sorted(map(str, missing)) if len({type(m) for m in missing}) > 1 else sorted(missing)
        raise CrispError(f"particles refer to optics group(s) {shown} absent from the optics block", path)
    try:
        return particles.merge(optics, on=OPTICS_GROUP, how="left", validate="many_to_one")
    except (ValueError, TypeError) as err:  # e.g. group numbers of different types in the two blocks
        raise CrispError(f"cannot join particles to the optics block ({err})", path) from None


def optics_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """The optics table a reader kept in ``df.attrs`` (None when the picks came without one)."""
    rows = df.attrs.get(OPTICS_ATTR)
    return None if not rows else pd.DataFrame(list(rows))


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read a RELION particles or coordinates STAR file (or an ``autopick.star`` index)."""
    tables = read_star_tables(path)
    if any(COORDS_FILE in t.columns for t in tables.values()):
        return read_autopick(path)
    if "particles" in tables and {X, Y} <= set(tables["particles"].columns):
        particles = tables["particles"]
    else:
        candidates = [t for t in tables.values() if {X, Y} <= set(t.columns)]
        if not candidates:
            if all(len(t) == 0 and not len(t.columns) for t in tables.values()):
                return finish(empty_picks(), path, micrograph_name)  # data_ blocks without a table
            raise CrispError(f"no table with {X} and {Y} (blocks: "
                             f"{', '.join(repr(n or 'data_') for n in tables)})", path)
        particles = candidates[0]
    optics = tables.get("optics")
    if optics is not None and optics is not particles:
        particles = _merge_optics(particles, optics, path)
    df = finish(particles, path, micrograph_name)
    if optics is not None and optics is not particles and len(optics):
        df.attrs[OPTICS_ATTR] = optics.to_dict("records")
    return df


def _optics_frame(optics, path: Path) -> pd.DataFrame:
    table = pd.DataFrame([dict(optics)]) if isinstance(optics, Mapping) else pd.DataFrame(optics).copy()
    if table.empty:
        raise CrispError("the optics table is empty", path)
    if OPTICS_GROUP not in table.columns:
        table.insert(0, OPTICS_GROUP, np.arange(1, len(table) + 1))
    if OPTICS_GROUP_NAME not in table.columns:
        table.insert(0, OPTICS_GROUP_NAME, [f"opticsGroup{int(g)}" for g in table[OPTICS_GROUP]])
    return table


_PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize")


def _relion30_pixel_size(particles: pd.DataFrame) -> pd.DataFrame:
    """Add RELION 3.0's pixel size columns (``rlnMagnification`` 10000, ``rlnDetectorPixelSize`` =
    pixel size in Å, since 3.0's pixel size is 1e4 * detector pixel (µm) / magnification).

    RELION 3.1+ converts a 3.0 particles table into optics groups from ``rlnVoltage``,
    ``rlnSphericalAberration`` and these two columns; without them it stops with "not all necessary
    variables defined in _optics.star file: rlnPixelSize, rlnVoltage and rlnSphericalAberration".
    """
    source = next((c for c in _PIXEL_SIZE_COLUMNS if c in particles.columns), None)
    if source is None or {"rlnMagnification", "rlnDetectorPixelSize"} & set(particles.columns):
        return particles
    return particles.assign(rlnMagnification=10000.0,
                            rlnDetectorPixelSize=particles[source].astype(float))


def write(df: pd.DataFrame, path: Path, *, optics=None, star_version: str | None = None, **_) -> None:
    """Write picks as RELION STAR.

    Parameters
    ----------
    df
        Picks table. Its ``attrs["optics"]`` (kept by :func:`read` from a 3.1+ file) is used when
        ``optics`` is not given.
    path
        Destination.
    optics
        A dict (one optics group) or a DataFrame (one row per group) of RELION optics values.
    star_version
        ``"3.1"``: ``data_optics`` + ``data_particles`` (needs optics); ``"3.0"``: one table, optics
        values (if any) as per-particle columns; ``None``: 3.1 when optics are known, else 3.0.
    """
    if star_version is not None and str(star_version) not in STAR_VERSIONS:
        raise CrispError(f"unknown RELION STAR version '{star_version}' (expected 3.0 or 3.1)", path)
    if optics is None:
        optics = optics_table(df)
    particles = df.reset_index(drop=True)
    particles.attrs = {}
    if star_version == "3.0" or (optics is None and star_version is None):
        if optics is not None:  # given optics values become per-particle columns
            table = _optics_frame(optics, path)
            merged = particles.drop(columns=[c for c in table.columns if c != OPTICS_GROUP
                                             and c in particles.columns])
            particles = _merge_optics(merged, table, path)
        write_star(_relion30_pixel_size(particles), path, version=False)
        return
    if optics is None:
        raise CrispError("RELION 3.1 STAR output needs optics values (voltage, Cs, pixel size, ...), and "
                         "these picks came without an optics table; write RELION 3.0 instead", path)
    table = _optics_frame(optics, path)
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
    write_star({"optics": table, "particles": particles}, path)


# ----------------------------------------------------------------------------------------------
# autopick.star indexes
# ----------------------------------------------------------------------------------------------
_JOB_FOLDER = re.compile(r"^job\d+$")


def relion_subpath(micrograph: str | os.PathLike[str]) -> PurePosixPath | None:
    """The part of a micrograph path below its RELION job folder, or None outside a RELION project.

    RELION finds a micrograph's coordinate file as ``coord_dir`` + this part without its extension
    + ``coord_suffix`` (``MotionCorr/job002/Movies/x.mrc`` -> ``Movies/x``), and its AutoPick job
    writes its files there.

    Examples
    --------
    >>> str(relion_subpath("MotionCorr/job002/Movies/x.mrc"))
    'Movies/x.mrc'
    >>> relion_subpath("mics/x.mrc") is None
    True
    """
    parts = PurePosixPath(str(micrograph).replace("\\", "/")).parts
    for i, part in enumerate(parts[:-1]):
        if _JOB_FOLDER.match(part):
            return PurePosixPath(*parts[i + 1:])
    return None


def coordinate_file_name(micrograph: str | os.PathLike[str], suffix: str = "_autopick.star") -> str:
    """Where a micrograph's coordinate file goes inside a picks folder (a POSIX relative path).

    Micrographs of a RELION project (a path with a ``jobNNN`` folder) get RELION's AutoPick layout,
    mirroring their folders below the job folder (``MotionCorr/job002/Movies/x.mrc`` ->
    ``Movies/x_autopick.star``), which is where ``relion_preprocess --extract --coord_dir PICKS/
    --coord_suffix _autopick.star`` looks; other micrographs a flat ``<stem><suffix>``
    (:func:`micrograph_stem`).
    """
    sub = relion_subpath(micrograph)
    if sub is None:
        return f"{micrograph_stem(micrograph)}{suffix}"
    return str(sub.with_suffix("")) + suffix if sub.suffix else str(sub) + suffix


def resolve_listed(entry: str, index: Path) -> Path:
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


def is_index(path: Path) -> bool:
    """Whether a STAR file looks like an ``autopick.star`` index (lists coordinate files)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    return "_rlnMicrographCoordinates" in head


def index_table(index_path: Path) -> pd.DataFrame:
    """The table of an index with ``rlnMicrographName`` and ``rlnMicrographCoordinates`` (as text)."""
    tables = read_star_tables(index_path)
    table = tables.get("coordinate_files")
    if table is None or COORDS_FILE not in table.columns:
        table = next((t for t in tables.values() if COORDS_FILE in t.columns), None)
    if table is None or NAME not in table.columns:
        raise CrispError(f"not an autopick index: no table with {NAME} and {COORDS_FILE}", index_path)
    if table.columns.duplicated().any():
        raise CrispError("the index has a column that appears more than once", index_path)
    return table


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
    table = index_table(index_path)
    frames = []
    for name, entry in zip(table[NAME].astype(str), table[COORDS_FILE].astype(str), strict=True):
        source = resolve_listed(entry, index_path)
        if source.resolve() == index_path.resolve():
            raise CrispError("the index lists itself as a coordinate file", index_path)
        if source.stat().st_size == 0:
            continue  # an empty file: no picks on this micrograph
        tables_one = read_star_tables(source)
        picks = next((t for t in tables_one.values() if {X, Y} <= set(t.columns)), None)
        if picks is None:
            if all(len(t) == 0 for t in tables_one.values()):
                continue  # an empty coordinate file: no picks on this micrograph
            raise CrispError(f"no table with {X} and {Y}", source)
        picks = picks.drop(columns=[NAME], errors="ignore")
        frames.append(finish(picks, source, name))
    if not frames:
        return finish(empty_picks(), index_path, None)
    return pd.concat(frames, ignore_index=True)


def listed_by_index(index: Path) -> set[Path]:
    """The resolved coordinate files an index lists (entries not found are left out)."""
    listed = set()
    for entry in index_table(index)[COORDS_FILE].astype(str):
        try:
            listed.add(resolve_listed(entry, index).resolve())
        except CrispError:
            continue  # reported when the index is read
    return listed


def write_autopick(df: pd.DataFrame, out_dir: str | os.PathLike[str], *, suffix: str = "_autopick.star",
                   micrograph_paths: Iterable[str | os.PathLike[str]] | None = None) -> Path:
    """Write picks in RELION 4/5's AutoPick layout: one STAR per micrograph plus an index.

    Each micrograph's picks go to ``out_dir/<stem><suffix>``, or for micrographs of a RELION project
    to RELION's AutoPick layout ``out_dir/<folders below jobNNN>/<name><suffix>``
    (:func:`coordinate_file_name`), each one table ``data_`` with
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
    df = finish(df, out, None)
    groups = group_by_micrograph(df) if len(df) else {}
    names = {stem: str(g[NAME].iloc[0]) for stem, g in groups.items()}
    if micrograph_paths is not None:
        lookup = micrograph_lookup(micrograph_paths)
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
        table.attrs = {}
        target = out / coordinate_file_name(names[stem], suffix)
        write_star(table, target)
        index_rows.append({NAME: names[stem], COORDS_FILE: str(target)})
    index = pd.DataFrame(index_rows, columns=[NAME, COORDS_FILE])
    return write_star({"coordinate_files": index}, out / "autopick.star")


def _sniff(head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace")
    return "data_" in text and "_rln" in text


FORMAT = CoordinateFormat(
    name="star", suffixes=(".star",), read=read, write=write, sniff=_sniff, aliases=("relion",),
    precision_px=1e-6,
    description="RELION STAR: 3.0 single table, 3.1+ optics + particles, or an autopick.star index")
