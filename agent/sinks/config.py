"""Config of the file sink (used when no broker is configured)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.configbase import StrictModel

__all__ = ["FileSinkConfig"]


class FileSinkConfig(StrictModel):
    dir: Path = Field(Path("runs"), description="Folder for verdicts.jsonl, health.jsonl and frames/.")
    write_pass: bool = Field(False, description="Also write PASS verdicts (large files).")
    frames_per_minute: float = Field(
        6.0, ge=0, le=600, description="Rate limit of sampled risky frames saved as JPEG."
    )
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of saved frames.")
