"""``fcmbench list``: methods with their rate points and settings, task models, datasets."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from rich.table import Table

from fcmbench.cli.common import Commands, stdout_console
from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError

NAME = "list"


def add(commands: Commands, defaults: dict | None = None) -> argparse.ArgumentParser:
    listing = commands.add_parser("list", help="methods with their rate points and settings, task models, datasets")
    listing.add_argument("--task-model", help="show the rate points each method runs for this task model")
    listing.add_argument("--checkpoints", type=Path, help="folder of learned-codec checkpoints (as run takes it)")
    return listing


def command(args: argparse.Namespace) -> None:
    out = stdout_console()
    from fcmbench.core.codec import CodecOptions, ImageCodec

    options = CodecOptions(task_model=args.task_model, checkpoints=args.checkpoints)
    title = f"methods for task model {args.task_model}" if args.task_model else "methods"
    table = Table(title=title)
    for column in ("name", "codes", "rate points", "settings (--codec-opt METHOD.KEY=VALUE)"):
        table.add_column(column)
    for name in registry.methods.names():
        try:
            codec = registry.methods.get(name)(options)
            settings = ", ".join(f"{f.name}={getattr(codec.settings, f.name)}" for f in fields(codec.settings))
            table.add_row(name, "image" if isinstance(codec, ImageCodec) else "features",
                          " ".join(p.label for p in codec.rate_points()), settings)
        except FcmbenchError as err:
            table.add_row(name, "?", f"[red]{err}[/red]", "")
    out.print(table)
    out.print("task models: " + ", ".join(registry.task_models.names()))
    out.print("datasets:    " + ", ".join(registry.datasets.names()))
