"""Shared fixtures: paths of the repository and of the shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures of the simulator tests (item tables, a default simulator): tests/sim_helpers.py.
pytest_plugins = ["sim_helpers"]

# SwanLab must never try to log in from the test run.
os.environ.setdefault("SWANLAB_MODE", "disabled")


def _paper_dir() -> Path | None:
    for base in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        d = base / "data" / "gems_paper"
        if (d / "item_embeddings_focused.npy").is_file():
            return d
    return None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def paper_embeddings_dir() -> Path:
    d = _paper_dir()
    if d is None:
        pytest.skip("the paper's item tables (../shared/data/gems_paper) are not beside this checkout")
    return d
