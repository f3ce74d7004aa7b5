"""2 Dask workers against 1 on the VVenC feature anchor (target >= 1.7x on 2 cores), measured side by side.
`.venv/bin/pytest tests/benchmarks/bench_dask.py --benchmark-only -o python_files='bench_*.py' -s`"""

from __future__ import annotations

import shutil
import time

import pytest

from fcmbench.pipeline.runner import RunConfig, Runner
from fcmbench.pipeline.store import Store
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

pytestmark = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained")
IMAGES = 8


def dask_run(out, cache, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(methods=["vtm-feature"], dataset="shapes", out=out, limit=IMAGES, cache=cache,
                       executor="dask", workers=workers,
                       codec_settings={"vtm-feature": {"jobs": 1, "preset": "faster"}})
    runner, store = Runner(config), Store(out)
    start = time.perf_counter()
    try:
        assert runner.run(store) == IMAGES * sum(len(points) for points in runner.rates.values())
    finally:
        store.close()
    return time.perf_counter() - start


def test_two_dask_workers_against_one(benchmark, tmp_path):
    dask_run(tmp_path / "warm", tmp_path / "cache", 1)  # front features cached: both runs time the codec alone
    one = dask_run(tmp_path / "one", tmp_path / "cache", 1)
    two = benchmark.pedantic(dask_run, args=(tmp_path / "two", tmp_path / "cache", 2), rounds=1, iterations=1)
    print(f"\nvtm-feature, {IMAGES} images: 1 worker {one:.1f} s, 2 workers {two:.1f} s: {one / two:.2f}x "
          "(target >= 1.7x)")
