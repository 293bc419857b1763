"""Pick and open the right frame source for a URI."""

from __future__ import annotations

from pathlib import Path

from agent.errors import SourceConfigError
from agent.sources.base import Source
from agent.sources.config import SourceConfig
from agent.sources.folder import FolderSource
from agent.sources.opencv_source import LIVE_SCHEMES, OpenCVSource, is_live_uri
from agent.sources.synthetic import SyntheticSource, parse_synthetic_uri

__all__ = ["ACCEPTED", "open_source", "uri_problem"]

ACCEPTED = (
    "a video file path, a folder of images, a device index such as '0', a URL with scheme "
    + ", ".join(f"{s}://" for s in LIVE_SCHEMES)
    + ", or synthetic://<scenario>?seed=N&size=WxH&fps=F"
)


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot work whatever the file system holds (checked when the config is loaded): a
    ``synthetic://`` URI that does not parse, or a URL scheme no source reads; None otherwise (files,
    folders and cameras are checked when opened)."""
    uri = uri.strip()
    if uri.lower().startswith("synthetic://"):
        try:
            parse_synthetic_uri(uri)
        except SourceConfigError as exc:
            return str(exc)
        return None
    if "://" in uri and not uri.startswith("file://") and not is_live_uri(uri):
        return f"source uri {uri!r} has unknown scheme {uri.split('://', 1)[0]!r}; accepted: {ACCEPTED}"
    return None


def open_source(cfg: SourceConfig, camera_id: str) -> Source:
    """Open the source ``cfg.uri`` names for camera ``camera_id``.

    Dispatch: ``synthetic://`` -> synthetic camera; rtsp/http(s)/... URLs, digits and
    ``/dev/video*`` -> live OpenCV capture; an existing directory -> image folder; an
    existing file (or ``file://`` path) -> video file. Anything else raises SourceConfigError
    naming the URI and what is accepted. Files and folders are opened (and their first
    frame decoded) here; live sources connect on the first ``read()``.
    """
    uri = cfg.uri.strip()
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if uri != cfg.uri:
        cfg = cfg.model_copy(update={"uri": uri})
    if uri.lower().startswith("synthetic://"):
        return SyntheticSource(cfg, camera_id)
    if is_live_uri(uri):
        return OpenCVSource(cfg, camera_id)
    if (problem := uri_problem(uri)) is not None:  # a config built without validation (model_copy)
        raise SourceConfigError(problem)
    path = Path(uri).expanduser()
    if path.is_dir():
        return FolderSource(cfg.model_copy(update={"uri": str(path)}), camera_id)
    if path.is_file():
        return OpenCVSource(cfg.model_copy(update={"uri": str(path)}), camera_id)
    what = "not a regular file or folder (a device or a pipe)" if path.exists() else "no such file or folder"
    raise SourceConfigError(f"source uri {cfg.uri!r}: {what}; accepted: {ACCEPTED}")
