"""``vtm-feature``: the MPEG FCM feature anchor.

The FPN levels are tiled into one monochrome frame (``packing.py``), min/max normalised to 10 bits with
min and max carried as float32 in the bitstream, and coded 4:0:0 10-bit all-intra with VVC (VTM when
configured, else the built-in VVenC). Levels the task network derives (torchvision's P6 = max-pool of P5,
kernel 1, stride 2) are not sent: the bitstream says how to rebuild them.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
import torch.nn.functional as F

from fcmbench.codecs.anchors.packing import pack, plan_layout, unpack
from fcmbench.codecs.anchors.vvc import Frame, VVCCodec
from fcmbench.core.bitstream import Container, Reader, short_string
from fcmbench.core.codec import FeatureCodec, RatePoint
from fcmbench.core.errors import BitstreamError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.limits import MAX_IMAGE_SIDE, check_decoded, check_level_shapes, check_pyramid, check_range
from fcmbench.core.tensorio import to_numpy

CTTC_QPS = (35, 37, 39, 41, 43, 45)
# The embedded default's frame (64 channels at stride 4 of a 256x256 image) holds 4 feature values per image
# pixel: the CTTC QPs cover only its middle. These span it from near-useless to saturated accuracy.
# The SSD FPN-lite's frame (5 x 128 channels, 32x32 at most) holds 0.6 values per COCO image pixel: the CTTC
# QPs leave its accuracy near saturation, so its curve continues to QP 51.
TASK_QPS = {"shapes_rcnn": (27, 32, 37, 42, 47), "ssd_mobilenet_fpnlite": (35, 37, 39, 41, 43, 45, 47, 49, 51)}
TOP = 1023  # 10-bit samples


class VTMFeatureAnchor(VVCCodec, FeatureCodec):
    name = "vtm-feature"
    display_name = "VVC feature anchor"

    def rate_points(self) -> list[RatePoint]:
        """The CTTC QPs, or the ones that span this task model's accuracy range."""
        qps = TASK_QPS.get(self.options.task_model or "", CTTC_QPS)
        return [RatePoint(f"qp{qp}", qp) for qp in sorted(qps, reverse=True)]

    def describe(self) -> str:
        return f"{self.label()}: {self.backend.name}, 4:0:0 10-bit"

    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes:
        derived = {k: v for k, v in x.derived.items() if k in x and v in x}
        sent = {name: to_numpy(t) for name, t in x.items() if name not in derived}
        layout = plan_layout({name: a.shape for name, a in sent.items()})
        frame = pack(sent, layout)
        low, high = struct.unpack(">2f", struct.pack(">2f", float(frame.min()), float(frame.max())))
        samples = np.rint((frame - low) / ((high - low) or 1.0) * TOP).clip(0, TOP).astype(np.uint16)
        stream = self.backend.encode(Frame(samples, bit_depth=10), int(rate.value))
        header = struct.pack(">2fB", low, high, int(rate.value)) + pack_level_list(sent, derived)
        return Container(self.name, x.original_size, x.input_size, header, {"vvc": stream}).to_bytes()

    def decode(self, data: bytes) -> FeatureSet:
        box = Container.from_bytes(data, expected_codec=self.name)
        reader = Reader(box.header)
        low, high, qp = reader.unpack(">2fB")
        check_range("frame", low, high)
        if qp > 63:
            raise BitstreamError(f"corrupt bitstream: vtm-feature QP {qp} is outside 0..63")
        shapes, derived = unpack_level_list(reader)
        check_level_shapes(shapes, box.input_size)
        check_pyramid(shapes, box.input_size, "this vtm-feature stream")
        layout = plan_layout(shapes)
        # the frame the VVC decoder must return: bounded before any decoder runs or any buffer is made
        if max(layout.padded_width, layout.padded_height) > 4 * MAX_IMAGE_SIDE:
            raise BitstreamError(f"corrupt bitstream: the vtm-feature levels tile into a {layout.padded_width}x"
                                 f"{layout.padded_height} frame (sides up to {4 * MAX_IMAGE_SIDE})")
        frame = self.backend.decode(box.segments.get("vvc", b""), layout.padded_width, layout.padded_height,
                                    monochrome=True, bit_depth=10)
        values = frame.y.astype(np.float32) / np.float32(TOP) * np.float32(high - low) + np.float32(low)
        levels = {name: torch.from_numpy(a) for name, a in unpack(values, layout).items()}
        for name, source in derived.items():
            levels[name] = F.max_pool2d(levels[source][None], kernel_size=1, stride=2)[0]
        check_decoded(levels, box.input_size)
        return FeatureSet(levels, box.original_size, box.input_size, derived)


def pack_level_list(sent: dict[str, np.ndarray], derived: dict[str, str]) -> bytes:
    parts = [struct.pack(">B", len(sent))]
    parts += [short_string(name) + struct.pack(">3H", *a.shape) for name, a in sent.items()]
    parts.append(struct.pack(">B", len(derived)))
    parts += [short_string(name) + short_string(source) for name, source in derived.items()]
    return b"".join(parts)


def unpack_level_list(reader: Reader) -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    shapes = {}
    for _ in range(reader.unpack(">B")[0]):
        name = reader.short_string()
        if name in shapes:
            raise BitstreamError(f"corrupt bitstream: the vtm-feature header names level {name!r} twice")
        shapes[name] = reader.unpack(">3H")
    derived = {}
    for _ in range(reader.unpack(">B")[0]):
        name = reader.short_string()
        derived[name] = reader.short_string()
    if reader.remaining:
        raise BitstreamError("corrupt bitstream: trailing bytes in the vtm-feature header")
    unknown = [s for s in derived.values() if s not in shapes]
    if unknown or not shapes or set(derived) & set(shapes):
        raise BitstreamError("corrupt bitstream: the vtm-feature header names no levels or unknown sources")
    return shapes, derived
