"""The Dask executor: (image, method) units on a cluster give a serial run's results to the bit, a worker killed
mid-run loses only its unit, and a unit that keeps killing its worker ends in one clear error."""

from __future__ import annotations

import sqlite3

import pytest
from test_cli import coco_args, rows

from conftest import run_cli

pytestmark = pytest.mark.slow


def stored_items(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        return db.execute("SELECT method, rate, image_id, bytes, bytes_per_level, predictions FROM items "
                          "ORDER BY method, rate, image_id").fetchall()


def test_a_cluster_with_a_killed_worker_gives_the_serial_results(tmp_path, tiny_coco, monkeypatch):
    from distributed import LocalCluster

    args = ["--methods", "raw,quant", *coco_args(tiny_coco), "--limit", "3"]
    run_cli("run", "--out", tmp_path / "serial", *args)
    # the cluster's workers inherit this: the first of them to start its second unit dies, as by kill -9
    monkeypatch.setenv("FCMBENCH_KILL_AT", "dask-unit:2")
    monkeypatch.setenv("FCMBENCH_KILL_ONCE", str(tmp_path / "killed"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.delenv("FCMBENCH_KILL_AT")  # the coordinator itself must live
        result = run_cli("run", "--out", tmp_path / "dask", *args, "--executor", "dask",
                         "--scheduler", cluster.scheduler_address)
    assert (tmp_path / "killed").exists(), "a worker should have been killed mid-run"
    assert "21 item(s) computed" in result.stderr
    assert stored_items(tmp_path / "dask") == stored_items(tmp_path / "serial")
    for out in ("serial", "dask"):
        run_cli("report", "--out", tmp_path / out, "--bootstrap", "0")
    timeless = [[{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows(tmp_path / out / "rd.csv")]
                for out in ("serial", "dask")]
    assert timeless[0] == timeless[1]


def test_a_unit_that_keeps_killing_its_worker_is_named(tmp_path, tiny_coco, monkeypatch):
    monkeypatch.setenv("FCMBENCH_KILL_AT", "dask-unit")  # every worker dies on every unit
    result = run_cli("run", "--methods", "raw", "--out", tmp_path / "run", *coco_args(tiny_coco), "--limit", "1",
                     "--executor", "dask", "--workers", "2", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "image 1 (000001.png), method raw: its Dask worker died 3 times" in result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
    (["--scheduler", "tcp://127.0.0.1:9"], "add --executor dask"),
])
def test_scheduler_errors(tmp_path, tiny_coco, extra, message):
    result = run_cli("run", "--methods", "raw", "--out", tmp_path / "run", *coco_args(tiny_coco), "--limit", "1",
                     *extra, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
