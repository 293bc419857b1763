"""edge-guard: an on-device guard agent for camera vision models."""

from importlib import metadata as _metadata
from pathlib import Path as _Path

try:
    __version__: str = _metadata.version("edge-guard")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

#: Repository root when running from a checkout or an editable install (holds models/, kernels/).
REPO_ROOT: _Path = _Path(__file__).resolve().parent.parent

__all__ = ["REPO_ROOT", "__version__"]
