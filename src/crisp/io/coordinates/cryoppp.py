"""CryoPPP coordinates: ``X-Coordinate,Y-Coordinate,Diameter`` (extra columns ignored), one micrograph."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crisp.atomic import write_text_atomic
from crisp.errors import CrispError
from crisp.io.coordinates._common import (
    DIAMETER,
    CoordinateFormat,
    X,
    Y,
    finish,
    number,
    positive_size,
    read_delimited,
    require_columns,
    single_micrograph,
)


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read one micrograph's CryoPPP picks; ``Diameter`` becomes ``rlnDiameter``."""
    table = read_delimited(path, ",", "CryoPPP .csv")
    require_columns(table, ("X-Coordinate", "Y-Coordinate"), "CryoPPP",
                    "X-Coordinate, Y-Coordinate, Diameter", path)
    rename = {"X-Coordinate": X, "Y-Coordinate": Y}
    if "Diameter" in table.columns:
        rename["Diameter"] = DIAMETER
    df = finish(table.rename(columns=rename)[list(rename.values())], path, micrograph_name)
    if DIAMETER in df.columns and (df[DIAMETER] <= 0).any():
        raise CrispError("CryoPPP .csv holds a diameter that is not positive", path)
    return df


def write(df: pd.DataFrame, path: Path, *, box_size: float | None = None, **_) -> None:
    """Write one micrograph's picks; the diameter is ``box_size`` or the ``rlnDiameter`` column."""
    single_micrograph(df, path, "CryoPPP .csv")
    if box_size is not None:
        diameters = [positive_size(box_size, "CryoPPP .csv", path)] * len(df)
    elif DIAMETER in df.columns:
        diameters = [positive_size(d, "CryoPPP .csv", path) for d in df[DIAMETER]]
    else:
        raise CrispError(f"writing CryoPPP .csv needs a diameter: box_size (--box-size) or a {DIAMETER} "
                         "column", path)
    lines = ["X-Coordinate,Y-Coordinate,Diameter\n"]
    lines += [f"{number(x)},{number(y)},{number(d)}\n" for x, y, d in zip(df[X], df[Y], diameters,
                                                                          strict=True)]
    write_text_atomic(path, "".join(lines))


def _sniff(head: bytes) -> bool:
    first = head.decode("utf-8", errors="replace").split("\n", 1)[0]
    return "X-Coordinate" in first and "Y-Coordinate" in first


FORMAT = CoordinateFormat(
    name="csv", suffixes=(".csv",), read=read, write=write, sniff=_sniff, aliases=("cryoppp",),
    precision_px=5e-4, one_micrograph=True,
    description="CryoPPP .csv: X-Coordinate, Y-Coordinate, Diameter (one micrograph)")
