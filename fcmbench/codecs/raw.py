"""``raw``: every level stored losslessly as float32, the uncompressed reference point."""

from __future__ import annotations

import torch

from fcmbench.core.bitstream import Container
from fcmbench.core.codec import FeatureCodec, RatePoint
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.limits import check_decoded, check_level_count, check_level_shape
from fcmbench.core.tensorio import array_from, pack_shape, to_numpy, unpack_shape


class RawCodec(FeatureCodec):
    name = "raw"
    display_name = "raw (float32, lossless)"

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint("float32", 32)]

    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes:
        segments = {
            level: pack_shape(tuple(t.shape)) + to_numpy(t).astype("<f4").tobytes() for level, t in x.items()
        }
        return Container(self.name, x.original_size, x.input_size, segments=segments).to_bytes()

    def decode(self, data: bytes) -> FeatureSet:
        box = Container.from_bytes(data, expected_codec=self.name)
        levels = {}
        check_level_count(len(box.segments))
        for level, payload in box.segments.items():
            shape, offset = unpack_shape(payload)
            check_level_shape(level, shape, box.input_size)
            array = array_from(payload[offset:], "<f4", shape, f"level {level!r}")
            levels[level] = torch.from_numpy(array.astype("float32"))
        check_decoded(levels, box.input_size)
        return FeatureSet(levels, box.original_size, box.input_size)
