"""`make demo` on a fresh cache, phase by phase (issue #27: the goal is 5 minutes after the install on 2 cores):
start-up (dataset generation, networks, worker processes, up to the first stored item), coding (first to last
stored item), evaluation (pycocotools on every rate point) and the report, then each method's seconds inside its
codec and the task network. Run it on a quiet machine:
`.venv/bin/pytest tests/benchmarks/bench_demo.py --benchmark-only -o python_files='bench_*.py' -s`"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
GOAL_S = 300

pytestmark = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained")


def timed_demo(out: Path, cache: Path) -> dict[str, float]:
    """Run `make demo` into ``out`` with an empty ``cache``; the moments (seconds from the start) its phases end."""
    env = {**os.environ, "FCMBENCH_CACHE": str(cache)}
    start = time.time()
    moments = {}
    with subprocess.Popen(["make", "--no-print-directory", "demo", f"DEMO_OUT={out}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as demo:
        for line in demo.stdout:
            if "item(s) computed" in line:
                moments["run"] = time.time() - start
    assert demo.returncode == 0, "make demo failed"
    moments["report"] = time.time() - start
    with sqlite3.connect(out / "results.sqlite") as db:
        first, last = db.execute("SELECT MIN(finished_at), MAX(finished_at) FROM items").fetchone()
    moments["first item"], moments["last item"] = (datetime.fromisoformat(t).timestamp() - start for t in (first, last))
    return moments


def method_seconds(out: Path) -> list[tuple]:
    """Per method: items, and the seconds summed over them inside encoding, decoding, the front (image codecs: on
    the decoded image) and the back."""
    with sqlite3.connect(out / "results.sqlite") as db:
        return db.execute("SELECT method, COUNT(*), SUM(encode_s), SUM(decode_s), SUM(front_s), SUM(back_s) "
                          "FROM items GROUP BY method ORDER BY SUM(encode_s) + SUM(decode_s) DESC").fetchall()


def test_demo_phases(benchmark, tmp_path):
    moments = benchmark.pedantic(timed_demo, args=(tmp_path / "demo", tmp_path / "cache"), rounds=1, iterations=1)
    phases = {"start-up (dataset, networks, workers, first image)": moments["first item"],
              "coding (first to last stored item)": moments["last item"] - moments["first item"],
              "evaluation (pycocotools, every rate point)": moments["run"] - moments["last item"],
              "report (tables, intervals, page)": moments["report"] - moments["run"]}
    print(f"\nmake demo on a fresh cache: {moments['report']:.0f} s (goal {GOAL_S} s)")
    for phase, seconds in phases.items():
        print(f"  {phase:<52} {seconds:6.1f} s")
    print("  per method, seconds summed over its items: encode, decode, front, back")
    for method, items, encode, decode, front, back in method_seconds(tmp_path / "demo"):
        print(f"    {method:<12} {items:5d} items {encode:7.1f} {decode:7.1f} {front:7.1f} {back:7.1f}")
    benchmark.extra_info.update({"total_s": moments["report"], **phases})
