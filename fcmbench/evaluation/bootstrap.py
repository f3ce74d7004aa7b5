"""Confidence intervals by a seeded paired bootstrap over images.

COCO's matching (pycocotools' ``evaluateImg``) runs once per rate point and its outcome is kept as a
:class:`Matches` table; what is resampled is the accumulation. A resample is a multiset of the evaluated images,
given as a count per image, and one set of resamples serves every method and rate point of a setup (paired), so
anchor and test are always compared on the same images.

The accumulation is pycocotools' ``accumulate`` (area "all", the largest detection budget: the numbers behind
mAP@[.5:.95] and mAP@0.5) written over image counts, because pycocotools accumulates each image once; the tests
check it against pycocotools on a ground truth whose images are literally repeated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # pycocotools' recThrs
CONFIDENCE = 95.0


@dataclass(frozen=True)
class Matches:
    """What pycocotools' matching found for one IoU type on a set of images (area "all").

    Detections are grouped by category and, inside a category, ordered as pycocotools orders them: by
    descending score, ties in image order."""

    image_ids: np.ndarray  # [I], ascending
    n_gt: np.ndarray  # [K, I] ground truth that counts (not ignored) per category and image
    category: np.ndarray  # [D] category index of each detection
    image: np.ndarray  # [D] image index of each detection
    matched: np.ndarray  # [T, D] matched to a ground truth at each IoU threshold
    ignored: np.ndarray  # [T, D] matched to an ignored ground truth, or out of the area range

    def arrays(self) -> dict[str, np.ndarray]:
        return {"image_ids": self.image_ids, "n_gt": self.n_gt, "category": self.category, "image": self.image,
                "matched": self.matched, "ignored": self.ignored}


def pack_matches(matches: dict[str, Matches]) -> bytes:
    """One compressed blob for the results store: ``{iou_type: Matches}``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"{kind}/{name}": value for kind, m in matches.items()
                                   for name, value in m.arrays().items()})
    return buffer.getvalue()


def unpack_matches(blob: bytes) -> dict[str, Matches]:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob)) as arrays:
        kinds = {key.split("/")[0] for key in arrays.files}
        return {kind: Matches(**{name: arrays[f"{kind}/{name}"] for name in
                                 ("image_ids", "n_gt", "category", "image", "matched", "ignored")})
                for kind in kinds}


def resample_counts(images: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``[resamples, images]``: how often each image is drawn, ``images`` draws with replacement per resample."""
    draws = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    return np.stack([np.bincount(row, minlength=images) for row in draws]) if resamples else np.zeros((0, images))


def resampled_ap(matches: Matches, counts: np.ndarray, chunk: int = 8) -> dict[str, np.ndarray]:
    """COCO mAP@[.5:.95] (``mAP``) and mAP@0.5 (``mAP50``) of each resample; ``counts`` is ``[B, I]`` over
    ``matches.image_ids``. NaN where a resample holds no ground truth at all. Resamples are accumulated
    ``chunk`` at a time: the ``[chunk, T, D]`` arrays then stay in cache (measured 1.8x faster than all 200)."""
    parts = [accumulated_ap(matches, counts[start:start + chunk]) for start in range(0, len(counts), chunk)]
    return {key: np.concatenate([part[key] for part in parts]) if parts else np.zeros(0) for key in ("mAP", "mAP50")}


def accumulated_ap(matches: Matches, counts: np.ndarray) -> dict[str, np.ndarray]:
    counts = np.asarray(counts, dtype=float)
    thresholds = matches.matched.shape[0]
    total = np.zeros((counts.shape[0], thresholds))
    categories = np.zeros(counts.shape[0])
    ground_truth = counts @ matches.n_gt.T  # [B, K]
    for k in range(matches.n_gt.shape[0]):
        mine = matches.category == k
        counted = ground_truth[:, k] > 0  # pycocotools leaves a category without ground truth out (-1)
        precision = category_precision(counts[:, matches.image[mine]], matches.matched[:, mine],
                                       matches.ignored[:, mine], ground_truth[:, k])
        total[counted] += precision[counted]
        categories += counted
    with np.errstate(invalid="ignore", divide="ignore"):
        per_threshold = total / categories[:, None]
    return {"mAP": per_threshold.mean(axis=1), "mAP50": per_threshold[:, 0]}


def category_precision(weights: np.ndarray, matched: np.ndarray, ignored: np.ndarray,
                       ground_truth: np.ndarray) -> np.ndarray:
    """``[B, T]``: precision averaged over the 101 recall thresholds, each detection counted ``weights[b, d]``
    times (copies of one detection are adjacent in score order, so counting it k times is repeating it)."""
    resamples, detections = weights.shape
    if detections == 0:
        return np.zeros((resamples, matched.shape[0]))
    true = (matched & ~ignored).astype(float)
    false = (~matched & ~ignored).astype(float)
    tp = np.cumsum(weights[:, None, :] * true[None], axis=2)  # [B, T, D]
    fp = np.cumsum(weights[:, None, :] * false[None], axis=2)
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=2), axis=2), axis=2)
    # pycocotools takes, per recall threshold, the first detection whose recall tp/n (a float division) reaches
    # it. Recall rises with tp, so that is the first detection whose tp reaches the least count that does:
    # searched on the integer counts, exactly, all rows at once (each row shifted past the one before)
    needed = least_count(np.maximum(ground_truth, 1))  # [B, R]
    rows = resamples * matched.shape[0]
    shift = float(tp.max()) + 2
    row = np.arange(rows)[:, None]
    keys = (tp.reshape(rows, detections) + row * shift).ravel()
    wanted = np.minimum(np.repeat(needed, matched.shape[0], axis=0), shift - 1) + row * shift
    found = np.searchsorted(keys, wanted.ravel(), side="left").reshape(rows, -1) - row * detections
    picked = np.take_along_axis(precision.reshape(rows, detections), np.minimum(found, detections - 1), axis=1)
    return np.where(found < detections, picked, 0.0).mean(axis=1).reshape(resamples, -1)


def least_count(ground_truth: np.ndarray) -> np.ndarray:
    """``[B, R]``: the least whole count c with ``c / n >= threshold`` in float64, as pycocotools compares."""
    n = ground_truth.astype(float)[:, None]
    start = np.floor(RECALL_THRESHOLDS[None] * n) - 1
    candidates = np.maximum(start[..., None] + np.arange(4), 0)  # the float product is within one of the answer
    reaches = candidates / n[..., None] >= RECALL_THRESHOLDS[None, :, None]
    return np.take_along_axis(candidates, reaches.argmax(axis=2)[..., None], axis=2)[..., 0]


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The central 95 % percentile interval of the finite samples (NaN, NaN when there are none)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [(100 - CONFIDENCE) / 2, (100 + CONFIDENCE) / 2])
    return float(low), float(high)
