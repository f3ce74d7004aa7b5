"""What an entropy decoder may be given: a rANS string holds at most so many symbols, and is read only within
its own bytes (plus zero words), whatever a hostile stream declares."""

from __future__ import annotations

import math
import weakref

import torch
from compressai.entropy_models import EntropyModel

from fcmbench.core.errors import BitstreamError

RANS_PRECISION = 16
RANS_STATE_BITS = 64


def min_symbol_bits(cdfs: torch.Tensor, lengths: torch.Tensor) -> float:
    """The fewest bits any symbol of these rANS tables can cost (the most probable symbol of any table)."""
    steps = cdfs[:, 1:].long() - cdfs[:, :-1].long()
    used = torch.arange(steps.shape[1])[None, :] < (lengths.long()[:, None] - 1)
    top = int(torch.where(used, steps, torch.zeros_like(steps)).max().clamp(1, (1 << RANS_PRECISION) - 1))
    return -math.log2(top / (1 << RANS_PRECISION))


_network_bits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def network_min_symbol_bits(network: torch.nn.Module) -> float:
    """The cheapest symbol over every entropy model of a CompressAI network (its tables after ``update()``)."""
    if network not in _network_bits:
        bits = [min_symbol_bits(m.quantized_cdf, m.cdf_length) for m in network.modules()
                if isinstance(m, EntropyModel) and m.quantized_cdf.numel()]
        _network_bits[network] = min(bits, default=0.0)
    return _network_bits[network]


def check_capacity(symbols: int, string: bytes, bits_per_symbol: float, what: str) -> None:
    """A string of n bytes holds at most (8n + the final state) / (cheapest symbol) symbols: declaring more is a
    size field that lies, and decoding it would run the rANS decoder past the string."""
    capacity = (8 * len(string) + RANS_STATE_BITS) / max(bits_per_symbol, 1e-12)
    if symbols > capacity:
        raise BitstreamError(f"corrupt bitstream: {what} declares {symbols} symbols, its {len(string)} bytes "
                             f"hold at most {int(capacity)}")


def rans_safe(string: bytes, symbols: int) -> bytes:
    """The string followed by enough zero words that a decoder reading ``symbols`` symbols never leaves the
    buffer, whatever the bytes say. CompressAI's decoder reads at most one 32-bit word per symbol and per seven
    4-bit bypass reads; in the zero words a bypass length chain ends within ten reads (at most 149 raw reads),
    and longer chains need 0xF nibbles of the string itself: 26 words per symbol and 8 per string byte bound
    it. A valid stream never reads past its own bytes, so it decodes identically."""
    words = 26 * symbols + 8 * len(string) + 64
    return string + bytes(4 * words)
