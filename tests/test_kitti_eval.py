"""The KITTI devkit metric on label files the tests write, with the expected APs worked out by hand.

Most cases sit on a base of 41 frames with one easy Car each, detected perfectly with the distinct scores
1.00, 0.99, .., 0.60: 41 true positives give the devkit 41 score thresholds, so every slot is filled and a
perturbation's effect can be followed slot by slot. (With fewer boxes the devkit leaves slots empty: see
``test_one_box_gives_the_devkits_numbers``.)
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kitti_reference import precision_slots

from conftest import run_cli
from fcmbench.core.errors import FcmbenchError
from fcmbench.evaluation.kitti import CLASSES, LEVELS, Objects, evaluate, evaluate_folders, get_thresholds

CAR = (100.0, 100.0, 200.0, 150.0)  # 50 px high: easy
BASE_SCORES = [round(1 - k / 100, 2) for k in range(41)]


def gt_line(kind, box, trunc=0.0, occ=0):
    return f"{kind} {trunc:.2f} {occ} -1.00 {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} 1.5 1.6 3.9 1 1.5 20 0"


def det_line(kind, box, score):
    return gt_line(kind, box) + f" {score}"


def write(tmp_path, frames_gt, frames_det):
    """Frames as lists of label lines; returns (label folder, detection folder)."""
    labels, dets = tmp_path / "label_2", tmp_path / "det"
    labels.mkdir(parents=True, exist_ok=True)
    dets.mkdir(parents=True, exist_ok=True)
    for index, (gts, ds) in enumerate(zip(frames_gt, frames_det, strict=True)):
        (labels / f"{index:06d}.txt").write_text("".join(line + "\n" for line in gts))
        (dets / f"{index:06d}.txt").write_text("".join(line + "\n" for line in ds))
    return labels, dets


def base():
    return [[gt_line("Car", CAR)] for _ in BASE_SCORES], [[det_line("Car", CAR, s)] for s in BASE_SCORES]


def car_aps(tmp_path, gts, dets):
    result = evaluate_folders(*write(tmp_path, gts, dets))
    return result.ap40["Car"], result.ap11["Car"]


def approx(value):
    return pytest.approx(value, abs=1e-4)  # the devkit sums in single precision


def test_perfect_detections_give_100(tmp_path):
    ap40, ap11 = car_aps(tmp_path, *base())
    assert ap40 == {"easy": approx(100), "moderate": approx(100), "hard": approx(100)}
    assert ap11 == ap40


def test_a_miss(tmp_path):
    gts, dets = base()
    dets[7] = []
    # 40 TPs out of 41: 40 thresholds, all at precision 1; slot 40 stays 0
    ap40, ap11 = car_aps(tmp_path, gts, dets)
    assert ap40["moderate"] == approx(39 / 40 * 100)
    assert ap11["moderate"] == approx(10 / 11 * 100)


def test_a_false_positive(tmp_path):
    gts, dets = base()
    dets[0].append(det_line("Car", (400, 100, 500, 150), 0.805))
    # at thresholds 0.81 and up precision 1 (slots 0..19); from 0.80 on (k+1)/(k+2), raised to its largest,
    # 41/42, by the devkit's max over the remaining slots (slots 20..40)
    ap40, ap11 = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx((19 + 21 * 41 / 42) / 40 * 100)
    assert ap11["easy"] == approx((5 + 6 * 41 / 42) / 11 * 100)


@pytest.mark.parametrize(("region", "dropped"), [((390, 90, 510, 160), True),  # covers the detection
                                                  ((440, 100, 520, 150), False)])  # 60 % of it: not > 0.7
def test_a_false_positive_inside_dontcare(tmp_path, region, dropped):
    gts, dets = base()
    gts[0].append(gt_line("DontCare", region, -1, -1))
    dets[0].append(det_line("Car", (400, 100, 500, 150), 0.805))
    ap40, _ = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx(100 if dropped else (19 + 21 * 41 / 42) / 40 * 100)


@pytest.mark.parametrize(("kind", "counts_as_fp"), [("Van", False), ("Truck", True), ("Tram", True),
                                                    ("Misc", True)])
def test_a_detection_on_a_neighbouring_class(tmp_path, kind, counts_as_fp):
    gts, dets = base()
    other = (400, 100, 500, 150)
    gts[0].append(gt_line(kind, other))
    dets[0].append(det_line("Car", other, 0.805))
    ap40, _ = car_aps(tmp_path, gts, dets)
    assert ap40["moderate"] == approx((19 + 21 * 41 / 42) / 40 * 100 if counts_as_fp else 100)


def test_person_sitting_is_ignored_for_pedestrians(tmp_path):
    box = (100, 100, 130, 180)
    gts = [[gt_line("Pedestrian", box)] for _ in BASE_SCORES]
    dets = [[det_line("Pedestrian", box, s)] for s in BASE_SCORES]
    gts[0].append(gt_line("Person_sitting", (300, 100, 330, 180)))
    dets[0].append(det_line("Pedestrian", (300, 100, 330, 180), 0.805))
    result = evaluate_folders(*write(tmp_path, gts, dets))
    assert result.ap40["Pedestrian"]["easy"] == approx(100)


def test_a_hard_only_object(tmp_path):
    gts, dets = base()
    gts.append([gt_line("Car", CAR, occ=2)])  # occlusion 2: ignored at easy and moderate, counted at hard
    dets.append([])
    ap40, ap11 = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx(100) and ap40["moderate"] == approx(100)
    # hard: 41 TPs of 42; getThresholds skips the 32nd score, so 40 thresholds fill slots 0..39
    assert ap40["hard"] == approx(39 / 40 * 100)
    assert ap11["hard"] == approx(10 / 11 * 100)


@pytest.mark.parametrize(("trunc", "occ", "height", "valid"), [
    (0.15, 0, 50, ("easy", "moderate", "hard")),  # limits are inclusive: 0.15 is not above 0.15
    (0.16, 0, 50, ("moderate", "hard")),
    (0.0, 1, 50, ("moderate", "hard")),
    (0.5, 0, 50, ("hard",)),
    (0.51, 0, 50, ()),
    (0.0, 3, 50, ()),  # occlusion unknown
    (0.0, 0, 40, ("moderate", "hard")),  # at the minimum height: ignored
    (0.0, 0, 25, ()),
])
def test_difficulty_limits(tmp_path, trunc, occ, height, valid):
    box = (100, 100, 200, 100 + height)
    gts = [[gt_line("Car", box, trunc, occ)] for _ in BASE_SCORES]
    dets = [[det_line("Car", box, s)] for s in BASE_SCORES]
    ap40, _ = car_aps(tmp_path, gts, dets)
    assert ap40 == {level: approx(100 if level in valid else 0) for level in LEVELS}


def test_small_detections_are_ignored(tmp_path):
    gts, dets = base()
    dets[0].append(det_line("Car", (400, 100, 500, 139.9), 0.805))  # 39.9 px: below 40
    ap40, _ = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx(100)  # neither TP nor FP
    assert ap40["moderate"] == approx((19 + 21 * 41 / 42) / 40 * 100)  # a false positive at 25 px


def test_precision_pass_takes_the_largest_overlap(tmp_path):
    """GT A, then GT B; D1 (score .905) overlaps only A, D2 (.805) overlaps both, A more than D1 does.
    Threshold pass (highest score): A-D1, B-D2, two TPs. Precision pass (largest overlap): A-D2, B missed,
    D1 a false positive once both are above the threshold."""
    gts, dets = base()
    gts.append([gt_line("Car", (0, 0, 100, 100)), gt_line("Car", (20, 0, 120, 100))])
    dets.append([det_line("Car", (-15, 0, 85, 100), 0.905), det_line("Car", (10, 0, 110, 100), 0.805)])
    # 43 TPs of 43: getThresholds skips the 21st score (0.81: its recall 21/43 and the next one's are equally
    # far from 0.5, and the devkit's sum of twenty 1/40 steps is 0.5000000000000001) and the 36th (0.67).
    # Thresholds 0..19 are 0.82 and up, where only D1 is in (precision 1); from 0.805 on both are, so one
    # FP: precision (tp)/(tp+1), raised to its largest, 42/43, over slots 20..40
    ap40, ap11 = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx((19 + 21 * 42 / 43) / 40 * 100)
    assert ap11["easy"] == approx((5 + 6 * 42 / 43) / 11 * 100)
    # had the precision pass taken the highest score as the threshold pass does, there would be no FP
    assert ap40["easy"] < 99


def test_overlap_must_be_strictly_above_the_threshold():
    ped = (100, 100, 130, 180)
    frames = list(range(42))
    gt = Objects.from_rows(frames, ["Pedestrian"] * 42, [ped] * 42)
    half = (100, 100, 130, 140)  # IoU with ped exactly 0.5, 40 px high
    det = Objects.from_rows(frames, ["Pedestrian"] * 42, [ped] * 41 + [half], score=[*BASE_SCORES, 0.805])
    result = evaluate(gt, det, 42, classes=["Pedestrian"])
    # not a match: a miss (41 TPs of 42 give 40 thresholds, slot 40 empty) and a false positive from 0.80 on
    assert result.ap40["Pedestrian"]["easy"] == approx((19 + 20 * 41 / 42) / 40 * 100)


def test_an_empty_frame_changes_nothing(tmp_path):
    gts, dets = base()
    before = car_aps(tmp_path / "a", gts, dets)
    assert car_aps(tmp_path / "b", [*gts, []], [*dets, []]) == before


def test_no_valid_ground_truth_gives_0(tmp_path):
    result = evaluate_folders(*write(tmp_path, [[], [gt_line("DontCare", CAR, -1, -1)]],
                                     [[det_line("Car", CAR, 0.9)], []]))
    assert all(v == 0 for table in (result.ap40, result.ap11) for cls in CLASSES for v in table[cls].values())


def test_ties_in_score(tmp_path):
    gts = [[gt_line("Car", CAR)] for _ in BASE_SCORES]
    dets = [[det_line("Car", CAR, 0.9)] for _ in BASE_SCORES]
    dets[3].append(det_line("Car", (400, 100, 500, 150), 0.9))
    # every threshold is 0.9, where all 41 TPs and the FP count: 41/42 in all 41 slots
    ap40, ap11 = car_aps(tmp_path, gts, dets)
    assert ap40["easy"] == approx(41 / 42 * 100)
    assert ap11["easy"] == approx(41 / 42 * 100)


def test_one_box_gives_the_devkits_numbers(tmp_path):
    # one TP, one threshold: slot 0 holds precision 1, the rest 0 (a textbook AP would say 100)
    ap40, ap11 = car_aps(tmp_path, [[gt_line("Car", CAR)]], [[det_line("Car", CAR, 0.5)]])
    assert ap40["easy"] == 0
    assert ap11["easy"] == approx(100 / 11)


def test_get_thresholds_picks_one_score_per_recall_step():
    assert get_thresholds(np.linspace(1, 0.6, 41), 41) == pytest.approx(np.linspace(1, 0.6, 41).tolist())
    kept = get_thresholds(np.arange(100, 0, -1) / 100, 100)
    assert len(kept) == 41 and kept[-1] == 0.01 and kept[0] == 1.0  # every 2.5th score, the last always


# --------------------------------------------------------------------------- properties against the devkit

GT_KINDS = ["Car", "Car", "Car", "Van", "Truck", "Pedestrian", "Pedestrian", "Person_sitting", "Cyclist",
            "DontCare"]
DET_KINDS = ["Car", "Car", "Car", "car", "Pedestrian", "Pedestrian", "Cyclist"]


def random_frames(rng: random.Random, n_frames: int, distinct_scores: bool):
    scores = rng.sample(range(1, 10**6), 10**3) if distinct_scores else None
    frames_gt, frames_det = [], []
    for _ in range(n_frames):
        gts, dets = [], []
        for _ in range(rng.randrange(0, 6)):
            x, y = rng.uniform(0, 400), rng.uniform(0, 200)
            box = [x, y, x + rng.uniform(10, 120), y + rng.choice([rng.uniform(15, 90), 25.0, 25.6, 40.0, 40.4])]
            gts.append({"type": rng.choice(GT_KINDS), "trunc": rng.choice([0, 0.1, 0.15, 0.3, 0.4, 0.6]),
                        "occ": rng.randrange(0, 4), "box": box, "score": 0.0})
            for _ in range(rng.choice([0, 1, 1, 2, 3])):  # several candidates per box: matching order matters
                noise = rng.choice([0.3, 1.0, 3.0, 6.0])
                dets.append({"type": rng.choice(DET_KINDS) if rng.random() < 0.3 else gts[-1]["type"],
                             "trunc": 0, "occ": 0, "box": [v + rng.gauss(0, noise) for v in box], "score": 0.0})
        for _ in range(rng.randrange(0, 3)):
            x, y = rng.uniform(0, 400), rng.uniform(0, 200)
            dets.append({"type": rng.choice(DET_KINDS), "trunc": 0, "occ": 0,
                         "box": [x, y, x + rng.uniform(10, 80), y + rng.uniform(10, 80)], "score": 0.0})
        for d in dets:
            d["score"] = scores.pop() / 10**6 if scores else rng.choice([0.3, 0.5, 0.5, 0.7, 0.9])
        rng.shuffle(dets)
        frames_gt.append(gts)
        frames_det.append(dets)
    return frames_gt, frames_det


def to_objects(frames) -> Objects:
    rows = [(i, o) for i, objs in enumerate(frames) for o in objs]
    return Objects.from_rows([i for i, _ in rows], [o["type"] for _, o in rows], [o["box"] for _, o in rows],
                             [o["trunc"] for _, o in rows], [o["occ"] for _, o in rows],
                             [o["score"] for _, o in rows])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_frames=st.integers(1, 40), distinct=st.booleans())
def test_matches_the_devkit_restated_loop_by_loop(seed, n_frames, distinct):
    frames_gt, frames_det = random_frames(random.Random(seed), n_frames, distinct)
    result = evaluate(to_objects(frames_gt), to_objects(frames_det), n_frames)
    for cls in CLASSES:
        for level, name in enumerate(LEVELS):
            expected = precision_slots(frames_gt, frames_det, cls, level)
            np.testing.assert_array_equal(result.precision[cls][name], expected)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(41, 200), seed=st.integers(0, 1000))
def test_perfect_detections_on_41_or_more_boxes_give_100(n, seed):
    rng = random.Random(seed)
    frames = [rng.randrange(0, 1 + n // 3) for _ in range(n)]
    boxes = [[rng.uniform(0, 1000), rng.uniform(0, 300)] for _ in range(n)]
    boxes = [[x, y, x + rng.uniform(5, 100), y + rng.uniform(41, 100)] for x, y in boxes]
    # boxes of one frame may overlap each other: each detection still has its own box as best match
    gt = Objects.from_rows(frames, ["Car"] * n, boxes)
    det = Objects.from_rows(frames, ["Car"] * n, boxes, score=[rng.random() for _ in range(n)])
    result = evaluate(gt, det, 1 + n // 3, classes=["Car"])
    assert result.ap40["Car"]["easy"] == approx(100)
    assert result.ap11["Car"]["easy"] == approx(100)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_frames=st.integers(2, 30))
def test_frame_order_does_not_change_the_ap(seed, n_frames):
    rng = random.Random(seed)
    frames_gt, frames_det = random_frames(rng, n_frames, distinct_scores=True)
    order = list(range(n_frames))
    rng.shuffle(order)
    before = evaluate(to_objects(frames_gt), to_objects(frames_det), n_frames)
    after = evaluate(to_objects([frames_gt[i] for i in order]), to_objects([frames_det[i] for i in order]),
                     n_frames)
    assert after.as_json() == before.as_json()


# --------------------------------------------------------------------------- bad inputs and the command


@pytest.mark.parametrize(("line", "message"), [
    ("Car 0.00 0 -1 1 2 3", "line 2: 7 fields, expected 16"),
    ("Car 0.00 0 -1 1 2 3 4 1.5 1.6 3.9 1 1.5 20 0 high", "line 2: 'high' is not a number"),
])
def test_malformed_detection_lines_name_file_and_line(tmp_path, line, message):
    labels, dets = write(tmp_path, [[gt_line("Car", CAR)]], [[det_line("Car", CAR, 0.5), line]])
    with pytest.raises(FcmbenchError, match=message) as err:
        evaluate_folders(labels, dets)
    assert "000000.txt" in str(err.value)


def test_ground_truth_occlusion_must_be_an_integer(tmp_path):
    labels, dets = write(tmp_path, [["Car 0.00 1.5 -1 1 2 3 4 1.5 1.6 3.9 1 1.5 20 0"]], [[]])
    with pytest.raises(FcmbenchError, match="line 1: occlusion '1.5' must be an integer"):
        evaluate_folders(labels, dets)


def test_missing_detection_file(tmp_path):
    labels, dets = write(tmp_path, [[gt_line("Car", CAR)], []], [[], []])
    (dets / "000001.txt").unlink()
    with pytest.raises(FcmbenchError, match=r"1 of 2 frames have no detection file .*000001.txt.*write an empty"):
        evaluate_folders(labels, dets)


def test_the_devkits_result_folder_layout(tmp_path):
    labels, dets = write(tmp_path, *base())
    (tmp_path / "result").mkdir()
    dets.rename(tmp_path / "result" / "data")
    assert evaluate_folders(labels, tmp_path / "result").ap40["Car"]["hard"] == approx(100)


def test_split_file_selects_frames(tmp_path):
    gts, dets = base()
    dets[0].append(det_line("Car", (400, 100, 500, 150), 0.805))
    labels, det_dir = write(tmp_path, gts, dets)
    split = tmp_path / "val.txt"
    split.write_text("\n".join(f"{i:06d}" for i in range(1, 41)) + "\n")  # without frame 0 (the FP)
    # 40 boxes found without a false positive: 40 thresholds at precision 1
    assert evaluate_folders(labels, det_dir, split).ap40["Car"]["easy"] == approx(39 / 40 * 100)
    split.write_text("000001\n000001\n")
    with pytest.raises(FcmbenchError, match="lists frame 000001 twice"):
        evaluate_folders(labels, det_dir, split)


@pytest.mark.slow
def test_evaluate_command(tmp_path):
    gts, dets = base()
    dets[0].append(det_line("Car", (400, 100, 500, 150), 0.805))
    labels, det_dir = write(tmp_path, gts, dets)
    out = run_cli("evaluate", "kitti", "--labels", labels, "--detections", det_dir, "--json", tmp_path / "ap.json")
    assert "98.749969" in out.stdout  # 98.75 summed in single precision, as the devkit prints it
    table = json.loads((tmp_path / "ap.json").read_text())
    assert table["AP40"]["Car"]["moderate"] == approx(98.75)
    assert set(table["AP11"]) == set(CLASSES) and set(table["AP40"]["Cyclist"]) == set(LEVELS)
    (det_dir / "000003.txt").write_text("Car 0 0 -1 1 2 3 4 1.5 1.6 3.9 1 1.5 20 0\n")  # no score
    bad = run_cli("evaluate", "kitti", "--labels", labels, "--detections", det_dir, check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("error:") == 1 and "Traceback" not in bad.stderr
    assert "000003.txt, line 1: 15 fields, expected 16" in bad.stderr
