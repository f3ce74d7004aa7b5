"""``fcmbench datasets check``: the layout and file counts of a downloaded dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fcmbench.cli.common import Commands, stdout_console
from fcmbench.core.errors import FcmbenchError

NAME = "datasets"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    datasets = commands.add_parser("datasets", help="check a downloaded dataset")
    dataset_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    check = dataset_commands.add_parser("check", help="layout and file counts of a downloaded COCO or KITTI; exit "
                                        "2 with what is missing")
    check.add_argument("dataset", choices=["coco", "kitti"])
    check.add_argument("--root", required=True, type=Path, help="the folder given as --data-root to run")
    return datasets


def command(args: argparse.Namespace) -> None:
    from fcmbench.datasets.check import CHECKERS, problems

    if not args.root.is_dir():
        raise FcmbenchError(f"--root {args.root} is not a folder; give the folder you downloaded {args.dataset} into")
    checks = CHECKERS[args.dataset](args.root)
    table = Table(title=f"{args.dataset} in {args.root}")
    for column in ("what", "expected", "found", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(c.what, c.expected, c.found, "[green]ok[/]" if c.ok else "[red]missing[/]")
    stdout_console().print(table)
    wrong = problems(checks)
    if wrong:
        raise FcmbenchError(f"{args.dataset} in {args.root} is incomplete: {wrong}")
    stdout_console().print(f"{args.dataset} in {args.root} is complete: fcmbench run --dataset {args.dataset} "
                           f"--data-root {args.root} ...")
