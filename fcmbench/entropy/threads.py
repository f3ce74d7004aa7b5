"""Coding runs on one thread, so that encoder and decoder compute the same entropy parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Entropy parameters must come out the same in the encoder and in any decoder process; a BLAS kernel can
    block its sums differently for another thread count, so coding runs on one thread whatever the caller set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
