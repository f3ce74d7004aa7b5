"""Every bad input of issue #26 (and more), table-driven: exit code 2, exactly one ``error:`` line that names the
thing, no traceback, and nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.slow
PACKAGE_CHECKPOINTS = Path(__file__).resolve().parents[1] / "fcmbench" / "checkpoints"


def coco_args(images: Path, annotations: Path) -> list:
    return ["--dataset", "coco", "--images", images, "--annotations", annotations, "--task-model", "shapes_rcnn",
            "--weights", "none"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is absent)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">2I5B", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def edited_annotations(tiny_coco, tmp: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads(Path(tiny_coco[1]).read_text())
    edit(data)
    path = tmp / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def set_first(section: str, key: str, value) -> Callable[[dict], None]:
    return lambda data: data[section][0].__setitem__(key, value)


@dataclass
class Case:
    name: str
    args: Callable[[Path, tuple], list]  # (tmp folder, tiny_coco) -> CLI arguments
    message: str
    untouched: Callable[[Path], bool] = lambda tmp: True  # nothing half-written
    skip: str | None = None


def run_args(tmp: Path, tiny_coco, *extra, out: Path | None = None, annotations: Path | None = None,
             images: Path | None = None) -> list:
    return ["run", "--methods", "raw", "--limit", "1", "--out", out or tmp / "out",
            *coco_args(images or tiny_coco[0], annotations or tiny_coco[1]), *extra]


def file_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("keep me")
    return path


def read_only(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o555)
    return path


def copy_with_big_png(tiny_coco, tmp: Path) -> Path:
    images = tmp / "images"
    shutil.copytree(tiny_coco[0], images)
    (images / "000001.png").write_bytes(png_header_only(20000, 20000))
    return images


def broken_rate_model(tmp: Path) -> Path:
    root = tmp / "checkpoints"
    for method in ("elic-feat", "mfiba-elic"):
        shutil.copytree(PACKAGE_CHECKPOINTS / method, root / method)
    path = root / "mfiba-elic" / "shapes_rcnn" / "rate_model.json"
    model = json.loads(path.read_text())
    model["a"][1] = "steep"
    path.write_text(json.dumps(model))
    return root


NO_OUT = lambda tmp: not (tmp / "out").exists()  # noqa: E731

CASES = [
    Case("out is a file", lambda tmp, c: run_args(tmp, c, out=file_at(tmp / "out")), "is a file, not a folder",
         lambda tmp: (tmp / "out").read_text() == "keep me"),
    Case("out below a file", lambda tmp, c: run_args(tmp, c, out=file_at(tmp / "f") / "out"), "which is a file",
         lambda tmp: (tmp / "f").read_text() == "keep me"),
    Case("out in a read-only folder", lambda tmp, c: run_args(tmp, c, out=read_only(tmp / "ro") / "out"),
         "not writable", lambda tmp: not (tmp / "ro" / "out").exists(),
         skip="root writes into read-only folders" if os.geteuid() == 0 else None),
    Case("cache is a file", lambda tmp, c: run_args(tmp, c, "--cache", file_at(tmp / "cache")), "--cache",
         NO_OUT),
    Case("bbox of two numbers", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("annotations", "bbox", [1, 2]))), "bbox [1, 2]",
        NO_OUT),
    Case("bbox a word", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("annotations", "bbox", "wide"))), "bbox 'wide'",
        NO_OUT),
    Case("bbox negative width", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("annotations", "bbox", [1, 2, -3, 4]))),
        "width and height not negative", NO_OUT),
    Case("image id a list", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("images", "id", [1]))), "integer id", NO_OUT),
    Case("annotation image id a list", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("annotations", "image_id", [1]))),
        "unknown image [1]", NO_OUT),
    Case("category id a string", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("categories", "id", "1"))), "integer id",
        NO_OUT),
    Case("annotation category id a string", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("annotations", "category_id", "1"))),
        "category_id '1'", NO_OUT),
    Case("image width a word", lambda tmp, c: run_args(
        tmp, c, annotations=edited_annotations(c, tmp, set_first("images", "width", "wide"))),
        "give positive integers", NO_OUT),
    Case("png claiming 20000x20000", lambda tmp, c: run_args(tmp, c, images=copy_with_big_png(c, tmp)),
         "--max-image-pixels"),
    Case("pixel limit of 0", lambda tmp, c: run_args(tmp, c, "--max-image-pixels", "0"), "--max-image-pixels 0",
         NO_OUT),
    Case("rate model with a word", lambda tmp, c: [
        "run", "--methods", "mfiba-elic", "--limit", "1", "--out", tmp / "out", "--checkpoints",
        broken_rate_model(tmp), *coco_args(*c)], "a and b must hold one finite number per level", NO_OUT),
    Case("workers 0", lambda tmp, c: run_args(tmp, c, "--workers", "0"), "--workers 0", NO_OUT),
    Case("batch size 0", lambda tmp, c: run_args(tmp, c, "--batch-size", "0"), "--batch-size 0", NO_OUT),
    Case("cuda without a GPU", lambda tmp, c: run_args(tmp, c, "--device", "cuda"), "no CUDA device", NO_OUT,
         skip="this machine has CUDA" if torch.cuda.is_available() else None),
    Case("unknown method", lambda tmp, c: [*run_args(tmp, c)[:2], "nope", *run_args(tmp, c)[3:]],
         "unknown method 'nope'", NO_OUT),
    Case("train --out a file", lambda tmp, c: ["train", "lmsfc", "--quality", "1", "--out", file_at(tmp / "ck"),
                                                "--task-model", "shapes_rcnn", "--dataset", "shapes"],
         "is a file, not a folder", lambda tmp: (tmp / "ck").read_text() == "keep me"),
    Case("fit-rate-model --cache a file", lambda tmp, c: [
        "fit-rate-model", "mfiba-elic", "--task-model", "shapes_rcnn", "--dataset", "shapes", "--cache",
        file_at(tmp / "cache")], "--cache", lambda tmp: (tmp / "cache").read_text() == "keep me"),
    Case("report of an empty folder", lambda tmp, c: ["report", "--out", tmp / "out"], "fcmbench run"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_error_line_and_exit_2(case, tmp_path, tiny_coco):
    if case.skip:
        pytest.skip(case.skip)
    result = run_cli(*case.args(tmp_path, tiny_coco), check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and case.message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert case.untouched(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_coco) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run_cli("run", "--methods", "raw,quant", "--rates", "float32,4bit", "--limit", "1", "--out", out,
            *coco_args(*tiny_coco))
    run_cli("report", "--out", out)
    return out


@pytest.mark.parametrize(("column", "value"), [("bpp", "many"), ("n_images", "six"), ("bbox_mAP", "good")])
def test_a_published_table_with_words_for_numbers_writes_no_report(finished_run, tmp_path, column, value):
    table = (finished_run / "rd.csv").read_text().splitlines()
    header = table[0].split(",")
    cells = table[1].split(",")
    cells[header.index(column)] = value
    published = tmp_path / "published" / "rd.csv"
    published.parent.mkdir()
    published.write_text("\n".join([table[0], ",".join(cells), *table[2:]]) + "\n")
    report = tmp_path / "report"
    result = run_cli("report", "--out", report, finished_run, published, check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert f"column {column} holds '{value}'" in errors[0] and "Traceback" not in result.stderr
    assert not report.exists() or list(report.iterdir()) == []

