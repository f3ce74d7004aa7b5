"""ELIC (He et al., CVPR 2022): CompressAI's ``Elic2022Official`` (channel context on all earlier groups) and
``Elic2022Chandelier`` (first + latest group; the layout of the public re-implementation's checkpoints).

``elic`` codes the input image. ``elic-feat`` (in :mod:`fcmbench.codecs.learned.mosaic`) codes each FPN level as a
tiled image with the same networks. Sizes N, M are parameters (reference 192, 320); the uneven channel groups
keep the reference proportions [16, 16, 32, 64, 192]/320. The channel-context widths (224, 128 in the
reference) are parameters too: reduced widths are ours, for the small embedded-default checkpoints.
"""

from __future__ import annotations

import torch
from compressai.models import Elic2022Chandelier, Elic2022Official
from compressai.models.utils import conv
from torch import nn

from fcmbench.core.errors import FcmbenchError
from fcmbench.entropy.tables import with_tabled_conditionals

REFERENCE_CONTEXT = (224, 128)


def elic_groups(latent: int) -> list[int]:
    """The reference's uneven groups, scaled to ``latent`` channels."""
    if latent == 320:
        return [16, 16, 32, 64, 192]
    if latent % 20 or latent < 20:
        raise FcmbenchError(f"ELIC needs a latent width that is a multiple of 20, not {latent}")
    small = [latent // 20, latent // 20, latent // 10, latent // 5]
    return [*small, latent - sum(small)]


def channel_context(inputs: int, wide: int, narrow: int, out: int) -> nn.Sequential:
    return nn.Sequential(conv(inputs, wide, kernel_size=5, stride=1), nn.ReLU(inplace=True),
                         conv(wide, narrow, kernel_size=5, stride=1), nn.ReLU(inplace=True),
                         conv(narrow, out, kernel_size=5, stride=1))


class ElicStream:
    """What both ELIC variants add for the codec: padding rule, decoder shapes, narrower channel context."""

    pad_multiple = 64
    pad_centred = False  # the reference pads its test images at the bottom and right
    groups: list[int]

    def narrow_context(self, context: tuple[int, int], all_groups: bool) -> None:
        if tuple(context) == REFERENCE_CONTEXT:
            return
        g = self.groups
        self.latent_codec["y"].channel_context = nn.ModuleDict({
            f"y{k}": channel_context(sum(g[:k]) if all_groups else g[0] + (k > 1) * g[k - 1], *context, 2 * g[k])
            for k in range(1, len(g))})

    def stream_shape(self, height: int, width: int) -> dict:
        return {"y": [torch.Size((g, height // 16, width // 16)) for g in self.groups],
                "hyper": torch.Size((height // 64, width // 64))}


class ElicOfficial(ElicStream, Elic2022Official):
    def __init__(self, N: int = 192, M: int = 320, context: tuple[int, int] = REFERENCE_CONTEXT) -> None:
        super().__init__(N=N, M=M, groups=elic_groups(M))
        self.N, self.M = N, M
        self.narrow_context(context, all_groups=True)
        with_tabled_conditionals(self)


class ElicChandelier(ElicStream, Elic2022Chandelier):
    def __init__(self, N: int = 192, M: int = 320, context: tuple[int, int] = REFERENCE_CONTEXT) -> None:
        super().__init__(N=N, M=M, groups=elic_groups(M))
        self.N, self.M = N, M
        self.narrow_context(context, all_groups=False)
        with_tabled_conditionals(self)


VARIANTS = {"official": ElicOfficial, "chandelier": ElicChandelier}


def build_elic(N: int = 192, M: int = 320, variant: str = "official",
               context: tuple[int, int] | None = None) -> nn.Module:
    """``context`` defaults to the reference widths scaled by N/192 (ours below N = 192)."""
    if context is None:
        context = tuple(max(8, round(width * N / 192)) for width in REFERENCE_CONTEXT)
    if variant not in VARIANTS:
        raise FcmbenchError(f"unknown ELIC variant {variant!r}: use one of {', '.join(VARIANTS)}")
    return VARIANTS[variant](N, M, context)


def elic_from_state(state: dict) -> nn.Module:
    """A network sized for these weights: N, M, the variant and the context widths are read from them."""
    n, m = state["g_a.0.weight"].shape[0], state["g_a.13.weight"].shape[0]
    first = state["latent_codec.y.channel_context.y1.0.weight"]
    narrow = state["latent_codec.y.channel_context.y1.2.weight"].shape[0]
    groups = elic_groups(m)
    third_inputs = state["latent_codec.y.channel_context.y3.0.weight"].shape[1]
    variant = "official" if third_inputs == sum(groups[:3]) else "chandelier"
    return build_elic(int(n), int(m), variant, (int(first.shape[0]), int(narrow)))
