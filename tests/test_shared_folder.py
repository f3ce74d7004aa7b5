"""Runs that share a results folder: one holds it, a second waits and reuses its items or refuses naming it, and
the lock of a killed run is taken over."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from conftest import FCMBENCH, run_cli
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.folderlock import LOCK_NAME, FolderLock


def coco_args(tiny_coco):
    return ["--dataset", "coco", "--images", str(tiny_coco[0]), "--annotations", str(tiny_coco[1]),
            "--task-model", "shapes_rcnn", "--weights", "none"]


def test_a_held_folder_is_refused_naming_its_holder(tmp_path):
    messages = []
    with FolderLock(tmp_path):
        with pytest.raises(FcmbenchError, match=rf"in use by another fcmbench run, process {os.getpid()} on"):
            with FolderLock(tmp_path, wait=False, say=messages.append):
                pass
    with FolderLock(tmp_path, wait=False, say=messages.append) as lock:  # released: free again, nothing stale
        assert lock.took_over is None
    assert messages == [] and (tmp_path / LOCK_NAME).read_text() == ""


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4194999, "host": "h", "started": "s", "command": "c"}))
    messages = []
    with FolderLock(tmp_path, wait=False, say=messages.append) as lock:
        assert lock.took_over["pid"] == 4194999
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and "took over" in messages[0] and "process 4194999" in messages[0]


@pytest.mark.slow
def test_no_wait_refuses_and_writes_nothing(tmp_path, tiny_coco):
    out = tmp_path / "out"
    with FolderLock(out):
        result = run_cli("run", "--methods", "raw", "--limit", "1", "--out", out, "--no-wait",
                         *coco_args(tiny_coco), check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and f"process {os.getpid()}" in errors[0]
    assert "Traceback" not in result.stderr and not (out / "results.sqlite").exists()


@pytest.mark.slow
def test_a_waiting_run_goes_on_when_the_folder_is_released(tmp_path, tiny_coco):
    out = tmp_path / "out"
    with FolderLock(out):
        process = subprocess.Popen([str(FCMBENCH), "run", "--methods", "raw", "--limit", "1", "--out", str(out),
                                    *coco_args(tiny_coco)], stderr=subprocess.PIPE, text=True)
        seen = ""
        deadline = time.monotonic() + 120
        while "waiting for" not in seen and time.monotonic() < deadline and process.poll() is None:
            seen += process.stderr.readline()
        assert "waiting for" in seen and f"process {os.getpid()}" in seen
    rest = process.communicate(timeout=300)[1]
    assert process.returncode == 0 and "1 item(s) computed" in seen + rest


@pytest.mark.slow
def test_two_concurrent_runs_compute_each_item_once(tmp_path, tiny_coco):
    out = tmp_path / "out"
    command = [str(FCMBENCH), "run", "--methods", "raw,quant", "--limit", "3", "--out", str(out),
               *coco_args(tiny_coco)]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    computed = sorted(int(re.search(r"(\d+) item\(s\) computed", log).group(1)) for log in logs)
    assert computed == [0, 21]
