"""Fuzzing the coordinate readers: any input gives a correct parse or CrispError naming a file.

Every reader of the registry gets arbitrary bytes and text, and content that is structurally
plausible but wrong (missing or duplicated columns, NaN, inf, negative or non-numeric values, empty
data blocks, broken optics, odd cryoSPARC arrays, autopick indexes listing odd files). A reader
may return a table (then its coordinates are finite floats and every row has a micrograph name, and
where the content is valid the values are the expected ones) or raise :class:`CrispError` whose
path is set; any other exception is a bug.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crisp.errors import CrispError
from crisp.io.coordinates import FORMATS, read_autopick, read_coordinates

# CRISP_FUZZ_EXAMPLES=1000 for a longer hunt; 60 keeps the suite fast
FUZZ = settings(max_examples=int(os.environ.get("CRISP_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
X, Y, NAME = "rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName"

# tokens of plausible files: numbers good and bad, words, quotes, comments, STAR keywords
_TOKENS = st.sampled_from(["0", "1", "12.5", "-3", "-0.5", "1e3", "1e309", "nan", "NaN", "inf", "-inf",
                           "abc", "x", '"q"', "'a b'", "#", "loop_", "data_", "_rlnCoordinateX", "",
                           "001", "mic_001.mrc", "\x00", "é"])
_NUMBERS = st.one_of(st.integers(-10_000, 10_000), st.floats(allow_nan=True, allow_infinity=True))


@contextlib.contextmanager
def _file(name: str, content: bytes | str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(content)
        yield path


def _read_or_crisp_error(path: Path, fmt: str | None = None, **kwargs) -> pd.DataFrame | None:
    """The table read, checked for sanity, or None after a CrispError that names a file."""
    try:
        df = read_coordinates(path, fmt, **kwargs)
    except CrispError as err:
        assert err.path, f"CrispError without a file: {err}"
        return None
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[:3]) == [NAME, X, Y]
    for column in (X, Y):
        values = df[column].to_numpy()
        assert values.dtype.kind == "f" and np.isfinite(values).all()
    assert df[NAME].map(lambda v: isinstance(v, str)).all()
    return df


def _is_number(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------- any content
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@FUZZ
@given(content=st.binary(max_size=400))
def test_any_bytes(fmt, content):
    with _file(f"mic_001{FORMATS[fmt].suffixes[0]}", content) as path:
        _read_or_crisp_error(path)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@FUZZ
@given(lines=st.lists(st.lists(_TOKENS, max_size=6).map(" ".join), max_size=8),
       sep=st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_any_token_text(fmt, lines, sep):
    with _file(f"mic_001{FORMATS[fmt].suffixes[0]}", sep.join(lines)) as path:
        _read_or_crisp_error(path)


# -------------------------------------------------------------------------------------- RELION
_STAR_COLUMNS = st.sampled_from(["rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName",
                                 "rlnAutopickFigureOfMerit", "rlnOpticsGroup", "rlnVoltage",
                                 "rlnAnglePsi", "rlnDefocusU", "rlnMicrographCoordinates", "rlnImageName"])
_STAR_VALUES = st.one_of(_TOKENS.filter(lambda t: t.strip() and " " not in t and t not in ("#", "\x00")),
                         _NUMBERS.map(str))


@st.composite
def _star_text(draw):
    blocks = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["", "optics", "particles", "coordinate_files", "x"]))
        columns = draw(st.lists(_STAR_COLUMNS, max_size=5))  # duplicates allowed
        if draw(st.booleans()) and columns:  # a loop
            rows = draw(st.lists(st.lists(_STAR_VALUES, min_size=len(columns), max_size=len(columns)),
                                 max_size=4))
            if draw(st.booleans()) and rows:  # a ragged row
                rows[-1] = rows[-1][:-1]
            body = "loop_\n" + "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns))
            body += "".join(" ".join(r) + "\n" for r in rows)
        else:  # key-value pairs
            body = "".join(f"_{c} {draw(_STAR_VALUES)}\n" for c in columns)
        version = "# version 30001\n\n" if draw(st.booleans()) else ""
        blocks.append(f"{version}data_{name}\n\n{body}\n")
    return "\n".join(blocks)


@FUZZ
@given(text=_star_text())
def test_plausible_star(text):
    with _file("mic_001.star", text) as path:
        _read_or_crisp_error(path)


@FUZZ
@given(xs=st.lists(_NUMBERS, min_size=1, max_size=5), groups=st.lists(st.integers(0, 3), min_size=1,
                                                                       max_size=5),
       optics_groups=st.lists(st.integers(0, 3), max_size=3), voltage=_STAR_VALUES)
def test_relion31_with_odd_optics(xs, groups, optics_groups, voltage):
    n = min(len(xs), len(groups))
    optics = "".join(f"opticsGroup{g} {g} {voltage}\n" for g in optics_groups)
    particles = "".join(f"{xs[i]} 10 {groups[i]}\n" for i in range(n))
    text = (f"# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
            f"_rlnVoltage #3\n{optics}\n\n# version 30001\n\ndata_particles\n\nloop_\n_rlnCoordinateX #1\n"
            f"_rlnCoordinateY #2\n_rlnOpticsGroup #3\n{particles}\n")
    with _file("mic_001.star", text) as path:
        df = _read_or_crisp_error(path)
    valid = (all(math.isfinite(float(x)) for x in xs[:n]) and set(groups[:n]) <= set(optics_groups)
             and len(set(optics_groups)) == len(optics_groups))
    if valid:  # a correct file: read as written, with its optics
        assert df is not None
        np.testing.assert_allclose(df[X], [float(x) for x in xs[:n]], rtol=1e-6)
        assert df[Y].tolist() == [10.0] * n and df.attrs["optics"]


@FUZZ
@given(entries=st.lists(st.sampled_from(["ok", "missing", "empty", "self", "garbage", "absolute-missing",
                                         "dir"]), max_size=4))
def test_autopick_index_listing_odd_files(entries):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "ok.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n")
        (root / "empty.star").write_text("")
        (root / "garbage.star").write_bytes(b"\xff\x00data_ loop_ _rln")
        (root / "dir.star").mkdir()
        names = {"ok": "ok.star", "missing": "nope.star", "empty": "empty.star", "self": "autopick.star",
                 "garbage": "garbage.star", "absolute-missing": "/no/such/file.star", "dir": "dir.star"}
        rows = "".join(f"m{i}.mrc {names[e]}\n" for i, e in enumerate(entries))
        index = root / "autopick.star"
        index.write_text("data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n"
                         "_rlnMicrographCoordinates #2\n" + rows)
        df = _read_or_crisp_error(index)
        try:
            direct = read_autopick(index)
        except CrispError as err:
            assert err.path
            direct = None
        if set(entries) <= {"ok", "empty"}:  # a correct index
            assert df is not None and len(df) == entries.count("ok") == len(direct)


# ----------------------------------------------------------------------------- text formats
@FUZZ
@given(rows=st.lists(st.lists(st.one_of(_TOKENS, _NUMBERS.map(str)), max_size=6), max_size=6),
       sep=st.sampled_from(["\t", " ", "  "]))
def test_plausible_box(rows, sep):
    text = "".join(sep.join(r) + "\n" for r in rows)
    with _file("mic_001.box", text) as path:
        df = _read_or_crisp_error(path)
    tokens = [r for r in ([t for t in sep.join(r).split() if t] for r in rows) if r]
    valid = (all(len(r) == len(tokens[0]) >= 4 for r in tokens)
             and all(_is_number(t) for r in tokens for t in r[:4])
             and all(float(t) > 0 for r in tokens for t in r[2:4])
             and all(_is_number(t) or t.lower() in ("nan", "inf", "-inf") for r in tokens for t in r[4:])
             and not any("#" in "".join(r) for r in rows))
    if valid:
        assert df is not None and len(df) == len(tokens)
        expected = [float(r[0]) + float(r[2]) / 2 for r in tokens]
        np.testing.assert_allclose(df[X], expected, rtol=1e-9)


_TOPAZ_COLUMNS = st.sampled_from(["image_name", "x_coord", "y_coord", "score", "other"])
_CSV_COLUMNS = st.sampled_from(["X-Coordinate", "Y-Coordinate", "Diameter", "Confidence"])


@pytest.mark.parametrize("fmt, columns, sep", [("txt", _TOPAZ_COLUMNS, "\t"), ("txt", _TOPAZ_COLUMNS, " "),
                                               ("csv", _CSV_COLUMNS, ",")])
@FUZZ
@given(data=st.data())
def test_plausible_delimited(fmt, columns, sep, data):
    header = data.draw(st.lists(columns, max_size=5))  # duplicated or missing columns included
    rows = data.draw(st.lists(st.lists(st.one_of(_TOKENS, _NUMBERS.map(str)), min_size=len(header),
                                       max_size=len(header) + 1), max_size=5))
    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    with _file(f"mic_001.{fmt}", text) as path:
        df = _read_or_crisp_error(path)
    xname, yname = ("x_coord", "y_coord") if fmt == "txt" else ("X-Coordinate", "Y-Coordinate")
    simple = all(t and _is_number(t) and " " not in t for r in rows for t in r)
    if simple and len(set(header)) == len(header) and {xname, yname} <= set(header) \
            and all(len(r) == len(header) for r in rows) and not (fmt == "csv" and "Diameter" in header):
        assert df is not None and len(df) == len(rows)
        np.testing.assert_allclose(df[X], [float(r[header.index(xname)]) for r in rows], rtol=1e-9)


# ----------------------------------------------------------------------------------- cryoSPARC
_CS_FIELDS = {
    "location/center_x_frac": ("<f4", "<f8", "<i4", "S8"),
    "location/center_y_frac": ("<f4", "<f8", "<i4", "S8"),
    "location/micrograph_shape": (("<u4", (2,)), ("<i4", (2,)), ("<f8", (2,)), ("<u4", (3,)), "<u4", "S8"),
    "location/micrograph_path": ("S20", "<U20", "<f4"),
    "pick_stats/ncc_score": ("<f4", "S4"),
    "ctf/df_angle_rad": ("<f4",),
}


@st.composite
def _cs_array(draw):
    fields = draw(st.lists(st.sampled_from(sorted(_CS_FIELDS)), unique=True, max_size=len(_CS_FIELDS)))
    dtype = []
    for name in fields:
        kind = draw(st.sampled_from(_CS_FIELDS[name]))
        dtype.append((name, *kind) if isinstance(kind, tuple) else (name, kind))
    shape = draw(st.sampled_from([(), (0,), (3,), (2, 2)]))
    arr = np.zeros(shape, dtype=dtype) if dtype else np.zeros(shape)
    for name in fields:
        column = arr[name]
        if column.dtype.kind in "fiu":
            values = draw(st.lists(_NUMBERS, min_size=1, max_size=1))[0]
            with np.errstate(all="ignore"), contextlib.suppress(OverflowError, ValueError):
                column[...] = values
        else:
            column[...] = draw(st.sampled_from(["mic_001.mrc", "x", ""]))
    return arr


@FUZZ
@given(arr=_cs_array(), flip=st.booleans())
def test_plausible_cryosparc(arr, flip):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "particles.cs"
        with open(path, "wb") as handle:
            np.save(handle, arr)
        _read_or_crisp_error(path, flip_y=flip)


def test_cryosparc_npz_archive_is_refused(tmp_path):
    path = tmp_path / "p.cs"
    with open(path, "wb") as handle:
        np.savez(handle, a=np.zeros(3))
    assert _read_or_crisp_error(path) is None
