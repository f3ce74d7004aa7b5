"""On-demand speed benchmarks: `.venv/bin/pytest tests/benchmarks/bench_*.py`."""

import pytest
import torch

from fcmbench.codec import RatePoint
from fcmbench.featureset import FeatureSet
from fcmbench.methods.quant import QuantCodec
from fcmbench.methods.raw import RawCodec

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
