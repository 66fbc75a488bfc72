"""cryoSPARC ``.cs`` files written and read with cryosparc-tools (``cryosparc.dataset.Dataset``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crisp.errors import CrispError
from crisp.io.coordinates import read_coordinates
from crisp.io.coordinates.cs import write_cs

Dataset = pytest.importorskip("cryosparc.dataset").Dataset

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
SHAPES = {"MotionCorr/job002/Movies/a.mrc": (3838, 3710), "MotionCorr/job002/Movies/b.mrc": (512, 1024)}


def crisp_picks() -> pd.DataFrame:
    return pd.DataFrame({M: ["MotionCorr/job002/Movies/a.mrc"] * 3 + ["MotionCorr/job002/Movies/b.mrc"] * 2,
                         X: [10.25, 1855.5, 3700.0, 0.0, 1023.75], Y: [20.75, 1919.0, 3837.0, 511.0, 256.5],
                         S: [0.9, 0.5, 0.25, 1.0, 0.0]})


def test_picks_round_trip_through_a_cs_file_written_by_cryosparc_tools(tmp_path):
    picks = crisp_picks()
    path = write_cs(picks, tmp_path / "picks.cs", SHAPES)
    # cryoSPARC's own reader sees its fractional locations, the shapes and the paths
    dataset = Dataset.load(path)
    assert len(dataset) == len(picks) and len(set(dataset["uid"])) == len(picks)
    shape = np.array([SHAPES[m] for m in picks[M]])
    np.testing.assert_array_equal(dataset["location/micrograph_shape"], shape)
    np.testing.assert_allclose(dataset["location/center_x_frac"], picks[X] / shape[:, 1], rtol=1e-6)
    np.testing.assert_allclose(dataset["location/center_y_frac"], picks[Y] / shape[:, 0], rtol=1e-6)
    assert list(dataset["location/micrograph_path"]) == picks[M].tolist()
    np.testing.assert_allclose(dataset["pick_stats/ncc_score"], picks[S], rtol=1e-6)
    # and CRISP reads the file back to the same picks (float32 fractions: a few thousandths of a pixel)
    back = read_coordinates(path)
    assert back[M].tolist() == picks[M].tolist()
    np.testing.assert_allclose(back[X], picks[X], atol=2e-3)
    np.testing.assert_allclose(back[Y], picks[Y], atol=2e-3)
    np.testing.assert_allclose(back[S], picks[S], atol=1e-6)
    # flipping y with each micrograph's own height from the file
    flipped = read_coordinates(path, flip_y=True)
    np.testing.assert_allclose(flipped[Y], shape[:, 0] - 1 - picks[Y], atol=2e-3)


def test_the_compressed_csdat_format_is_read(tmp_path):
    from cryosparc.dataset import CSDAT_FORMAT

    picks = crisp_picks()
    dataset = Dataset.load(write_cs(picks, tmp_path / "numpy.cs", SHAPES))
    dataset.save(tmp_path / "csdat.cs", format=CSDAT_FORMAT)
    assert (tmp_path / "csdat.cs").read_bytes()[:6] == b"\x95CSDAT"  # not a numpy file
    back = read_coordinates(tmp_path / "csdat.cs")
    np.testing.assert_allclose(back[X], picks[X], atol=2e-3)
    assert back[M].tolist() == picks[M].tolist()


def test_one_shape_for_every_micrograph_and_bad_shapes(tmp_path):
    picks = crisp_picks().assign(**{M: "m.mrc"})
    back = read_coordinates(write_cs(picks, tmp_path / "one.cs", (4096, 4096)))
    np.testing.assert_allclose(back[X], picks[X], atol=2e-3)
    with pytest.raises(CrispError, match="no micrograph shape"):
        write_cs(crisp_picks(), tmp_path / "x.cs", {"MotionCorr/job002/Movies/a.mrc": (10, 10)})
    with pytest.raises(CrispError, match="positive whole numbers"):
        write_cs(picks, tmp_path / "y.cs", (0, 4096))
    assert not (tmp_path / "x.cs").exists() and not (tmp_path / "y.cs").exists()
