"""LIC-TCM (Liu, Sun, Katto, CVPR 2023): learned image compression with mixed Transformer-CNN blocks.

The network, written from our notes on the paper and its reference code and built from CompressAI 1.2.8
layers and entropy models:

- ``g_a``/``g_s``: three stages of residual blocks with stride (or sub-pixel upsampling) and TCM blocks, which
  split the features in a CNN half (a residual block) and a Transformer half (a Swin block, W-MSA and SW-MSA
  alternating, 8x8 windows), then merge them with a 1x1 convolution and a skip;
- a hyperprior ``h_a`` -> ``z`` at 1/64 (factorized ``entropy_bottleneck``) with separate ``h_mean_s`` and
  ``h_scale_s`` (TCM blocks with 4x4 windows);
- a channel-wise autoregressive Gaussian model over ``num_slices`` slices of ``y``, whose mean and scale
  transforms each start with a SWAtten block (Swin attention on a squeezed width), plus latent residual
  prediction (LRP).

Key names and shapes are those of the published checkpoints (``N`` = 64/96/128 for small/medium/large,
``M`` = 320), so they load as they are. Inputs must be padded to ``pad_multiple`` = 128 by the caller (centred,
as the reference evaluates: ``pad_centred``): the Swin windows must tile every feature map (8x8 at 1/16 in
SWAtten, 4x4 at 1/32 in the hyper-synthesis).

Widths that are ours: the reference hard-codes the z channels (192), the context transforms' hidden widths
(224, 128) and the SWAtten inner width (128) whatever ``N`` is; here they are the defaults of
``hyper_channels``, ``cc_widths`` and ``atten_width``, and so are the head widths of the hyperprior (32) and
SWAtten (16) blocks (``hyper_head_dim``, ``atten_head_dim``). Reduced values (for tiny embedded networks) are
our choice; at the defaults the layout is the reference one for every ``N``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import (
    AttentionBlock,
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv1x1,
    conv3x3,
    subpel_conv3x3,
)
from compressai.models import CompressionModel
from compressai.ops import quantize_ste
from torch import Tensor, nn

from fcmbench.entropy.tables import TabledGaussianConditional

WINDOW = 8  # Swin window of the main transforms and of SWAtten
HYPER_WINDOW = 4  # Swin window of the hyper-analysis and hyper-syntheses


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, optionally shifted by half a window.

    ``relative_position_params[h, dy + w - 1, dx + w - 1]`` is the bias head ``h`` adds for a key ``dy`` rows and
    ``dx`` columns before the query (query minus key), the usual Swin convention.
    """

    def __init__(self, dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        if head_dim > dim or dim % head_dim:
            raise ValueError(f"head width {head_dim} does not divide the block width {dim}")
        self.heads, self.head_dim, self.window, self.shifted = dim // head_dim, head_dim, window, shifted
        self.relative_position_params = nn.Parameter(torch.zeros(self.heads, 2 * window - 1, 2 * window - 1))
        nn.init.trunc_normal_(self.relative_position_params, std=0.02)
        self.embedding_layer = nn.Linear(dim, 3 * dim)  # q, k, v, each heads x head_dim
        self.linear = nn.Linear(dim, dim)
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        dy = rows[:, None] - rows[None, :] + window - 1
        dx = cols[:, None] - cols[None, :] + window - 1
        # not persistent: rebuilt from the window size, absent from the checkpoints
        self.register_buffer("relative_index", dy * (2 * window - 1) + dx, persistent=False)

    def _partition(self, x: Tensor) -> Tensor:
        """[B, H, W, C] -> [B, windows, w*w, C], windows and the tokens inside each in raster order."""
        b, h, w, c = x.shape
        s = self.window
        x = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // s) * (w // s), s * s, c)

    def _mask(self, height: int, width: int, device: torch.device) -> Tensor:
        """True where query and key come from different regions of the rolled map: [windows, w*w, w*w]."""
        s, half = self.window, self.window // 2
        rows = torch.zeros(height, dtype=torch.long, device=device)
        rows[height - s:height - half], rows[height - half:] = 1, 2
        cols = torch.zeros(width, dtype=torch.long, device=device)
        cols[width - s:width - half], cols[width - half:] = 1, 2
        region = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]
        region = self._partition(region)[0, :, :, 0]
        return region[:, :, None] != region[:, None, :]

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        s = self.window
        if h % s or w % s:
            raise ValueError(f"a {h}x{w} feature map is not tiled by {s}x{s} windows: pad the input")
        if self.shifted:
            x = torch.roll(x, shifts=(-(s // 2), -(s // 2)), dims=(1, 2))
        windows = self._partition(x)
        n = windows.shape[1]
        qkv = self.embedding_layer(windows).view(b, n, s * s, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5)  # each [B, heads, windows, w*w, head_dim]
        sim = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        bias = self.relative_position_params.flatten(1)[:, self.relative_index]  # [heads, w*w, w*w]
        sim = sim + bias[None, :, None]
        if self.shifted:
            sim = sim.masked_fill(self._mask(h, w, x.device), float("-inf"))
        out = sim.softmax(dim=-1) @ v
        out = self.linear(out.permute(0, 2, 3, 1, 4).reshape(b, n, s * s, c))
        out = out.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shifted:
            out = torch.roll(out, shifts=(s // 2, s // 2), dims=(1, 2))
        return out


class SwinBlock(nn.Module):
    """Pre-norm Swin Transformer block on channels-last maps: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.msa = WindowAttention(dim, head_dim, window, shifted)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.msa(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ConvTransBlock(nn.Module):
    """TCM block on ``2 * dim`` channels: 1x1 conv, a CNN half and a Swin half in parallel, 1x1 conv, skip."""

    def __init__(self, dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.dim = dim
        # registration order = the checkpoints' key order
        self.trans_block = SwinBlock(dim, head_dim, window, shifted)
        self.conv1_1 = conv1x1(2 * dim, 2 * dim)
        self.conv1_2 = conv1x1(2 * dim, 2 * dim)
        self.conv_block = ResidualBlock(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        conv_x, trans_x = torch.split(self.conv1_1(x), (self.dim, self.dim), dim=1)
        conv_x = self.conv_block(conv_x) + conv_x  # the reference adds the input once more
        trans_x = self.trans_block(trans_x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv1_2(torch.cat((conv_x, trans_x), dim=1))


class SwinPair(nn.Module):
    """A W-MSA then an SW-MSA Swin block on a [B, C, H, W] map (SWAtten's non-local branch)."""

    def __init__(self, dim: int, head_dim: int, window: int) -> None:
        super().__init__()
        self.block_1 = SwinBlock(dim, head_dim, window, shifted=False)
        self.block_2 = SwinBlock(dim, head_dim, window, shifted=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class SWAtten(AttentionBlock):
    """CompressAI's attention block on a squeezed width ``inner``, with Swin blocks as its non-local part.

    1x1 in -> ``inner``; out = conv_a(x) * sigmoid(conv_b(swin(x))) + x; 1x1 ``inner`` -> in. The Swin pair
    feeds the sigmoid mask branch ``conv_b``, as in the reference code (``models/tcm.py`` of jmliu206/LIC_TCM);
    the parity tests against ``../shared/reference/parity/lic-tcm`` fail if the branches are swapped.
    """

    def __init__(self, channels: int, inner: int, head_dim: int, window: int) -> None:
        super().__init__(inner)  # conv_a, conv_b
        self.non_local_block = SwinPair(inner, head_dim, window)
        self.in_conv = conv1x1(channels, inner)
        self.out_conv = conv1x1(inner, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_conv(x)
        a = self.conv_a(x)
        b = self.conv_b(self.non_local_block(x))
        return self.out_conv(a * torch.sigmoid(b) + x)


def _tcm_stage(dim: int, blocks: int, head_dim: int, window: int) -> list[nn.Module]:
    # W-MSA on even block indices, SW-MSA on odd ones
    return [ConvTransBlock(dim, head_dim, window, shifted=bool(i % 2)) for i in range(blocks)]


def _context_transform(channels: int, widths: Sequence[int], out: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(channels, widths[0]), nn.GELU(), conv3x3(widths[0], widths[1]), nn.GELU(),
                         conv3x3(widths[1], out))


class TCMNet(CompressionModel):
    """LIC-TCM with a channel-wise autoregressive entropy model; inputs padded to ``pad_multiple``."""

    pad_multiple = 128
    pad_centred = True  # the reference's eval.py pads centred

    def __init__(self, config: Sequence[int] = (2, 2, 2, 2, 2, 2), head_dim: Sequence[int] = (8, 16, 32, 32, 16, 8),
                 drop_path_rate: float = 0.0, N: int = 128, M: int = 320, num_slices: int = 5,
                 max_support_slices: int = 5, *, hyper_channels: int = 192, cc_widths: Sequence[int] = (224, 128),
                 atten_width: int = 128, atten_head_dim: int = 16, hyper_head_dim: int = 32) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError("drop path is not implemented: TCMNet needs drop_path_rate=0")
        if len(config) != 6 or len(head_dim) != 6:
            raise ValueError("config and head_dim need six entries: three analysis and three synthesis stages")
        if M % num_slices:
            raise ValueError(f"M={M} does not split into {num_slices} equal slices")
        self.N, self.M, self.num_slices, self.max_support_slices = N, M, num_slices, max_support_slices
        self.slice = M // num_slices
        dim = 2 * N
        # registered first: the checkpoints list it first
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)

        self.g_a = nn.Sequential(
            ResidualBlockWithStride(3, dim), *_tcm_stage(N, config[0], head_dim[0], WINDOW),
            ResidualBlockWithStride(dim, dim), *_tcm_stage(N, config[1], head_dim[1], WINDOW),
            ResidualBlockWithStride(dim, dim), *_tcm_stage(N, config[2], head_dim[2], WINDOW),
            conv3x3(dim, M, stride=2))
        self.g_s = nn.Sequential(
            ResidualBlockUpsample(M, dim), *_tcm_stage(N, config[3], head_dim[3], WINDOW),
            ResidualBlockUpsample(dim, dim), *_tcm_stage(N, config[4], head_dim[4], WINDOW),
            ResidualBlockUpsample(dim, dim), *_tcm_stage(N, config[5], head_dim[5], WINDOW),
            subpel_conv3x3(dim, 3, 2))
        self.h_a = nn.Sequential(
            ResidualBlockWithStride(M, dim), *_tcm_stage(N, config[0], hyper_head_dim, HYPER_WINDOW),
            conv3x3(dim, hyper_channels, stride=2))
        self.h_mean_s = nn.Sequential(
            ResidualBlockUpsample(hyper_channels, dim), *_tcm_stage(N, config[3], hyper_head_dim, HYPER_WINDOW),
            subpel_conv3x3(dim, M, 2))
        self.h_scale_s = nn.Sequential(
            ResidualBlockUpsample(hyper_channels, dim), *_tcm_stage(N, config[3], hyper_head_dim, HYPER_WINDOW),
            subpel_conv3x3(dim, M, 2))

        supports = [min(k, max_support_slices) for k in range(num_slices)]
        self.atten_mean = nn.ModuleList(
            nn.Sequential(SWAtten(M + self.slice * s, atten_width, atten_head_dim, WINDOW)) for s in supports)
        self.atten_scale = nn.ModuleList(
            nn.Sequential(SWAtten(M + self.slice * s, atten_width, atten_head_dim, WINDOW)) for s in supports)
        self.cc_mean_transforms = nn.ModuleList(
            _context_transform(M + self.slice * s, cc_widths, self.slice) for s in supports)
        self.cc_scale_transforms = nn.ModuleList(
            _context_transform(M + self.slice * s, cc_widths, self.slice) for s in supports)
        self.lrp_transforms = nn.ModuleList(
            _context_transform(M + self.slice * (s + 1), cc_widths, self.slice) for s in supports)
        self.gaussian_conditional = TabledGaussianConditional(None)

    @staticmethod
    def config_from_state_dict(state: dict[str, Tensor]) -> dict[str, Any]:
        """Constructor arguments of the network these weights (ours or published, any entropy-bottleneck naming)
        are for. ``max_support_slices`` comes back as the largest support used, which builds the same network."""
        def indexed(pattern: str) -> list[int]:
            return sorted({int(m.group(1)) for key in state if (m := re.fullmatch(pattern, key))})

        def stages(prefix: str) -> tuple[list[int], list[int]]:
            """Blocks per stage and head width of each stage's first TCM block."""
            tcm = indexed(prefix + r"\.(\d+)\.conv1_1\.weight")
            last = max(indexed(prefix + r"\.(\d+)\..*"))
            counts, heads, run = [], [], 0
            for i in range(1, last + 1):
                if i in tcm:
                    if run == 0:
                        heads.append(state[f"{prefix}.{i}.trans_block.msa.relative_position_params"].shape[0])
                    run += 1
                else:
                    counts.append(run)
                    if run == 0:
                        heads.append(1)
                    run = 0
            return counts, heads

        n = state["g_a.0.conv1.weight"].shape[0] // 2
        last_a = max(indexed(r"g_a\.(\d+)\..*"))
        m = state[f"g_a.{last_a}.weight"].shape[0]
        counts_a, heads_a = stages("g_a")
        counts_s, heads_s = stages("g_s")
        slices = indexed(r"cc_mean_transforms\.(\d+)\.0\.weight")
        width = m // len(slices)
        support = max((state[f"atten_mean.{k}.0.in_conv.weight"].shape[1] - m) // width for k in slices)
        atten = state["atten_mean.0.0.in_conv.weight"].shape[0]
        atten_heads = state["atten_mean.0.0.non_local_block.block_1.msa.relative_position_params"].shape[0]
        hyper = [k for k in state if re.fullmatch(r"h_a\.\d+\.trans_block\.msa\.relative_position_params", k)]
        return {
            "config": counts_a + counts_s, "head_dim": [n // h for h in heads_a + heads_s], "N": n, "M": m,
            "num_slices": len(slices), "max_support_slices": support,
            "hyper_channels": state["h_a." + str(max(indexed(r"h_a\.(\d+)\..*"))) + ".weight"].shape[0],
            "cc_widths": (state["cc_mean_transforms.0.0.weight"].shape[0],
                          state["cc_mean_transforms.0.2.weight"].shape[0]),
            "atten_width": atten, "atten_head_dim": atten // atten_heads,
            "hyper_head_dim": n // state[hyper[0]].shape[0] if hyper else 32,
        }

    def stream_shape(self, height: int, width: int) -> tuple[int, int]:
        """What ``decompress`` needs besides the strings for a padded ``height`` x ``width`` input: z's size."""
        if height % self.pad_multiple or width % self.pad_multiple:
            raise ValueError(f"{height}x{width} is not a multiple of {self.pad_multiple}: pad the input")
        return height // 64, width // 64

    def _check_size(self, x: Tensor) -> None:
        height, width = x.shape[-2:]
        if height % self.pad_multiple or width % self.pad_multiple:
            raise ValueError(f"a {height}x{width} input must be padded to a multiple of {self.pad_multiple}")

    def _hyper_synthesis(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        return self.h_mean_s(z_hat), self.h_scale_s(z_hat)

    def _entropy_parameters(self, k: int, latent_means: Tensor, latent_scales: Tensor,
                            y_hat_slices: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Slice ``k``'s mean, scale and the (attended) mean support that LRP reuses."""
        support = y_hat_slices[:self.max_support_slices]
        mean_support = self.atten_mean[k](torch.cat([latent_means, *support], dim=1))
        mu = self.cc_mean_transforms[k](mean_support)
        scale_support = self.atten_scale[k](torch.cat([latent_scales, *support], dim=1))
        scale = self.cc_scale_transforms[k](scale_support)
        return mu, scale, mean_support

    def _refine(self, k: int, mean_support: Tensor, y_hat_slice: Tensor) -> Tensor:
        """Latent residual prediction: add a bounded correction for the quantization error."""
        lrp = self.lrp_transforms[k](torch.cat([mean_support, y_hat_slice], dim=1))
        return y_hat_slice + 0.5 * torch.tanh(lrp)

    def forward(self, x: Tensor) -> dict[str, Any]:
        self._check_size(x)
        y = self.g_a(x)
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        # straight-through rounding around the medians: the decoder sees what it will see when coding
        medians = self.entropy_bottleneck.quantiles[:, :, 1:2]  # [C, 1, 1]: each channel's median
        z_hat = quantize_ste(z - medians) + medians
        latent_means, latent_scales = self._hyper_synthesis(z_hat)

        y_hat_slices, y_likelihoods = [], []
        for k, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            mu, scale, mean_support = self._entropy_parameters(k, latent_means, latent_scales, y_hat_slices)
            _, likelihoods = self.gaussian_conditional(y_slice, scale, mu)
            y_likelihoods.append(likelihoods)
            y_hat_slice = quantize_ste(y_slice - mu) + mu
            y_hat_slices.append(self._refine(k, mean_support, y_hat_slice))
        x_hat = self.g_s(torch.cat(y_hat_slices, dim=1))
        return {"x_hat": x_hat, "likelihoods": {"y": torch.cat(y_likelihoods, dim=1), "z": z_likelihoods}}

    def compress(self, x: Tensor) -> dict[str, Any]:
        self._check_size(x)
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        latent_means, latent_scales = self._hyper_synthesis(z_hat)

        batch = x.shape[0]
        symbols: list[list[int]] = [[] for _ in range(batch)]
        indexes: list[list[int]] = [[] for _ in range(batch)]
        y_hat_slices: list[Tensor] = []
        for k, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            mu, scale, mean_support = self._entropy_parameters(k, latent_means, latent_scales, y_hat_slices)
            index = self.gaussian_conditional.build_indexes(scale)
            y_q = self.gaussian_conditional.quantize(y_slice, "symbols", mu)
            for i in range(batch):
                symbols[i].extend(y_q[i].reshape(-1).tolist())
                indexes[i].extend(index[i].reshape(-1).tolist())
            # the decoder rebuilds the slice as dequantize(symbols, mu): the same float operation
            y_hat_slices.append(self._refine(k, mean_support, self.gaussian_conditional.dequantize(y_q, mu)))

        cdf, lengths, offsets = self.gaussian_conditional.coding_tables()
        y_strings = []
        for i in range(batch):
            encoder = BufferedRansEncoder()
            encoder.encode_with_indexes(symbols[i], indexes[i], cdf, lengths, offsets)
            y_strings.append(encoder.flush())
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings: list[list[bytes]], shape: Sequence[int]) -> dict[str, Tensor]:
        if len(strings) != 2 or len(strings[0]) != len(strings[1]):
            raise ValueError("TCMNet decodes [y_strings, z_strings], one string of each per image")
        z_hat = self.entropy_bottleneck.decompress(strings[1], tuple(shape))
        latent_means, latent_scales = self._hyper_synthesis(z_hat)
        batch, height, width = z_hat.shape[0], z_hat.shape[2] * 4, z_hat.shape[3] * 4

        cdf, lengths, offsets = self.gaussian_conditional.coding_tables()
        decoders = []
        for string in strings[0]:
            decoder = RansDecoder()
            decoder.set_stream(string)
            decoders.append(decoder)
        y_hat_slices: list[Tensor] = []
        for k in range(self.num_slices):
            mu, scale, mean_support = self._entropy_parameters(k, latent_means, latent_scales, y_hat_slices)
            index = self.gaussian_conditional.build_indexes(scale)
            values = [decoders[i].decode_stream(index[i].reshape(-1).tolist(), cdf, lengths, offsets)
                      for i in range(batch)]
            y_q = torch.tensor(values, dtype=torch.int32, device=mu.device).view(batch, self.slice, height, width)
            y_hat_slices.append(self._refine(k, mean_support, self.gaussian_conditional.dequantize(y_q, mu)))
        x_hat = self.g_s(torch.cat(y_hat_slices, dim=1)).clamp_(0, 1)
        return {"x_hat": x_hat}


__all__ = ["ConvTransBlock", "SWAtten", "SwinBlock", "TCMNet", "WindowAttention"]


def build_tcm(N: int = 128, M: int = 320) -> nn.Module:
    if N >= 64:
        return TCMNet(N=N, M=M)
    small = 2 * N
    return TCMNet(config=(1,) * 6, head_dim=(8,) * 6, N=N, M=M, num_slices=max(1, M // 8), max_support_slices=2,
                  hyper_channels=small, cc_widths=(small, small), atten_width=small, atten_head_dim=8,
                  hyper_head_dim=8)


def tcm_from_state(state: dict) -> nn.Module:
    return TCMNet(**TCMNet.config_from_state_dict(state))
