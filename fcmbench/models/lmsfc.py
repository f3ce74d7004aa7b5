"""L-MSFC (Kim et al., TCSVT 2024): learned multi-scale feature compression, with and without context model.

P2..P5 are reflect-padded symmetrically (P2 to a multiple of 64, the others to the halved reference size),
fused top-down into one latent at stride 64 (FENet), coded with a hyperprior (+ serial 5x5 autoregressive
context for ``lmsfc``; mean-scale only for ``lmsfc-nocm``), and reconstructed by four level decoders joined by
feature-mixing blocks (DRNet). P6 is the max-pool (kernel 1, stride 2) of the reconstructed P5. Module names
follow the published checkpoints (``g_a.p2Encoder``, ``g_s.fmb23``, ...), so they load as they are.

Channel count and level count are parameters. A task network whose fifth level is computed rather than
pooled (the SSD FPN-lite: five levels of 128 channels) has it coded too: that level has the latent's own
resolution, so it joins the latent through one more stride-1 stage (``p6Encoder``: conv + attention) and comes
back through ``p6Decoder`` (residual block + conv) refined by ``fmb56``. This extension is our design.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from compressai.layers import (
    AttentionBlock,
    MaskedConv2d,
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv3x3,
    subpel_conv3x3,
)
from compressai.models import JointAutoregressiveHierarchicalPriors, MeanScaleHyperprior
from torch import nn

from fcmbench.core.errors import FcmbenchError
from fcmbench.entropy.raster import decompress_raster
from fcmbench.entropy.tables import with_tabled_conditionals
from fcmbench.entropy.wavefront import compress_wavefront, decompress_wavefront

PAD_MULTIPLE = 64  # P2; each following level uses half of the previous reference size


def latent_width(quality: int, context_model: bool) -> int:
    return (128 if quality <= 3 else 192) if context_model else 192


class FeatureFusionEncoder(nn.Module):
    """FENet: encode the larger scale, fuse the next smaller one, down to one latent at P6 resolution."""

    def __init__(self, channels: int, latent: int, task_aware: bool = False, levels: int = 4) -> None:
        super().__init__()
        c, m = channels, latent
        self.p2Encoder = nn.Sequential(ResidualBlockWithStride(c, m), ResidualBlock(m, m))
        self.p3Encoder = nn.Sequential(ResidualBlockWithStride(c + m, m), AttentionBlock(m), ResidualBlock(m, m))
        if task_aware:  # TA-MSF: every stage is RBS + ATT + RB
            self.p4Encoder = nn.Sequential(ResidualBlockWithStride(c + m, m), AttentionBlock(m), ResidualBlock(m, m))
            self.p5Encoder = nn.Sequential(ResidualBlockWithStride(c + m, m), AttentionBlock(m), ResidualBlock(m, m))
        else:
            self.p4Encoder = nn.Sequential(ResidualBlockWithStride(c + m, m), ResidualBlock(m, m))
            self.p5Encoder = nn.Sequential(conv3x3(c + m, m, stride=2), AttentionBlock(m))
        if levels == 5:  # a computed fifth level, at the latent's resolution
            self.p6Encoder = nn.Sequential(conv3x3(c + m, m), AttentionBlock(m))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        p2, p3, p4, p5, *rest = levels
        y = self.p2Encoder(p2)
        y = self.p3Encoder(torch.cat([y, p3], dim=1))
        y = self.p4Encoder(torch.cat([y, p4], dim=1))
        y = self.p5Encoder(torch.cat([y, p5], dim=1))
        return self.p6Encoder(torch.cat([y, rest[0]], dim=1)) if rest else y


class FeatureMixingBlock(nn.Module):
    """Top-down mixing: the finer reconstruction, strided down, refines the coarser one."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels, 5, stride=2, padding=2), nn.LeakyReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.LeakyReLU())

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.cat([self.conv1(high), low], dim=1)) + low


class MultiScaleReconstruction(nn.Module):
    """DRNet: attention on the latent, four level decoders, three feature-mixing blocks."""

    def __init__(self, channels: int, latent: int, levels: int = 4) -> None:
        super().__init__()
        c, m = channels, latent

        def up(out: int = m) -> list[nn.Module]:
            return [ResidualBlock(m, m), ResidualBlockUpsample(m, out)]

        self.decoder_attention = AttentionBlock(m)
        self.p5Decoder = nn.Sequential(*up(c))
        self.p4Decoder = nn.Sequential(*up(), *up(c))
        self.p3Decoder = nn.Sequential(*up(), *up(), AttentionBlock(m), *up(c))
        self.p2Decoder = nn.Sequential(*up(), *up(), AttentionBlock(m), *up(), ResidualBlock(m, m),
                                       subpel_conv3x3(m, c, 2))
        self.fmb23 = FeatureMixingBlock(c)
        self.fmb34 = FeatureMixingBlock(c)
        self.fmb45 = FeatureMixingBlock(c)
        if levels == 5:
            self.p6Decoder = nn.Sequential(ResidualBlock(m, m), conv3x3(m, c))
            self.fmb56 = FeatureMixingBlock(c)

    def forward(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        y_hat = self.decoder_attention(y_hat)
        p2 = self.p2Decoder(y_hat)
        p3 = self.fmb23(p2, self.p3Decoder(y_hat))
        p4 = self.fmb34(p3, self.p4Decoder(y_hat))
        p5 = self.fmb45(p4, self.p5Decoder(y_hat))
        if hasattr(self, "p6Decoder"):
            return [p2, p3, p4, p5, self.fmb56(p5, self.p6Decoder(y_hat))]
        return [p2, p3, p4, p5]


def hyper_analysis(m: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(m, m), nn.LeakyReLU(), conv3x3(m, m), nn.LeakyReLU(), conv3x3(m, m, stride=2),
                         nn.LeakyReLU(), conv3x3(m, m), nn.LeakyReLU(), conv3x3(m, m, stride=2))


def hyper_synthesis(m: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(m, m), nn.LeakyReLU(), subpel_conv3x3(m, m, 2), nn.LeakyReLU(),
                         conv3x3(m, m * 3 // 2), nn.LeakyReLU(), subpel_conv3x3(m * 3 // 2, m * 3 // 2, 2),
                         nn.LeakyReLU(), conv3x3(m * 3 // 2, m * 2))


def build_transforms(model: nn.Module, channels: int, latent: int, task_aware: bool, levels: int) -> None:
    if levels not in (4, 5):
        raise FcmbenchError(f"L-MSFC codes 4 or 5 FPN levels, not {levels}")
    model.g_a = FeatureFusionEncoder(channels, latent, task_aware, levels)
    model.g_s = MultiScaleReconstruction(channels, latent, levels)
    model.h_a = hyper_analysis(latent)
    model.h_s = hyper_synthesis(latent)


class LMSFCContext(JointAutoregressiveHierarchicalPriors):
    """L-MSFC with the joint autoregressive + hyperprior entropy model (also TA-MSF's network)."""

    def __init__(self, channels: int = 256, latent: int = 128, task_aware: bool = False, levels: int = 4) -> None:
        super().__init__(N=latent, M=latent)
        build_transforms(self, channels, latent, task_aware, levels)
        m = latent
        self.context_prediction = MaskedConv2d(m, 2 * m, kernel_size=5, padding=2, stride=1)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(4 * m, m * 10 // 3, 1), nn.LeakyReLU(), nn.Conv2d(m * 10 // 3, m * 8 // 3, 1), nn.LeakyReLU(),
            nn.Conv2d(m * 8 // 3, 2 * m, 1))
        with_tabled_conditionals(self)

    def compress_latent(self, x: torch.Tensor, order: str) -> tuple[bytes, bytes]:
        """(y string, z string); ``order`` is CompressAI's serial ``raster`` loop or ``wavefront``."""
        if order == "raster":
            out = self.compress(x)
            return out["strings"][0][0], out["strings"][1][0]
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        params = self.h_s(self.entropy_bottleneck.decompress(z_strings, z.size()[-2:]))
        return compress_wavefront(self, y, params), z_strings[0]

    def decompress_latent(self, strings: list, shape: torch.Size, order: str) -> torch.Tensor:
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        params = self.h_s(z_hat)
        height, width = z_hat.size(2) * 4, z_hat.size(3) * 4
        if order == "wavefront":
            return decompress_wavefront(self, strings[0][0], params, height, width)
        return decompress_raster(self, strings[0][0], params, height, width)


class LMSFCNoContext(MeanScaleHyperprior):
    """L-MSFC with the mean-scale hyperprior only: fully parallel decoding."""

    def __init__(self, channels: int = 256, latent: int = 192, levels: int = 4) -> None:
        super().__init__(N=latent, M=latent)
        build_transforms(self, channels, latent, task_aware=False, levels=levels)
        with_tabled_conditionals(self)

    def compress_latent(self, x: torch.Tensor, order: str) -> tuple[bytes, bytes]:
        out = self.compress(x)  # no context model: one parallel pass, whatever the order
        return out["strings"][0][0], out["strings"][1][0]

    def decompress_latent(self, strings: list, shape: torch.Size, order: str) -> torch.Tensor:
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(strings[0], indexes, means=means)


def reference_sizes(p2_size: tuple[int, int], count: int = 4) -> list[tuple[int, int]]:
    """Padded sizes: P2 up to a multiple of 64, each next level half of it."""
    padded = tuple(math.ceil(side / PAD_MULTIPLE) * PAD_MULTIPLE for side in p2_size)
    return [(padded[0] >> k, padded[1] >> k) for k in range(count)]


def level_sizes(p2_size: tuple[int, int], count: int = 4) -> list[tuple[int, int]]:
    """Unpadded sizes the network produced: each level is ceil(previous / 2)."""
    sizes = [tuple(p2_size)]
    for _ in range(count - 1):
        sizes.append(tuple(math.ceil(side / 2) for side in sizes[-1]))
    return sizes


def pad_levels(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    targets = reference_sizes(tuple(levels[0].shape[-2:]), len(levels))
    padded = []
    for tensor, (th, tw) in zip(levels, targets, strict=True):
        h, w = tensor.shape[-2:]
        top, left = (th - h) // 2, (tw - w) // 2
        pads = (left, tw - w - left, top, th - h - top)
        # reflect as the reference does; it cannot pad a side by its own length or more (tiny inputs)
        mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
        padded.append(F.pad(tensor, pads, mode=mode))
    return padded


def unpad_levels(levels: list[torch.Tensor], p2_size: tuple[int, int]) -> list[torch.Tensor]:
    out = []
    for tensor, (h, w) in zip(levels, level_sizes(p2_size, len(levels)), strict=True):
        th, tw = tensor.shape[-2:]
        top, left = (th - h) // 2, (tw - w) // 2
        out.append(tensor[..., top : top + h, left : left + w])
    return out


def model_levels(model: nn.Module) -> int:
    return 5 if hasattr(model.g_a, "p6Encoder") else 4
