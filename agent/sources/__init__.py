"""Frame sources: video files, network streams, devices, image folders, and the synthetic camera.

``open_source(cfg, camera_id)`` picks the right one from ``cfg.uri``.
"""

from __future__ import annotations

from agent.sources.base import Source, SourceState
from agent.sources.factory import open_source

__all__ = ["Source", "SourceState", "open_source"]
