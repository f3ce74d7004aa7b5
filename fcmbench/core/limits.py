"""Hard limits every decoder checks before it allocates, and the checks themselves.

A bitstream is untrusted input: a size field of 65535 must not become a gigabyte tensor, an entropy decoder
must not read past its string, and a decoded FeatureSet must be one the task network's back can take. The
limits are sized for a 4K image (4096 x 2160, in either orientation) through an FPN of stride 4:

- image sides (original and network input): 1 .. ``MAX_IMAGE_SIDE``;
- feature levels: 1 .. ``MAX_LEVELS``, channels 1 .. ``MAX_CHANNELS``, sides 1 .. the input side rounded up to
  ``LEVEL_SLACK`` (a network pads its input before striding, so a level may be a little larger than input/stride);
- a feature pyramid (the levels of an FPN, in order) starts at stride ``PYRAMID_STRIDE`` or coarser and halves
  from each level to the next;
- all decoded feature values together: ``MAX_FEATURE_VALUES`` (a 4K image through a 256-channel stride-4 FPN
  gives 189 M).

Every violation is a :class:`BitstreamError` naming the field. The entropy decoder's own limits are in
:mod:`fcmbench.entropy.limits`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fcmbench.core.errors import BitstreamError

if TYPE_CHECKING:
    import torch

MAX_IMAGE_SIDE = 4096
MAX_LEVELS = 8
MAX_CHANNELS = 2048
LEVEL_SLACK = 64
MAX_FEATURE_VALUES = 2**28
PYRAMID_STRIDE = 4  # the finest FPN level of any detector here is P2, at stride 4
# CompressAI's rANS coder: 16-bit frequencies, 32-bit words, an 8-byte final state, 4-bit bypass chunks.


def check_image_size(size: tuple[int, int], what: str) -> None:
    """``size`` (height, width) of an image the stream describes."""
    for side, axis in zip(size, ("height", "width"), strict=True):
        if not 1 <= side <= MAX_IMAGE_SIDE:
            raise BitstreamError(f"corrupt bitstream: {what} {axis} {side} is outside 1..{MAX_IMAGE_SIDE}")


def max_level_side(input_side: int) -> int:
    return -(-input_side // LEVEL_SLACK) * LEVEL_SLACK


def check_level_count(count: int, what: str = "the stream") -> None:
    if not 1 <= count <= MAX_LEVELS:
        raise BitstreamError(f"corrupt bitstream: {what} declares {count} feature levels (1..{MAX_LEVELS})")


def check_level_shape(name: str, shape: tuple[int, int, int], input_size: tuple[int, int]) -> None:
    """A level ``[C, H, W]`` against the limits and the network input it came from."""
    channels, height, width = shape
    if not 1 <= channels <= MAX_CHANNELS:
        raise BitstreamError(f"corrupt bitstream: level {name!r} channel count {channels} is outside "
                             f"1..{MAX_CHANNELS}")
    for side, axis, limit in ((height, "height", input_size[0]), (width, "width", input_size[1])):
        if not 1 <= side <= max_level_side(limit):
            raise BitstreamError(f"corrupt bitstream: level {name!r} {axis} {side} is outside 1.."
                                 f"{max_level_side(limit)} (the network input is {limit} high/wide)")


def check_level_shapes(shapes: dict[str, tuple[int, int, int]], input_size: tuple[int, int]) -> None:
    check_level_count(len(shapes))
    for name, shape in shapes.items():
        check_level_shape(name, shape, input_size)
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_FEATURE_VALUES:
        raise BitstreamError(f"corrupt bitstream: the levels declare {total} values in all (at most "
                             f"{MAX_FEATURE_VALUES})")


def check_pyramid(shapes: dict[str, tuple[int, int, int]], input_size: tuple[int, int], what: str) -> None:
    """FPN levels in order: the first at stride ``PYRAMID_STRIDE`` or coarser, and each level's sides the previous
    level's halved (rounded either way), as every FPN and its max-pooled P6 make them. A codec that codes a
    pyramid checks this; one level out of step is a size field that lies, and the task network's back would
    take it."""
    first = next(iter(shapes.values()), None)
    limits = tuple(max_level_side(side) // PYRAMID_STRIDE for side in input_size)
    if first is not None and (first[1] > limits[0] or first[2] > limits[1]):
        raise BitstreamError(f"corrupt bitstream: the first level of {what} is {first[1]}x{first[2]}, more than a "
                             f"stride-{PYRAMID_STRIDE} level of a {input_size[0]}x{input_size[1]} input can be "
                             f"({limits[0]}x{limits[1]})")
    previous = None
    for name, (_, height, width) in shapes.items():
        if previous is not None and not all(side in (last // 2, -(-last // 2))
                                            for side, last in zip((height, width), previous, strict=True)):
            raise BitstreamError(f"corrupt bitstream: level {name!r} of {what} is {height}x{width}, not half the "
                                 f"level before it ({previous[0]}x{previous[1]})")
        previous = (height, width)


def check_range(name: str, low: float, high: float) -> None:
    """A level's min/max as the stream carries them: finite and ordered."""
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise BitstreamError(f"corrupt bitstream: level {name!r} min/max {low}, {high} are not a finite range")


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if not bool(tensor.isfinite().all()):
        raise BitstreamError(f"corrupt bitstream: decoded level {name!r} holds NaN or infinite values")


def check_decoded(levels: dict[str, torch.Tensor], input_size: tuple[int, int]) -> None:
    """What a decoder returns: shapes within the limits and every value finite."""
    check_level_shapes({name: tuple(t.shape) for name, t in levels.items()}, input_size)
    for name, tensor in levels.items():
        check_finite(name, tensor)
