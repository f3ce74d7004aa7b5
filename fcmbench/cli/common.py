"""What every command shares: the consoles, argument types, the recording parser, common options."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

console = Console(stderr=True)
if not console.is_terminal:
    console = Console(stderr=True, width=160)
# compressai's import triggers torch's deprecation notice for torch.jit.script: not the user's concern
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


class Commands(Protocol):
    """What ``add_subparsers()`` returns (argparse's class for it is private)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def stdout_console() -> Console:
    """Tables stay readable when piped (rich would otherwise wrap them at 80 columns)."""
    plain = Console()
    return plain if plain.is_terminal else Console(width=160)


def share(text: str) -> float:
    """A share of the uncompressed accuracy, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (e.g. 0.8)")
    return value


class RecordingParser(argparse.ArgumentParser):
    """Keeps the actions it was given, so an experiment file can be checked against the options it stands for."""

    def __init__(self, *args, **kwargs) -> None:
        self.options: dict[str, argparse.Action] = {}  # before the parser adds its own --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.options[action.dest] = action
        return action


def add_kitti_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, help="KITTI: label_2 folder (with --images)")
    parser.add_argument("--split-file", type=Path, help="KITTI: frame ids to use, one a line (default: every image)")
    parser.add_argument("--class-map", help="KITTI: task-model categories that are Car, Pedestrian, Cyclist: coco "
                        "(default: COCO car 3, person 1, bicycle 2; also what train-task --dataset kitti makes) or "
                        "ID=Class,...")


def check_output_folders(args: argparse.Namespace) -> None:
    """train and fit-rate-model write checkpoints under --out and features under --cache: check both first."""
    from fcmbench.core.paths import writable_folder

    for option in ("out", "cache"):
        if getattr(args, option, None) is not None:
            writable_folder(getattr(args, option), f"--{option}", create=False)
