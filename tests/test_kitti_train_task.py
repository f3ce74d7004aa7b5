import pytest
import torch
from kitti_fixture import write_kitti

from conftest import run_cli
from fcmbench.core.errors import FcmbenchError
from fcmbench.tasks.base import TaskModelOptions
from fcmbench.tasks.torchvision_rcnn import faster_rcnn_r50_fpn
from fcmbench.training.detector import finetune_model


@pytest.mark.filterwarnings("ignore:task model uses RANDOM weights")
def test_finetune_model_keeps_cocos_background_person_bicycle_car_rows():
    torch.manual_seed(0)
    coco = faster_rcnn_r50_fpn(TaskModelOptions("none")).model.roi_heads.box_predictor
    torch.manual_seed(0)
    cut = finetune_model("faster_rcnn_r50_fpn", "none", classes=3).roi_heads.box_predictor
    assert cut.cls_score.out_features == 4 and cut.bbox_pred.out_features == 16
    assert torch.equal(cut.cls_score.weight, coco.cls_score.weight[:4])
    assert torch.equal(cut.bbox_pred.bias, coco.bbox_pred.bias[:16])


def test_only_torchvision_rcnns_are_fine_tuned():
    with pytest.raises(FcmbenchError, match="not mask_rcnn_r50_fpn"):
        finetune_model("mask_rcnn_r50_fpn", "none", 3)


@pytest.mark.slow
def test_train_task_on_kitti_then_run_with_the_weights(tmp_path):
    """Fine-tune (random start, one step on CPU), save, and load the 4-class weights back as a task model."""
    root = write_kitti(tmp_path / "kitti", frames=2)
    (tmp_path / "train.txt").write_text("000000\n")
    (tmp_path / "val.txt").write_text("000001\n")
    weights = tmp_path / "kitti_frcnn.pt"
    result = run_cli("train-task", "--dataset", "kitti", "--task-model", "faster_rcnn_r50_fpn", "--weights", "none",
                     "--data-root", root, "--split-file", tmp_path / "train.txt", "--val-split-file",
                     tmp_path / "val.txt", "--epochs", "1", "--batch-size", "1", "--out", weights, "--device", "cpu",
                     "--threads", "1")
    assert "validation: bbox_mAP = " in result.stdout and "kitti_mod_AP40" in result.stdout
    assert not weights.with_name(weights.name + ".ckpt").exists()  # the resume checkpoint goes once done
    state = torch.load(weights, weights_only=True)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    bad = run_cli("train-task", "--dataset", "kitti", "--data-root", root, "--device", "cpu", check=False)
    assert bad.returncode == 2 and "give --out FILE" in bad.stderr


@pytest.mark.slow
def test_train_a_codec_on_kitti_features(tmp_path):
    """Codecs train on the features of KITTI frames named by split files (recipe step 2), here lmsfc on the
    shapes detector's features for two steps."""
    root = write_kitti(tmp_path / "kitti", frames=3)
    (tmp_path / "train.txt").write_text("000000\n000001\n")
    (tmp_path / "val.txt").write_text("000002\n")
    common = ["--quality", "1", "--task-model", "shapes_rcnn", "--dataset", "kitti", "--data-root", root,
              "--split-file", tmp_path / "train.txt", "--out", tmp_path / "ckpt", "--threads", "1"]
    result = run_cli("train", "lmsfc", *common, "--val-split-file", tmp_path / "val.txt", "--steps", "2",
                     "--batch-size", "2")
    assert (tmp_path / "ckpt" / "lmsfc" / "shapes_rcnn" / "q1.pt").is_file(), result.stdout
    same = run_cli("train", "lmsfc", *common, "--val-split-file", tmp_path / "train.txt", check=False)
    assert same.returncode == 2 and "are among its training images" in same.stderr
    no_val = run_cli("train", "lmsfc", *common, check=False)
    assert no_val.returncode == 2 and "--val-split-file" in no_val.stderr
    masks = run_cli("train", "tamsf", *common, "--val-split-file", tmp_path / "val.txt", check=False)
    assert masks.returncode == 2 and "has no masks" in masks.stderr and "--no-task-loss" in masks.stderr
