"""Centre finders on synthetic probability maps with known centres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from crisp.errors import CrispError
from crisp.picking import available_finders, find_particles, get_finder, make_params
from crisp.picking.base import drop_near_border
from crisp.picking.nms import greedy_nms

X, Y, S = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"
DIAMETER = 32.0
FINDERS = ["grid-nms", "crocker-grier", "contour"]


def disc_map(shape, centres, diameter, values=None):
    """Sum-free map: 1 (or ``values``) inside discs of ``diameter`` around ``centres`` (x, y)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for k, (x, y) in enumerate(centres):
        out[(xx - x) ** 2 + (yy - y) ** 2 <= (diameter / 2) ** 2] = 1.0 if values is None else values[k]
    return out


def synthetic_map(seed=0, shape=(512, 640), n=40, n_pairs=4, noise=0.08):
    """Random non-overlapping discs plus touching pairs, calibrated-looking values and noise."""
    rng = np.random.default_rng(seed)
    d = DIAMETER
    centres: list[tuple[float, float]] = []
    while len(centres) < n_pairs * 2:  # touching pairs: centres exactly one diameter apart
        x, y = rng.uniform(2 * d, shape[1] - 2 * d), rng.uniform(2 * d, shape[0] - 2 * d)
        a = rng.uniform(0, np.pi)
        pair = [(x, y), (x + d * np.cos(a), y + d * np.sin(a))]
        if all(np.hypot(px - cx, py - cy) > 1.6 * d for px, py in pair for cx, cy in centres):
            centres += pair
    tries = 0
    while len(centres) < n + 2 * n_pairs and tries < 10000:
        tries += 1
        x, y = rng.uniform(d, shape[1] - d), rng.uniform(d, shape[0] - d)
        if all(np.hypot(x - cx, y - cy) > 1.3 * d for cx, cy in centres):
            centres.append((x, y))
    prob = disc_map(shape, centres, d) * 0.85 + 0.05 + rng.normal(0, noise, shape).astype(np.float32)
    return np.clip(prob, 0, 1), np.array(centres)


def recovered(picks: pd.DataFrame, centres: np.ndarray, radius: float) -> tuple[float, int]:
    """Fraction of centres with a pick within ``radius``, and the number of picks near no centre."""
    xy = picks[[X, Y]].to_numpy()
    if len(xy) == 0:
        return 0.0, 0
    dist, _ = cKDTree(xy).query(centres)
    far, _ = cKDTree(centres).query(xy)
    return float(np.mean(dist <= radius)), int(np.sum(far > radius))


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_map()


def test_registry_lists_and_validates():
    assert set(FINDERS) <= set(available_finders())
    with pytest.raises(CrispError, match="unknown finder"):
        get_finder("nope")
    with pytest.raises(CrispError, match="no_such"):
        make_params("grid-nms", {"no_such": 1})
    for name in FINDERS:
        finder = get_finder(name)
        assert len(finder.grid) == 2 and set(finder.grid) <= set(finder.params_model.model_fields)


@pytest.mark.parametrize("name", FINDERS)
def test_finder_recovers_centres(name, synthetic):
    prob, centres = synthetic
    picks = find_particles(prob, DIAMETER, name)
    assert list(picks.columns) == [X, Y, S]
    assert np.all(np.diff(picks[S].to_numpy()) <= 0), "picks must be sorted by decreasing score"
    confident = picks[picks[S] >= 0.5]
    fraction, false = recovered(confident, centres, DIAMETER / 4)
    assert fraction >= 0.95
    assert false <= 0.05 * len(centres)
    # the touching pairs (first 8 centres) are resolved into two picks each
    assert recovered(confident, centres[:8], DIAMETER / 4)[0] == 1.0


@pytest.mark.parametrize("name", FINDERS)
def test_finder_axes_on_asymmetric_map(name):
    # one particle at column 150, row 40 of a wide map: x must be the column, y the row
    prob = disc_map((96, 240), [(150.0, 40.0)], DIAMETER)
    picks = find_particles(prob, DIAMETER, name)
    assert len(picks) == 1
    assert picks[X].iloc[0] == pytest.approx(150.0, abs=1.0)
    assert picks[Y].iloc[0] == pytest.approx(40.0, abs=1.0)


@pytest.mark.parametrize("name", FINDERS)
def test_score_orders_confident_first(name):
    centres = [(60.0, 60.0), (160.0, 60.0), (60.0, 160.0), (160.0, 160.0)]
    values = [0.95, 0.6, 0.8, 0.7]
    prob = disc_map((224, 224), centres, DIAMETER, values)
    picks = find_particles(prob, DIAMETER, name, **({"threshold": 0.4} if name == "contour" else {}))
    assert len(picks) == 4
    _, idx = cKDTree(np.array(centres)).query(picks[[X, Y]].to_numpy())
    assert [values[i] for i in idx] == sorted(values, reverse=True)
    assert picks[S].between(0, 1).all()


@pytest.mark.parametrize("name", FINDERS)
def test_empty_map_gives_no_picks(name):
    picks = find_particles(np.zeros((128, 128), np.float32), DIAMETER, name)
    assert len(picks) == 0 and list(picks.columns) == [X, Y, S]


def test_bad_input_is_crisp_error():
    with pytest.raises(CrispError, match="2-D"):
        find_particles(np.zeros((2, 8, 8)), DIAMETER)
    with pytest.raises(CrispError, match="diameter"):
        find_particles(np.zeros((64, 64)), 0)


def test_crocker_grier_drops_the_lighter_of_close_blobs():
    # two blobs 0.5 diameter apart, separation 0.7 diameter: only the heavier one survives
    prob = disc_map((128, 200), [(80.0, 64.0)], DIAMETER) * 0.5
    prob = np.maximum(prob, disc_map((128, 200), [(96.0, 64.0)], DIAMETER))
    picks = find_particles(prob, DIAMETER, "crocker-grier", separation_fraction=0.7, sigma_fraction=0.2)
    assert len(picks) == 1
    assert picks[X].iloc[0] > 88


def test_greedy_nms_against_brute_force():
    rng = np.random.default_rng(3)
    x, y, score = rng.uniform(0, 60, 40), rng.uniform(0, 60, 40), rng.uniform(size=40)
    side, thr = 10.0, 0.3
    keep = greedy_nms(x, y, score, side, thr)
    expected = []
    for k in np.argsort(-score):
        ok = True
        for j in expected:
            inter = max(0, side - abs(x[k] - x[j])) * max(0, side - abs(y[k] - y[j]))
            if inter / (2 * side**2 - inter) > thr:
                ok = False
        if ok:
            expected.append(k)
    assert keep.tolist() == expected


def test_real_mask_crowded_particles(real_data_dir):
    # the expert mask of a real micrograph (discs of 108 px, most overlapping their neighbours) as a
    # probability map: the default finder with a narrow window separates the crowded particles
    from PIL import Image

    from crisp.io.coordinates import read_coordinates
    from crisp.metrics.picking import box_map

    name = "Falcon_2012_06_12-14_33_35_0"
    with Image.open(real_data_dir / "masks" / f"{name}_mask.jpg") as img:
        prob = np.asarray(img.convert("L"), dtype=np.float32) / 255
    truth = read_coordinates(real_data_dir / "coordinates" / f"{name}.star")
    picks = find_particles(prob, 108, "grid-nms", sigma_fraction=0.1, iou_threshold=0.5)
    picks["rlnMicrographName"] = truth["rlnMicrographName"].iloc[0]
    result = box_map(picks, truth, 108)
    assert result["AP50"] >= 0.9 and result["recall"] >= 0.95


def test_contour_finds_elongated_footprints():
    """Footprints far smaller than the disc of the particle's largest extent (elongated particles,
    as the simulator's thresholded masks are) are still found: the area band follows the blobs."""
    import cv2

    from crisp.picking import find_particles

    rng = np.random.default_rng(5)
    diameter = 60.0
    prob = np.zeros((600, 600), np.float32)
    centres = []
    for row in range(4):
        for col in range(4):
            cy, cx = 90 + 140 * row + rng.uniform(-5, 5), 90 + 140 * col + rng.uniform(-5, 5)
            angle = rng.uniform(0, 180)
            cv2.ellipse(prob, (int(round(cx)), int(round(cy))), (30, 11), angle, 0, 360, 1.0, -1)
            centres.append((round(cx), round(cy)))
    picks = find_particles(prob, diameter, "contour", threshold=0.5, erosion_fraction=0.3)
    found = np.array(picks[["rlnCoordinateX", "rlnCoordinateY"]])
    assert len(found) == len(centres)
    for cx, cy in centres:
        assert np.min(np.hypot(found[:, 0] - cx, found[:, 1] - cy)) < diameter / 4


def test_drop_near_border_by_hand():
    # shape (rows 100, columns 200): pixel centres 0..199 in x and 0..99 in y
    picks = pd.DataFrame({X: [5.0, 194.0, 100.0, 100.0, 4.9, 100.0],
                          Y: [50.0, 50.0, 94.0, 95.0, 50.0, 50.0],
                          "rlnAutopickFigureOfMerit": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]})
    # edge distances: 5, 5, 5, 4, 4.9, 50
    kept = drop_near_border(picks, (100, 200), 5.0)
    assert kept[X].tolist() == [5.0, 194.0, 100.0, 100.0]
    assert kept[Y].tolist() == [50.0, 50.0, 94.0, 50.0]
    assert kept.index.tolist() == [0, 1, 2, 3]
    assert len(drop_near_border(picks, (100, 200), 0.0)) == 6
    assert len(drop_near_border(picks, (100, 200), 50.5)) == 0
