"""The self-describing container every codec writes.

Layout (big-endian)::

    b"FCMB" | stream version u8 | codec name (u8 length + UTF-8)
    | original H, W (u16, u16) | input H, W (u16, u16)
    | header (u32 length + bytes)            codec parameters: shapes, min/max, QP, model id ...
    | segment count u8 | per segment: name (u8 length + UTF-8) + payload (u32 length + bytes)

Everything the decoder needs is inside and counted: ``bits = 8 * len(container)``.
Segments are usually one per FPN level, which gives the bytes per level for free.

The layout above is the same for every version. The version byte is the codec's own stream version: a codec
bumps it when its streams change meaning (LIC-TCM's corrected wiring and padding made ``tcm``, ``tcm-feat`` and
``mfiba-tcm`` version 2), so a decoder refuses an older stream by name instead of decoding it into garbage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from fcmbench.core.errors import BitstreamError
from fcmbench.core.limits import check_image_size

MAGIC = b"FCMB"
VERSION = 1  # the stream version of every codec that never changed its streams' meaning
HEADER_KEY = "_header"


@dataclass
class Container:
    codec: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    header: bytes = b""
    segments: dict[str, bytes] = field(default_factory=dict)
    version: int = VERSION

    def to_bytes(self) -> bytes:
        parts = [MAGIC, struct.pack(">B", self.version), short_string(self.codec)]
        parts.append(struct.pack(">4H", *self.original_size, *self.input_size))
        parts.append(struct.pack(">I", len(self.header)) + self.header)
        if len(self.segments) > 255:
            raise ValueError("a container holds at most 255 segments")
        parts.append(struct.pack(">B", len(self.segments)))
        if HEADER_KEY in self.segments:
            raise ValueError(f"{HEADER_KEY!r} is reserved for the header's bytes in bytes_per_segment")
        for name, payload in self.segments.items():
            parts.append(short_string(name) + struct.pack(">I", len(payload)) + payload)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, expected_codec: str | None = None,
                   expected_version: int = VERSION) -> Container:
        reader = Reader(data)
        if reader.take(4) != MAGIC:
            raise BitstreamError("corrupt bitstream: it does not start with the fcmbench magic 'FCMB'")
        version = reader.unpack(">B")[0]
        codec = reader.short_string()
        if expected_codec is not None and codec != expected_codec:
            raise BitstreamError(f"bitstream was written by codec {codec!r}, not {expected_codec!r}")
        if version != expected_version:
            raise BitstreamError(f"unsupported {codec!r} bitstream version {version}: this fcmbench reads version "
                                 f"{expected_version} of its streams; encode the input again with this fcmbench")
        oh, ow, ih, iw = reader.unpack(">4H")
        # the task network's back scales boxes and pastes masks at these sizes: check them like any size field
        check_image_size((oh, ow), "original image")
        check_image_size((ih, iw), "network input")
        header = reader.take(reader.unpack(">I")[0])
        segments = {}
        for _ in range(reader.unpack(">B")[0]):
            name = reader.short_string()
            if name in segments or name == HEADER_KEY:
                raise BitstreamError(f"corrupt bitstream: segment {name!r} appears twice or has a reserved name")
            segments[name] = reader.take(reader.unpack(">I")[0])
        if reader.remaining:
            raise BitstreamError(f"corrupt bitstream: {reader.remaining} unexpected bytes after the last segment")
        return cls(codec, (oh, ow), (ih, iw), header, segments, version)

    def bytes_per_segment(self) -> dict[str, int]:
        """Payload bytes per segment, plus everything else under ``_header``; sums to the total."""
        sizes = {name: len(payload) for name, payload in self.segments.items()}
        sizes[HEADER_KEY] = len(self.to_bytes()) - sum(sizes.values())
        return sizes


def short_string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"name too long for the container: {text[:40]}...")
    return struct.pack(">B", len(raw)) + raw


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise BitstreamError(
                f"corrupt bitstream: truncated at byte {self.pos} (needed {n} more bytes, {self.remaining} left)"
            )
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def short_string(self) -> str:
        raw = self.take(self.unpack(">B")[0])
        try:
            return raw.decode()
        except UnicodeDecodeError as err:
            raise BitstreamError(f"corrupt bitstream: a name is not UTF-8 ({err})") from None
