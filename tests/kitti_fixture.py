"""A small KITTI-format folder (``training/image_2``, ``training/label_2``) the tests write themselves.

Scenes come from the embedded ``shapes`` generator, so the shipped ``shapes_rcnn`` detects their objects:
squares are labelled Car, circles Pedestrian, triangles Cyclist (the class map ``2=Car,1=Pedestrian,3=Cyclist``
turns its categories into KITTI's), stars Van, rings DontCare, crosses Misc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcmbench.datasets.shapes import CLASSES, annotate, draw_scene

KITTI_NAMES = {"square": "Car", "circle": "Pedestrian", "triangle": "Cyclist", "star": "Van", "ring": "DontCare",
               "cross": "Misc"}
SHAPES_CLASS_MAP = "2=Car,1=Pedestrian,3=Cyclist"


def label_line(kind: str, box, trunc: float = 0.0, occ: int = 0, score: float | None = None) -> str:
    x1, y1, x2, y2 = box
    line = f"{kind} {trunc:.2f} {occ} -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
    return line + (f" {score:.4f}" if score is not None else "")


def write_kitti(root: Path, frames: int = 6, seed: int = 7) -> Path:
    """``frames`` scenes as KITTI frames 000000.. under ``root/training``; returns ``root``."""
    images, labels = root / "training" / "image_2", root / "training" / "label_2"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for index in range(frames):
        rng = np.random.default_rng([seed, index])
        image, objects = draw_scene(rng)
        image.save(images / f"{index:06d}.png")
        lines = []
        for ann in annotate(objects, index, 1):
            x, y, w, h = ann["bbox"]
            kind = KITTI_NAMES[CLASSES[ann["category_id"] - 1]]
            occ = int(rng.integers(0, 3)) if kind != "DontCare" else -1
            lines.append(label_line(kind, (x, y, x + w, y + h), 0.0 if kind != "DontCare" else -1, occ))
        (labels / f"{index:06d}.txt").write_text("".join(f"{line}\n" for line in lines))
    return root
