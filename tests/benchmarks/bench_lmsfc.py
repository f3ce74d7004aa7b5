"""Context model vs. none: encode and decode time of L-MSFC (the serial raster-scan loop, CompressAI's order
and algorithm, on public API in ``fcmbench/entropy/raster.py``, and our wavefront order for the autoregressive
variant, parallel decoding for the mean-scale one). Random-initialised weights: the timing of the entropy coding
loop does not depend on training.
`.venv/bin/pytest tests/benchmarks/bench_lmsfc.py`."""

import time

import pytest
import torch

from fcmbench.codecs.learned.lmsfc import LMSFCCodec, LMSFCNoContextCodec
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.featureset import FeatureSet
from fcmbench.zoo.checkpoints import build_model, checkpoint_path, save_checkpoint

SIZES = {  # (FPN channels, latent M, P2 size)
    "coco-r50-800x1088": (256, 128, (200, 272)),
    "shapes-256": (64, 32, (64, 64)),
}


def features(channels, p2) -> FeatureSet:
    gen = torch.Generator().manual_seed(0)
    levels, (h, w) = {}, p2
    for name in ("0", "1", "2", "3"):
        levels[name] = torch.randn(channels, h, w, generator=gen).relu()
        h, w = -(-h // 2), -(-w // 2)
    levels["pool"] = torch.nn.functional.max_pool2d(levels["3"][None], 1, 2)[0]
    return FeatureSet(levels, (p2[0] * 4, p2[1] * 4), (p2[0] * 4, p2[1] * 4), {"pool": "3"})


@pytest.fixture(params=list(SIZES), scope="module")
def setup(request, tmp_path_factory):
    channels, latent, p2 = SIZES[request.param]
    root = tmp_path_factory.mktemp("ckpt")
    options = CodecOptions(task_model="bench", checkpoints=root)
    for codec in (LMSFCCodec, LMSFCNoContextCodec):
        torch.manual_seed(0)
        save_checkpoint(build_model(codec.name, channels, latent), checkpoint_path(codec.name, 1, options))
    return options, features(channels, p2)


VARIANTS = {"context-raster": (LMSFCCodec, "raster"), "context-wavefront": (LMSFCCodec, "wavefront"),
            "no-context": (LMSFCNoContextCodec, None)}


def codec_for(options: CodecOptions, variant: str):
    codec_class, order = VARIANTS[variant]
    return codec_class(CodecOptions(task_model=options.task_model, checkpoints=options.checkpoints,
                                    settings={"lmsfc": {"order": order}} if order else {}))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_encode(benchmark, setup, variant):
    options, x = setup
    codec = codec_for(options, variant)
    benchmark.pedantic(codec.encode, args=(x, RatePoint("q1", 1)), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_decode(benchmark, setup, variant):
    options, x = setup
    codec = codec_for(options, variant)
    data = codec.encode(x, RatePoint("q1", 1))
    benchmark.pedantic(codec.decode, args=(data,), rounds=3, warmup_rounds=1)


def best_of(function, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def test_wavefront_against_the_serial_raster_loop(benchmark, setup):
    """Side by side: the context model's decode in raster order (CompressAI's serial loop, as ``entropy/raster.py`` runs
    it) and in wavefront order, and the no-context model's. The autoregressive part is what a context decode takes
    beyond the no-context one (same transforms and hyperprior). Targets: that part >= 3x faster, the whole wavefront
    decode within 1.25x of the no-context one. The orders compute the context in other groupings, so their features
    agree to float noise (each decodes bit-exactly what its own encoder coded: tests/test_lmsfc.py)."""
    options, x = setup
    codecs = {variant: codec_for(options, variant) for variant in VARIANTS}
    data = {variant: codec.encode(x, RatePoint("q1", 1)) for variant, codec in codecs.items()}
    raster, wavefront = (codecs[v].decode(data[v]) for v in ("context-raster", "context-wavefront"))
    assert all(torch.allclose(raster[name], wavefront[name], atol=1e-3, rtol=1e-3) for name in raster)
    seconds = {variant: best_of(lambda v=variant: codecs[v].decode(data[v])) for variant in VARIANTS}
    benchmark.pedantic(codecs["context-wavefront"].decode, args=(data["context-wavefront"],), rounds=1)
    plain = seconds["no-context"]
    serial_ar, wave_ar = seconds["context-raster"] - plain, seconds["context-wavefront"] - plain
    print(f"\ndecode: raster {seconds['context-raster']:.2f} s, wavefront {seconds['context-wavefront']:.2f} s, "
          f"no context {plain:.2f} s; autoregressive part {serial_ar:.2f} s -> {wave_ar:.2f} s "
          f"({serial_ar / max(wave_ar, 1e-9):.1f}x, target >= 3x); wavefront / no context "
          f"{seconds['context-wavefront'] / plain:.2f}x (target <= 1.25x)")
