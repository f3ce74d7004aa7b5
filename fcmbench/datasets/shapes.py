"""``shapes``: the embedded default, a synthetic COCO-format world drawn by a seeded generator.

Six object classes (one with keypoints) at COCO's small, medium and large scales on textured, cluttered
backgrounds, with occlusion. Files are written once into a cache folder and are byte-identical for the same
seed, so every machine benchmarks the same images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from fcmbench.core.errors import FcmbenchError
from fcmbench.core.paths import default_cache
from fcmbench.datasets.coco import CocoDataset
from fcmbench.datasets.options import DatasetOptions

GENERATOR_VERSION = 1
IMAGE_SIZE = 256
SPLITS = {"train": (1600, 1_000_003), "val": (200, 2_000_003)}  # images, seed offset
CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")
STAR_KEYPOINTS = ("center", "tip1", "tip2", "tip3", "tip4", "tip5")
MIN_VISIBLE = 0.35  # objects occluded beyond this are dropped from the ground truth


@dataclass
class Drawn:
    category_id: int
    mask: np.ndarray  # full (amodal) mask, bool [H, W]
    keypoints: list[tuple[float, float]]


def shapes(options: DatasetOptions) -> CocoDataset:
    split = options.split or "val"
    if split not in SPLITS:
        raise FcmbenchError(f"dataset 'shapes' has splits {', '.join(SPLITS)}, not {split!r}")
    root = Path(options.root) if options.root else default_cache() / "datasets" / f"shapes-v{GENERATOR_VERSION}"
    folder = ensure_split(root, split)
    dataset = CocoDataset(folder / "images", folder / "annotations.json", name="shapes")
    dataset.default_task_model = "shapes_rcnn"  # the embedded default's own detector
    return dataset


def ensure_split(root: Path, split: str, seed: int = 0) -> Path:
    """Generate the split into ``root/split`` unless a complete copy is there."""
    folder = root / split
    if (folder / "annotations.json").is_file():
        return folder
    count, offset = SPLITS[split]
    write_split(folder, count, seed + offset)
    return folder


def write_split(folder: Path, count: int, seed: int) -> None:
    # one partial folder per process: two processes may generate the same split at once
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        image, objects = draw_scene(np.random.default_rng([seed, index]))
        file_name = f"{image_id:06d}.png"
        image.save(partial / "images" / file_name, optimize=False)
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        annotations += annotate(objects, image_id, first_id=len(annotations) + 1)
    ground_truth = {
        "info": {"description": "fcmbench synthetic shapes", "version": GENERATOR_VERSION, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }
    (partial / "annotations.json").write_text(json.dumps(ground_truth, sort_keys=True))
    try:
        partial.rename(folder)  # atomic: a killed generator never leaves a half split behind
    except OSError:  # another process finished the same split first
        if not (folder / "annotations.json").is_file():
            raise
        shutil.rmtree(partial)


def categories() -> list[dict]:
    cats = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    star = cats[CLASSES.index("star")]
    star["keypoints"] = list(STAR_KEYPOINTS)
    star["skeleton"] = [[1, k] for k in range(2, len(STAR_KEYPOINTS) + 1)]
    return cats


def draw_scene(rng: np.random.Generator) -> tuple[Image.Image, list[Drawn]]:
    canvas = background(rng)
    objects = []
    for _ in range(int(rng.integers(2, 9))):
        drawn = draw_object(rng)
        canvas = np.where(drawn.mask[..., None], object_texture(rng), canvas)
        objects.append(drawn)
    add_clutter(canvas, rng)
    return Image.fromarray(canvas.astype(np.uint8)), objects


def background(rng: np.random.Generator) -> np.ndarray:
    """A colour gradient plus blurred noise: texture without objects."""
    ramp = np.linspace(0.0, 1.0, IMAGE_SIZE)
    a, b = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    horizontal = rng.random() < 0.5
    weights = ramp[None, :, None] if horizontal else ramp[:, None, None]
    base = a * (1 - weights) + b * weights
    noise = Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE // 8, IMAGE_SIZE // 8, 3), dtype=np.uint8))
    noise = np.asarray(noise.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float64)
    fine = rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 1))
    return np.clip(base + (noise - 128) * 0.35 + fine, 0, 255) * np.ones((1, 1, 3))


def object_texture(rng: np.random.Generator) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    colour[int(rng.integers(0, 3))] = rng.choice([20.0, 235.0])  # saturated, so objects stand out
    stripes = np.sin(np.arange(IMAGE_SIZE) * rng.uniform(0.2, 0.8))[:, None, None] * rng.uniform(0, 25)
    return np.clip(colour + stripes + rng.normal(0, 5, (IMAGE_SIZE, IMAGE_SIZE, 1)), 0, 255)


def draw_object(rng: np.random.Generator) -> Drawn:
    category = int(rng.integers(0, len(CLASSES)))
    size = float(np.exp(rng.uniform(np.log(12), np.log(170))))  # spans COCO small/medium/large
    cx, cy = rng.uniform(0, IMAGE_SIZE, 2)
    angle = rng.uniform(0, 2 * math.pi)
    img = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    pen = ImageDraw.Draw(img)
    r = size / 2
    keypoints: list[tuple[float, float]] = []
    name = CLASSES[category]
    if name == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "ring":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        pen.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=0)
    elif name == "square":
        pen.polygon(polygon(cx, cy, r, 4, angle), fill=255)
    elif name == "triangle":
        pen.polygon(polygon(cx, cy, r, 3, angle), fill=255)
    elif name == "star":
        tips = polygon(cx, cy, r, 5, angle)
        inner = polygon(cx, cy, r * 0.42, 5, angle + math.pi / 5)
        pen.polygon([p for pair in zip(tips, inner, strict=True) for p in pair], fill=255)
        start = min(range(5), key=lambda k: tips[k][1])  # topmost tip first, then clockwise
        keypoints = [(cx, cy)] + [tips[(start + k) % 5] for k in range(5)]
    else:  # cross
        for bar in (angle, angle + math.pi / 2):
            dx, dy = math.cos(bar), math.sin(bar)
            w = r * 0.28
            pen.polygon([(cx + dx * r - dy * w, cy + dy * r + dx * w), (cx + dx * r + dy * w, cy + dy * r - dx * w),
                         (cx - dx * r + dy * w, cy - dy * r - dx * w), (cx - dx * r - dy * w, cy - dy * r + dx * w)],
                        fill=255)
    return Drawn(category + 1, np.asarray(img) > 127, keypoints)


def polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def add_clutter(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Thin lines and specks that are not objects (they sit on top, like wires and dirt)."""
    layer = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    pen = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, 5))):
        pen.line([tuple(rng.uniform(0, IMAGE_SIZE, 2)), tuple(rng.uniform(0, IMAGE_SIZE, 2))], fill=255, width=1)
    for _ in range(int(rng.integers(0, 12))):
        x, y = rng.uniform(0, IMAGE_SIZE, 2)
        pen.ellipse([x, y, x + 2, y + 2], fill=255)
    mask = np.asarray(layer.filter(ImageFilter.MaxFilter(1))) > 127
    canvas[mask] = rng.uniform(0, 255, 3)


def annotate(objects: list[Drawn], image_id: int, first_id: int) -> list[dict]:
    """Visible masks (later objects occlude earlier ones), their boxes, and star keypoints."""
    annotations = []
    covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for drawn in reversed(objects):
        visible = drawn.mask & ~covered
        covered |= drawn.mask
        full = int(drawn.mask.sum())
        if full == 0 or visible.sum() < MIN_VISIBLE * full or visible.sum() < 16:
            continue
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        ann = {
            "id": first_id + len(annotations),
            "image_id": image_id,
            "category_id": drawn.category_id,
            "bbox": [x, y, w, h],
            "area": float(mask_utils.area(rle)),
            "iscrowd": 0,
            "segmentation": {"size": [IMAGE_SIZE, IMAGE_SIZE], "counts": rle["counts"].decode()},
        }
        if drawn.keypoints:
            ann["keypoints"], ann["num_keypoints"] = keypoint_list(drawn.keypoints, visible)
        annotations.append(ann)
    return sorted(annotations, key=lambda a: a["id"])


def keypoint_list(points: list[tuple[float, float]], visible: np.ndarray) -> tuple[list[float], int]:
    flat, labelled = [], 0
    for x, y in points:
        xi, yi = int(round(x)), int(round(y))
        inside = 0 <= xi < IMAGE_SIZE and 0 <= yi < IMAGE_SIZE
        if not inside:
            flat += [0.0, 0.0, 0]
            continue
        flag = 2 if visible[min(yi, IMAGE_SIZE - 1), min(xi, IMAGE_SIZE - 1)] else 1
        flat += [round(x, 2), round(y, 2), flag]
        labelled += 1
    return flat, labelled
