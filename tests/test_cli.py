"""The CLI end to end, as a user runs it (subprocesses)."""

import csv
import json
import re
import shutil
import sqlite3

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def item_count(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def coco_args(tiny_coco):
    return ["--dataset", "coco", "--images", tiny_coco[0], "--annotations", tiny_coco[1],
            "--task-model", "shapes_rcnn", "--weights", "none"]


def test_list_shows_methods_rates_models_datasets():
    out = run_cli("list").stdout
    for word in ("raw", "quant", "2bit", "float32", "shapes_rcnn", "mask_rcnn_r50_fpn", "coco", "shapes"):
        assert word in out


def test_run_report_and_resume(tmp_path, tiny_coco):
    out = tmp_path / "run"
    args = ["run", "--methods", "raw,quant", "--out", out, *coco_args(tiny_coco), "--limit", "4"]
    first = run_cli(*args)
    assert "28 item(s) computed" in first.stderr
    assert item_count(out) == 28
    report = run_cli("report", "--out", out)
    assert "RD points" in report.stdout and "quant" in report.stdout
    # raw is the uncompressed reference, never a BD row: with only it and the anchor there is nothing to rate
    assert "no BD-rate: no method besides the anchor quant" in report.stdout
    rd = rows(out / "rd.csv")
    assert {"method", "rate", "bpp", "bbox_mAP", "bbox_mAP50", "segm_mAP"} <= set(rd[0])
    assert len(rd) == 7
    quant = sorted((r for r in rd if r["method"] == "quant"), key=lambda r: float(r["bpp"]))
    assert [r["rate"] for r in quant] == ["2bit", "3bit", "4bit", "5bit", "6bit", "8bit"]
    raw = next(r for r in rd if r["method"] == "raw")
    assert float(raw["bpp"]) > float(quant[-1]["bpp"])
    assert rows(out / "bd_rate.csv") == []

    before = (out / "results.sqlite").stat().st_mtime_ns, item_count(out)
    again = run_cli(*args)
    assert "0 item(s) computed" in again.stderr
    assert item_count(out) == before[1]
    more = run_cli(*args[:-1], "5")  # one more image: only its items run
    assert "7 item(s) computed" in more.stderr


def test_rates_filter_and_bits_match_bitstreams(tmp_path, tiny_coco):
    out = tmp_path / "run"
    result = run_cli("run", "--methods", "quant", "--rates", "4bit,8bit", "--out", out, *coco_args(tiny_coco),
                     "--limit", "2", "--batch-size", "2")
    # the uncompressed reference is added (the report judges BD-rates against it), run after quant
    assert "raw added: the uncompressed reference" in result.stderr
    # piped, not a terminal: one progress line per finished (method, rate point); both images are one batch
    assert re.findall(r"(\w+) (\w+) done: (\d)/6 items", result.stderr) == [
        ("quant", "4bit", "2"), ("quant", "8bit", "4"), ("raw", "float32", "6")]
    with sqlite3.connect(out / "results.sqlite") as db:
        items = db.execute("SELECT rate, bytes, bytes_per_level, pixels FROM items WHERE method = 'quant'").fetchall()
        evaluation = db.execute("SELECT bits, pixels FROM evaluations WHERE rate = '4bit'").fetchone()
        assert db.execute("SELECT COUNT(*) FROM items WHERE method = 'raw'").fetchone() == (2,)
    assert {r[0] for r in items} == {"4bit", "8bit"}
    for _, size, per_level, _ in items:
        levels = json.loads(per_level)
        assert sum(levels.values()) == size and {"0", "1", "2", "3", "pool", "_header"} == set(levels)
    assert evaluation == (8 * sum(r[1] for r in items if r[0] == "4bit"), sum(r[3] for r in items if r[0] == "4bit"))


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "nope"], "unknown method 'nope'; known methods:"),
    (["--methods", "raw", "--task-model", "yolo"], "unknown task model 'yolo'"),
    (["--methods", "raw", "--rates", "99bit"], "belong to none of the methods"),
    (["--methods", "raw", "--device", "cuda:3"], "cuda"),
])
def test_bad_arguments_exit_2_with_one_message(tmp_path, tiny_coco, args, message):
    result = run_cli("run", "--out", tmp_path / "o", *coco_args(tiny_coco), *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_data_exit_2_and_write_nothing_for_the_failed_item(tmp_path, tiny_coco):
    broken = tmp_path / "annotations.json"
    broken.write_text('{"images": [')
    result = run_cli("run", "--methods", "raw", "--out", tmp_path / "a", "--dataset", "coco", "--images",
                     tiny_coco[0], "--annotations", broken, "--task-model", "shapes_rcnn", check=False)
    assert result.returncode == 2 and "not valid JSON" in result.stderr

    images = tmp_path / "images"
    shutil.copytree(tiny_coco[0], images)
    (images / "000002.png").write_bytes(b"garbage")
    out = tmp_path / "b"
    result = run_cli("run", "--methods", "raw", "--out", out, "--dataset", "coco", "--images", images,
                     "--annotations", tiny_coco[1], "--task-model", "shapes_rcnn", "--weights", "none", check=False)
    assert result.returncode == 2 and "000002.png" in result.stderr and "does not decode" in result.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT image_id FROM items").fetchall() == [(1,)]

    (images / "000003.png").unlink()
    result = run_cli("run", "--methods", "raw", "--out", tmp_path / "c", "--dataset", "coco", "--images", images,
                     "--annotations", tiny_coco[1], "--task-model", "shapes_rcnn", "--weights", "none", check=False)
    assert result.returncode == 2 and "missing" in result.stderr

    result = run_cli("report", "--out", tmp_path / "nothing", check=False)
    assert result.returncode == 2 and "fcmbench run" in result.stderr


def test_a_killed_run_resumes_where_it_stopped(tmp_path, tiny_coco):
    import os
    import re
    import signal
    import subprocess
    import time

    from conftest import FCMBENCH

    out = tmp_path / "run"
    args = ["run", "--methods", "raw,quant", "--out", str(out), *map(str, coco_args(tiny_coco))]
    process = subprocess.Popen([str(FCMBENCH), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if item_count(out) >= 10:
                break
        except sqlite3.OperationalError:  # the store is still being created
            pass
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survived = item_count(out)
    assert 10 <= survived < 42, "the kill should land mid-run"
    again = run_cli(*args)
    computed = int(re.search(r"(\d+) item\(s\) computed", again.stderr).group(1))
    assert computed == 42 - survived and item_count(out) == 42


def test_workers_give_the_serial_results_and_stop_on_a_bad_image(tmp_path, tiny_coco):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    args = ["--methods", "raw,quant", *coco_args(tiny_coco)]
    run_cli("run", "--out", serial, *args)
    run_cli("run", "--out", parallel, "--workers", "2", *args)
    for out in (serial, parallel):
        run_cli("report", "--out", out)
    columns = ("method", "rate", "n_images", "bpp", "bbox_mAP", "segm_mAP")
    assert ([{k: r[k] for k in columns} for r in rows(serial / "rd.csv")]
            == [{k: r[k] for k in columns} for r in rows(parallel / "rd.csv")])

    images = tmp_path / "images"
    shutil.copytree(tiny_coco[0], images)
    (images / "000004.png").write_bytes(b"garbage")
    result = run_cli("run", "--methods", "raw", "--out", tmp_path / "bad", "--workers", "2", "--dataset", "coco",
                     "--images", images, "--annotations", tiny_coco[1], "--task-model", "shapes_rcnn", "--weights",
                     "none", check=False)
    assert result.returncode == 2 and "000004.png" in result.stderr and "Traceback" not in result.stderr
    with sqlite3.connect(tmp_path / "bad" / "results.sqlite") as db:
        assert (4,) not in db.execute("SELECT image_id FROM items").fetchall()


def test_train_on_an_image_folder_and_its_errors(tmp_path, tiny_coco):
    from fcmbench.datasets.shapes import write_split

    base = ["--quality", "1", "--task-model", "shapes_rcnn", "--weights", "none", "--out", tmp_path / "ckpt"]
    for args, message in [
        (["lmsfc", *base], "--dataset NAME or --image-folder DIR"),
        (["lmsfc", *base, "--image-folder", tmp_path / "absent"], "does not exist"),
        (["lmsfc", *base, "--image-folder", tiny_coco[0]], "holds out for validation"),
        (["tamsf", *base, "--image-folder", tiny_coco[0]], "--no-task-loss"),
    ]:
        result = run_cli("train", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "ckpt").exists()

    write_split(tmp_path / "folder", count=18, seed=5)
    run_cli("train", "lmsfc-nocm", *base, "--image-folder", tmp_path / "folder" / "images", "--steps", "2",
            "--latent", "8", "--batch-size", "2", "--int8-weights")
    assert (tmp_path / "ckpt" / "lmsfc-nocm" / "shapes_rcnn" / "q1.pt").is_file()


def test_train_a_whole_ladder_in_one_resumable_command(tmp_path):
    import torch

    from fcmbench.datasets.shapes import write_split
    from fcmbench.training.ladder import chain
    from fcmbench.zoo.checkpoints import read_state

    assert chain([1, 2, 3, 4], 3) == [(3, None), (4, 3), (2, 3), (1, 2)]  # outward, neighbour by neighbour
    write_split(tmp_path / "folder", count=18, seed=5)
    out = tmp_path / "ckpt"
    args = ["train", "lmsfc-nocm", "--ladder", "1:0.03 2:0.06", "--base-steps", "2", "--steps", "2",
            "--task-model", "shapes_rcnn", "--weights", "none", "--image-folder", tmp_path / "folder" / "images",
            "--latent", "8", "--batch-size", "2", "--out", out]
    first = run_cli(*args)
    folder = out / "lmsfc-nocm" / "shapes_rcnn"
    assert (out / "base" / "lmsfc-nocm" / "shapes_rcnn" / "q2.pt").is_file()
    assert (folder / "q1.pt").is_file() and (folder / "q2.pt").is_file() and first.stdout.count("saved") == 2
    made = (folder / "q1.pt").stat().st_mtime_ns
    again = run_cli(*args)  # everything is there: nothing is trained again
    assert "kept" in again.stdout and "saved" not in again.stdout and (folder / "q1.pt").stat().st_mtime_ns == made
    bad = run_cli(*args[:3], "1:x", *args[4:], check=False)
    assert bad.returncode == 2 and "--ladder point '1:x'" in bad.stderr
    # the same as training each quality by hand (reproduce.sh did so before --ladder): the same weights
    by_hand = tmp_path / "by-hand"
    common = args[8:-2]  # task model, images, sizes
    run_cli("train", "lmsfc-nocm", "--quality", "2", "--lmbda", "0.06", "--steps", "2", *common, "--out",
            by_hand / "base")
    run_cli("train", "lmsfc-nocm", "--quality", "2", "--lmbda", "0.06", "--steps", "2", *common, "--init",
            by_hand / "base" / "lmsfc-nocm" / "shapes_rcnn" / "q2.pt", "--out", by_hand)
    run_cli("train", "lmsfc-nocm", "--quality", "1", "--lmbda", "0.03", "--steps", "2", *common, "--init",
            by_hand / "lmsfc-nocm" / "shapes_rcnn" / "q2.pt", "--out", by_hand)
    for quality in (1, 2):
        ladder, hand = (read_state(root / "lmsfc-nocm" / "shapes_rcnn" / f"q{quality}.pt", "q")
                        for root in (out, by_hand))
        assert ladder.keys() == hand.keys() and all(torch.equal(ladder[k], hand[k]) for k in ladder)


def test_an_mfiba_ladder_trains_its_base_codecs_ladder_then_fits_and_trains_the_predictor(tmp_path):
    from fcmbench.datasets.shapes import write_split

    write_split(tmp_path / "folder", count=28, seed=11)  # 12 to train on, 16 to validate
    out = tmp_path / "ckpt"
    args = ["train", "mfiba-elic", "--ladder", "1:0.05 2:0.13", "--base-steps", "2", "--steps", "2",
            "--task-model", "shapes_rcnn", "--image-folder", tmp_path / "folder" / "images", "--width", "8",
            "--latent", "20", "--batch-size", "2", "--fit-images", "12", "--predictor-steps", "3", "--out", out]
    first = run_cli(*args)
    assert all((out / "elic-feat" / "shapes_rcnn" / f"q{q}.pt").is_file() for q in (1, 2))
    mfiba = out / "mfiba-elic" / "shapes_rcnn"
    assert all((mfiba / name).is_file() for name in ("rate_model.json", "labels.json", "importance.pt"))
    assert first.stdout.count("saved") == 3  # two qualities and the predictor
    again = run_cli(*args)
    assert "saved" not in again.stdout and "kept its rate model and predictor" in again.stdout


def test_results_of_a_retrained_checkpoint_are_not_reused_silently(tmp_path, tiny_coco):
    import torch

    from fcmbench.core.codec import CodecOptions
    from fcmbench.models.elic import build_elic
    from fcmbench.zoo.checkpoints import checkpoint_path, save_checkpoint

    path = checkpoint_path("elic", 3, CodecOptions(checkpoints=tmp_path / "ckpt"), "images")

    def train(seed: int) -> None:
        torch.manual_seed(seed)
        save_checkpoint(build_elic(8, 20), path, int8_weights=True)

    args = ["run", "--methods", "elic", "--rates", "q3", *coco_args(tiny_coco), "--checkpoints", tmp_path / "ckpt",
            "--out", tmp_path / "out", "--no-reference"]
    def bpp() -> str:
        run_cli("report", "--out", tmp_path / "out")
        return rows(tmp_path / "out" / "rd.csv")[0]["bpp"]

    train(0)
    run_cli(*args)
    first = bpp()
    assert "0 item(s) computed" in run_cli(*args).stderr  # same checkpoint: resumed
    train(1)
    stale = run_cli(*args, check=False)
    assert stale.returncode == 2 and "--redo elic" in stale.stdout + stale.stderr
    # a rate point elic no longer has (no q1 checkpoint), as an earlier training's would be: --redo drops it too
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        for table in ("items", "evaluations", "producers"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            chosen = ", ".join("'q1'" if c == "rate" else c for c in columns)
            db.execute(f"INSERT INTO {table} SELECT {chosen} FROM {table} WHERE method = 'elic'")
    assert item_count(tmp_path / "out") == 12
    assert "6 item(s) computed" in run_cli(*args, "--redo", "elic").stderr
    assert item_count(tmp_path / "out") == 6 and bpp() != first  # bpp() rewrote rd.csv
    assert [row["rate"] for row in rows(tmp_path / "out" / "rd.csv")] == ["q3"]
    # after a --redo, the same command without it resumes (what the new checkpoint made is kept): a killed --redo
    # run continues this way
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        db.execute("DELETE FROM items WHERE method = 'elic' AND image_id = (SELECT MAX(image_id) FROM items)")
    assert "1 item(s) computed" in run_cli(*args).stderr
    wrong = run_cli(*args, "--redo", "lmsfc", check=False)
    assert wrong.returncode == 2 and "add it to --methods" in wrong.stdout + wrong.stderr
