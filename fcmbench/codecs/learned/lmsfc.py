"""L-MSFC (Kim et al., TCSVT 2024) behind the codec interface: ``lmsfc`` (context model), ``lmsfc-nocm``
(mean-scale hyperprior only) and ``tamsf`` (TA-MSF, the same network trained with the task loss). The networks,
their padding and the levels they code are in :mod:`fcmbench.models.lmsfc`; here: qualities and λ, checkpoints,
the stream layout (quality, P2 size, level names, coding order, y and z strings) and its checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fcmbench.codecs.learned.ladder import QualityLadder
from fcmbench.core.bitstream import Container, Reader, short_string
from fcmbench.core.codec import FeatureCodec, NoSettings, RatePoint
from fcmbench.core.errors import BitstreamError, FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.core.limits import check_decoded, check_level_shape, check_pyramid
from fcmbench.entropy.limits import check_capacity, min_symbol_bits, rans_safe
from fcmbench.entropy.threads import one_thread
from fcmbench.models.lmsfc import (
    PAD_MULTIPLE,
    level_sizes,
    model_levels,
    pad_levels,
    reference_sizes,
    unpad_levels,
)
from fcmbench.zoo.checkpoints import checkpoint_path
from fcmbench.zoo.networks import load

# λ per quality. The reference code has 0.2 for quality 6 (below quality 5: a typo); we use 0.5 to keep it
# monotone. Latent width M per quality as in the reference (context-model variant; no-CM always uses 192).
LAMBDAS = {1: 0.0125, 2: 0.025, 3: 0.125, 4: 0.25, 5: 0.375, 6: 0.5}
ORDERS = ("raster", "wavefront")  # the context model's coding order, recorded in every stream


@dataclass(frozen=True)
class ContextModelSettings:
    """``order``: ``wavefront`` codes the positions of one wave together (fast, its own stream order);
    ``raster`` is CompressAI's position-by-position order, as the reference code writes it."""

    order: Literal["wavefront", "raster"] = "wavefront"


def coded_levels(x: FeatureSet) -> list[str]:
    """The levels L-MSFC codes: all but a last one the task network derives from the one before by max-pool."""
    names = list(x)
    derived = x.derived
    if len(names) > 1 and derived.get(names[-1]) == names[-2]:
        names = names[:-1]
    if len(names) not in (4, 5):
        raise FcmbenchError(f"L-MSFC codes 4 or 5 computed FPN levels; these features have {len(names)} "
                            f"({', '.join(names)})")
    return names


class LMSFCCodec(QualityLadder, FeatureCodec):
    """``lmsfc``: the context-model variant (serial raster-scan decoding)."""

    name = "lmsfc"
    display_name = "L-MSFC"
    trainer = "fcmbench.training.lmsfc:train"
    task_loss = False
    context_model = True
    Settings = ContextModelSettings
    lambdas = LAMBDAS

    def checkpoint(self, quality: int) -> Path:
        return checkpoint_path(self.name, quality, self.options)

    def network(self, quality: int) -> nn.Module:
        return load(self.name, quality, self.options)

    def encode(self, x: FeatureSet, rate: RatePoint) -> bytes:
        quality = int(rate.value)
        model = self.network(quality)
        names = coded_levels(x)
        if len(names) != model_levels(model):
            raise FcmbenchError(f"the {self.name} q{quality} checkpoint codes {model_levels(model)} levels, these "
                                f"features have {len(names)} to code: train one on this task model's features")
        levels = [x[name][None].to(self.options.device) for name in names]
        # the stream records an order even without a context model, where both decode alike
        order = self.settings.order if self.context_model else "wavefront"
        with torch.inference_mode(), one_thread():
            y_string, z_string = model.compress_latent(pad_levels(levels), order)
        p2_h, p2_w = levels[0].shape[-2:]
        header = struct.pack(">B2HBB", quality, p2_h, p2_w, len(names), ORDERS.index(order))
        header += b"".join(short_string(n) for n in x)
        return Container(self.name, x.original_size, x.input_size, header, {"y": y_string, "z": z_string}).to_bytes()

    def decode(self, data: bytes) -> FeatureSet:
        box = Container.from_bytes(data, expected_codec=self.name)
        reader = Reader(box.header)
        quality, p2_h, p2_w, coded, order = reader.unpack(">B2HBB")
        names = []
        while reader.remaining:
            names.append(reader.short_string())
        if (coded not in (4, 5) or len(names) not in (coded, coded + 1) or len(set(names)) != len(names)
                or order >= len(ORDERS) or set(box.segments) != {"y", "z"}):
            raise BitstreamError(f"corrupt bitstream: an {self.name} stream needs 4 or 5 coded levels with distinct "
                                 "names, a known coding order and exactly the y and z segments")
        if quality not in LAMBDAS:
            raise BitstreamError(f"corrupt bitstream: {self.name} quality {quality} is not one of 1..6")
        # the other levels' sizes follow from P2's: checked as the pyramid they make
        check_level_shape(names[0], (1, p2_h, p2_w), box.input_size)
        sizes = level_sizes((p2_h, p2_w), len(names))
        check_pyramid({name: (1, h, w) for name, (h, w) in zip(names, sizes, strict=True)}, box.input_size,
                      f"this {self.name} stream")
        model = self.network(quality)
        padded = reference_sizes((p2_h, p2_w))[0]
        z_shape = torch.Size((padded[0] // PAD_MULTIPLE, padded[1] // PAD_MULTIPLE))
        strings = {}
        for segment, area, entropy_model in (("y", 16 * z_shape.numel(), model.gaussian_conditional),
                                             ("z", z_shape.numel(), model.entropy_bottleneck)):
            symbols = model.M * area
            bits = min_symbol_bits(entropy_model.quantized_cdf, entropy_model.cdf_length)
            check_capacity(symbols, box.segments[segment], bits, f"the {segment} string")
            strings[segment] = rans_safe(box.segments[segment], symbols)
        with torch.inference_mode(), one_thread():
            y_hat = model.decompress_latent([[strings["y"]], [strings["z"]]], z_shape, ORDERS[order])
            recon = unpad_levels(model.g_s(y_hat), (p2_h, p2_w))
        if len(recon) != coded:
            raise FcmbenchError(f"the {self.name} q{quality} checkpoint reconstructs {len(recon)} levels, the "
                                f"stream has {coded}")
        # on the network's device, where the back pass takes them: the features cross to the CPU only for coding
        levels = {name: t[0].float() for name, t in zip(names[:coded], recon, strict=True)}
        if len(names) > coded:  # the pooled level, rebuilt as the task network builds it
            levels[names[-1]] = F.max_pool2d(levels[names[-2]][None], kernel_size=1, stride=2)[0]
        check_decoded(levels, box.input_size)
        return FeatureSet(levels, box.original_size, box.input_size)


class TAMSFCodec(LMSFCCodec):
    """``tamsf``: TA-MSF, the L-MSFC network with RBS+ATT+RB at every encoder stage, trained with the task
    network's detection loss on the reconstructed features."""

    name = "tamsf"
    display_name = "TA-MSF"
    task_loss = True  # trained with the task network's loss (a TrainableTask), unless --no-task-loss


class LMSFCNoContextCodec(LMSFCCodec):
    """``lmsfc-nocm``: mean-scale hyperprior, parallel decoding."""

    name = "lmsfc-nocm"
    display_name = "L-MSFC (no context model)"
    context_model = False
    Settings = NoSettings
