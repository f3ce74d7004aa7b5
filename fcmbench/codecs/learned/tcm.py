"""LIC-TCM (Liu, Sun, Katto, CVPR 2023) behind the codec interface: ``tcm`` codes the input image,
``tcm-feat`` each FPN level as a tiled image (MFIBA's LIC-TCM anchor). The network is in
:mod:`fcmbench.models.tcm`.

Widths: N = 64 / 96 / 128 build the published small / medium / large layouts (M = 320). Below N = 64 the
network is ours, for the small embedded-default checkpoints: one TCM block per stage, 8-wide heads, and the
z channels, context widths and SWAtten width all 2N, with channel slices of 8 and support of two slices.
"""

from __future__ import annotations

from fcmbench.codecs.learned.image_codec import LearnedImageCodec
from fcmbench.codecs.learned.mosaic import TiledFeatureCodec
from fcmbench.zoo.networks import TCM


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
