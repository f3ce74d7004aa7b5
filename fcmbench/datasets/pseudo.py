"""Ground truth made by the task model itself, for unlabelled images.

MFIBA's task loss-rate model and importance labels need a per-image mAP. On a folder of unlabelled images
(e.g. COCO train2017 without its annotations) the uncompressed model's own confident detections stand in for
the ground truth, so the measured loss is the accuracy lost to coding relative to the uncompressed pipeline
(the reference measures it against human labels; this is our substitute when there are none).
"""

from __future__ import annotations

import contextlib
import io

from pycocotools.coco import COCO

from fcmbench.core.featureset import FeatureSet
from fcmbench.datasets.base import Dataset, DatasetItem
from fcmbench.datasets.coco import evaluate_coco

DEFAULT_SCORE = 0.5


class PseudoLabelled(Dataset):
    """Images whose ground truth is the task model's uncompressed detections scoring at least ``min_score``."""

    def __init__(self, items: list[DatasetItem], task, features: dict[int, FeatureSet],
                 min_score: float = DEFAULT_SCORE, name: str = "pseudo-labelled") -> None:
        self.name = name
        self._items = items
        self.min_score = min_score
        self.coco = _ground_truth(items, task, features, min_score)

    def items(self) -> list[DatasetItem]:
        return self._items

    def describe(self) -> str:
        return f"{self.name} ({len(self._items)} images, detections scoring >= {self.min_score})"

    def evaluate(self, results: list[dict], image_ids: list[int], iou_types: tuple[str, ...]) -> dict[str, float]:
        return evaluate_coco(self.coco, results, image_ids, "bbox") if "bbox" in iou_types else {}


def _ground_truth(items: list[DatasetItem], task, features: dict[int, FeatureSet], min_score: float) -> COCO:
    annotations, categories = [], set()
    for item in items:
        for det in task.to_coco_results(item.image_id, task.back(features[item.image_id])):
            if det["score"] < min_score:
                continue
            w, h = det["bbox"][2], det["bbox"][3]
            annotations.append({"id": len(annotations) + 1, "image_id": item.image_id, "bbox": det["bbox"],
                                "category_id": det["category_id"], "area": w * h, "iscrowd": 0})
            categories.add(det["category_id"])
    gt = COCO()
    gt.dataset = {"images": [{"id": i.image_id, "file_name": i.path.name, "width": i.width, "height": i.height}
                             for i in items],
                  "annotations": annotations, "categories": [{"id": c} for c in sorted(categories)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt
