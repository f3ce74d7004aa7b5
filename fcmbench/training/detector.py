"""``fcmbench train-task``: train a detector on a dataset's boxes (and masks, where it has them).

The embedded default's detector is trained from scratch on the ``shapes`` train split; a torchvision R-CNN is
fine-tuned the same way on another dataset, e.g. KITTI (:func:`finetune_model`). One loop for both: SGD with
warm-up and a cosine schedule, horizontal flips, resumable from ``<out>.ckpt`` after every epoch."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.base import Dataset, load_image
from fcmbench.datasets.options import DatasetOptions
from fcmbench.datasets.shapes import shapes
from fcmbench.tasks.base import TaskModel, TaskModelOptions
from fcmbench.tasks.shapes_rcnn import build_shapes_rcnn

FINETUNABLE = ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_v2")


def targets_of(dataset: Dataset, image_id: int) -> dict[str, torch.Tensor]:
    """Training targets from the dataset's COCO ground truth: crowd regions (KITTI's DontCare, Van and
    Person_sitting) are left out, masks are included where the dataset has them."""
    anns = [a for a in dataset.coco.imgToAnns[image_id] if not a.get("iscrowd") and a["bbox"][2] > 0
            and a["bbox"][3] > 0]  # torchvision refuses empty boxes
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)}
    if "segm" in dataset.iou_types:
        info = dataset.coco.imgs[image_id]
        masks = (np.stack([dataset.coco.annToMask(a) for a in anns]) if anns
                 else np.zeros((0, info["height"], info["width"]), np.uint8))
        target["masks"] = torch.from_numpy(masks)
    return target


def flipped(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    out = {**target, "boxes": boxes}
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out


def finetune_model(task_model: str, weights: str | None, classes: int) -> torch.nn.Module:
    """A torchvision R-CNN to fine-tune on a dataset whose category ids are ``1..classes``: built as the task
    model is (COCO weights from torchvision, a local file, or ``none``), with its box predictor cut to
    ``classes + 1`` outputs. The rows kept are COCO's first ones (background, person, bicycle, car), which
    is what the KITTI conversion's ids 1, 2, 3 mean, so fine-tuning starts from the COCO detector itself."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    from fcmbench.core import registry

    if task_model not in FINETUNABLE:
        raise FcmbenchError(f"train-task fine-tunes {', '.join(FINETUNABLE)} (or trains shapes_rcnn on shapes), "
                            f"not {task_model}")
    model = registry.task_models.get(task_model)(TaskModelOptions(weights)).model
    old = model.roi_heads.box_predictor
    if old.cls_score.out_features != classes + 1:
        new = FastRCNNPredictor(old.cls_score.in_features, classes + 1)
        with torch.no_grad():
            rows = min(classes + 1, old.cls_score.out_features)
            new.cls_score.weight[:rows] = old.cls_score.weight[:rows]
            new.cls_score.bias[:rows] = old.cls_score.bias[:rows]
            new.bbox_pred.weight[: 4 * rows] = old.bbox_pred.weight[: 4 * rows]
            new.bbox_pred.bias[: 4 * rows] = old.bbox_pred.bias[: 4 * rows]
        model.roi_heads.box_predictor = new
    return model


def train_task(out: Path, epochs: int = 12, batch_size: int = 4, lr: float = 0.02, seed: int = 0,
               threads: int | None = None, train: Dataset | None = None, evaluate: bool = True,
               build_model: Callable[[], torch.nn.Module] = build_shapes_rcnn, device: str = "cpu",
               label: str = "shapes_rcnn") -> float:
    """Train ``build_model()`` on ``train`` (default: the shapes train split), save fp16 weights to ``out``
    (resumable through ``out.ckpt``) and return the shapes val box mAP (NaN when ``evaluate`` is off)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train = train or shapes(DatasetOptions(split="train"))
    items = train.items()
    model = build_model().to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(items) / batch_size)
    total, warmup = epochs * steps_per_epoch, min(300, steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    checkpoint, start_epoch = Path(str(out) + ".ckpt"), 0
    if checkpoint.is_file():  # resume after an interruption
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"]
    rng = np.random.default_rng(seed)
    for _ in range(start_epoch):  # replay the shuffles so a resumed run sees the same order
        rng.permutation(len(items))
    with Progress() as progress:
        task = progress.add_task(f"train {label}", total=total, completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, epochs):
            order = rng.permutation(len(items))
            for step in range(steps_per_epoch):
                # images are read per step: a real dataset does not fit in memory
                batch = [(load_image(items[i]), targets_of(train, items[i].image_id))
                         for i in order[step * batch_size:(step + 1) * batch_size]]
                batch = [flipped(*s) if rng.random() < 0.5 else s for s in batch]
                losses = model([b[0].to(device) for b in batch],
                               [{k: v.to(device) for k, v in b[1].items()} for b in batch])
                loss = sum(losses.values())
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                optimizer.step()
                schedule.step()
                progress.update(task, advance=1, description=f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "epoch": epoch + 1}, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out)
    checkpoint.unlink()
    return evaluate_task(out) if evaluate else float("nan")


def evaluate_detector(task: TaskModel, dataset: Dataset, limit: int | None = None) -> dict[str, float]:
    """The unsplit network's metrics on ``dataset`` (its first ``limit`` images)."""
    items = dataset.items()[:limit]
    results = []
    with Progress(transient=True) as progress:
        for item in progress.track(items, description=f"evaluate {task.name}"):
            results += task.to_coco_results(item.image_id, task.predict(load_image(item)))
    return dataset.evaluate(results, [i.image_id for i in items], ("bbox",))


def evaluate_task(weights: Path, limit: int | None = None) -> float:
    """Box mAP@[.5:.95] of the weights on the shapes val split (unsplit network)."""
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.tasks.shapes_rcnn import shapes_rcnn

    model = shapes_rcnn(TaskModelOptions(weights=str(weights)))
    val = shapes(DatasetOptions(split="val"))
    items = val.items()[:limit]
    results = []
    for item in items:
        results += model.to_coco_results(item.image_id, model.predict(load_image(item)))
    return val.evaluate(results, [i.image_id for i in items], ("bbox",))["bbox_mAP"]
