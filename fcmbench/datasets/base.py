"""What every dataset provides to the runner."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.options import MAX_IMAGE_PIXELS
from fcmbench.evaluation.bootstrap import Matches


@dataclass(frozen=True)
class DatasetItem:
    image_id: int
    path: Path
    width: int
    height: int


class Dataset(ABC):
    name: str
    iou_types: tuple[str, ...] = ("bbox",)
    default_task_model: str = "faster_rcnn_r50_fpn"  # what `run` uses without --task-model

    @abstractmethod
    def items(self) -> list[DatasetItem]: ...

    def evaluate(self, results: list[dict], image_ids: list[int], iou_types: tuple[str, ...]) -> dict[str, float]:
        """Metrics of COCO-format ``results`` over ``image_ids``."""
        return self.evaluate_matched(results, image_ids, iou_types)[0]

    def evaluate_matched(self, results: list[dict], image_ids: list[int],
                         iou_types: tuple[str, ...]) -> tuple[dict[str, float], dict[str, Matches]]:
        """The metrics and, per IoU type, the per-image matching behind them (the report's bootstrap resamples
        it); a dataset without COCO-style matching returns no tables and its points get no intervals."""
        return self.evaluate(results, image_ids, iou_types), {}

    def describe(self) -> str:
        return self.name


def load_image(item: DatasetItem, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Float RGB ``[3, H, W]`` in [0, 1]; a file that does not decode or is larger than ``max_pixels`` is an error
    naming it."""
    too_large = (f"image {item.path} (id {item.image_id}) has more than {max_pixels} pixels (--max-image-pixels); "
                 "raise the limit if the image is genuine")
    try:
        with Image.open(item.path) as img:  # reads the header only: the size is known before any pixel
            if img.width * img.height > max_pixels:
                raise FcmbenchError(f"{too_large} ({img.width}x{img.height})")
            array = np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError:
        raise FcmbenchError(too_large) from None
    except FileNotFoundError:
        raise FcmbenchError(f"image {item.path} (id {item.image_id}) is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise FcmbenchError(
            f"image {item.path} (id {item.image_id}) does not decode: {err}. Replace or remove it."
        ) from None
    if array.shape[:2] != (item.height, item.width):
        raise FcmbenchError(
            f"image {item.path} is {array.shape[1]}x{array.shape[0]} but the annotations say "
            f"{item.width}x{item.height}; fix the annotation file"
        )
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_folder_items(folder: Path) -> list[DatasetItem]:
    """Every image of a folder, by file name, without labels (for training feature codecs)."""
    if not folder.is_dir():
        raise FcmbenchError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FcmbenchError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    items = []
    for index, path in enumerate(paths, start=1):
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError) as err:
            raise FcmbenchError(f"image {path} does not decode: {err}. Replace or remove it.") from None
        items.append(DatasetItem(index, path, width, height))
    return items
