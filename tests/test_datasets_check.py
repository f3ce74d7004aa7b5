"""Layout checks on small stand-ins (the counts are parameters); the command runs once on the real counts."""

import json

import pytest

from conftest import run_cli
from fcmbench.datasets.check import KITTI_TRAINING_FRAMES, check_coco, check_kitti, problems

FRAMES, IMAGES = 30, 20  # stand-ins for KITTI's 7,481 training frames and COCO's 5,000 val images


def kitti_layout(root, images=FRAMES, labels=FRAMES):
    for folder, suffix, count in (("image_2", ".png", images), ("label_2", ".txt", labels)):
        path = root / "training" / folder
        path.mkdir(parents=True)
        for index in range(count):
            (path / f"{index:06d}{suffix}").touch()
    return root


def coco_layout(root, images=IMAGES, listed=IMAGES):
    (root / "val2017").mkdir(parents=True)
    for index in range(images):
        (root / "val2017" / f"{index:012d}.jpg").touch()
    (root / "annotations").mkdir()
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(listed)], "annotations": [],
            "categories": []}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


def test_complete_kitti(tmp_path):
    assert problems(check_kitti(kitti_layout(tmp_path), FRAMES)) == ""


def test_kitti_missing_labels(tmp_path):
    wrong = problems(check_kitti(kitti_layout(tmp_path, labels=FRAMES - 2), FRAMES))
    assert f"training/label_2/*.txt: expected {FRAMES} files, found {FRAMES - 2}" in wrong
    assert "2 missing (e.g. 000028, 000029)" in wrong and "data_object_label_2.zip" in wrong


def test_kitti_nothing_there(tmp_path):
    wrong = problems(check_kitti(tmp_path))
    assert "training/image_2/*.png: expected 7481 files, found no folder" in wrong
    assert "data_object_image_2.zip" in wrong and "cvlibs.net" in wrong


def test_complete_coco(tmp_path):
    assert problems(check_coco(coco_layout(tmp_path), IMAGES)) == ""


def test_coco_missing_images(tmp_path):
    wrong = problems(check_coco(coco_layout(tmp_path, images=IMAGES - 1), IMAGES))
    assert "1 missing (000000000019.jpg)" in wrong and "val2017.zip" in wrong


def test_coco_missing_annotations(tmp_path):
    root = coco_layout(tmp_path)
    (root / "annotations" / "instances_val2017.json").unlink()
    assert "annotations_trainval2017.zip" in problems(check_coco(root, IMAGES))


@pytest.mark.slow
def test_the_command_exits_2_when_incomplete(tmp_path):
    kitti_layout(tmp_path / "k", images=KITTI_TRAINING_FRAMES, labels=10)
    result = run_cli("datasets", "check", "kitti", "--root", tmp_path / "k", check=False)
    assert result.returncode == 2 and result.stderr.count("error:") == 1
    assert "found 10" in result.stderr and "data_object_label_2.zip" in result.stderr
    kitti_layout(tmp_path / "ok", images=KITTI_TRAINING_FRAMES, labels=KITTI_TRAINING_FRAMES)
    assert "is complete" in run_cli("datasets", "check", "kitti", "--root", tmp_path / "ok").stdout
