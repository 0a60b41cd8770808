"""Atomic sleeves: prices -> returns -> selection, direction -> walk-forward per risk profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .backtest import Selector, walk_forward
from .errors import DataError

SHORT_LOSS_CAP = 1.0


def synthetic_long(raw: pd.DataFrame) -> pd.DataFrame:
    """Synthetic-long returns of a short position: ``r_syn = -min(r_raw, 1.0)``.

    A short can lose at most 100% per period, so raw gains above +100% are capped
    before the sign flip.
    """
    return -raw.clip(upper=SHORT_LOSS_CAP)


def sign_test(raw: pd.DataFrame, used: pd.DataFrame, direction: str) -> dict:
    """Prove that the returns handed to the optimizer carry the sleeve's direction.

    For SHORT, every used return must equal ``-min(raw, 1)`` and the correlation of
    raw and used returns must be negative; for LONG they must be identical.
    """
    expected = synthetic_long(raw) if direction == "SHORT" else raw
    max_err = float(np.nanmax(np.abs(expected.to_numpy() - used.to_numpy()))) if raw.size else 0.0
    a, b = raw.to_numpy().ravel(), used.to_numpy().ravel()
    corr = float(np.corrcoef(a, b)[0, 1]) if a.size > 1 and a.std() > 0 and b.std() > 0 else float("nan")
    passed = max_err < 1e-12 and (corr < 0 if direction == "SHORT" else corr > 0)
    return {
        "direction": direction,
        "rule": "r_syn = -min(r_raw, 1.0)" if direction == "SHORT" else "r = r_raw",
        "max_abs_error": max_err,
        "corr_raw_vs_used": None if np.isnan(corr) else corr,
        "n_values": int(a.size),
        "passed": bool(passed),
    }


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
    """The selector of a manifest ``selection`` block (None for ``all``)."""
    if selection.get("method", "all") == "all":
        return None
    return momentum_selector(int(selection["top_n"]), int(selection.get("lookback", 126)))


@dataclass
class SleeveResult:
    """Everything an atomic sleeve writes, as plain data (JSON-able except ``returns``)."""

    returns: pd.DataFrame  # (n_dates, n_profiles)
    weights: dict[str, dict]
    health: dict
    sign_test: dict

    def to_payload(self) -> dict:
        """JSON-able form, to ship from a Ray worker without pickling frames."""
        r = self.returns
        return {
            "index": [d.isoformat() for d in r.index],
            "columns": {c: r[c].tolist() for c in r.columns},
            "weights": self.weights,
            "health": self.health,
            "sign_test": self.sign_test,
        }

    @classmethod
    def from_payload(cls, payload: dict) -> SleeveResult:
        idx = pd.DatetimeIndex(pd.to_datetime(payload["index"]), name="date")
        returns = pd.DataFrame(payload["columns"], index=idx, dtype=float)
        return cls(returns, payload["weights"], payload["health"], payload["sign_test"])


def compute_sleeve(
    config: dict,
    risk_profiles: list[str],
    *,
    sleeve_id: str,
    profile: str,
    base_dir: str | Path = ".",
) -> SleeveResult:
    """Run an atomic sleeve: load prices, build returns, walk forward every risk profile.

    Parameters
    ----------
    config : dict
        The resolved atomic profile (``data``, ``universe``, ``selection``, ``backtest``).
    risk_profiles : list of str
        Risk profiles to backtest; one returns column and one weights record each.

    Returns
    -------
    SleeveResult

    Raises
    ------
    DataError
        The data cannot be loaded or is too short for one train + test window.
    """
    from .data import load_prices, prices_to_returns

    prices = load_prices(config["data"], config["universe"].get("symbols"), base_dir=base_dir)
    raw = prices_to_returns(prices)
    direction = config["universe"].get("direction", "LONG")
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

    columns, weights, health = {}, {}, {}
    for rp in risk_profiles:
        res = walk_forward(used, rp, train_window=train, test_window=test, cost_rate=cost_rate, selector=selector)
        columns[rp] = res.returns
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
    returns = pd.DataFrame(columns)
    returns.index.name = "date"
    return SleeveResult(
        returns=returns,
        weights=weights,
        health={"sleeve": sleeve_id, "profile": profile, "direction": direction, "profiles": health},
        sign_test=sign_test(raw, used, direction),
    )


def holdings_rows(weights: pd.Series, direction: str) -> list[dict]:
    """Asset weight rows (zero weights dropped) with the direction's sign on ``net_weight``."""
    sign = -1.0 if direction == "SHORT" else 1.0
    return [
        {"symbol": str(sym), "direction": direction, "weight": float(w), "net_weight": sign * float(w)}
        for sym, w in weights.items()
        if w > 0
    ]


def unhealthy_profiles(health: dict, min_success_ratio: float) -> list[str]:
    """Risk profiles of a health record whose success ratio is below the threshold.

    A missing or empty record counts as a failure, never as healthy.
    """
    profiles = (health or {}).get("profiles") or {}
    if not profiles:
        return ["<no health record>"]
    bad = []
    for rp, h in profiles.items():
        attempted = int(h.get("windows_attempted", 0))
        ok = int(h.get("windows_succeeded", 0))
        if attempted <= 0 or ok / attempted < min_success_ratio:
            bad.append(f"{rp} ({ok}/{attempted} windows succeeded)")
    return bad
