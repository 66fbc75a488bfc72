"""Shared test fixtures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "empiar10017-dev"


@pytest.fixture
def real_data_dir() -> Path:
    """The EMPIAR-10017 development set beside the repository; skip when absent."""
    if not (REAL_DATA / "images").is_dir():
        pytest.skip("real development data (../shared/data/empiar10017-dev) is absent")
    return REAL_DATA


@dataclass(frozen=True)
class TinyDemo:
    """A tiny ``crisp demo`` project made once per session and the lines its first run printed."""

    project: Path
    lines: list[str]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> TinyDemo:
    """One tiny demo project per test session, shared by tests/test_demo.py and tests/test_report_cli.py.

    Tests may rerun the demo on it (every stage is then skipped) but must not change its outputs;
    a test that needs to change a project makes its own.
    """
    from crisp.workflow.demo import run_demo

    project = tmp_path_factory.mktemp("tiny-demo") / "project"
    lines: list[str] = []
    run_demo(project, echo=lines.append, tiny=True, progress=False)
    return TinyDemo(project, lines)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny tensors (thread start-up and contention on the shared
    CI cores cost more than they give); the previous count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

