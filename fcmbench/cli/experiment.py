"""``fcmbench run --config experiment.toml``: run options from a file, checked as the flags would be."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcmbench.cli.run import codec_option
from fcmbench.core.errors import FcmbenchError


def experiment_options(path: Path, options: dict[str, argparse.Action]) -> dict:
    """The run options an experiment file sets, checked as the flags would be: one error per bad key or value."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise FcmbenchError(f"experiment file {path} cannot be read ({err.strerror}): give --config an existing "
                            "TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FcmbenchError(f"experiment file {path} is not valid TOML: {err}") from None
    settable = {dest: action for dest, action in options.items() if dest not in ("config", "help")}
    resolved = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = settable.get(dest)
        if action is None:
            raise FcmbenchError(f"experiment file {path}: unknown key {key!r}; valid keys: "
                                f"{', '.join(sorted(settable))}")
        resolved[dest] = option_value(path, key, value, action)
    return resolved


def option_value(path: Path, key: str, value, action: argparse.Action):
    """A TOML value as the flag would have parsed it (lists join with commas, as --methods takes them)."""
    if action.dest == "codec_opt":
        return codec_options(path, value)
    if action.nargs == 0:  # a switch such as no_reference
        if not isinstance(value, bool):
            raise FcmbenchError(f"experiment file {path}: {key} is a switch: give true or false, not {value!r}")
        return action.const if value else action.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    if isinstance(value, bool | dict):
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r} is not a value of --{key.replace('_', '-')}")
    try:
        parsed = action.type(str(value)) if action.type else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r} is not valid ({err})") from None
    if action.choices is not None and parsed not in action.choices:
        raise FcmbenchError(f"experiment file {path}: {key} = {value!r}; choose one of "
                            f"{', '.join(map(str, action.choices))}")
    return parsed


def codec_options(path: Path, value) -> list[tuple[str, str, str]]:
    """``codec_opt``: a table per method (``[codec_opt.vtm-feature]`` / ``preset = "faster"``) or a list of
    ``"METHOD.KEY=VALUE"`` strings."""
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        value = [f"{method}.{key}={v}" for method, table in value.items() for key, v in table.items()]
    if not isinstance(value, list):
        raise FcmbenchError(f"experiment file {path}: codec_opt takes a table per method ([codec_opt.METHOD] with "
                            "KEY = VALUE lines) or a list of \"METHOD.KEY=VALUE\" strings")
    try:
        return [codec_option(str(item)) for item in value]
    except argparse.ArgumentTypeError as err:
        raise FcmbenchError(f"experiment file {path}: codec_opt: {err}") from None
