"""End-to-end throughput and the cost of a fully cached re-run (nothing recomputed)."""

import shutil

import pytest

from fcmbench.pipeline.runner import RunConfig, Runner
from fcmbench.pipeline.store import Store
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

pytestmark = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained")


def run_once(out, limit=10):
    runner = Runner(RunConfig(methods=["raw", "quant"], dataset="shapes", out=out, limit=limit))
    store = Store(out)
    try:
        return runner.run(store)
    finally:
        store.close()


def test_first_run_10_images(benchmark, tmp_path):
    def fresh():
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        return run_once(tmp_path / "out")

    assert benchmark.pedantic(fresh, rounds=2, iterations=1) == 70


def test_cached_rerun_10_images(benchmark, tmp_path):
    run_once(tmp_path / "out")
    assert benchmark.pedantic(run_once, args=(tmp_path / "out",), rounds=3, iterations=1) == 0
