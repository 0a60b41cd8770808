"""The meta layer: inner join, bounded allocation, exact flattening."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradingview_scraper.errors import ConservationError, DataError
from tradingview_scraper.flattening import flatten
from tradingview_scraper.meta import aligned_returns, meta_optimize, meta_returns


def _series(dates, values, name):
    return pd.Series(values, index=pd.DatetimeIndex(dates), name=name)


def test_meta_returns_compounds_weekends_into_the_next_common_date():
    weekdays = pd.bdate_range("2024-01-01", periods=30)
    every_day = pd.date_range("2024-01-01", periods=42)
    crypto = _series(every_day, np.linspace(-0.01, 0.01, 42), "crypto")
    equity = _series(weekdays, np.linspace(0.01, -0.01, 30), "equity")
    frame, cal = aligned_returns({"crypto": crypto, "equity": equity}, min_obs=10)
    assert list(frame.index) == list(weekdays), "only common dates: weekends not padded"
    assert not frame.isna().any().any()
    np.testing.assert_allclose(frame["equity"], equity.loc[weekdays], rtol=0, atol=0)
    # Monday 2024-01-08 carries Saturday's and Sunday's crypto returns: nothing is dropped.
    sat, sun, mon = (crypto[pd.Timestamp(d)] for d in ("2024-01-06", "2024-01-07", "2024-01-08"))
    assert frame.loc["2024-01-08", "crypto"] == pytest.approx((1 + sat) * (1 + sun) * (1 + mon) - 1, abs=1e-15)
    assert frame.loc["2024-01-05", "crypto"] == crypto[pd.Timestamp("2024-01-05")], "a weekday stays as it is"
    assert cal["common_dates"] == 30 and (cal["start"], cal["end"]) == ("2024-01-01", "2024-02-09")
    # 2024-01-01 .. 2024-02-09 holds 40 calendar days, 30 of them common; 2 crypto days follow the span.
    assert cal["sleeves"]["crypto"] == {"periods": 42, "compounded": 10, "before_span": 0, "after_span": 2}
    assert cal["sleeves"]["equity"] == {"periods": 30, "compounded": 0, "before_span": 0, "after_span": 0}


def test_meta_returns_the_first_common_date_starts_the_span():
    crypto = _series(pd.date_range("2023-12-28", periods=20), np.full(20, 0.01), "crypto")
    equity = _series(pd.bdate_range("2024-01-02", periods=10), np.full(10, 0.002), "equity")
    frame, cal = aligned_returns({"crypto": crypto, "equity": equity}, min_obs=5)
    assert frame.index[0] == pd.Timestamp("2024-01-02")
    assert frame["crypto"].iloc[0] == 0.01, "days before the first common date are not folded into it"
    assert cal["sleeves"]["crypto"]["before_span"] == 5


def _assert_compounding_property(frame: pd.DataFrame, streams: dict[str, pd.Series]) -> None:
    """prod(1 + meta column) == prod(1 + own returns) over the common span, to 1e-12."""
    start, end = frame.index[0], frame.index[-1]
    for sid, own in streams.items():
        span = own.loc[start:end]
        want = float(np.prod(1.0 + span.to_numpy()))
        got = float(np.prod(1.0 + frame[sid].to_numpy()))
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (sid, got, want)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_meta_returns_compounding_property(seed, n):
    rng = np.random.default_rng(seed)
    days = pd.date_range("2024-01-01", periods=200)
    streams = {}
    for i in range(n):  # each sleeve keeps a random ~70% of the days, all keep every 5th
        keep = (rng.random(len(days)) < 0.7) | (np.arange(len(days)) % 5 == 0)
        idx = days[keep]
        streams[f"s{i}"] = _series(idx, rng.normal(0.0, 0.03, len(idx)), f"s{i}")
    frame, calendar = aligned_returns(streams, min_obs=10)
    _assert_compounding_property(frame, streams)
    pd.testing.assert_frame_equal(meta_returns(streams, min_obs=10), frame)
    cal = calendar["sleeves"]
    for sid, own in streams.items():
        c = cal[sid]
        assert c["compounded"] + len(frame) + c["before_span"] + c["after_span"] == len(own)


def test_meta_returns_too_little_overlap_is_an_error():
    a = _series(pd.bdate_range("2024-01-01", periods=20), np.zeros(20), "a")
    b = _series(pd.bdate_range("2024-01-15", periods=20), np.zeros(20), "b")
    with pytest.raises(DataError, match=r"share only 10 common dates, fewer than the 30"):
        meta_returns({"a": a, "b": b}, min_obs=30)


@pytest.mark.parametrize("profile", ["equal_weight", "min_variance", "hrp", "risk_parity", "inverse_volatility"])
def test_meta_weights_respect_bounds(profile):
    rng = np.random.default_rng(0)
    idx = pd.bdate_range("2020-01-01", periods=300)
    vols = np.array([0.002, 0.01, 0.02, 0.04])
    R = pd.DataFrame(rng.normal(0.0003, vols, size=(300, 4)), index=idx, columns=list("abcd"))
    record, stream, _ = meta_optimize(R, profile, min_weight=0.1, max_weight=0.4, train_window=100, test_window=20)
    w = np.array(list(record["weights"].values()))
    assert w.sum() == pytest.approx(1, abs=1e-9)
    assert (w >= 0.1 - 1e-9).all() and (w <= 0.4 + 1e-9).all()
    assert len(stream) == 200 and stream.index[0] == idx[100], "stream starts after the first train window"
    assert record["walk_forward"]["windows_attempted"] == 10


def test_flatten_hand_computed_btc_in_two_sleeves():
    holdings = {
        "crypto": [{"symbol": "BTC", "direction": "LONG", "weight": 0.5}, {"symbol": "ETH", "direction": "LONG", "weight": 0.5}],
        "mixed": [
            {"symbol": "BTC", "direction": "LONG", "weight": 0.25},
            {"symbol": "BTC", "direction": "SHORT", "weight": 0.25},
            {"symbol": "SPY", "direction": "LONG", "weight": 0.5},
        ],
    }
    out = flatten({"crypto": 0.6, "mixed": 0.4}, holdings)
    rows = {(r["symbol"], r["direction"]): r for r in out["weights"]}
    assert rows[("BTC", "LONG")]["weight"] == pytest.approx(0.6 * 0.5 + 0.4 * 0.25)
    assert rows[("BTC", "LONG")]["sleeves"] == pytest.approx({"crypto": 0.3, "mixed": 0.1})
    assert rows[("BTC", "SHORT")]["net_weight"] == pytest.approx(-0.1), "LONG and SHORT kept as two rows"
    assert out["gross"] == pytest.approx(1.0, abs=1e-12)
    assert out["net"] == pytest.approx(0.8) and out["short"] == pytest.approx(0.1)


def test_flatten_refuses_leaking_sleeves():
    with pytest.raises(ConservationError, match=r"sleeve 'b': asset weights sum to 0.9"):
        flatten({"a": 0.5, "b": 0.5}, {"a": [{"symbol": "X", "direction": "LONG", "weight": 1.0}],
                                       "b": [{"symbol": "Y", "direction": "LONG", "weight": 0.9}]})
    with pytest.raises(ConservationError, match=r"meta weights sum to"):
        flatten({"a": 0.7, "b": 0.5}, {"a": [{"symbol": "X", "direction": "LONG", "weight": 1.0}],
                                       "b": [{"symbol": "Y", "direction": "LONG", "weight": 1.0}]})


@st.composite
def _trees(draw):
    n = draw(st.integers(2, 6))
    raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n)))
    meta = dict(zip([f"s{i}" for i in range(n)], raw / raw.sum(), strict=True))
    holdings = {}
    for sid in meta:
        k = draw(st.integers(1, 5))
        syms = draw(st.lists(st.sampled_from(["A", "B", "C", "D", "E", "F"]), min_size=k, max_size=k, unique=True))
        dirs = draw(st.lists(st.sampled_from(["LONG", "SHORT"]), min_size=k, max_size=k))
        w = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k)))
        w = w / w.sum()
        holdings[sid] = [{"symbol": s, "direction": d, "weight": float(x)} for s, d, x in zip(syms, dirs, w, strict=True)]
    return meta, holdings


@settings(max_examples=200, deadline=None)
@given(_trees())
def test_flatten_conserves_weight_on_random_trees(tree):
    meta, holdings = tree
    out = flatten(meta, holdings)
    assert abs(sum(r["weight"] for r in out["weights"]) - 1.0) <= 1e-9
    for row in out["weights"]:
        assert abs(sum(row["sleeves"].values()) - row["weight"]) <= 1e-12
        expected = sum(meta[s] * h["weight"] for s in meta for h in holdings[s]
                       if (h["symbol"], h["direction"]) == (row["symbol"], row["direction"]))
        assert row["weight"] == pytest.approx(expected, abs=1e-12)
        assert np.sign(row["net_weight"]) == (-1 if row["direction"] == "SHORT" else 1)
