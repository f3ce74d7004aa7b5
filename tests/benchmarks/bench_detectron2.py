"""Seconds per image of the detectron2-layout task models on the CPU with one torch thread: the front (resize,
backbone and FPN) and the back (RPN, ROI heads, mask pasting) on a 480x640 image (resized to 800x1067, padded
to 800x1088), random weights (the timing does not depend on the values; the stock 0.05 score threshold, so
random weights give few detections and mask pasting costs little).
`.venv/bin/pytest tests/benchmarks/bench_detectron2.py -o python_files='bench_*.py'`."""

import warnings

import pytest
import torch

from fcmbench.core import registry
from fcmbench.tasks import TaskModelOptions

NAMES = ("d2-faster-rcnn-r50-fpn", "d2-mask-rcnn-r50-fpn", "d2-faster-rcnn-x101-fpn", "d2-mask-rcnn-x101-fpn")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", NAMES)
def test_seconds_per_image(benchmark, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = registry.task_models.get(name)(TaskModelOptions("none"))
    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    benchmark.pedantic(lambda: task.back(task.front(image)), rounds=2, iterations=1, warmup_rounds=0)
    features = task.front(image)
    assert tuple(features["p2"].shape) == (256, 200, 272)
