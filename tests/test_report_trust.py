"""BD-rates a reviewer can trust: the accuracy interval they integrate over, the low-accuracy regime, and 95 %
paired-bootstrap intervals (checked on cases worked out by hand)."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from conftest import run_cli
from fcmbench.datasets.coco import evaluate_coco_matched
from fcmbench.evaluation.bootstrap import pack_matches
from fcmbench.pipeline.store import ItemResult, Store, image_set_key

IMAGES = list(range(1, 9))
OFFSETS = [7.0, 5.0, 4.0, 3.0, 2.0]  # pixels a detection is off its 40x40 box, per rate point: IoU 0.52 .. 0.82
PIXELS = 200 * 200


def ground_truth() -> COCO:
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": 200, "height": 200} for i in IMAGES],
                  "annotations": [{"id": 10 * i + n, "image_id": i, "category_id": 1, "bbox": box(i, n, 0.0),
                                   "area": 1600.0, "iscrowd": 0} for i in IMAGES for n in range(2)],
                  "categories": [{"id": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def box(image: int, n: int, offset: float) -> list[float]:
    return [20.0 + 80 * n + offset, 30.0 + offset, 40.0, 40.0]


def detections(k: int) -> list[dict]:
    """Every image a little different (so resamples differ), every one better at each higher rate point."""
    return [{"image_id": i, "category_id": 1, "score": 0.9 - 0.01 * i - 0.001 * n,
             "bbox": box(i, n, OFFSETS[k] + 0.25 * (i % 3))} for i in IMAGES for n in range(2)]


def make_store(folder: Path, methods: dict[str, float]) -> None:
    """``methods``: name -> bytes factor. Bytes grow with the rate point and differ per image; ``raw`` is
    lossless: perfect detections."""
    gt = ground_truth()
    store = Store(folder)
    setup = store.add_setup("toy", "toy_rcnn", {"dataset": "toy"})
    store.add_run(setup, {"command": "test", "versions": {}, "task_model": "toy_rcnn", "weights": "w",
                          "dataset": "toy", "images": len(IMAGES), "device": "cpu", "methods": {}, "warnings": []})
    points = [(m, f"q{k}", factor * 2 ** k, detections(k)) for m, factor in methods.items() for k in range(5)]
    perfect = [{**d, "bbox": box(d["image_id"], n, 0.0)} for n, d in enumerate(detections(0))]
    points.append(("raw", "float32", 64.0, [{**d, "bbox": box(d["image_id"], i % 2, 0.0)}
                                           for i, d in enumerate(perfect)]))
    for method, rate, scale, results in points:
        sizes = {i: int(scale * (100 + 10 * i)) for i in IMAGES}
        for i in IMAGES:
            store.add_item(setup, ItemResult(method, rate, i, 0.0, PIXELS, sizes[i], {"0": sizes[i]}, 0.0, 0.0,
                                             0.0, 0.0, [d for d in results if d["image_id"] == i]))
        metrics, matches = evaluate_coco_matched(gt, results, IMAGES, "bbox")
        store.add_evaluation(setup, method, rate, image_set_key(IMAGES), 0.0, len(IMAGES), 8 * sum(sizes.values()),
                             PIXELS * len(IMAGES), metrics, pack_matches({"bbox": matches}))
    store.close()


def bd_rows(folder: Path, *options: str) -> dict[str, dict]:
    run_cli("report", "--out", folder, "--anchor", "anchor", *options)
    with open(folder / "bd_rate.csv") as handle:
        return {(r["method"], r["metric"]): r for r in csv.DictReader(handle)}


def test_identical_curves_give_an_interval_around_zero_and_half_the_rate_minus_fifty(tmp_path):
    make_store(tmp_path, {"anchor": 1.0, "same": 1.0, "half": 0.5})
    rows = bd_rows(tmp_path, "--meaningful-from", "0.5")
    same, half = rows[("same", "bbox_mAP")], rows[("half", "bbox_mAP")]
    assert float(same["bd_rate_pct"]) == pytest.approx(0, abs=1e-9)
    assert float(same["ci_low"]) <= 0 <= float(same["ci_high"])
    assert float(half["bd_rate_pct"]) == pytest.approx(-50, abs=1e-9)
    assert float(half["ci_low"]) == pytest.approx(-50, abs=1e-9) == float(half["ci_high"])
    assert int(half["resamples"]) == 200


def test_accuracy_intervals_surround_each_point_and_vary_with_the_images(tmp_path):
    make_store(tmp_path, {"anchor": 1.0})
    run_cli("report", "--out", tmp_path, "--anchor", "anchor", "--bootstrap", "50")
    with open(tmp_path / "rd.csv") as handle:
        rd = [r for r in csv.DictReader(handle) if r["method"] == "anchor"]
    for row in rd:
        assert float(row["bbox_mAP_lo"]) <= float(row["bbox_mAP"]) <= float(row["bbox_mAP_hi"])
    assert any(float(r["bbox_mAP_hi"]) > float(r["bbox_mAP_lo"]) for r in rd)


def test_a_bd_rate_over_the_low_accuracy_regime_is_marked_in_every_output(tmp_path):
    """The curves top out near box mAP 0.7 of the lossless 1.0: below the default 80 %, so the comparison is
    marked; with a threshold just below its share it is not."""
    make_store(tmp_path, {"anchor": 1.0, "half": 0.5})
    row = bd_rows(tmp_path, "--bootstrap", "0")[("half", "bbox_mAP")]
    assert float(row["uncompressed"]) == pytest.approx(1.0)
    share = float(row["overlap_share"])
    assert 0.5 < share < 0.8 and share == pytest.approx(float(row["overlap_high"]))
    assert row["regime"] == "low-accuracy regime" and row["ci_low"] == ""
    assert "(low-accuracy regime) -50.00" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert 'class="low-accuracy"' in html and "<strong>low-accuracy regime</strong>" in html
    summary = html[html.index('id="summary-table"'):html.index('id="bd-table"')]
    assert summary.count('class="grey-cell"') == 1 and "(low-accuracy regime) -50.00" in summary
    assert "## Summary" in (tmp_path / "report.md").read_text()
    lower = bd_rows(tmp_path, "--bootstrap", "0", "--meaningful-from", f"{share - 0.01:.3f}")
    assert lower[("half", "bbox_mAP")]["regime"] == "meaningful"
    result = run_cli("report", "--out", tmp_path, "--meaningful-from", "80", check=False)
    assert result.returncode == 2 and "is not a share between 0 and 1" in result.stderr


def test_facet_by_family_draws_one_panel_per_family_with_the_anchors():
    import pandas as pd

    from fcmbench.reports.html import rd_plot

    rd = pd.DataFrame([{"method": m, "bpp": b, "bbox_mAP": a}
                       for m in ("vtm-feature", "lmsfc", "tamsf", "elic-feat", "mine")
                       for b, a in ((0.1, 0.2), (0.2, 0.3), (0.4, 0.35))] + [{"method": "raw", "bpp": 9.0,
                                                                               "bbox_mAP": 0.4}])
    def panels(svg: str) -> int:
        return svg.count('<g id="axes_')

    assert panels(rd_plot(rd, "bbox_mAP", "toy")) == 1
    # L-MSFC, ELIC and the plugin's own: three panels; the anchor is drawn in each, never alone
    assert panels(rd_plot(rd, "bbox_mAP", "toy", facet=True)) == 3
