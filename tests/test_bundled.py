"""Bundled models (crisp.models.bundled): used by name, exported in float16, scaled by the particle
diameter, fine-tuned with --init NAME, and never written into. A tiny model is trained here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import starfile
import torch
from scipy.spatial import cKDTree

from crisp.errors import CrispError
from crisp.picking.base import X, Y
from crisp.picking.tune import PickerConfig

torch.set_num_threads(1)
NAME = "tiny-general"
GRID_DIAMETER = 10.0  # the particle's diameter on the network's grid: 20 px micrographs, bin 2


def _listing(folder):
    """Every file of a folder with its SHA-256 digest (what 'nothing was written' compares)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny diameter-scaled run (particles of 20 px at bin 2: 10 px on the grid) with a picker, and
    its export; the export's listing is checked unchanged at the end of the module."""
    from crisp.config import save_yaml
    from crisp.models.bundled import export_bundled
    from crisp.run import Run
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    root = tmp_path_factory.mktemp("bundled")
    ds = make_dataset(root / "ds", n=4, size=200, n_train=2, n_val=1)
    run = train(tiny_config(epochs=4, particle_diameter_px=GRID_DIAMETER), ds, root / "run", progress=False)
    save_yaml(Run(run).picker_path, PickerConfig(diameter_px=20, pixel_size=2.0, border_fraction=0.5))
    exported = export_bundled(run, root / "export" / NAME, model_card="# tiny test model\n")
    before = _listing(exported)
    yield root, run, exported, ds
    assert _listing(exported) == before, "something was written into the bundled model's folder"


@pytest.fixture
def bundled(model):
    from crisp.models.bundled import register_bundled

    with register_bundled(NAME, model[2]):
        yield model


def _picks(folder, stem):
    return starfile.read(folder / f"{stem}_autopick.star")[[X, Y]].to_numpy()


def test_export_holds_float16_network_state_only(model):
    from crisp.config import read_yaml
    from crisp.models.zoo import safe_torch_load
    from crisp.run import Run

    _root, run, exported, _ds = model
    assert sorted(p.name for p in exported.iterdir()) == ["MODEL_CARD.md", "checkpoints", "config.yaml",
                                                         "picker.yaml", "summary.json"]
    data = safe_torch_load(exported / "checkpoints" / "best.ckpt", "checkpoint")
    assert sorted(data) == ["crisp_config", "crisp_export", "state_dict"]  # no optimizer, no loops
    floats = [v for v in data["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert all(k.startswith("net.") for k in data["state_dict"])
    size = (exported / "checkpoints" / "best.ckpt").stat().st_size
    assert size < 0.6 * Run(run).checkpoint_path().stat().st_size
    assert read_yaml(exported / "picker.yaml")["diameter_scaled"] is True
    assert Run.load(exported).config.particle_diameter_px == GRID_DIAMETER
    assert Run.load(exported).config.init is None
    network = Run.load(exported).network()  # upcast on loading
    assert all(p.dtype == torch.float32 for p in network.parameters())
    assert (exported / "MODEL_CARD.md").read_text() == "# tiny test model\n"
    with pytest.raises(CrispError, match="not empty"):
        from crisp.models.bundled import export_bundled

        export_bundled(run, exported)


def test_resolve_run_by_name(bundled, tmp_path, monkeypatch):
    from crisp.models.bundled import BUNDLED, ENV_VAR, register_bundled, resolve_run
    from crisp.run import Run

    exported = bundled[2]
    monkeypatch.chdir(tmp_path)
    assert resolve_run(NAME) == exported
    assert Run.load(NAME).path == exported and Run.load(NAME).bundled == NAME
    (tmp_path / NAME).mkdir()  # a folder of that name in the working folder wins: a path is a path
    assert resolve_run(NAME).resolve() == (tmp_path / NAME).resolve()
    assert resolve_run("no-such-thing").name == "no-such-thing"  # not a name: a path (not found later)
    with register_bundled("ghost", tmp_path / "not-installed"), pytest.raises(CrispError, match="'ghost'"):
        resolve_run("ghost")
    monkeypatch.setenv(ENV_VAR, f"from-env={exported}")
    assert resolve_run("from-env") == exported
    assert "general" in BUNDLED and BUNDLED["general"].parts[-3:] == ("data", "models", "general")
    if not (BUNDLED["general"] / "config.yaml").is_file():  # until the lead exports it into the package
        with pytest.raises(CrispError, match="bundled model 'general' is not installed"):
            resolve_run("general")


def test_identity_of_a_bundled_model_is_its_digests(bundled):
    from crisp.predict import run_identity

    identity = run_identity(NAME)
    assert identity["bundled"] == NAME and "path" not in identity
    assert identity["checkpoint_sha256"] == hashlib.sha256(
        (bundled[2] / "checkpoints" / "best.ckpt").read_bytes()).hexdigest()


def test_segment_by_name_matches_the_run_and_pixel_binning(bundled, tmp_path):
    """Known answers: with --diameter-px 20 the factor is 20 / 10 = 2 = the run's bin, so the
    diameter-scaled maps equal the maps of the same run without particle_diameter_px (binned by its
    pixel size), and the exported float16 model's maps equal the run's within float16 rounding."""
    from crisp.cli import main
    from crisp.io.micrographs import read_micrograph
    from crisp.run import Run

    _root, run, _exported, ds = bundled
    mics = ds / "micrographs"
    plain = Run(run).copy_to(tmp_path / "plain", particle_diameter_px=None)
    for source, out, extra in ((NAME, "by-name", ["--diameter-px", "20"]),
                               (str(run), "run", ["--diameter-A", "40"]),  # 40 Å at 2 Å/px = 20 px
                               (str(plain.path), "plain", [])):
        assert main(["segment", source, str(mics), "-o", str(tmp_path / out), "--no-progress", *extra]) == 0
    for i in range(4):
        a, b, c = (read_micrograph(tmp_path / f / f"mic{i:02d}.mrc").data.astype(np.float32)
                   for f in ("by-name", "run", "plain"))
        np.testing.assert_array_equal(b, c)
        assert np.abs(a - b).max() < 5e-3
        assert b.max() > 0.5  # the model finds particles (a real comparison, not of empty maps)


def test_segment_and_pick_by_name_and_scaled_micrograph(bundled, tmp_path):
    """The bundled picker (picker.yaml of the export) picks as the run's; a micrograph upsampled 2x
    with the diameter doubled gives the picks at twice the coordinates."""
    from scipy import ndimage

    from crisp.cli import main
    from crisp.io.micrographs import read_micrograph, write_mrc

    _root, run, _exported, ds = bundled
    mic = ds / "micrographs" / "mic00.mrc"
    big = tmp_path / "big" / "mic00.mrc"
    write_mrc(big, ndimage.zoom(read_micrograph(mic).data, 2, order=3), pixel_size=1.0)
    outs = {"name": tmp_path / "n", "run": tmp_path / "r", "big": tmp_path / "b", "bigA": tmp_path / "bA"}
    assert main(["segment-and-pick", NAME, str(mic), "-o", str(outs["name"]), "--diameter-px", "20",
                 "--no-progress"]) == 0
    assert main(["segment-and-pick", str(run), str(mic), "-o", str(outs["run"]), "--diameter-px", "20",
                 "--no-progress"]) == 0
    assert main(["segment-and-pick", NAME, str(big), "-o", str(outs["big"]), "--diameter-px", "40",
                 "--no-progress"]) == 0
    assert main(["segment-and-pick", NAME, str(big), "-o", str(outs["bigA"]), "--diameter-A", "40",
                 "--no-progress"]) == 0  # 40 Å at 1 Å/px: the same 40 px
    small, same = _picks(outs["name"], "mic00"), _picks(outs["run"], "mic00")
    double = _picks(outs["big"], "mic00")
    assert len(small) >= 10
    assert len(small) == len(same) and cKDTree(same).query(small)[0].max() <= 1.0
    # the 10 best picks (10 particles per micrograph; the rest are weak candidates near the floor)
    distance, _ = cKDTree(double).query(2 * small[:10])
    assert np.median(distance) <= 2.0 and distance.max() <= 4.0
    np.testing.assert_allclose(_picks(outs["bigA"], "mic00"), double)
    # the diameter is a recorded setting: another one into the same folder is refused
    assert main(["segment-and-pick", NAME, str(mic), "-o", str(outs["name"]), "--diameter-px", "24",
                 "--no-progress"]) == 2


def test_pick_full_size_maps_with_the_bundled_picker(bundled, tmp_path, capsys):
    """crisp pick on crisp segment's full-size maps with --picker NAME needs the diameter; with it, the
    picks agree with segment-and-pick's."""
    from crisp.cli import main

    _root, _run, _exported, ds = bundled
    mic = ds / "micrographs" / "mic01.mrc"
    maps, picks, direct = tmp_path / "maps", tmp_path / "picks", tmp_path / "direct"
    assert main(["segment", NAME, str(mic), "-o", str(maps), "--diameter-px", "20", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["pick", str(maps), "-o", str(picks), "--picker", NAME]) == 2
    assert "give the particle diameter with --diameter-A or --diameter-px" in capsys.readouterr().err
    assert main(["pick", str(maps), "-o", str(picks), "--picker", NAME, "--diameter-A", "40"]) == 0
    assert main(["segment-and-pick", NAME, str(mic), "-o", str(direct), "--diameter-px", "20",
                 "--no-progress"]) == 0
    # known answer: the picker's own diameter (20 px at 2 Å/px) on the same maps gives the same picks
    assert main(["pick", str(maps), "-o", str(tmp_path / "own"), "--picker",
                 str(bundled[1] / "picker.yaml")]) == 0
    a, b = _picks(picks, "mic01"), _picks(direct, "mic01")
    np.testing.assert_array_equal(a, _picks(tmp_path / "own", "mic01"))
    assert main(["pick", str(maps), "-o", str(tmp_path / "px"), "--picker", NAME, "--diameter-px", "20"]) == 0
    np.testing.assert_array_equal(a, _picks(tmp_path / "px", "mic01"))
    # and those of segment-and-pick (on the network's grid) within a few pixels
    assert len(a) >= 10 and abs(len(a) - len(b)) <= 0.15 * len(a) + 1
    distance = cKDTree(b).query(a[:10])[0]  # the 10 particles; weak candidates near the floor may differ
    assert np.median(distance) <= 1.0 and (distance <= 3.0).mean() >= 0.8


@pytest.mark.parametrize("args, message", [
    (["segment", NAME, "MICS", "-o", "OUT"], "give --diameter-A"),
    (["segment", NAME, "MICS", "-o", "OUT", "--diameter-A", "40", "--diameter-px", "20"], "not both"),
    (["segment", NAME, "MICS", "-o", "OUT", "--diameter-px", "-3"], "--diameter-px"),
    (["segment-and-pick", NAME, "MICS", "-o", "OUT"], "give --diameter-A"),
    (["segment", "PLAIN", "MICS", "-o", "OUT", "--diameter-px", "20"], "not diameter-scaled"),
    (["segment", NAME, "MICS", "-o", "BUNDLED/maps", "--diameter-px", "20"], "read-only"),
    (["segment", NAME, "NOPIX", "-o", "OUT", "--diameter-A", "40"], "no pixel size"),
    (["segment-and-pick", NAME, "NOPIX", "-o", "OUT", "--diameter-A", "40"], "no pixel size"),
    (["train", "DS", "-o", "OUT", "--init", NAME, "--epochs", "1"], "give --diameter-A or --diameter-px"),
    (["train", "DS", "-o", "OUT", "--init", "PLAIN", "--diameter-px", "20"], "need a diameter-scaled"),
    (["train", "DS", "-o", "BUNDLED", "--init", NAME, "--diameter-px", "20"], "already holds a run"),
])
def test_bad_diameter_inputs_are_one_line_errors(bundled, tmp_path, capsys, args, message):
    from crisp.cli import main
    from crisp.io.micrographs import read_micrograph, write_mrc
    from crisp.run import Run

    _root, run, exported, ds = bundled
    nopix = tmp_path / "nopix" / "m.mrc"
    write_mrc(nopix, read_micrograph(ds / "micrographs" / "mic00.mrc").data, pixel_size=None)
    plain = tmp_path / "plain"
    Run(run).copy_to(plain, particle_diameter_px=None)
    values = {"MICS": str(ds / "micrographs"), "OUT": str(tmp_path / "out"), "PLAIN": str(plain),
              "BUNDLED": str(exported), "NOPIX": str(nopix), "DS": str(ds)}
    argv = [values.get(a, a).replace("BUNDLED", str(exported)) for a in args]
    capsys.readouterr()
    assert main([*argv, *(["--no-progress"] if argv[0] != "train" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_evaluate_and_run_writers_refuse_the_bundled_folder(bundled, tmp_path):
    from crisp.run import Run
    from crisp.workflow.evaluate_run import evaluate_run

    exported, ds = bundled[2], bundled[3]
    with pytest.raises(CrispError, match="read-only"):
        evaluate_run(exported, ds, "test", progress=False)
    with pytest.raises(CrispError, match="read-only"):
        Run.load(NAME).write_summary({})


def test_fine_tune_from_the_bundled_model_chooses_the_binning(bundled, tmp_path):
    """--init NAME with the data's particle diameter 30 px: bin round(30 / 10) = 3, and the new run
    records particle_diameter_px 30 / 3 = 10 (itself diameter-scaled) and the init's normalisation."""
    from crisp.run import Run
    from crisp.train import scale_to_init, train
    from test_train import tiny_config

    _root, _run, _exported, ds = bundled
    out = train(tiny_config(epochs=1, init=NAME, normalize="gmm"), ds, tmp_path / "ft", progress=False,
                diameter_px=30)
    config = Run(out).config
    assert (config.bin, config.particle_diameter_px, config.normalize) == (3, 10.0, "zscore")
    assert config.init == NAME
    scaled = scale_to_init(tiny_config(init=NAME, pixel_size=2.0), 50.0, None)  # 50 Å / 2 Å/px = 25 px
    assert (scaled.bin, scaled.particle_diameter_px) == (2, 12.5)
