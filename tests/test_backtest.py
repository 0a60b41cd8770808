"""Walk-forward engine: windows, frictions, fallback, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tradingview_scraper.backtest import walk_forward
from tradingview_scraper.bounds import WEIGHT_TOL, check_window_weights, project_to_bounds
from tradingview_scraper.errors import ConfigError, ConservationError
from tradingview_scraper.sleeve import momentum_selector, synthetic_long


@pytest.fixture
def returns():
    rng = np.random.default_rng(1)
    idx = pd.bdate_range("2020-01-01", periods=160)
    return pd.DataFrame(rng.normal(0.0005, 0.01, size=(160, 3)), index=idx, columns=["A", "B", "C"])


def test_known_turnover_gives_known_cost(returns):
    gross = walk_forward(returns, "equal_weight", train_window=100, test_window=20)
    net = walk_forward(returns, "equal_weight", train_window=100, test_window=20, cost_rate=0.001)
    diff = (gross.returns - net.returns)
    # equal weight: buying from cash is turnover 1 at the first rebalance, 0 afterwards
    assert diff.iloc[0] == pytest.approx(0.001)
    assert diff.iloc[1:].abs().max() == pytest.approx(0.0)


def test_window_weights_use_no_future_data(returns):
    base = walk_forward(returns, "min_variance", train_window=100, test_window=20)
    changed = returns.copy()
    changed.iloc[120:] *= 5  # rewrite everything after the second window's training data
    after = walk_forward(changed, "min_variance", train_window=100, test_window=20)
    pd.testing.assert_series_equal(base.weights.iloc[0], after.weights.iloc[0])
    pd.testing.assert_series_equal(base.weights.iloc[1], after.weights.iloc[1])
    assert not np.allclose(base.weights.iloc[2], after.weights.iloc[2])


def test_failed_windows_fall_back_and_are_counted(returns):
    broken = returns.copy()
    broken.iloc[:, :] = 0.0  # zero variance: risk parity cannot solve
    res = walk_forward(broken, "risk_parity", train_window=100, test_window=20)
    assert (res.windows_attempted, res.windows_fallback, res.windows_succeeded) == (3, 3, 0)
    assert len(res.errors) == 3 and all("NonPositiveVarianceError" in e for e in res.errors)
    np.testing.assert_allclose(res.weights.to_numpy(), np.full((3, 3), 1 / 3))


def test_momentum_selection_decided_inside_the_train_window(returns):
    select = momentum_selector(top_n=1, lookback=20)
    data = returns.copy()
    data.iloc[80:100, 0] = 0.03   # A leads inside the first train window
    data.iloc[100:120, 2] = 0.50  # C explodes only in the first test window (the future)
    res = walk_forward(data, "equal_weight", train_window=100, test_window=20, selector=select)
    assert res.weights.iloc[0].to_dict() == {"A": 1.0, "B": 0.0, "C": 0.0}
    assert res.weights.iloc[1]["C"] == 1.0, "once C's rally is in the past, it is selected"


def test_synthetic_long_caps_losses_at_100_percent():
    raw = pd.DataFrame({"X": [0.1, -0.2, 3.0]})
    np.testing.assert_allclose(synthetic_long(raw)["X"], [-0.1, 0.2, -1.0])


@pytest.mark.parametrize("lo, hi", [(0.1, 0.4), (0.0, 0.5), (0.25, 0.25)])
def test_project_to_bounds(lo, hi):
    w = project_to_bounds(np.array([0.7, 0.2, 0.05, 0.05]), lo, hi)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= lo - 1e-12).all() and (w <= hi + 1e-12).all()


@pytest.mark.parametrize(
    "v, lo, hi, expected",
    [
        ([0.98, 0.01, 0.01], 0.05, 0.5, [0.5, 0.25, 0.25]),  # the case: no capital lost
        ([0.7, 0.2, 0.05, 0.05], 0.1, 0.4, [0.4, 0.3, 0.15, 0.15]),
        ([0.7, 0.2, 0.05, 0.05], 0.25, 0.25, [0.25] * 4),  # degenerate bounds
        ([0.2, 0.3, 0.5], 0.0, 1.0, [0.2, 0.3, 0.5]),  # feasible: unchanged
        ([1.0, 1.0, 1.0, 1.0], 0.05, 0.5, [0.25] * 4),  # an equal shift, not a rescale
        ([0.6, 0.4, 0.0], 0.1, 0.5, [0.5, 0.4, 0.1]),
    ],
)
def test_project_to_bounds_known_cases(v, lo, hi, expected):
    w = project_to_bounds(np.array(v), lo, hi)
    np.testing.assert_allclose(w, expected, atol=1e-12)
    assert abs(w.sum() - 1.0) <= 1e-12


def test_project_to_bounds_refuses_infeasible_bounds_and_non_finite_weights():
    with pytest.raises(ConfigError, match=r"bounds \[0.4, 0.5\] are infeasible for 3 weights"):
        project_to_bounds(np.array([0.2, 0.3, 0.5]), 0.4, 0.5)
    with pytest.raises(ConfigError, match="non-finite"):
        project_to_bounds(np.array([np.nan, 0.5]), 0.0, 1.0)


@st.composite
def _problem(draw):
    n = draw(st.integers(1, 12))
    v = np.array(draw(st.lists(st.floats(-2.0, 3.0, allow_nan=False), min_size=n, max_size=n)))
    lo = draw(st.floats(0.0, 1.0 / n))
    hi = draw(st.floats(1.0 / n, 1.0))
    assume(lo <= hi)
    return v, lo, hi


@settings(max_examples=400, deadline=None)
@given(_problem())
def test_project_to_bounds_properties(problem):
    v, lo, hi = problem
    w = project_to_bounds(v, lo, hi)
    assert abs(w.sum() - 1.0) <= 1e-12
    assert (w >= lo - 1e-12).all() and (w <= hi + 1e-12).all()
    np.testing.assert_allclose(project_to_bounds(w, lo, hi), w, atol=1e-12)  # idempotent
    # Euclidean optimality (KKT): w = clip(v - tau, lo, hi) for one tau. Weights strictly
    # inside the bounds share the shift tau; a weight at lo has v - lo <= tau, at hi v - hi >= tau.
    if hi - lo < 2e-9:
        return  # one feasible point: nothing to optimize
    shift = v - w
    inside = (w > lo + 1e-9) & (w < hi - 1e-9)
    if inside.any():
        tau = shift[inside].mean()
        np.testing.assert_allclose(shift[inside], tau, atol=1e-9)
        assert (v[w <= lo + 1e-9] - lo <= tau + 1e-9).all()
        assert (v[w >= hi - 1e-9] - hi >= tau - 1e-9).all()
    else:  # every weight at a bound: some tau separates the two groups
        assert (v[w <= lo + 1e-9] - lo).max(initial=-np.inf) <= (v[w >= hi - 1e-9] - hi).min(initial=np.inf) + 1e-9


@settings(max_examples=100, deadline=None)
@given(_problem(), st.integers(0, 2**32 - 1))
def test_project_to_bounds_is_nearest(problem, seed):
    v, lo, hi = problem
    w = project_to_bounds(v, lo, hi)
    rng = np.random.default_rng(seed)
    for _ in range(20):  # random feasible points: none is closer than the projection
        other = project_to_bounds(rng.normal(0, 1, len(v)), lo, hi)
        assert np.linalg.norm(v - w) <= np.linalg.norm(v - other) + 1e-9


def test_check_window_weights_refuses_lost_capital_and_broken_bounds():
    check_window_weights(np.array([0.5, 0.25, 0.25]), 0.05, 0.5, window="2020-01-31", profile="hrp")
    with pytest.raises(ConservationError, match=r"inverse_volatility walk-forward window trained up to 2020-01-31: weights sum to 0.6"):
        check_window_weights(np.array([0.5, 0.05, 0.05]), 0.05, 0.5, window="2020-01-31", profile="inverse_volatility")
    with pytest.raises(ConservationError, match=r"outside the bounds \[0.05, 0.5\]"):
        check_window_weights(np.array([0.6, 0.2, 0.2]), 0.05, 0.5, window="2020-01-31", profile="hrp")
    with pytest.raises(ConservationError, match=r"sum to"):
        check_window_weights(np.array([0.5, 0.25, 0.25 + 10 * WEIGHT_TOL]), 0.05, 0.5, window="w", profile="hrp")


@pytest.mark.parametrize("profile", ["equal_weight", "inverse_volatility", "min_variance", "hrp", "risk_parity", "max_diversification"])
def test_every_window_sums_to_one_within_bounds(profile):
    rng = np.random.default_rng(3)
    idx = pd.bdate_range("2020-01-01", periods=260)
    vols = np.array([0.001, 0.004, 0.02, 0.05])  # inverse volatility wants ~0.8 in the first
    X = pd.DataFrame(rng.normal(0.0002, vols, size=(260, 4)), index=idx, columns=list("abcd"))
    res = walk_forward(X, profile, train_window=100, test_window=20, min_weight=0.1, max_weight=0.4)
    W = res.weights.to_numpy()
    np.testing.assert_array_less(np.abs(W.sum(axis=1) - 1.0), 1e-12 + 1e-18)
    assert (W >= 0.1 - 1e-12).all() and (W <= 0.4 + 1e-12).all()
    assert abs(res.final_weights.sum() - 1.0) <= 1e-12
