"""Atomic sleeves: prices -> returns -> selection, direction -> walk-forward per risk profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .backtest import Selector, walk_forward
from .errors import DataError

SHORT_LOSS_CAP = 1.0
#: Largest absolute difference the sign test accepts between a stream and its recomputation.
_SIGN_TOL = 1e-10


def synthetic_long(raw: pd.DataFrame) -> pd.DataFrame:
    """Synthetic-long returns of a short position: ``r_syn = -min(r_raw, 1.0)``.

    A short can lose at most 100% per period, so raw gains above +100% are capped
    before the sign flip.
    """
    return -raw.clip(upper=SHORT_LOSS_CAP)


def sign_test(
    raw: pd.DataFrame,
    used: pd.DataFrame,
    direction: str,
    streams: dict[str, tuple[pd.Series, pd.DataFrame]] | None = None,
) -> dict:
    """Prove that the returns the optimizer sees, and the streams it hands on, carry the direction.

    Two checks. *Inputs*: every return handed to the optimizer equals ``-min(raw, 1)``
    for SHORT (``raw`` for LONG), and raw and used returns are negatively (positively)
    correlated. *Streams*: each risk profile's out-of-sample stream (what the meta layer
    consumes) equals the used returns held with that window's weights on every day
    but rebalance days (which carry frictions), and it is negatively (positively)
    correlated with the raw basket held with the same weights. A correlation that is
    undefined (a constant series) does not fail the test; the equalities still must hold.

    Parameters
    ----------
    raw, used : DataFrame of shape (n_obs, n_assets)
        Raw simple returns and the returns given to the optimizer.
    direction : {"LONG", "SHORT"}
    streams : dict of risk profile -> (Series of shape (n_test_obs,), DataFrame of shape (n_windows, n_assets))
        Each profile's out-of-sample stream and its window weights, indexed by the
        window's first test date.

    Returns
    -------
    dict
        JSON-able record: ``direction``, ``rule``, ``inputs``, ``streams`` (per profile)
        and ``passed``.
    """
    expected = synthetic_long(raw) if direction == "SHORT" else raw
    inputs_err = _max_abs(expected.to_numpy() - used.to_numpy())
    corr = _corr(raw.to_numpy().ravel(), used.to_numpy().ravel())
    passed = inputs_err < _SIGN_TOL and _sign_ok(corr, direction)
    per_profile = {}
    for rp, (stream, window_weights) in (streams or {}).items():
        held = window_weights.reindex(stream.index, method="ffill").to_numpy()
        dates = stream.index
        raw_basket = (raw.loc[dates].to_numpy() * held).sum(axis=1)
        used_basket = (used.loc[dates].to_numpy() * held).sum(axis=1)
        held_days = ~dates.isin(window_weights.index)
        err = _max_abs(stream.to_numpy()[held_days] - used_basket[held_days])
        c = _corr(stream.to_numpy(), raw_basket)
        ok = err < _SIGN_TOL and _sign_ok(c, direction)
        per_profile[rp] = {
            "max_abs_error": err,
            "corr_stream_vs_raw_basket": c,
            "n_obs": int(len(stream)),
            "passed": bool(ok),
        }
        passed = passed and ok
    return {
        "direction": direction,
        "rule": "r_syn = -min(r_raw, 1.0)" if direction == "SHORT" else "r = r_raw",
        "inputs": {"max_abs_error": inputs_err, "corr_raw_vs_used": corr, "n_values": int(raw.size)},
        "streams": per_profile,
        "passed": bool(passed),
    }



def _max_abs(diff: np.ndarray) -> float:
    return float(np.nanmax(np.abs(diff))) if diff.size else 0.0


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two flat arrays, None when undefined (too short or constant)."""
    if a.size < 2 or not a.std() > 0 or not b.std() > 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _sign_ok(corr: float | None, direction: str) -> bool:
    return corr is None or (corr < 0 if direction == "SHORT" else corr > 0)


def momentum_selector(top_n: int, lookback: int) -> Selector:
    """Top ``top_n`` columns by trailing compounded return over the last ``lookback`` rows.

    Called on a train window only, so nothing after the window is seen.
    """

    def select(train: pd.DataFrame) -> list[str]:
        tail = train.iloc[-lookback:]
        score = (1.0 + tail).prod() - 1.0
        ranked = score.sort_values(ascending=False, kind="mergesort")
        keep = set(ranked.index[:top_n])
        return [c for c in train.columns if c in keep]

    return select


def make_selector(selection: dict) -> Selector | None:
    """The selector of a manifest ``selection`` block (None for ``all``).

    A method other than ``all`` and ``momentum`` is a function registered under the
    entry-point group ``tradingview_scraper.selections`` (:func:`plugin_selector`).
    """
    method = selection.get("method", "all")
    if method == "all":
        return None
    if method == "momentum":
        return momentum_selector(int(selection["top_n"]), int(selection.get("lookback", 126)))
    return plugin_selector(method, selection.get("params", {}))


def plugin_selector(method: str, params: dict) -> Selector:
    """The selector of registered selection ``method``: ``fn(train_returns, params)`` -> symbols to hold.

    The function sees a copy of one train window's returns and of ``params``, never a
    later date. Its answer is checked: symbols of the window, at least one; they are held
    in the window's column order.

    Raises
    ------
    ConfigError
        ``method`` is not registered (:func:`plugins.selection_function`).
    DataError
        Called on a window: the function returned something other than a non-empty list
        of the window's symbols.
    """
    import copy

    from .plugins import selection_function

    fn = selection_function(method)

    def select(train: pd.DataFrame) -> list[str]:
        chosen = fn(train.copy(), copy.deepcopy(params))
        where = f"selection {method!r} on the window trained up to {train.index[-1].date()}"
        if isinstance(chosen, str) or not hasattr(chosen, "__iter__"):
            raise DataError(f"{where}: returned {chosen!r}; it must return a list of the window's symbols")
        chosen = list(chosen)
        unknown = [c for c in chosen if c not in train.columns]
        if unknown or not chosen:
            raise DataError(
                f"{where}: returned {chosen!r}; it must return at least one of the window's symbols "
                f"({', '.join(map(str, train.columns))})"
            )
        keep = set(chosen)
        return [c for c in train.columns if c in keep]

    return select


@dataclass
class SleeveResult:
    """Everything an atomic sleeve writes: its returns as a frame, its records as JSON-able dicts.

    Sent from a Ray worker (or a process pool's) to the driver, the returns travel as an
    Arrow table: columnar buffers, not a Python object per number or date, and no pandas
    object state, so a worker with another pandas version hands over the same frame. The
    records travel as they are.
    """

    returns: pd.DataFrame  # (n_dates, n_profiles)
    weights: dict[str, dict]
    health: dict
    sign_test: dict
    #: Per risk profile, its walk-forward windows ``fitted`` and ``reused`` from the window store and
    #: the ``store``'s state: facts of this computation, never written into an artifact that two
    #: computations of the same data share (the sleeve's ``provenance.json`` keeps them).
    windows: dict[str, dict] = field(default_factory=dict)

    def __getstate__(self) -> dict:
        import pyarrow as pa

        r = self.returns
        arrays = [pa.array(r.index.to_numpy()), *(pa.array(r[c].to_numpy()) for c in r.columns)]
        return {**self.__dict__, "returns": pa.Table.from_arrays(arrays, names=["date", *map(str, r.columns)])}

    def __setstate__(self, state: dict) -> None:
        table = state["returns"]  # the dates, then one column per risk profile
        index = pd.DatetimeIndex(table.column(0).to_numpy(), name="date")
        columns = {name: col.to_numpy() for name, col in zip(table.column_names[1:], table.columns[1:], strict=True)}
        self.__dict__.update(state, returns=pd.DataFrame(columns, index=index))

    @classmethod
    def merge(cls, parts: list[SleeveResult]) -> SleeveResult:
        """One sleeve's result from the results of disjoint sets of its risk profiles.

        ``merge([compute_sleeve(c, [rp], ...) for rp in rps])`` equals
        ``compute_sleeve(c, rps, ...)``: the parts share the sleeve's returns (so the sign
        test's input check), and each adds its profiles' columns, weights, health and
        stream checks.
        """
        first = parts[0]
        returns = pd.concat([p.returns for p in parts], axis=1)
        returns.index.name = "date"
        streams = {rp: rec for p in parts for rp, rec in p.sign_test["streams"].items()}
        return cls(
            returns=returns,
            weights={rp: rec for p in parts for rp, rec in p.weights.items()},
            health={**first.health, "profiles": {rp: h for p in parts for rp, h in p.health["profiles"].items()}},
            sign_test={**first.sign_test, "streams": streams, "passed": all(p.sign_test["passed"] for p in parts)},
            windows={rp: rec for p in parts for rp, rec in p.windows.items()},
        )


def compute_sleeve(
    config: dict,
    risk_profiles: list[str],
    *,
    sleeve_id: str,
    profile: str,
    base_dir: str | Path = ".",
    prices: pd.DataFrame | None = None,
    windows=None,
) -> SleeveResult:
    """Run an atomic sleeve: load prices, build returns, walk forward every risk profile.

    Parameters
    ----------
    config : dict
        The resolved atomic profile (``data``, ``universe``, ``selection``, ``backtest``).
    risk_profiles : list of str
        Risk profiles to backtest; one returns column and one weights record each.
    prices : DataFrame of shape (n_dates, n_symbols), optional
        The sleeve's close prices as :func:`~tradingview_scraper.data.checked_prices` returns
        them (read, and checked, where the file is); loaded from ``config["data"]`` when None,
        through the data-quality pass, whose findings the health record keeps under
        ``data_quality`` (present only when there are some).
    windows : window_store.WindowStore, optional
        The runs root's window store: windows trained on rows unchanged since an earlier
        computation are reused from it (:func:`backtest.walk_forward`), counted in the
        result's ``windows``; the artifacts are the same, bit for bit, as without it.

    Returns
    -------
    SleeveResult

    Raises
    ------
    DataError
        The data cannot be loaded, the ``health.data_quality`` policy refuses it, or it is
        too short for one train + test window.
    """
    from .data import checked_prices, prices_to_returns

    direction = config["universe"].get("direction", "LONG")
    findings = None
    if prices is None:
        prices, findings = checked_prices(
            config["data"], config["universe"].get("symbols"), base_dir=base_dir, health=config.get("health"),
            direction=direction,
        )  # fmt: skip
    raw = prices_to_returns(prices)
    used = synthetic_long(raw) if direction == "SHORT" else raw
    bt = config["backtest"]
    train, test = int(bt["train_window"]), int(bt["test_window"])
    if len(used) < train + test:
        raise DataError(
            f"sleeve {sleeve_id!r}: {len(used)} return observations "
            f"({used.index[0].date() if len(used) else '-'} to {used.index[-1].date() if len(used) else '-'}) "
            f"are too few for train_window={train} + test_window={test}"
        )
    cost_rate = float(bt.get("commission", 0.0)) + float(bt.get("slippage", 0.0))
    selector = make_selector(config["selection"])

    columns, weights, health, streams = {}, {}, {}, {}
    priors: dict = {}  # each window's moments, estimated once for all risk profiles
    estimators = config.get("estimators", {})
    # asset bounds inside the sleeve, for every risk profile (none set: the optimizers' own [0, 1])
    bounds = {k: v for k, v in config.get("allocation", {}).items() if k in ("min_weight", "max_weight")}
    store = windows.within(selection=config["selection"]) if windows is not None else None
    counts = {}
    for rp in risk_profiles:
        res = walk_forward(
            used, rp, train_window=train, test_window=test, cost_rate=cost_rate, selector=selector, priors=priors,
            estimator=estimators.get(rp), store=store, **bounds,
        )  # fmt: skip
        counts[rp] = {"fitted": res.windows_fitted, "reused": res.windows_reused, "store": res.windows_store}
        columns[rp] = res.returns
        streams[rp] = (res.returns, res.weights)
        health[rp] = res.health()
        weights[rp] = {
            "sleeve": sleeve_id,
            "profile": profile,
            "risk_profile": rp,
            "direction": direction,
            "fitted_on": res.fitted_on,
            "fallback": res.final_fallback,
            "fallback_reason": res.final_error,
            "weights": holdings_rows(res.final_weights, direction),
        }
        if rp in estimators:
            weights[rp]["estimator"] = estimators[rp]
        if config.get("record_windows"):  # a parent's book limits are enforced against each window's holdings
            weights[rp]["windows"] = {
                "start": [d.isoformat() for d in res.weights.index],
                "weights": {str(c): res.weights[c].astype(float).tolist() for c in res.weights.columns},
            }
    returns = pd.DataFrame(columns)
    returns.index = stored_dates(returns.index)
    record = {"sleeve": sleeve_id, "profile": profile, "direction": direction, "profiles": health}
    if findings:
        record["data_quality"] = findings
    return SleeveResult(
        returns=returns,
        weights=weights,
        health=record,
        sign_test=sign_test(raw, used, direction, streams),
        windows=counts,
    )


def stored_dates(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``index`` named ``date``, at the resolution a sleeve's ``returns.parquet`` stores: microseconds.

    The artifacts have always stored a sleeve's dates in microseconds, so a result in memory
    and its file read back have one dtype and the file keeps its bytes. Nanoseconds are kept
    only where a date has a part finer than a microsecond, which microseconds would lose.
    """
    fine = index.as_unit("ns")
    exact = not (fine.asi8 % 1000).any()
    return (fine.as_unit("us") if exact else fine).rename("date")


def holdings_rows(weights: pd.Series, direction: str) -> list[dict]:
    """Asset weight rows (zero weights dropped) with the direction's sign on ``net_weight``."""
    sign = -1.0 if direction == "SHORT" else 1.0
    return [
        {"symbol": str(sym), "direction": direction, "weight": float(w), "net_weight": sign * float(w)}
        for sym, w in weights.items()
        if w > 0
    ]
