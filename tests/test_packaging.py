"""A built wheel carries the reference model, the kernel sources and the systemd units, and the
package finds them there (``pip install .``, not only editable installs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent import REPO_ROOT
from agent.datafiles import PACKAGED_DATA, data_dir, shared_test_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "agent", "models", "kernels", "systemd")


def test_a_checkout_reads_the_repository_folders() -> None:
    assert not PACKAGED_DATA.exists(), "agent/_data must only exist inside a built wheel"
    for folder in ("models", "kernels", "systemd"):
        assert data_dir(folder) == REPO_ROOT / folder


def test_shared_test_data_follows_the_environment(tmp_path: Path) -> None:
    assert shared_test_data({"EDGE_GUARD_TEST_DATA": str(tmp_path)}) == tmp_path
    assert shared_test_data({}) == REPO_ROOT.parent / "shared" / "data"


def test_wheel_carries_the_data_and_the_package_finds_it(tmp_path: Path) -> None:
    # Build from a copy so that the build's scratch folders never land in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in _SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_data"))
        else:
            shutil.copy2(REPO_ROOT / name, src / name)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(dist),
         str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("edge_guard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "agent/_data/models/reference_cnn.onnx",
        "agent/_data/models/reference_cnn.json",
        "agent/_data/systemd/edge-guard@.service",
        "agent/_data/systemd/edge-guard.target",
        *(f"agent/_data/kernels/{f.name}" for f in (REPO_ROOT / "kernels").iterdir() if f.suffix in {".cu", ".h"}),
    }
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("models/", "kernels/", "agent/_data/models/build_")) for n in names)

    # The unpacked wheel first on sys.path plays an installed package (the editable finder of
    # this checkout's venv comes after the path finder).
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import json; from agent.model.factory import REFERENCE_MODEL, effective_model_config; "
        "from agent.model.config import ModelConfig; from agent.gpu.nvrtc import kernel_dir; "
        "from agent.service import find_units_dir; "
        "r = effective_model_config(ModelConfig()); "
        "print(json.dumps([str(REFERENCE_MODEL), str(kernel_dir()), str(find_units_dir()), len(r.labels or ())]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GUARD_")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    model, kernels, units, n_labels = json.loads(out.stdout)
    data = site / "agent" / "_data"
    assert Path(model) == data / "models" / "reference_cnn.onnx"
    assert Path(kernels) == data / "kernels" and Path(units) == data / "systemd"
    assert n_labels > 0
