"""Build hook: copy the run-time files that live outside ``agent/`` into the wheel.

Everything else is in pyproject.toml. ``agent.datafiles.data_dir`` finds the copies in
``agent/_data/`` after ``pip install .``; editable installs and checkouts read the repository
folders directly, so nothing is copied for them and git keeps a single copy of each file.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: Repository folder -> the files of it (globs) a wheel carries, under agent/_data/<folder>/.
DATA_FILES: dict[str, tuple[str, ...]] = {
    "models": ("reference_cnn.onnx", "reference_cnn.json"),
    "kernels": ("*.cu", "*.h"),
    "systemd": ("edge-guard@.service", "edge-guard.target", "*.example", "*.example.yaml"),
}
ROOT = Path(__file__).resolve().parent


class BuildPyWithData(build_py):
    """``build_py`` that also copies `DATA_FILES` into ``<build_lib>/agent/_data/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # editable: agent.datafiles reads the checkout
            return
        for folder, patterns in DATA_FILES.items():
            found = sorted({f for pattern in patterns for f in (ROOT / folder).glob(pattern) if f.is_file()})
            if not found:
                raise FileNotFoundError(f"no files match {patterns} in {ROOT / folder}: the wheel would be incomplete")
            target = Path(self.build_lib) / "agent" / "_data" / folder
            self.mkpath(str(target))
            for src in found:
                self.copy_file(str(src), str(target / src.name))


setup(cmdclass={"build_py": BuildPyWithData})
