"""The window engine gives skfolio's weights: every window of every shipped sleeve, against skfolio's own fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tradingview_scraper.backtest import fit_weights, walk_forward
from tradingview_scraper.bounds import project_to_bounds
from tradingview_scraper.data import load_prices, prices_to_returns
from tradingview_scraper.engines import RISK_PROFILES, make_optimizer
from tradingview_scraper.manifest import is_meta_profile, load_manifest, load_plan
from tradingview_scraper.sleeve import make_selector, synthetic_long
from tradingview_scraper.window_engine import WindowEngine, window_prior

from .conftest import PROJECT

TOL = 1e-8
MANIFEST = PROJECT / "config" / "manifest.json"


def _shipped_sleeves() -> dict[str, dict]:
    """Every atomic profile of config/manifest.json (skfolio's datasets and the shipped example exports)."""
    manifest, _ = load_manifest(MANIFEST)
    out = {}
    for name in manifest["profiles"]:
        if is_meta_profile(manifest, name):
            continue
        config = load_plan(name, MANIFEST).root.config
        path = config["data"].get("path")
        if config["data"].get("source", "skfolio") == "skfolio" or (path and (PROJECT / path).exists()):
            out[name] = config
    return out


SLEEVES = _shipped_sleeves()


def _sleeve_returns(config: dict) -> pd.DataFrame:
    raw = prices_to_returns(load_prices(config["data"], config["universe"].get("symbols"), base_dir=PROJECT))
    return synthetic_long(raw) if config["universe"].get("direction", "LONG") == "SHORT" else raw


def _stock_walk_forward(X, profile, *, train_window, test_window, lo=0.0, hi=1.0, selector=None):
    """The walk-forward's windows fitted by skfolio's estimator on each DataFrame window (the stock path)."""
    from skfolio.model_selection import WalkForward

    columns = list(X.columns)
    rows, attempted, succeeded = [], 0, 0
    for train, _test in WalkForward(train_size=train_window, test_size=test_window, reduce_test=True).split(X):
        attempted += 1
        window = X.iloc[train]
        sub = selector(window) if selector else columns
        try:
            w_sub, _ = fit_weights(window[sub], profile, min_weight=lo, max_weight=hi)
            succeeded += 1
        except Exception:  # noqa: BLE001 - the fallback walk_forward applies
            w_sub = project_to_bounds(np.full(len(sub), 1.0 / len(sub)), lo, hi)
        rows.append(pd.Series(w_sub, index=sub).reindex(columns, fill_value=0.0).to_numpy())
    return np.array(rows), attempted, succeeded


# The fast tier walks the first windows of one sleeve ("tech-head": its first 24 windows);
# the sweep over every window of every shipped sleeve is the full tier's.
@pytest.mark.parametrize(
    "sleeve", ["tech-head", *(pytest.param(s, marks=pytest.mark.e2e) for s in sorted(SLEEVES))]
)
def test_window_weights_equal_skfolio_on_every_window_of_every_shipped_sleeve(sleeve):
    config = SLEEVES[sleeve.removesuffix("-head")]
    X = _sleeve_returns(config)
    bt = config["backtest"]
    if sleeve.endswith("-head"):
        X = X.iloc[: bt["train_window"] + 24 * bt["test_window"]]
    selector = make_selector(config["selection"])
    priors: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rp in RISK_PROFILES:
            res = walk_forward(X, rp, train_window=bt["train_window"], test_window=bt["test_window"],
                               selector=selector, priors=priors)
            stock, attempted, succeeded = _stock_walk_forward(
                X, rp, train_window=bt["train_window"], test_window=bt["test_window"], selector=selector
            )
            assert res.windows_attempted == attempted > 20
            assert res.windows_succeeded == succeeded
            np.testing.assert_allclose(res.weights.to_numpy(), stock, rtol=0, atol=TOL, err_msg=f"{sleeve} {rp}")


# The fast tier fits every seventh window of the first bounds; the full tier every window of both.
@pytest.mark.parametrize(
    ("bounds", "stride"),
    [((0.05, 0.5), 7), pytest.param((0.05, 0.5), 1, marks=pytest.mark.e2e), pytest.param((0.1, 0.4), 1, marks=pytest.mark.e2e)],
)
def test_bounded_window_weights_equal_skfolio(bounds, stride):
    """Sleeve bounds as the meta layer uses them (the shipped meta profiles' own), on every window."""
    lo, hi = bounds
    X = _sleeve_returns(SLEEVES["defensive"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rp in RISK_PROFILES:
            engine = WindowEngine(rp, min_weight=lo, max_weight=hi)
            for start in range(0, len(X) - 252, 20 * stride):
                window = X.iloc[start : start + 252]
                x = window.to_numpy()
                expected = make_optimizer(rp, min_weight=lo, max_weight=hi).fit(window).weights_
                np.testing.assert_allclose(engine.fit(x, window_prior(x)), expected, rtol=0, atol=TOL,
                                           err_msg=f"{rp} {bounds} window at {window.index[0].date()}")
            assert engine.skfolio_fits == 0, f"{rp} {bounds}: {engine.skfolio_fits} windows left the fast path"


def test_failed_windows_fall_back_and_are_counted_as_before():
    """A window skfolio cannot fit (an asset with zero variance) fails the same way through the engine."""
    X = _sleeve_returns(SLEEVES["tech"]).iloc[:800].copy()
    X.iloc[:400, 0] = 0.0  # no variance in the first windows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rp in ("hrp", "min_variance", "risk_parity", "inverse_volatility"):
            res = walk_forward(X, rp, train_window=252, test_window=20)
            stock, attempted, succeeded = _stock_walk_forward(X, rp, train_window=252, test_window=20)
            assert (res.windows_attempted, res.windows_succeeded) == (attempted, succeeded), rp
            assert res.windows_fallback == attempted - succeeded
            np.testing.assert_allclose(res.weights.to_numpy(), stock, rtol=0, atol=TOL, err_msg=rp)
    hrp = walk_forward(X, "hrp", train_window=252, test_window=20)
    assert hrp.windows_fallback > 0 and len(hrp.errors) == hrp.windows_fallback


def test_engine_fits_non_finite_windows_with_skfolio():
    x = _sleeve_returns(SLEEVES["tech"]).iloc[:252].to_numpy().copy()
    x[3, 1] = np.nan
    for rp in ("hrp", "max_diversification"):
        engine = WindowEngine(rp)
        with pytest.raises(Exception):  # noqa: B017 - whatever skfolio raises on NaN input
            make_optimizer(rp).fit(x)
        with pytest.raises(Exception):  # noqa: B017
            engine.fit(x)
        assert (engine.fast_fits, engine.skfolio_fits) == (0, 1)
