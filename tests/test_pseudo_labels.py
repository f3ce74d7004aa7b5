"""Ground truth from the uncompressed model's own detections, and MFIBA's rate model fitted on it."""

import json

import torch

from conftest import run_cli
from fcmbench.core.codec import CodecOptions
from fcmbench.datasets.base import image_folder_items, load_image
from fcmbench.datasets.pseudo import PseudoLabelled
from fcmbench.datasets.shapes import write_split
from fcmbench.models.elic import build_elic
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.shapes_rcnn import shapes_rcnn
from fcmbench.zoo.checkpoints import checkpoint_path, save_checkpoint


def test_the_uncompressed_detections_score_full_marks_and_degraded_ones_less(tmp_path):
    write_split(tmp_path / "data", count=3, seed=7)
    task = shapes_rcnn(TaskModelOptions())
    items = image_folder_items(tmp_path / "data" / "images")
    features = {i.image_id: task.front(load_image(i)) for i in items}
    dataset = PseudoLabelled(items, task, features, min_score=0.5)
    predictions = {i.image_id: task.back(features[i.image_id]) for i in items}
    confident = sum(int((p["scores"] >= 0.5).sum()) for p in predictions.values())
    assert confident > 0 and len(dataset.coco.dataset["annotations"]) == confident
    ids = [i.image_id for i in items]
    own = [r for i in ids for r in task.to_coco_results(i, predictions[i])]
    assert dataset.evaluate(own, ids, ("bbox",))["bbox_mAP"] > 0.99
    shifted = [{**r, "bbox": [r["bbox"][0] + 0.4 * r["bbox"][2], *r["bbox"][1:]]} for r in own]
    assert dataset.evaluate(shifted, ids, ("bbox",))["bbox_mAP"] < 0.9


def test_fit_rate_model_on_an_unlabelled_folder(tmp_path):
    write_split(tmp_path / "data", count=19, seed=11)
    options = CodecOptions(task_model="shapes_rcnn", checkpoints=tmp_path / "ckpt")
    for quality in (1, 2):
        torch.manual_seed(quality)
        save_checkpoint(build_elic(8, 20), checkpoint_path("elic-feat", quality, options), int8_weights=True)
    result = run_cli("fit-rate-model", "mfiba", "--task-model", "shapes_rcnn", "--image-folder",
                     tmp_path / "data" / "images", "--images", 3, "--out", tmp_path / "ckpt")
    folder = tmp_path / "ckpt" / "mfiba-elic" / "shapes_rcnn"
    model = json.loads((folder / "rate_model.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    assert "--image-folder" in result.stdout and labels and set(labels) <= {"1", "2", "3"}
    assert len(model["a"]) == len(model["b"]) == 5
