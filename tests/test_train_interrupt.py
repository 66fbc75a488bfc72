"""`crisp train` killed with SIGKILL after an epoch, then resumed, ends as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from crisp.config import save_yaml
from crisp.run import LAST, Run
from interrupt import crisp_argv
from test_train import make_dataset, tiny_config


def _train_argv(dataset: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return crisp_argv("train", dataset, "-o", run, "--config", config, "--no-progress", *extra)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return Run(run).read_checkpoint()["state_dict"]


def _kill_after_first_checkpoint(argv: list[str], run: Path, timeout_s: float = 600.0) -> None:
    """Start training; SIGKILL it as soon as checkpoints/last.ckpt (the end of epoch 0) exists."""
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = Run(run).checkpoint_path(LAST)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline and not last.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    config = tmp_path / "tiny.yaml"
    save_yaml(config, tiny_config(epochs=3, schedule="constant"))
    reference = tmp_path / "reference"
    subprocess.run(_train_argv(dataset, reference, config), check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    run = tmp_path / "run"
    _kill_after_first_checkpoint(_train_argv(dataset, run, config), run)
    assert not Run(run).is_finished and Run(run).can_resume
    subprocess.run(_train_argv(dataset, run, config, "--resume"), check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert Run(run).is_finished
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    cols = ["epoch", "train_loss", "val_loss", "val_iou", "val_f1"]
    pd.testing.assert_frame_equal(Run(run).read_metrics()[cols], Run(reference).read_metrics()[cols])
    assert not [p for p in run.rglob("*") if ".part" in p.name or p.name.endswith(".tmp")]
