"""``fcmbench train``: a learned codec (one quality or a whole ladder) through the trainer its codec names."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fcmbench.cli.common import Commands, check_output_folders
from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError

NAME = "train"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    train = commands.add_parser("train", help="train a learned codec (feature or image) or MFIBA's predictor")
    train.add_argument("method", help="a trainable method (its codec names its trainer; `fcmbench list` shows "
                       "every method)")
    train.add_argument("--quality", type=int, choices=range(1, 7), metavar="1..6",
                       help="the quality to train (all but mfiba-*, which train the importance predictor)")
    train.add_argument("--task-model", help="whose features (every method but the image codecs elic and tcm)")
    train.add_argument("--dataset", help="its train split gives the features, val the validation")
    train.add_argument("--image-folder", type=Path,
                       help="train on a folder of unlabelled images instead (its last 16 validate)")
    train.add_argument("--data-root", type=Path, help="dataset root (as for run; shapes: its cache by default)")
    train.add_argument("--split-file", type=Path, help="KITTI: training frame ids, one a line")
    train.add_argument("--val-split-file", type=Path, help="KITTI: validation frame ids (the first 16 are used)")
    train.add_argument("--no-task-loss", action="store_true",
                       help="tamsf only: rate-distortion loss alone (task networks without gradients, e.g. ONNX)")
    train.add_argument("--weights", help="task model weights (as for run)")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--latent", type=int, help="latent width M (default: the reference width for the quality)")
    train.add_argument("--width", type=int, help="elic, tcm and their -feat codecs: main width N (default: reference)")
    train.add_argument("--images", type=int, help="use only the first N training images")
    train.add_argument("--batch-size", type=int, default=8, help="images per step (among images of equal size)")
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (halved on plateau)")
    train.add_argument("--lmbda", type=float, help="rate-distortion λ (default: the reference λ of the quality)")
    train.add_argument("--init", type=Path, help="start from this checkpoint's weights (e.g. the next quality)")
    train.add_argument("--threads", type=int, help="CPU threads for torch (fix it to reproduce a checkpoint)")
    train.add_argument("--int8-weights", action="store_true",
                       help="store convolution kernels as int8, xz-compressed (5x smaller; the shipped checkpoints)")
    train.add_argument("--out", type=Path, help="checkpoint root (default: $FCMBENCH_CHECKPOINTS or the package's)")
    train.add_argument("--cache", type=Path, help="feature cache folder (as for run)")
    train.add_argument("--ladder", metavar="\"Q:λ ...\"",
                       help="train every quality of this ladder in one command, e.g. \"1:0.0125 2:0.025 3:0.125\": a "
                       "base network at --base-quality, then each quality fine-tuned from its neighbour (--steps, "
                       "--lr each); resumable, a quality whose checkpoint exists is kept")
    train.add_argument("--base-quality", type=int, help="with --ladder: the quality the base network is trained "
                       "at (default: the highest); it goes to OUT/base/")
    train.add_argument("--base-steps", type=int, help="with --ladder: the base network's steps (default --steps)")
    train.add_argument("--base-lr", type=float, help="with --ladder: the base network's learning rate (default --lr)")
    train.add_argument("--fit-images", type=int, default=40,
                       help="mfiba-*: training images its rate model is measured on, when not fitted yet (default 40)")
    train.add_argument("--pseudo-score", type=float, default=0.5,
                       help="mfiba-* with --image-folder: the score that makes an uncompressed detection ground truth")
    train.add_argument("--predictor-steps", type=int, help="mfiba-*: the importance predictor's steps (default "
                       "--steps)")
    return train


def command(args: argparse.Namespace) -> None:
    """Dispatch to the trainer the codec names (``Codec.trainer``): built-ins and plugins alike."""
    from pkgutil import resolve_name

    import torch

    from fcmbench.core.training import TrainRequest

    check_output_folders(args)
    codec = registry.methods.get(args.method)
    if not getattr(codec, "trainer", None):
        raise FcmbenchError(f"{args.method} has no trainer; trainable methods: {', '.join(trainable_methods())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    request = TrainRequest.from_options(args)
    if args.ladder:
        from fcmbench.training.ladder import parse_ladder, train_ladder

        if not hasattr(codec, "checkpoint"):
            raise FcmbenchError(f"{args.method} has no ladder of qualities: train it without --ladder")
        ladder = parse_ladder(args.ladder)
        trained = train_ladder(request, ladder, args.base_quality or max(ladder), args.base_steps or args.steps,
                               args.base_lr, Console().print)
    else:
        trained = [resolve_name(codec.trainer)(request)]
    for one in trained:
        Console().print(f"saved {one.path}" + (f" ({one.detail})" if one.detail else ""))


def trainable_methods() -> list[str]:
    found = []
    for name in registry.methods.resolve("all"):
        try:
            if getattr(registry.methods.get(name), "trainer", None):
                found.append(name)
        except FcmbenchError:  # a broken plugin is not trainable
            continue
    return found
