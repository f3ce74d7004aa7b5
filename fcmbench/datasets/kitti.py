"""``kitti``: KITTI 2D object detection (``training/image_2/*.png`` + ``training/label_2/*.txt``).

Predictions are scored twice: by the official devkit's AP|R40 and AP|R11 (:mod:`fcmbench.evaluation.kitti`, on its
0-100 scale) and by pycocotools on a COCO conversion of the same ground truth (``bbox_mAP`` etc.), so KITTI
results sit in the same tables as COCO ones.

Task models name classes by their own category ids, so a **class map** says which ids are KITTI's Car,
Pedestrian and Cyclist; ids it does not name are dropped. The default, ``coco``, serves torchvision's
COCO-trained detectors zero-shot: COCO car (3) -> Car, person (1) -> Pedestrian, bicycle (2) -> Cyclist. That
is an approximation (ours): COCO's ``person`` includes sitting people and riders, its ``bicycle`` box covers
the bicycle rather than bicycle and rider, and vans and trucks a COCO model calls ``car`` are ignored or false
positives under the devkit's rules. The COCO conversion gives the KITTI classes those same ids, so a detector
fine-tuned by ``fcmbench train-task --dataset kitti`` (labels 1, 2, 3 = Pedestrian, Cyclist, Car) needs no
other map. Any other map is written ``ID=Class,...`` (``--class-map 3=Car,8=Car,1=Pedestrian,2=Cyclist``
also takes COCO trucks as cars).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.base import Dataset, DatasetItem
from fcmbench.datasets.coco import evaluate_coco
from fcmbench.datasets.options import DatasetOptions
from fcmbench.evaluation.kitti import CLASSES, Objects, evaluate, parse_label_file, read_split_file

# the COCO conversion's category ids: COCO's own for person, bicycle and car
CATEGORY_IDS = {"Pedestrian": 1, "Cyclist": 2, "Car": 3}
CLASS_MAPS = {"coco": {1: "Pedestrian", 2: "Cyclist", 3: "Car"}}
# ground truth the devkit ignores for a class (cleanData's neighbouring classes), and DontCare for every class:
# crowd annotations in the COCO conversion, which pycocotools matches by intersection over the detection's area
COCO_IGNORED = {"van": ("Car",), "person_sitting": ("Pedestrian",), "dontcare": CLASSES}
IMAGE_SUFFIX = ".png"


def parse_class_map(spec: str | None) -> dict[int, str]:
    """``coco`` (default) or ``ID=Class,...`` -> category id -> KITTI class."""
    if spec is None or spec in CLASS_MAPS:
        return dict(CLASS_MAPS[spec or "coco"])
    mapping = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        name = next((c for c in CLASSES if c.lower() == value.strip().lower()), None)
        if not key.strip().isdigit() or name is None:
            raise FcmbenchError(f"--class-map {spec!r}: {part.strip()!r} is not ID=Class with Class one of "
                                f"{', '.join(CLASSES)}; or use one of {', '.join(CLASS_MAPS)}")
        mapping[int(key)] = name
    return mapping


class KittiDataset(Dataset):
    """Frames of a KITTI image and label folder, scored by the devkit metric and by COCO mAP."""

    name = "kitti"
    iou_types = ("bbox",)

    def __init__(self, images: Path, labels: Path, frame_ids: list[str] | None = None,
                 class_map: dict[int, str] | None = None) -> None:
        self.images_dir, self.labels_dir = Path(images), Path(labels)
        for folder, what, flag in ((self.images_dir, "image", "--images"), (self.labels_dir, "label", "--labels")):
            if not folder.is_dir():
                raise FcmbenchError(f"KITTI {what} folder {folder} does not exist; pass --data-root DIR (holding "
                                    f"training/image_2 and training/label_2) or {flag} DIR")
        if frame_ids is None:
            frame_ids = sorted(p.stem for p in self.images_dir.glob(f"*{IMAGE_SUFFIX}"))
            if not frame_ids:
                raise FcmbenchError(f"KITTI image folder {self.images_dir} holds no {IMAGE_SUFFIX} images")
        self.frame_ids = frame_ids
        self.class_map = CLASS_MAPS["coco"] if class_map is None else class_map
        self._items = [self._item(frame_id) for frame_id in frame_ids]
        self.ground_truth = self._read_labels()
        self.coco = self._coco_ground_truth()

    def _item(self, frame_id: str) -> DatasetItem:
        if not frame_id.isdigit():
            raise FcmbenchError(f"KITTI frame id {frame_id!r} is not a number like 000123; check the split file "
                                "and the image names")
        path = self.images_dir / f"{frame_id}{IMAGE_SUFFIX}"
        try:
            with Image.open(path) as img:
                width, height = img.size
        except FileNotFoundError:
            raise FcmbenchError(f"image {path} of frame {frame_id} is missing; check --data-root/--images and "
                                "the split file") from None
        except (UnidentifiedImageError, OSError) as err:
            raise FcmbenchError(f"image {path} does not decode: {err}. Replace it (re-extract "
                                "data_object_image_2.zip).") from None
        return DatasetItem(int(frame_id), path, width, height)

    def _read_labels(self) -> Objects:
        frames, kinds, boxes, trunc, occ = [], [], [], [], []
        for index, frame_id in enumerate(self.frame_ids):
            path = self.labels_dir / f"{frame_id}.txt"
            if not path.is_file():
                raise FcmbenchError(f"label file {path} of frame {frame_id} is missing; every image needs its "
                                    "label_2 file (data_object_label_2.zip), or leave the frame out of the split")
            for kind, t, o, x1, y1, x2, y2, _ in parse_label_file(path, detections=False):
                frames.append(index)
                kinds.append(kind)
                boxes.append((x1, y1, x2, y2))
                trunc.append(t)
                occ.append(o)
        return Objects.from_rows(frames, kinds, boxes, trunc, occ)

    def _coco_ground_truth(self) -> COCO:
        """The labels as a COCO dataset: Car, Pedestrian and Cyclist boxes as annotations; DontCare (for
        every class), Van (for Car) and Person_sitting (for Pedestrian) as crowd regions, which pycocotools
        neither counts as misses nor lets detections in them count as false positives."""
        gt = self.ground_truth
        annotations = []
        for frame, kind, (x1, y1, x2, y2) in zip(gt.frame, gt.kind, gt.box, strict=True):
            names = COCO_IGNORED.get(kind, ())
            crowd = bool(names)
            if not crowd:
                name = next((c for c in CLASSES if c.lower() == kind), None)
                names = (name,) if name else ()
            for name in names:
                w, h = float(x2 - x1), float(y2 - y1)
                annotations.append({"id": len(annotations) + 1, "image_id": self._items[frame].image_id,
                                    "category_id": CATEGORY_IDS[name], "bbox": [float(x1), float(y1), w, h],
                                    "area": w * h, "iscrowd": int(crowd)})
        coco = COCO()
        coco.dataset = {"images": [{"id": i.image_id, "file_name": i.path.name, "width": i.width, "height": i.height}
                                   for i in self._items],
                        "annotations": annotations,
                        "categories": [{"id": i, "name": n, "supercategory": "kitti"}
                                                  for n, i in sorted(CATEGORY_IDS.items(), key=lambda c: c[1])]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def items(self) -> list[DatasetItem]:
        return self._items

    def describe(self) -> str:
        # the class map changes the scores, so results made under another map are another setup
        mapping = ",".join(f"{k}={v}" for k, v in sorted(self.class_map.items()))
        return f"kitti ({self.images_dir}, {len(self._items)} frames, class map {mapping})"

    def kitti_results(self, results: list[dict]) -> list[dict]:
        """COCO-format results with their category mapped to the KITTI class (``kitti_class``) and to the COCO
        conversion's category id; categories outside the class map are dropped."""
        mapped = []
        for r in results:
            name = self.class_map.get(int(r["category_id"]))
            if name is not None:
                mapped.append({**r, "category_id": CATEGORY_IDS[name], "kitti_class": name})
        return mapped

    def evaluate(self, results: list[dict], image_ids: list[int], iou_types: tuple[str, ...]) -> dict[str, float]:
        """``kitti_<class>_<easy|mod|hard>_AP40`` / ``_AP11`` (devkit, 0-100), their moderate AP|R40 mean
        ``kitti_mod_AP40``, and pycocotools' ``bbox_*`` (0-1) over ``image_ids``."""
        mapped = self.kitti_results(results)
        metrics = evaluate_coco(self.coco, [{k: v for k, v in r.items() if k != "kitti_class"} for r in mapped],
                                image_ids, "bbox")
        frame_of = {item.image_id: index for index, item in enumerate(self._items)}
        unknown = sorted(set(image_ids) - frame_of.keys())
        if unknown:
            raise FcmbenchError(f"image ids {unknown[:5]} are not frames of {self.describe()}")
        wanted = np.array(sorted(frame_of[i] for i in image_ids), np.int64)
        renumber = np.full(len(self._items), -1, np.int64)
        renumber[wanted] = np.arange(len(wanted))
        gt = self.ground_truth
        keep = renumber[gt.frame] >= 0
        gt = Objects(renumber[gt.frame[keep]], gt.kind[keep], gt.box[keep], gt.truncation[keep], gt.occlusion[keep],
                     gt.score[keep])
        kept = [r for r in mapped if r["image_id"] in frame_of and renumber[frame_of[r["image_id"]]] >= 0]
        det = Objects.from_rows([renumber[frame_of[r["image_id"]]] for r in kept], [r["kitti_class"] for r in kept],
                                [_xyxy(r["bbox"]) for r in kept], score=[r["score"] for r in kept])
        result = evaluate(gt, det, len(wanted))
        metrics.update(result.metrics())
        metrics["kitti_mod_AP40"] = float(np.mean([result.ap40[c]["moderate"] for c in CLASSES]))
        return metrics


def _xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return x, y, x + w, y + h


def kitti(options: DatasetOptions) -> KittiDataset:
    """KITTI 2D detection: ``--data-root DIR`` (``DIR/training/image_2`` and ``DIR/training/label_2``) or
    ``--images DIR --labels DIR``; ``--split-file FILE`` (one frame id a line, e.g. the 3,769-frame val half
    of the common 3712/3769 split) or every image; ``--class-map`` (see the module)."""
    if options.images or options.labels:
        if not (options.images and options.labels):
            raise FcmbenchError("give both --images DIR and --labels DIR, or --data-root for the KITTI layout")
        images, labels = Path(options.images), Path(options.labels)
    elif options.root is not None:
        images = Path(options.root) / "training" / "image_2"
        labels = Path(options.root) / "training" / "label_2"
    else:
        raise FcmbenchError("dataset 'kitti' needs --data-root DIR (holding training/image_2 and "
                            "training/label_2) or --images DIR --labels DIR")
    if options.split and not options.split_file:
        # KITTI ships no named splits (training code asks for "train" and "val"): the ids must come from files
        raise FcmbenchError(f"dataset 'kitti' has no named split {options.split!r}: give its frame ids in a file, "
                            "one a line (--split-file; for validation in training, --val-split-file)")
    frame_ids = read_split_file(Path(options.split_file)) if options.split_file else None
    return KittiDataset(images, labels, frame_ids, parse_class_map(options.class_map))

