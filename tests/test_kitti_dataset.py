import json

import pytest
from kitti_fixture import SHAPES_CLASS_MAP, label_line, write_kitti

from fcmbench.core import registry
from fcmbench.core.errors import FcmbenchError
from fcmbench.datasets.kitti import CATEGORY_IDS, kitti, parse_class_map
from fcmbench.datasets.options import DatasetOptions
from fcmbench.evaluation.kitti import evaluate_folders


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_kitti(tmp_path_factory.mktemp("kitti"), frames=6)


def ground_truth_as_results(dataset, class_map_ids):
    """Every Car/Pedestrian/Cyclist label as a perfect COCO-format detection, with the task model's ids."""
    results = []
    for item in dataset.items():
        path = dataset.labels_dir / f"{item.image_id:06d}.txt"
        for line in path.read_text().splitlines():
            f = line.split()
            if f[0] in class_map_ids:
                x1, y1, x2, y2 = map(float, f[4:8])
                results.append({"image_id": item.image_id, "category_id": class_map_ids[f[0]],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    return results


def test_registered_like_coco(root):
    dataset = registry.datasets.get("kitti")(DatasetOptions(root=root))
    assert [i.image_id for i in dataset.items()] == list(range(6))
    assert dataset.items()[0].width == 256 and dataset.items()[0].path.name == "000000.png"


def test_perfect_predictions_score_like_the_devkit_and_coco(root, tmp_path):
    dataset = kitti(DatasetOptions(root=root))
    results = ground_truth_as_results(dataset, {"Car": 3, "Pedestrian": 1, "Cyclist": 2})
    metrics = dataset.evaluate(results, [i.image_id for i in dataset.items()], ("bbox",))
    assert metrics["bbox_mAP"] == pytest.approx(1.0)
    # the same predictions written as detection files and scored by `evaluate kitti`
    det = tmp_path / "det"
    det.mkdir()
    names = {3: "Car", 1: "Pedestrian", 2: "Cyclist"}
    for item in dataset.items():
        lines = [label_line(names[r["category_id"]], (r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                                                      r["bbox"][1] + r["bbox"][3]), score=r["score"])
                 for r in results if r["image_id"] == item.image_id]
        (det / f"{item.image_id:06d}.txt").write_text("".join(f"{line}\n" for line in lines))
    devkit = evaluate_folders(root / "training" / "label_2", det)
    for cls, short in (("Car", "car"), ("Pedestrian", "pedestrian"), ("Cyclist", "cyclist")):
        assert metrics[f"kitti_{short}_mod_AP40"] == devkit.ap40[cls]["moderate"]
        assert metrics[f"kitti_{short}_hard_AP11"] == devkit.ap11[cls]["hard"]
    assert metrics["kitti_pedestrian_hard_AP40"] > 0  # few boxes: the devkit's small numbers, not 100
    assert metrics["kitti_mod_AP40"] == pytest.approx(sum(devkit.ap40[c]["moderate"] for c in devkit.ap40) / 3)


def test_the_coco_class_map_takes_a_coco_detectors_ids(root):
    dataset = kitti(DatasetOptions(root=root))  # default: COCO car 3, person 1, bicycle 2
    results = ground_truth_as_results(dataset, {"Car": 3, "Pedestrian": 1, "Cyclist": 2})
    results.append({**results[0], "category_id": 62})  # a COCO chair: not a KITTI class, dropped
    ids = [i.image_id for i in dataset.items()]
    assert dataset.evaluate(results, ids, ("bbox",))["bbox_mAP"] == pytest.approx(1.0)
    swapped = kitti(DatasetOptions(root=root, class_map="1=Car,2=Pedestrian,3=Cyclist"))  # wrong for these ids
    assert swapped.evaluate(results, ids, ("bbox",))["bbox_mAP"] < 0.5


def test_dontcare_and_van_are_crowd_regions_in_the_coco_conversion(root):
    dataset = kitti(DatasetOptions(root=root))
    anns = dataset.coco.dataset["annotations"]
    crowd = [a for a in anns if a["iscrowd"]]
    labels = "".join(p.read_text() for p in sorted((root / "training" / "label_2").glob("*.txt")))
    assert len(crowd) == 3 * labels.count("DontCare") + labels.count("Van")
    assert {a["category_id"] for a in anns} <= set(CATEGORY_IDS.values())


def test_a_subset_of_frames_is_scored_on_its_own(root):
    dataset = kitti(DatasetOptions(root=root))
    results = ground_truth_as_results(dataset, {"Car": 3, "Pedestrian": 1, "Cyclist": 2})
    first = [r for r in results if r["image_id"] < 3]
    # predictions for frames 0..2 only, scored on frames 0..2: nothing missed
    assert dataset.evaluate(first, [0, 1, 2], ("bbox",))["bbox_mAP"] == pytest.approx(1.0)


def test_split_file_and_folders(root, tmp_path):
    split = tmp_path / "val.txt"
    split.write_text("000001\n000004\n")
    dataset = kitti(DatasetOptions(images=root / "training" / "image_2", labels=root / "training" / "label_2",
                                   split_file=split))
    assert [i.image_id for i in dataset.items()] == [1, 4]


@pytest.mark.parametrize(("spec", "expected"), [("coco", {3: "Car", 1: "Pedestrian", 2: "Cyclist"}),
                                                (None, {3: "Car", 1: "Pedestrian", 2: "Cyclist"}),
                                                (SHAPES_CLASS_MAP, {2: "Car", 1: "Pedestrian", 3: "Cyclist"}),
                                                ("8=car", {8: "Car"})])
def test_class_maps(spec, expected):
    assert parse_class_map(spec) == expected


def test_a_bad_class_map():
    with pytest.raises(FcmbenchError, match="'3=Truck' is not ID=Class"):
        parse_class_map("1=Car,3=Truck")


def copy_root(root, tmp_path):
    import shutil

    shutil.copytree(root, tmp_path / "k")
    return tmp_path / "k"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda r: (r / "training/label_2/000002.txt").unlink(), r"label file .*000002.txt of frame 000002 is missing"),
    (lambda r: (r / "training/image_2/000003.png").write_bytes(b"not a png"), r"image .*000003.png does not decode"),
    (lambda r: (r / "training/label_2/000001.txt").write_text("Car 0 0 -10 1 2 3\n"),
     r"000001.txt, line 1: 7 fields, expected 15"),
    (lambda r: (r / "training/label_2/000001.txt").write_text(label_line("Car", (1, 2, 3, 4)) + "\n"
                                                               + label_line("Car", (1, 2, 3, 4)).replace("2.00", "x")
                                                               + "\n"), r"000001.txt, line 2: 'x' is not a number"),
])
def test_bad_frames_are_one_clear_error(root, tmp_path, damage, message):
    broken = copy_root(root, tmp_path)
    damage(broken)
    with pytest.raises(FcmbenchError, match=message):
        kitti(DatasetOptions(root=broken))


def test_named_splits_need_a_split_file(root):
    with pytest.raises(FcmbenchError, match="no named split 'val': give its frame ids in a file"):
        kitti(DatasetOptions(root=root, split="val"))


def test_missing_layout(tmp_path):
    with pytest.raises(FcmbenchError, match="training/image_2 and training/label_2"):
        kitti(DatasetOptions(root=tmp_path))
    with pytest.raises(FcmbenchError, match="needs --data-root DIR"):
        kitti(DatasetOptions())
    split = tmp_path / "split.txt"
    split.write_text("000001\n")
    with pytest.raises(FcmbenchError, match="give both --images DIR and --labels DIR"):
        kitti(DatasetOptions(images=tmp_path, split_file=split))


def test_metrics_are_json_numbers(root):
    dataset = kitti(DatasetOptions(root=root))
    metrics = dataset.evaluate([], [0, 1], ("bbox",))
    json.dumps(metrics)
    assert metrics["kitti_car_mod_AP40"] == 0 and metrics["bbox_mAP"] == 0


@pytest.mark.slow
def test_run_and_report_on_a_kitti_folder(root, tmp_path):
    """The issue's "done when": raw, quant and the VVC feature anchor on a KITTI-format folder, through the
    shipped shapes_rcnn mapped onto KITTI's classes; rd.csv carries the devkit's APs and COCO mAP."""
    import csv

    from conftest import run_cli
    from fcmbench.tasks.shapes_rcnn import SHIPPED_WEIGHTS

    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip("shapes_rcnn weights not trained")
    out = tmp_path / "out"
    run_cli("run", "--methods", "raw,quant,vtm-feature", "--dataset", "kitti", "--data-root", root,
            "--task-model", "shapes_rcnn", "--class-map", SHAPES_CLASS_MAP, "--out", out, "--limit", "4",
            "--rates", "float32,4bit,8bit,qp32,qp37", "--codec-opt", "vtm-feature.preset=faster", "--device", "cpu")
    run_cli("report", "--out", out)
    rows = {(r["method"], r["rate"]): r for r in csv.DictReader((out / "rd.csv").open())}
    assert set(rows) == {("raw", "float32"), ("quant", "4bit"), ("quant", "8bit"), ("vtm-feature", "qp32"),
                         ("vtm-feature", "qp37")}
    raw = rows["raw", "float32"]
    assert float(raw["bbox_mAP"]) > 0.3  # the shapes detector finds the squares, circles and triangles
    assert all(0 <= float(raw[f"kitti_{c}_mod_AP40"]) <= 100 for c in ("car", "pedestrian", "cyclist"))
    assert "kitti_mod_AP40" in raw and "kitti_cyclist_hard_AP11" in raw


@pytest.mark.slow
def test_a_malformed_label_stops_run_with_one_line(root, tmp_path):
    from conftest import run_cli

    broken = copy_root(root, tmp_path)
    (broken / "training/label_2/000004.txt").write_text(label_line("Car", (1, 2, 3, 4)) + " 7\n")
    result = run_cli("run", "--methods", "raw", "--dataset", "kitti", "--data-root", broken, "--out",
                     tmp_path / "out", "--task-model", "shapes_rcnn", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "000004.txt, line 1: 16 fields, expected 15" in result.stderr
