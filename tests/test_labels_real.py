"""Real-data check of crisp labels on the EMPIAR-10017 development set (skips when absent)."""

from __future__ import annotations

FIRST = "Falcon_2012_06_12-14_33_35_0"


def test_disk_labels_match_provided_mask(real_data_dir, tmp_path):
    from crisp.cli import main
    from crisp.config import read_yaml
    from crisp.io.micrographs import read_micrograph

    out = tmp_path / "labels"
    argv = ["labels", "-m", str(real_data_dir / "images" / f"{FIRST}.jpg"),
            "-c", str(real_data_dir / "coordinates" / f"{FIRST}.star"), "-o", str(out), "--radius", "54",
            "--pixel-size", "1.77", "--qc-count", "0", "--no-progress"]
    assert main(argv) == 0
    mask = read_micrograph(out / "masks" / f"{FIRST}.mrc").data.astype(bool)
    provided = read_micrograph(real_data_dir / "masks" / f"{FIRST}_mask.jpg").data >= 128
    assert mask.shape == provided.shape == (4096, 4096)
    iou = (mask & provided).sum() / (mask | provided).sum()
    assert iou >= 0.9
    meta = read_yaml(out / "labels.yaml")
    assert meta["diameter_px"] == 108 and meta["n_particles"] == 629 and meta["n_outside"] == 0
    # flipping y would put the discs elsewhere: the test can tell a flipped label set
    flipped = mask[::-1]
    assert (flipped & provided).sum() / (flipped | provided).sum() < 0.5
