"""Raster-order decoding of a latent coded with a 5x5 masked context model (CompressAI's ``compress`` order).

CompressAI encodes in raster order through its public ``compress``, but its decoder loop is a private method;
this is the same loop on public API only: per position, the context from the decoded 5x5 neighbourhood, the
Gaussian parameters from it and the hyperprior, then one rANS decode of that position's channels. Every
floating-point step is the encoder's, so the decoder sees the indexes the encoder used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.ans import RansDecoder
from torch import nn

from fcmbench.entropy.tables import tables_of
from fcmbench.entropy.wavefront import KERNEL, PAD


@torch.inference_mode()
def decompress_raster(model: nn.Module, string: bytes, params: torch.Tensor, height: int,
                      width: int) -> torch.Tensor:
    """``y_hat [1, M, height, width]`` from a raster-order y string and the hyperprior output ``params``."""
    conditional, context = model.gaussian_conditional, model.context_prediction
    tables = tables_of(conditional)
    decoder = RansDecoder()
    decoder.set_stream(string)
    y_hat = params.new_zeros((1, model.M, height + 2 * PAD, width + 2 * PAD))  # on the network's device
    weight = context.weight * context.mask
    for row in range(height):
        for col in range(width):
            neighbourhood = y_hat[:, :, row:row + KERNEL, col:col + KERNEL]
            local = F.conv2d(neighbourhood, weight, bias=context.bias)
            hyper = params[:, :, row:row + 1, col:col + 1]
            scales, means = model.entropy_parameters(torch.cat((hyper, local), dim=1)).chunk(2, 1)
            indexes = conditional.build_indexes(scales).flatten().tolist()
            symbols = torch.tensor(decoder.decode_stream(indexes, *tables), dtype=torch.float32, device=y_hat.device)
            y_hat[:, :, row + PAD, col + PAD] = conditional.dequantize(symbols.reshape(1, -1, 1, 1), means)[:, :, 0, 0]
    return y_hat[:, :, PAD:-PAD, PAD:-PAD]
