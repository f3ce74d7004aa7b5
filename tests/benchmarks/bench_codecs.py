"""On-demand speed benchmarks: `.venv/bin/pytest tests/benchmarks/bench_*.py`."""

import time

import pytest
import torch

from fcmbench.codecs.quant import QuantCodec
from fcmbench.codecs.raw import RawCodec
from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions, ImageCodec, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet

FASTER_VVC = {"vtm-feature": {"preset": "faster"}, "vtm-image": {"preset": "faster"}}  # VVenC preset faster

# P2..P6 of a torchvision R-CNN on a 640x480 COCO image resized to 800x1067 (256 channels).
COCO_LEVELS = {"0": (256, 200, 272), "1": (256, 100, 136), "2": (256, 50, 68), "3": (256, 25, 34),
               "pool": (256, 13, 17)}
SHAPES_LEVELS = {"0": (64, 64, 64), "1": (64, 32, 32), "2": (64, 16, 16), "3": (64, 8, 8), "pool": (64, 4, 4)}


def features(levels) -> FeatureSet:
    gen = torch.Generator().manual_seed(0)
    # ReLU-like, mostly small values: closer to real FPN statistics than a plain Gaussian
    return FeatureSet({k: torch.randn(s, generator=gen).clamp(min=0) ** 2 for k, s in levels.items()}, (480, 640),
                      (800, 1067))


@pytest.mark.parametrize("levels", [COCO_LEVELS, SHAPES_LEVELS], ids=["coco-r50", "shapes"])
@pytest.mark.parametrize("bits", [2, 8])
def test_quant_encode(benchmark, levels, bits):
    x, codec = features(levels), QuantCodec()
    benchmark(codec.encode, x, RatePoint(f"{bits}bit", bits))


@pytest.mark.parametrize("levels", [COCO_LEVELS, SHAPES_LEVELS], ids=["coco-r50", "shapes"])
def test_quant_decode(benchmark, levels):
    x, codec = features(levels), QuantCodec()
    data = codec.encode(x, RatePoint("8bit", 8))
    benchmark(codec.decode, data)


def test_raw_round_trip_coco(benchmark):
    x, codec = features(COCO_LEVELS), RawCodec()
    benchmark(lambda: codec.decode(codec.encode(x, codec.rate_points()[0])))


# Every registered codec at its middle rate point, on one image's worth of input: encode and decode seconds.
# Learned feature codecs use their shipped shapes_rcnn checkpoints; on the COCO-sized levels (256 channels) only
# the codecs whose networks do not depend on the channel count (the tiled ones, the anchors) can run.
IMAGE_SIZES = {"shapes": (256, 256), "coco-r50": (480, 640)}


def codec_input(codec, size: str):
    if isinstance(codec, ImageCodec):
        return torch.rand(3, *IMAGE_SIZES[size], generator=torch.Generator().manual_seed(0))
    if size == "coco-r50":
        return features(COCO_LEVELS)
    return FeatureSet(features(SHAPES_LEVELS).levels, (256, 256), (256, 256))


@pytest.mark.parametrize("size", list(IMAGE_SIZES))
@pytest.mark.parametrize("method", registry.methods.names())
def test_every_codec_encode_decode(benchmark, method, size):
    codec = registry.methods.get(method)(CodecOptions(task_model="shapes_rcnn", settings=FASTER_VVC))
    points = codec.rate_points()
    rate = points[len(points) // 2]
    x = codec_input(codec, size)
    if not isinstance(codec, ImageCodec):
        x.derived = {"pool": "3"}
    try:
        codec.ensure_ready([rate])
        start = time.perf_counter()
        data = codec.encode(x, rate)
        encode_s = time.perf_counter() - start
    except FcmbenchError as err:
        pytest.skip(f"{method} cannot code {size} input here: {str(err)[:120]}")
    except RuntimeError:  # its network was built for the shipped task model's 64 channels, not 256
        pytest.skip(f"{method}: no checkpoint for 256-channel levels here")
    start = time.perf_counter()
    benchmark.pedantic(codec.decode, args=(data,), rounds=1, iterations=1)
    decode_s = time.perf_counter() - start
    print(f"\n{method} {rate.label} on {size}: encode {encode_s:.3f} s, decode {decode_s:.3f} s, "
          f"{8 * len(data) / (IMAGE_SIZES[size][0] * IMAGE_SIZES[size][1]):.3f} bpp")
