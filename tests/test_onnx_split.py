"""The ONNX split backend on the real COCO-trained SSD MobileNetV2 FPN-lite (from ../shared)."""

import json

import pandas as pd
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import SHARED, needs_shared, run_cli
from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.base import load_image
from fcmbench.datasets.coco import CocoDataset
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.onnx_split import OnnxSplitDetector
from fcmbench.tasks.ssd_fpnlite import COCO_CATEGORY_IDS, POSTPROCESS, RELATIVE_PATH, ssd_mobilenet_fpnlite

MODEL = SHARED / "models" / RELATIVE_PATH
VAL = SHARED / "data" / "coco-val2017-96"
needs_coco = needs_shared(f"models/{RELATIVE_PATH}", "data/coco-val2017-96")


@pytest.fixture(scope="module")
def ssd():
    return ssd_mobilenet_fpnlite(TaskModelOptions(weights=str(MODEL)))


@pytest.fixture(scope="module")
def val():
    return CocoDataset(VAL / "images", VAL / "instances.json")


@needs_coco
def test_levels_are_read_from_the_graph(ssd):
    assert ssd.levels == {"p3": (128, 32, 32), "p4": (128, 16, 16), "p5": (128, 8, 8), "p6": (128, 4, 4),
                          "p7": (128, 2, 2)}


@needs_coco
def test_model_classes_map_to_coco_categories_of_the_same_name():
    names = (MODEL.parent / "labels_coco_dataset_80.txt").read_text().splitlines()[1:]
    categories = {c["id"]: c["name"] for c in json.loads((VAL / "instances.json").read_text())["categories"]}
    assert [categories[i] for i in COCO_CATEGORY_IDS] == names


@needs_coco
def test_split_predictions_equal_the_unsplit_network(ssd, val):
    for item in val.items()[:6]:
        image = load_image(item)
        whole, split = ssd.predict(image), ssd.back(ssd.front(image))
        assert len(whole["boxes"]) > 0
        assert all(torch.equal(whole[k], split[k]) for k in ("boxes", "scores", "labels"))


@needs_coco
def test_cli_map_equals_pycocotools_on_the_unsplit_predictions(tmp_path, ssd, val):
    run_cli("run", "--methods", "raw", "--dataset", "coco", "--images", VAL / "images", "--annotations",
            VAL / "instances.json", "--task-model", "ssd_mobilenet_fpnlite", "--weights", MODEL, "--out", tmp_path)
    run_cli("report", "--out", tmp_path)
    stored = pd.read_csv(tmp_path / "rd.csv")
    results = [r for item in val.items() for r in ssd.to_coco_results(item.image_id, ssd.predict(load_image(item)))]
    truth = COCO(str(VAL / "instances.json"))
    check = COCOeval(truth, truth.loadRes(results), "bbox")
    check.evaluate()
    check.accumulate()
    check.summarize()
    assert 0.12 < check.stats[0] < 0.25  # the real detector works on real images
    assert stored.loc[0, "bbox_mAP"] == pytest.approx(check.stats[0], abs=1e-6)  # rd.csv keeps 6 decimals
    assert stored.loc[0, "bbox_mAP50"] == pytest.approx(check.stats[1], abs=1e-6)  # rd.csv keeps 6 decimals


@needs_coco
def test_a_split_tensor_not_in_the_graph_is_named():
    with pytest.raises(FcmbenchError, match=r"no tensors \['Relu6__999:0'\]"):
        OnnxSplitDetector("ssd", MODEL, ("Relu6__999:0",), POSTPROCESS, COCO_CATEGORY_IDS)


def test_a_file_that_is_not_onnx_is_one_clear_error(tmp_path, tiny_coco):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    images, annotations = tiny_coco
    for weights, message in [(bad, "is not a readable ONNX model"), (tmp_path / "absent.onnx", "no ONNX model at")]:
        result = run_cli("run", "--methods", "raw", "--dataset", "coco", "--images", images, "--annotations",
                         annotations, "--task-model", "ssd_mobilenet_fpnlite", "--weights", weights, "--out",
                         tmp_path / "run", check=False)
        assert result.returncode == 2 and message in result.stdout + result.stderr
        assert not (tmp_path / "run").exists()
