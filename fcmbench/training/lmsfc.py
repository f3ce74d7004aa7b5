"""The trainer of the L-MSFC family (``lmsfc``, ``lmsfc-nocm``, ``tamsf``) on a task model's features."""

from __future__ import annotations

from fcmbench.core import registry
from fcmbench.core.codec import CodecOptions
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.training import Trained, TrainRequest
from fcmbench.tasks.base import TrainableTask
from fcmbench.training.codecs import config_of, kept_weights, train_codec
from fcmbench.training.data import quality_of, task_model_of, training_features
from fcmbench.training.detector import targets_of
from fcmbench.zoo.checkpoints import checkpoint_path


def train(request: TrainRequest) -> Trained:
    quality = quality_of(request)
    task = task_model_of(request)
    task_loss = getattr(registry.methods.get(request.method), "task_loss", False) and not request.no_task_loss
    if task_loss and (request.image_folder or not isinstance(task, TrainableTask)):
        raise FcmbenchError(f"{request.method} trains with the detection loss of {task.name} on labelled images, "
                            f"which {'--image-folder lacks' if request.image_folder else 'this task model cannot give'}"
                            "; use --dataset with a trainable task model, or --no-task-loss")
    train_set, train_items, train_features, val_features = training_features(request, task)
    if task_loss and "segm" in task.iou_types and "segm" not in train_set.iou_types:
        raise FcmbenchError(f"{request.method}'s detection loss of {task.name} includes its mask head, and "
                            f"--dataset {request.dataset} has no masks; use a box-only detector (e.g. one fine-tuned "
                            "by train-task) or --no-task-loss")
    path = checkpoint_path(request.method, quality, CodecOptions(task_model=task.name, checkpoints=request.out))
    targets = [targets_of(train_set, item.image_id) for item in train_items] if task_loss else None
    result = train_codec(config_of(request, quality, path), train_features, val_features,
                         task if targets else None, targets)
    return Trained(path, kept_weights(result["history"]))
