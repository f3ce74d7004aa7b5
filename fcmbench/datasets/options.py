"""What a dataset is built from, importable without torch (the CLI parses with it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A 4K frame. Larger images are refused before their pixels are decoded (a small PNG can claim 20000 x 20000);
# --max-image-pixels raises it.
MAX_IMAGE_PIXELS = 4096 * 2160


@dataclass
class DatasetOptions:
    """Options a dataset builder may use; builders ignore what they do not need."""

    root: Path | None = None
    images: Path | None = None
    annotations: Path | None = None
    split: str | None = None
    labels: Path | None = None  # KITTI: label_2 folder (with images)
    split_file: Path | None = None  # KITTI: frame ids, one a line
    class_map: str | None = None  # KITTI: which task-model categories are Car, Pedestrian, Cyclist
