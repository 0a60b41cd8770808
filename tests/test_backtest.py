"""Walk-forward engine: windows, frictions, fallback, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.backtest import project_to_bounds, walk_forward
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
