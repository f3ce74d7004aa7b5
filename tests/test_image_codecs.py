"""ELIC and LIC-TCM as image codecs and on tiled features: layout, published checkpoints, bit-exact decoding."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SHARED, needs_shared
from fcmbench.codecs.learned.elic import ElicCodec, ElicFeatCodec
from fcmbench.codecs.learned.image_codec import join_strings, split_strings
from fcmbench.codecs.learned.mosaic import (
    feature_mosaics,
    from_mosaic,
    layout_for,
    level_from_mosaic,
    level_mosaic,
    to_mosaic,
)
from fcmbench.codecs.learned.tcm import TcmCodec, TcmFeatCodec
from fcmbench.core.codec import CodecOptions, ImageCodec, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.models.elic import ElicChandelier, build_elic
from fcmbench.models.tcm import build_tcm
from fcmbench.training.codecs import TrainConfig, image_rate_distortion, train_image_network
from fcmbench.zoo.checkpoints import checkpoint_path, save_checkpoint

REFERENCE = SHARED / "reference" / "checkpoints"
needs_reference = needs_shared("reference/checkpoints")
TINY = {"elic": lambda: build_elic(8, 20), "tcm": lambda: build_tcm(8, 16)}


def features(seed: int = 0) -> FeatureSet:
    gen = torch.Generator().manual_seed(seed)
    levels = {name: torch.randn(8, size, -(-27 // scale), generator=gen)
              for name, size, scale in (("p2", 24, 1), ("p3", 12, 2), ("p4", 6, 4))}  # a pyramid, as FPNs make
    return FeatureSet(levels, (96, 108), (96, 108))


def save_tiny(root: Path, family: str, method: str, quality: int, scope: str) -> None:
    torch.manual_seed(quality)
    path = checkpoint_path(method, quality, CodecOptions(task_model=scope, checkpoints=root), scope)
    save_checkpoint(TINY[family](), path, int8_weights=True)


def test_the_mosaic_is_the_reference_layout():
    layout = layout_for(256, 25, 38)
    assert (layout.rows, layout.cols, layout.tile, layout.size) == (10, 9, (40, 40), (400, 360))
    values = torch.rand(256, 25, 38)
    mosaic = to_mosaic(values, layout)
    # tile i holds channels 3i..3i+2, column-major; the last tile holds channel 255 in R only
    assert torch.equal(mosaic[:, 40:65, 0:38], values[3:6])
    assert torch.equal(mosaic[:, 0:25, 40:78], values[30:33])
    assert torch.equal(mosaic[0, 200:225, 320:358], values[255]) and mosaic[1:, 200:225, 320:358].abs().sum() == 0


def test_a_level_survives_the_mosaic_within_half_an_eight_bit_step():
    level = torch.randn(64, 13, 9) * 5
    layout, low, high, mosaic = level_mosaic(level)
    back = level_from_mosaic(mosaic, layout, low, high)
    assert back.shape == level.shape
    assert (back - level).abs().max() <= (high - low) / 510 + 1e-5


def test_a_training_mosaic_marks_exactly_the_pixels_the_decoder_keeps():
    x = features()
    for (name, level), mosaic in zip(x.items(), feature_mosaics(x), strict=True):
        layout, _, _, image = level_mosaic(level)
        assert torch.equal(mosaic[:3], image)
        assert from_mosaic(mosaic[3:], layout).eq(1).all(), name
        assert mosaic[3:].sum() == level.numel(), name  # padding and empty tile slots weigh 0


class FixedDecoder(torch.nn.Module):
    """A codec that returns a fixed image at 1 bit per pixel: its loss is the distortion against that image."""

    def __init__(self, decoded: torch.Tensor):
        super().__init__()
        self.decoded = decoded

    def forward(self, x: torch.Tensor) -> dict:
        return {"x_hat": self.decoded, "likelihoods": {"y": torch.full_like(x, 0.5 ** (1 / 3))}}


def test_the_training_distortion_ignores_what_the_weight_channels_mask():
    image, decoded = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    decoded[..., 4:, :] = 1.0  # wrong only on the bottom half
    weight = torch.zeros(1, 3, 8, 8)
    weight[..., :4, :] = 1.0
    _, masked = image_rate_distortion(FixedDecoder(decoded), torch.cat([image, weight], 1), 1.0)
    _, whole = image_rate_distortion(FixedDecoder(decoded), image, 1.0)
    assert masked["mse"] == 0 and whole["mse"] == pytest.approx(0.5)
    assert masked["bpp"] == pytest.approx(1.0) and whole["bpp"] == pytest.approx(1.0)
    # the top half wrong instead: the weighted MSE is the MSE of the weighted pixels alone
    _, top = image_rate_distortion(FixedDecoder(1 - decoded), torch.cat([image, weight], 1), 1.0)
    assert top["mse"] == pytest.approx(1.0)


def test_strings_join_and_split():
    strings = [b"", b"a" * 300, b"xyz", bytes(range(200))]
    assert split_strings(join_strings(strings), "test") == strings
    with pytest.raises(FcmbenchError, match="corrupt"):
        split_strings(join_strings(strings)[:3], "test")


@needs_reference
def test_the_published_elic_reimplementation_loads(tmp_path):
    manifest = json.loads((REFERENCE / "elic_chandelier.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {"module." + k: torch.rand(shape, generator=gen) if "float" in dtype else torch.zeros(
        shape, dtype=torch.int32) for k, shape, dtype in manifest["state_dict"]}
    options = CodecOptions(checkpoints=tmp_path)
    path = checkpoint_path("elic", 1, options, "images")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 3}, path)
    network = ElicCodec(options).network(1)
    assert isinstance(network, ElicChandelier)
    theirs = {k.removeprefix("module."): v for k, v in state.items()}
    ours = network.state_dict()
    assert torch.equal(ours["latent_codec.y.channel_context.y2.0.weight"], theirs["cc_transforms.1.0.weight"])
    assert torch.equal(ours["latent_codec.y.latent_codec.y4.entropy_parameters.2.bias"],
                       theirs["ParamAggregation.4.2.bias"])
    assert torch.equal(ours["latent_codec.hyper.h_s.4.weight"], theirs["h_s.4.weight"])


@needs_reference
def test_an_elic_layout_compressai_does_not_have_is_one_clear_error(tmp_path):
    manifest = json.loads((REFERENCE / "elic_jiangweibeta.json").read_text())
    state = {k: torch.zeros(shape) for k, shape, _ in manifest["state_dict"]}
    options = CodecOptions(checkpoints=tmp_path)
    path = checkpoint_path("elic", 2, options, "images")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    with pytest.raises(FcmbenchError, match="is not a ELIC checkpoint that fits"):
        ElicCodec(options).network(2)


@needs_reference
@pytest.mark.parametrize("names", ["state_dict", "state_dict_compressai_1_1_5"])
def test_the_published_tcm_checkpoints_load(tmp_path, names):
    manifest = json.loads((REFERENCE / "tcm_N64.json").read_text())
    gen = torch.Generator().manual_seed(1)
    # training checkpoints hold empty CDF buffers: update() on load rebuilds them
    state = {"module." + k: torch.rand(shape, generator=gen) / 10 if "float" in dtype else
             torch.zeros(0, dtype=torch.int32) for k, shape, dtype in manifest[names]}
    options = CodecOptions(checkpoints=tmp_path)
    path = checkpoint_path("tcm", 3, options, "images")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    network = TcmCodec(options).network(3)
    assert network.N == 64 and sum(p.numel() for p in network.parameters()) == manifest["param_count"]
    assert torch.equal(network.state_dict()["g_s.9.0.weight"], state["module.g_s.9.0.weight"])


@pytest.mark.parametrize(("codec_class", "family"), [(ElicCodec, "elic"), (TcmCodec, "tcm"),
                                                      (ElicFeatCodec, "elic"), (TcmFeatCodec, "tcm")])
def test_cross_process_decoding_is_bit_exact(tmp_path, codec_class, family):
    scope = "images" if issubclass(codec_class, ImageCodec) else "toy"
    save_tiny(tmp_path, family, codec_class.name, 2, scope)
    codec = codec_class(CodecOptions(task_model="toy", checkpoints=tmp_path))
    x = torch.rand(3, 70, 90) if issubclass(codec_class, ImageCodec) else features()
    data = codec.encode(x, RatePoint("q2", 2))
    mine = codec.decode(data)
    if issubclass(codec_class, ImageCodec):
        assert mine.shape == x.shape
    else:
        assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in x.items()}
        assert codec.stream_info(data) == {"qualities": {"p2": 2, "p3": 2, "p4": 2}}
        assert set(codec.bytes_per_level(data)) == {"p2", "p3", "p4", "_header"}
    (tmp_path / "stream.bin").write_bytes(data)
    module = codec_class.__module__
    script = (f"import sys, torch; from fcmbench.core.codec import CodecOptions; "
              f"from {module} import {codec_class.__name__} as C; "
              f"c = C(CodecOptions(task_model='toy', checkpoints=sys.argv[1])); "
              f"x = c.decode(open(sys.argv[2], 'rb').read()); "
              f"torch.save(x if isinstance(x, torch.Tensor) else dict(x.levels), sys.argv[3])")
    threads = "1" if torch.get_num_threads() > 1 else "2"
    subprocess.run([sys.executable, "-c", script, tmp_path, tmp_path / "stream.bin", tmp_path / "other.pt"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    other = torch.load(tmp_path / "other.pt")
    if issubclass(codec_class, ImageCodec):
        assert torch.equal(mine, other)
    else:
        assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_a_damaged_tiled_stream_is_one_clear_error(tmp_path):
    save_tiny(tmp_path, "elic", "elic-feat", 1, "toy")
    codec = ElicFeatCodec(CodecOptions(task_model="toy", checkpoints=tmp_path))
    data = codec.encode(features(), RatePoint("q1", 1))
    with pytest.raises(FcmbenchError, match="corrupt bitstream"):
        codec.decode(data[:-40])


def test_a_missing_base_checkpoint_says_how_to_train(tmp_path):
    codec = TcmFeatCodec(CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path))
    expected = r"(?s)q3\.pt.*fcmbench train tcm-feat --quality 3 --task-model shapes_rcnn"
    with pytest.raises(FcmbenchError, match=expected):
        codec.encode(features(), RatePoint("q3", 3))


@pytest.mark.parametrize("family", ["elic", "tcm"])
def test_a_few_training_steps_lower_the_loss(tmp_path, family):
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 160)
    images = [(ramp[None, :, None] * ramp[None, None, :] * torch.rand(3, 1, 1, generator=gen)).expand(3, 160, 160)
              .contiguous() for _ in range(4)]
    codec = {"elic": ElicCodec, "tcm": TcmCodec}[family]
    sizes = {"elic": (8, 20), "tcm": (8, 16)}[family]
    config = TrainConfig(family, 1, tmp_path / "q1.pt", steps=30, lr=2e-3, validate_every=10, batch_size=2,
                         width=sizes[0], latent=sizes[1], int8_weights=True)
    result = train_image_network(config, codec.family, images, images[:2])
    losses = [h["val_loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / "q1.pt").is_file() and not (tmp_path / "q1.pt.resume").exists()


def test_training_uses_compressais_optimiser_split_and_refuses_an_older_resume_file(tmp_path):
    from fcmbench.training.codecs import fit, optimizers_of

    model = build_elic(8, 20)
    optimizers = optimizers_of(model, 1e-3)
    quantiles = {id(p) for n, p in model.named_parameters() if n.endswith(".quantiles")}
    assert {id(p) for group in optimizers["aux"].param_groups for p in group["params"]} == quantiles
    assert not quantiles & {id(p) for group in optimizers["net"].param_groups for p in group["params"]}
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "q1.pt.resume")  # no format: older
    config = TrainConfig("elic", 1, tmp_path / "q1.pt", steps=5)
    with pytest.raises(FcmbenchError, match="written by an earlier fcmbench.*delete it"):
        fit(model, config, lambda step, generator: (torch.zeros(()), {}), lambda: 0.0)


def test_a_tiled_codec_trains_on_its_weighted_mosaics(tmp_path):
    mosaics = [m for seed in range(3) for m in feature_mosaics(features(seed))]
    config = TrainConfig("elic-feat", 1, tmp_path / "q1.pt", steps=30, lr=2e-3, validate_every=10, batch_size=2,
                         width=8, latent=20, int8_weights=True)
    result = train_image_network(config, ElicFeatCodec.family, mosaics, mosaics[:2])
    losses = [h["val_loss"] for h in result["history"]]
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]


def test_lic_tcm_pads_centred_as_its_reference_evaluation_and_elic_bottom_right():
    from fcmbench.codecs.learned.image_codec import margins

    assert margins(200, 300, 128, centred=True) == (42, 42, 28, 28)
    assert margins(201, 129, 128, centred=True) == (63, 64, 27, 28)  # the odd pixel goes right and bottom
    assert margins(200, 300, 64, centred=False) == (0, 20, 0, 56)
    assert build_tcm(8, 16).pad_centred and not build_elic(8, 20).pad_centred


def test_a_stream_of_the_old_lic_tcm_network_is_refused_by_name():
    """LIC-TCM's streams changed meaning (wiring and padding): version 1 streams are refused, not misdecoded."""
    from fcmbench.core.bitstream import Container

    old = Container("tcm", (64, 64), (64, 64), b"\x03\x00\x40\x00\x40", {"image": b"\x01"}, version=1).to_bytes()
    with pytest.raises(FcmbenchError, match=r"unsupported 'tcm' bitstream version 1: this fcmbench reads version 2"):
        TcmCodec().decode(old)
