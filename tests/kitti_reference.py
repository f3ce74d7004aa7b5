"""A literal, loop-by-loop restatement of the devkit's ``evaluate_object.cpp`` (2D boxes) for the tests.

Slow and obvious on purpose: one frame, one ground truth, one detection at a time, in the order the devkit's
loops run, so the vectorised :mod:`fcmbench.evaluation.kitti` can be checked against it on random cases.
Frames are lists of dicts with ``type, trunc, occ, box, score``.
"""

from __future__ import annotations

import numpy as np

MIN_HEIGHT = (40, 25, 25)
MAX_OCC = (0, 1, 2)
MAX_TRUNC = (0.15, 0.3, 0.5)
OVERLAP = {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
NO_DET = -10000000.0


def box_overlap(a, b, criterion=-1):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    a_area = (a[2] - a[0]) * (a[3] - a[1])
    b_area = (b[2] - b[0]) * (b[3] - b[1])
    if criterion == -1:
        return inter / (a_area + b_area - inter)
    return inter / a_area


def clean(cls, gts, dets, level):
    ig_gt, ig_det, dc, n_gt = [], [], [], 0
    for g in gts:
        t = g["type"].lower()
        height = g["box"][3] - g["box"][1]
        if t == cls:
            valid = 1
        elif (cls == "pedestrian" and t == "person_sitting") or (cls == "car" and t == "van"):
            valid = 0
        else:
            valid = -1
        ignore = g["occ"] > MAX_OCC[level] or g["trunc"] > MAX_TRUNC[level] or height <= MIN_HEIGHT[level]
        if valid == 1 and not ignore:
            ig_gt.append(0)
            n_gt += 1
        elif valid == 0 or (ignore and valid == 1):
            ig_gt.append(1)
        else:
            ig_gt.append(-1)
    for g in gts:
        if g["type"].lower() == "dontcare":
            dc.append(g)
    for d in dets:
        valid = 1 if d["type"].lower() == cls else -1
        height = int(abs(d["box"][1] - d["box"][3]))
        if height < MIN_HEIGHT[level]:
            ig_det.append(1)
        elif valid == 1:
            ig_det.append(0)
        else:
            ig_det.append(-1)
    return ig_gt, ig_det, dc, n_gt


def statistics(cls, gts, dets, dc, ig_gt, ig_det, compute_fp, thresh=0.0):
    thr = OVERLAP[cls]
    tp = fp = fn = 0
    v = []
    assigned = [False] * len(dets)
    below = [compute_fp and d["score"] < thresh for d in dets]
    for i, g in enumerate(gts):
        if ig_gt[i] == -1:
            continue
        det_idx, valid_det, max_ov, ign_assigned = -1, NO_DET, 0.0, False
        for j, d in enumerate(dets):
            if ig_det[j] == -1 or assigned[j] or below[j]:
                continue
            ov = box_overlap(d["box"], g["box"])
            if not compute_fp and ov > thr and d["score"] > valid_det:
                det_idx, valid_det = j, d["score"]
            elif compute_fp and ov > thr and (ov > max_ov or ign_assigned) and ig_det[j] == 0:
                max_ov, det_idx, valid_det, ign_assigned = ov, j, 1.0, False
            elif compute_fp and ov > thr and valid_det == NO_DET and ig_det[j] == 1:
                det_idx, valid_det, ign_assigned = j, 1.0, True
        if valid_det == NO_DET and ig_gt[i] == 0:
            fn += 1
        elif valid_det != NO_DET and (ig_gt[i] == 1 or ig_det[det_idx] == 1):
            assigned[det_idx] = True
        elif valid_det != NO_DET:
            tp += 1
            v.append(dets[det_idx]["score"])
            assigned[det_idx] = True
    if compute_fp:
        for j in range(len(dets)):
            if not (assigned[j] or ig_det[j] in (-1, 1) or below[j]):
                fp += 1
        stuff = 0
        for c in dc:
            for j, d in enumerate(dets):
                if assigned[j] or ig_det[j] in (-1, 1) or below[j]:
                    continue
                if box_overlap(d["box"], c["box"], 0) > thr:
                    assigned[j] = True
                    stuff += 1
        fp -= stuff
    return tp, fp, fn, v


def thresholds_of(v, n_gt):
    v = sorted(v, reverse=True)
    out, current = [], 0.0
    for i in range(len(v)):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(v) - 1 else left
        if (right - current) < (current - left) and i < len(v) - 1:
            continue
        out.append(v[i])
        current += 1.0 / 40.0
    return out


def precision_slots(frames_gt, frames_det, cls, level):
    cls = cls.lower()
    n_gt, v, cleaned = 0, [], []
    for gts, dets in zip(frames_gt, frames_det, strict=True):
        ig_gt, ig_det, dc, n = clean(cls, gts, dets, level)
        n_gt += n
        cleaned.append((ig_gt, ig_det, dc))
        v += statistics(cls, gts, dets, dc, ig_gt, ig_det, False)[3]
    thresholds = thresholds_of(v, n_gt) if n_gt else []
    tp = [0] * len(thresholds)
    fp = [0] * len(thresholds)
    for (gts, dets), (ig_gt, ig_det, dc) in zip(zip(frames_gt, frames_det, strict=True), cleaned, strict=True):
        for t, thresh in enumerate(thresholds):
            a, b, _, _ = statistics(cls, gts, dets, dc, ig_gt, ig_det, True, thresh)
            tp[t] += a
            fp[t] += b
    precision = [0.0] * 41
    for t in range(len(thresholds)):
        precision[t] = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else float("nan")
    for t in range(len(thresholds)):
        precision[t] = max(precision[t:])
    return np.array(precision)


def ap(precision, points):
    slots = precision[1:] if points == 40 else precision[::4]
    return float(np.sum(slots) / points * 100)
