"""The images and features a trainer learns from: a dataset's train split (its val split validates) or a folder
of unlabelled images (its last ``VALIDATION_IMAGES`` validate), and a task model's features of them, cached."""

from __future__ import annotations

from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.paths import default_cache
from fcmbench.core.training import TrainRequest
from fcmbench.datasets.base import Dataset, DatasetItem, image_folder_items
from fcmbench.datasets.options import DatasetOptions
from fcmbench.pipeline.runner import ImageWork
from fcmbench.tasks.base import TaskModel, TaskModelOptions

VALIDATION_IMAGES = 16


def task_model_of(request: TrainRequest) -> TaskModel:
    if not request.task_model:
        raise FcmbenchError(f"{request.method} trains on a task model's features: give --task-model NAME")
    return registry.task_models.get(request.task_model)(TaskModelOptions(request.weights))


def quality_of(request: TrainRequest) -> int:
    if request.quality is None:
        raise FcmbenchError(f"give the quality to train: fcmbench train {request.method} --quality 1..6")
    return request.quality


def training_images(request: TrainRequest) -> tuple[Dataset | None, list[DatasetItem], list[DatasetItem]]:
    """(training dataset or None, training items, validation items) from --dataset or --image-folder."""
    if request.image_folder:
        items = image_folder_items(request.image_folder)
        if len(items) <= VALIDATION_IMAGES:
            raise FcmbenchError(f"image folder {request.image_folder} has {len(items)} images; training needs more "
                                f"than the {VALIDATION_IMAGES} it holds out for validation")
        return None, items[:-VALIDATION_IMAGES][: request.images], items[-VALIDATION_IMAGES:]
    if not request.dataset:
        raise FcmbenchError("give the training images: --dataset NAME or --image-folder DIR")
    build = registry.datasets.get(request.dataset)
    train_set = build(DatasetOptions(root=request.data_root, split="train", split_file=request.split_file))
    val_items = build(DatasetOptions(root=request.data_root, split="val", split_file=request.val_split_file)
                      ).items()[:VALIDATION_IMAGES]
    if {i.path for i in val_items} & {i.path for i in train_set.items()}:
        raise FcmbenchError(f"the validation images of --dataset {request.dataset} are among its training images; "
                            "give separate frames (KITTI: --split-file and --val-split-file)")
    return train_set, train_set.items()[: request.images], val_items


def training_features(request: TrainRequest, task: TaskModel) -> tuple:
    """(training dataset or None, training items, their features, validation features)."""
    train_set, train_items, val_items = training_images(request)
    cache = (request.cache or default_cache()) / "features"
    features = [ImageWork(item, task, cache).features() for item in train_items + val_items]
    return train_set, train_items, features[: len(train_items)], features[len(train_items):]
