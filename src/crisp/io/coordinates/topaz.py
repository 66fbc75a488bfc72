"""Topaz coordinates: tab-separated text with the header ``image_name x_coord y_coord score``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crisp.atomic import write_text_atomic
from crisp.io.coordinates._common import (
    FOM,
    NAME,
    CoordinateFormat,
    X,
    Y,
    finish,
    image_name,
    micrograph_stem,
    number,
    read_delimited,
    require_columns,
)


def read(path: Path, micrograph_name: str | None) -> pd.DataFrame:
    """Read Topaz picks (tab- or space-separated); ``score`` becomes ``rlnAutopickFigureOfMerit``."""
    table = read_delimited(path, "\t", "Topaz")
    if len(table.columns) == 1:  # space-separated variant
        table = read_delimited(path, r"\s+", "Topaz")
    require_columns(table, ("x_coord", "y_coord"), "Topaz", "header image_name, x_coord, y_coord, score",
                    path)
    rename = {"x_coord": X, "y_coord": Y}
    if "score" in table.columns:
        rename["score"] = FOM
    if "image_name" in table.columns:
        table["image_name"] = table["image_name"].astype(str)
        rename["image_name"] = NAME
    return finish(table.rename(columns=rename)[list(rename.values())], path, micrograph_name)


def write(df: pd.DataFrame, path: Path, **_) -> None:
    """Write Topaz picks: names without folder or extension, coordinates to 3 decimals."""
    names = (df[NAME].map(image_name) if NAME in df.columns
             else pd.Series([micrograph_stem(path)] * len(df)))
    scores = df[FOM].astype(float) if FOM in df.columns else pd.Series([0.0] * len(df))
    lines = ["image_name\tx_coord\ty_coord\tscore\n"]
    lines += [f"{n}\t{number(x)}\t{number(y)}\t{float(s):.6g}\n"
              for n, x, y, s in zip(names, df[X], df[Y], scores, strict=True)]
    write_text_atomic(path, "".join(lines))


def _sniff(head: bytes) -> bool:
    first = head.decode("utf-8", errors="replace").split("\n", 1)[0].split()
    return "x_coord" in first and "y_coord" in first


FORMAT = CoordinateFormat(
    name="txt", suffixes=(".txt", ".tsv"), read=read, write=write, sniff=_sniff, aliases=("topaz", "tsv"),
    precision_px=5e-4, description="Topaz: tab-separated image_name, x_coord, y_coord, score")
