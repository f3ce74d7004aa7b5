"""Feature levels <-> one monochrome frame, as the MPEG FCM feature anchor packs them.

Each level's channels are tiled into a grid: the level with the widest near-square grid (rows = the largest
divisor of C not above sqrt(C)) sets the frame width, and every level is re-tiled to that width and stacked
below the previous one. The layout follows from the level shapes alone, so only the shapes travel in the
bitstream. Unused grid cells hold the level's mean (cheap to code, ignored on unpacking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK = 8  # frame sides are padded to a multiple of this (VVC's minimum coding block)


@dataclass(frozen=True)
class LevelLayout:
    name: str
    channels: int
    height: int
    width: int
    columns: int
    rows: int
    top: int


@dataclass(frozen=True)
class FrameLayout:
    width: int
    height: int
    padded_width: int
    padded_height: int
    levels: tuple[LevelLayout, ...]


def near_square_columns(channels: int) -> int:
    rows = max(d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0)
    return channels // rows


def plan_layout(shapes: dict[str, tuple[int, int, int]]) -> FrameLayout:
    width = max(near_square_columns(c) * w for c, _, w in shapes.values())
    levels, top = [], 0
    for name, (c, h, w) in shapes.items():
        columns = min(c, max(1, width // w))
        rows = math.ceil(c / columns)
        levels.append(LevelLayout(name, c, h, w, columns, rows, top))
        top += rows * h
    return FrameLayout(width, top, _round_up(width), _round_up(top), tuple(levels))


def _round_up(side: int) -> int:
    return -(-side // BLOCK) * BLOCK


def pack(levels: dict[str, np.ndarray], layout: FrameLayout) -> np.ndarray:
    """Levels ``[C, H, W]`` -> one ``[padded_height, padded_width]`` frame of the same dtype."""
    first = next(iter(levels.values()))
    frame = np.zeros((layout.height, layout.width), dtype=first.dtype)
    for spec in layout.levels:
        values = levels[spec.name]
        fill = values.mean().astype(values.dtype) if values.size else 0
        block = np.full((spec.rows * spec.columns, spec.height, spec.width), fill, dtype=values.dtype)
        block[: spec.channels] = values
        grid = block.reshape(spec.rows, spec.columns, spec.height, spec.width).transpose(0, 2, 1, 3)
        grid = grid.reshape(spec.rows * spec.height, spec.columns * spec.width)
        frame[spec.top : spec.top + grid.shape[0], : grid.shape[1]] = grid
        if grid.shape[1] < layout.width:  # a level narrower than the frame: repeat its edge, cheaper to code
            frame[spec.top : spec.top + grid.shape[0], grid.shape[1] :] = grid[:, -1:]
    pad = ((0, layout.padded_height - layout.height), (0, layout.padded_width - layout.width))
    return np.pad(frame, pad, mode="edge")


def unpack(frame: np.ndarray, layout: FrameLayout) -> dict[str, np.ndarray]:
    levels = {}
    for spec in layout.levels:
        grid = frame[spec.top : spec.top + spec.rows * spec.height, : spec.columns * spec.width]
        block = grid.reshape(spec.rows, spec.height, spec.columns, spec.width).transpose(0, 2, 1, 3)
        levels[spec.name] = block.reshape(-1, spec.height, spec.width)[: spec.channels].copy()
    return levels
