"""``fcmbench datasets check``: is a downloaded COCO or KITTI complete, and if not, what to fetch from where."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

COCO_VAL_IMAGES = 5000
KITTI_TRAINING_FRAMES = 7481  # training/image_2 and training/label_2 (the 3712/3769 split divides these)
COCO_DOWNLOADS = {"val2017": "http://images.cocodataset.org/zips/val2017.zip",
                  "annotations": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"}
KITTI_PAGE = "https://www.cvlibs.net/datasets/kitti/eval_object.php?obj_benchmark=2d"
KITTI_DOWNLOADS = {"image_2": f"data_object_image_2.zip (left colour images, 12 GB) from {KITTI_PAGE}",
                   "label_2": f"data_object_label_2.zip (training labels, 5 MB) from {KITTI_PAGE}"}


@dataclass
class Check:
    what: str
    expected: str
    found: str
    ok: bool
    fix: str = ""


def _examples(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_coco(root: Path, images: int = COCO_VAL_IMAGES) -> list[Check]:
    """COCO 2017 as ``fcmbench run --dataset coco --data-root DIR`` reads it: ``val2017/`` with its 5,000
    images and ``annotations/instances_val2017.json`` naming them."""
    checks, count = [], images
    folder = root / "val2017"
    found = {p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set()
    unzip = f"download {COCO_DOWNLOADS['val2017']} and unzip it in {root}"
    checks.append(Check("val2017/*.jpg", f"{count} images",
                        f"{len(found)}" if folder.is_dir() else "no folder", len(found) == count, unzip))
    annotations = root / "annotations" / "instances_val2017.json"
    fix = f"download {COCO_DOWNLOADS['annotations']} and unzip it in {root}"
    if not annotations.is_file():
        checks.append(Check("annotations/instances_val2017.json", "present", "missing", False, fix))
        return checks
    try:
        listed = {img["file_name"] for img in json.loads(annotations.read_text())["images"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        checks.append(Check("annotations/instances_val2017.json", "COCO JSON", f"unreadable ({err})", False,
                            fix + " again"))
        return checks
    checks.append(Check("annotations/instances_val2017.json", f"{count} images listed", str(len(listed)),
                        len(listed) == count, fix + " again"))
    missing = sorted(listed - found)
    checks.append(Check("images the annotations list", "all present",
                        f"{len(missing)} missing" + (f" ({_examples(missing)})" if missing else ""), not missing,
                        unzip))
    return checks


def check_kitti(root: Path, frames: int = KITTI_TRAINING_FRAMES) -> list[Check]:
    """KITTI 2D object detection as ``--dataset kitti --data-root DIR`` reads it: 7,481 training images in
    ``training/image_2`` and a label file for each in ``training/label_2``."""
    checks = []
    stems = {}
    for folder, suffix in (("image_2", ".png"), ("label_2", ".txt")):
        path = root / "training" / folder
        stems[folder] = {p.stem for p in path.glob(f"*{suffix}")} if path.is_dir() else set()
        fix = f"download {KITTI_DOWNLOADS[folder]} and unzip it in {root} (it creates training/{folder})"
        checks.append(Check(f"training/{folder}/*{suffix}", f"{frames} files",
                            str(len(stems[folder])) if path.is_dir() else "no folder",
                            len(stems[folder]) == frames, fix))
    unlabelled = sorted(stems["image_2"] - stems["label_2"])
    if stems["image_2"] and stems["label_2"]:
        checks.append(Check("a label for every image", "all present",
                            f"{len(unlabelled)} missing" + (f" (e.g. {_examples(unlabelled)})" if unlabelled else ""),
                            not unlabelled, f"download {KITTI_DOWNLOADS['label_2']} again"))
    return checks


CHECKERS = {"coco": check_coco, "kitti": check_kitti}


def problems(checks: list[Check]) -> str:
    """One sentence per failed check: what is wrong and how to fix it."""
    return "; ".join(f"{c.what}: expected {c.expected}, found {c.found} ({c.fix})" for c in checks if not c.ok)
