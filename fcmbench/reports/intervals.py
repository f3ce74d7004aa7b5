"""95 % intervals for every accuracy and BD-rate of a report, by a seeded paired bootstrap over images.

Each setup (dataset, task model, weights) draws one set of image resamples; every method and rate point of the
setup is re-scored on the same resamples (bits, pixels and the pycocotools matching stored by the run), so a
BD-rate's interval reflects how much the comparison depends on which images were drawn. Points taken from a
published table have no per-image data and get no interval.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fcmbench.evaluation.bootstrap import interval, resample_counts, resampled_ap, unpack_matches
from fcmbench.evaluation.metrics import BDRateUnavailable, bd_rate_over
from fcmbench.reports.tables import stores

SEED = 0
Point = tuple[str, str, str]  # setup, method, rate


def point_resamples(sources: list[Path], resamples: int, seed: int = SEED) -> dict[Point, dict[str, np.ndarray]]:
    """Per stored rate point: its bpp and accuracies (``bbox_mAP``, ``bbox_mAP50``, ...) on each resample."""
    points: dict[Point, tuple[dict, dict[int, tuple[int, int]]]] = {}
    for _, store in stores(sources):
        sizes: dict[Point, dict[int, tuple[int, int]]] = {}
        for r in store.query("SELECT setup, method, rate, image_id, bytes, pixels FROM items"):
            sizes.setdefault((r["setup"], r["method"], r["rate"]), {})[r["image_id"]] = (8 * r["bytes"], r["pixels"])
        for r in store.query("SELECT setup, method, rate, matches FROM evaluations WHERE matches IS NOT NULL "
                             "AND length(matches) > 0 ORDER BY evaluated_at"):
            key = (r["setup"], r["method"], r["rate"])
            points[key] = (unpack_matches(r["matches"]), sizes.get(key, {}))  # the newest evaluation wins
    jobs = {}
    for setup in {key[0] for key in points}:
        mine = {key: value for key, value in points.items() if key[0] == setup}
        images = np.unique(np.concatenate([m.image_ids for matches, _ in mine.values() for m in matches.values()]))
        counts = resample_counts(len(images), resamples, seed)
        jobs |= {key: (matches, sizes, images, counts) for key, (matches, sizes) in mine.items()}
    # numpy releases the GIL in the accumulation's array work: threads use every core
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return dict(zip(jobs, pool.map(lambda job: resampled_point(*job), jobs.values()), strict=True))


def resampled_point(matches: dict, sizes: dict[int, tuple[int, int]], images: np.ndarray,
                    counts: np.ndarray) -> dict[str, np.ndarray]:
    ids = next(iter(matches.values())).image_ids
    mine = counts[:, np.searchsorted(images, ids)]
    bits, pixels = (np.array([sizes.get(int(i), (0, 0))[n] for i in ids], dtype=float) for n in (0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = {"bpp": (mine @ bits) / (mine @ pixels)}
    for kind, table in matches.items():
        ap = resampled_ap(table, mine)
        samples |= {f"{kind}_mAP": ap["mAP"], f"{kind}_mAP50": ap["mAP50"]}
    return samples


def with_accuracy_intervals(rd: pd.DataFrame, samples: dict[Point, dict[str, np.ndarray]]) -> pd.DataFrame:
    """``METRIC_lo`` and ``METRIC_hi`` beside every resampled accuracy column."""
    rd = rd.copy()
    metrics = sorted({m for s in samples.values() for m in s if m != "bpp" and m in rd.columns})
    for metric in metrics:
        bounds = [interval(samples[key][metric]) if (key := (r.setup, r.method, str(r.rate))) in samples
                  and metric in samples[key] else (math.nan, math.nan) for r in rd.itertuples()]
        rd[f"{metric}_lo"], rd[f"{metric}_hi"] = zip(*bounds, strict=True) if bounds else ([], [])
    return rd


def with_bd_intervals(bd: pd.DataFrame, rd: pd.DataFrame, samples: dict[Point, dict[str, np.ndarray]],
                      bd_method: str, monotone: bool) -> pd.DataFrame:
    """``ci_low``/``ci_high``: the 95 % interval of each BD-rate over the resamples where both resampled curves
    allow one; ``resamples`` says how many did."""
    bd = bd.copy()
    for index, row in bd.iterrows():
        if math.isnan(row["bd_rate_pct"]):
            continue
        anchor = curve_samples(rd, samples, row["setup"], row["anchor"], row["metric"])
        test = curve_samples(rd, samples, row["setup"], row["method"], row["metric"])
        if anchor is None or test is None:
            continue
        values = [resampled_bd(anchor[0][b], anchor[1][b], test[0][b], test[1][b], bd_method, monotone)
                  for b in range(anchor[0].shape[0])]
        bd.loc[index, ["ci_low", "ci_high"]] = interval(np.array(values))
        bd.loc[index, "resamples"] = int(np.isfinite(values).sum())
    return bd


def curve_samples(rd: pd.DataFrame, samples: dict, setup: str, method: str,
                  metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``[B, points]`` bpp and accuracy of a method's curve on each resample (None: a point was not resampled)."""
    keys = [(setup, method, str(rate)) for rate in rd.loc[(rd["setup"] == setup) & (rd["method"] == method), "rate"]]
    if not keys or any(k not in samples or metric not in samples[k] for k in keys):
        return None
    return (np.stack([samples[k]["bpp"] for k in keys], axis=1), np.stack([samples[k][metric] for k in keys], axis=1))


def resampled_bd(anchor_rate: np.ndarray, anchor_acc: np.ndarray, test_rate: np.ndarray, test_acc: np.ndarray,
                 bd_method: str, monotone: bool) -> float:
    if monotone:
        anchor_rate, anchor_acc = envelope(anchor_rate, anchor_acc)
        test_rate, test_acc = envelope(test_rate, test_acc)
    try:
        return bd_rate_over(anchor_rate, anchor_acc, test_rate, test_acc, bd_method)[0]
    except BDRateUnavailable:
        return math.nan


def envelope(rate: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points that beat every cheaper point (the report's ``--monotone`` rule)."""
    order = np.argsort(rate, kind="stable")
    rate, accuracy = rate[order], accuracy[order]
    best = np.maximum.accumulate(np.concatenate([[-np.inf], accuracy[:-1]]))
    keep = accuracy > best
    return rate[keep], accuracy[keep]
