"""FPN levels as images for an image codec, as MFIBA codes them (reference §4.3), and ``elic-feat`` /
``tcm-feat``: every level coded so with one base-codec quality for all levels.

Each level is min-max normalised over the whole tensor, quantised to 8 bits (the reference writes PNGs),
each side padded with zeros to at least 40, and tiled into a 3-channel mosaic: tile i holds channels 3i..3i+2
as RGB (the last tile's missing channels are zero), tiles placed column-major on a grid of
``rows = ceil(sqrt(tiles))`` rows (for 256 channels that is the reference's 10 x 9). Unlike the reference,
the min, max, sizes, grid and quality of every level are in the stream and counted.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fcmbench.codecs.learned.image_codec import (
    IMAGE_LAMBDAS,
    compress_image,
    decompress_image,
    join_strings,
    split_strings,
)
from fcmbench.codecs.learned.ladder import QualityLadder
from fcmbench.core.bitstream import Container, Reader, short_string
from fcmbench.core.codec import FeatureCodec, RatePoint
from fcmbench.core.errors import BitstreamError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.limits import (
    MAX_IMAGE_SIDE,
    check_decoded,
    check_level_count,
    check_level_shape,
    check_pyramid,
    check_range,
)
from fcmbench.zoo.checkpoints import checkpoint_path
from fcmbench.zoo.networks import ImageNetwork, load

MIN_TILE = 40
LEVEL = struct.Struct(">3H2BBff")  # channels, height, width, grid rows, grid columns, quality, min, max


@dataclass(frozen=True)
class Layout:
    channels: int
    height: int
    width: int
    rows: int
    cols: int

    @property
    def tile(self) -> tuple[int, int]:
        return max(self.height, MIN_TILE), max(self.width, MIN_TILE)

    @property
    def size(self) -> tuple[int, int]:
        return self.rows * self.tile[0], self.cols * self.tile[1]

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


def layout_for(channels: int, height: int, width: int) -> Layout:
    tiles = math.ceil(channels / 3)
    rows = math.ceil(math.sqrt(tiles))
    return Layout(channels, height, width, rows, math.ceil(tiles / rows))


def to_mosaic(values: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``[C, H, W]`` in [0, 1] -> ``[3, rows * tile_h, cols * tile_w]``."""
    (th, tw), cells = layout.tile, layout.rows * layout.cols
    grid = values.new_zeros(cells * 3, th, tw)
    grid[: layout.channels, : layout.height, : layout.width] = values
    # column-major: tile i sits at row i % rows, column i // rows
    grid = grid.reshape(layout.cols, layout.rows, 3, th, tw).permute(2, 1, 3, 0, 4)
    return grid.reshape(3, layout.rows * th, layout.cols * tw)


def from_mosaic(mosaic: torch.Tensor, layout: Layout) -> torch.Tensor:
    (th, tw) = layout.tile
    grid = mosaic.reshape(3, layout.rows, th, layout.cols, tw).permute(3, 1, 0, 2, 4)
    grid = grid.reshape(layout.cols * layout.rows * 3, th, tw)
    return grid[: layout.channels, : layout.height, : layout.width]


def eight_bits(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values.clamp(0, 1) * 255) / 255


def value_range(level: torch.Tensor) -> tuple[float, float]:
    """Min and max as float32, the numbers the stream holds."""
    return struct.unpack(">2f", struct.pack(">2f", float(level.min()), float(level.max())))


def level_mosaic(level: torch.Tensor) -> tuple[Layout, float, float, torch.Tensor]:
    layout = layout_for(*level.shape)
    low, high = value_range(level)
    normalised = (level.float() - low) / ((high - low) or 1.0)
    return layout, low, high, to_mosaic(eight_bits(normalised), layout)


def level_from_mosaic(mosaic: torch.Tensor, layout: Layout, low: float, high: float) -> torch.Tensor:
    return from_mosaic(eight_bits(mosaic), layout) * ((high - low) or 1.0) + low


def level_values(level: CodedLevel, mosaic: torch.Tensor) -> torch.Tensor:
    return level_from_mosaic(mosaic, level.layout, level.low, level.high)


@dataclass(frozen=True)
class CodedLevel:
    name: str
    layout: Layout
    low: float
    high: float
    quality: int
    strings: list[bytes]

    @property
    def bits(self) -> int:
        return 8 * sum(len(s) for s in self.strings)

    @property
    def bpp(self) -> float:
        """Bits per mosaic pixel, the rate MFIBA's allocation works with."""
        return self.bits / self.layout.pixels


class TimedCache:
    """Results of a deterministic coding step done lately (a level coded, a mosaic decoded), by key, each with the
    seconds it took. A tiled codec and MFIBA on it code and decode the same levels with the same networks (MFIBA
    every level at every base quality): the second gets the first's result and is charged the first's seconds, so
    that neither the bits nor the reported encode and decode times depend on which methods run together."""

    def __init__(self, size: int) -> None:
        self.size, self.entries = size, OrderedDict()

    def get(self, key: tuple, compute: Callable[[], Any]) -> tuple[Any, float]:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        start = time.perf_counter()
        value = compute()
        self.entries[key] = value, time.perf_counter() - start
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return self.entries[key]


CODED_LEVELS = TimedCache(512)
DECODED_MOSAICS = TimedCache(64)  # an image's levels at every quality of both tiled families: 50


def values_digest(tensor: torch.Tensor) -> bytes:
    values = tensor.detach().float().contiguous().cpu()
    return hashlib.blake2b(repr(tuple(values.shape)).encode() + values.numpy().tobytes(), digest_size=16).digest()


def strings_digest(strings: list[bytes]) -> bytes:
    """A key for coded strings (each length-prefixed, so that no two lists of strings share one)."""
    digest = hashlib.blake2b(digest_size=16)
    for string in strings:
        digest.update(len(string).to_bytes(8, "big") + string)
    return digest.digest()


class TiledFeatureCodec(QualityLadder, FeatureCodec):
    """Every level tiled and coded by one image network family; ``base`` names whose checkpoints it uses."""

    family: ClassVar[ImageNetwork]
    base: ClassVar[str]
    trainer = "fcmbench.training.image_networks:train"

    lambdas = IMAGE_LAMBDAS

    def base_qualities(self) -> list[int]:
        """The base-codec qualities that have a checkpoint for this task model."""
        return [q for q in IMAGE_LAMBDAS if self.checkpoint(q).is_file()]

    def checkpoint(self, quality: int) -> Path:
        return checkpoint_path(self.base, quality, self.options)

    def network(self, quality: int) -> nn.Module:
        return load(self.base, quality, self.options)

    def describe(self) -> str:
        qualities = self.base_qualities()
        if not qualities:
            return self.label()
        return f"{self.label()}: {self.family.describe(self.network(qualities[0]))}, base qualities {qualities}"

    def code_level(self, name: str, level: torch.Tensor, quality: int) -> CodedLevel:
        return self.timed_level(name, level, quality)[0]

    def timed_level(self, name: str, level: torch.Tensor, quality: int) -> tuple[CodedLevel, float]:
        """The coded level and the seconds its coding took (now, or when it was coded for another method)."""
        network = self.network(quality)  # a missing checkpoint is an error that says how to make it

        def code() -> CodedLevel:
            layout, low, high, mosaic = level_mosaic(level)
            return CodedLevel(name, layout, low, high, quality, compress_image(network, mosaic))

        path = self.checkpoint(quality)
        return CODED_LEVELS.get((str(path), path.stat().st_mtime_ns, quality, name, values_digest(level)), code)

    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes:
        return self.encode_batch(x, [rate])[0][0]

    def encode_batch(self, x: FeatureSet, rates: list[RatePoint]) -> list[tuple[bytes, float]]:
        """Each rate point's time is what coding its levels took (now, or when they were coded for another method)
        and writing the container."""
        results = []
        for rate in rates:
            timed = [self.timed_level(name, t, int(rate.value)) for name, t in x.items()]
            start = time.perf_counter()
            data = self.container(x, [level for level, _ in timed])
            results.append((data, sum(seconds for _, seconds in timed) + time.perf_counter() - start))
        return results

    def container(self, x: FeatureSet, levels: list[CodedLevel]) -> bytes:
        header, segments = b"", {}
        for level in levels:
            lay = level.layout
            header += short_string(level.name) + LEVEL.pack(lay.channels, lay.height, lay.width, lay.rows, lay.cols,
                                                            level.quality, level.low, level.high)
            segments[level.name] = join_strings(level.strings)
        return Container(self.name, x.original_size, x.input_size, header, segments, self.stream_version).to_bytes()

    def read_levels(self, box: Container) -> list[CodedLevel]:
        reader, levels = Reader(box.header), []
        check_level_count(len(box.segments), f"this {self.name} stream")
        while reader.remaining:
            name = reader.short_string()
            channels, height, width, rows, cols, quality, low, high = reader.unpack(LEVEL.format)
            if name not in box.segments or any(level.name == name for level in levels):
                raise BitstreamError(f"corrupt bitstream: level {name!r} of this {self.name} stream has no segment "
                                     "or is named twice")
            check_level_shape(name, (channels, height, width), box.input_size)
            check_range(name, low, high)
            layout = Layout(channels, height, width, rows, cols)
            # the encoder always uses layout_for: any other grid is a field that lies
            if layout != layout_for(channels, height, width) or quality not in IMAGE_LAMBDAS:
                raise BitstreamError(f"corrupt bitstream: level {name!r} of this {self.name} stream is inconsistent "
                                     f"(grid {rows}x{cols} for {channels} channels, quality {quality})")
            if max(layout.size) > MAX_IMAGE_SIDE:
                raise BitstreamError(f"corrupt bitstream: level {name!r} tiles into a {layout.size[0]}x"
                                     f"{layout.size[1]} mosaic (sides up to {MAX_IMAGE_SIDE})")
            strings = split_strings(box.segments[name], f"level {name!r}")
            levels.append(CodedLevel(name, layout, low, high, quality, strings))
        if len(levels) != len(box.segments):
            raise BitstreamError(f"corrupt bitstream: this {self.name} stream has segments no level names")
        check_pyramid({level.name: (level.layout.channels, level.layout.height, level.layout.width)
                       for level in levels}, box.input_size, f"this {self.name} stream")
        return levels

    def decode(self, data: bytes) -> FeatureSet:
        return self.decode_timed(data)[0]

    def decode_timed(self, data: bytes) -> tuple[FeatureSet, float]:
        """The features, and the seconds decoding their levels took (now, or when they were decoded for another
        method) plus reading the container and mapping the mosaics back."""
        start = time.perf_counter()
        box = Container.from_bytes(data, self.name, self.stream_version)
        levels = self.read_levels(box)
        parsed = time.perf_counter()
        mosaics = [self.timed_mosaic(level) for level in levels]
        decoded_at = time.perf_counter()
        decoded = {level.name: level_values(level, mosaic) for level, (mosaic, _) in zip(levels, mosaics, strict=True)}
        check_decoded(decoded, box.input_size)
        own = parsed - start + time.perf_counter() - decoded_at
        return FeatureSet(decoded, box.original_size, box.input_size), own + sum(s for _, s in mosaics)

    def decode_level(self, level: CodedLevel) -> torch.Tensor:
        """One coded level's values (MFIBA's rate-model fit measures each level alone)."""
        return level_values(level, self.timed_mosaic(level)[0])

    def timed_mosaic(self, level: CodedLevel) -> tuple[torch.Tensor, float]:
        """A level's decoded mosaic and the seconds decoding it took."""
        network, path = self.network(level.quality), self.checkpoint(level.quality)
        key = (str(path), path.stat().st_mtime_ns, level.quality, level.layout.size, strings_digest(level.strings))
        return DECODED_MOSAICS.get(key, lambda: decompress_image(network, level.strings, level.layout.size))

    def stream_info(self, data: bytes) -> dict:
        """The base-codec quality of each level."""
        box = Container.from_bytes(data, self.name, self.stream_version)
        return {"qualities": {level.name: level.quality for level in self.read_levels(box)}}


def feature_mosaics(features: FeatureSet) -> list[torch.Tensor]:
    """The images a tiled codec codes for these features, each ``[6, H, W]``: the mosaic, then 1 on the values the
    decoder keeps and 0 on the tiles' padding and empty slots. Training data for its base network: the loss
    counts only the kept pixels (a level of 2x2 values in 40x40 tiles would otherwise be trained as zeros)."""
    mosaics = []
    for level in features.values():
        layout, _, _, mosaic = level_mosaic(level)
        kept = to_mosaic(torch.ones(level.shape), layout)
        mosaics.append(torch.cat([mosaic, kept]))
    return mosaics
