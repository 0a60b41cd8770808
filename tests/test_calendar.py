"""Mixed calendars on a real run: a 24x7 crypto sleeve with 5-day equity sleeves.

The meta layer aligns sleeves on their common dates and compounds every other period into
the next common date: no weekend P&L is lost. And inverse volatility, which skfolio cannot
bound, is projected exactly onto the sleeve bounds in every walk-forward window.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.backtest import walk_forward
from tradingview_scraper.layout import read_parquet_metadata
from tradingview_scraper.orchestration.pipeline import MetaPipeline

from .conftest import SMALL_MANIFEST
from .helpers import synthetic_crypto

pytestmark = pytest.mark.e2e

PROFILES = ["equal_weight", "inverse_volatility", "hrp"]
SLEEVES = ["tech", "staples", "crypto"]
LO, HI = 0.1, 0.4


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calendar")
    # 5% daily volatility: inverse volatility gives crypto little and staples more than 0.4.
    exports = synthetic_crypto(tmp / "tv", ["BTCUSDT", "ETHUSDT"], "2019-01-01", "2021-12-31", vol=0.05, seed=7)
    manifest = json.loads(SMALL_MANIFEST.read_text())
    manifest["profiles"]["crypto"] = {
        "data": {"source": "tradingview", "path": str(exports)},
        "universe": {"symbols": ["BTCUSDT", "ETHUSDT"]},
    }
    manifest["profiles"]["meta_calendar"] = {
        "sleeves": [{"id": s, "profile": s} for s in SLEEVES],
        "meta_allocation": {"min_weight": LO, "max_weight": HI},
        "profiles": PROFILES,
    }
    path = tmp / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    root = tmp / "runs"
    result = MetaPipeline("meta_calendar", manifest=path, run_id="cal", runs_root=root, ray=False).execute()
    return result.run_dir


def _own(run_dir, sid, profile):
    return pd.read_parquet(run_dir / "sleeves" / sid / "returns.parquet")[profile]


@pytest.mark.parametrize("profile", PROFILES)
def test_meta_returns_compound_every_sleeve_period(mixed_run, profile):
    meta = pd.read_parquet(mixed_run / f"meta/returns_{profile}.parquet")
    assert list(meta.columns) == SLEEVES and not meta.isna().any().any()
    assert (meta.index.day_of_week < 5).all(), "common dates of 5-day sleeves: no weekend is padded in"
    start, end = meta.index[0], meta.index[-1]
    for sid in SLEEVES:
        own = _own(mixed_run, sid, profile)
        want = float(np.prod(1.0 + own.loc[start:end].to_numpy()))
        got = float(np.prod(1.0 + meta[sid].to_numpy()))
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (sid, got, want)
    crypto = _own(mixed_run, "crypto", profile)
    plain = crypto.reindex(meta.index)  # what an inner join of returns kept
    dropped = crypto.loc[start:end].index.difference(meta.index)
    assert len(dropped) > 100, "the crypto sleeve trades every weekend"
    assert not np.isclose(np.prod(1.0 + plain), np.prod(1.0 + meta["crypto"]), rtol=1e-6), "an inner join loses P&L"
    cal = read_parquet_metadata(mixed_run / f"meta/returns_{profile}.parquet")["calendar"]
    assert cal["common_dates"] == len(meta)
    assert cal["sleeves"]["crypto"]["compounded"] == len(dropped)
    assert cal["sleeves"]["tech"]["compounded"] == cal["sleeves"]["staples"]["compounded"] == 0


def test_report_and_audit_count_the_compounded_periods(mixed_run):
    c = read_parquet_metadata(mixed_run / "meta/returns_hrp.parquet")["calendar"]["sleeves"]["crypto"]
    report = (mixed_run / "report.md").read_text()
    assert f"crypto {c['compounded']} of {c['periods']}" in report
    records = [json.loads(line) for line in (mixed_run / "audit.jsonl").read_text().splitlines()]
    stage = next(r for r in records if r.get("stage") == "meta_returns")
    assert stage["params"]["compounded_periods"] == {"crypto": c["compounded"]}


def test_inverse_volatility_windows_are_fully_invested_within_bounds(mixed_run):
    meta = pd.read_parquet(mixed_run / "meta/returns_inverse_volatility.parquet")
    weights = json.loads((mixed_run / "meta/weights_inverse_volatility.json").read_text())
    wf = weights["walk_forward"]
    res = walk_forward(
        meta, "inverse_volatility", train_window=wf["train_window"], test_window=wf["test_window"],
        min_weight=LO, max_weight=HI,
    )
    stream = pd.read_parquet(mixed_run / "meta/stream_inverse_volatility.parquet")["inverse_volatility"]
    pd.testing.assert_series_equal(res.returns, stream, check_names=False, check_freq=False)  # the run's windows
    W = res.weights.to_numpy()
    assert np.abs(W.sum(axis=1) - 1.0).max() <= 1e-12
    assert W.min() >= LO - 1e-12 and W.max() <= HI + 1e-12
    assert (np.abs(W - HI) <= 1e-12).any(axis=1).mean() > 0.5, "the upper bound binds in most windows"
    assert abs(sum(weights["weights"].values()) - 1.0) <= 1e-12
