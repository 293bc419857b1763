"""The host side of kernels/frame_stats.cu's interface: frame descriptors and block planning.

Pure NumPy (no CUDA): the CUDA backend fills these records for the GPU, and the host
harness tests fill the very same records for the host-compiled kernel arithmetic, so the
planner below is tested on every machine. The constants mirror kernels/frame_stats_math.h
(a test compares them with the compiled header).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BH_MAX",
    "BW",
    "CHUNK",
    "DESC_DTYPE",
    "DESC_FIELDS",
    "FMT_BGR",
    "FMT_NV12",
    "HIST_BINS",
    "KERNEL_NAME",
    "NFIELDS",
    "RANGE_FULL",
    "RANGE_LIMITED",
    "THREADS",
    "FramePlan",
    "PixelFormat",
    "VideoRange",
    "fill_desc",
    "plan_frame",
]

#: Entry point in kernels/frame_stats.cu.
KERNEL_NAME = "eg_frame_stats"
#: Threads per block, region width and maximum region rows per block (EG_THREADS, EG_BW, EG_BH_MAX).
THREADS = 256
BW = 128
BH_MAX = 64
#: Pixels per work item (EG_CHUNK): 16-byte loads of luma, 48-byte loads of BGR.
CHUNK = 16
#: Raw sums per tile (len(RAW_FIELDS)) and histogram bins.
NFIELDS = 14
HIST_BINS = 32
FMT_BGR, FMT_NV12 = 0, 1
RANGE_FULL, RANGE_LIMITED = 0, 1

PixelFormat = Literal["bgr", "nv12"]
VideoRange = Literal["full", "limited"]

#: (name, numpy type) of EgFrameDesc's fields, in declaration order (128 bytes, no padding).
DESC_FIELDS: tuple[tuple[str, str], ...] = (
    ("src", "<u8"),
    ("chroma", "<u8"),
    ("prev_luma", "<u8"),
    ("luma_out", "<u8"),
    ("raw_out", "<u8"),
    ("hist_out", "<u8"),
    ("pitch", "<i8"),
    ("chroma_pitch", "<i8"),
    ("luma_pitch", "<i8"),
    ("width", "<i4"),
    ("height", "<i4"),
    ("format", "<i4"),
    ("range", "<i4"),
    ("grid_rows", "<i4"),
    ("grid_cols", "<i4"),
    ("block_start", "<i4"),
    ("block_count", "<i4"),
    ("tile_bx", "<i4"),
    ("tile_by", "<i4"),
    ("block_rows", "<i4"),
    ("reserved0", "<i4"),
    ("reserved1", "<i4"),
    ("reserved2", "<i4"),
)
DESC_DTYPE = np.dtype([(name, typ) for name, typ in DESC_FIELDS])
assert DESC_DTYPE.itemsize == 128


@dataclass(frozen=True, slots=True)
class FramePlan:
    """How one frame is cut into blocks: ``tile_bx`` x ``tile_by`` blocks per tile of the grid."""

    tile_bx: int
    tile_by: int
    block_rows: int
    block_count: int


def plan_frame(width: int, height: int, grid: tuple[int, int], max_block_rows: int = BH_MAX) -> FramePlan:
    """Blocks for a ``width`` x ``height`` frame on a ``grid`` of (rows, cols) tiles.

    Every tile gets the same number of blocks, sized for the largest tile
    (ceil(H/rows) x ceil(W/cols)): BW columns each, and rows split evenly into blocks of
    at most ``max_block_rows`` (<= BH_MAX; smaller means more, shorter blocks, which helps
    a single small frame fill a large GPU).
    """
    rows, cols = grid
    if width < 1 or height < 1 or rows < 1 or cols < 1:
        raise ValueError(f"need width, height, rows, cols >= 1, but got {width}, {height}, {grid}")
    if not 1 <= max_block_rows <= BH_MAX:
        raise ValueError(f"max_block_rows must be in 1..{BH_MAX}, but got {max_block_rows}")
    tile_h = math.ceil(height / rows)
    tile_w = math.ceil(width / cols)
    tile_bx = math.ceil(tile_w / BW)
    tile_by = math.ceil(tile_h / max_block_rows)
    block_rows = math.ceil(tile_h / tile_by)
    tile_by = math.ceil(tile_h / block_rows)
    return FramePlan(tile_bx, tile_by, block_rows, rows * cols * tile_bx * tile_by)


def fill_desc(
    rec: npt.NDArray[np.void],
    *,
    src: int,
    pitch: int,
    width: int,
    height: int,
    grid: tuple[int, int],
    plan: FramePlan,
    block_start: int,
    raw_out: int,
    hist_out: int,
    fmt: PixelFormat = "bgr",
    video_range: VideoRange = "full",
    chroma: int = 0,
    chroma_pitch: int = 0,
    prev_luma: int = 0,
    luma_out: int = 0,
    luma_pitch: int = 0,
) -> None:
    """Write one EgFrameDesc into ``rec`` (a 0-d or 1-element view of DESC_DTYPE)."""
    if fmt == "nv12" and chroma == 0:
        raise ValueError("an NV12 frame needs its chroma plane address")
    rec["src"] = src
    rec["chroma"] = chroma
    rec["prev_luma"] = prev_luma
    rec["luma_out"] = luma_out
    rec["raw_out"] = raw_out
    rec["hist_out"] = hist_out
    rec["pitch"] = pitch
    rec["chroma_pitch"] = chroma_pitch
    rec["luma_pitch"] = luma_pitch
    rec["width"] = width
    rec["height"] = height
    rec["format"] = FMT_NV12 if fmt == "nv12" else FMT_BGR
    rec["range"] = RANGE_LIMITED if video_range == "limited" else RANGE_FULL
    rec["grid_rows"], rec["grid_cols"] = grid
    rec["block_start"] = block_start
    rec["block_count"] = plan.block_count
    rec["tile_bx"] = plan.tile_bx
    rec["tile_by"] = plan.tile_by
    rec["block_rows"] = plan.block_rows
    rec["reserved0"] = rec["reserved1"] = rec["reserved2"] = 0
