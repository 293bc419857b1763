"""A folder of still images played as a stream (sorted by file name)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from agent.errors import SourceConfigError
from agent.sources.base import Capture, SourceBase, to_bgr
from agent.sources.config import SourceConfig

__all__ = ["IMAGE_SUFFIXES", "FolderSource"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_DEFAULT_FPS = 25.0


class FolderSource(SourceBase):
    """Images of ``cfg.uri`` (a directory) in name order; unreadable files are skipped, counted, logged once."""

    def __init__(self, cfg: SourceConfig, camera_id: str) -> None:
        folder = Path(cfg.uri)
        if not folder.is_dir():
            raise SourceConfigError(f"cannot open image folder {folder}: not a directory")
        listing = sorted(folder.iterdir())
        entries = [p for p in listing if p.is_file()]
        self.paths: tuple[Path, ...] = tuple(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        #: Image-named entries that are not readable files (a folder, a broken link): never read.
        self.not_files: tuple[str, ...] = tuple(
            p.name for p in listing if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_file()
        )
        if self.not_files:
            logger.warning("image folder %s: skipping %d image-named entr%s that %s not a file (a folder or a broken "
                           "link): %s", folder, len(self.not_files), "y" if len(self.not_files) == 1 else "ies",
                           "is" if len(self.not_files) == 1 else "are", ", ".join(self.not_files[:5]))
        if not self.paths:
            raise SourceConfigError(
                f"image folder {folder} has no images: expected files ending in {', '.join(IMAGE_SUFFIXES)}, "
                f"found {len(entries)} other file(s)"
            )
        super().__init__(
            cfg.uri,
            camera_id,
            live=False,
            nominal_fps=cfg.fps or _DEFAULT_FPS,
            realtime=cfg.realtime,
            max_frames=cfg.max_frames,
        )
        self._loop = cfg.loop
        self._pos = 0
        self._good_in_pass = 0
        self._bad: set[Path] = set()
        self.passes = 0
        """Completed passes over the folder."""
        self._set_state("up")

    @property
    def unreadable(self) -> tuple[Path, ...]:
        """Files that could not be decoded as images."""
        return tuple(sorted(self._bad))

    def _next(self) -> Capture | None:
        while not self._stop.is_set():
            if self._pos >= len(self.paths):
                if not self._loop or self._good_in_pass == 0:
                    if self._loop:
                        logger.warning("image folder %s: no readable image in a whole pass; ending", self.uri)
                    return None
                self.passes += 1
                self._pos = 0
                self._good_in_pass = 0
            path = self.paths[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if to_bgr(image)[0] is None:
                self._count_corrupt()
                if path not in self._bad:
                    self._bad.add(path)
                    logger.warning("image folder %s: skipping unreadable file %s", self.uri, path.name)
                continue
            self._good_in_pass += 1
            return Capture(image, None, {"path": path.name})
        return None

    def _release(self) -> None:
        pass
