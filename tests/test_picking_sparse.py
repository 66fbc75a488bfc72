"""Picker tuning and evaluation with sparse truth: recall at N expected particles (issue 17)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from crisp.cli import main
from crisp.config import save_yaml
from crisp.dataset import make_split, write_split
from crisp.errors import CrispError
from crisp.io.coordinates import write_coordinates
from crisp.io.micrographs import write_mrc
from crisp.metrics.picking import recall_at_n
from crisp.picking.tune import TUNED_ON_FULL, PickerConfig, load_picker, pick_maps, tune_picker
from crisp.workflow.evaluate_run import picking_metrics

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
DIAMETER = 32.0
SHAPE = (256, 320)
NAMES = ["m0", "m1", "m2"]


# ---------------------------------------------------------------- recall at N


def test_recall_at_n_by_hand():
    picks = pd.DataFrame({M: ["a.mrc"] * 4 + ["b"] * 2,
                          X: [10, 50, 100, 200, 0, 30], Y: [10, 50, 100, 200, 0, 30],
                          S: [0.9, 0.8, 0.7, 0.6, 0.95, 0.5]})
    truth = pd.DataFrame({M: ["a", "a", "a", "b"], X: [12, 100, 300, 30], Y: [10, 101, 300, 31]})
    # n = 2: a keeps (10,10) and (50,50), which find (12,10); b keeps both and finds (30,31)
    two = recall_at_n(picks, truth, 2, radius_px=5)
    assert two["recall_at_n"] == 0.5 and two["n_matched"] == 2 and two["n_truth"] == 4
    assert two["n_kept"] == 4 and two["picks_per_micrograph"] == 2 and two["n_micrographs"] == 2
    assert two["threshold_at_n"] == pytest.approx(np.median([0.8, 0.5]))
    # n = 3 (and 2.5, rounded up): a also keeps (100,100), which finds (100,101)
    for n in (3, 2.5):
        three = recall_at_n(picks, truth, n, radius_px=5)
        assert three["recall_at_n"] == 0.75 and three["n_kept"] == 5
        assert three["threshold_at_n"] == pytest.approx(np.median([0.7, 0.5]))  # b has fewer than 3
    # a radius too small for (12,10) and (30,31)
    assert recall_at_n(picks, truth, 3, radius_px=0.5)["recall_at_n"] == 0.0
    # the input order of the picks does not matter (they are ranked by score)
    shuffled = picks.sample(frac=1.0, random_state=3)
    assert recall_at_n(shuffled, truth, 2, radius_px=5) == two
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            recall_at_n(picks, truth, bad, radius_px=5)


def _brute_recall_at_n(picks: pd.DataFrame, truth: pd.DataFrame, n: int, radius: float) -> float:
    """Keep the n best picks per micrograph, then the largest one-to-one matching by trying all."""
    found = 0
    for mic in truth[M].unique():
        p = picks[picks[M] == mic].sort_values(S, ascending=False, kind="stable").head(n)
        t = truth[truth[M] == mic]
        pxy, txy = p[[X, Y]].to_numpy(), t[[X, Y]].to_numpy()
        best = 0
        slots = list(range(len(pxy))) + [None] * len(txy)
        for assign in itertools.permutations(slots, len(txy)):
            ok = sum(1 for ti, pi in enumerate(assign)
                     if pi is not None and np.hypot(*(pxy[pi] - txy[ti])) <= radius)
            best = max(best, ok)
        found += best
    return found / len(truth)


@pytest.mark.parametrize("seed", range(6))
def test_recall_at_n_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    picks = pd.DataFrame({M: rng.choice(["a", "b"], 9), X: rng.uniform(0, 30, 9), Y: rng.uniform(0, 30, 9),
                          S: rng.permutation(9) / 10})
    truth = pd.DataFrame({M: rng.choice(["a", "b"], 5), X: rng.uniform(0, 30, 5), Y: rng.uniform(0, 30, 5)})
    for n in (1, 2, 4):
        got = recall_at_n(picks, truth, n, radius_px=8)["recall_at_n"]
        assert got == pytest.approx(_brute_recall_at_n(picks, truth, n, 8))


# ---------------------------------------------------------------- hand-made maps


def gaussian_blobs(centres: np.ndarray, peaks: np.ndarray, shape=SHAPE, sigma=DIAMETER / 4) -> np.ndarray:
    """Background 0.02 plus a Gaussian blob of height ``peaks[k]`` at each centre (x, y)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.full(shape, 0.02, np.float32)
    for (x, y), peak in zip(centres, peaks, strict=True):
        out = np.maximum(out, peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return out


@pytest.fixture(scope="module")
def sparse_maps():
    """Three maps of 20 particles each on a jittered lattice; 4 per map (20 %) are annotated, and
    they are the bright ones (peak 0.95; the others 0.55 to 0.8), as annotators pick the clearest."""
    rng = np.random.default_rng(7)
    maps, frames, full = {}, [], []
    lattice = np.array([(x, y) for y in (48, 104, 160, 216) for x in (40, 100, 160, 220, 280)], float)
    for name in NAMES:
        centres = lattice + rng.uniform(-4, 4, lattice.shape)
        annotated = rng.choice(len(centres), 4, replace=False)
        peaks = rng.uniform(0.55, 0.8, len(centres))
        peaks[annotated] = 0.95
        maps[name] = gaussian_blobs(centres, peaks)
        frames.append(pd.DataFrame({M: f"{name}.mrc", X: centres[annotated, 0], Y: centres[annotated, 1]}))
        full.append(pd.DataFrame({M: f"{name}.mrc", X: centres[:, 0], Y: centres[:, 1]}))
    return maps, pd.concat(frames, ignore_index=True), pd.concat(full, ignore_index=True)


GRIDS = {"grid-nms": {"min_score": [0.97, 0.2, 0.1]}}


def test_sparse_tuning_keeps_n_picks_where_f1_keeps_the_annotated_few(sparse_maps):
    maps, sparse, full = sparse_maps
    config, table = tune_picker(maps, sparse, DIAMETER, finders=["grid-nms"], grids=GRIDS,
                                progress=False, border_fractions=(), expected_particles=20)
    assert config.expected_particles == 20.0
    assert config.tuned_on == "sparse annotation: recall at 20 expected particles per micrograph " \
                              "(radius matching at half the diameter)"
    assert set(config.validation) == {"recall_at_n", "picks_per_micrograph", "n_micrographs"}
    assert "mAP" not in table and table["recall_at_n"].is_monotonic_decreasing
    # a minimum score of 0.97 finds nothing on maps of peak 0.95: recall 0, ranked last; the others
    # find all 12 annotated centres
    assert table.iloc[-1]["min_score"] == 0.97 and table.iloc[-1]["recall_at_n"] == 0.0
    assert table["recall_at_n"].tolist() == [1.0, 1.0, 0.0]
    assert config.validation["recall_at_n"] == 1.0 and config.validation["picks_per_micrograph"] == 20
    # the first of the settings with recall 1 (min_score 0.2) wins the tie
    assert config.finder == "grid-nms" and config.params["min_score"] == 0.2
    # the threshold is the median over the maps of the 20th pick's score: it keeps the 20 particles
    # of two maps and nearly all of the third, all of them real particles
    picks = pick_maps(maps, DIAMETER, config.finder, config.params)
    twentieth = [np.sort(group[S].to_numpy())[::-1][19] for _, group in picks.groupby(M)]
    assert config.threshold == pytest.approx(np.median(twentieth))
    kept = picks[picks[S] >= config.threshold]
    counts = sorted(kept.groupby(M).size())
    assert counts[1:] == [20, 20] and counts[0] >= 15
    assert recall_at_n(kept, full, 20, DIAMETER / 2)["n_matched"] == len(kept)
    # box mAP + F1 against the same sparse truth set a threshold that keeps only the bright few
    mapped, _ = tune_picker(maps, sparse, DIAMETER, finders=["grid-nms"], grids=GRIDS,
                            progress=False, border_fractions=())
    assert mapped.tuned_on == TUNED_ON_FULL and mapped.expected_particles is None
    few = pick_maps(maps, DIAMETER, mapped.finder, mapped.params)
    assert (few[S] >= mapped.threshold).sum() <= 4 * len(NAMES)


def test_sparse_tuning_chooses_the_setting_that_finds_the_truth():
    # two particles 20 px apart (0.63 diameters) on each map, both annotated; NMS at IoU 0.1 keeps one
    # of the pair, at 0.5 both; an isolated unannotated particle elsewhere
    centres = np.array([(100, 100), (120, 100), (240, 180)], float)
    maps = {f"p{k}": gaussian_blobs(centres, np.array([0.9, 0.9, 0.9]), sigma=DIAMETER / 6) for k in range(2)}
    truth = pd.concat([pd.DataFrame({M: f"p{k}", X: centres[:2, 0], Y: centres[:2, 1]}) for k in range(2)])
    grids = {"grid-nms": {"iou_threshold": [0.1, 0.5], "sigma_fraction": [0.1]}}
    config, table = tune_picker(maps, truth, DIAMETER, finders=["grid-nms"], grids=grids, progress=False,
                                border_fractions=(), expected_particles=3)
    by_iou = table.set_index("iou_threshold")["recall_at_n"]
    assert by_iou[0.1] == 0.5 and by_iou[0.5] == 1.0
    assert config.params["iou_threshold"] == 0.5


def test_sparse_tuning_learns_the_edge_margin():
    # a bright unannotated rim (20 px = 0.625 diameters from the edges) outscores the interior; with
    # N = 20 the rim's 22 picks fill the budget until a margin of 0.7 diameters drops them
    coords_y, coords_x = np.arange(20, 261, 48), np.arange(20, 309, 48)
    shape = (281, 329)
    centres = np.array([(x, y) for y in coords_y for x in coords_x], float)
    edge = np.minimum(np.minimum(centres[:, 0], shape[1] - 1 - centres[:, 0]),
                      np.minimum(centres[:, 1], shape[0] - 1 - centres[:, 1]))
    inner = centres[edge > 40]
    peaks = np.where(edge > 40, 0.7, 0.95)
    maps = {"rim": gaussian_blobs(centres, peaks, shape=shape)}
    truth = pd.DataFrame({M: "rim", X: inner[::5, 0], Y: inner[::5, 1]})  # 4 of the 20 inner
    config, table = tune_picker(maps, truth, DIAMETER, finders=["grid-nms"],
                                grids={"grid-nms": {"iou_threshold": [0.3]}}, progress=False,
                                expected_particles=20)
    by_margin = table.set_index("border_fraction")["recall_at_n"]
    assert by_margin[0.0] == 0.0 and by_margin[0.6] == 0.0 and by_margin[0.7] == 1.0
    assert config.border_fraction == pytest.approx(0.7)
    # the threshold is the score of the 20th pick after the margin: the weakest inner particle
    inner_picks = pick_maps(maps, DIAMETER, "grid-nms", config.params, border_fraction=0.7)
    assert len(inner_picks) == 20 and config.threshold == pytest.approx(inner_picks[S].min())


def test_tune_picker_refuses_bad_expected_particles(sparse_maps):
    maps, sparse, _ = sparse_maps
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(CrispError, match="expected particles"):
            tune_picker(maps, sparse, DIAMETER, finders=["grid-nms"], progress=False, expected_particles=bad)


# ---------------------------------------------------------------- picker.yaml


def test_old_picker_yaml_without_the_new_fields_loads(tmp_path):
    path = tmp_path / "picker.yaml"
    save_yaml(path, {"finder": "grid-nms", "params": {}, "diameter_px": 30.0, "threshold": 0.4,
                     "border_fraction": 0.5, "validation": {"mAP": 0.6}})
    config = load_picker(path)
    assert config.tuned_on == "" and config.expected_particles is None and config.threshold == 0.4
    sparse = config.model_copy(update={"tuned_on": "sparse annotation: ...", "expected_particles": 300.0})
    save_yaml(path, sparse)
    assert load_picker(path) == sparse
    with pytest.raises(ValueError):
        PickerConfig(diameter_px=30.0, expected_particles=0)


# ---------------------------------------------------------------- evaluation


def test_picking_metrics_with_sparse_truth_report_recall_only():
    picks = pd.DataFrame({M: "a", X: [10, 50, 90], Y: [10, 50, 90], S: [0.9, 0.8, 0.3]})
    truth = pd.DataFrame({M: "a", X: [11, 90], Y: [10, 90]})
    picking, box = picking_metrics(picks, truth, 10.0, 0.5, expected_particles=2)
    assert box == {}
    assert not {"precision", "F1", "AP", "best_F1"} & set(picking)
    assert picking["recall"] == 0.5  # at threshold 0.5: (10,10) finds (11,10); (90,90) scores 0.3
    assert picking["recall_at_n"] == 0.5 and picking["n_picks_at_threshold"] == 2
    assert picking["expected_particles"] == 2.0 and picking["n_truth"] == 2 and picking["n_picks"] == 3
    full, box = picking_metrics(picks, truth, 10.0, 0.5)
    assert "precision" in full and "mAP" in box


def make_dataset(root, maps, truth):
    for name, prob in maps.items():
        write_mrc(root / "micrographs" / f"{name}.mrc", prob, pixel_size=2.0)
        write_mrc(root / "masks" / f"{name}.mrc", (prob > 0.5).astype(np.uint8), pixel_size=2.0)
        write_coordinates(truth[truth[M] == f"{name}.mrc"].reset_index(drop=True),
                          root / "coordinates" / f"{name}.star")
    write_split(root / "split.yaml", make_split(NAMES, 1, 1, seed=0))  # one map each
    save_yaml(root / "simulation.yaml", {"reference": {"diameter_px": DIAMETER}})


@pytest.fixture()
def cli_setup(sparse_maps, tmp_path):
    maps, sparse, _ = sparse_maps
    dataset = tmp_path / "data"
    make_dataset(dataset, maps, sparse)
    folder = tmp_path / "maps"
    for name, prob in maps.items():
        write_mrc(folder / f"{name}.mrc", prob, pixel_size=2.0, dtype=np.float16)
    return dataset, folder


def test_cli_tune_picker_and_evaluate_with_expected_particles(cli_setup, tmp_path, capsys):
    dataset, folder = cli_setup
    picker = tmp_path / "picker.yaml"
    assert main(["tune-picker", str(folder), str(dataset), "-o", str(picker),
                 "--finders", "grid-nms", "--expected-particles", "20"]) == 0
    out = capsys.readouterr().out
    assert "recall_at_n" in out and "recall at 20 picks per micrograph 1.0000" in out and "mAP" not in out
    config = load_picker(picker)
    assert config.expected_particles == 20 and config.tuned_on.startswith("sparse annotation")
    assert main(["pick", str(folder), "-o", str(tmp_path / "picks"), "--picker", str(picker)]) == 0
    assert "about-20-per-micrograph (sparse annotation) threshold" in capsys.readouterr().out
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(folder), str(dataset), "--subset", "test", "--picker", str(picker),
                 "--expected-particles", "20", "-o", str(report)]) == 0
    out = capsys.readouterr().out
    assert "not reported: the truth is sparse" in out
    assert "precision" not in out.replace("so precision, F1", "") and "recall_at_n 1" in out
    data = json.loads(report.read_text())
    assert data["sparse_truth"] is True and data["expected_particles"] == 20
    assert set(data["pooled"]) <= {"recall", "tp", "fn", "micrographs"} and "recall" in data["pooled"]
    assert data["picking"]["recall_at_n"] == 1.0 and "precision" not in data["picking"]
    assert "box" not in data
    # without --expected-particles: the full set of metrics against the same truth
    assert main(["evaluate", str(folder), str(dataset), "--subset", "test", "--picker", str(picker),
                 "-o", str(report)]) == 0
    data = json.loads(report.read_text())
    assert {"precision", "F1", "AP"} <= set(data["picking"]) and "mAP" in data["box"]
    assert "iou" in data["pooled"]


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_cli_refuses_bad_expected_particles(cli_setup, tmp_path, capsys, value):
    # (before the option existed this was also one line with exit 2, "No such option": hence the message)
    dataset, folder = cli_setup
    picker = tmp_path / "picker.yaml"
    assert main(["tune-picker", str(folder), str(dataset), "-o", str(picker),
                 "--expected-particles", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert f"--expected-particles must be a finite number > 0 (got {float(value)!r})" in err[0]
    assert not picker.exists()
    assert main(["evaluate", str(folder), str(dataset), "--expected-particles", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert f"--expected-particles must be a finite number > 0 (got {float(value)!r})" in err[0]


def test_run_picker_and_evaluate_run_with_sparse_truth(sparse_maps, tmp_path, monkeypatch):
    # a finished run whose segmentation writes the hand-made maps; run_picker tunes on val by recall
    # at N, evaluate_run records recall only
    import crisp.predict
    from crisp.run import Run
    from crisp.workflow.evaluate_run import evaluate_run, run_picker

    maps, sparse, _ = sparse_maps
    dataset = tmp_path / "data"
    make_dataset(dataset, maps, sparse)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    Run(run).summary_path.write_text("{}\n")

    def fake_segment_files(run_dir, micrograph_paths, out_dir, **kwargs):
        return [write_mrc(out_dir / f"{p.stem}.mrc", maps[p.stem], dtype=np.float16)
                for p in micrograph_paths]

    monkeypatch.setattr(crisp.predict, "segment_files", fake_segment_files)
    picker = load_picker(run_picker(run, dataset, progress=False, expected_particles=20))
    assert picker.expected_particles == 20 and picker.validation["recall_at_n"] == 1.0
    record = evaluate_run(run, dataset, "test", picker=picker, progress=False, expected_particles=20)
    assert record["sparse_truth"] is True and record["expected_particles"] == 20
    assert set(record["pixel"]) == {"recall"} and "box" not in record
    assert record["picking"]["recall_at_n"] == 1.0 and "precision" not in record["picking"]
    full = evaluate_run(run, dataset, "test", picker=picker, progress=False)
    assert "precision" in full["picking"] and "mAP" in full["box"] and "iou" in full["pixel"]
    with pytest.raises(CrispError, match="expected_particles"):
        evaluate_run(run, dataset, "test", picker=picker, progress=False, expected_particles=-1)
