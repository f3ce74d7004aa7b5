"""Folders a command writes into, checked before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from fcmbench.core.errors import FcmbenchError


def writable_folder(path: Path, option: str, create: bool = True) -> Path:
    """``path`` as a folder this process can write into (created if missing and ``create``; else only checked to be
    creatable); any other case is one error naming ``option``.

    Checked up front so that a run which cannot write its results stops before it computes (or writes) anything.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FcmbenchError(f"{option} {path} is a file, not a folder: give a folder path")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FcmbenchError(f"{option} {path} lies below {blocker}, which is a file: give a folder path")
    if not create and not path.exists():
        existing = next(p for p in path.parents if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise FcmbenchError(f"{option} {path} cannot be created in {existing}, which is not writable: give a "
                                "folder you can write to")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FcmbenchError(f"{option} {path} cannot be created ({err.strerror}): give a folder you can write to")\
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FcmbenchError(f"{option} {path} is not writable: give a folder you can write to")
    return path


def default_cache() -> Path:
    """Feature cache and generated datasets: ``$FCMBENCH_CACHE``, else the user's cache folder."""
    base = os.environ.get("FCMBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fcmbench"
    )
    return Path(base)
