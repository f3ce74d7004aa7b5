"""ELIC (He et al., CVPR 2022) behind the codec interface: ``elic`` codes the input image, ``elic-feat`` each FPN
level as a tiled image. The networks are in :mod:`fcmbench.models.elic`.
"""

from __future__ import annotations

from fcmbench.codecs.learned.image_codec import LearnedImageCodec
from fcmbench.codecs.learned.mosaic import TiledFeatureCodec
from fcmbench.zoo.networks import ELIC


class ElicCodec(LearnedImageCodec):
    """``elic``: the image coded with ELIC, then the whole task network on the decoded image."""

    name = "elic"
    display_name = "ELIC (image)"
    family = ELIC


class ElicFeatCodec(TiledFeatureCodec):
    """``elic-feat``: every FPN level tiled into an image and coded with ELIC at one quality (MFIBA's anchor)."""

    name = "elic-feat"
    display_name = "ELIC (tiled features)"
    family = ELIC
    base = "elic-feat"
