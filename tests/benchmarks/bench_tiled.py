"""Encode and decode time of the tiled-feature codecs and of MFIBA's encoder, which codes every level at every
base quality once per image. Random-initialised networks of the embedded-default sizes (ELIC N=16 M=40,
LIC-TCM N=8 M=32): the time does not depend on training. `.venv/bin/pytest tests/benchmarks/bench_tiled.py`."""

import pytest
import torch

from fcmbench.codecs.learned.elic import ElicFeatCodec
from fcmbench.codecs.learned.mfiba import MfibaElicCodec, RateModel
from fcmbench.codecs.learned.tcm import TcmFeatCodec
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.featureset import FeatureSet
from fcmbench.models.elic import build_elic
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.models.tcm import build_tcm
from fcmbench.zoo.checkpoints import checkpoint_path, save_checkpoint

SIZES = {"shapes-256": (64, (64, 64)), "coco-r50-800x1088": (256, (200, 272))}  # FPN channels, P2 size
NETWORKS = {ElicFeatCodec: lambda: build_elic(16, 40), TcmFeatCodec: lambda: build_tcm(8, 32)}
QUALITIES = (1, 2, 3, 4, 5)


def features(channels: int, p2: tuple[int, int]) -> FeatureSet:
    gen = torch.Generator().manual_seed(0)
    levels, (h, w) = {}, p2
    for name in ("0", "1", "2", "3", "pool"):
        levels[name] = torch.randn(channels, h, w, generator=gen).relu()
        h, w = -(-h // 2), -(-w // 2)
    return FeatureSet(levels, (p2[0] * 4, p2[1] * 4), (p2[0] * 4, p2[1] * 4))


@pytest.fixture(params=list(SIZES), scope="module")
def setup(request, tmp_path_factory):
    channels, p2 = SIZES[request.param]
    options = CodecOptions(task_model="bench", checkpoints=tmp_path_factory.mktemp("ckpt"))
    for codec, build in NETWORKS.items():
        for quality in QUALITIES:
            torch.manual_seed(quality)
            save_checkpoint(build(), checkpoint_path(codec.base, quality, options))
    x = features(channels, p2)
    mfiba = MfibaElicCodec(options)
    RateModel("elic-feat", list(x), list(QUALITIES), [5.0] * 5, [-0.5] * 5, [1.0]).save(
        mfiba.folder() / "rate_model.json")
    save_checkpoint_plain(ImportancePredictor(channels, 5), mfiba.folder() / "importance.pt")
    return options, x


def save_checkpoint_plain(module: torch.nn.Module, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict()}, path)


@pytest.mark.parametrize("codec_class", list(NETWORKS), ids=lambda c: c.name)
def test_encode(benchmark, setup, codec_class):
    options, x = setup
    benchmark.pedantic(codec_class(options).encode, args=(x, RatePoint("q3", 3)), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("codec_class", list(NETWORKS), ids=lambda c: c.name)
def test_decode(benchmark, setup, codec_class):
    options, x = setup
    codec = codec_class(options)
    data = codec.encode(x, RatePoint("q3", 3))
    benchmark.pedantic(codec.decode, args=(data,), rounds=3, warmup_rounds=1)


def test_mfiba_encode_five_lambdas(benchmark, setup):
    options, x = setup
    codec = MfibaElicCodec(options)
    rates = [RatePoint(f"lam{lam}", lam) for lam in (8.0, 4.0, 2.0, 1.0, 0.5)]
    benchmark.pedantic(codec.encode_batch, args=(x, rates), rounds=2, warmup_rounds=1)
