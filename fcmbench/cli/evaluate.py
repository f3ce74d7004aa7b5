"""``fcmbench evaluate``: detection files scored as a dataset's official tool scores them."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fcmbench.cli.common import Commands, stdout_console
from fcmbench.core.errors import FcmbenchError

NAME = "evaluate"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    evaluate = commands.add_parser("evaluate", help="score detection files the way a dataset's official tool does")
    evaluate.add_argument("benchmark", choices=["kitti"], help="kitti: the devkit's 2D AP|R40 and AP|R11")
    evaluate.add_argument("--labels", required=True, type=Path, help="folder of KITTI label_2 files (ground truth)")
    evaluate.add_argument("--detections", required=True, type=Path,
                          help="folder of KITTI-format detection files of the same names (score as 16th field)")
    evaluate.add_argument("--split-file", type=Path, help="frame ids to evaluate, one a line (default: every label)")
    evaluate.add_argument("--json", type=Path, help="also write the APs (0-100) to this JSON file")
    return evaluate


def command(args: argparse.Namespace) -> None:
    import json

    from fcmbench.evaluation.kitti import LEVELS, evaluate_folders

    result = evaluate_folders(args.labels, args.detections, args.split_file)
    table = Table(title=f"KITTI 2D detection ({args.detections})")
    table.add_column("class")
    for points in ("AP|R40", "AP|R11"):
        for level in LEVELS:
            table.add_column(f"{points} {level}", justify="right")
    for cls in result.ap40:
        table.add_row(cls, *[f"{result.ap40[cls][lv]:.6f}" for lv in LEVELS],  # %f, as the devkit prints
                      *[f"{result.ap11[cls][lv]:.6f}" for lv in LEVELS])
    stdout_console().print(table)
    if args.json:
        try:
            args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        except OSError as err:
            raise FcmbenchError(f"cannot write --json {args.json}: {err.strerror}") from None
