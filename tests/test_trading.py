"""Trading (issue 24): settings, the traded book's optimality, drift, quantity books, orders; real runs."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.holdings import read_holdings
from tradingview_scraper.rebalance import check_trading, drifted, value_quantities
from tradingview_scraper.trading import ORDER_COLUMNS, orders, traded_book

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
            # HiGHS' default feasibility tolerance (1e-7) would let a budget of 0 move a weight of 1e-9.
            res = linprog([-1.0] * n + [1.0], A_ub=np.array(a_ub), b_ub=b_ub, bounds=[*zip(lo, hi, strict=True), (0, None)],
                          method="highs", options={"primal_feasibility_tolerance": 1e-10})  # fmt: skip
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


@settings(max_examples=150, deadline=None)
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
    assert _distance(x, t) <= _brute_force(c, t, band, budget) + 1e-9, (x, _distance(x, t))


def test_traded_book_without_limits_is_the_target_and_closes_are_exact():
    c, t = [0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.0, 0.5]
    assert traded_book(c, t) == t
    # A one-way budget of 0.2 buys 0.2 of the missing position, funded by sells of at least the band.
    x = traded_book(c, t, band=0.1, max_turnover=0.2)
    assert x[3] == pytest.approx(0.2) and abs(math.fsum(abs(a - b) for a, b in zip(x, c, strict=True)) / 2 - 0.2) <= 1e-12
    # A position 0.01 from its target does not move under a band of 0.05; one closing does.
    assert traded_book([0.31, 0.01], [0.3, 0.0], band=0.05) == [0.31, 0.0]


# --------------------------------------------------------------------------- the traded book under book limits


def _limit_rows(symbols, directions, lim):
    """``(A_ub, b_ub)`` on a book's gross weights for ``lim`` (cap, group_max on A and B, net_min,
    net_max, gross with one auxiliary per symbol), written here independently of ``trading_limits.book_rows``."""
    uniq = sorted(set(symbols))
    net = [[(1.0 if d == "LONG" else -1.0) * (s == u) for s, d in zip(symbols, directions, strict=True)] for u in uniq]
    rows, bounds = [], []
    for r in net:
        rows += [r, [-v for v in r]]
        bounds += [lim["cap"], lim["cap"]]
    group = [sum(net[j][i] for j, u in enumerate(uniq) if u in ("A", "B")) for i in range(len(symbols))]
    rows.append(group), bounds.append(lim["group_max"])
    total = [sum(r[i] for r in net) for i in range(len(symbols))]
    rows += [[-v for v in total], total]
    bounds += [-lim["net_min"], lim["net_max"]]
    return net, rows, bounds


def _brute_force_limited(c, t, band, max_turnover, symbols, directions, lim):
    """The least distance by enumeration of the moving positions, each an LP with the limits (linprog),
    ``inf`` when no choice is feasible; and whether some choice's LP book holds every constraint
    exactly (linprog's tolerance, 1e-10, also admits books that break one by a rounding)."""
    import numpy as np
    from scipy.optimize import linprog

    n, best, exact = len(c), math.inf, False
    gap = [abs(a - b) for a, b in zip(c, t, strict=True)]
    side = [1.0 if b > a else -1.0 for a, b in zip(c, t, strict=True)]
    room, k = max(0.0, 1.0 - sum(c)), sum(t) - sum(c)
    net, rows, bounds = _limit_rows(symbols, directions, lim)
    m = len(net)
    for mask in itertools.product([0, 1], repeat=n):
        lo, hi = [], []
        for i in range(n):
            least = min(band, gap[i]) if t[i] == 0.0 else band
            if not mask[i]:
                lo.append(0.0), hi.append(0.0)
            elif gap[i] == 0.0 or gap[i] < least:
                break
            else:
                lo.append(least), hi.append(gap[i])
        else:
            # Variables u (n), w, a (m): x = c + side * u.
            def row(u=None, w=0.0, a=None):
                return [*(u or [0.0] * n), w, *(a or [0.0] * m)]

            a_ub = [row(side), row([-v for v in side], -1.0), row(side, -1.0)]
            b_ub = [room, -k, k]
            if max_turnover is not None:
                a_ub.append(row([1.0] * n)), b_ub.append(2 * max_turnover)
            for r, b in zip(rows, bounds, strict=True):
                a_ub.append(row([r[i] * side[i] for i in range(n)]))
                b_ub.append(b - sum(r[i] * c[i] for i in range(n)))
            for j, r in enumerate(net):
                e = [-1.0 if q == j else 0.0 for q in range(m)]
                base = sum(r[i] * c[i] for i in range(n))
                a_ub.append(row([r[i] * side[i] for i in range(n)], 0.0, e)), b_ub.append(-base)
                a_ub.append(row([-r[i] * side[i] for i in range(n)], 0.0, e)), b_ub.append(base)
            a_ub.append(row(None, 0.0, [1.0] * m)), b_ub.append(lim["gross_max"])
            res = linprog([-1.0] * n + [1.0] + [0.0] * m, A_ub=np.array(a_ub), b_ub=b_ub,
                          bounds=[*zip(lo, hi, strict=True), (0, None), *[(0, None)] * m], method="highs",
                          options={"primal_feasibility_tolerance": 1e-10})  # fmt: skip
            if res.status == 0:
                best = min(best, sum(gap) + res.fun)
                u = [min(max(v, a), b) for v, a, b in zip(res.x[:n], lo, hi, strict=True)]
                x = [max(0.0, ci + s * ui) for ci, s, ui in zip(c, side, u, strict=True)]
                moved = math.fsum(abs(a - b) for a, b in zip(x, c, strict=True)) / 2
                # A witness holds every constraint within 4e-13, inside the 5e-13 trading.py checks to.
                exact = exact or (_breaks(x, symbols, directions, lim) <= 4e-13
                                  and (max_turnover is None or moved <= max_turnover + 4e-13)
                                  and math.fsum(x) <= max(1.0, math.fsum(c)) + 4e-13)  # fmt: skip
    return best, exact


def _breaks(x, symbols, directions, lim) -> float:
    """How far book ``x`` breaks the worst of ``lim`` (<= 0: held)."""
    net, rows, bounds = _limit_rows(symbols, directions, lim)
    worst = [sum(r[i] * x[i] for i in range(len(x))) - b for r, b in zip(rows, bounds, strict=True)]
    gross = sum(abs(sum(r[i] * x[i] for i in range(len(x)))) for r in net)
    return max([*worst, gross - lim["gross_max"]])


@st.composite
def limited_books(draw):
    c, t, band, budget = draw(books())
    # Weights under 1e-6 are 0 here: a move below HiGHS's tolerance (1e-10) cannot be told from none,
    # and a book that breaks a limit by less may be refused (docs/artifacts.md).
    c, t = ([v if v >= 1e-6 else 0.0 for v in w] for w in (c, t))
    keys = draw(st.lists(st.tuples(st.sampled_from("ABC"), st.sampled_from(["LONG", "SHORT"])), min_size=len(c),
                         max_size=len(c), unique=True))  # fmt: skip
    symbols, directions = [k[0] for k in keys], [k[1] for k in keys]
    # Limits the target meets (as the flattened book does): its own values plus a slack, sometimes none.
    net, rows, _ = _limit_rows(symbols, directions, {"cap": 0, "group_max": 0, "net_min": 0, "net_max": 0})
    tn = [sum(r[i] * t[i] for i in range(len(t))) for r in net]
    slack = st.sampled_from([0.0, 0.01, 0.05, 0.3])
    group = sum(v for u, v in zip(sorted(set(symbols)), tn, strict=True) if u in ("A", "B"))
    lim = {
        "cap": max(map(abs, tn)) + draw(slack),
        "group_max": group + draw(slack),
        "net_min": sum(tn) - draw(slack),
        "net_max": sum(tn) + draw(slack),
        "gross_max": sum(map(abs, tn)) + draw(slack),
    }
    return c, t, band, budget, symbols, directions, lim


@settings(max_examples=80, deadline=None)
@given(limited_books())
def test_traded_book_under_book_limits_is_feasible_exactly_and_optimal(case):
    """The book limits (#23) hold on the traded book to 1e-12, with the band, the budget and the cash;
    its distance is the least over every choice of moving positions; infeasible (to 1e-12) is refused in one line."""
    from tradingview_scraper.limits import BookLimits
    from tradingview_scraper.trading_limits import book_rows

    c, t, band, budget, symbols, directions, lim = case
    limits = BookLimits(max_position={"*": lim["cap"]}, groups={"A": "ab", "B": "ab"}, group_max={"ab": lim["group_max"]},
                        net_min=lim["net_min"], net_max=lim["net_max"], gross_max=lim["gross_max"])  # fmt: skip
    best, exact = _brute_force_limited(c, t, band, budget, symbols, directions, lim)
    try:
        x = traded_book(c, t, band=band, max_turnover=budget, limits=book_rows(limits, symbols, directions))
    except ConfigError as exc:
        assert not exact, (best, str(exc))  # no choice of moving positions meets every constraint
        assert "\n" not in str(exc) and "trading.max_turnover" in str(exc)
        return
    assert _breaks(x, symbols, directions, lim) <= 1e-12
    assert math.fsum(x) <= max(1.0, math.fsum(c)) + 1e-12
    for ci, ti, xi in zip(c, t, x, strict=True):
        move = abs(xi - ci)
        assert min(ci, ti) - 1e-15 <= xi <= max(ci, ti) + 1e-15
        assert move == 0.0 or xi == 0.0 or move >= band - 1e-12, (ci, ti, xi, band)
    if budget is not None:
        assert math.fsum(abs(a - b) for a, b in zip(x, c, strict=True)) / 2 <= budget + 1e-12
    assert abs(_distance(x, t) - best) <= 1e-9, (x, _distance(x, t), best)


def test_book_limits_move_the_traded_book_only_where_they_bind():
    """Without limits that bind, the limited solver's book is as close as the unlimited one; a current book
    over a cap is traded down to it even when the band would leave it."""
    from tradingview_scraper.limits import BookLimits
    from tradingview_scraper.trading_limits import book_rows

    c, t = [0.5, 0.1, 0.1], [0.3, 0.3, 0.2]
    loose = book_rows(BookLimits(max_position={"*": 0.9}), ["A", "B", "C"], ["LONG"] * 3)
    x, free = traded_book(c, t, band=0.01, max_turnover=0.1, limits=loose), traded_book(c, t, band=0.01, max_turnover=0.1)
    assert all(type(v) is float for v in x)
    assert _distance(x, t) == pytest.approx(_distance(free, t), abs=1e-12)  # equally close (the amounts may differ)
    capped = book_rows(BookLimits(max_position={"*": 0.31}), ["A", "B", "C"], ["LONG"] * 3)
    c, t = [0.32, 0.25, 0.2], [0.3, 0.3, 0.2]
    assert traded_book(c, t, band=0.05) == c  # every move is under the band
    # A's 0.02 to its target is under the band, and the cap needs 0.01 of it: no book meets both.
    with pytest.raises(ConfigError, match=r"the current book breaks max_position A \(\|net\| 0.32 > 0.31\); raise "
                                          r"trading.max_turnover or lower trading.band") as info:  # fmt: skip
        traded_book(c, t, band=0.05, limits=capped)
    assert "\n" not in str(info.value)
    # A band of 0.02 lets A move; the cap is met, B stays (its 0.05 fits, but the budget is 0.02 one-way).
    x = traded_book(c, t, band=0.02, max_turnover=0.02, limits=capped)
    assert x[0] <= 0.31 and x == [0.3, 0.27, 0.2]


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


def test_quantity_rows_are_valued_at_their_prices(tmp_path):
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


# --------------------------------------------------------------------------- real runs

TRADING = {"capital": 1_000_000, "lot_size": {"*": 1, "AAPL": 5}, "min_order": 2_000, "band": 0.01, "max_turnover": 0.15}
RP = ["hrp", "min_variance"]


def _json(path):
    return json.loads(path.read_text())


def _last_prices() -> dict[str, tuple[float, object]]:
    """Each symbol's last price in skfolio's datasets within the small manifest's dates, read here on its own."""
    import pandas as pd
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset

    frame = pd.concat([load_sp500_dataset(), load_factors_dataset()], axis=1).loc[:"2021-12-31"]
    return {s: frame[s].dropna() for s in frame.columns}


@pytest.fixture(scope="module")
def trade_runs(pm_runs, tmp_path_factory):
    """``trade``: meta_small with trading settings, the book of run ``prev`` (ending mid-2021) drifted;
    ``qty``: the same with a book in quantities."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    from .conftest import SMALL_MANIFEST

    base = tmp_path_factory.mktemp("trade")
    manifest = json.loads(SMALL_MANIFEST.read_text())
    manifest["profiles"]["meta_small"]["trading"] = dict(TRADING)
    path = base / "manifest_trading.json"
    path.write_text(json.dumps(manifest))
    book = base / "book.csv"
    book.write_text("symbol,direction,quantity\nAAPL,LONG,1000\nKO,LONG,2500\nMTUM,LONG,300\n")
    root = pm_runs["root"]
    kw = {"manifest": path, "runs_root": root, "ray": False, "profiles": RP}
    MetaPipeline("meta_small", run_id="trade", previous_run="prev", **kw).execute()
    MetaPipeline("meta_small", run_id="qty", holdings=str(book), **kw).execute()
    return {"root": root, "manifest": path, "manifest_dict": manifest, "book": book, "kw": kw}


@pytest.mark.e2e
@pytest.mark.parametrize("profile", RP)
def test_previous_book_drifts_by_each_positions_returns(pm_runs, trade_runs, profile):
    reb = _json(trade_runs["root"] / "trade" / f"rebalance_{profile}.json")
    prev = {(r["symbol"], r["direction"]): r["weight"] for r in _json(pm_runs["prev"] / f"flattened_{profile}.json")["weights"]}
    drift = reb["current"]["drift"]
    assert drift["from"] == "2021-06-30" and drift["to"] == "2021-12-31"
    series = _last_prices()
    growth = {k: float(series[k[0]].iloc[-1]) / float(series[k[0]].loc[: drift["from"]].iloc[-1]) for k in prev}
    value = 1.0 + math.fsum((1.0 if k[1] == "LONG" else -1.0) * w * (growth[k] - 1.0) for k, w in prev.items())
    assert reb["current"]["drift"]["book_value"] == pytest.approx(value, abs=1e-12)
    rows = {(r["symbol"], r["direction"]): r for r in reb["rows"]}
    for key, w in prev.items():
        assert abs(rows[key]["current_weight"] - w * growth[key] / value) <= 1e-12, key
    assert growth and any(abs(g - 1.0) > 0.01 for g in growth.values())  # the drift is not a no-op


@pytest.mark.e2e
@pytest.mark.parametrize("run", ["trade", "qty"])
@pytest.mark.parametrize("profile", RP)
def test_traded_book_conserves_capital_respects_band_budget_lots_and_min_order(trade_runs, run, profile):
    run_dir = trade_runs["root"] / run
    reb = _json(run_dir / f"rebalance_{profile}.json")
    rows = reb["rows"]
    x = [r["traded_weight"] for r in rows]
    assert abs(math.fsum(x) + reb["cash"] - 1.0) <= 1e-12 and reb["cash"] >= -1e-12
    band = max(TRADING["band"], TRADING["min_order"] / TRADING["capital"])
    assert reb["band_applied"] == band
    for r in rows:
        move = abs(r["traded_weight"] - r["current_weight"])
        assert move == 0.0 or r["traded_weight"] == 0.0 or move >= band - 1e-12, r
        assert abs(r["untraded"] - (r["target_weight"] - r["traded_weight"])) <= 1e-15
    turnover = math.fsum(abs(r["traded_weight"] - r["current_weight"]) for r in rows) / 2
    assert turnover <= TRADING["max_turnover"] + 1e-12 and reb["turnover_one_way"] == pytest.approx(turnover, abs=1e-12)
    # The band leaves small moves of the drifted book untraded; the budget binds for the all-new quantity book.
    assert reb["untraded_one_way"] > 0
    if run == "qty":
        assert reb["to_target"]["turnover_one_way"] > TRADING["max_turnover"]
    assert reb["tracking_error"]["annualised"] > 0
    # Orders: lots, min_order, each position within half a lot of its traded target.
    with open(run_dir / f"orders_{profile}.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0].keys()) == ORDER_COLUMNS
    assert len(table) == reb["orders"]["n_orders"] > 0
    by_row = {r["symbol"]: r for r in rows}
    for o in table:
        lot = TRADING["lot_size"].get(o["symbol"], 1)
        q = float(o["quantity"])
        assert q > 0 and q / lot == round(q / lot), o
        assert float(o["notional"]) >= TRADING["min_order"] and float(o["notional"]) == q * float(o["price"])
        r = by_row[o["symbol"]]
        assert o["side"] in {"BUY", "SELL", "SELL_SHORT", "BUY_TO_COVER"} and o["price_date"] == "2021-12-31"
        assert float(o["est_cost"]) == pytest.approx(float(o["notional"]) * r["cost_rate"], rel=1e-15)
    dropped = {o["symbol"] for o in reb["orders"]["dropped"]}
    for r in rows:
        if r["symbol"] not in dropped:
            assert abs(r["gap"]) <= TRADING["lot_size"].get(r["symbol"], 1) / 2 + 1e-9, r
    assert reb["orders"]["largest_gap"]["lots"] == max(abs(r["gap"]) / TRADING["lot_size"].get(r["symbol"], 1) for r in rows)


@pytest.mark.e2e
def test_quantity_book_gives_the_weights_its_prices_imply(trade_runs):
    reb = _json(trade_runs["root"] / "qty" / "rebalance_hrp.json")
    series = _last_prices()
    rows = {r["symbol"]: r for r in reb["rows"]}
    for symbol, q in (("AAPL", 1000), ("KO", 2500), ("MTUM", 300)):
        price = float(series[symbol].iloc[-1])
        assert rows[symbol]["price"] == price
        assert rows[symbol]["current_weight"] == q * price / TRADING["capital"]
        assert rows[symbol]["current_quantity"] == q
    assert reb["current"]["quantities"] is True


@pytest.mark.e2e
def test_changed_trading_settings_or_book_rerun_only_rebalance_orders_report(trade_runs):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    root, kw = trade_runs["root"], dict(trade_runs["kw"])
    manifest = trade_runs["manifest_dict"]
    stamp = {p: (root / "qty" / f"flattened_{p}.json").stat().st_mtime_ns for p in RP}
    manifest["profiles"]["meta_small"]["trading"]["band"] = 0.03
    changed = trade_runs["manifest"].parent / "manifest_band.json"
    changed.write_text(json.dumps(manifest))
    kw["manifest"] = changed
    ran = [j.rule for j in MetaPipeline("meta_small", run_id="qty", holdings=str(trade_runs["book"]), **kw).execute().jobs]
    # The resolved manifest records the manifest's hash, which an edit of it changes: a record, read by no step.
    assert sorted(j for j in ran if j != "all") == sorted(["rebalance", "orders"] * 2 + ["report", "resolved_manifest"]), ran
    assert _json(root / "qty" / "rebalance_hrp.json")["band_applied"] == 0.03
    trade_runs["book"].write_text("symbol,direction,quantity\nAAPL,LONG,500\n")
    ran = [j.rule for j in MetaPipeline("meta_small", run_id="qty", holdings=str(trade_runs["book"]), **kw).execute().jobs]
    assert sorted(j for j in ran if j != "all") == sorted(["rebalance", "orders"] * 2 + ["report"]), ran
    assert stamp == {p: (root / "qty" / f"flattened_{p}.json").stat().st_mtime_ns for p in RP}


def test_bad_trading_block_stops_the_cli_before_any_work(tmp_path, capsys):
    from tradingview_scraper.orchestration import cli

    from .conftest import SMALL_MANIFEST

    manifest = json.loads(SMALL_MANIFEST.read_text())
    manifest["profiles"]["meta_small"]["trading"] = {"capital": 0}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    runs = tmp_path / "runs"
    argv = ["--profile", "meta_small", "--manifest", str(path), "--runs-root", str(runs), "--run-id", "bad", "--no-ray"]
    assert cli.main(argv, prog="run_meta_pipeline.py", require_meta=True) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trading.capital = 0" in err, err
    assert not (runs / "bad").exists()


@pytest.mark.parametrize(
    ("book", "trading", "match"),
    [
        ("symbol,direction,quantity\nZZZ,LONG,10\n", {"capital": 1e6}, r"ZZZ has no price: no sleeve of meta profile 'meta_small'"),
        ("symbol,direction,quantity\nAAPL,LONG,10\n", None, r"a book in quantities needs the meta profile's trading.capital"),
    ],
)
def test_unpriced_or_unvalued_books_are_refused_before_any_work(tmp_path, runs_root, book, trading, match):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    from .conftest import SMALL_MANIFEST

    manifest = json.loads(SMALL_MANIFEST.read_text())
    if trading:
        manifest["profiles"]["meta_small"]["trading"] = trading
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    (tmp_path / "b.csv").write_text(book)
    with pytest.raises((DataError, ConfigError), match=match) as info:
        MetaPipeline("meta_small", manifest=path, run_id="x", runs_root=runs_root, holdings=str(tmp_path / "b.csv"))
    assert "\n" not in str(info.value) and not (runs_root / "x").exists()


def test_trading_in_an_atomic_profile_is_refused(tmp_path):
    from tradingview_scraper.manifest import load_plan

    from .conftest import SMALL_MANIFEST

    manifest = json.loads(SMALL_MANIFEST.read_text())
    manifest["profiles"]["tech"]["trading"] = {"capital": 1e6}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"profile 'tech': key 'trading' applies to meta profiles only"):
        load_plan("tech", path)


@pytest.mark.e2e
def test_a_previous_run_ending_after_this_one_is_refused_in_one_line(pm_runs, tmp_path, capsys):
    from tradingview_scraper.orchestration import cli

    from .conftest import SMALL_MANIFEST

    manifest = json.loads(SMALL_MANIFEST.read_text())
    manifest["defaults"]["data"]["end"] = "2021-05-28"  # run 'prev' ends on 2021-06-30
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    argv = ["--profile", "meta_small", "--manifest", str(path), "--runs-root", str(pm_runs["root"]),
            "--run-id", "early", "--previous-run", "prev", "--profiles", "hrp", "--no-ray", "--quiet"]  # fmt: skip
    assert cli.main(argv, prog="run_meta_pipeline.py", require_meta=True) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "previous_run 'prev': its data end on 2021-06-30, after this run's 2021-05-28" in err, err
    assert not (pm_runs["root"] / "early" / "rebalance_hrp.json").exists()


@pytest.mark.e2e
def test_report_shows_target_against_traded_book_and_the_orders(trade_runs):
    text = (trade_runs["root"] / "trade" / "report.md").read_text()
    reb = _json(trade_runs["root"] / "trade" / "rebalance_hrp.json")
    assert "Traded book and orders" in text
    assert f"{reb['orders']['n_orders']} orders, notional {reb['orders']['notional']:,.2f}" in text
    assert f"one-way turnover {reb['turnover_one_way']:.2%} (to the target: {reb['to_target']['turnover_one_way']:.2%})" in text
    assert "Left untraded:" in text and "tracking error" in text


# --------------------------------------------------------------------------- book limits and sleeve costs on a real run

#: Two sleeves share AAPL and MSFT at different frictions (tech 0.1%, tech_hi 0.5% a unit traded); KO is
#: shared by tech_hi and staples. The book caps every name at 30% and the tech group at 60%.
LIM_GROUPS = {"AAPL": "tech", "MSFT": "tech", "AMD": "tech", "KO": "staples", "PEP": "staples", "PG": "staples"}
LIM_BOOK = {"max_position": 0.3, "groups": LIM_GROUPS, "group_max": {"tech": 0.6}}
LIM_TRADING = {"capital": 1_000_000, "min_order": 1_000, "band": 0.01, "max_turnover": 0.15}
LIM_RATES = {"tech": 0.001, "tech_hi": 0.005, "staples": 0.001}
LIM_BOOK_CSV = "symbol,direction,weight\nAAPL,LONG,0.5\nKO,LONG,0.2\nPEP,LONG,0.1\n"


def _lim_manifest(max_turnover=LIM_TRADING["max_turnover"]) -> dict:
    from .conftest import SMALL_MANIFEST

    m = json.loads(SMALL_MANIFEST.read_text())
    m["profiles"]["tech_hi"] = {"universe": {"symbols": ["AAPL", "MSFT", "KO"]},
                                "backtest": {"commission": 0.003, "slippage": 0.002}}  # fmt: skip
    m["profiles"]["meta_lt"] = {
        "sleeves": [{"id": s, "profile": s} for s in ("tech", "tech_hi", "staples")],
        "meta_allocation": {"min_weight": 0.1, "max_weight": 0.6, "book": LIM_BOOK},
        "profiles": ["equal_weight", "hrp"],
        "trading": {**LIM_TRADING, "max_turnover": max_turnover},
    }
    return m


@pytest.fixture(scope="module")
def lim_trade(tmp_path_factory):
    """One real run of ``meta_lt`` (in-process) with trading settings, book limits and a holdings file
    that breaks the 30% cap (AAPL at 50%)."""
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    base = tmp_path_factory.mktemp("limtrade")
    manifest = base / "manifest.json"
    manifest.write_text(json.dumps(_lim_manifest()))
    (base / "book.csv").write_text(LIM_BOOK_CSV)
    runs = base / "runs"
    MetaPipeline("meta_lt", manifest=manifest, run_id="lt", runs_root=runs, ray=False, holdings=str(base / "book.csv")).execute()
    return base, runs / "lt"


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["equal_weight", "hrp"])
def test_book_limits_hold_on_the_traded_book_of_a_real_run(lim_trade, profile):
    _, run = lim_trade
    reb = _json(run / f"rebalance_{profile}.json")
    net: dict[str, float] = {}
    for r in reb["rows"]:
        net[r["symbol"]] = net.get(r["symbol"], 0.0) + (1.0 if r["direction"] == "LONG" else -1.0) * r["traded_weight"]
    assert max(abs(v) for v in net.values()) <= LIM_BOOK["max_position"] + 1e-12
    assert math.fsum(v for s, v in net.items() if LIM_GROUPS.get(s) == "tech") <= 0.6 + 1e-12
    assert abs(math.fsum(r["traded_weight"] for r in reb["rows"]) + reb["cash"] - 1.0) <= 1e-12
    # The cap binds: the current book's 50% of AAPL is traded down to it, within the band and the budget.
    assert reb["book_limits"]["current_breaks"] == ["max_position AAPL (|net| 0.5 > 0.3)"]
    assert net["AAPL"] <= 0.3 + 1e-12 and reb["turnover_one_way"] <= LIM_TRADING["max_turnover"] + 1e-12
    band = max(LIM_TRADING["band"], LIM_TRADING["min_order"] / LIM_TRADING["capital"])
    for r in reb["rows"]:
        move = abs(r["traded_weight"] - r["current_weight"])
        assert move == 0.0 or r["traded_weight"] == 0.0 or move >= band - 1e-12, r
    checks = {(c["limit"], c["key"]): c for c in reb["book_limits"]["traded"]}
    assert checks[("max_position", "AAPL")]["value"] == pytest.approx(abs(net["AAPL"]), abs=1e-15)
    assert min(c["slack"] for c in checks.values()) >= -1e-12


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["equal_weight", "hrp"])
def test_each_position_costs_the_frictions_of_the_sleeves_that_drive_it(lim_trade, profile):
    """A holdings file names no sleeves: each position's rate is its sleeves' rates weighted by their target
    holdings of it (the rule of ``rebalance.sleeve_cost_rate``); orders and totals are charged at it."""
    _, run = lim_trade
    reb = _json(run / f"rebalance_{profile}.json")
    rows = {r["symbol"]: r for r in reb["rows"]}
    for r in reb["rows"]:
        t = r["target_sleeves"]
        want = math.fsum(v * LIM_RATES[s] for s, v in t.items()) / math.fsum(t.values()) if t else 0.001
        assert r["cost_rate"] == pytest.approx(want, rel=1e-12), r
    # AAPL is held by both tech sleeves: its rate lies strictly between theirs.
    assert set(rows["AAPL"]["target_sleeves"]) == {"tech", "tech_hi"} and 0.001 < rows["AAPL"]["cost_rate"] < 0.005
    assert reb["estimated_cost"] == pytest.approx(
        math.fsum(abs(r["traded_weight"] - r["current_weight"]) * r["cost_rate"] for r in reb["rows"]), rel=1e-12)
    # What trading all the way to the target would cost, at the same rates (not the root's alone).
    to_target = math.fsum(abs(r["trade"]) * r["cost_rate"] for r in reb["rows"])
    assert reb["to_target"]["estimated_cost"] == pytest.approx(to_target, rel=1e-12)
    assert reb["to_target"]["estimated_cost"] > reb["to_target"]["traded"] * reb["cost_rate"]
    with open(run / f"orders_{profile}.csv", newline="") as fh:
        for o in csv.DictReader(fh):
            assert float(o["est_cost"]) == pytest.approx(float(o["notional"]) * rows[o["symbol"]]["cost_rate"], rel=1e-12)
    text = (run / "report.md").read_text()
    assert "The traded book holds the root's book limits" in text and "max_position AAPL" in text


def test_sleeve_cost_rate_weights_each_sleeve_by_its_change():
    from tradingview_scraper.rebalance import sleeve_cost_rate

    rates = {"a": 0.001, "b": 0.005}
    # A previous run: a's holding grows by 0.1, b's falls by 0.3 (after a drift of x2): 0.1 at 0.001, 0.3 at 0.005.
    row = {"current_weight": 0.4, "target_weight": 0.2, "target_sleeves": {"a": 0.2},
           "current_sleeves": {"a": 0.05, "b": 0.15}, "current_scale": 2.0}  # fmt: skip
    assert sleeve_cost_rate(row, rates, 0.002) == pytest.approx((0.1 * 0.001 + 0.3 * 0.005) / 0.4, rel=1e-15)
    # A holdings file: the current weight is read as held in the target's proportions.
    row = {"current_weight": 0.1, "target_weight": 0.4, "target_sleeves": {"a": 0.1, "b": 0.3}, "current_sleeves": None}
    assert sleeve_cost_rate(row, rates, 0.002) == pytest.approx((0.1 * 0.001 + 0.3 * 0.005) / 0.4, rel=1e-15)
    # A position no sleeve holds on either side (a holdings file's close): the root's rate.
    row = {"current_weight": 0.1, "target_weight": 0.0, "target_sleeves": {}, "current_sleeves": None}
    assert sleeve_cost_rate(row, rates, 0.002) == 0.002
    # The drift alone (no sleeve's holding changes): weighted by the holdings.
    row = {"current_weight": 0.3, "target_weight": 0.3, "target_sleeves": {"a": 0.1, "b": 0.2},
           "current_sleeves": {"a": 0.1, "b": 0.2}}  # fmt: skip
    assert sleeve_cost_rate(row, rates, 0.002) == pytest.approx((0.1 * 0.001 + 0.2 * 0.005) / 0.3, rel=1e-15)


@pytest.mark.e2e
def test_limits_no_traded_book_can_meet_are_refused_in_one_line(lim_trade, capsys):
    """The same run with a budget too small to bring AAPL down to its cap: the rebalance stops in one line."""
    from tradingview_scraper.orchestration import cli

    base, run = lim_trade
    manifest = base / "manifest_tight.json"
    manifest.write_text(json.dumps(_lim_manifest(max_turnover=0.05)))
    argv = ["--profile", "meta_lt", "--manifest", str(manifest), "--runs-root", str(run.parent), "--run-id", "lt",
            "--holdings", str(base / "book.csv"), "--profiles", "equal_weight,hrp", "--no-ray", "--quiet"]  # fmt: skip
    assert cli.main(argv, prog="run_meta_pipeline.py", require_meta=True) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "no traded book within the band and the turnover budget meets the root's book limits" in err, err
    assert "max_position AAPL (|net| 0.5 > 0.3)" in err and "raise trading.max_turnover" in err, err


# --------------------------------------------------------------------------- an external sleeve's prices (meta_custom)

CUSTOM_TRADING = {"capital": 1_000_000, "lot_size": {"*": 1, "SPY": 10}, "min_order": 1_000, "band": 0.005}
CUSTOM_BOOK = "symbol,direction,quantity\nSPY,LONG,1000\nAAPL,LONG,500\nTLT,SHORT,3000\n"


def _custom_manifest(prices: str | None) -> dict:
    """The shipped ``meta_custom`` with a trading block and, with ``prices``, its external sleeve's price table."""
    from .conftest import PROJECT

    m = json.loads((PROJECT / "config" / "manifest.json").read_text())
    prof = m["profiles"]["meta_custom"]
    prof["trading"] = dict(CUSTOM_TRADING)
    if prices is not None:
        trend = next(s for s in prof["sleeves"] if "external" in s)
        trend["external"]["prices"] = prices
    return m


@pytest.fixture(scope="module")
def custom_trade(tmp_path_factory):
    """One real run of the shipped ``meta_custom`` (in-process) with trading settings, the external trend
    sleeve priced by a copy of the SYNTHETIC price table, and a book in quantities holding its symbols."""
    import shutil

    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    from .conftest import PROJECT

    base = tmp_path_factory.mktemp("custom")
    table = base / "trend_prices.csv"
    shutil.copy2(PROJECT / "data" / "external" / "SYNTHETIC_trend_prices.csv", table)
    manifest = base / "manifest.json"
    manifest.write_text(json.dumps(_custom_manifest(str(table))))
    (base / "book.csv").write_text(CUSTOM_BOOK)
    kw = {"manifest": manifest, "runs_root": base / "runs", "ray": False, "holdings": str(base / "book.csv")}
    MetaPipeline("meta_custom", run_id="c", **kw).execute()
    return {"base": base, "table": table, "kw": kw, "run": base / "runs" / "c"}


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["equal_weight", "cvar"])
def test_an_external_sleeves_price_table_values_and_orders_its_symbols(custom_trade, profile):
    import pandas as pd

    table = pd.read_csv(custom_trade["table"], index_col="date")
    reb = _json(custom_trade["run"] / f"rebalance_{profile}.json")
    rows = {(r["symbol"], r["direction"]): r for r in reb["rows"]}
    for (symbol, direction), q in ((("SPY", "LONG"), 1000), (("TLT", "SHORT"), 3000)):
        r = rows[(symbol, direction)]
        assert r["price"] == float(table[symbol].iloc[-1]) and r["price_date"] == "2022-12-30"
        assert r["current_quantity"] == q and r["current_weight"] == q * r["price"] / CUSTOM_TRADING["capital"]
        assert r["target_sleeves"] == {"trend": r["target_weight"]}
    for symbol in ("GLD", "USO"):  # held by the target only: bought at the table's prices
        assert rows[(symbol, "LONG")]["price"] == float(table[symbol].iloc[-1])
    with open(custom_trade["run"] / f"orders_{profile}.csv", newline="") as fh:
        orders_ = {(o["symbol"], o["side"]): o for o in csv.DictReader(fh)}
    assert {("GLD", "BUY"), ("USO", "BUY")} <= set(orders_)
    assert any(s == "TLT" and side in {"SELL_SHORT", "BUY_TO_COVER"} for s, side in orders_)
    spy = [o for (s, _), o in orders_.items() if s == "SPY"]
    assert all(float(o["quantity"]) % 10 == 0 for o in spy)
    assert abs(math.fsum(r["traded_weight"] for r in reb["rows"]) + reb["cash"] - 1.0) <= 1e-12
    prov = _json(custom_trade["run"] / "sleeves" / "trend" / "provenance.json")
    assert prov["prices"] == str(custom_trade["table"]) and str(custom_trade["table"]) in prov["sha256"]


@pytest.mark.e2e
def test_new_bytes_of_the_price_table_rerun_the_external_sleeve_and_the_rebalance(custom_trade):
    """An edit of the price table with its mtime put back reruns the sleeve that reads it and the rebalance."""
    import os

    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    table, stat = custom_trade["table"], custom_trade["table"].stat()
    lines = table.read_text().splitlines(keepends=True)
    last = lines[-1].split(",")
    last[1] = f"{float(last[1]) * 2:.4f}"  # SPY's last price doubles
    lines[-1] = ",".join(last)
    table.write_text("".join(lines))
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ran = {j.rule for j in MetaPipeline("meta_custom", run_id="c", **custom_trade["kw"]).execute().jobs}
    assert {"external_sleeve", "rebalance", "orders", "report"} <= ran, ran
    reb = _json(custom_trade["run"] / "rebalance_equal_weight.json")
    spy = next(r for r in reb["rows"] if r["symbol"] == "SPY")
    assert spy["price"] == float(last[1])


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        (None, r"sleeve 'trend'.* holds SPY, which has no price: give its external block a price table, \"prices\": \"path\""),
        ("cut", r"holds TLT, which has no price: its price table .*cut.csv has no column 'TLT'; add one"),
    ],
)
def test_trading_an_unpriced_external_symbol_is_refused_before_any_work(tmp_path, runs_root, prices, match):
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    from .conftest import PROJECT

    if prices == "cut":
        src = (PROJECT / "data" / "external" / "SYNTHETIC_trend_prices.csv").read_text().splitlines()
        prices = str(tmp_path / "cut.csv")
        (tmp_path / "cut.csv").write_text("".join(",".join(line.split(",")[:4]) + "\n" for line in src))
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_custom_manifest(prices)))
    (tmp_path / "b.csv").write_text(CUSTOM_BOOK)
    with pytest.raises(DataError, match=match) as info:
        MetaPipeline("meta_custom", manifest=path, run_id="x", runs_root=runs_root, holdings=str(tmp_path / "b.csv"))
    assert "\n" not in str(info.value) and not (runs_root / "x").exists()
