import json

import pytest

from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.base import DatasetItem, load_image
from fcmbench.datasets.coco import CocoDataset, coco
from fcmbench.datasets.options import DatasetOptions
from fcmbench.datasets.shapes import CLASSES, write_split


def ground_truth_as_results(dataset: CocoDataset) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
             "segmentation": a["segmentation"]} for a in dataset.coco.dataset["annotations"]]


def test_ground_truth_scores_perfectly(tiny_coco):
    dataset = CocoDataset(*tiny_coco)
    assert dataset.iou_types == ("bbox", "segm", "keypoints")
    ids = [i.image_id for i in dataset.items()]
    metrics = dataset.evaluate(ground_truth_as_results(dataset), ids, ("bbox", "segm"))
    assert metrics["bbox_mAP"] == pytest.approx(1.0)
    assert metrics["segm_mAP50"] == pytest.approx(1.0)
    assert dataset.evaluate([], ids, ("bbox",))["bbox_mAP"] == 0.0


def test_shifted_boxes_score_lower(tiny_coco):
    dataset = CocoDataset(*tiny_coco)
    results = ground_truth_as_results(dataset)
    for r in results:
        r["bbox"] = [r["bbox"][0] + r["bbox"][2] * 0.3, r["bbox"][1], r["bbox"][2], r["bbox"][3]]
    metrics = dataset.evaluate(results, [i.image_id for i in dataset.items()], ("bbox",))
    assert 0.0 < metrics["bbox_mAP"] < 0.9


def test_same_seed_same_bytes(tmp_path):
    write_split(tmp_path / "a", 3, seed=7)
    write_split(tmp_path / "b", 3, seed=7)
    write_split(tmp_path / "c", 3, seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 4
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/annotations.json").read_bytes() != (tmp_path / "c/annotations.json").read_bytes()


def test_shapes_world_spans_classes_and_scales(tmp_path):
    write_split(tmp_path / "s", 40, seed=1)
    gt = json.loads((tmp_path / "s/annotations.json").read_text())
    assert {a["category_id"] for a in gt["annotations"]} == set(range(1, len(CLASSES) + 1))
    areas = [a["area"] for a in gt["annotations"]]
    assert min(areas) < 32**2 and max(areas) > 96**2 and any(32**2 <= a <= 96**2 for a in areas)
    assert any(a.get("num_keypoints", 0) > 0 for a in gt["annotations"])


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"images": []}', "lacks the list"),
    ('{"images": [{"id": 1}], "annotations": [{"image_id": 1}], "categories": []}', "needs image_id"),
    ('{"images": [{"id": 1}], "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0,0,1,1]}],'
     ' "categories": []}', "unknown image"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "lacks a valid"),
])
def test_bad_annotation_files(tmp_path, content, message):
    path = tmp_path / "instances.json"
    path.write_text(content)
    with pytest.raises(FcmbenchError, match=message):
        CocoDataset(tmp_path, path)


def test_coco_layouts(tmp_path, tiny_coco):
    with pytest.raises(FcmbenchError, match="--data-root"):
        coco(DatasetOptions())
    with pytest.raises(FcmbenchError, match="both --images"):
        coco(DatasetOptions(images=tiny_coco[0]))
    with pytest.raises(FcmbenchError, match="does not exist"):
        coco(DatasetOptions(root=tmp_path))
    (tmp_path / "val2017").symlink_to(tiny_coco[0])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val2017.json").write_bytes(tiny_coco[1].read_bytes())
    assert len(coco(DatasetOptions(root=tmp_path)).items()) == 6


def test_undecodable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(FcmbenchError, match="does not decode"):
        load_image(DatasetItem(1, bad, 4, 4))
