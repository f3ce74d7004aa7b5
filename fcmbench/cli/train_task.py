"""``fcmbench train-task``: the embedded default's detector, or a torchvision R-CNN fine-tuned on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fcmbench.cli.common import Commands, add_kitti_options, stdout_console
from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.options import DatasetOptions

NAME = "train-task"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    train_task = commands.add_parser("train-task", help="train the embedded default's detector (shapes_rcnn), or "
                                     "fine-tune a torchvision R-CNN on a dataset (e.g. --dataset kitti)")
    train_task.add_argument("--out", type=Path, help="weights file to write (default for shapes_rcnn: "
                            "fcmbench/weights/shapes_rcnn.pt)")
    train_task.add_argument("--dataset", default="shapes", help="shapes (default), kitti or coco")
    train_task.add_argument("--task-model", help=f"shapes_rcnn (shapes), else one of {', '.join(FINETUNABLE)} "
                            "(default faster_rcnn_r50_fpn)")
    train_task.add_argument("--weights", help="starting weights of the fine-tuned model: torchvision's COCO weights "
                            "(default), a local file, or none")
    train_task.add_argument("--data-root", type=Path, help="dataset root (as for run)")
    train_task.add_argument("--images", type=Path, help="image folder (with --labels or --annotations)")
    train_task.add_argument("--annotations", type=Path, help="COCO-format annotation JSON (with --images)")
    add_kitti_options(train_task)
    train_task.add_argument("--val-split-file", type=Path, help="KITTI: frame ids to evaluate the result on")
    train_task.add_argument("--val-images", type=int, help="evaluate on only the first N validation images")
    train_task.add_argument("--epochs", type=int, default=10)
    train_task.add_argument("--batch-size", type=int, default=4)
    train_task.add_argument("--lr", type=float, help="SGD learning rate (default 0.02 from scratch, 0.005 "
                            "fine-tuning)")
    train_task.add_argument("--device", default="auto", help="auto (CUDA if available; shapes_rcnn: the CPU), cpu, "
                            "cuda or cuda:N")
    train_task.add_argument("--seed", type=int, default=0)
    train_task.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return train_task


FINETUNABLE = ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_v2")  # as fcmbench.training.detector (not imported here)


def command(args: argparse.Namespace) -> None:
    from fcmbench.training.detector import train_task

    if args.dataset == "shapes" and args.task_model in (None, "shapes_rcnn"):
        from fcmbench.pipeline.runner import pick_device

        out = args.out or Path("fcmbench/weights/shapes_rcnn.pt")
        # the shipped weights are reproduced on the CPU: a GPU only when asked for by name
        device = "cpu" if args.device == "auto" else pick_device(args.device)
        score = train_task(out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 0.02,
                           seed=args.seed, threads=args.threads, device=device)
        Console().print(f"saved {out}; val box mAP@[.5:.95] = {score:.4f}")
        return
    finetune_task_model(args)


def finetune_task_model(args: argparse.Namespace) -> None:
    """A torchvision R-CNN fine-tuned on ``--dataset``'s boxes, then evaluated on ``--val-split-file``."""
    from fcmbench.pipeline.runner import pick_device
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.training.detector import evaluate_detector, finetune_model, train_task

    task_model = args.task_model or "faster_rcnn_r50_fpn"
    if task_model not in FINETUNABLE:
        raise FcmbenchError(f"train-task fine-tunes {', '.join(FINETUNABLE)} on --dataset {args.dataset}, not "
                            f"{task_model} (shapes_rcnn trains on shapes only)")
    if args.out is None:
        raise FcmbenchError("give --out FILE for the fine-tuned weights (then run with --task-model "
                            f"{task_model} --weights FILE)")
    device = pick_device(args.device)
    build = registry.datasets.get(args.dataset)

    def options(split_file: Path | None) -> DatasetOptions:
        return DatasetOptions(args.data_root, args.images, args.annotations, None, args.labels, split_file,
                              args.class_map)

    train = build(options(args.split_file))
    classes = max(c["id"] for c in train.coco.dataset["categories"])
    train_task(args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 0.005, seed=args.seed,
               threads=args.threads, train=train, evaluate=False, device=device, label=task_model,
               build_model=lambda: finetune_model(task_model, args.weights, classes))
    out = stdout_console()
    out.print(f"saved {args.out}; use it with --task-model {task_model} --weights {args.out}")
    if args.val_split_file:
        task = registry.task_models.get(task_model)(TaskModelOptions(str(args.out), device))
        metrics = evaluate_detector(task, build(options(args.val_split_file)), args.val_images)
        shown = {k: v for k, v in metrics.items() if k in ("bbox_mAP", "bbox_mAP50", "kitti_mod_AP40")
                 or k.endswith("_mod_AP40")}
        out.print("validation: " + ", ".join(f"{k} = {v:.4f}" for k, v in shown.items()))
