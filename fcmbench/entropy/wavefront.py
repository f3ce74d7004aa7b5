"""Wavefront coding of a latent with a 5x5 causal (mask type A) context model.

CompressAI codes the latent position by position in raster order: H*W small steps. With a 5x5 mask, position
(i, j) reads only rows i-2..i-1 (columns j-2..j+2) and row i (columns j-2, j-1), and every one of those lies on
an earlier wave t = 3i + j. So all positions of one wave can be predicted and coded together: 3(H-1)+W steps
of batched work instead of H*W single ones. The symbols go into the stream wave by wave, so a wavefront stream
is not a raster stream: the header of each stream says which order it uses.
"""

from __future__ import annotations

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import nn

from fcmbench.entropy.tables import tables_of

KERNEL, PAD = 5, 2


def waves(height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, columns) of the positions of each wave t = 3*row + column, in order."""
    out = []
    for t in range(3 * (height - 1) + width):
        rows = torch.tensor([i for i in range(height) if 0 <= t - 3 * i < width])
        out.append((rows, t - 3 * rows))
    return out


def _gaussian_parameters(model: nn.Module, y_hat: torch.Tensor, params: torch.Tensor, rows: torch.Tensor,
                         cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and means ``[n, M]`` at the wave's positions from the hyperprior and the decoded context."""
    offsets = torch.arange(KERNEL)
    patch_rows = (rows[:, None, None] + offsets[None, :, None]).expand(-1, KERNEL, KERNEL)
    patch_cols = (cols[:, None, None] + offsets[None, None, :]).expand(-1, KERNEL, KERNEL)
    patches = y_hat[0][:, patch_rows, patch_cols].permute(1, 0, 2, 3).reshape(len(rows), -1)  # [n, M*25]
    conv = model.context_prediction
    weight = (conv.weight * conv.mask).reshape(conv.out_channels, -1)
    context = patches @ weight.T + conv.bias
    hyper = params[0][:, rows, cols].T
    gaussian = model.entropy_parameters(torch.cat([hyper, context], dim=1)[:, :, None, None])[:, :, 0, 0]
    scales, means = gaussian.chunk(2, dim=1)
    return scales, means


@torch.inference_mode()
def compress_wavefront(model: nn.Module, y: torch.Tensor, params: torch.Tensor) -> bytes:
    """Code ``y [1, M, H, W]`` given the hyperprior output ``params``; the model's own decoder order is mirrored."""
    _, channels, height, width = y.shape
    y_hat = y.new_zeros((1, channels, height + 2 * PAD, width + 2 * PAD))
    symbols, indexes = [], []
    for rows, cols in waves(height, width):
        scales, means = _gaussian_parameters(model, y_hat, params, rows, cols)
        quantized = model.gaussian_conditional.quantize(y[0][:, rows, cols].T, "symbols", means)
        y_hat[0][:, rows + PAD, cols + PAD] = (quantized + means).T
        symbols += quantized.flatten().tolist()
        indexes += model.gaussian_conditional.build_indexes(scales).flatten().tolist()
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, *tables_of(model.gaussian_conditional))
    return encoder.flush()


@torch.inference_mode()
def decompress_wavefront(model: nn.Module, string: bytes, params: torch.Tensor, height: int,
                         width: int) -> torch.Tensor:
    channels = model.M
    y_hat = params.new_zeros((1, channels, height + 2 * PAD, width + 2 * PAD))  # on the network's device
    decoder = RansDecoder()
    decoder.set_stream(string)
    tables = tables_of(model.gaussian_conditional)
    for rows, cols in waves(height, width):
        scales, means = _gaussian_parameters(model, y_hat, params, rows, cols)
        indexes = model.gaussian_conditional.build_indexes(scales).flatten().tolist()
        values = torch.tensor(decoder.decode_stream(indexes, *tables), dtype=torch.float32, device=y_hat.device)
        y_hat[0][:, rows + PAD, cols + PAD] = (values.reshape(len(rows), channels) + means).T
    return y_hat[:, :, PAD:-PAD, PAD:-PAD]
