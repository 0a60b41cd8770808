"""End-to-end long/short meta run: SHORT sleeves carry direction SHORT and negative net weights."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.backtest import walk_forward
from tradingview_scraper.data import load_prices, prices_to_returns
from tradingview_scraper.manifest import load_plan
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import SMALL_MANIFEST

# Every test here runs a real workflow or a Ray cluster (the full tier, not make test-fast).
pytestmark = pytest.mark.e2e

PROFILES = ["equal_weight", "min_variance", "hrp"]
LONG, SHORT = ["tech", "staples"], "energy_short"
SHORT_SYMBOLS = {"CVX", "XOM", "RRC"}


@pytest.fixture(scope="module")
def ls_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = MetaPipeline("meta_long_short", manifest=SMALL_MANIFEST, run_id="ls", runs_root=root, ray=False).execute()
    return result.run_dir


def _json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_sleeve_weights_carry_direction(ls_run, profile):
    short = _json(ls_run / f"sleeves/{SHORT}/weights_{profile}.json")
    assert short["direction"] == "SHORT" and short["weights"]
    assert {r["symbol"] for r in short["weights"]} <= SHORT_SYMBOLS
    for row in short["weights"]:
        assert row["direction"] == "SHORT" and row["weight"] > 0
        assert row["net_weight"] == pytest.approx(-row["weight"], abs=0) and row["net_weight"] < 0
    for sid in LONG:
        rows = _json(ls_run / f"sleeves/{sid}/weights_{profile}.json")["weights"]
        assert all(r["direction"] == "LONG" and r["net_weight"] == r["weight"] > 0 for r in rows)


@pytest.mark.parametrize("profile", PROFILES)
def test_flattened_short_assets_have_negative_net_weight(ls_run, profile):
    flat = _json(ls_run / f"flattened_{profile}.json")
    sw = flat["sleeve_weights"]
    inner = {r["symbol"]: r["weight"] for r in _json(ls_run / f"sleeves/{SHORT}/weights_{profile}.json")["weights"]}
    shorts = [r for r in flat["weights"] if r["direction"] == "SHORT"]
    assert {r["symbol"] for r in shorts} == set(inner)
    for row in shorts:
        assert row["net_weight"] < 0
        assert row["net_weight"] == pytest.approx(-sw[SHORT] * inner[row["symbol"]], abs=1e-12)
        assert set(row["sleeves"]) == {SHORT}
    longs = [r for r in flat["weights"] if r["direction"] == "LONG"]
    assert longs and all(r["net_weight"] > 0 and r["symbol"] not in SHORT_SYMBOLS for r in longs)
    assert flat["gross"] == pytest.approx(1, abs=1e-9)
    assert flat["short"] == pytest.approx(sw[SHORT], abs=1e-9)
    assert flat["net"] == pytest.approx(1 - 2 * sw[SHORT], abs=1e-9)
    assert sum(r["net_weight"] for r in flat["weights"]) == pytest.approx(flat["net"], abs=1e-9)


def test_sign_test_persisted_in_the_sleeve_dir(ls_run):
    record = _json(ls_run / f"sleeves/{SHORT}/sign_test.json")
    assert record["passed"] is True and record["direction"] == "SHORT"
    assert record["inputs"]["max_abs_error"] == 0.0 and record["inputs"]["corr_raw_vs_used"] < 0
    assert set(record["streams"]) == set(PROFILES)
    for rp, s in record["streams"].items():
        assert s["passed"] and s["corr_stream_vs_raw_basket"] < -0.9, rp
    long_record = _json(ls_run / "sleeves/tech/sign_test.json")
    assert long_record["direction"] == "LONG" and long_record["passed"]
    assert all(s["corr_stream_vs_raw_basket"] > 0.9 for s in long_record["streams"].values())


def _raw_returns():
    spec = load_plan("meta_long_short", SMALL_MANIFEST).nodes[f"sleeves/{SHORT}"]
    cfg = spec.config
    return prices_to_returns(load_prices(cfg["data"], cfg["universe"]["symbols"])), cfg["backtest"]


def test_short_stream_is_the_inverted_basket(ls_run):
    raw, bt = _raw_returns()
    stream = pd.read_parquet(ls_run / f"sleeves/{SHORT}/returns.parquet")
    assert list(stream.columns) == PROFILES
    syn = -np.minimum(raw.to_numpy(), 1.0)
    cost = bt["commission"] + bt["slippage"]
    # equal weight, computed here from raw prices: mean of -min(r, 1), cost on the first day only
    expected = pd.Series(syn.mean(axis=1), index=raw.index).loc[stream.index]
    expected.iloc[0] -= cost
    np.testing.assert_allclose(stream["equal_weight"], expected, rtol=0, atol=1e-12)
    # the optimized profiles walked forward on the synthetic-long returns, not on raw ones
    syn_frame = pd.DataFrame(syn, index=raw.index, columns=raw.columns)
    kw = {"train_window": bt["train_window"], "test_window": bt["test_window"], "cost_rate": cost}
    for rp in ("min_variance", "hrp"):
        on_syn = walk_forward(syn_frame, rp, **kw).returns
        np.testing.assert_allclose(stream[rp], on_syn.loc[stream.index], rtol=0, atol=1e-10)
        on_raw = walk_forward(raw, rp, **kw).returns
        assert np.corrcoef(stream[rp], on_raw.loc[stream.index])[0, 1] < -0.9


@pytest.mark.parametrize("profile", PROFILES)
def test_meta_layer_consumes_the_inverted_stream(ls_run, profile):
    meta = pd.read_parquet(ls_run / f"meta/returns_{profile}.parquet")
    sleeve = pd.read_parquet(ls_run / f"sleeves/{SHORT}/returns.parquet")[profile]
    np.testing.assert_array_equal(meta[SHORT].to_numpy(), sleeve.loc[meta.index].to_numpy())
