"""``vtm-image``: the MPEG VCM image anchor.

The image is converted to Y'CbCr 4:2:0 (BT.709, limited range, by ffmpeg's swscale), coded with VVC at an
8-bit input and 10-bit internal depth, decoded, converted back to RGB, and then the full task network runs on
it. Sides are padded to a multiple of 8 by edge replication and cropped after decoding.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from fcmbench.codecs.anchors.vvc import Frame, VVCCodec, ffmpeg_binary, run_tool
from fcmbench.core.bitstream import Container
from fcmbench.core.codec import ImageCodec, RatePoint
from fcmbench.core.errors import BitstreamError

VCM_QPS = (22, 27, 32, 37, 42, 47)
MATRIX = "bt709"


def rgb_to_yuv420(rgb: np.ndarray) -> Frame:
    h, w, _ = rgb.shape
    command = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-i", "pipe:0", "-vf", f"scale=out_color_matrix={MATRIX}:out_range=tv",
               "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1"]
    raw = np.frombuffer(run_tool(command, "RGB to YUV conversion", rgb.tobytes()), np.uint8).astype(np.uint16)
    luma, chroma = w * h, (w // 2) * (h // 2)
    return Frame(raw[:luma].reshape(h, w), raw[luma:luma + chroma].reshape(h // 2, w // 2),
                 raw[luma + chroma:].reshape(h // 2, w // 2), bit_depth=8)


def yuv420_to_rgb(frame: Frame) -> np.ndarray:
    h, w = frame.y.shape
    planes = b"".join(p.astype(np.uint8).tobytes() for p in (frame.y, frame.u, frame.v))
    command = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
               "-s", f"{w}x{h}", "-i", "pipe:0", "-vf", f"scale=in_color_matrix={MATRIX}:in_range=tv",
               "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    return np.frombuffer(run_tool(command, "YUV to RGB conversion", planes), np.uint8).reshape(h, w, 3)


class VTMImageAnchor(VVCCodec, ImageCodec):
    name = "vtm-image"
    display_name = "VVC image anchor"

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"qp{qp}", qp) for qp in reversed(VCM_QPS)]

    def describe(self) -> str:
        return f"{self.label()}: {self.backend.name}, 4:2:0 8-bit in, 10-bit internal"

    def encode(self, x: torch.Tensor, rate: RatePoint) -> bytes:
        rgb = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        h, w, _ = rgb.shape
        padded = np.pad(rgb, ((0, -h % 8), (0, -w % 8), (0, 0)), mode="edge")
        stream = self.backend.encode(rgb_to_yuv420(padded), int(rate.value))
        header = struct.pack(">B2H", int(rate.value), *padded.shape[:2])
        return Container(self.name, (h, w), (h, w), header, {"vvc": stream}).to_bytes()

    def decode(self, data: bytes) -> torch.Tensor:
        box = Container.from_bytes(data, expected_codec=self.name)
        if len(box.header) != 5:
            raise BitstreamError("corrupt bitstream: the vtm-image header must be 5 bytes")
        qp, height, width = struct.unpack(">B2H", box.header)
        # the encoder codes the image padded to a multiple of 8 and writes its size in both places
        expected = tuple(side + -side % 8 for side in box.original_size)
        if (height, width) != expected or box.input_size != box.original_size or qp > 63:
            raise BitstreamError(f"corrupt bitstream: vtm-image coded size {height}x{width} (QP {qp}) does not fit "
                                 f"its image size {box.original_size[0]}x{box.original_size[1]} (padded: "
                                 f"{expected[0]}x{expected[1]}, QP 0..63)")
        frame = self.backend.decode(box.segments.get("vvc", b""), width, height, monochrome=False, bit_depth=8)
        rgb = yuv420_to_rgb(frame)[: box.original_size[0], : box.original_size[1]]
        if rgb.shape[:2] != box.original_size:
            raise BitstreamError(f"corrupt bitstream: vtm-image decoded {rgb.shape[0]}x{rgb.shape[1]} pixels, "
                                 f"the stream declares {box.original_size[0]}x{box.original_size[1]}")
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
