"""Trading (issue 24): settings, the traded book's optimality, drift, quantity books, orders; real runs."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.rebalance import (
    check_trading,
    drifted,
    orders,
    read_holdings,
    traded_book,
    value_quantities,
)

# --------------------------------------------------------------------------- the traded book


def _distance(x, t):
    return math.fsum(abs(a - b) for a, b in zip(x, t, strict=True)) + abs(math.fsum(t) - math.fsum(x))


def _brute_force(c, t, band, max_turnover):
    """The least distance by enumeration: every choice of moving positions, each an LP (linprog)."""
    import numpy as np
    from scipy.optimize import linprog

    n, best = len(c), math.inf
    gap = [abs(a - b) for a, b in zip(c, t, strict=True)]
    side = [1.0 if b > a else -1.0 for a, b in zip(c, t, strict=True)]
    room = max(0.0, 1.0 - sum(c))
    k = sum(t) - sum(c)
    for mask in itertools.product([0, 1], repeat=n):
        lo, hi = [], []
        for i in range(n):
            if not mask[i]:
                lo.append(0.0), hi.append(0.0)
                continue
            least = min(band, gap[i]) if t[i] == 0.0 else band
            if gap[i] == 0.0 or gap[i] < least:
                break
            lo.append(least), hi.append(gap[i])
        else:
            # Variables u (n) and w: minimise sum(gap - u) + w, w >= |k - s.u|.
            a_ub = [[*side, 0.0], [*(-v for v in side), -1.0], [*side, -1.0]]
            b_ub = [room, -k, k]
            if max_turnover is not None:
                a_ub.append([1.0] * n + [0.0])
                b_ub.append(2 * max_turnover)
            res = linprog([-1.0] * n + [1.0], A_ub=np.array(a_ub), b_ub=b_ub, bounds=[*zip(lo, hi, strict=True), (0, None)],
                          method="highs")  # fmt: skip
            if res.status == 0:
                best = min(best, sum(gap) + res.fun)
    return best


weights = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5)


@st.composite
def books(draw):
    n = draw(st.integers(1, 5))
    raw_c = draw(st.lists(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 0.3]) | st.floats(0.0, 0.4), min_size=n, max_size=n))
    raw_t = draw(st.lists(st.sampled_from([0.0, 0.02, 0.1, 0.25]) | st.floats(0.0, 1.0), min_size=n, max_size=n))
    c_scale = draw(st.floats(0.0, 1.0)) / max(1.0, sum(raw_c))
    t_sum = sum(raw_t)
    c = [v * c_scale for v in raw_c]
    t = [v / t_sum for v in raw_t] if t_sum > 0 else raw_t
    band = draw(st.sampled_from([0.0, 0.02, 0.05, 0.15]))
    budget = draw(st.sampled_from([None, 0.0, 0.03, 0.1, 0.25]))
    return c, t, band, budget


@settings(max_examples=120, deadline=None)
@given(books())
def test_traded_book_is_feasible_exactly_and_optimal(case):
    c, t, band, budget = case
    x = traded_book(c, t, band=band, max_turnover=budget)
    cash = 1.0 - math.fsum(x)
    assert abs(math.fsum(x) + cash - 1.0) <= 1e-12
    assert cash >= min(0.0, 1.0 - math.fsum(c)) - 1e-12
    for ci, ti, xi in zip(c, t, x, strict=True):
        move = abs(xi - ci)
        assert min(ci, ti) - 1e-15 <= xi <= max(ci, ti) + 1e-15  # toward the target only
        assert move == 0.0 or xi == 0.0 or move >= band - 1e-12, (ci, ti, xi, band)
    if budget is not None:
        assert math.fsum(abs(a - b) for a, b in zip(x, c, strict=True)) / 2 <= budget + 1e-12
    assert _distance(x, t) <= _brute_force(c, t, band, budget) + 1e-9


def test_traded_book_without_limits_is_the_target_and_closes_are_exact():
    c, t = [0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.0, 0.5]
    assert traded_book(c, t) == t
    # A one-way budget of 0.2 buys 0.2 of the missing position, funded by sells of at least the band.
    x = traded_book(c, t, band=0.1, max_turnover=0.2)
    assert x[3] == pytest.approx(0.2) and abs(math.fsum(abs(a - b) for a, b in zip(x, c, strict=True)) / 2 - 0.2) <= 1e-12
    # A position 0.01 from its target does not move under a band of 0.05; one closing does.
    assert traded_book([0.31, 0.01], [0.3, 0.0], band=0.05) == [0.31, 0.0]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"capital": 0}, r"trading.capital = 0 is not a finite number > 0"),
        ({"capital": -5}, r"trading.capital = -5"),
        ({"lot_size": 1}, r"trading.capital is missing"),
        ({"capital": 1e6, "lot_size": 0}, r"trading.lot_size = 0 is not a finite number > 0"),
        ({"capital": 1e6, "lot_size": {"*": 1, "BTC": -0.1}}, r"trading.lot_size.BTC = -0.1"),
        ({"capital": 1e6, "band": -0.01}, r"trading.band = -0.01 is not a finite number >= 0"),
        ({"capital": 1e6, "max_turnover": -1}, r"trading.max_turnover = -1"),
        ({"capital": 1e6, "min_order": "x"}, r"trading.min_order = 'x'"),
        ({"capital": 1e6, "bands": 0.1}, r"trading.bands is not a trading setting"),
    ],
)
def test_bad_trading_settings_are_one_line_naming_the_key(block, match):
    with pytest.raises(ConfigError, match=match) as info:
        check_trading(block, "profile 'p'")
    assert "\n" not in str(info.value)


def test_trading_defaults():
    assert check_trading({"capital": 100}, "p") == {
        "capital": 100.0, "min_order": 0.0, "band": 0.0, "max_turnover": None, "lot_size": {"*": 1.0}
    }  # fmt: skip


# --------------------------------------------------------------------------- drift, quantities, orders


def test_drift_is_each_position_grown_by_its_price_over_the_book_value():
    rows = [{"symbol": "A", "direction": "LONG", "weight": 0.5}, {"symbol": "B", "direction": "SHORT", "weight": 0.2}]
    out, value = drifted(rows, {("A", "LONG"): 1.2, ("B", "SHORT"): 1.5})
    assert value == 1.0 + 0.5 * 0.2 - 0.2 * 0.5  # the long's gain, the short's loss
    assert out[0]["weight"] == 0.5 * 1.2 / value and out[1]["weight"] == 0.2 * 1.5 / value


def test_quantity_book_gives_the_weights_its_prices_imply(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("symbol,direction,quantity\nA,LONG,10\nB,SHORT,4\n")
    rows = read_holdings(path)
    assert rows == [{"symbol": "A", "direction": "LONG", "quantity": 10.0},
                    {"symbol": "B", "direction": "SHORT", "quantity": 4.0}]  # fmt: skip
    valued = value_quantities(rows, {"A": 25.0, "B": 50.0}, 1000.0)
    assert [r["weight"] for r in valued] == [10 * 25.0 / 1000.0, 4 * 50.0 / 1000.0]
    with pytest.raises(DataError, match=r"worth 1200.00 .* more than trading.capital = 1000"):
        value_quantities([{"symbol": "A", "direction": "LONG", "quantity": 48.0}], {"A": 25.0}, 1000.0)
    both = tmp_path / "both.csv"
    both.write_text("symbol,direction,weight,quantity\nA,LONG,0.1,\nB,LONG,,3\n")
    with pytest.raises(DataError, match=r"line 3: a book gives weights or quantities, not both"):
        read_holdings(both)


def test_orders_are_lots_above_min_order_within_half_a_lot():
    trading = check_trading({"capital": 100_000, "lot_size": {"*": 10, "BTC": 0.001}, "min_order": 500}, "p")
    rows = [
        {"symbol": "A", "direction": "LONG", "price": 33.0, "price_date": "2021-12-30", "current_quantity": 0.0,
         "traded_weight": 0.5, "cost_rate": 0.001},
        {"symbol": "BTC", "direction": "LONG", "price": 47123.5, "price_date": "2021-12-31", "current_quantity": 0.5,
         "traded_weight": 0.2, "cost_rate": 0.002},
        {"symbol": "S", "direction": "SHORT", "price": 20.0, "price_date": "2021-12-30", "current_quantity": 100.0,
         "traded_weight": 0.0, "cost_rate": 0.001},
        {"symbol": "T", "direction": "LONG", "price": 10.0, "price_date": "2021-12-30", "current_quantity": 0.0,
         "traded_weight": 0.003, "cost_rate": 0.001},
    ]  # fmt: skip
    out = orders(rows, trading)
    by = {o["symbol"]: o for o in out["orders"]}
    assert by["A"]["side"] == "BUY" and by["A"]["quantity"] == 1520  # 50,000 / 33 = 1515.2 -> 152 lots
    assert by["BTC"]["side"] == "SELL" and by["S"]["side"] == "BUY_TO_COVER" and by["S"]["quantity"] == 100
    assert "T" not in by and out["dropped"][0]["symbol"] == "T"  # 3 lots, 300 of notional < min_order
    for o in out["orders"]:
        lot = 0.001 if o["symbol"] == "BTC" else 10
        assert o["quantity"] > 0 and abs(o["quantity"] / lot - round(o["quantity"] / lot)) < 1e-9
        assert o["notional"] >= 500 and o["est_cost"] == o["notional"] * (0.002 if o["symbol"] == "BTC" else 0.001)
    for r in rows[:3]:
        lot = 0.001 if r["symbol"] == "BTC" else 10
        assert abs(r["gap"]) <= lot / 2 + 1e-9
    assert out["largest_gap"]["symbol"] == "T"
