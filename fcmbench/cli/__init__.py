"""The ``fcmbench`` command line: one module per command (``add`` its parser, ``command`` its work); parsing
here, the work in the layers below."""

from __future__ import annotations

import argparse

from fcmbench.cli import datasets, evaluate, fit_rate_model, listing, report, run, train, train_task
from fcmbench.cli.common import RecordingParser, console
from fcmbench.cli.experiment import experiment_options
from fcmbench.core.errors import FcmbenchError

COMMANDS = {module.NAME: module
            for module in (listing, run, report, train, fit_rate_model, evaluate, datasets, train_task)}


def build_parser(run_defaults: dict | None = None) -> argparse.ArgumentParser:
    """``run_defaults``: the run options an experiment file sets (flags given on the command line override them)."""
    parser = argparse.ArgumentParser(prog="fcmbench", description="Benchmark feature coding for machines.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=RecordingParser)
    for module in COMMANDS.values():
        added = module.add(commands, run_defaults if module is run else None)
        if module is run:
            parser.run_options = added.options  # what an experiment file may set
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, over the experiment file ``run --config`` names."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.config:
        args = build_parser(experiment_options(args.config, parser.run_options)).parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        COMMANDS[args.command].command(args)
    except FcmbenchError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished items are saved, run the same command again to resume")
        return 130
    return 0
