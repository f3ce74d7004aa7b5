from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fcmbench.datasets.shapes import write_split

SHARED = Path(__file__).resolve().parents[2] / "shared"  # the one place that says where ../shared is
FCMBENCH = Path(sys.executable).parent / "fcmbench"
# A test that starts the CLI in a subprocess is an integration test: marked slow by what its code calls
CLI_CALLS = re.compile(r"\brun_cli\(|\bsubprocess\.|\bFCMBENCH\b")


def shared_marks(*parts: str) -> list[pytest.MarkDecorator]:
    """The shared-data tier: marked ``shared`` and skipped, naming the path that is absent, without ../shared
    (a module's ``pytestmark``; :func:`needs_shared` decorates one test)."""
    missing = [p for p in parts if not SHARED.joinpath(p).exists()]
    reason = f"{SHARED / missing[0]} is absent (the shared data, models and reference fixtures)" if missing else ""
    return [pytest.mark.shared, pytest.mark.skipif(bool(missing), reason=reason)]


def needs_shared(*parts: str) -> Callable:
    def marked(test: Callable) -> Callable:
        for mark in shared_marks(*parts):
            test = mark(test)
        return test
    return marked


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers: unit (the rest), ``slow`` (the CLI in a subprocess), ``shared`` (../shared), ``artifacts`` (the
    shipped checkpoints). Select one with ``-m``, e.g. ``pytest -m "not slow and not shared"`` for the unit tier."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and CLI_CALLS.search(inspect.getsource(function)):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every CLI subprocess) uses a private cache, never the user's."""
    path = tmp_path_factory.mktemp("fcmbench-cache")
    os.environ["FCMBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six synthetic images in the COCO layout: (images folder, annotation file)."""
    folder = tmp_path_factory.mktemp("tiny") / "split"
    write_split(folder, count=6, seed=123)
    return folder / "images", folder / "annotations.json"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The machine is shared (and the parity fixtures were recorded on one thread): torch computes on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(FCMBENCH), *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    if check and result.returncode != 0:
        raise AssertionError(f"fcmbench {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result
