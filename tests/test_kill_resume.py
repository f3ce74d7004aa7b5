"""SIGKILL at random moments (seeded) and at the moments that matter, then resume: the final tables equal those
of an uninterrupted run. ``FCMBENCH_SOAK_KILLS`` sets the number of random kills (``make soak``: 20)."""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FCMBENCH, run_cli

pytestmark = pytest.mark.slow
RANDOM_KILLS = int(os.environ.get("FCMBENCH_SOAK_KILLS", "3"))
TIMING = {"encode_s", "decode_s"}  # wall times differ between any two runs


def run_args(out: Path, tiny_coco, cache: Path) -> list[str]:
    return ["run", "--methods", "raw,quant", "--rates", "float32,2bit,4bit,8bit", "--limit", "3", "--out", str(out),
            "--cache", str(cache), "--dataset", "coco", "--images", str(tiny_coco[0]), "--annotations",
            str(tiny_coco[1]), "--task-model", "shapes_rcnn"]


def tables(out: Path) -> dict[str, list[dict]]:
    """The report's tables without wall times."""
    found = {}
    for name in ("rd.csv", "bd_rate.csv", "cttc.csv", "levels.csv"):
        with open(out / name) as handle:
            found[name] = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]
    return found


def differences(found: dict, expected: dict) -> list[str]:
    out = []
    for name, rows in expected.items():
        for row, other in zip(found.get(name, []), rows, strict=False):
            out += [f"{name} {row.get('method')} {row.get('rate')} {k}: {row[k]} != {other.get(k)}"
                    for k in row if row[k] != other.get(k)]
        if len(found.get(name, [])) != len(rows):
            out.append(f"{name}: {len(found.get(name, []))} rows, expected {len(rows)}")
    return out


def killed(args: list[str], moment: str) -> None:
    """Run until the named moment kills it; it must die by SIGKILL there, not finish."""
    result = subprocess.run([str(FCMBENCH), *args], capture_output=True, text=True,
                            env={**os.environ, "FCMBENCH_KILL_AT": moment})
    assert result.returncode == -signal.SIGKILL, f"{moment}: {result.returncode}\n{result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_coco) -> dict:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run_cli(*run_args(tmp / "out", tiny_coco, tmp / "cache"))
    run_cli("report", "--out", tmp / "out")
    return tables(tmp / "out")


def test_kills_at_the_moments_that_matter_resume_to_the_same_tables(uninterrupted, tmp_path, tiny_coco):
    """One folder, killed at each moment in turn (each resume gets further), then finished and reported."""
    out = tmp_path / "out"
    killed(run_args(out, tiny_coco, tmp_path / "cache"), "store-transaction:5")  # 4 items committed, 5th open
    # an empty cache: image 2's features are written first, image 3's second, and killed before they land
    killed(run_args(out, tiny_coco, tmp_path / "cache2"), "cache-write:2")
    killed(run_args(out, tiny_coco, tmp_path / "cache2"), "evaluation:3")  # every item done, 2 rate points stored
    run_cli(*run_args(out, tiny_coco, tmp_path / "cache2"))
    killed(["report", "--out", str(out)], "report-write")
    assert not (out / "rd.csv").exists()  # nothing half-written: the staged report never arrived
    run_cli("report", "--out", out)
    assert differences(tables(out), uninterrupted) == []


def test_random_kills_resume_to_the_same_tables(uninterrupted, tmp_path, tiny_coco):
    rng = random.Random(26)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = run_args(out, tiny_coco, cache)
    landed = 0
    for _ in range(RANDOM_KILLS):
        process = subprocess.Popen([str(FCMBENCH), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 10.0))  # start-up (imports, models) is part of what may be interrupted
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.wait()
        if rng.random() < 0.3:  # sometimes the cache goes too, as after a machine change
            shutil.rmtree(cache, ignore_errors=True)
    run_cli(*args)
    run_cli("report", "--out", out)
    assert landed >= 1
    assert differences(tables(out), uninterrupted) == []
