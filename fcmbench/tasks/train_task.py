"""``fcmbench train-task``: train the embedded default's detector from scratch on the ``shapes`` train split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from fcmbench.datasets.base import DatasetOptions, load_image
from fcmbench.datasets.coco import CocoDataset
from fcmbench.datasets.shapes import shapes
from fcmbench.tasks.shapes_rcnn import build_shapes_rcnn


def targets_of(dataset: CocoDataset, image_id: int) -> dict[str, torch.Tensor]:
    anns = dataset.coco.imgToAnns[image_id]
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
    info = dataset.coco.imgs[image_id]
    masks = (np.stack([dataset.coco.annToMask(a) for a in anns]) if anns
             else np.zeros((0, info["height"], info["width"]), np.uint8))
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks)}


def flipped(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def train_task(out: Path, epochs: int = 12, batch_size: int = 4, lr: float = 0.02, seed: int = 0,
               threads: int | None = None, train: CocoDataset | None = None, evaluate: bool = True) -> float:
    """Train on ``train`` (default: the shapes train split), save fp16 weights to ``out`` (resumable through
    ``out.ckpt``) and return the val box mAP (NaN when ``evaluate`` is off)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train = train or shapes(DatasetOptions(split="train"))
    samples = [(load_image(item), targets_of(train, item.image_id)) for item in train.items()]
    model = build_shapes_rcnn().train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(samples) / batch_size)
    total, warmup = epochs * steps_per_epoch, min(300, steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    checkpoint, start_epoch = Path(str(out) + ".ckpt"), 0
    if checkpoint.is_file():  # resume after an interruption
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"]
    rng = np.random.default_rng(seed)
    for _ in range(start_epoch):  # replay the shuffles so a resumed run sees the same order
        rng.permutation(len(samples))
    with Progress() as progress:
        task = progress.add_task("train shapes_rcnn", total=total, completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, epochs):
            order = rng.permutation(len(samples))
            for step in range(steps_per_epoch):
                batch = [samples[i] for i in order[step * batch_size:(step + 1) * batch_size]]
                batch = [flipped(*s) if rng.random() < 0.5 else s for s in batch]
                losses = model([b[0] for b in batch], [b[1] for b in batch])
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
