"""L-MSFC: published layout, bit-exact decoding in another process, training that lowers the loss."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import SHARED, needs_shared
from fcmbench.codecs.learned.lmsfc import LMSFCCodec, LMSFCNoContextCodec
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.entropy.wavefront import waves
from fcmbench.models.lmsfc import LMSFCContext, LMSFCNoContext
from fcmbench.training.codecs import TrainConfig, train_codec
from fcmbench.zoo.checkpoints import build_model, checkpoint_path, load_weights, save_checkpoint

REFERENCE = SHARED / "reference" / "checkpoints"
needs_reference = needs_shared("reference/checkpoints")


def fpn(seed: int, channels: int = 8, p2=(20, 28), computed: int = 4) -> FeatureSet:
    """``computed`` levels, then (for 4) a pooled P6 as torchvision builds it; 5 computed levels: SSD-style."""
    gen = torch.Generator().manual_seed(seed)
    levels, (h, w) = {}, p2
    size = (4 * h, 4 * w)  # P2 is at stride 4
    for name in map(str, range(computed)):
        levels[name] = torch.randn(channels, h, w, generator=gen).relu()
        h, w = -(-h // 2), -(-w // 2)
    if computed != 4:
        return FeatureSet(levels, size, size)
    levels["pool"] = torch.nn.functional.max_pool2d(levels["3"][None], 1, 2)[0]
    return FeatureSet(levels, size, size, {"pool": "3"})


@needs_reference
@pytest.mark.parametrize(("manifest", "model"), [
    ("lmsfc_cm_M128.json", lambda: LMSFCContext(256, 128)),
    ("lmsfc_nocm_M192.json", lambda: LMSFCNoContext(256, 192)),
])
def test_layout_matches_the_published_checkpoints(manifest, model):
    reference = json.loads((REFERENCE / manifest).read_text())
    built = model()
    built.update(force=True)
    ours = {k: list(v.shape) for k, v in built.state_dict().items()}
    assert ours == {key: shape for key, shape, _ in reference["state_dict"]}
    assert sum(p.numel() for p in built.parameters()) == reference["param_count"]


@pytest.mark.parametrize(("codec_class", "int8", "computed", "order"), [
    (LMSFCCodec, False, 4, "wavefront"), (LMSFCCodec, False, 4, "raster"), (LMSFCNoContextCodec, False, 4, None),
    (LMSFCCodec, True, 4, "wavefront"), (LMSFCNoContextCodec, False, 5, None), (LMSFCCodec, False, 5, "wavefront")])
def test_cross_process_decoding_is_bit_exact(tmp_path, codec_class, int8, computed, order):
    settings = {"lmsfc": {"order": order}} if order else {}
    options = CodecOptions(task_model="toy", checkpoints=tmp_path, settings=settings)
    torch.manual_seed(0)
    model = build_model(codec_class.name, 8, 16, levels=computed)
    save_checkpoint(model, checkpoint_path(codec_class.name, 2, options), int8_weights=int8)
    codec = codec_class(options)
    x = fpn(1, computed=computed)
    data = codec.encode(x, RatePoint("q2", 2))
    mine = codec.decode(data)
    assert [mine[k].shape for k in mine] == [x[k].shape for k in x]
    (tmp_path / "stream.bin").write_bytes(data)
    script = (f"import sys, torch; from fcmbench.core.codec import CodecOptions; "
              f"from fcmbench.codecs.learned.lmsfc import {codec_class.__name__} as C; "
              f"c = C(CodecOptions(task_model='toy', checkpoints=sys.argv[1])); "
              f"x = c.decode(open(sys.argv[2], 'rb').read()); torch.save(dict(x.levels), sys.argv[3])")
    # the other process runs with another torch thread count than this one
    threads = "1" if torch.get_num_threads() > 1 else "2"
    subprocess.run([sys.executable, "-c", script, tmp_path, tmp_path / "stream.bin", tmp_path / "other.pt"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    other = torch.load(tmp_path / "other.pt")
    assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_int8_weights_are_four_times_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    model = build_model("lmsfc-nocm", 64, 32)
    save_checkpoint(model, tmp_path / "full.pt")
    save_checkpoint(model, tmp_path / "int8.pt", int8_weights=True)
    assert (tmp_path / "int8.pt").stat().st_size < 0.27 * (tmp_path / "full.pt").stat().st_size
    loaded = build_model("lmsfc-nocm", 64, 32)
    load_weights(loaded, tmp_path / "int8.pt")
    for (name, before), after in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert torch.allclose(before, after, atol=before.abs().max().item() / 200), name


def test_missing_checkpoint_says_how_to_train(tmp_path):
    codec = LMSFCCodec(CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path))
    with pytest.raises(FcmbenchError, match=r"(?s)q3\.pt.*fcmbench train lmsfc --quality 3"):
        codec.encode(fpn(0), RatePoint("q3", 3))


def test_a_few_training_steps_lower_the_loss(tmp_path):
    train = [fpn(i) for i in range(4)]
    config = TrainConfig("lmsfc-nocm", 3, tmp_path / "q3.pt", steps=60, latent=16, lr=1e-3, validate_every=20,
                         batch_size=2)
    result = train_codec(config, train, train[:2])
    losses = [h["val_loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / "q3.pt").is_file() and not (tmp_path / "q3.pt.resume").exists()
    # the next quality starts from this one's weights, not at random
    config = TrainConfig("lmsfc-nocm", 4, tmp_path / "q4.pt", steps=20, latent=16, lr=1e-3, validate_every=20,
                         init=tmp_path / "q3.pt", lmbda=0.125)
    warm = train_codec(config, train, train[:2])
    assert warm["history"][0]["val_loss"] < losses[0]
    assert torch.load(tmp_path / "q4.pt", weights_only=True)["lam"] == 0.125  # not q4's own 0.25


def interrupt_training_at(monkeypatch, step: int) -> None:
    """The training raises KeyboardInterrupt at its ``step``-th training step (``monkeypatch.undo()`` ends it)."""
    import fcmbench.training.codecs as training

    real, steps = training.rate_distortion, []

    def interrupted(model, batch, lam):
        if model.training:
            steps.append(1)
            if len(steps) == step:
                raise KeyboardInterrupt
        return real(model, batch, lam)

    monkeypatch.setattr(training, "rate_distortion", interrupted)


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Stopped mid-way, the same command continues from the last validation and ends bit-identical to an
    uninterrupted run: optimiser, scheduler and random states are all in the resume file."""
    train = [fpn(i) for i in range(4)]

    def config(path: Path) -> TrainConfig:
        return TrainConfig("lmsfc-nocm", 3, path, steps=40, latent=16, lr=1e-3, validate_every=10, batch_size=2)

    whole = train_codec(config(tmp_path / "whole.pt"), train, train[:2])
    interrupt_training_at(monkeypatch, 25)  # after the validation of step 20
    with pytest.raises(KeyboardInterrupt):
        train_codec(config(tmp_path / "cut.pt"), train, train[:2])
    assert (tmp_path / "cut.pt.resume").is_file() and not (tmp_path / "cut.pt").exists()
    monkeypatch.undo()
    resumed = train_codec(config(tmp_path / "cut.pt"), train, train[:2])
    assert resumed["history"] == whole["history"]
    a, b = (torch.load(tmp_path / name, weights_only=True)["state_dict"] for name in ("whole.pt", "cut.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_file_left_by_another_training_into_the_same_file_is_refused(tmp_path, monkeypatch):
    # a recipe trains into one file more than once (quality 4 twice, then the polish at a lower rate): a
    # re-run after a kill must not continue the later stage's state as the earlier one
    train = [fpn(i) for i in range(4)]
    polish = TrainConfig("lmsfc-nocm", 4, tmp_path / "q4.pt", steps=20, latent=16, lr=2e-4, validate_every=10,
                         batch_size=2)
    interrupt_training_at(monkeypatch, 12)  # after the validation of step 10
    with pytest.raises(KeyboardInterrupt):
        train_codec(polish, train, train[:2])
    monkeypatch.undo()
    first = replace(polish, lr=2e-3)
    with pytest.raises(FcmbenchError, match=r"q4\.pt\.resume was left by another training .*lr 0\.0002.*lr 0\.002"):
        train_codec(first, train, train[:2])
    assert train_codec(polish, train, train[:2])["history"][-1]["step"] == 20  # the same one goes on


def test_training_keeps_the_weights_of_its_best_validation(tmp_path):
    import copy

    from fcmbench.training.codecs import fit

    model, scores, snapshots = torch.nn.Linear(2, 1), iter([3.0, 1.0, 2.0]), []

    def step_loss(step, generator):
        return (model(torch.ones(1, 2)) ** 2).sum(), {}

    def val_loss():
        snapshots.append(copy.deepcopy(model.state_dict()))
        return next(scores)

    history = fit(model, TrainConfig("x", 1, tmp_path / "m.pt", steps=3, validate_every=1, lr=0.1),
                  step_loss, val_loss)
    assert [h["best"] for h in history] == [True, True, False]
    assert torch.equal(model.weight, snapshots[1]["weight"]) and not torch.equal(model.weight, snapshots[2]["weight"])


def test_tamsf_trains_with_the_detection_loss_and_codes(tmp_path, tiny_coco):
    from fcmbench.codecs.learned.lmsfc import TAMSFCodec
    from fcmbench.datasets.base import load_image
    from fcmbench.datasets.coco import CocoDataset
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.tasks.shapes_rcnn import shapes_rcnn
    from fcmbench.training.detector import targets_of

    task = shapes_rcnn(TaskModelOptions(weights="none"))
    dataset = CocoDataset(*tiny_coco)
    items = dataset.items()[:2]
    features = [task.front(load_image(item)) for item in items]
    targets = [targets_of(dataset, item.image_id) for item in items]
    options = CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path)
    config = TrainConfig("tamsf", 1, checkpoint_path("tamsf", 1, options), steps=4, latent=16, validate_every=2,
                         task_warmup=2)
    train_codec(config, features, features[:1], task, targets)
    assert all(p.grad is None for p in task.model.parameters())  # the detector stays frozen
    codec = TAMSFCodec(options)
    decoded = codec.decode(codec.encode(features[0], RatePoint("q1", 1)))
    assert list(decoded) == list(features[0])


def test_level_counts_that_do_not_fit_are_refused(tmp_path):
    options = CodecOptions(task_model="toy", checkpoints=tmp_path)
    save_checkpoint(build_model("lmsfc-nocm", 8, 16), checkpoint_path("lmsfc-nocm", 1, options))
    codec = LMSFCNoContextCodec(options)
    with pytest.raises(FcmbenchError, match="checkpoint codes 4 levels, these features have 5"):
        codec.encode(fpn(0, computed=5), RatePoint("q1", 1))
    with pytest.raises(FcmbenchError, match="4 or 5 computed FPN levels; these features have 6"):
        codec.encode(fpn(0, computed=6), RatePoint("q1", 1))


@given(st.integers(1, 12), st.integers(1, 12))
def test_every_wave_reads_only_earlier_waves(height, width):
    wave_of = {}
    for t, (rows, cols) in enumerate(waves(height, width)):
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            wave_of[(i, j)] = t
    assert sorted(wave_of) == [(i, j) for i in range(height) for j in range(width)]
    causal = [(dy, dx) for dy in (-2, -1) for dx in range(-2, 3)] + [(0, -2), (0, -1)]  # the 5x5 type-A mask
    for (i, j), t in wave_of.items():
        assert all(wave_of[(i + dy, j + dx)] < t for dy, dx in causal if (i + dy, j + dx) in wave_of)


def test_wavefront_codes_the_latent_the_raster_loop_codes(tmp_path):
    torch.manual_seed(3)
    model = build_model("lmsfc", 8, 16)
    options = CodecOptions(task_model="toy", checkpoints=tmp_path)
    save_checkpoint(model, checkpoint_path("lmsfc", 2, options))
    x = fpn(4, p2=(100, 150))  # latent 8 x 12: 34 waves instead of 96 steps
    decoded = {}
    for order in ("raster", "wavefront"):
        codec = LMSFCCodec(CodecOptions(task_model="toy", checkpoints=tmp_path, settings={"lmsfc": {"order": order}}))
        data = codec.encode(x, RatePoint("q2", 2))
        decoded[order] = (len(data), codec.decode(data))
    (raster_bytes, raster), (wave_bytes, wave) = decoded["raster"], decoded["wavefront"]
    assert abs(wave_bytes - raster_bytes) <= 0.01 * raster_bytes + 4
    for name in x:
        assert torch.allclose(wave[name], raster[name], atol=1e-3, rtol=1e-3)


def test_rate_points_are_the_qualities_with_checkpoints(tmp_path):
    options = CodecOptions(task_model="toy", checkpoints=tmp_path)
    assert [p.label for p in LMSFCNoContextCodec(options).rate_points()] == [f"q{q}" for q in range(1, 7)]
    for quality in (2, 4):
        save_checkpoint(build_model("lmsfc-nocm", 8, 16), checkpoint_path("lmsfc-nocm", quality, options))
    assert [p.label for p in LMSFCNoContextCodec(options).rate_points()] == ["q2", "q4"]


def test_an_unreadable_init_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FcmbenchError, match="bad.pt is not a readable checkpoint"):
        load_weights(build_model("lmsfc-nocm", 8, 16), tmp_path / "bad.pt")
    with pytest.raises(FcmbenchError, match="absent.pt is not a readable checkpoint"):
        load_weights(build_model("lmsfc-nocm", 8, 16), tmp_path / "absent.pt")


def test_a_diverging_training_stops_with_a_clear_error_and_saves_nothing(tmp_path):
    from fcmbench.core.errors import FcmbenchError
    from fcmbench.training.codecs import fit

    model, losses = torch.nn.Linear(2, 1), iter([1.0, 1.0, 1.0, math.nan])

    def step_loss(step, generator):
        return (model(torch.ones(1, 2)) ** 2).sum() * next(losses), {}

    config = TrainConfig("lmsfc", 2, tmp_path / "q2.pt", steps=10, validate_every=2, lr=0.1)
    with pytest.raises(FcmbenchError, match=r"lmsfc q2 diverged at step 4 \(loss nan\).*lower --lr than 0.1"):
        fit(model, config, step_loss, lambda: 1.0)
    assert list(tmp_path.iterdir()) == []  # neither a checkpoint nor a resume file that would bring lr 0.1 back
