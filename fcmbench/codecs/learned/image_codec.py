"""Learned image codecs (ELIC, LIC-TCM) behind the codec interface, and the coding plumbing they share with
the feature methods that code each FPN level as an image (``elic-feat``, ``mfiba-elic``, ...).

An image network is a CompressAI ``CompressionModel`` with ``compress``/``decompress``, a ``pad_multiple``
and ``stream_shape(height, width)`` (what ``decompress`` needs besides the strings, rebuilt from the padded
size so the stream need not carry it). Images are zero-padded to ``pad_multiple`` the way each reference
evaluates: at the bottom and right for ELIC, centred for LIC-TCM (its ``eval.py``), as the network's
``pad_centred`` says; the decoder crops the same margins.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fcmbench.codecs.learned.ladder import QualityLadder
from fcmbench.core.bitstream import Container, Reader
from fcmbench.core.codec import ImageCodec, RatePoint
from fcmbench.core.errors import BitstreamError, FcmbenchError
from fcmbench.core.limits import check_image_size
from fcmbench.entropy.limits import check_capacity, network_min_symbol_bits, rans_safe
from fcmbench.entropy.threads import one_thread
from fcmbench.zoo.networks import ImageNetwork, checkpoint_of, load

# LIC-TCM's released λ (MSE); the ELIC reference's list is unverified, so ELIC uses the same six
IMAGE_LAMBDAS = {1: 0.0025, 2: 0.0035, 3: 0.0067, 4: 0.013, 5: 0.025, 6: 0.05}
SIZE = struct.Struct(">2H")


def margins(height: int, width: int, multiple: int, centred: bool) -> tuple[int, int, int, int]:
    """Zero margins (left, right, top, bottom) that pad a ``height`` x ``width`` image to ``multiple``; centred
    puts the odd pixel at the right and bottom, as LIC-TCM's evaluation does."""
    extra_h, extra_w = -height % multiple, -width % multiple
    top, left = (extra_h // 2, extra_w // 2) if centred else (0, 0)
    return left, extra_w - left, top, extra_h - top


def padded(image: torch.Tensor, multiple: int, centred: bool = False) -> torch.Tensor:
    return F.pad(image, margins(*image.shape[-2:], multiple, centred))


def compress_image(network: nn.Module, image: torch.Tensor, centred: bool | None = None) -> list[bytes]:
    """Float ``[3, H, W]`` in [0, 1] -> the network's strings (one per entropy-coded tensor). ``centred``
    overrides the network's own padding rule."""
    centred = network.pad_centred if centred is None else centred
    x = padded(image[None].float(), network.pad_multiple, centred)
    with torch.inference_mode(), one_thread():
        out = network.compress(x)
    return [strings[0] for strings in out["strings"]]


def decompress_image(network: nn.Module, strings: list[bytes], size: tuple[int, int],
                     centred: bool | None = None) -> torch.Tensor:
    height, width = size
    check_image_size(size, "coded image")
    centred = network.pad_centred if centred is None else centred
    multiple = network.pad_multiple
    left, right, top, bottom = margins(height, width, multiple, centred)
    shape = network.stream_shape(height + top + bottom, width + left + right)
    # y alone has M symbols per 16x16 block: more than the strings can hold is a size that lies
    blocks = -(-height // 16) * -(-width // 16)
    check_capacity(network.M * blocks, b"".join(strings), network_min_symbol_bits(network), "the image's latent")
    bound = 2 * max(network.N, network.M) * -(-height // multiple) * -(-width // multiple) * (multiple // 16) ** 2
    with torch.inference_mode(), one_thread():
        try:
            x_hat = network.decompress([[rans_safe(s, bound)] for s in strings], shape)["x_hat"]
        except (RuntimeError, ValueError, IndexError) as err:
            raise BitstreamError(f"corrupt bitstream: the image does not decode ({err})") from None
    if not bool(torch.isfinite(x_hat).all()):
        raise BitstreamError("corrupt bitstream: the decoded image holds NaN or infinite values")
    return x_hat[0, :, top:top + height, left:left + width].clamp(0, 1).float()


def join_strings(strings: list[bytes]) -> bytes:
    """One payload for a network's strings: their count, the lengths of all but the last as LEB128 varints,
    then the strings (a few bytes of framing where a segment per string would cost seven or more each)."""
    if not 0 < len(strings) < 256:
        raise FcmbenchError(f"a network gave {len(strings)} strings; the stream holds 1..255")
    lengths = b"".join(varint(len(s)) for s in strings[:-1])
    return bytes([len(strings)]) + lengths + b"".join(strings)


def split_strings(payload: bytes, what: str) -> list[bytes]:
    reader = Reader(payload)
    count = reader.unpack(">B")[0]
    lengths = [read_varint(reader, what) for _ in range(max(0, count - 1))]
    strings = [reader.take(n) for n in lengths]
    strings.append(reader.take(reader.remaining))
    if count == 0:
        raise BitstreamError(f"corrupt bitstream: {what} holds no strings")
    return strings


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(reader: Reader, what: str) -> int:
    value = 0
    for shift in range(0, 35, 7):
        byte = reader.unpack(">B")[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise BitstreamError(f"corrupt bitstream: a string length in {what} does not end")


class LearnedImageCodec(QualityLadder, ImageCodec):
    """An image codec at qualities 1..6, one checkpoint per quality under ``METHOD/images/``."""

    family: ClassVar[ImageNetwork]
    trainer = "fcmbench.training.image_networks:train"
    lambdas = IMAGE_LAMBDAS

    def checkpoint(self, quality: int) -> Path:
        return checkpoint_of(self.name, quality, self.options)

    def network(self, quality: int) -> nn.Module:
        return load(self.name, quality, self.options)

    def describe(self) -> str:
        qualities = [int(p.value) for p in self.rate_points() if self.checkpoint(int(p.value)).is_file()]
        if not qualities:
            return self.label()
        return f"{self.label()}: {self.family.describe(self.network(qualities[0]))}, qualities {qualities}"

    def encode(self, x: torch.Tensor, rate: RatePoint) -> bytes:
        quality = int(rate.value)
        strings = compress_image(self.network(quality), x)
        size = tuple(x.shape[-2:])
        header = struct.pack(">B", quality) + SIZE.pack(*size)
        return Container(self.name, size, size, header, {"image": join_strings(strings)},
                         self.stream_version).to_bytes()

    def decode(self, data: bytes) -> torch.Tensor:
        box = Container.from_bytes(data, self.name, self.stream_version)
        reader = Reader(box.header)
        quality, = reader.unpack(">B")
        size = reader.unpack(SIZE.format)
        if size != box.original_size or box.input_size != box.original_size:
            raise BitstreamError(f"corrupt bitstream: {self.name} coded size {size[0]}x{size[1]} is not the image "
                                 f"size {box.original_size[0]}x{box.original_size[1]} the container declares")
        if quality not in IMAGE_LAMBDAS or set(box.segments) != {"image"}:
            raise BitstreamError(f"corrupt bitstream: a {self.name} stream needs a quality 1..6 and one image segment")
        return decompress_image(self.network(quality), split_strings(box.segments["image"], "the image"), size)
