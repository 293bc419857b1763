"""Where the files the agent needs from outside ``agent/`` are: the reference model, the CUDA
kernel sources and the systemd units.

In the repository they live in ``models/``, ``kernels/`` and ``systemd/`` (one copy, next to the
scripts that make or check them). A wheel cannot reach outside the package, so ``setup.py``
copies them into ``agent/_data/<folder>/`` when it builds one (``pip install .``); an editable
install or a plain checkout has no ``agent/_data`` and reads the repository folders.
:func:`data_dir` looks in that order: package first, then the repository.

Example::

    data_dir("models") / "reference_cnn.onnx"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import agent

__all__ = ["PACKAGED_DATA", "TEST_DATA_ENV", "DataFolder", "data_dir", "shared_test_data"]

#: The repository folders a wheel carries (which files of each: ``DATA_FILES`` in setup.py).
DataFolder = Literal["models", "kernels", "systemd"]

#: Environment variable naming the shared test data folder (videos, photos, third-party models).
TEST_DATA_ENV = "EDGE_GUARD_TEST_DATA"

#: Where a built wheel keeps them (absent in a checkout and in an editable install).
PACKAGED_DATA: Path = Path(__file__).resolve().parent / "_data"


def data_dir(folder: DataFolder) -> Path:
    """``agent/_data/<folder>`` when the package carries it (wheel install), else ``<repo>/<folder>``.

    The repository path is returned even when it does not exist, so that error messages name the
    place a checkout would have it.
    """
    packaged = PACKAGED_DATA / folder
    if packaged.is_dir():
        return packaged
    return agent.REPO_ROOT / folder


def shared_test_data(env: Mapping[str, str] | None = None) -> Path:
    """The shared test data for tests and benchmarks: ``$EDGE_GUARD_TEST_DATA``, else
    ``<repo>/../shared/data``. Never part of the package; the folder may not exist."""
    env = os.environ if env is None else env
    value = env.get(TEST_DATA_ENV)
    return Path(value) if value else agent.REPO_ROOT.parent / "shared" / "data"
