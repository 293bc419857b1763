"""Config of the statistics stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from agent.configbase import StrictModel

__all__ = ["StatsConfig"]


class StatsConfig(StrictModel):
    backend: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when a usable GPU and cuda-python are present, else CPU."
    )
    grid: tuple[int, int] = Field((4, 4), description="Tile grid as [rows, cols], each 1..16.")
    launcher: Literal["cuda-python", "pycuda"] = Field(
        "cuda-python", description="How CUDA kernels are compiled and launched (pycuda is optional)."
    )

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, grid: tuple[int, int]) -> tuple[int, int]:
        rows, cols = grid
        if not (1 <= rows <= 16 and 1 <= cols <= 16):
            raise ValueError(f"grid must be [rows, cols] with each in 1..16, but got {list(grid)}")
        return grid
