"""The embedded default: small enough to ship, accurate enough to matter, and a demo whose RD points make sense."""

import csv
from pathlib import Path

import pytest

from conftest import run_cli
from fcmbench.core.codec import ImageCodec
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

pytestmark = pytest.mark.artifacts

PACKAGE = Path(__file__).resolve().parents[1] / "fcmbench"
needs_weights = pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained yet")


def test_shipped_files_stay_small():
    # what the package ships (pyproject's package-data), not a training run's .resume or .partial files: 40 MB in
    # all (issue 27)
    shipped = [p for folder in ("weights", "checkpoints") for suffix in ("*.pt", "*.json")
               for p in (PACKAGE / folder).rglob(suffix)]
    assert sum(p.stat().st_size for p in shipped) <= 40_000_000


@needs_weights
@pytest.mark.slow
def test_detector_reaches_half_box_map_on_val():
    from fcmbench.training.detector import evaluate_task

    assert evaluate_task(SHIPPED_WEIGHTS) >= 0.5


@needs_weights
@pytest.mark.slow
def test_demo_rd_points_fall_with_rate(tmp_path):
    out = tmp_path / "demo"
    run_cli("run", "--methods", "all", "--dataset", "shapes", "--limit", "8",
            "--codec-opt", "vtm-feature.preset=faster", "--codec-opt", "vtm-image.preset=faster",
            "--rates", "float32,2bit,8bit,qp27,qp47,qp22", "--out", out)
    report = run_cli("report", "--out", out)
    assert "report.html" in report.stdout
    with open(out / "rd.csv") as handle:
        rows = {(r["method"], r["rate"]): r for r in csv.DictReader(handle)}
    m = {key: float(row["bbox_mAP"]) for key, row in rows.items()}
    bpp = {key: float(row["bpp"]) for key, row in rows.items()}
    assert m[("raw", "float32")] > 0.4
    assert m[("quant", "2bit")] <= m[("quant", "8bit")] + 0.01 and bpp[("quant", "2bit")] < bpp[("quant", "8bit")]
    assert m[("vtm-feature", "qp47")] < m[("vtm-feature", "qp27")]
    assert m[("vtm-image", "qp47")] < m[("vtm-image", "qp22")]


@needs_weights
@pytest.mark.slow
def test_shipped_feature_codecs_have_monotone_rd_curves(tmp_path):
    """The demo's L-MSFC family: each quality costs more bits and loses no accuracy (box and mask)."""
    out = tmp_path / "run"
    run_cli("run", "--methods", "lmsfc,lmsfc-nocm,tamsf", "--dataset", "shapes", "--limit", "50", "--out", out)
    run_cli("report", "--out", out)
    with open(out / "rd.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["method"], float(r["rate_value"])))
    for method in ("lmsfc", "lmsfc-nocm", "tamsf"):
        curve = [r for r in rows if r["method"] == method]
        assert len(curve) >= 4
        for column in ("bpp", "bbox_mAP", "segm_mAP"):
            values = [float(r[column]) for r in curve]
            assert values == sorted(values), f"{method} {column} not monotone in quality: {values}"


def test_detector_training_is_deterministic(tmp_path, tiny_coco):
    """Same seed, same data -> the same weights, byte for byte: the shipped detector is reproducible."""
    import torch

    from fcmbench.datasets.coco import CocoDataset
    from fcmbench.training.detector import train_task

    dataset = CocoDataset(*tiny_coco)
    for name in ("a.pt", "b.pt"):
        train_task(tmp_path / name, epochs=1, batch_size=3, train=dataset, evaluate=False, threads=1)
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "b.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a.pt.ckpt").exists()


@needs_weights
@pytest.mark.parametrize("method", ["lmsfc", "lmsfc-nocm", "tamsf", "elic-feat", "tcm-feat", "mfiba-elic",
                                    "mfiba-tcm", "elic", "tcm"])
def test_shipped_learned_checkpoints_load_and_code(method, tiny_coco):
    """Every learned method the demo runs has its shipped files, and they code an image of the embedded world."""
    from fcmbench.core import registry
    from fcmbench.core.codec import CodecOptions
    from fcmbench.datasets.base import load_image
    from fcmbench.datasets.coco import CocoDataset
    from fcmbench.tasks.base import TaskModelOptions
    from fcmbench.tasks.shapes_rcnn import shapes_rcnn

    image = load_image(CocoDataset(*tiny_coco).items()[0])
    codec = registry.methods.get(method)(CodecOptions(task_model="shapes_rcnn"))
    points = codec.rate_points()
    codec.ensure_ready(points)
    assert len(points) >= 4
    if isinstance(codec, ImageCodec):
        assert codec.decode(codec.encode(image, points[0])).shape == image.shape
        return
    x = shapes_rcnn(TaskModelOptions()).front(image)
    decoded = codec.decode(codec.encode(x, points[0]))
    assert {k: v.shape for k, v in decoded.items()} == {k: v.shape for k, v in x.items()}
