"""CompressAI's Gaussian conditional, with its CDF tables handed to the rANS coder in the coder's form once.

CompressAI's ``EntropyModel.compress``/``decompress`` convert the whole padded CDF table (64 scales x up to 3,133
entries) to Python lists on every call, and the coder converts those lists again: about 3.7 ms per call whatever
the number of symbols. A channel-group, checkerboard or slice model makes one call per group and image, so on
small feature mosaics this conversion is most of the coding time. Here the rows are cut to their lengths (the
coder reads no further, so the bytes are the same) and converted once, when the tables change.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import GaussianConditional
from torch import Tensor, nn

Tables = tuple[list[list[int]], list[int], list[int]]


def coder_tables(model: Any) -> Tables:
    """An entropy model's CDF rows (each cut to its length), lengths and offsets, as the rANS coder takes them."""
    lengths = model.cdf_length.reshape(-1).int().tolist()
    rows = model.quantized_cdf.tolist()
    return [row[:n] for row, n in zip(rows, lengths, strict=True)], lengths, model.offset.reshape(-1).int().tolist()


def tables_of(conditional: GaussianConditional) -> Tables:
    """The coder's tables of any Gaussian conditional: kept by a tabled one, made now for another."""
    if isinstance(conditional, TabledGaussianConditional):
        return conditional.coding_tables()
    return coder_tables(conditional)


class TabledGaussianConditional(GaussianConditional):
    """``GaussianConditional`` whose ``compress``/``decompress`` write and read the same strings as CompressAI's,
    with the coder's tables made once (again after ``update`` or loading weights)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tables: Tables | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module.forget_tables())

    def forget_tables(self) -> None:
        self.tables = None

    def update(self) -> None:
        self.forget_tables()
        super().update()

    def coding_tables(self) -> Tables:
        if self.tables is None:
            if self.quantized_cdf.numel() == 0:
                raise ValueError("Uninitialized CDFs. Run update() first")
            self.tables = coder_tables(self)
        return self.tables

    def compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        if inputs.dim() < 2 or inputs.size() != indexes.size():
            raise ValueError("`inputs` and `indexes` should have the same size, of at least 2 dimensions")
        symbols = self.quantize(inputs, "symbols", means)
        tables = self.coding_tables()
        return [self.entropy_coder.encode_with_indexes(symbols[i].reshape(-1).int().tolist(),
                                                       indexes[i].reshape(-1).int().tolist(), *tables)
                for i in range(symbols.size(0))]

    def decompress(self, strings: list[bytes], indexes: Tensor, dtype: torch.dtype = torch.float,
                   means: Tensor | None = None) -> Tensor:
        if not isinstance(strings, (tuple, list)) or len(strings) != indexes.size(0) or indexes.dim() < 2:
            raise ValueError("one string per batch element and indexes of at least 2 dimensions are needed")
        tables = self.coding_tables()
        outputs = self.quantized_cdf.new_empty(indexes.size())
        for i, string in enumerate(strings):
            values = self.entropy_coder.decode_with_indexes(string, indexes[i].reshape(-1).int().tolist(), *tables)
            outputs[i] = torch.tensor(values, device=outputs.device, dtype=outputs.dtype).reshape(outputs[i].size())
        return self.dequantize(outputs, means, dtype)


def with_tabled_conditionals(model: nn.Module) -> nn.Module:
    """Every ``GaussianConditional`` of a freshly built ``model`` replaced by a tabled one (before any weights are
    loaded: the networks here build theirs with CompressAI's defaults, which the replacement keeps)."""
    for name, module in list(model.named_modules()):
        if type(module) is GaussianConditional:
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, TabledGaussianConditional(None))
    return model
