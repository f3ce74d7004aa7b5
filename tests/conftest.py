from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcmbench.datasets.shapes import write_split

SHARED = Path(__file__).resolve().parents[2] / "shared"
FCMBENCH = Path(sys.executable).parent / "fcmbench"


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
