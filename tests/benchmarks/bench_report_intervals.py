"""What the 95 % bootstrap intervals add to `fcmbench report`, on a results store of the demo's size: 50 images,
6 categories, 13 methods x 5 rate points, up to 100 detections per image (target: <= 30 s at 200 resamples on 2
cores). `.venv/bin/pytest tests/benchmarks/bench_report_intervals.py --benchmark-only -o python_files='bench_*.py' -s`
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import pytest
from pycocotools.coco import COCO

from fcmbench.datasets.coco import evaluate_coco_matched
from fcmbench.evaluation.bootstrap import pack_matches
from fcmbench.pipeline.store import ItemResult, Store, image_set_key
from fcmbench.reports.intervals import point_resamples, with_accuracy_intervals, with_bd_intervals
from fcmbench.reports.tables import bd_table, rd_table

IMAGES, CATEGORIES, METHODS, POINTS = list(range(1, 51)), 6, 13, 5


def ground_truth(rng: np.random.Generator) -> tuple[COCO, dict]:
    boxes = {i: [(int(rng.integers(1, CATEGORIES + 1)), [*rng.uniform(0, 200, 2), *rng.uniform(8, 60, 2)])
                 for _ in range(5)] for i in IMAGES}
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": 256, "height": 256} for i in IMAGES],
                  "annotations": [{"id": 100 * i + n, "image_id": i, "category_id": c, "bbox": b,
                                   "area": b[2] * b[3], "iscrowd": 0}
                                  for i in IMAGES for n, (c, b) in enumerate(boxes[i])],
                  "categories": [{"id": c} for c in range(1, CATEGORIES + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, boxes


@pytest.fixture(scope="module")
def demo_sized_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    gt, boxes = ground_truth(rng)
    folder = tmp_path_factory.mktemp("store")
    store = Store(folder)
    setup = store.add_setup("shapes", "shapes_rcnn", {})
    for m in range(METHODS):
        for k in range(POINTS):
            noise = 8.0 / (k + 1)
            results = [{"image_id": i, "category_id": c, "score": float(rng.random()),
                        "bbox": [*(np.array(b[:2]) + rng.normal(0, noise, 2)), b[2], b[3]]}
                       for i in IMAGES for c, b in boxes[i]]
            results += [{"image_id": i, "category_id": int(rng.integers(1, CATEGORIES + 1)),
                         "score": float(rng.random() * 0.5), "bbox": [*rng.uniform(0, 200, 2), 20.0, 20.0]}
                        for i in IMAGES for _ in range(90)]
            sizes = {i: int((m + 1) * 2 ** k * (50 + i)) for i in IMAGES}
            for i in IMAGES:
                store.add_item(setup, ItemResult(f"m{m}", f"q{k}", i, k, 65536, sizes[i], {"0": sizes[i]}, 0, 0, 0,
                                                 0, [r for r in results if r["image_id"] == i]))
            metrics, matches = evaluate_coco_matched(gt, results, IMAGES, "bbox")
            store.add_evaluation(setup, f"m{m}", f"q{k}", image_set_key(IMAGES), k, len(IMAGES),
                                 8 * sum(sizes.values()), 65536 * len(IMAGES), metrics, pack_matches({"bbox": matches}))
    store.close()
    return folder


def report_tables(folder, resamples: int) -> None:
    rd = rd_table([folder])
    samples = point_resamples([folder], resamples) if resamples else {}
    rd = with_accuracy_intervals(rd, samples)
    bd = bd_table(rd, "m0", monotone=True)
    with_bd_intervals(bd, rd, samples, "pchip", True)


def test_intervals_cost_on_a_demo_sized_report(benchmark, demo_sized_store):
    start = time.perf_counter()
    report_tables(demo_sized_store, 0)
    without = time.perf_counter() - start
    benchmark.pedantic(report_tables, args=(demo_sized_store, 200), rounds=1, iterations=1)
    with_intervals = benchmark.stats.stats.mean
    print(f"\nreport tables without intervals {without:.2f} s, with 200 resamples {with_intervals:.2f} s: "
          f"the intervals add {with_intervals - without:.1f} s (target <= 30 s)")
    assert with_intervals - without <= 30
