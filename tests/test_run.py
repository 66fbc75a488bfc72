"""crisp.run.Run (the folder of one trained network) and the checkpoint defects of issue 14:
safe loading (weights_only, no code runs), checkpoint/config mismatches in one line, settings checked
before the run folder is written, one line per epoch in logs, library defaults."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from crisp.cli import main
from crisp.errors import CrispError
from crisp.run import Run
from test_train import make_dataset, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def cnn_run(dataset, tmp_path_factory):
    from crisp.train import train

    return train(tiny_config(epochs=1), dataset, tmp_path_factory.mktemp("runs") / "cnn", progress=False)


@pytest.fixture(scope="module")
def crf_run(dataset, cnn_run, tmp_path_factory):
    from crisp.train import train

    config = tiny_config(epochs=1, init=str(cnn_run), crf=dict(kind="cd-crf", iterations=2))
    return train(config, dataset, tmp_path_factory.mktemp("runs") / "cdcrf", progress=False)


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


class MakesMarker:
    """Unpickling this creates the file ``path``: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        torch.save({"state_dict": {}, "payload": MakesMarker(marker)}, handle)
    assert not marker.exists()


def tiny_argv(dataset: Path, out: Path) -> list[str]:
    """``crisp train`` of a tiny network for one epoch (seconds on a CPU)."""
    return ["train", str(dataset), "-o", str(out), "--preset", "cpu", "--arch", "unet", "--encoder",
            "resnet18", "--encoder-depth", "3", "--bin", "2", "--patch", "64", "--overlap", "16",
            "--epochs", "1", "--normalize", "zscore", "--threads", "1", "--no-progress"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Aborted" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------- the Run
def test_run_load_config_network_and_picker(cnn_run, tmp_path):
    run = Run.load(cnn_run)
    assert run.config.encoder == "resnet18" and run.config.crf.kind == "none"
    assert run.pixel_size == pytest.approx(2.0)
    assert run.checkpoint_path("best.ckpt") == Path(cnn_run) / "checkpoints" / "best.ckpt"
    assert run.is_finished and run.summary()["epochs_run"] == 1
    assert run.picker() is None
    network = run.network()
    assert not network.training and network.crf is None
    # the weights are the checkpoint's: Lightning's own layout, read with weights_only=True
    state = torch.load(run.checkpoint_path("best.ckpt"), weights_only=True)["state_dict"]
    assert torch.equal(network.cnn.encoder.conv1.weight, state["net.cnn.encoder.conv1.weight"])
    before = torch.get_rng_state()
    run.network()
    assert torch.equal(torch.get_rng_state(), before)  # loading draws no random numbers
    # the tuned picker, when there is one
    from crisp.config import save_yaml
    from crisp.picking.tune import PickerConfig

    tuned = copy_run(cnn_run, tmp_path / "tuned")
    save_yaml(Run(tuned).picker_path, PickerConfig(finder="grid-nms", diameter_px=20.0, threshold=0.4))
    picker = Run.load(tuned).picker()
    assert picker.finder == "grid-nms" and picker.threshold == pytest.approx(0.4)


def test_run_load_refuses_what_is_not_a_run(tmp_path, cnn_run):
    with pytest.raises(CrispError, match="not found"):
        Run.load(tmp_path / "nothing")
    with pytest.raises(CrispError, match="no config.yaml"):
        Run.load(tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(Path(cnn_run) / "config.yaml", half / "config.yaml")
    with pytest.raises(CrispError, match="no checkpoints/"):
        Run.load(half)
    (half / "checkpoints").mkdir()
    with pytest.raises(CrispError, match="no such checkpoint") as err:
        Run.load(half).network()
    assert err.value.path == str(half / "checkpoints" / "best.ckpt")


def test_training_checkpoints_are_plain_tensors(cnn_run, crf_run):
    """What training saves loads with weights_only=True (also the resumable last.ckpt), and holds
    the run's settings as a plain mapping."""
    for run in (cnn_run, crf_run):
        for name in ("best.ckpt", "last.ckpt"):
            data = torch.load(Path(run) / "checkpoints" / name, weights_only=True)
            assert data["crisp_config"]["encoder"] == "resnet18"


# ------------------------------------------------------------------------- defect 9: no pickles
def test_pickled_checkpoint_is_refused_without_running_it(cnn_run, dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = copy_run(cnn_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "best.ckpt"
    write_malicious_checkpoint(ckpt, marker)
    with pytest.raises(CrispError, match="not a plain-tensor checkpoint") as err:
        Run.load(run).network()
    assert err.value.path == str(ckpt)
    assert not marker.exists()
    # the same through the CLI: crisp segment and --init, exit 2, one line naming the file
    assert main(["segment", str(run), str(dataset / "micrographs"), "-o", str(tmp_path / "maps")]) == 2
    line = one_line_error(capsys)
    assert str(ckpt) in line and "plain-tensor" in line and "weights_only=False" not in line
    assert not marker.exists()


def test_pickled_init_and_resume_checkpoints_are_refused(cnn_run, dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    init = copy_run(cnn_run, tmp_path / "init")
    write_malicious_checkpoint(init / "checkpoints" / "best.ckpt", marker)
    out = tmp_path / "crf"
    assert main(["train", str(dataset), "-o", str(out), "--init", str(init), "--crf", "crf",
                 "--no-progress"]) == 2
    assert "plain-tensor" in one_line_error(capsys)
    assert not marker.exists() and not (out / "config.yaml").exists()
    resumable = copy_run(cnn_run, tmp_path / "resumable")
    write_malicious_checkpoint(resumable / "checkpoints" / "last.ckpt", marker)
    assert main(["train", str(dataset), "-o", str(resumable), "--resume", "--no-progress"]) == 2
    assert "plain-tensor" in one_line_error(capsys)
    assert not marker.exists()


# ------------------------------------------------------------ defect 8: checkpoint parts, one line
def test_cnn_config_with_crf_checkpoint_and_back(cnn_run, crf_run, tmp_path):
    cnn_with_crf_weights = copy_run(cnn_run, tmp_path / "a")
    shutil.copy(Path(crf_run) / "checkpoints/best.ckpt", cnn_with_crf_weights / "checkpoints/best.ckpt")
    with pytest.raises(CrispError, match="holds CRF weights but the run's config has no CRF") as err:
        Run.load(cnn_with_crf_weights).network()
    assert err.value.path.endswith("best.ckpt")
    crf_with_cnn_weights = copy_run(crf_run, tmp_path / "b")
    shutil.copy(Path(cnn_run) / "checkpoints/best.ckpt", crf_with_cnn_weights / "checkpoints/best.ckpt")
    with pytest.raises(CrispError, match=r"config has a CRF \(crf.kind: cd-crf\) but the checkpoint holds"):
        Run.load(crf_with_cnn_weights).network()


def test_empty_checkpoint_names_the_file(cnn_run, dataset, tmp_path, capsys):
    run = copy_run(cnn_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(CrispError, match=r"empty checkpoint \(0 bytes"):
        Run.load(run).network()
    assert main(["segment", str(run), str(dataset / "micrographs"), "-o", str(tmp_path / "maps")]) == 2
    line = one_line_error(capsys)
    assert str(ckpt) in line and "empty" in line
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CrispError, match="not a readable PyTorch checkpoint"):
        Run.load(run).network()


def test_checkpoint_of_another_encoder_is_one_short_line(cnn_run, tmp_path):
    run = copy_run(cnn_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["encoder"] = "resnet34"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CrispError) as err:
        Run.load(run).network()
    message = str(err.value)
    assert "made for encoder resnet18, the run's config says resnet34" in message
    assert len(message) < 300
    # an older checkpoint without the settings: a summary of the keys, still short
    data = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    del data["crisp_config"]
    torch.save(data, run / "checkpoints" / "best.ckpt")
    with pytest.raises(CrispError, match=r"does not fit this network: \d+ missing \(e.g. net\.") as err:
        Run.load(run).network()
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("kind", ["pickle", "text", "wrong-keys", "empty"])
def test_bad_encoder_weights_give_one_clear_line(dataset, tmp_path, capsys, kind):
    weights = tmp_path / "enc.pth"
    marker = tmp_path / "pwned"
    if kind == "pickle":
        write_malicious_checkpoint(weights, marker)
    elif kind == "text":
        weights.write_text("not weights\n")
    elif kind == "wrong-keys":
        torch.save({"foo.weight": torch.zeros(3)}, weights)
    else:
        weights.write_bytes(b"")
    out = tmp_path / "run"
    argv = [*tiny_argv(dataset, out), "--encoder-weights", str(weights)]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert str(weights) in line and "weights_only" not in line
    expected = {"pickle": "not a plain-tensor encoder weights file", "text": "not a readable PyTorch",
                "wrong-keys": "no encoder weights matched", "empty": "empty encoder weights file"}[kind]
    assert expected in line
    assert not marker.exists() and not (out / "config.yaml").exists()


# ------------------------------------------------------- defect 5: check before writing the run
@pytest.mark.parametrize(("bad", "message"), [
    (["--encoder", "resnet19"], "unknown encoder 'resnet19'"),
    (["--arch", "unet3000"], "unknown architecture 'unet3000'"),
    (["--loss", "dice+0.5*focl"], "unknown loss 'focl'"),
    (["--init", "NOWHERE", "--crf", "crf"], "run folder not found"),
    (["--encoder-weights", "NOWHERE"], "encoder weights file not found"),
])
def test_train_checks_settings_before_writing_the_run(dataset, tmp_path, capsys, bad, message):
    out = tmp_path / "run"
    common = tiny_argv(dataset, out)
    bad = [str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in bad]
    assert main(common + bad) == 2
    assert message in one_line_error(capsys)
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()
    # the corrected command into the same folder works
    assert main(common) == 0
    assert (out / "checkpoints" / "best.ckpt").is_file()


# --------------------------------------------------------------- defect 10: one line per epoch
def test_one_line_per_epoch_when_stderr_is_not_a_terminal(dataset, tmp_path, capsys):
    from crisp.train import train

    capsys.readouterr()
    train(tiny_config(epochs=2), dataset, tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "it/s" not in err  # no progress bar
    lines = [line for line in err.splitlines() if re.match(r"epoch \d+/\d+: ", line)]
    assert len(lines) == 2, err
    pattern = (r"epoch {k}/2: train loss \d+\.\d{{4}}, val loss \d+\.\d{{4}}, val IoU \d\.\d{{4}}, "
               r"val F1 \d\.\d{{4}}, \d+ s, about \d+ s left$")
    for k, line in enumerate(lines, start=1):
        assert re.match(pattern.format(k=k), line), line
    assert lines[1].endswith("about 0 s left")
    capsys.readouterr()
    train(tiny_config(epochs=1), dataset, tmp_path / "quiet", progress=False)
    assert not re.search(r"^epoch \d", capsys.readouterr().err, re.M)


def test_epoch_lines_skip_validation_figures_when_not_validated(dataset, tmp_path, capsys):
    from crisp.train import train

    capsys.readouterr()
    train(tiny_config(epochs=2, val_every=2), dataset, tmp_path / "run", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert "val" not in lines[0] and "val IoU" in lines[1]


# ---------------------------------------------------------------- item 7: defaults in the library
def test_library_defaults_auto_preset_and_crf_fine_tuning_epochs(tmp_path, monkeypatch):
    from crisp.train import CRF_FINE_TUNING_EPOCHS, PRESETS, make_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_config("auto").preset == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert make_config("auto").preset == "paper"
    file = tmp_path / "c.yaml"
    file.write_text("preset: cpu\nlr: 0.01\n")
    assert make_config("auto", file).encoder == PRESETS["cpu"]["encoder"]  # the file's preset decides
    assert CRF_FINE_TUNING_EPOCHS == 50
    assert make_config("cpu", init="r", crf=dict(kind="cd-crf")).epochs == 50
    assert make_config("cpu", init="r", crf=dict(kind="cd-crf"), epochs=3).epochs == 3
    assert make_config("cpu", init="r").epochs == PRESETS["cpu"]["epochs"]
    assert make_config("cpu", crf=dict(kind="crf")).epochs == PRESETS["cpu"]["epochs"]
    file.write_text("preset: cpu\nepochs: 7\n")
    assert make_config(None, file, init="r", crf=dict(kind="crf")).epochs == 7


# ---------------------------------------------------------------------- item 8: validation metrics
def test_validation_uses_evaluate_pixel_metrics(dataset, tmp_path, monkeypatch):
    """Nothing predicted: crisp evaluate's convention (zero_division 1) gives precision 1, IoU 0."""
    import pandas as pd

    from crisp.train import train
    from test_train import stub_validation_foreground

    stub_validation_foreground(monkeypatch, lambda call: 0.0)
    run = train(tiny_config(epochs=1), dataset, tmp_path / "run", progress=False)
    row = pd.read_csv(run / "metrics.csv").iloc[0]
    assert row["val_precision"] == 1.0 and row["val_iou"] == 0.0 and row["val_recall"] == 0.0
    assert row["val_f1"] == 0.0
