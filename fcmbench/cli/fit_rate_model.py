"""``fcmbench fit-rate-model``: MFIBA's per-level task loss-rate model and its predictor's labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fcmbench.cli.common import Commands, check_output_folders, stdout_console

NAME = "fit-rate-model"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    fit = commands.add_parser("fit-rate-model", help="MFIBA: per-level task loss against rate, D = a·R^b fitted "
                              "per level, and the importance predictor's labels")
    fit.add_argument("method", help="an MFIBA method: mfiba-elic or mfiba-tcm (or a plugin's)")
    fit.add_argument("--task-model", required=True)
    fit.add_argument("--dataset", help="its train split is measured against its ground truth")
    fit.add_argument("--image-folder", type=Path, help="measure unlabelled images instead, against the task "
                     "model's own uncompressed detections (its last 16 are left for the predictor's validation)")
    fit.add_argument("--pseudo-score", type=float, default=0.5,
                     help="with --image-folder: the detection score that makes an uncompressed detection ground "
                     "truth (default 0.5)")
    fit.add_argument("--images", type=int, default=40, dest="fit_images", help="how many training images to measure")
    fit.add_argument("--weights", help="task model weights (as for run)")
    fit.add_argument("--out", type=Path, help="checkpoint root: base checkpoints are read and the model written "
                     "there (default: $FCMBENCH_CHECKPOINTS or the package's)")
    fit.add_argument("--cache", type=Path, help="feature cache folder (as for run)")
    fit.add_argument("--threads", type=int, help="CPU threads for torch")
    return fit


def command(args: argparse.Namespace) -> None:
    import torch

    from fcmbench.core.training import TrainRequest
    from fcmbench.training.mfiba import fit_and_write

    check_output_folders(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    codec, model, labels = fit_and_write(TrainRequest.from_options(args))
    folder = codec.folder()
    table = Table(title=f"{codec.name}: task loss (mAP points) = a·R^b per level, R in bits per mosaic pixel")
    for column in ("level", "a", "b"):
        table.add_column(column)
    for name, a, b in zip(model.levels, model.a, model.b, strict=True):
        table.add_row(name, f"{a:.4g}", f"{b:.4g}")
    out = stdout_console()
    out.print(table)
    out.print(f"{len(labels)} labelled images; default λ: {', '.join(f'{lam:.4g}' for lam in model.lambdas)}")
    source = f"--image-folder {args.image_folder}" if args.image_folder else f"--dataset {args.dataset}"
    out.print(f"wrote {folder / 'rate_model.json'} and labels.json; next: fcmbench train {codec.name} "
              f"--task-model {args.task_model} {source}")
