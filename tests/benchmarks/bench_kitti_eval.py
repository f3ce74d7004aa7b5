"""The KITTI devkit metric on the size of the common validation split (3,769 frames)."""

import numpy as np
import pytest

from fcmbench.evaluation.kitti import CLASSES, Objects, evaluate

FRAMES = 3769
KINDS = np.array(["Car", "Car", "Car", "Car", "Van", "Pedestrian", "Pedestrian", "Cyclist", "Truck", "DontCare",
                  "DontCare"])


def synthetic_split(seed: int = 0, per_frame: int = 8, clutter: int = 20) -> tuple[Objects, Objects]:
    """KITTI-like frames: ~``per_frame`` labelled objects (KITTI val averages about 7 with DontCare) and a
    detector's output: most objects found once or twice with jittered boxes, plus low-score clutter."""
    rng = np.random.default_rng(seed)
    n_gt = rng.poisson(per_frame, FRAMES)
    gt_frame = np.repeat(np.arange(FRAMES), n_gt)
    n = len(gt_frame)
    x1, y1 = rng.uniform(0, 1100, n), rng.uniform(100, 300, n)
    height = rng.lognormal(3.6, 0.6, n)
    box = np.column_stack([x1, y1, x1 + height * rng.uniform(0.4, 2.5, n), y1 + height])
    kind = rng.choice(KINDS, n)
    gt = Objects.from_rows(gt_frame, kind, box, rng.choice([0, 0, 0, 0.2, 0.4, 0.7], n), rng.integers(0, 4, n))

    hits = rng.choice([0, 1, 1, 1, 2], n) * (kind != "DontCare")
    src = np.repeat(np.arange(n), hits)
    jitter = rng.normal(0, 0.04, (len(src), 4)) * height[src, None]
    det_kind = np.where(np.isin(kind[src], CLASSES), kind[src], "Car")
    n_fp = rng.poisson(clutter, FRAMES)
    fp_frame = np.repeat(np.arange(FRAMES), n_fp)
    m = len(fp_frame)
    fx, fy, fh = rng.uniform(0, 1100, m), rng.uniform(100, 300, m), rng.lognormal(3.4, 0.6, m)
    det = Objects.from_rows(
        np.concatenate([gt_frame[src], fp_frame]),
        np.concatenate([det_kind, rng.choice(np.array(CLASSES), len(fp_frame))]),
        np.concatenate([box[src] + jitter, np.column_stack([fx, fy, fx + fh, fy + fh])]),
        score=np.concatenate([rng.uniform(0.3, 1, len(src)), rng.uniform(0, 0.6, len(fp_frame))]))
    return gt, det


@pytest.fixture(scope="module")
def split():
    return synthetic_split()


def test_kitti_eval_3769_frames(benchmark, split):
    gt, det = split
    result = benchmark.pedantic(evaluate, args=(gt, det, FRAMES), rounds=3, iterations=1)
    assert 0 < result.ap40["Car"]["moderate"] < 100


def write_folder(objects: Objects, folder, with_score: bool) -> None:
    folder.mkdir()
    lines: list[list[str]] = [[] for _ in range(FRAMES)]
    for f, kind, (x1, y1, x2, y2), t, o, s in zip(objects.frame, objects.kind, objects.box, objects.truncation,
                                                  objects.occlusion, objects.score, strict=True):
        tail = f" {s:.6f}" if with_score else ""
        lines[f].append(f"{kind} {t:.2f} {o} -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} 1 1 1 0 0 0 0{tail}\n")
    for f, frame_lines in enumerate(lines):
        (folder / f"{f:06d}.txt").write_text("".join(frame_lines))


def test_kitti_evaluate_folders_3769_frames(benchmark, split, tmp_path):
    """What ``fcmbench evaluate kitti`` spends: reading and checking 3,769 label and detection files too."""
    from fcmbench.evaluation.kitti import evaluate_folders

    gt, det = split
    write_folder(gt, tmp_path / "label_2", with_score=False)
    write_folder(det, tmp_path / "det", with_score=True)
    result = benchmark.pedantic(evaluate_folders, args=(tmp_path / "label_2", tmp_path / "det"), rounds=2,
                                iterations=1)
    assert 0 < result.ap40["Car"]["moderate"] < 100
