"""Tests of hmmrnn.precision: numbers printed at the precision they carry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmmrnn.precision import binomial_se, decimals_for, format_bound, format_spread, format_uncertain, spread


@pytest.mark.parametrize(
    "uncertainty, sig, expected",
    [(0.0042, 1, 3), (0.0042, 2, 4), (0.1, 1, 1), (0.99, 1, 0), (0.0096, 1, 2), (37.0, 1, -1), (1.0, 1, 0), (1e-15, 1, 15)],
)
def test_decimals_for(uncertainty, sig, expected):
    assert decimals_for(uncertainty, sig) == expected


def test_decimals_for_ignores_float_noise_at_a_power_of_ten():
    # 0.1 + 0.2 - 0.2 is 0.10000000000000003 or 0.09999999999999998 depending on the order
    assert decimals_for(0.1 * (1 + 1e-15)) == decimals_for(0.1 * (1 - 1e-15)) == 1


@pytest.mark.parametrize(
    "value, uncertainty, sig, expected",
    [
        (0.48712, 0.0042, 1, "0.487 ± 0.004"),
        (0.48712, 0.0042, 2, "0.4871 ± 0.0042"),
        (-0.0763, 0.11, 1, "-0.1 ± 0.1"),
        (1234.5, 37.0, 1, "1230 ± 40"),
        (-0.0004, 0.004, 1, "0.000 ± 0.004"),  # no "-0.000"
        (0.3331, 0.0096, 1, "0.33 ± 0.01"),  # the uncertainty rounds up to the next decade
    ],
)
def test_format_uncertain(value, uncertainty, sig, expected):
    assert format_uncertain(value, uncertainty, sig) == expected


def test_format_uncertain_is_stable_under_roundoff_but_not_under_a_real_change():
    base = format_uncertain(0.3331, 0.0032)
    assert base == "0.333 ± 0.003"
    # roundoff-level perturbations (what another CPU's kernels produce) print the same text
    for eps in (1e-13, -1e-13, 3e-9, -3e-9):
        assert format_uncertain(0.3331 + eps, 0.0032 * (1 + eps)) == base
    # a change by more than the uncertainty changes the text
    assert format_uncertain(0.3331 + 0.005, 0.0032) != base


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_format_uncertain_refuses_a_meaningless_uncertainty(bad):
    with pytest.raises(ValueError, match="uncertainty"):
        format_uncertain(1.0, bad)


def test_format_uncertain_refuses_a_non_finite_value():
    with pytest.raises(ValueError, match="value"):
        format_uncertain(math.nan, 0.1)


def test_format_bound():
    assert format_bound(5.5e-15, 1e-12) == "< 1e-12"
    assert format_bound(-7.6e-15, 1e-12) == "< 1e-12"
    assert format_bound(2.3e-5, 1e-3) == "< 0.001"
    # a value that breaks the bound shows its digits: the checked text changes
    assert format_bound(3.2e-5, 1e-12) == "3.2e-05 (not below 1e-12)"
    assert format_bound(math.nan, 1e-12) == "nan (not below 1e-12)"
    with pytest.raises(ValueError, match="bound"):
        format_bound(0.0, 0.0)


def test_binomial_se():
    assert binomial_se(0.5, 10_000) == pytest.approx(0.005)
    assert binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="p must"):
        binomial_se(1.5, 10)
    with pytest.raises(ValueError, match="n must"):
        binomial_se(0.5, 0)


def test_binomial_se_matches_the_spread_of_simulated_frequencies():
    rng = np.random.default_rng(0)
    p, n = 0.3, 2_000
    freqs = rng.binomial(n, p, size=20_000) / n
    assert freqs.std() == pytest.approx(binomial_se(p, n), rel=0.02)


def test_spread_and_its_text():
    s = spread([-0.076, -0.143, -0.11])
    assert s.n == 3
    assert s.mean == pytest.approx(-0.10966666666666666)
    assert s.sd == pytest.approx(np.std([-0.076, -0.143, -0.11], ddof=1))
    assert (s.low, s.high) == (-0.143, -0.076)
    assert format_spread(s) == "-0.11 ± 0.03 (-0.14 to -0.08, 3 seeds)"
    assert format_spread(spread([2.0, 2.0])) == "2 (2 seeds, all equal)"


def test_spread_reports_a_non_finite_value():
    with pytest.raises(ValueError, match=r"position\(s\) \[1\]"):
        spread([0.1, math.nan, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        spread([])
