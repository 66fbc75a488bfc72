"""cryoSPARC ``.cs`` particles: a structured table of fields (cryoSPARC's ``Dataset``).

Fields used: ``location/center_x_frac``, ``location/center_y_frac``, ``location/micrograph_shape``
([ny, nx]) and, when present, ``location/micrograph_path``, ``pick_stats/ncc_score``, ``ctf/df1_A``,
``ctf/df2_A``, ``ctf/df_angle_rad``. x = frac_x * nx, y = frac_y * ny.

Reading takes both formats cryoSPARC writes: the numpy format (``np.save`` of one structured
array, what cryoSPARC exports; read with :func:`numpy.load` without pickles) and the newer
compressed ``CSDAT`` format (read with ``cryosparc-tools``' :class:`cryosparc.dataset.Dataset`).
:func:`write_cs` writes picks with ``cryosparc-tools`` (a ``Dataset`` with a ``uid`` per particle
and the ``location/*`` fields); it needs each micrograph's shape, which a picks table does not
carry, so ``crisp convert`` does not write ``.cs`` (the registry entry stays read only).

Into cryoSPARC (not checked here against a running cryoSPARC): extracted particles go in with
"Import Particle Stack" (particle meta path ``OUT/particles.star`` of ``crisp extract``, particle
data path the folder its ``rlnImageName`` paths are relative to); picks alone with the same job
given a coordinates STAR or a :func:`write_cs` file as meta path and the micrographs' imported
exposures connected, then cryoSPARC's own Extract From Micrographs. cryoSPARC Tools scripts can
attach a :func:`write_cs` file to a project as an external result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.errors import CrispError
from crisp.io.coordinates._common import FOM, NAME, CoordinateFormat, X, Y, finish

_REQUIRED = ("location/center_x_frac", "location/center_y_frac", "location/micrograph_shape")
_OPTIONAL = {"pick_stats/ncc_score": "rlnAutopickFigureOfMerit", "ctf/df1_A": "rlnDefocusU",
             "ctf/df2_A": "rlnDefocusV"}


_CSDAT_MAGIC = b"\x95CSDAT"


def _load_csdat(path: Path) -> np.ndarray:
    """A cryoSPARC ``CSDAT`` (compressed) file as a structured array, read by cryosparc-tools."""
    try:
        from cryosparc.dataset import Dataset
    except ImportError:  # pragma: no cover - cryosparc-tools is a dependency
        raise CrispError("reading a compressed cryoSPARC .cs file needs cryosparc-tools "
                         "(pip install cryosparc-tools)", path) from None
    try:
        records = Dataset.load(path).to_records()
    except Exception as err:  # noqa: BLE001 - cryosparc-tools wraps any failure in DatasetLoadError
        raise CrispError(f"not a readable cryoSPARC .cs file ({err})", path) from None
    return np.asarray(records).view(np.ndarray)


def _load(path: Path) -> np.ndarray:
    from crisp.io.coordinates._common import read_head

    if read_head(path, len(_CSDAT_MAGIC)) == _CSDAT_MAGIC:
        cs = _load_csdat(path)
        return _check_fields(cs, path)
    try:
        cs = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, MemoryError) as err:
        raise CrispError(f"not a readable cryoSPARC .cs file ({err}); CRISP reads .cs files in numpy "
                         "format, as cryoSPARC exports them", path) from None
    if not isinstance(cs, np.ndarray):  # e.g. an .npz archive
        if hasattr(cs, "close"):
            cs.close()
        raise CrispError("not a cryoSPARC .cs file (a numpy archive, not one structured array)", path)
    return _check_fields(cs, path)


def _check_fields(cs: np.ndarray, path: Path) -> np.ndarray:
    names = cs.dtype.names or ()
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise CrispError(f"cryoSPARC .cs file lacks field(s) {', '.join(missing)} (export particles with "
                         "their location)", path)
    if cs.ndim != 1:
        raise CrispError(f"cryoSPARC .cs file holds a {cs.ndim}-dimensional array; expected one row per "
                         "particle", path)
    return cs


def _field(cs: np.ndarray, name: str, path: Path, columns: int | None = None) -> np.ndarray:
    try:
        values = np.asarray(cs[name], dtype=float)
        if columns is not None:
            values = values.reshape(len(cs), columns)
        else:
            values = values.reshape(len(cs))
    except (ValueError, TypeError) as err:
        raise CrispError(f"cryoSPARC .cs field '{name}' is not {columns or 1} number(s) per particle ({err})",
                         path) from None
    return values


def _shape(cs: np.ndarray, path: Path) -> np.ndarray:
    shape = _field(cs, "location/micrograph_shape", path, columns=2)
    if not (np.isfinite(shape).all() and (shape > 0).all() and (shape == np.round(shape)).all()):
        raise CrispError("cryoSPARC .cs field 'location/micrograph_shape' holds a size that is not a "
                         "positive whole number", path)
    return shape


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read particle locations (and scores, defocus) from a cryoSPARC ``.cs`` file."""
    cs = _load(path)
    names = cs.dtype.names
    shape = _shape(cs, path)
    with np.errstate(all="ignore"):
        df = pd.DataFrame({X: _field(cs, "location/center_x_frac", path) * shape[:, 1],
                           Y: _field(cs, "location/center_y_frac", path) * shape[:, 0]})
    if "location/micrograph_path" in names:
        paths = np.asarray(cs["location/micrograph_path"]).reshape(-1)
        if len(paths) != len(cs):
            raise CrispError("cryoSPARC .cs field 'location/micrograph_path' is not one path per particle",
                             path)
        df.insert(0, NAME, [p.decode("utf-8", errors="replace") if isinstance(p, bytes) else str(p)
                            for p in paths])
    for source, column in _OPTIONAL.items():
        if source in names:
            df[column] = _field(cs, source, path)
    if "ctf/df_angle_rad" in names:
        df["rlnDefocusAngle"] = np.degrees(_field(cs, "ctf/df_angle_rad", path))
    return finish(df, path, micrograph_name)


def heights(path: Path) -> np.ndarray:
    """Each particle's micrograph height in pixels, as the file records it."""
    return _shape(_load(path), path)[:, 0].astype(int)


def write_cs(df: pd.DataFrame, path: str | os.PathLike[str],
             micrograph_shapes: Mapping[str, tuple[int, int]] | tuple[int, int]) -> Path:
    """Write picks as a cryoSPARC ``.cs`` particles file with cryosparc-tools, atomically.

    Parameters
    ----------
    df
        Picks table (``rlnMicrographName``, ``rlnCoordinateX`` = column, ``rlnCoordinateY`` = row in
        pixels; ``rlnAutopickFigureOfMerit`` becomes ``pick_stats/ncc_score``).
    path
        Destination ``.cs`` (numpy format, as cryoSPARC exports).
    micrograph_shapes
        ``(ny, nx)`` in pixels of every micrograph, or ``{rlnMicrographName: (ny, nx)}``.

    Returns
    -------
    Path

    Raises
    ------
    CrispError
        A micrograph without a shape, or a shape that is not two positive whole numbers.
    """
    from cryosparc.dataset import Dataset

    from crisp.atomic import atomic_path

    path = Path(path)
    df = finish(df, path, None)
    names = df[NAME].astype(str).tolist()
    if isinstance(micrograph_shapes, Mapping):
        missing = sorted(set(names) - set(map(str, micrograph_shapes)))
        if missing:
            raise CrispError(f"no micrograph shape for {len(missing)} micrograph(s), e.g. {missing[0]}", path)
        shapes = np.array([tuple(micrograph_shapes[n]) for n in names], dtype=float).reshape(len(df), 2)
    else:
        shapes = np.tile(np.asarray(tuple(micrograph_shapes), dtype=float), (len(df), 1))
    if shapes.shape[1:] != (2,) or not (np.isfinite(shapes).all() and (shapes > 0).all()
                                       and (shapes == np.round(shapes)).all()):
        raise CrispError("micrograph shapes must be (ny, nx), positive whole numbers of pixels", path)
    fields = [("location/micrograph_path", "O"), ("location/micrograph_shape", "<u4", (2,)),
              ("location/center_x_frac", "<f4"), ("location/center_y_frac", "<f4")]
    if FOM in df.columns:
        fields.append(("pick_stats/ncc_score", "<f4"))
    dataset = Dataset.allocate(len(df), fields)
    dataset["location/micrograph_path"] = names
    dataset["location/micrograph_shape"] = shapes.astype(np.uint32)
    dataset["location/center_x_frac"] = df[X].to_numpy(dtype=float) / shapes[:, 1]
    dataset["location/center_y_frac"] = df[Y].to_numpy(dtype=float) / shapes[:, 0]
    if FOM in df.columns:
        dataset["pick_stats/ncc_score"] = df[FOM].to_numpy(dtype=float)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        dataset.save(handle)
    return path


def _sniff(head: bytes) -> bool:
    return (head.startswith(b"\x93NUMPY") and b"location/center_x_frac" in head) or head.startswith(
        _CSDAT_MAGIC)


FORMAT = CoordinateFormat(
    name="cs", suffixes=(".cs",), read=read, write=None, sniff=_sniff, aliases=("cryosparc",),
    precision_px=1e-3, heights=heights,
    description="cryoSPARC .cs (read only): location/center_x_frac, center_y_frac, micrograph_shape")
