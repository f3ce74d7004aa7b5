"""The split changes nothing: back(front(x)) equals the unsplit network's output exactly."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from fcmbench.core.errors import FcmbenchError
from fcmbench.tasks.base import TaskModelOptions, prediction_to_coco
from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS, shapes_rcnn
from fcmbench.tasks.torchvision_rcnn import (
    faster_rcnn_r50_fpn,
    faster_rcnn_r50_fpn_v2,
    keypoint_rcnn_r50_fpn,
    mask_rcnn_r50_fpn,
)


def image(height=200, width=260, seed=0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_split_is_exact(task, x):
    split = task.back(task.front(x))
    whole = task.predict(x)
    assert split.keys() == whole.keys()
    assert len(whole["boxes"]) > 0, "the comparison needs detections"
    for key in whole:
        assert torch.equal(split[key], whole[key]), key


@pytest.mark.parametrize("builder", [faster_rcnn_r50_fpn, faster_rcnn_r50_fpn_v2, mask_rcnn_r50_fpn,
                                     keypoint_rcnn_r50_fpn])
def test_torchvision_split_is_exact(builder):
    with pytest.warns(UserWarning, match="RANDOM"):
        task = builder(TaskModelOptions(weights="none"))
    task.model.transform.min_size, task.model.transform.max_size = (320,), 320  # keep the test quick
    task.model.roi_heads.score_thresh = 0.0  # random weights score low; keep detections to compare
    assert task.level_names == ("0", "1", "2", "3", "pool")
    features = task.front(image())
    assert [features[k].shape[0] for k in features] == [256] * 5
    assert features.original_size == (200, 260)
    assert_split_is_exact(task, image())


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="shapes_rcnn weights not trained yet")
def test_shapes_rcnn_split_is_exact():
    from fcmbench.datasets.base import load_image
    from fcmbench.datasets.options import DatasetOptions
    from fcmbench.datasets.shapes import shapes

    task = shapes_rcnn(TaskModelOptions())
    item = shapes(DatasetOptions(split="val")).items()[0]
    assert_split_is_exact(task, load_image(item))


def test_local_weights_load_and_are_hashed(tmp_path):
    reference = shapes_rcnn(TaskModelOptions(weights="none"))
    path = tmp_path / "w.pt"
    torch.save(reference.model.state_dict(), path)
    task = shapes_rcnn(TaskModelOptions(weights=str(path)))
    assert len(task.weights_id) == 64
    x = image(256, 256)
    assert torch.equal(task.front(x)["0"], reference.front(x)["0"])


def test_wrong_or_missing_weights_are_clear_errors(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(FcmbenchError, match="does not fit task model shapes_rcnn"):
        shapes_rcnn(TaskModelOptions(weights=str(wrong)))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FcmbenchError, match="not a PyTorch checkpoint"):
        shapes_rcnn(TaskModelOptions(weights=str(garbage)))
    with pytest.raises(FcmbenchError, match="does not exist"):
        faster_rcnn_r50_fpn(TaskModelOptions(weights=str(tmp_path / "absent.pt")))


def test_default_weights_without_internet_explain_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached download to fall back on
    try:
        task = faster_rcnn_r50_fpn(TaskModelOptions())
    except FcmbenchError as err:
        assert "--weights PATH" in str(err) and "--weights none" in str(err)
    else:  # a machine with internet downloaded the real weights
        assert task.weights_id.startswith("FasterRCNN_ResNet50_FPN_Weights")


def test_masks_become_rle_that_decode_to_the_thresholded_masks():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 1, 20, 30, generator=gen)
    prediction = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 9.0]] * 3), "scores": torch.tensor([0.9, 0.5, 0.1]),
                  "labels": torch.tensor([1, 2, 3]), "masks": masks}
    results = prediction_to_coco(7, prediction, int)
    assert [r["category_id"] for r in results] == [1, 2, 3] and results[0]["bbox"] == [1.0, 2.0, 4.0, 7.0]
    for result, mask in zip(results, masks, strict=True):
        rle = {"size": result["segmentation"]["size"], "counts": result["segmentation"]["counts"].encode()}
        assert np.array_equal(mask_utils.decode(rle), (mask[0] > 0.5).numpy().astype(np.uint8))
