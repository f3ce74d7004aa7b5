"""Small helpers to put tensors into container segments and back."""

from __future__ import annotations

import struct

import numpy as np
import torch

from fcmbench.core.errors import BitstreamError

SHAPE = struct.Struct(">3H")


def pack_shape(shape: tuple[int, ...]) -> bytes:
    if len(shape) != 3 or max(shape) > 0xFFFF:
        raise ValueError(f"level shape {shape} does not fit [C, H, W] with sides < 65536")
    return SHAPE.pack(*shape)


def unpack_shape(payload: bytes, offset: int = 0) -> tuple[tuple[int, int, int], int]:
    if len(payload) < offset + SHAPE.size:
        raise BitstreamError("corrupt bitstream: a level segment is too short for its shape")
    return SHAPE.unpack_from(payload, offset), offset + SHAPE.size


def array_from(payload: bytes, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(payload) != expected:
        raise BitstreamError(f"corrupt bitstream: {what} holds {len(payload)} bytes, its shape needs {expected}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()
