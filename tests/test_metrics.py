import bjontegaard
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcmbench.evaluation.metrics import BDRateUnavailable, bd_rate, bpp

CURVES = [  # (anchor rate, anchor accuracy, test rate, test accuracy)
    ([0.05, 0.1, 0.2, 0.4, 0.8], [0.20, 0.28, 0.33, 0.36, 0.375],
     [0.04, 0.08, 0.15, 0.3, 0.6], [0.21, 0.285, 0.335, 0.362, 0.374]),
    ([0.012, 0.025, 0.05, 0.1], [0.31, 0.40, 0.46, 0.49],
     [0.02, 0.035, 0.07, 0.16], [0.30, 0.39, 0.455, 0.492]),
    ([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], [0.05, 0.15, 0.3, 0.42, 0.47, 0.49],
     [0.6, 1.1, 2.5, 5.0, 9.0], [0.04, 0.14, 0.31, 0.43, 0.465]),
]


@pytest.mark.parametrize("curves", CURVES)
@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_matches_the_bjontegaard_package(curves, method):
    ra, aa, rt, at = curves
    ours = bd_rate(ra, aa, rt, at, method)
    theirs = bjontegaard.bd_rate(ra, aa, rt, at, method=method, require_matching_points=False)
    assert ours == pytest.approx(theirs, abs=1e-6)


# generating unique float lists is slow on a loaded machine: that is not a failure of bd_rate
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rates=st.lists(st.floats(0.001, 100), min_size=4, max_size=8, unique=True),
       scale=st.floats(0.1, 10))
def test_invariants(rates, scale):
    rates = sorted(rates)
    if min(np.diff(rates)) < 1e-6 * max(rates):
        return
    acc = np.linspace(0.1, 0.5, len(rates))
    assert bd_rate(rates, acc, rates, acc) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rates, acc, [r / 2 for r in rates], acc) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(rates, acc, [r * scale for r in rates], acc) == pytest.approx((scale - 1) * 100, rel=1e-9)


def test_refuses_what_it_cannot_measure():
    good = ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(BDRateUnavailable, match="at least 4"):
        bd_rate(*good, [1, 2, 3], [0.1, 0.2, 0.3])
    with pytest.raises(BDRateUnavailable, match="not monotone"):
        bd_rate(*good, [1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4])
    with pytest.raises(BDRateUnavailable, match="no accuracy overlap"):
        bd_rate(*good, [1, 2, 3, 4], [0.5, 0.6, 0.7, 0.8])


def test_bpp_is_a_ratio_of_sums():
    assert bpp(8 * 100 + 8 * 300, 100 * 100 + 50 * 50) == pytest.approx(3200 / 12500)
