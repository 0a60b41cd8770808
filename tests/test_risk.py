"""Risk decomposition: Euler contributions add up, agree with skfolio, and hold on real runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.risk import (
    common_date_returns,
    euler_contributions,
    realised_contributions,
)

PROFILES = ["equal_weight", "min_variance", "hrp", "risk_parity"]


def _frame(n=120, k=4, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k))
    x = rng.normal(0, 0.01, size=(n, k)) @ mix
    return pd.DataFrame(x, columns=[f"a{i}" for i in range(k)], index=pd.bdate_range("2024-01-01", periods=n))


def test_euler_contributions_add_up_and_match_skfolio():
    from skfolio import Portfolio, RiskMeasure

    X = _frame()
    w = pd.Series([0.1, 0.2, 0.3, 0.4], index=X.columns)
    res = euler_contributions(X, w)
    rc = np.array([res["positions"][c]["contribution"] for c in X.columns])
    assert rc.sum() == pytest.approx(res["volatility"], abs=1e-15)
    assert sum(p["share"] for p in res["positions"].values()) == pytest.approx(1.0, abs=1e-12)
    port = Portfolio(X=X.to_numpy(), weights=w.to_numpy())
    assert res["volatility"] == pytest.approx(port.standard_deviation, abs=1e-14)
    np.testing.assert_allclose(rc, port.contribution(RiskMeasure.STANDARD_DEVIATION), atol=1e-9)


def test_realised_contributions_add_up_to_return_and_variance():
    X = _frame(n=60, k=3, seed=1)
    starts = [X.index[20], X.index[40]]
    weights = {"a0": [0.2, 0.5], "a1": [0.3, 0.3], "a2": [0.5, 0.2]}
    held = pd.DataFrame(weights, index=pd.DatetimeIndex(starts)).reindex(X.index[20:], method="ffill")
    stream = (X.iloc[20:] * held).sum(axis=1)
    res = realised_contributions(X, stream, starts, weights)
    s = res["sleeves"]
    assert sum(v["return"] for v in s.values()) == pytest.approx(stream.sum(), abs=1e-14)
    assert sum(v["variance"] for v in s.values()) == pytest.approx(stream.var(ddof=1), abs=1e-16)
    assert sum(v["variance_share"] for v in s.values()) == pytest.approx(1.0, abs=1e-12)
    assert sum(v["volatility"] for v in s.values()) == pytest.approx(stream.std(ddof=1), abs=1e-14)
    assert res["residual"] < 1e-15 and res["n_obs"] == 40


def test_common_date_returns_keep_the_weekend():
    days = pd.date_range("2024-01-05", periods=4, freq="D")  # Fri, Sat, Sun, Mon
    wealth = pd.Series([1.0, 1.1, 1.21, 1.331], index=days, name="BTC LONG")
    out = common_date_returns(wealth, pd.DatetimeIndex([days[0], days[3]]))
    assert out.iloc[0] == pytest.approx(0.331)  # Friday -> Monday, weekend included


@pytest.mark.e2e
@pytest.mark.parametrize("profile", PROFILES)
def test_risk_contributions_add_up_on_a_real_run(pm_runs, profile):
    run = pm_runs["now"]
    risk = json.loads((run / f"risk_{profile}.json").read_text())
    meta = json.loads((run / f"meta/weights_{profile}.json").read_text())
    flat = json.loads((run / f"flattened_{profile}.json").read_text())
    assert risk["window"]["start"] == meta["fitted_on"]["start"] and risk["window"]["end"] == meta["fitted_on"]["end"]
    sl = risk["sleeves"]
    assert {s: r["weight"] for s, r in sl["rows"].items()} == meta["weights"]
    assert sum(r["contribution"] for r in sl["rows"].values()) == pytest.approx(sl["volatility"], rel=1e-12)
    # The sleeve view is skfolio's volatility of the meta weights on the window's sleeve streams.
    from skfolio import Portfolio

    window = pd.read_parquet(run / f"meta/returns_{profile}.parquet").loc[meta["fitted_on"]["start"]:meta["fitted_on"]["end"]]
    w = np.array([meta["weights"][c] for c in window.columns])
    assert sl["volatility"] == pytest.approx(Portfolio(X=window.to_numpy(), weights=w).standard_deviation, rel=1e-12)
    assets = risk["assets"]
    assert {(r["symbol"], r["direction"]): r["weight"] for r in assets["rows"]} == {
        (r["symbol"], r["direction"]): r["weight"] for r in flat["weights"]
    }
    assert sum(r["contribution"] for r in assets["rows"]) == pytest.approx(assets["volatility"], rel=1e-12)
    assert sum(s["contribution"] for s in assets["by_sleeve"].values()) == pytest.approx(assets["volatility"], rel=1e-12)
    for row in assets["rows"]:
        assert sum(row["sleeves"].values()) == pytest.approx(row["contribution"], rel=1e-12, abs=1e-18)
    real = risk["realised"]
    stream = pd.read_parquet(run / f"meta/stream_{profile}.parquet")[profile]
    assert real["n_obs"] == len(stream) and real["residual"] < 1e-12
    assert sum(s["return"] for s in real["sleeves"].values()) == pytest.approx(stream.sum(), abs=1e-12)
    assert sum(s["variance_share"] for s in real["sleeves"].values()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.e2e
def test_holdings_view_reproduces_the_sleeve_view_when_the_weights_never_change(pm_runs):
    """Equal weights inside and across sleeves are the same in every window, and the small
    manifest's sleeves share one calendar: the book held over the window is then exactly the
    sleeves' streams, so prices -> returns -> positions must give the same contributions."""
    risk = json.loads((pm_runs["now"] / "risk_equal_weight.json").read_text())
    by_sleeve, streams = risk["assets"]["by_sleeve"], risk["sleeves"]["rows"]
    assert risk["assets"]["volatility"] == pytest.approx(risk["sleeves"]["volatility"], rel=1e-9)
    for sid, row in streams.items():
        assert by_sleeve[sid]["contribution"] == pytest.approx(row["contribution"], rel=1e-8)


def test_the_risk_step_through_the_adapter_records_its_files_as_before(small_run, tmp_path, monkeypatch):
    """The risk step is a plain step: the adapter reads the node's files, hands the files from
    outside the run over as paths (the step reads prices through its sleeves' data blocks), writes
    ``risk_<p>.json`` with the run's bytes and records the ledger entry the step always recorded:
    the node's files profile by profile, then each outside file by its absolute path."""
    import os
    import shutil

    from tradingview_scraper import stages, steps
    from tradingview_scraper.layout import write_parquet
    from tradingview_scraper.rule_inputs import step_inputs
    from tradingview_scraper.run import RunContext

    from .conftest import SMALL_MANIFEST

    root = tmp_path / "runs"
    shutil.copytree(small_run.parent, root, symlinks=True)
    config = {"profile": "meta_small", "run_id": small_run.name, "manifest": str(SMALL_MANIFEST), "runs_root": str(root)}
    ctx = RunContext.from_config(config, environ={})
    node, profiles = ctx.root, ctx.plan.risk_profiles
    outs = [node.file("risk", profile=p) for p in profiles]
    before = [f.read_bytes() for f in outs]
    outside = tmp_path / "prices.parquet"
    write_parquet(outside, pd.DataFrame({"close": [1.0, 2.0]}))
    monkeypatch.chdir(tmp_path)  # an outside file given relative to the working directory
    seen: list = []
    with stages.watch(seen.append):
        stages.run_step(steps.step("risk"), ctx, ".", input={**step_inputs(ctx, "risk", "."), "prices": ["prices.parquet"]},
                        output={"risk": [str(f) for f in outs]})  # fmt: skip
    assert [f.read_bytes() for f in outs] == before
    (io,) = seen
    assert not any(os.path.samefile(f, outside) for f in io.reads), "the adapter read a file from outside the run"
    entry = [json.loads(line) for line in (ctx.run_dir / "audit.jsonl").read_text().splitlines()][-1]
    own = ("meta_returns", "meta_weights", "meta_stream", "flattened")
    expected = [node.file(k, profile=p).relative_to(ctx.run_dir).as_posix() for p in profiles for k in own]
    assert [f["path"] for f in entry["inputs"]] == [*expected, os.path.relpath(outside, ctx.run_dir)]
    assert (entry["stage"], entry["outcome"], entry["params"]) == ("risk", "success", {"profiles": profiles})
