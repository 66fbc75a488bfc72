"""Pixel metrics against a hand-computed case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crisp.dataset import Split, write_split
from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc
from crisp.metrics.pixel import evaluate_folder, pixel_metrics


def _case():
    # micrograph a: 4x4, truth has 4 foreground pixels, prediction 3 of them + 2 false positives
    truth_a = np.zeros((4, 4), np.uint8)
    truth_a[0, :4] = 1
    pred_a = np.zeros((4, 4), np.float32)
    pred_a[0, :3] = 0.9          # tp = 3
    pred_a[0, 3] = 0.49          # fn = 1 (below threshold)
    pred_a[3, 0:2] = 0.5         # fp = 2 (p >= threshold counts as foreground)
    # micrograph b: 2x5, truth 2 pixels, prediction exact
    truth_b = np.zeros((2, 5), np.uint8)
    truth_b[1, 1:3] = 1
    pred_b = truth_b.astype(np.float32)
    return {"a": pred_a, "b": pred_b}, {"a": truth_a, "b": truth_b}


def test_hand_computed_case():
    preds, truths = _case()
    table, pooled = pixel_metrics(preds, truths)
    a = table.set_index("micrograph").loc["a"]
    # a: tp 3, fp 2, fn 1, tn 10
    assert (a.tp, a.fp, a.fn, a.tn) == (3, 2, 1, 10)
    assert a.iou == pytest.approx(3 / 6)
    assert a.precision == pytest.approx(3 / 5)
    assert a.recall == pytest.approx(3 / 4)
    assert a.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert a.accuracy == pytest.approx(13 / 16)
    b = table.set_index("micrograph").loc["b"]
    assert b.iou == 1.0 and b.f1 == 1.0 and b.accuracy == 1.0
    # pooled (micro): tp 5, fp 2, fn 1, tn 18
    assert pooled["iou"] == pytest.approx(5 / 8)
    assert pooled["precision"] == pytest.approx(5 / 7)
    assert pooled["recall"] == pytest.approx(5 / 6)
    assert pooled["f1"] == pytest.approx(10 / 13)
    assert pooled["accuracy"] == pytest.approx(23 / 26)
    assert pooled["micrographs"] == 2


def test_threshold_changes_result():
    preds, truths = _case()
    _, pooled = pixel_metrics(preds, truths, threshold=0.45)  # 0.49 becomes a true positive
    assert pooled["recall"] == pytest.approx(1.0)


def test_shape_mismatch_and_missing_truth():
    with pytest.raises(CrispError, match="shape"):
        pixel_metrics({"a": np.zeros((3, 3))}, {"a": np.zeros((3, 4))})
    with pytest.raises(CrispError, match="no true mask"):
        pixel_metrics({"a": np.zeros((3, 3))}, {})


def test_evaluate_folder_and_cli(tmp_path):
    from crisp.cli import main

    preds, truths = _case()
    ds, probs = tmp_path / "ds", tmp_path / "probs"
    for name in preds:
        write_mrc(ds / "micrographs" / f"{name}.mrc", np.zeros_like(preds[name]), pixel_size=1.0)
        write_mrc(ds / "masks" / f"{name}.mrc", truths[name])
        write_mrc(probs / f"{name}.mrc", preds[name], dtype=np.float16)
    write_split(ds / "split.yaml", Split(train=[], val=[], test=["a", "b"], seed=0))
    _, pooled = evaluate_folder(probs, ds, subset="test")
    assert pooled["iou"] == pytest.approx(5 / 8)
    out = tmp_path / "m.json"
    assert main(["evaluate", str(probs), str(ds), "--subset", "test", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["pooled"]["f1"] == pytest.approx(10 / 13)
    assert [r["micrograph"] for r in data["per_micrograph"]] == ["a", "b"]
    (probs / "b.mrc").unlink()
    assert main(["evaluate", str(probs), str(ds)]) == 2


def test_truth_is_foreground_where_nonzero_not_thresholded():
    # truth stored 0/255 (as an 8-bit mask); prediction thresholded at 0.3
    truth = np.zeros((3, 4), np.uint8)
    truth[0, :] = 255                      # 4 foreground pixels
    pred = np.full((3, 4), 0.1, np.float32)
    pred[0, :2] = 0.35                     # tp 2
    pred[0, 2] = 0.29                      # fn (below 0.3)
    pred[0, 3] = 0.0                       # fn
    pred[2, 0] = 0.3                       # fp (p >= threshold is foreground)
    table, pooled = pixel_metrics({"m": pred}, {"m": truth}, threshold=0.3)
    row = table.iloc[0]
    assert (row.tp, row.fp, row.fn, row.tn) == (2, 1, 2, 7)
    assert pooled["iou"] == pytest.approx(2 / 5)
    assert pooled["precision"] == pytest.approx(2 / 3)
    assert pooled["recall"] == pytest.approx(2 / 4)


@pytest.mark.parametrize("threshold", [0.0, -1.0, 1.0, 2.0, float("nan"), float("inf")])
def test_threshold_outside_open_unit_interval_is_an_error(threshold):
    # before the fix, threshold 0 thresholded the truth too (IoU 1.0) and 2 gave IoU 1.0 by zero division
    preds, truths = _case()
    with pytest.raises(CrispError, match="between 0 and 1"):
        pixel_metrics(preds, truths, threshold=threshold)


@pytest.mark.parametrize("value", ["0", "-1", "2", "nan"])
def test_evaluate_cli_refuses_threshold(tmp_path, capsys, value):
    from crisp.cli import main

    preds, truths = _case()
    ds, probs = tmp_path / "ds", tmp_path / "probs"
    for name in preds:
        write_mrc(ds / "micrographs" / f"{name}.mrc", np.zeros_like(preds[name]), pixel_size=1.0)
        write_mrc(ds / "masks" / f"{name}.mrc", truths[name])
        write_mrc(probs / f"{name}.mrc", preds[name], dtype=np.float16)
    write_split(ds / "split.yaml", Split(train=[], val=[], test=["a", "b"], seed=0))
    out = tmp_path / "m.json"
    assert main(["evaluate", str(probs), str(ds), "--threshold", value, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--threshold" in err[0]
    assert not out.exists()


def test_pooled_empty_cases_follow_zero_division_like_per_micrograph():
    """Nothing predicted, nothing true: precision, recall, IoU, F1 are 1 pooled as per micrograph."""
    empty = np.zeros((4, 4), np.float32)
    table, pooled = pixel_metrics({"a": empty, "b": empty}, {"a": empty, "b": empty})
    for key in ("iou", "precision", "recall", "f1", "accuracy"):
        assert list(table[key]) == [1.0, 1.0]
        assert pooled[key] == 1.0, key  # smp's "micro" reduction gave NaN here
    # nothing predicted, something true: precision 1 by convention, recall and IoU 0
    truth = empty.copy()
    truth[0, 0] = 1
    _, pooled = pixel_metrics({"a": empty}, {"a": truth})
    assert (pooled["precision"], pooled["recall"], pooled["iou"]) == (1.0, 0.0, 0.0)
