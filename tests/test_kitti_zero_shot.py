"""A real COCO-trained detector scored zero-shot on a KITTI-format folder through the default class map.

The folder holds real COCO val images whose person, bicycle and car boxes are written as KITTI labels
(Pedestrian, Cyclist, Car; trucks as Truck). The SSD outputs COCO ids, so with the default ``coco`` class map
its boxes land on the right KITTI classes, and a wrong map visibly does not.
"""

import csv
import json

import pytest
from PIL import Image

from conftest import SHARED, run_cli, shared_marks
from fcmbench.tasks.ssd_fpnlite import RELATIVE_PATH

MODEL = SHARED / "models" / RELATIVE_PATH
VAL = SHARED / "data" / "coco-val2017-96"
KITTI_NAMES = {1: "Pedestrian", 2: "Cyclist", 3: "Car", 8: "Truck"}

pytestmark = [pytest.mark.slow, *shared_marks(f"models/{RELATIVE_PATH}", "data/coco-val2017-96")]


def coco_as_kitti(root, frames=12):
    data = json.loads((VAL / "instances.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        if ann["category_id"] in KITTI_NAMES:
            by_image.setdefault(ann["image_id"], []).append(ann)
    images = {img["id"]: img for img in data["images"]}
    chosen = sorted(i for i, anns in by_image.items() if any(a["category_id"] in (1, 2, 3) for a in anns))[:frames]
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "label_2").mkdir(parents=True)
    for index, image_id in enumerate(chosen):
        name = images[image_id]["file_name"]
        source = next(p for p in VAL.rglob(name))
        Image.open(source).convert("RGB").save(root / "training" / "image_2" / f"{index:06d}.png")
        lines = []
        for ann in by_image[image_id]:
            x, y, w, h = ann["bbox"]
            lines.append(f"{KITTI_NAMES[ann['category_id']]} 0.00 0 -10 {x:.2f} {y:.2f} {x + w:.2f} {y + h:.2f} "
                         "-1 -1 -1 -1000 -1000 -1000 -10\n")
        (root / "training" / "label_2" / f"{index:06d}.txt").write_text("".join(lines))
    return root


def test_a_coco_detector_zero_shot_through_the_class_map(tmp_path):
    root = coco_as_kitti(tmp_path / "kitti")
    scores = {}
    for label, extra in (("coco", []), ("wrong", ["--class-map", "1=Car,2=Pedestrian,3=Cyclist"])):
        out = tmp_path / label
        run_cli("run", "--methods", "raw", "--dataset", "kitti", "--data-root", root, "--task-model",
                "ssd_mobilenet_fpnlite", "--out", out, *extra)
        run_cli("report", "--out", out)
        scores[label] = next(csv.DictReader((out / "rd.csv").open()))
    assert float(scores["coco"]["bbox_mAP"]) > 0.1
    assert float(scores["wrong"]["bbox_mAP"]) < float(scores["coco"]["bbox_mAP"]) / 3
    assert float(scores["coco"]["kitti_mod_AP40"]) > float(scores["wrong"]["kitti_mod_AP40"])
