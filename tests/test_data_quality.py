"""The data-quality detectors of a sleeve's prices and the risk stage's fallbacks, on small tables.

Each detector is tried at its threshold's edge (one period inside: nothing; one beyond:
named), and through :func:`checked_prices` on real files, whose refusal is one line naming
the symbol, the file and the dates. Real runs of the same cases: ``test_data_quality_runs.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.data import (
    DATA_QUALITY_DEFAULTS,
    checked_prices,
    data_quality_policy,
    quality_findings,
)
from tradingview_scraper.errors import ConfigError, DataError
from tradingview_scraper.risk import common_date_returns, euler_contributions, interval_returns

from .conftest import PROJECT
from .helpers import prices, write_tradingview_export


def _series(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {c: frame[c].dropna() for c in frame.columns}


def _files(frame: pd.DataFrame) -> dict[str, str]:
    return {c: f"{c.lower()}.csv" for c in frame.columns}


def _find(frame: pd.DataFrame, direction: str = "LONG", **policy) -> list[dict]:
    full = data_quality_policy({"data_quality": policy})
    return quality_findings(_series(frame), _files(frame), full, direction=direction)


# ----------------------------------------------------------------------------- ragged history


def test_a_dying_symbol_is_refused_by_default_naming_symbol_file_and_date(tmp_path):
    """The issue's case: one symbol without prices after row 300 of 520 would end the whole sleeve there."""
    frame = prices(["AAA", "BBB", "CCC"], n=520).astype(object)
    frame.iloc[300:, 0] = ""
    path = tmp_path / "a.csv"
    frame.to_csv(path)
    last = frame.index[299].date().isoformat()
    with pytest.raises(DataError, match=(
        rf"^data refused by health\.data_quality\.ragged_history: symbol 'AAA' \({path}\) has no price after "
        rf"{last} while the other symbols run to {frame.index[-1].date()} \(220 more dates, .*the inner join would "
        rf'end the whole sleeve on {last}; set health\.data_quality\.ragged_history to "warn" to accept it$'
    )):  # fmt: skip
        checked_prices({"source": "table", "path": str(path)})
    joined, found = checked_prices(
        {"source": "table", "path": str(path)}, health={"data_quality": {"ragged_history": "warn"}}
    )
    assert len(joined) == 300 and [(f["check"], f["symbol"], f["end"]) for f in found] == [
        ("ragged_history", "AAA", frame.index[-1].date().isoformat())
    ]
    assert found[0]["file"] == str(path) and found[0]["start"] == last


def test_ragged_edges_at_the_threshold():
    frame = prices(["AAA", "BBB"], n=60)
    gap = DATA_QUALITY_DEFAULTS["max_edge_gap"]
    inside, beyond = frame.copy(), frame.copy()
    inside.iloc[-gap:, 0] = np.nan  # ends max_edge_gap dates early: accepted
    beyond.iloc[: gap + 1, 1] = np.nan  # starts one date later than that: named
    assert _find(inside) == []
    (f,) = _find(beyond)
    assert (f["check"], f["action"], f["symbol"], f["start"], f["end"]) == (
        "ragged_history", "error", "BBB", frame.index[0].date().isoformat(), frame.index[gap + 1].date().isoformat(),
    )  # fmt: skip
    assert "has no price before" in f["message"] and "would start the whole sleeve" in f["message"]
    assert _find(beyond, max_edge_gap=gap + 1) == [] and _find(beyond, ragged_history="off") == []


# ----------------------------------------------------------------------------- stale and halted


def test_a_halted_stock_is_refused_and_an_old_stale_run_warned():
    frame = prices(["AAA", "BBB"], n=120)
    run = DATA_QUALITY_DEFAULTS["max_stale_run"]
    halted, old, inside = frame.copy(), frame.copy(), frame.copy()
    halted.iloc[-(run + 1) :, 0] = halted.iloc[-(run + 2), 0]  # run + 1 unchanged periods to the end
    old.iloc[10 : 10 + run + 2, 1] = old.iloc[10, 1]
    inside.iloc[-run - 1 :, 0] = inside.iloc[-run - 1, 0]  # exactly max_stale_run unchanged periods
    (h,) = _find(halted)
    assert (h["check"], h["action"], h["symbol"], h["end"]) == ("halted", "error", "AAA", frame.index[-1].date().isoformat())
    assert f"({run + 1} unchanged periods" in h["message"] and "to the sleeve's last date" in h["message"]
    assert [f["check"] for f in _find(pd.concat([old.iloc[:, [1]], halted.iloc[:, [0]]], axis=1))] == ["stale_prices", "halted"]
    (s,) = _find(old)
    assert (s["check"], s["action"], s["symbol"]) == ("stale_prices", "warn", "BBB")
    assert (s["start"], s["end"]) == (frame.index[10].date().isoformat(), frame.index[11 + run].date().isoformat())
    assert _find(inside) == []


# ----------------------------------------------------------------------------- jumps


def test_jumps_beyond_max_jump_and_a_short_wipe_out():
    frame = prices(["AAA", "BBB"], n=60)
    slip = frame.copy()
    slip.iloc[30:32, 0] *= 100  # a decimal slip and back
    (f,) = _find(slip)
    assert (f["check"], f["action"], f["symbol"]) == ("price_jumps", "warn", "AAA")
    assert (f["start"], f["end"]) == (frame.index[29].date().isoformat(), frame.index[32].date().isoformat())
    assert f"to {slip.iloc[30, 0]:g} on {frame.index[30].date()} (x99.6)" in f["message"] and "(x0.01)" in f["message"]
    double = frame.copy()
    double.iloc[40:, 1] *= 2.5  # +150% in one period: fine for a LONG, the end of a SHORT
    assert _find(double) == []
    (w,) = _find(double, direction="SHORT")
    assert w["symbol"] == "BBB" and "wipes out a SHORT position" in w["message"]
    assert _find(double, direction="SHORT", price_jumps="off") == []


# ----------------------------------------------------------------------------- timestamps


def test_daily_bars_near_midnight_are_named_and_exchange_hours_are_not(tmp_path):
    days = pd.bdate_range("2021-01-04", periods=80)
    closes = prices(["X"], n=80)["X"].to_numpy()
    write_tradingview_export(tmp_path, "LATE", days - pd.Timedelta(hours=1), closes)  # 23:00 the day before
    mixed = days + pd.to_timedelta(np.where(np.arange(80) % 2, 1, 0), unit="h")  # 00:00 and 01:00
    write_tradingview_export(tmp_path, "MIXED", mixed, closes)
    write_tradingview_export(tmp_path, "OPEN", days + pd.Timedelta(hours=14, minutes=30), closes)
    write_tradingview_export(tmp_path, "MID", days, closes)
    _, found = checked_prices({"source": "tradingview", "path": str(tmp_path)})
    assert [(f["check"], f["symbol"]) for f in found] == [("shifted_timestamps", "LATE"), ("shifted_timestamps", "MIXED")]
    late, mix = found
    assert late["file"] == str(tmp_path / "BINANCE_LATE, 1D.csv") and "80 of 80 daily bars stamped at 23:00" in late["message"]
    assert late["start"] == "2021-01-03T23:00:00" and "40 of 80 daily bars stamped at 01:00, 40 at midnight" in mix["message"]
    with pytest.raises(DataError, match=r"shifted_timestamps: symbol 'LATE' \(.*BINANCE_LATE, 1D\.csv\) has 80 of 80"):
        checked_prices({"source": "tradingview", "path": str(tmp_path)}, health={"data_quality": {"shifted_timestamps": "error"}})


# ----------------------------------------------------------------------------- policy and shipped data


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ({"ragged": "warn"}, r"health\.data_quality has unknown key\(s\) 'ragged'; valid keys are 'ragged_history'"),
        ({"halted": "ignore"}, r"health\.data_quality\.halted is 'ignore'; valid actions are 'error', 'warn', 'off'"),
        ({"max_stale_run": 0}, r"health\.data_quality\.max_stale_run is 0; expected an integer >= 1"),
        ({"max_edge_gap": 2.5}, r"health\.data_quality\.max_edge_gap is 2\.5; expected an integer >= 1"),
        ({"max_jump": 1}, r"health\.data_quality\.max_jump is 1; expected a price ratio > 1"),
    ],
)
def test_an_invalid_policy_is_refused(block, needle):
    with pytest.raises(ConfigError, match=needle):
        data_quality_policy({"data_quality": block})


def test_the_manifest_schema_holds_the_policy(tmp_path):
    from tradingview_scraper.manifest import load_plan

    m = json.loads((PROJECT / "tests" / "data" / "manifest_small.json").read_text())
    m["defaults"]["health"] = {"data_quality": {"halted": "warn", "max_jump": 3}}
    good = tmp_path / "good.json"
    good.write_text(json.dumps(m))
    assert load_plan("tech", good).root.config["health"]["data_quality"] == {"halted": "warn", "max_jump": 3}
    m["defaults"]["health"] = {"data_quality": {"halted": "maybe"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"health\.data_quality\.halted"):
        load_plan("tech", bad)


def test_embedded_and_shipped_data_pass_and_the_one_stale_run_of_sp500_is_only_warned():
    """The pass leaves every shipped profile's results as they were: it finds nothing in their data.

    skfolio's sp500 holds stale runs (RRC, thinly traded in 1990-1992: 13 runs of more than 10
    unchanged closes), before every shipped profile's start: named, not refused, when a profile
    reaches back that far.
    """
    from tradingview_scraper.manifest import load_plan

    _, found = checked_prices({"source": "skfolio", "dataset": "sp500"})
    assert [(f["check"], f["symbol"], f["start"], f["end"]) for f in found] == [
        ("stale_prices", "RRC", "1990-01-02", "1992-05-27")
    ]
    assert "is constant at 3.322 from 1990-01-02 to 1990-04-09 (68 unchanged periods);" in found[0]["message"]
    assert "and 10 more such runs" in found[0]["message"]
    assert checked_prices({"source": "skfolio", "dataset": "factors"})[1] == []
    manifest = json.loads((PROJECT / "config" / "manifest.json").read_text())
    seen = set()
    for name in manifest["profiles"]:
        if name == "meta_pinned":  # its pinned sleeve needs a run first; its data is tech's
            continue
        for spec in load_plan(name).atomic_nodes():
            if spec.profile in seen:
                continue
            seen.add(spec.profile)
            c = spec.config
            _, found = checked_prices(
                c["data"], c["universe"].get("symbols"), base_dir=PROJECT, health=c["health"],
                direction=c["universe"].get("direction", "LONG"),
            )  # fmt: skip
            assert found == [], (spec.profile, found)
    assert {"tech", "short_energy", "crypto_tv", "equity_tv"} <= seen


# ----------------------------------------------------------------------------- risk fallbacks


def test_euler_contributions_of_a_halted_position_fall_back_and_name_it():
    """Today skfolio refuses a zero variance (``NonPositiveVarianceError ... indices [1]``)."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(0, 0.01, (40, 3)), columns=["A LONG", "H LONG", "C LONG"])
    x["H LONG"] = 0.0
    w = pd.Series({"A LONG": 0.5, "H LONG": 0.3, "C LONG": 0.2})
    res = euler_contributions(x, w)
    assert res["zero_variance"] == ["H LONG"] and res["positions"]["H LONG"]["contribution"] == 0.0
    rest = euler_contributions(x[["A LONG", "C LONG"]], w[["A LONG", "C LONG"]])
    np.testing.assert_allclose(res["volatility"], rest["volatility"], rtol=1e-14)
    np.testing.assert_allclose(sum(p["contribution"] for p in res["positions"].values()), res["volatility"], rtol=1e-12)
    assert "zero_variance" not in rest
    flat = euler_contributions(x[["H LONG"]], w[["H LONG"]])
    assert flat["volatility"] == 0.0 and flat["zero_variance"] == ["H LONG"]


def test_interval_returns_equal_the_wealth_path_and_stay_defined_after_a_wipe_out():
    r = pd.Series(np.random.default_rng(1).normal(0, 0.01, 30), index=pd.bdate_range("2021-01-05", periods=30), name="X")
    wealth = pd.concat([pd.Series([1.0], index=[pd.Timestamp("2021-01-04")]), (1 + r).cumprod()])
    dates = wealth.index[[4, 5, 9, 10, 20, 30]]
    np.testing.assert_allclose(interval_returns(r, dates), common_date_returns(wealth, dates), rtol=1e-12, atol=1e-15)
    r.iloc[12] = -1.0  # a SHORT wiped out: the wealth path is 0 from here on
    wiped = pd.concat([pd.Series([1.0], index=[pd.Timestamp("2021-01-04")]), (1 + r).cumprod()])
    assert not np.isfinite(common_date_returns(wiped, dates)).all()
    got = interval_returns(r, dates)
    assert np.isfinite(got).all() and got.iloc[3] == -1.0
    with pytest.raises(DataError, match=r"X: no return on common date 2021-02-27"):
        interval_returns(r, dates.append(pd.DatetimeIndex(["2021-02-27"])))


def test_intraday_bars_count_calendar_dates_not_bars():
    """Hourly bars: a symbol starting a few hours late, or quiet for a day, is not a finding; a week is."""
    hours = pd.DatetimeIndex(
        [d + pd.Timedelta(hours=h) for d in pd.bdate_range("2021-03-01", periods=30) for h in range(9, 17)]
    )
    frame = pd.DataFrame(
        100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.002, (len(hours), 2)), axis=0)),
        index=hours, columns=["AAA", "BBB"],
    )  # fmt: skip
    late = frame.copy()
    late.iloc[:3, 1] = np.nan  # three bars later, the same date
    late.iloc[40:60, 0] = late.iloc[40, 0]  # 20 unchanged bars over 3 dates
    assert _find(late) == []
    halted = frame.copy()
    halted.iloc[-12 * 8 :, 0] = halted.iloc[-12 * 8, 0]
    (h,) = _find(halted)
    assert h["check"] == "halted" and "(unchanged over 11 dates, 95 bars," in h["message"]
