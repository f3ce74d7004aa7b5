"""Rate and BD-rate, computed the way the MPEG FCM community does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

BD_METHODS = ("pchip", "cubic")
MIN_POINTS = 4


class BDRateUnavailable(ValueError):
    """The curves do not allow a BD-rate; the message says why, for the report."""


def bpp(total_bits: int, total_pixels: int) -> float:
    """Bits per pixel as a ratio of sums over the dataset (not a mean of per-image bpp)."""
    return total_bits / total_pixels


def bd_rate(anchor_rate: Sequence[float], anchor_acc: Sequence[float], test_rate: Sequence[float],
            test_acc: Sequence[float], method: str = "pchip") -> float:
    """Bjøntegaard delta rate of test against anchor in percent (negative = the test saves bits).

    log10(rate) is interpolated as a function of accuracy (piecewise cubic Hermite, or the VCEG-M33 cubic
    polynomial) and averaged over the accuracy interval both curves cover.
    """
    return bd_rate_over(anchor_rate, anchor_acc, test_rate, test_acc, method)[0]


def bd_rate_over(anchor_rate: Sequence[float], anchor_acc: Sequence[float], test_rate: Sequence[float],
                 test_acc: Sequence[float], method: str = "pchip") -> tuple[float, float, float]:
    """The BD-rate and the accuracy interval (low, high) it integrates over."""
    if method not in BD_METHODS:
        raise ValueError(f"unknown BD method {method!r}; use one of {', '.join(BD_METHODS)}")
    anchor = _checked_curve(anchor_rate, anchor_acc, "anchor")
    test = _checked_curve(test_rate, test_acc, "test")
    low = max(anchor[1].min(), test[1].min())
    high = min(anchor[1].max(), test[1].max())
    if high <= low:
        raise BDRateUnavailable(
            f"no accuracy overlap (anchor {anchor[1].min():.4f}..{anchor[1].max():.4f}, "
            f"test {test[1].min():.4f}..{test[1].max():.4f})")
    mean_anchor = _integral(*anchor, low, high, method) / (high - low)
    mean_test = _integral(*test, low, high, method) / (high - low)
    return float((10 ** (mean_test - mean_anchor) - 1) * 100), float(low), float(high)


def _checked_curve(rate: Sequence[float], acc: Sequence[float], which: str) -> tuple[np.ndarray, np.ndarray]:
    rate, acc = np.asarray(rate, dtype=float), np.asarray(acc, dtype=float)
    if rate.shape != acc.shape or rate.ndim != 1:
        raise BDRateUnavailable(f"{which} rates and accuracies differ in length")
    keep = np.isfinite(rate) & np.isfinite(acc)
    rate, acc = rate[keep], acc[keep]
    if len(rate) < MIN_POINTS:
        raise BDRateUnavailable(f"{which} curve has {len(rate)} point{'' if len(rate) == 1 else 's'}; "
                                f"BD-rate needs at least {MIN_POINTS}")
    if np.any(rate <= 0):
        raise BDRateUnavailable(f"{which} curve has a non-positive rate")
    order = np.argsort(rate)
    rate, acc = rate[order], acc[order]
    if np.any(np.diff(rate) <= 0):
        raise BDRateUnavailable(f"{which} curve has two points at the same rate")
    falls = np.flatnonzero(np.diff(acc) <= 0)
    if falls.size:
        k = falls[0]
        raise BDRateUnavailable(
            f"{which} curve is not monotone: accuracy {acc[k + 1]:.4f} at {rate[k + 1]:.4g} bpp is not above "
            f"{acc[k]:.4f} at {rate[k]:.4g} bpp")
    return np.log10(rate), acc


def _integral(log_rate: np.ndarray, acc: np.ndarray, low: float, high: float, method: str) -> float:
    if method == "pchip":
        return float(PchipInterpolator(acc, log_rate).integrate(low, high))
    antiderivative = np.polyint(np.polyfit(acc, log_rate, 3))
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))
