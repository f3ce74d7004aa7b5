"""LIC-TCM (Liu, Sun, Katto, CVPR 2023) behind the codec interface: ``tcm`` codes the input image,
``tcm-feat`` each FPN level as a tiled image (MFIBA's LIC-TCM anchor). The network is in
:mod:`fcmbench.methods.tcm_net`.

Widths: N = 64 / 96 / 128 build the published small / medium / large layouts (M = 320). Below N = 64 the
network is ours, for the small embedded-default checkpoints: one TCM block per stage, 8-wide heads, and the
z channels, context widths and SWAtten width all 2N, with channel slices of 8 and support of two slices.
"""

from __future__ import annotations

from torch import nn

from fcmbench.methods.image_codec import ImageNetwork, LearnedImageCodec
from fcmbench.methods.mosaic import TiledFeatureCodec
from fcmbench.methods.tcm_net import TCMNet


def build_tcm(N: int = 128, M: int = 320) -> nn.Module:
    if N >= 64:
        return TCMNet(N=N, M=M)
    small = 2 * N
    return TCMNet(config=(1,) * 6, head_dim=(8,) * 6, N=N, M=M, num_slices=max(1, M // 8), max_support_slices=2,
                  hyper_channels=small, cc_widths=(small, small), atten_width=small, atten_head_dim=8,
                  hyper_head_dim=8)


def tcm_from_state(state: dict) -> nn.Module:
    return TCMNet(**TCMNet.config_from_state_dict(state))


TCM = ImageNetwork("LIC-TCM", build_tcm, tcm_from_state, (128, 320))


class TcmCodec(LearnedImageCodec):
    """``tcm``: the image coded with LIC-TCM, then the whole task network on the decoded image."""

    name = "tcm"
    display_name = "LIC-TCM (image)"
    family = TCM
    stream_version = 2  # 1: SWAtten's branches swapped and bottom/right padding (not the reference's network)


class TcmFeatCodec(TiledFeatureCodec):
    """``tcm-feat``: every FPN level tiled into an image and coded with LIC-TCM at one quality."""

    name = "tcm-feat"
    display_name = "LIC-TCM (tiled features)"
    family = TCM
    base = "tcm-feat"
    stream_version = 2  # 1: SWAtten's branches swapped and bottom/right padding (not the reference's network)
