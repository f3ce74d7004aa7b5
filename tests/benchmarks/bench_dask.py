"""2 Dask workers against 1 on the VVenC feature anchor (target >= 1.7x on 2 cores), measured side by side on 8 and
24 images. A run pays a fixed cost (the cluster's start, each worker building the task model and codecs, the
final evaluation) that a sweep of thousands of images does not notice; the per-image ratio, from the difference of
the two sizes, is what the workers add to a sweep, and the end-to-end ratios say how much the fixed cost takes.
`.venv/bin/pytest tests/benchmarks/bench_dask.py --benchmark-only -o python_files='bench_*.py' -s`"""

from __future__ import annotations

import shutil
import time

import pytest

from fcmbench.pipeline.runner import RunConfig, Runner
from fcmbench.pipeline.store import Store
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

pytestmark = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained")
SIZES = (8, 24)  # images


def dask_run(out, cache, workers: int, images: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(methods=["vtm-feature"], dataset="shapes", out=out, limit=images, cache=cache,
                       executor="dask", workers=workers,
                       codec_settings={"vtm-feature": {"jobs": 1, "preset": "faster"}})
    runner, store = Runner(config), Store(out)
    start = time.perf_counter()
    try:
        assert runner.run(store) == images * sum(len(points) for points in runner.rates.values())
    finally:
        store.close()
    return time.perf_counter() - start


def test_two_dask_workers_against_one(benchmark, tmp_path):
    small, large = SIZES
    cache = tmp_path / "cache"
    dask_run(tmp_path / "warm", cache, 1, large)  # front features cached: every run times the codec alone
    seconds = {(workers, images): dask_run(tmp_path / f"{workers}-{images}", cache, workers, images)
               for workers in (1, 2) for images in (small, large) if (workers, images) != (2, large)}
    seconds[2, large] = benchmark.pedantic(dask_run, args=(tmp_path / f"2-{large}", cache, 2, large), rounds=1,
                                           iterations=1)
    per_image = {w: (seconds[w, large] - seconds[w, small]) / (large - small) for w in (1, 2)}
    print(f"\nvtm-feature: 1 worker {seconds[1, small]:.1f} s / {seconds[1, large]:.1f} s, 2 workers "
          f"{seconds[2, small]:.1f} s / {seconds[2, large]:.1f} s on {small} / {large} images; end to end "
          f"{seconds[1, small] / seconds[2, small]:.2f}x / {seconds[1, large] / seconds[2, large]:.2f}x; per image "
          f"{per_image[1]:.2f} s against {per_image[2]:.2f} s: {per_image[1] / per_image[2]:.2f}x (target >= 1.7x)")
