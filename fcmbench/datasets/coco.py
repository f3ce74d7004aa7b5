"""COCO-format datasets evaluated with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.base import Dataset, DatasetItem
from fcmbench.datasets.options import DatasetOptions
from fcmbench.evaluation.bootstrap import Matches

# COCOeval.stats order, named the way rd.csv columns are.
STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")
KEYPOINT_STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_medium", "mAP_large")


class CocoDataset(Dataset):
    """Images in a folder plus an ``instances_*.json`` ground truth."""

    def __init__(self, images: Path, annotations: Path, name: str = "coco") -> None:
        self.name = name
        self.images_dir = Path(images)
        self.annotations_file = Path(annotations)
        if not self.images_dir.is_dir():
            raise FcmbenchError(f"image folder {self.images_dir} does not exist; pass --images DIR")
        self.coco = load_ground_truth(self.annotations_file)
        self.iou_types = self._available_iou_types()
        self._items = [self._item(info) for info in sorted(self.coco.dataset["images"], key=lambda i: i["id"])]

    def _item(self, info: dict) -> DatasetItem:
        sides = [info.get("width"), info.get("height")]
        if not all(is_id(side) and side > 0 for side in sides) and all(side is not None for side in sides):
            raise FcmbenchError(f"annotation file {self.annotations_file}: image {info['id']} lacks a valid width "
                                f"and height ({sides[0]!r:.20}, {sides[1]!r:.20}): give positive integers")
        try:
            return DatasetItem(int(info["id"]), self.images_dir / info["file_name"], int(info["width"]),
                               int(info["height"]))
        except (KeyError, TypeError, ValueError) as err:
            raise FcmbenchError(
                f"annotation file {self.annotations_file}: image entry {info!r:.120} lacks a valid {err}; "
                "each image needs id, file_name, width and height"
            ) from None

    def _available_iou_types(self) -> tuple[str, ...]:
        anns = self.coco.dataset["annotations"]
        types = ["bbox"]
        if anns and all("segmentation" in a for a in anns):
            types.append("segm")
        if any(c.get("keypoints") for c in self.coco.dataset["categories"]):
            types.append("keypoints")
        return tuple(types)

    def items(self) -> list[DatasetItem]:
        return self._items

    def describe(self) -> str:
        return f"{self.name} ({self.images_dir}, {self.annotations_file.name})"

    def evaluate_matched(self, results: list[dict], image_ids: list[int],
                         iou_types: tuple[str, ...]) -> tuple[dict[str, float], dict[str, Matches]]:
        metrics: dict[str, float] = {}
        matches: dict[str, Matches] = {}
        for iou_type in iou_types:
            if iou_type not in self.iou_types:
                continue
            scored = [r for r in results if _has(r, iou_type)]
            values, matches[iou_type] = evaluate_coco_matched(self.coco, scored, image_ids, iou_type)
            metrics.update(values)
        return metrics, matches


def _has(result: dict, iou_type: str) -> bool:
    return {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type] in result


def evaluate_coco(gt: COCO, results: list[dict], image_ids: list[int], iou_type: str) -> dict[str, float]:
    """pycocotools' COCOeval on ``image_ids``; no detections at all is an AP of 0, as COCO defines it."""
    return evaluate_coco_matched(gt, results, image_ids, iou_type)[0]


def evaluate_coco_matched(gt: COCO, results: list[dict], image_ids: list[int],
                          iou_type: str) -> tuple[dict[str, float], Matches]:
    """The metrics and the per-image matching they were accumulated from (for the bootstrap)."""
    names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
    if not results:
        return {f"{iou_type}_{n}": 0.0 for n in names}, unmatched(gt, sorted(image_ids), iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval reports -1 where a size range has no ground truth; keep that as "not available".
    stats = evaluator.stats[: len(names)]
    metrics = {f"{iou_type}_{n}": (float(v) if v >= 0 else float("nan")) for n, v in zip(names, stats, strict=True)}
    return metrics, match_table(evaluator)


def match_table(evaluator: COCOeval) -> Matches:
    """``evaluateImg``'s outcome for the area range "all" (the first) and the largest detection budget, in the
    order pycocotools accumulates it."""
    params = evaluator.params
    areas, images, budget = len(params.areaRng), len(params.imgIds), params.maxDets[-1]
    thresholds = len(params.iouThrs)
    n_gt = np.zeros((len(params.catIds), images), dtype=np.int64)
    parts = []
    for k in range(len(params.catIds)):
        found = [(i, e) for i in range(images) if (e := evaluator.evalImgs[k * areas * images + i]) is not None]
        for i, e in found:
            n_gt[k, i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        scores = np.concatenate([e["dtScores"][:budget] for _, e in found] or [np.zeros(0)])
        order = np.argsort(-scores, kind="mergesort")  # as pycocotools' accumulate
        image = np.concatenate([np.full(len(e["dtScores"][:budget]), i) for i, e in found] or [np.zeros(0, int)])
        matched = np.concatenate([e["dtMatches"][:, :budget] > 0 for _, e in found] or [np.zeros((thresholds, 0))],
                                 axis=1)
        ignored = np.concatenate([e["dtIgnore"][:, :budget] for _, e in found] or [np.zeros((thresholds, 0))],
                                 axis=1)
        parts.append((np.full(len(order), k), image[order], matched[:, order], ignored[:, order]))
    return Matches(np.asarray(params.imgIds), n_gt, np.concatenate([p[0] for p in parts]).astype(np.int64),
                   np.concatenate([p[1] for p in parts]).astype(np.int64),
                   np.concatenate([p[2] for p in parts], axis=1).astype(bool),
                   np.concatenate([p[3] for p in parts], axis=1).astype(bool))


def unmatched(gt: COCO, image_ids: list[int], iou_type: str) -> Matches:
    """No detections: only the ground truth that counts (not crowd; for keypoints, with keypoints)."""
    categories = sorted(gt.getCatIds())
    n_gt = np.zeros((len(categories), len(image_ids)), dtype=np.int64)
    for i, image_id in enumerate(image_ids):
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[image_id])):
            counts = not ann.get("iscrowd", 0) and not ann.get("ignore", 0)
            if iou_type == "keypoints":
                counts = counts and ann.get("num_keypoints", 0) > 0
            if counts and ann["category_id"] in categories:
                n_gt[categories.index(ann["category_id"]), i] += 1
    thresholds = 10
    empty = np.zeros(0, dtype=np.int64)
    return Matches(np.asarray(image_ids), n_gt, empty, empty, np.zeros((thresholds, 0), bool),
                   np.zeros((thresholds, 0), bool))


def load_ground_truth(path: Path) -> COCO:
    """Parse and check an annotation file, with one clear message per way it can be wrong."""
    if not path.is_file():
        raise FcmbenchError(f"annotation file {path} does not exist; pass --annotations FILE")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FcmbenchError(f"annotation file {path} is not valid JSON: {err}") from None
    except UnicodeDecodeError:
        raise FcmbenchError(f"annotation file {path} is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise FcmbenchError(f"annotation file {path} must hold a JSON object with images/annotations/categories")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise FcmbenchError(f"annotation file {path} lacks the list(s) {', '.join(missing)} of the COCO format")
    check_entries(data, path)
    for ann in data["annotations"]:
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_entries(data: dict, path: Path) -> None:
    """Every image, category and annotation entry of the COCO format, checked before pycocotools indexes them
    (it would fail later, deep inside, on a list for an id or a string for a box)."""
    where = f"annotation file {path}"
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= ann.keys():
            raise FcmbenchError(f"{where}: annotation {ann!r:.120} needs image_id, category_id and bbox")
    for img in data["images"]:
        if not isinstance(img, dict) or not is_id(img.get("id")):
            raise FcmbenchError(f"{where}: image entry {img!r:.120} needs an integer id")
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not is_id(cat.get("id")):
            raise FcmbenchError(f"{where}: category entry {cat!r:.120} needs an integer id")
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for ann in data["annotations"]:
        name = f"annotation {ann.get('id', '(no id)')!r:.40}"
        if not is_id(ann["image_id"]) or ann["image_id"] not in image_ids:
            raise FcmbenchError(f"{where}: {name} refers to unknown image {ann['image_id']!r:.40}; image_id must be "
                                "the integer id of an entry of images")
        if not is_id(ann["category_id"]) or ann["category_id"] not in category_ids:
            raise FcmbenchError(f"{where}: {name} has category_id {ann['category_id']!r:.40}, not the integer id "
                                "of an entry of categories")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(map(is_number, box)) and min(box[2:]) >= 0):
            raise FcmbenchError(f"{where}: {name} has bbox {box!r:.60}; a bbox is [x, y, width, height], four "
                                "finite numbers with width and height not negative")


def coco(options: DatasetOptions) -> CocoDataset:
    """COCO 2017: ``--data-root`` with ``val2017/`` and ``annotations/instances_val2017.json``, or an
    explicit ``--images DIR --annotations FILE`` pair."""
    split = options.split or "val2017"
    if options.images or options.annotations:
        if not (options.images and options.annotations):
            raise FcmbenchError("give both --images DIR and --annotations FILE, or --data-root for the COCO layout")
        return CocoDataset(options.images, options.annotations)
    if options.root is None:
        raise FcmbenchError(
            "dataset 'coco' needs --data-root DIR (holding val2017/ and annotations/instances_val2017.json) "
            "or --images DIR --annotations FILE"
        )
    root = Path(options.root)
    return CocoDataset(root / split, root / "annotations" / f"instances_{split}.json")
