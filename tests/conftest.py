"""Shared test fixtures."""

from __future__ import annotations

import os
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
