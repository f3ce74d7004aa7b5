"""The split task-model interface: ``front(image) -> FeatureSet`` and ``back(FeatureSet) -> prediction``."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from pycocotools import mask as mask_utils

from fcmbench.core.errors import FcmbenchError
from fcmbench.core.featureset import FeatureSet


@dataclass
class TaskModelOptions:
    """``weights``: None for the model's default weights, "none" for random ones, or a file path."""

    weights: str | None = None
    device: str = "cpu"


@runtime_checkable
class TrainableTask(Protocol):
    """A task model that can give its own training loss on (reconstructed) features, with its weights frozen:
    what a task-aware codec (TA-MSF) trains with."""

    def training_loss(self, features: FeatureSet, levels: dict[str, torch.Tensor], target: dict) -> torch.Tensor: ...


class TaskModel(ABC):
    """A detector cut after its feature pyramid.

    Predictions are dicts of tensors in original image coordinates, torchvision style: ``boxes`` (xyxy),
    ``labels``, ``scores`` and optionally ``masks`` and ``keypoints``.
    """

    name: str
    iou_types: tuple[str, ...] = ("bbox",)
    weights_id: str = ""
    warnings: tuple[str, ...] = ()

    @property
    @abstractmethod
    def level_names(self) -> tuple[str, ...]: ...

    @abstractmethod
    def front(self, image: torch.Tensor) -> FeatureSet:
        """Float RGB ``[3, H, W]`` in [0, 1] -> features (on the CPU)."""

    @abstractmethod
    def back(self, features: FeatureSet) -> dict[str, torch.Tensor]: ...

    def front_batch(self, images: list[torch.Tensor]) -> list[FeatureSet]:
        """The fronts of several images, each exactly what ``front`` gives it alone (models that can run a batch
        at once override this)."""
        return [self.front(image) for image in images]

    def back_batch(self, features: list[FeatureSet]) -> list[dict[str, torch.Tensor]]:
        """The backs of several feature sets, each exactly what ``back`` gives it alone."""
        return [self.back(feature) for feature in features]

    def require_levels(self, features: FeatureSet) -> None:
        """Decoded features must hold every level the back reads."""
        missing = [name for name in self.level_names if name not in features]
        if missing:
            raise FcmbenchError(f"task model {self.name} needs levels {missing} that the decoded features lack")

    @abstractmethod
    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unsplit network, for checking that the split changes nothing."""

    @abstractmethod
    def preprocessing_id(self) -> str:
        """Everything between the image file and the front that changes the features."""

    def category_id(self, label: int) -> int:
        """Dataset category id of a network label (torchvision's COCO models use COCO ids directly)."""
        return int(label)

    def to_coco_results(self, image_id: int, prediction: dict[str, torch.Tensor]) -> list[dict]:
        return prediction_to_coco(image_id, prediction, self.category_id)


def prediction_to_coco(image_id: int, prediction: dict[str, torch.Tensor], category_id) -> list[dict]:
    """torchvision-style prediction -> COCO result dicts (masks as RLE, keypoints flattened)."""
    boxes = prediction["boxes"].detach().cpu().double().numpy()
    scores = prediction["scores"].detach().cpu().double().numpy()
    labels = prediction["labels"].detach().cpu().numpy()
    masks = prediction.get("masks")
    keypoints = prediction.get("keypoints")
    rles = None
    if masks is not None and len(masks):
        # one pycocotools call for every mask (as [H, W, N]): a third of the time of one call per mask
        binary = (masks[:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    results = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels, strict=True)):
        x0, y0, x1, y1 = (round(float(v), 3) for v in box)
        result = {"image_id": int(image_id), "category_id": category_id(int(label)),
                  "bbox": [x0, y0, round(x1 - x0, 3), round(y1 - y0, 3)], "score": round(float(score), 5)}
        if rles is not None:
            result["segmentation"] = {"size": list(rles[i]["size"]), "counts": rles[i]["counts"].decode()}
        if keypoints is not None:
            result["keypoints"] = [round(float(v), 2) for v in keypoints[i].detach().cpu().flatten()]
        results.append(result)
    return results


@contextmanager
def native_kernels(device: str) -> Iterator[None]:
    """On the CPU the task networks run PyTorch's own convolution kernels rather than oneDNN's: the features
    (and so every cached feature set and golden stream) were made with them. The switch is process-wide: the
    runner calls task models from one thread on the CPU."""
    if device != "cpu":
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def batch_groups(things: list, shape: Callable, device: str) -> list[list[int]]:
    """Indices of ``things`` that go through a network together, in their order: those of one ``shape(thing)``
    on a GPU; one at a time on the CPU, where batches measured slower and where a batch's sums are blocked and
    split across threads otherwise than one image's (on some CPUs an image's features changed in their last
    bits with its batch), so an image's predictions never depend on its neighbours there."""
    if device == "cpu":
        return [[i] for i in range(len(things))]
    groups: dict[str, list[int]] = {}
    for i, thing in enumerate(things):
        groups.setdefault(repr(shape(thing)), []).append(i)
    return list(groups.values())


def in_batches(things: list, shape: Callable, device: str, run: Callable[[list], list]) -> list:
    """``run`` on each of ``batch_groups``'s groups of ``things``, its results back in the order of ``things``."""
    out = [None] * len(things)
    for members in batch_groups(things, shape, device):
        for i, result in zip(members, run([things[i] for i in members]), strict=True):
            out[i] = result
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
