"""The runner's own costs, each measured side by side in one run and printed as the ratio it claims (issue #29):
harness overhead on the demo's methods (target <= 5 %), a cached re-run against the first run (target >= 20x),
batch 4 against batch 1 for the task network's front and back on the CPU, and the peak memory of a run on
COCO-sized inputs (bound: 6 GB).
`.venv/bin/pytest tests/benchmarks/bench_scale.py --benchmark-only -o python_files='bench_*.py' -s`"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcmbench.core import registry
from fcmbench.datasets.base import load_image
from fcmbench.datasets.options import DatasetOptions
from fcmbench.pipeline.runner import RunConfig, Runner
from fcmbench.pipeline.store import Store
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

FASTER_VVC = {"vtm-feature": {"preset": "faster"}, "vtm-image": {"preset": "faster"}}  # VVenC preset faster

pytestmark = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained")
IMAGES = 6


class TimedRunner(Runner):
    """A runner that clocks the wall time inside its codecs and task network (encoders that run rate points
    concurrently count once) and its evaluation (pycocotools), which is neither harness nor codec."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.inside_s = self.evaluate_s = 0.0
        for codec in self.codecs.values():
            codec.encode_batch = self.clocked(codec.encode_batch)
            codec.decode_timed = self.clocked(codec.decode_timed)
        self.task.front_batch, self.task.back_batch = self.clocked(self.task.front_batch), self.clocked(
            self.task.back_batch)

    def clocked(self, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.inside_s += time.perf_counter() - start
        return call

    def evaluate(self, store: Store, setup: str, pool=None) -> None:
        start = time.perf_counter()
        super().evaluate(store, setup, pool)
        self.evaluate_s += time.perf_counter() - start


def timed_run(out: Path, cache: Path, methods: list[str]) -> tuple[float, float, float, float]:
    """(wall seconds of run(), seconds inside networks/codecs/encoders, evaluation seconds, set-up seconds)."""
    start = time.perf_counter()
    runner = TimedRunner(RunConfig(methods=methods, dataset="shapes", out=out, limit=IMAGES, cache=cache,
                                   skip_unready=True, codec_settings=FASTER_VVC))
    setup_s = time.perf_counter() - start
    store = Store(out)
    start = time.perf_counter()
    try:
        runner.run(store)
    finally:
        store.close()
    return time.perf_counter() - start, runner.inside_s, runner.evaluate_s, setup_s


def test_harness_overhead_on_the_demo_methods(benchmark, tmp_path):
    methods = registry.methods.resolve("all")
    wall, inside, evaluate_s, setup_s = benchmark.pedantic(
        timed_run, args=(tmp_path / "out", tmp_path / "cache", methods), rounds=1, iterations=1)
    overhead = wall - inside - evaluate_s
    print(f"\n{len(methods)} methods, {IMAGES} images: run {wall:.1f} s, inside networks/codecs/encoders "
          f"{inside:.1f} s, evaluation {evaluate_s:.1f} s, harness {overhead:.2f} s = {100 * overhead / wall:.1f} % "
          f"of the run (target <= 5 %); building the task model and codecs before it: {setup_s:.1f} s")


def test_cached_rerun_against_the_first_run(benchmark, tmp_path):
    methods = ["raw", "quant", "lmsfc"]
    first = timed_run(tmp_path / "out", tmp_path / "cache", methods)[0]
    again = benchmark.pedantic(lambda: timed_run(tmp_path / "out", tmp_path / "cache", methods)[0], rounds=1,
                               iterations=1)
    print(f"\n{'+'.join(methods)}, {IMAGES} images: first run {first:.1f} s, cached re-run {again:.2f} s: "
          f"{first / again:.0f}x faster (target >= 20x)")


def front_and_back(task, images: list[torch.Tensor], batch: int) -> tuple[float, float]:
    start = time.perf_counter()
    features = [f for i in range(0, len(images), batch) for f in task.front_batch(images[i:i + batch])]
    front = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(features), batch):
        task.back_batch(features[i:i + batch])
    return front, time.perf_counter() - start


@pytest.mark.parametrize("task_name", ["shapes_rcnn", "faster_rcnn_r50_fpn"])
def test_batch_4_against_batch_1(benchmark, task_name):
    torch.set_num_threads(2)
    task = registry.task_models.get(task_name)(TaskModelOptions(None if task_name == "shapes_rcnn" else "none"))
    items = registry.datasets.get("shapes")(DatasetOptions()).items()[:8]
    images = [load_image(item) for item in items]  # 256 px; the R50 resizes them to 800 (COCO-sized features)
    front_and_back(task, images[:1], 1)  # warm-up
    one = front_and_back(task, images, 1)
    four = benchmark.pedantic(front_and_back, args=(task, images, 4), rounds=1, iterations=1)
    print(f"\n{task_name}, {len(images)} images on the CPU: front {one[0]:.2f} s at batch 1, {four[0]:.2f} s at "
          f"batch 4 ({one[0] / four[0]:.2f}x); back {one[1]:.2f} s, {four[1]:.2f} s ({one[1] / four[1]:.2f}x)")


def test_peak_memory_of_a_run_on_coco_sized_inputs(benchmark, tmp_path):
    """A run in its own process: an R50-FPN (random weights: no checkpoint of a learned codec exists for it here)
    on 800-pixel inputs (P2 is 256 x 200 x 200) with the uncompressed and the quantised features; the peak
    resident memory of that process."""
    command = [sys.executable, "-m", "fcmbench.cli", "run", "--methods", "raw,quant", "--dataset",
               "shapes", "--limit", "4", "--task-model", "faster_rcnn_r50_fpn", "--weights", "none",
               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]

    def run() -> float:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        subprocess.run(command, check=True, capture_output=True)
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB -> GB

    peak = benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"\nR50-FPN run on 4 images at 800 px: peak resident memory {peak:.2f} GB (bound 6 GB)")
    assert peak < 6
