"""MFIBA: the power-law fit, the closed-form allocation, the labels, and the codec end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run_cli
from fcmbench.codecs.learned.mfiba import MfibaElicCodec, RateModel, target_rates
from fcmbench.core.codec import CodecOptions, RatePoint
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet
from fcmbench.datasets.base import load_image
from fcmbench.datasets.coco import CocoDataset
from fcmbench.models.elic import build_elic
from fcmbench.models.mfiba import ImportancePredictor
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS
from fcmbench.training.mfiba import (
    calibrate_labels,
    default_lambdas,
    fit_power_law,
    fit_rate_model,
    importance_labels,
    train_predictor,
)
from fcmbench.zoo.checkpoints import checkpoint_path, save_checkpoint


def test_the_power_law_fit_recovers_its_parameters():
    rates = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
    a, b = fit_power_law(rates, 12.0 * rates**-0.6)
    assert a == pytest.approx(12.0, rel=1e-3) and b == pytest.approx(-0.6, rel=1e-3)
    assert fit_power_law(rates, np.zeros(6)) == (1e-10, 0.0)  # no loss at any rate: the level needs no bits


def test_the_closed_form_rates_minimise_the_objective():
    weights, a, b = [0.5, 0.3, 0.2], [10.9, 10.6, 22.3], [-0.55, -0.68, -0.64]
    pixels, lam = [1600, 400, 100], 40.0
    targets = target_rates(weights, a, b, lam, pixels)
    grid = np.linspace(1e-3, 5, 200_000)
    for w, a_l, b_l, pix, found in zip(weights, a, b, pixels, targets, strict=True):
        cost = w * a_l * grid**b_l + lam * pix / pixels[0] * grid
        assert found == pytest.approx(grid[cost.argmin()], rel=1e-3)
    # a larger λ buys fewer bits everywhere; a level whose loss does not fall with rate gets none
    assert all(lo < hi for lo, hi in zip(target_rates(weights, a, b, 4 * lam, pixels), targets, strict=True))
    assert target_rates([0.5, 0.5], [1.0, 1e-10], [-0.5, 0.0], lam, [4, 1])[1] == 0.0


def test_importance_labels_follow_the_reference_recipe():
    # per quality: min-max over levels, summed over qualities, normalised to 1, into 50 bins
    labels = importance_labels({1: [0.3, 0.1, 0.0, 0.0, 0.0], 2: [0.2, 0.2, 0.0, 0.0, 0.0]})
    assert labels == pytest.approx([0.61, 0.41, 0.01, 0.01, 0.01])
    assert importance_labels({1: [0.0] * 5}) == pytest.approx([0.21] * 5)  # all equal: every level alike


def test_the_predictor_gives_weights_that_sum_to_one():
    predictor = ImportancePredictor(channels=8, levels=3)
    weights = predictor([torch.rand(2, 8, s, s) for s in (16, 8, 4)])
    assert weights.shape == (2, 3) and torch.allclose(weights.sum(1), torch.ones(2))


def test_a_missing_rate_model_says_how_to_fit_it(tmp_path):
    codec = MfibaElicCodec(CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path))
    with pytest.raises(FcmbenchError, match="fcmbench fit-rate-model mfiba-elic --task-model shapes_rcnn"):
        codec.ensure_ready(codec.rate_points())
    result = run_cli("fit-rate-model", "mfiba", "--task-model", "shapes_rcnn", "--dataset", "shapes", "--out",
                     tmp_path, check=False)
    assert result.returncode == 2 and "needs elic-feat checkpoints at two or more qualities" in result.stderr


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained yet")
def test_fit_train_and_code_end_to_end(tmp_path, tiny_coco):
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.tasks.shapes_rcnn import shapes_rcnn

    options = CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path)
    for quality, width in ((1, 8), (2, 8)):
        torch.manual_seed(quality)
        save_checkpoint(build_elic(width, 20), checkpoint_path("elic-feat", quality, options), int8_weights=True)
    task = shapes_rcnn(TaskModelOptions())
    dataset = CocoDataset(*tiny_coco)
    items = dataset.items()[:5]
    features = {item.image_id: task.front(load_image(item)) for item in items}
    codec = MfibaElicCodec(options)
    model, labels = fit_rate_model(codec, dataset, task, features)
    levels = list(next(iter(features.values())))
    assert model.levels == levels and model.qualities == [1, 2]
    assert len(model.measurements) == len(labels) * len(levels) * 2 and labels
    assert all(0.6 < sum(w) < 1.4 for w in labels.values())
    # the codec needs a rate model whose levels depend on rate: give it a known one to check the allocation
    model.a, model.b, model.lambdas = [5.0] * len(levels), [-0.5] * len(levels), [4.0, 0.01]
    model.save(codec.folder() / "rate_model.json")
    (codec.folder() / "labels.json").write_text(json.dumps({str(k): v for k, v in labels.items()}))
    train_predictor(codec, items, [features[i.image_id] for i in items], steps=5, lr=1e-3)
    codec = MfibaElicCodec(options)
    points = codec.rate_points()
    assert [p.label for p in points] == ["lam4", "lam0.01"]
    x = features[items[0].image_id]
    (low, _), (high, _) = codec.encode_batch(x, points)
    chosen_low, chosen_high = codec.stream_info(low)["qualities"], codec.stream_info(high)["qualities"]
    assert set(chosen_low) == set(levels) and set(chosen_low.values()) <= {1, 2}
    # a smaller λ targets more bits per level, so it never picks a stream with fewer bits for a level
    low_sizes, high_sizes = codec.bytes_per_level(low), codec.bytes_per_level(high)
    assert all(high_sizes[k] >= low_sizes[k] for k in levels) and chosen_high != chosen_low
    mine = codec.decode(high)
    (tmp_path / "stream.bin").write_bytes(high)
    script = ("import sys, torch; from fcmbench.core.codec import CodecOptions; "
              "from fcmbench.codecs.learned.mfiba import MfibaElicCodec as C; "
              "c = C(CodecOptions(task_model='shapes_rcnn', checkpoints=sys.argv[1])); "
              "x = c.decode(open(sys.argv[2], 'rb').read()); torch.save(dict(x.levels), sys.argv[3])")
    threads = "1" if torch.get_num_threads() > 1 else "2"
    subprocess.run([sys.executable, "-c", script, tmp_path, tmp_path / "stream.bin", tmp_path / "other.pt"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    other = torch.load(tmp_path / "other.pt")
    assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_a_rate_model_file_that_is_not_one_is_a_clear_error(tmp_path):
    path = tmp_path / "rate_model.json"
    path.write_text("{\"levels\": 3}")
    with pytest.raises(FcmbenchError, match="is not one `fcmbench fit-rate-model` wrote"):
        RateModel.load(path)


def test_an_mfiba_rate_point_is_any_lambda():
    assert MfibaElicCodec().parse_rate("lam250") == RatePoint("lam250", 250.0)
    assert MfibaElicCodec().parse_rate("q3") is None


def test_default_lambdas_span_the_bits_from_all_lowest_to_all_highest():
    measurements = []
    for image in (1, 2):
        for level, pixels in (("p2", 400), ("p3", 100)):
            for quality, bpp in ((1, 0.2), (2, 0.3), (3, 0.45), (4, 0.6)):
                measurements.append({"image": image, "level": level, "quality": quality, "bpp": bpp * image,
                                     "pixels": pixels, "loss": 0.0})
    model = RateModel("elic-feat", ["p2", "p3"], [1, 2, 3, 4], [20.0, 3.0], [-0.7, -0.3], [], measurements)
    lambdas = default_lambdas(model, {1: [0.7, 0.3], 2: [0.6, 0.4]}, 4)
    assert lambdas == sorted(lambdas, reverse=True) and len(lambdas) >= 3

    def chosen_qualities(lam: float) -> list[int]:
        targets = target_rates([0.7, 0.3], model.a, model.b, lam, [400, 100])
        return [min((1, 2, 3, 4), key=lambda q: abs({1: 0.2, 2: 0.3, 3: 0.45, 4: 0.6}[q] - t)) for t in targets]

    assert chosen_qualities(lambdas[0]) == [1, 1] and chosen_qualities(lambdas[-1]) == [4, 4]


def test_calibration_keeps_a_change_only_when_the_middle_point_rises():
    def joint(labels: dict, lam: float) -> tuple[float, float]:
        # the middle point's accuracy grows with the first weight of image 1; nothing depends on the second
        bits = {3.0: 1.0, 2.0: 2.0, 1.0: 3.0}[lam]
        accuracy = {3.0: 0.1, 2.0: 0.2 + (labels[1][0] - 0.21), 1.0: 0.3}[lam]
        return bits, accuracy

    calibrated, log = calibrate_labels({1: [0.21, 0.79]}, [3.0, 2.0, 1.0], joint)
    assert calibrated[1] == pytest.approx([0.22, 0.79])
    assert [(entry["bin"], entry["step"]) for entry in log] == [(0.21, 0.01)]


def shapes_sized_features(seed: int) -> tuple[FeatureSet, MfibaElicCodec, object]:
    """Random features with shapes_rcnn's levels on a 128-pixel image, MFIBA on ELIC and its base elic-feat."""
    from fcmbench.codecs.learned.elic import ElicFeatCodec

    generator = torch.Generator().manual_seed(seed)
    sizes = {"0": 32, "1": 16, "2": 8, "3": 4, "pool": 2}
    x = FeatureSet({name: torch.randn(64, s, s, generator=generator) for name, s in sizes.items()}, (128, 128),
                   (128, 128))
    options = CodecOptions(task_model="shapes_rcnn")
    return x, MfibaElicCodec(options), ElicFeatCodec(options)


def test_mfiba_reuses_its_bases_coded_levels_with_their_times():
    """MFIBA codes every level at every base quality, as elic-feat does: after elic-feat the levels come from
    what it coded (the same bytes as coding them afresh), and MFIBA's encode time still counts their coding."""
    from fcmbench.codecs.learned.mosaic import CODED_LEVELS

    x, mfiba, base = shapes_sized_features(3)
    sizes = x.shapes()
    point = mfiba.rate_points()[-1]
    CODED_LEVELS.entries.clear()
    (fresh, fresh_s), = mfiba.encode_batch(x, [point])
    coded = len(CODED_LEVELS.entries)
    assert coded == len(sizes) * len(mfiba.rate_model().qualities)
    base.encode_batch(x, base.rate_points())  # its levels at its qualities: all coded already
    (again, again_s), = mfiba.encode_batch(x, [point])
    assert len(CODED_LEVELS.entries) == coded and again == fresh
    coding = sum(seconds for _, seconds in CODED_LEVELS.entries.values())
    assert again_s >= coding and fresh_s >= coding  # charged what the coding took, not the lookup


def test_mfiba_reuses_the_levels_its_base_decoded_with_their_times():
    """Decoding is as deterministic as coding: a level MFIBA chose at a base quality is the one elic-feat decoded
    at that quality, and is decoded once; the decode time of each stream still counts its levels' decoding."""
    from fcmbench.codecs.learned.mosaic import DECODED_MOSAICS

    x, mfiba, base = shapes_sized_features(4)
    sizes = x.shapes()
    (stream, _), = mfiba.encode_batch(x, [mfiba.rate_points()[-1]])
    DECODED_MOSAICS.entries.clear()
    fresh, fresh_s = mfiba.decode_timed(stream)
    assert len(DECODED_MOSAICS.entries) == len(sizes)
    decoding = sum(seconds for _, seconds in DECODED_MOSAICS.entries.values())
    for data, _ in base.encode_batch(x, base.rate_points()):
        base.decode_timed(data)
    decoded = len(DECODED_MOSAICS.entries)
    assert decoded == len(sizes) * len(base.rate_points())  # MFIBA's levels were among them: none twice
    again, again_s = mfiba.decode_timed(stream)
    assert len(DECODED_MOSAICS.entries) == decoded
    assert all(torch.equal(again[name], fresh[name]) for name in sizes)
    assert again_s >= decoding and fresh_s >= decoding  # charged what the decoding took, not the lookup
