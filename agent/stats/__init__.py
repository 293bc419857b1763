"""Frame statistics: one contract (FrameStats), several backends."""

from agent.stats.finish import RAW_FIELDS, STATS_VERSION, finish, tile_bounds
from agent.stats.types import SCALAR_FIELDS, TILE_FIELDS, FrameStats, StatsBackend

__all__ = [
    "RAW_FIELDS",
    "SCALAR_FIELDS",
    "STATS_VERSION",
    "TILE_FIELDS",
    "FrameStats",
    "StatsBackend",
    "finish",
    "tile_bounds",
]
