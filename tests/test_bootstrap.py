"""The bootstrap's accumulation equals pycocotools' on the images it stands for, and its intervals behave."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from fcmbench.datasets.coco import evaluate_coco_matched
from fcmbench.evaluation.bootstrap import interval, pack_matches, resample_counts, resampled_ap, unpack_matches


def ground_truth(images: list[int], boxes: dict[int, list[tuple[int, list[float]]]]) -> COCO:
    gt = COCO()
    annotations = [{"id": n + 1, "image_id": image, "category_id": category, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0}
                   for n, (image, category, box) in enumerate((i, c, b) for i in images for c, b in boxes[i])]
    gt.dataset = {"images": [{"id": i, "width": 200, "height": 200} for i in images], "annotations": annotations,
                  "categories": [{"id": 1}, {"id": 2}, {"id": 3}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def scene(seed: int, images: int = 6) -> tuple[dict, list[dict]]:
    """Random boxes and noisy detections of them (misses, false positives, distinct scores)."""
    rng = np.random.default_rng(seed)
    boxes, detections = {}, []
    for image in range(1, images + 1):
        boxes[image] = []
        for _ in range(rng.integers(0, 5)):
            x, y, w, h = rng.uniform(0, 120, 2).tolist() + rng.uniform(10, 70, 2).tolist()
            category = int(rng.integers(1, 4))
            boxes[image].append((category, [x, y, w, h]))
            if rng.random() < 0.8:
                jitter = rng.normal(0, 6, 4)
                detections.append({"image_id": image, "category_id": category, "score": float(rng.random()),
                                   "bbox": [x + jitter[0], y + jitter[1], abs(w + jitter[2]), abs(h + jitter[3])]})
        for _ in range(rng.integers(0, 3)):
            detections.append({"image_id": image, "category_id": int(rng.integers(1, 4)), "score": float(rng.random()),
                               "bbox": rng.uniform(0, 150, 2).tolist() + rng.uniform(5, 50, 2).tolist()})
    return boxes, detections


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_accumulation_of_all_images_is_pycocotools_own(seed):
    boxes, detections = scene(seed)
    images = sorted(boxes)
    metrics, matches = evaluate_coco_matched(ground_truth(images, boxes), detections, images, "bbox")
    ap = resampled_ap(unpack_matches(pack_matches({"bbox": matches}))["bbox"], np.ones((1, len(images))))
    assert ap["mAP"][0] == pytest.approx(metrics["bbox_mAP"], abs=1e-12)
    assert ap["mAP50"][0] == pytest.approx(metrics["bbox_mAP50"], abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_resample_scores_what_pycocotools_scores_on_the_images_repeated(seed):
    """Counts (2, 0, 1, 3, 0, 1) stand for a dataset that holds image 1 twice, image 4 three times, ..."""
    boxes, detections = scene(seed)
    images = sorted(boxes)
    counts = np.array([2, 0, 1, 3, 0, 1])
    _, matches = evaluate_coco_matched(ground_truth(images, boxes), detections, images, "bbox")
    repeated_boxes, repeated_detections, new_id = {}, [], 0
    for image, count in zip(images, counts, strict=True):
        for _ in range(count):
            new_id += 1
            repeated_boxes[new_id] = boxes[image]
            repeated_detections += [{**d, "image_id": new_id} for d in detections if d["image_id"] == image]
    expected, _ = evaluate_coco_matched(ground_truth(sorted(repeated_boxes), repeated_boxes), repeated_detections,
                                        sorted(repeated_boxes), "bbox")
    ap = resampled_ap(matches, counts[None])
    assert ap["mAP"][0] == pytest.approx(expected["bbox_mAP"], abs=1e-12)
    assert ap["mAP50"][0] == pytest.approx(expected["bbox_mAP50"], abs=1e-12)


def test_resamples_are_seeded_draws_of_every_image_count():
    counts = resample_counts(50, 200, seed=7)
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, resample_counts(50, 200, seed=7))
    assert not np.array_equal(counts, resample_counts(50, 200, seed=8))


def test_the_interval_is_the_central_95_percent_of_the_finite_samples():
    samples = np.concatenate([np.arange(1, 1001, dtype=float), [np.nan, np.inf]])
    low, high = interval(samples)
    assert low == pytest.approx(25.975) and high == pytest.approx(975.025)
    assert all(np.isnan(interval(np.array([np.nan]))))
