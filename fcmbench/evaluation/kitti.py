"""The KITTI 2D object detection metric, computed as the official devkit's ``evaluate_object.cpp`` does.

The devkit is the specification: every rule below names the devkit function whose behaviour it reproduces
(``cleanData``, ``computeStatistics``, ``getThresholds``, ``eval_class``, ``printAp`` /
``saveAndPlotPlots``), including the parts that differ from a textbook AP:

- precision is sampled at the scores of up to 41 true positives picked by ``getThresholds``, not at recall
  levels, so a class with few ground-truth boxes gets the devkit's numbers (one valid box found gives
  AP|R40 = 0 and AP|R11 = 9.09);
- AP|R40 sums slots 1..40 of those 41 precision slots / 40, AP|R11 slots 0, 4, .., 40 / 11, accumulated in
  single precision (``float sum[3]``) as the devkit prints them, on its 0-100 scale.

The implementation is ours (numpy): the per-frame greedy matching is sequential over the ground truth of a
frame, so it runs vectorised over all frames and all score thresholds at once, one ground-truth index at a
time, over only the (ground truth, detection) pairs that overlap above the class threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcmbench.core.errors import FcmbenchError

CLASSES = ("Car", "Pedestrian", "Cyclist")
LEVELS = ("easy", "moderate", "hard")
# cleanData's per-difficulty limits: MIN_HEIGHT, MAX_OCCLUSION, MAX_TRUNCATION
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
# MIN_OVERLAP[IMAGE]: IoU a 2D box needs (strictly more than) to match, per class
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
# cleanData's "neighbouring classes": ground truth that is ignored rather than missed or falsely detected
NEIGHBOURS = {"car": "van", "pedestrian": "person_sitting"}
N_SAMPLE_PTS = 41
NO_DETECTION = -10000000.0  # computeStatistics' initial "best score": a candidate must score above it
GT_FIELDS = 15
DET_FIELDS = 16


@dataclass
class Objects:
    """KITTI label lines of many frames, flattened: row ``k`` belongs to frame ``frame[k]``; rows keep the
    frames' order and, within a frame, the file's line order (the devkit's matching depends on it)."""

    frame: np.ndarray  # int64 [N]
    kind: np.ndarray  # lower-case class names [N] (the devkit compares with strcasecmp)
    box: np.ndarray  # float64 [N, 4] x1 y1 x2 y2
    truncation: np.ndarray  # float64 [N]
    occlusion: np.ndarray  # int64 [N]
    score: np.ndarray  # float64 [N] (ground truth: 0)

    @classmethod
    def empty(cls) -> Objects:
        return cls(np.zeros(0, np.int64), np.zeros(0, "<U1"), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64),
                   np.zeros(0))

    @classmethod
    def from_rows(cls, frames: Sequence[int], kinds: Sequence[str], boxes: Sequence[Sequence[float]],
                  truncation: Sequence[float] | None = None, occlusion: Sequence[int] | None = None,
                  score: Sequence[float] | None = None) -> Objects:
        n = len(frames)
        if n == 0:
            return cls.empty()
        order = np.argsort(np.asarray(frames, np.int64), kind="stable")  # keeps line order within a frame

        def column(values, default, dtype):
            return (np.full(n, default, dtype) if values is None else np.asarray(values, dtype))[order]

        return cls(np.asarray(frames, np.int64)[order], np.char.lower(np.asarray(kinds, str))[order],
                   np.asarray(boxes, np.float64).reshape(n, 4)[order], column(truncation, 0.0, np.float64),
                   column(occlusion, 0, np.int64), column(score, 0.0, np.float64))

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class KittiResult:
    """Precision slots and APs per class and difficulty, on the devkit's 0-100 scale."""

    precision: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    ap40: dict[str, dict[str, float]] = field(default_factory=dict)
    ap11: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"AP40": self.ap40, "AP11": self.ap11}

    def metrics(self) -> dict[str, float]:
        """Flat ``kitti_car_mod_AP40``-style keys, the way results and rd.csv carry them."""
        short = {"easy": "easy", "moderate": "mod", "hard": "hard"}
        out = {}
        for name, table in (("AP40", self.ap40), ("AP11", self.ap11)):
            for cls, levels in table.items():
                for level, value in levels.items():
                    out[f"kitti_{cls.lower()}_{short[level]}_{name}"] = value
        return out


# ---------------------------------------------------------------------------------------------- reading


def parse_label_file(path: Path, detections: bool) -> list[tuple]:
    """The lines of one KITTI label file as ``(type, truncation, occlusion, x1, y1, x2, y2, score)``.

    Ground truth has the devkit's 15 fields (``loadGroundtruth``), detections 16 with the score last
    (``loadDetections``). The devkit silently skips or misreads a malformed line; here it is an error naming
    the file and line, since a skipped box changes the AP without a trace.
    """
    want = DET_FIELDS if detections else GT_FIELDS
    what = "detection" if detections else "label"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FcmbenchError(f"{what} file {path} is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FcmbenchError(f"{what} file {path} cannot be read as text: {err}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # fscanf skips blank lines too
        if len(fields) != want:
            hint = "type + 14 numbers" if not detections else "type + 14 numbers + the score"
            raise FcmbenchError(f"{what} file {path}, line {number}: {len(fields)} fields, expected {want} ({hint}); "
                                "fix or remove the line")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_number(v))
            raise FcmbenchError(f"{what} file {path}, line {number}: {bad!r} is not a number; fix the line") from None
        occlusion = values[1]
        if not detections and occlusion != int(occlusion):
            # loadGroundtruth reads occlusion with %d: a fraction would shift every later field
            raise FcmbenchError(f"{what} file {path}, line {number}: occlusion {fields[2]!r} must be an integer "
                                "(0, 1, 2 or 3)")
        x1, y1, x2, y2 = values[3:7]
        rows.append((fields[0], values[0], int(occlusion), x1, y1, x2, y2, values[14] if detections else 0.0))
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_objects(folder: Path, frame_ids: Sequence[str], detections: bool) -> Objects:
    """The label files ``folder/<id>.txt`` of ``frame_ids`` (frame ``k`` is ``frame_ids[k]``)."""
    frames, kinds, boxes, trunc, occ, score = [], [], [], [], [], []
    for index, frame_id in enumerate(frame_ids):
        path = folder / f"{frame_id}.txt"
        if detections and not path.is_file():
            raise FcmbenchError(f"detection file {path} is missing (frame {frame_id} has ground truth); write an "
                                "empty file for a frame without detections, as the devkit requires")
        for kind, t, o, x1, y1, x2, y2, s in parse_label_file(path, detections):
            frames.append(index)
            kinds.append(kind)
            boxes.append((x1, y1, x2, y2))
            trunc.append(t)
            occ.append(o)
            score.append(s)
    return Objects.from_rows(frames, kinds, boxes, trunc, occ, score)


def frame_ids_of(labels: Path, split_file: Path | None = None) -> list[str]:
    """Frame ids: the lines of ``split_file`` (e.g. ``val.txt`` of the 3712/3769 split), else every
    ``*.txt`` of ``labels``, sorted (the devkit walks frame indices in increasing order)."""
    if not labels.is_dir():
        raise FcmbenchError(f"label folder {labels} does not exist; pass the folder of KITTI label_2 files")
    if split_file is None:
        ids = sorted(p.stem for p in labels.glob("*.txt"))
        if not ids:
            raise FcmbenchError(f"label folder {labels} holds no .txt label files")
        return ids
    return read_split_file(split_file)


def read_split_file(path: Path) -> list[str]:
    """One frame id per line (``000001``); blank lines are skipped, anything else is an error."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise FcmbenchError(f"split file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FcmbenchError(f"split file {path} cannot be read as text: {err}") from None
    ids = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if len(text.split()) != 1 or "/" in text or text.endswith(".txt"):
            raise FcmbenchError(f"split file {path}, line {number}: {text!r} is not a frame id; write one id "
                                "such as 000123 per line")
        ids.append(text)
    if not ids:
        raise FcmbenchError(f"split file {path} lists no frame ids")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise FcmbenchError(f"split file {path} lists frame {dup} twice; list each frame once")
    return ids


# ---------------------------------------------------------------------------------------------- geometry


def _overlap(det: np.ndarray, gt: np.ndarray, over_det_area: bool = False) -> np.ndarray:
    """``imageBoxOverlap`` for aligned rows of boxes: IoU (criterion -1) or intersection over the first
    (detection) box's area (criterion 0, the DontCare test). The arithmetic follows the devkit's order of
    operations, so a value at exactly a threshold compares the same way."""
    w = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0])
    h = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1])
    inter = w * h
    det_area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        if over_det_area:
            value = inter / det_area
        else:
            value = inter / ((det_area + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])) - inter)
    return np.where((w <= 0) | (h <= 0), 0.0, value)  # the devkit returns 0 before dividing


def _same_frame_pairs(frame_a: np.ndarray, frame_b: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b) index pair of rows in the same frame; both inputs are sorted by frame."""
    count_b = np.bincount(frame_b, minlength=n_frames)
    start_b = np.concatenate([[0], np.cumsum(count_b)[:-1]])
    per_a = count_b[frame_a]
    a = np.repeat(np.arange(len(frame_a)), per_a)
    first = np.repeat(np.cumsum(per_a) - per_a, per_a)
    b = np.repeat(start_b[frame_a], per_a) + np.arange(len(a)) - first
    return a, b


# ---------------------------------------------------------------------------------------------- devkit


def ignored_ground_truth(gt: Objects, cls: str, level: int) -> np.ndarray:
    """``cleanData`` for the ground truth: 0 = counted, 1 = ignored (a neighbouring class, Van for Car and
    Person_sitting for Pedestrian, or the class itself beyond the level's occlusion/truncation limit or at or
    below its minimum height: may be matched, is neither TP nor FN), -1 = other class (DontCare, Truck, Tram,
    Misc, ...: not matched, so a detection on it is a false positive). The height test is the current
    devkit's ``height<=MIN_HEIGHT``; some older copies of evaluate_object.cpp have ``<``, which differs only for
    a box exactly 40 or 25 px high."""
    name = cls.lower()
    height = gt.box[:, 3] - gt.box[:, 1]
    hard = ((gt.occlusion > MAX_OCCLUSION[level]) | (gt.truncation > MAX_TRUNCATION[level])
            | (height <= MIN_HEIGHT[level]))
    same = gt.kind == name
    out = np.full(len(gt), -1, np.int8)
    out[(gt.kind == NEIGHBOURS.get(name, "")) | (same & hard)] = 1
    out[same & ~hard] = 0
    return out


def ignored_detections(det: Objects, cls: str, level: int) -> np.ndarray:
    """``cleanData`` for detections: 1 = below the level's minimum height (its height is truncated to an
    int32 first, and this is checked before the class, so a small box of any class is an ignored candidate
    that can still match), 0 = the class, -1 = other classes (never matched)."""
    height = np.trunc(np.abs(det.box[:, 1] - det.box[:, 3]))
    return np.where(height < MIN_HEIGHT[level], 1, np.where(det.kind == cls.lower(), 0, -1)).astype(np.int8)


def get_thresholds(scores: np.ndarray, n_gt: int) -> list[float]:
    """``getThresholds``: walk the true-positive scores in descending order and keep a score when its recall
    ``(i+1)/n_gt`` is at least as close to the next recall step as the following score's would be (the last
    score is always kept); each kept score advances the step by 1/40. ``current_recall`` accumulates in
    double precision exactly as the devkit's loop does."""
    v = np.sort(np.asarray(scores, np.float64))[::-1]
    kept: list[float] = []
    current = 0.0
    last = len(v) - 1
    for i in range(len(v)):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < last else left
        if (right - current) < (current - left) and i < last:
            continue
        kept.append(float(v[i]))
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return kept


@dataclass
class _Pairs:
    """The frames that have at least one candidate pair, padded: ground truth ``[F, G]`` and detections
    ``[F, D]`` in file order, with their pairwise overlap above the class threshold ``[F, G, D]``."""

    frame: np.ndarray
    gt_ignore: np.ndarray  # int8 [F, G]
    det_ignore: np.ndarray  # int8 [F, D] (padding: -1)
    det_score: np.ndarray  # float64 [F, D] (padding: -inf)
    det_counts_fp: np.ndarray  # bool [F, D]: a valid detection outside every DontCare region
    candidate: np.ndarray  # bool [F, G, D]
    overlap: np.ndarray  # float64 [F, G, D]


def _padded_pairs(gi: np.ndarray, di: np.ndarray, ov: np.ndarray, gt_frame: np.ndarray, det_frame: np.ndarray,
                  gt_ignore: np.ndarray, det_ignore: np.ndarray, det_score: np.ndarray,
                  det_counts_fp: np.ndarray) -> list[_Pairs]:
    """Chunks of frames of similar size (few frames with many boxes must not pad all the others)."""
    frame = gt_frame[gi]
    frames, frame_of_pair = np.unique(frame, return_inverse=True)
    g_local = _local_index(gi, frame_of_pair, len(frames))
    d_local = _local_index(di, frame_of_pair, len(frames))
    g_count = np.zeros(len(frames), np.int64)
    d_count = np.zeros(len(frames), np.int64)
    np.maximum.at(g_count, frame_of_pair, g_local + 1)
    np.maximum.at(d_count, frame_of_pair, d_local + 1)
    chunks = []
    order = np.lexsort((g_count, d_count))
    for part in np.array_split(order, max(1, len(order) // 256)):
        if not len(part):
            continue
        local_frame = np.full(len(frames), -1)
        local_frame[part] = np.arange(len(part))
        n_f, n_g, n_d = len(part), int(g_count[part].max()), int(d_count[part].max())
        sel = local_frame[frame_of_pair] >= 0
        f_sel, g_sel, d_sel = local_frame[frame_of_pair[sel]], g_local[sel], d_local[sel]
        candidate = np.zeros((n_f, n_g, n_d), bool)
        overlap = np.zeros((n_f, n_g, n_d))
        candidate[f_sel, g_sel, d_sel] = True
        overlap[f_sel, g_sel, d_sel] = ov[sel]
        gt_ig = np.full((n_f, n_g), -1, np.int8)
        gt_ig[f_sel, g_sel] = gt_ignore[gi[sel]]
        det_ig = np.full((n_f, n_d), -1, np.int8)
        det_ig[f_sel, d_sel] = det_ignore[di[sel]]
        score = np.full((n_f, n_d), -np.inf)
        score[f_sel, d_sel] = det_score[di[sel]]
        counts = np.zeros((n_f, n_d), bool)
        counts[f_sel, d_sel] = det_counts_fp[di[sel]]
        chunks.append(_Pairs(frames[part], gt_ig, det_ig, score, counts, candidate, overlap))
    return chunks


def _local_index(rows: np.ndarray, frame_of_pair: np.ndarray, n_frames: int) -> np.ndarray:
    """For each pair, the rank of its row among the distinct rows of its frame that occur in pairs (rows
    are global indices, increasing in frame and file order, so ranks keep the file order)."""
    unique_rows, inverse = np.unique(rows, return_inverse=True)
    frame_of_row = np.zeros(len(unique_rows), np.int64)
    frame_of_row[inverse] = frame_of_pair
    first = np.searchsorted(frame_of_row, np.arange(n_frames))
    rank = np.arange(len(unique_rows)) - first[frame_of_row]
    return rank[inverse]


def _threshold_pass(chunk: _Pairs) -> np.ndarray:
    """``computeStatistics(compute_fp=false)``: each ground truth in file order takes the unassigned
    candidate (overlap > threshold, class or too-small detection) with the highest score, the first one on
    ties; the scores of matches between counted ground truth and counted detections are returned."""
    n_f, n_g, _ = chunk.candidate.shape
    assigned = np.zeros(chunk.det_score.shape, bool)
    rows = np.arange(n_f)
    found = []
    for g in range(n_g):
        cand = chunk.candidate[:, g, :] & ~assigned & (chunk.det_score > NO_DETECTION)
        pick = np.argmax(np.where(cand, chunk.det_score, -np.inf), axis=1)
        has = cand.any(axis=1)
        tp = has & (chunk.gt_ignore[:, g] == 0) & (chunk.det_ignore[rows, pick] == 0)
        found.append(chunk.det_score[rows[tp], pick[tp]])
        assigned[rows[has], pick[has]] = True
    return np.concatenate(found) if found else np.zeros(0)


def _precision_pass(chunk: _Pairs, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``computeStatistics(compute_fp=true)`` at every threshold at once: detections scoring below it are
    left out; each ground truth in file order takes the unassigned counted detection of largest overlap
    (the first on ties), else the first too-small one. Returns (TP, assigned counted detections outside
    DontCare) per threshold, the second to be taken off the false positives."""
    n_f, n_g, n_d = chunk.candidate.shape
    available = chunk.det_score[None] >= thresholds[:, None, None]  # [T, F, D]
    assigned = np.zeros(available.shape, bool)
    valid = (chunk.det_ignore == 0)[None]
    small = (chunk.det_ignore == 1)[None]
    tp = np.zeros(len(thresholds), np.int64)
    t_idx, f_idx = np.meshgrid(np.arange(len(thresholds)), np.arange(n_f), indexing="ij")
    for g in range(n_g):
        cand = chunk.candidate[None, :, g, :] & available & ~assigned
        cand_valid = cand & valid
        has_valid = cand_valid.any(axis=2)
        best = np.argmax(np.where(cand_valid, chunk.overlap[None, :, g, :], -1.0), axis=2)
        cand_small = cand & small
        has = has_valid | cand_small.any(axis=2)
        pick = np.where(has_valid, best, np.argmax(cand_small, axis=2))
        tp += (has_valid & (chunk.gt_ignore[None, :, g] == 0)).sum(axis=1)
        assigned[t_idx[has], f_idx[has], pick[has]] = True
    taken_off = (assigned & chunk.det_counts_fp[None]).sum(axis=(1, 2))
    return tp, taken_off


def _max_element_suffix(values: np.ndarray) -> np.ndarray:
    """``precision[i] = *max_element(precision.begin()+i, precision.end())`` with std::max_element's NaN
    behaviour (a NaN first element stays; later NaNs are skipped), for the 0/0 precision of a threshold
    with neither TP nor FP."""
    out = values.copy()
    for i in range(len(values)):
        if np.isnan(values[i]):
            continue
        rest = values[i:]
        out[i] = np.max(rest[~np.isnan(rest)])
    return out


def class_precision(gt: Objects, det: Objects, n_frames: int, cls: str, level: int) -> np.ndarray:
    """``eval_class`` for one class and difficulty: the 41 precision slots."""
    threshold = MIN_OVERLAP[cls]
    gt_ig = ignored_ground_truth(gt, cls, level)
    det_ig = ignored_detections(det, cls, level)
    n_gt = int((gt_ig == 0).sum())
    precision = np.zeros(N_SAMPLE_PTS)
    if n_gt == 0:
        return precision  # no thresholds: every slot stays 0

    # DontCare regions swallow an unmatched counted detection whose intersection over its own area exceeds
    # the class threshold (computeStatistics' "stuff area" step); it does not depend on the score threshold
    # or on which other detections are assigned, so it is decided once per detection.
    dc = np.flatnonzero(gt.kind == "dontcare")
    counted = np.flatnonzero(det_ig == 0)
    in_dc = np.zeros(len(det), bool)
    a, b = _same_frame_pairs(det.frame[counted], gt.frame[dc], n_frames)
    if len(a):
        hit = _overlap(det.box[counted[a]], gt.box[dc[b]], over_det_area=True) > threshold
        in_dc[counted[a[hit]]] = True
    counts_fp = (det_ig == 0) & ~in_dc

    # Only pairs whose overlap is above the threshold can ever match.
    g_rows, d_rows = np.flatnonzero(gt_ig != -1), np.flatnonzero(det_ig != -1)
    a, b = _same_frame_pairs(gt.frame[g_rows], det.frame[d_rows], n_frames)
    gi, di = g_rows[a], d_rows[b]
    ov = _overlap(det.box[di], gt.box[gi])
    keep = ov > threshold
    gi, di, ov = gi[keep], di[keep], ov[keep]
    chunks = _padded_pairs(gi, di, ov, gt.frame, det.frame, gt_ig, det_ig, det.score, counts_fp) if len(gi) else []

    thresholds = get_thresholds(np.concatenate([_threshold_pass(c) for c in chunks] or [np.zeros(0)]), n_gt)
    if not thresholds:
        return precision
    t = np.asarray(thresholds)
    tp = np.zeros(len(t), np.int64)
    taken_off = np.zeros(len(t), np.int64)
    for chunk in chunks:
        chunk_tp, chunk_off = _precision_pass(chunk, t)
        tp += chunk_tp
        taken_off += chunk_off
    # FP = counted detections at or above the threshold, outside DontCare, assigned to no ground truth
    fp_scores = np.sort(det.score[counts_fp])
    fp = (len(fp_scores) - np.searchsorted(fp_scores, t, side="left")) - taken_off
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[: len(t)] = tp / (tp + fp).astype(np.float64)
    return _max_element_suffix(precision)


def average_precision(precision: np.ndarray, recall_points: int) -> float:
    """``printAp``: AP|R40 sums slots 1..40 and divides by 40, AP|R11 sums slots 0, 4, .., 40 and divides by
    11, both times 100, with the sum and the division in single precision (``float sum[3]``)."""
    slots = precision[1:] if recall_points == 40 else precision[::4]
    total = np.float32(0.0)
    for value in slots:
        total = np.float32(np.float64(total) + value)  # float += double: added in double, stored as float
    return float(total / np.float32(recall_points) * np.float32(100))


def evaluate(gt: Objects, det: Objects, n_frames: int, classes: Iterable[str] = CLASSES) -> KittiResult:
    """AP|R40 and AP|R11 of ``det`` against ``gt`` for each class at easy, moderate and hard.

    The devkit evaluates a class only if some detection of it has ``x1 >= 0`` (``loadDetections``) and
    prints nothing otherwise; here every class is reported, and one without detections scores 0.
    """
    for objects in (gt, det):
        # the pairing and the per-frame ranks rely on rows grouped by frame (Objects.from_rows sorts them)
        if len(objects) and (np.any(np.diff(objects.frame) < 0) or objects.frame[-1] >= n_frames
                             or objects.frame[0] < 0):
            raise ValueError("Objects rows must be sorted by frame, with frames in 0..n_frames-1")
    result = KittiResult()
    for cls in classes:
        if cls not in MIN_OVERLAP:
            raise FcmbenchError(f"KITTI class {cls!r} is not evaluated; use {', '.join(CLASSES)}")
        result.precision[cls], result.ap40[cls], result.ap11[cls] = {}, {}, {}
        for level, name in enumerate(LEVELS):
            precision = class_precision(gt, det, n_frames, cls, level)
            result.precision[cls][name] = precision
            result.ap40[cls][name] = average_precision(precision, 40)
            result.ap11[cls][name] = average_precision(precision, 11)
    return result


def evaluate_folders(labels: Path, detections: Path, split_file: Path | None = None) -> KittiResult:
    """The devkit run as a command: KITTI label files against detection files of the same names, in
    ``detections`` or, as the devkit lays out a result folder, in ``detections/data``."""
    if not detections.is_dir():
        raise FcmbenchError(f"detection folder {detections} does not exist")
    if not any(detections.glob("*.txt")) and (detections / "data").is_dir():
        detections = detections / "data"
    ids = frame_ids_of(labels, split_file)
    missing = [i for i in ids if not (detections / f"{i}.txt").is_file()]
    if missing:
        # the devkit stops at the first frame without a result file; say how many and what to do
        raise FcmbenchError(f"{len(missing)} of {len(ids)} frames have no detection file in {detections} (e.g. "
                            f"{missing[0]}.txt); write an empty file for a frame without detections, or pass "
                            "--split-file with the frames that were detected")
    return evaluate(read_objects(labels, ids, detections=False), read_objects(detections, ids, detections=True),
                    len(ids))
