"""Shared fixtures: where the repository and the real test data are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return _REPO_ROOT


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Real test material: $EDGE_GUARD_TEST_DATA, default <repo root>/../shared/data; skips if missing."""
    env = os.environ.get("EDGE_GUARD_TEST_DATA")
    path = Path(env) if env else _REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"test data not found at {path} (set EDGE_GUARD_TEST_DATA to the shared data folder)")
    return path.resolve()
