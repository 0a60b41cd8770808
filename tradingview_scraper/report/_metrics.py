"""Metrics of return streams (pure): performance, effective number, tournament, diversification, anomalies."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import DataError

#: A rolling window whose annualized |Sharpe| exceeds this is an anomaly.
MAX_ABS_SHARPE = 10.0
#: A rolling window whose annualized volatility exceeds this (200%) is an anomaly.
MAX_VOLATILITY = 2.0


def calendar(index: pd.DatetimeIndex) -> tuple[int, str]:
    """Periods per year of a return series' own calendar, and a sentence saying which.

    Parameters
    ----------
    index : DatetimeIndex of shape (n_dates,)

    Returns
    -------
    periods_per_year : int
        365 when the series has weekend dates (24x7), else 252.
    description : str
    """
    from ..data import periods_per_year

    ppy = periods_per_year(index)
    if ppy == 365:
        return ppy, "365 periods per year (24x7 calendar: the stream has weekend dates)"
    return ppy, "252 periods per year (trading-day calendar: the stream has no weekend dates)"


def performance(returns: pd.Series, periods_per_year: int) -> dict:
    """Out-of-sample performance of one return stream, from skfolio's ``Portfolio``.

    Volatility, Sharpe, Sortino and max drawdown are the measures of a skfolio
    ``Portfolio`` holding the stream alone (weight 1, ``compounded=True``, zero risk-free
    rate, ``min_acceptable_return=0``), whose dispersions are sample statistics (ddof=1).
    The annualized return and the Calmar ratio stay here: skfolio's ``annualized_mean`` is
    the arithmetic mean times ``periods_per_year`` and its ``calmar_ratio`` the arithmetic
    mean per period over the max drawdown, while a portfolio manager reads the compounded
    growth a year (the CAGR: what the capital actually did) and Calmar as CAGR over max
    drawdown.

    Parameters
    ----------
    returns : Series of shape (n_dates,)
        Simple returns per period, DatetimeIndex.
    periods_per_year : int
        Annualization factor (252 or 365).

    Returns
    -------
    dict
        ``ann_return`` (time-weighted geometric: final wealth ** (ppy / n) - 1; NaN when
        the compounded wealth ends <= 0), ``volatility`` (sample std * sqrt(ppy)),
        ``sharpe`` (mean / std * sqrt(ppy), risk-free rate 0), ``sortino`` (mean /
        semi-deviation below 0 * sqrt(ppy)), ``max_drawdown`` (of the compounded wealth,
        a negative fraction; below -1 means the wealth went negative), ``calmar``
        (ann_return / |max_drawdown|), ``final_wealth``, ``n_obs``, ``start``, ``end``.
        Ratios are NaN when their denominator is 0; every measure is NaN with fewer
        than 2 returns or a non-finite one.
    """
    from skfolio.portfolio import Portfolio

    r = returns.to_numpy(dtype=float)
    n = len(r)
    nan = float("nan")
    out = {"n_obs": n, "start": _day(returns.index[0]) if n else None, "end": _day(returns.index[-1]) if n else None}
    if n < 2 or not np.isfinite(r).all():
        return {**out, **dict.fromkeys(("ann_return", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "final_wealth"), nan)}
    pf = Portfolio(
        X=r[:, None],
        weights=np.ones(1),
        annualization_factor=periods_per_year,
        compounded=True,
        risk_free_rate=0.0,
        min_acceptable_return=0.0,
    )
    wealth = float(np.prod(1.0 + r))
    ann_return = wealth ** (periods_per_year / n) - 1.0 if wealth > 0 else nan
    mdd = -float(pf.max_drawdown)
    return {
        **out,
        "ann_return": ann_return,
        "volatility": float(pf.annualized_standard_deviation),
        "sharpe": float(pf.annualized_sharpe_ratio) if pf.standard_deviation > 0 else nan,
        "sortino": float(pf.annualized_sortino_ratio) if pf.semi_deviation > 0 else nan,
        "max_drawdown": mdd,
        "calmar": ann_return / abs(mdd) if mdd < 0 else nan,
        "final_wealth": wealth,
    }


def effective_number(weights: Mapping[str, float]) -> float:
    """Effective number of sleeves ``1 / sum(w**2)`` (skfolio's inverse Herfindahl index).

    Parameters
    ----------
    weights : mapping of sleeve id -> weight, n_sleeves items
    """
    from skfolio.measures import effective_number_assets

    return float(effective_number_assets(np.array(list(weights.values()), dtype=float)))


def tournament(perf: Mapping[str, dict]) -> list[dict]:
    """Risk profiles ranked by out-of-sample Sharpe, best first (undefined Sharpe last).

    Parameters
    ----------
    perf : mapping of risk profile -> :func:`performance` dict

    Returns
    -------
    list of dict
        ``{"rank", "profile", "sharpe", "ann_return", "volatility", "max_drawdown"}``.
    """
    def key(item):
        s = item[1]["sharpe"]
        return (not np.isfinite(s), -s if np.isfinite(s) else 0.0)

    ranked = sorted(perf.items(), key=key)
    return [
        {"rank": i, "profile": p, **{k: m[k] for k in ("sharpe", "ann_return", "volatility", "max_drawdown")}}
        for i, (p, m) in enumerate(ranked, start=1)
    ]


def diversification_check(meta: pd.Series, sleeves: pd.DataFrame, periods_per_year: int) -> dict:
    """Is the meta stream less volatile than its least volatile sleeve, on the same dates?

    Parameters
    ----------
    meta : Series of shape (n_dates,)
        The meta level's out-of-sample returns.
    sleeves : DataFrame of shape (n_dates_sleeves, n_sleeves)
        The sleeves' returns; only the dates of ``meta`` are used.
    periods_per_year : int

    Returns
    -------
    dict
        ``meta_volatility``, ``sleeve_volatilities`` (sleeve -> annualized volatility),
        ``least_volatile`` (sleeve id), ``least_volatility``, ``passed`` (meta volatility
        strictly below the least volatile sleeve's), ``n_obs``.

    Raises
    ------
    DataError
        If the meta stream and the sleeves share fewer than 2 dates, or there are no sleeves.
    """
    from skfolio.measures import standard_deviation

    common = meta.index.intersection(sleeves.index)
    if len(common) < 2 or sleeves.shape[1] == 0:
        raise DataError(
            f"diversification check: the meta stream and sleeves {list(sleeves.columns)} share "
            f"{len(common)} dates; at least 2 are needed"
        )
    root = math.sqrt(periods_per_year)
    meta_vol = float(standard_deviation(meta.loc[common].to_numpy(dtype=float))) * root
    vols = standard_deviation(sleeves.loc[common].to_numpy(dtype=float)) * root
    sleeve_vols = {str(s): float(v) for s, v in zip(sleeves.columns, vols, strict=True)}
    least = min(sleeve_vols, key=sleeve_vols.get)
    return {
        "meta_volatility": meta_vol,
        "sleeve_volatilities": sleeve_vols,
        "least_volatile": least,
        "least_volatility": sleeve_vols[least],
        "passed": bool(meta_vol < sleeve_vols[least]),
        "n_obs": len(common),
    }


def rolling_anomalies(
    returns: pd.DataFrame,
    window: int,
    periods_per_year: int,
    *,
    max_abs_sharpe: float = MAX_ABS_SHARPE,
    max_volatility: float = MAX_VOLATILITY,
) -> list[dict]:
    """Episodes of rolling windows with an implausible annualized Sharpe or volatility.

    Every window of ``window`` consecutive periods is checked; overlapping flagged windows
    are merged into one episode, so one bad day is listed once, with its worst values.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_series)
        One column per return stream.
    window : int
        Window length in periods (the walk-forward test window).
    periods_per_year : int
    max_abs_sharpe, max_volatility : float
        Thresholds: a window is flagged when |Sharpe| > ``max_abs_sharpe`` or volatility >
        ``max_volatility`` (annualized, as fractions).

    Returns
    -------
    list of dict
        ``{"series", "start", "end", "n_windows", "sharpe", "volatility", "reason"}``,
        ``sharpe`` the most extreme and ``volatility`` the largest value in the episode.

    Raises
    ------
    ValueError
        If ``window`` < 2.
    """
    if window < 2:
        raise ValueError(f"rolling window must be at least 2 periods, got {window}")
    root = math.sqrt(periods_per_year)
    roll = returns.rolling(window)
    sd = roll.std(ddof=1)
    vol = sd * root
    sharpe = (roll.mean() / sd.where(sd > 0)) * root
    flagged = ((sharpe.abs() > max_abs_sharpe) | (vol > max_volatility)).to_numpy()
    sharpe, vol = sharpe.to_numpy(), vol.to_numpy()
    dates = returns.index
    out = []
    for j, col in enumerate(returns.columns):
        ends = np.flatnonzero(flagged[:, j])
        if not len(ends):
            continue
        # windows ending less than `window` periods apart overlap: one episode
        groups = np.split(ends, np.flatnonzero(np.diff(ends) >= window) + 1)
        for g in groups:
            s, v = sharpe[g, j], vol[g, j]
            worst = float(s[np.nanargmax(np.abs(s))]) if np.isfinite(s).any() else float("nan")
            peak = float(np.nanmax(v))
            reasons = []
            if np.isfinite(worst) and abs(worst) > max_abs_sharpe:
                reasons.append(f"|Sharpe| {abs(worst):.1f} > {max_abs_sharpe:g}")
            if peak > max_volatility:
                reasons.append(f"volatility {peak:.0%} > {max_volatility:.0%}")
            out.append(
                {
                    "series": str(col),
                    "start": _day(dates[g[0] - window + 1]),
                    "end": _day(dates[g[-1]]),
                    "n_windows": len(g),
                    "sharpe": worst,
                    "volatility": peak,
                    "reason": "; ".join(reasons),
                }
            )
    return out


def impossible_values(returns: pd.DataFrame) -> list[dict]:
    """Values no real return stream can have, each listed.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_series)

    Returns
    -------
    list of dict
        ``{"series", "date", "value", "reason"}`` for every return <= -100% (a loss beyond
        the whole capital), every non-finite return, and the first date on which the
        compounded wealth reaches <= 0 (a drawdown beyond -100%; ``value`` is the worst
        drawdown of the series).
    """
    from skfolio.measures import get_drawdowns

    out = []
    for col in returns.columns:
        s = returns[col]
        r = s.to_numpy(dtype=float)
        for i in np.flatnonzero(~np.isfinite(r)):
            out.append({"series": str(col), "date": _day(s.index[i]), "value": float("nan"), "reason": "non-finite return"})
        for i in np.flatnonzero(r <= -1.0):
            out.append({"series": str(col), "date": _day(s.index[i]), "value": float(r[i]), "reason": "return <= -100%"})
        clean = np.where(np.isfinite(r), r, 0.0)
        wealth = np.cumprod(1.0 + clean)
        broke = np.flatnonzero(wealth <= 0)
        if len(broke):
            worst = float(np.min(get_drawdowns(clean, compounded=True)))
            out.append(
                {
                    "series": str(col),
                    "date": _day(s.index[broke[0]]),
                    "value": worst,
                    "reason": "compounded wealth <= 0 (drawdown beyond -100%)",
                }
            )
    return out


def _day(ts) -> str:
    return pd.Timestamp(ts).date().isoformat()
