"""Batched task networks (issue #29): an image's features and predictions do not depend on the batch it is in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from fcmbench.pipeline.runner import RunConfig, Runner
from fcmbench.pipeline.store import Store
from fcmbench.tasks.base import TaskModelOptions, batch_groups
from fcmbench.tasks.shapes_rcnn import shapes_rcnn


@pytest.fixture(scope="module")
def task():
    return shapes_rcnn(TaskModelOptions(weights="none"))


def images_of_two_sizes() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(3, *size, generator=gen) for size in ((256, 256), (192, 256), (256, 256), (192, 256))]


def test_batched_front_and_back_equal_one_image_at_a_time(task):
    images = images_of_two_sizes()
    batched = task.front_batch(images)
    alone = [task.front(image) for image in images]
    assert {f.input_size for f in batched} == {(256, 256), (192, 256)}  # two groups, each padded alone
    for one, other in zip(batched, alone, strict=True):
        assert one.input_size == other.input_size
        assert all(torch.equal(one[name], other[name]) for name in one)
    for one, other in zip(task.back_batch(batched), [task.back(f) for f in alone], strict=True):
        assert set(one) == set(other) and all(torch.equal(one[key], other[key]) for key in one)
        assert len(one["boxes"]) > 0


def test_batches_group_by_padded_shape_on_a_gpu_and_go_one_by_one_on_the_cpu():
    shapes = [(256, 256), (192, 256), (256, 256), (192, 256), (128, 128)]
    assert batch_groups(shapes, lambda shape: shape, "cuda") == [[0, 2], [1, 3], [4]]
    assert batch_groups(shapes, lambda shape: shape, "cpu") == [[0], [1], [2], [3], [4]]


def stored_items(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return sorted(db.execute("SELECT method, rate, image_id, bytes, bytes_per_level, predictions FROM items"))


def run_with_batch(tmp_path: Path, batch_size: int) -> list[tuple]:
    out = tmp_path / f"batch{batch_size}"
    config = RunConfig(methods=["quant", "elic"], dataset="shapes", out=out, rates=["2bit", "q3", "q5"], limit=5,
                       device="cpu", cache=tmp_path / f"cache{batch_size}", batch_size=batch_size)
    runner = Runner(config)
    assert runner.run(Store(out)) == 5 * 4  # quant 2bit, elic q3 and q5, raw (added reference)
    return stored_items(out)


def test_a_run_stores_the_same_results_for_batch_1_and_4(tmp_path):
    # 5 images: a chunk of 4 and a chunk of 1; a feature codec, an image codec and the reference
    alone, batched = run_with_batch(tmp_path, 1), run_with_batch(tmp_path, 4)
    assert len(alone) == 20 and alone == batched


def test_features_from_the_cache_keep_the_front_time_that_made_them(task, tiny_coco, tmp_path):
    from fcmbench.datasets.base import image_folder_items
    from fcmbench.pipeline.runner import ImageWork

    item = image_folder_items(tiny_coco[0])[0]
    first = ImageWork(item, task, tmp_path)
    first.features()
    assert first.front_s > 0
    again = ImageWork(item, task, tmp_path)
    assert again.load_cached() and again.front_s == first.front_s  # not 0: the report's front time stays true
