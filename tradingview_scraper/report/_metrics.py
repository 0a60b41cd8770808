"""Metrics of return streams (pure): performance, calendar, effective number, tournament, diversification."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import DataError


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


def diversification(meta: pd.Series, sleeves: pd.DataFrame, weights: Mapping[str, float], periods_per_year: int) -> dict:
    """Standard diversification measures of the current sleeve weights, on the meta stream's dates.

    Parameters
    ----------
    meta : Series of shape (n_dates,)
        The meta level's out-of-sample returns: only its dates are used.
    sleeves : DataFrame of shape (n_dates_sleeves, n_sleeves)
        The sleeves' returns.
    weights : mapping of sleeve id -> weight, n_sleeves items
        The current allocation (weights of sleeves missing from it count as 0).
    periods_per_year : int

    Returns
    -------
    dict
        ``diversification_ratio``: the weighted average of the sleeves' volatilities over
        the volatility of the weighted sleeves (skfolio's ``Portfolio.diversification``;
        1 when the sleeves move as one). ``independent_bets``: its square, the effective
        number of independent bets the allocation holds (Choueifaty, Froidure & Reynier
        2013, "Properties of the most diversified portfolio"): 2 for two uncorrelated
        sleeves of equal volatility held equally, 1 for sleeves that move as one, at most
        the number of sleeves with a positive weight for long-only sleeves.
        ``effective_sleeves``: 1 / sum(w^2), from the capital weights alone.
        ``volatility`` (of the weighted sleeves) and ``weighted_volatility`` (the
        weighted average of the sleeves' volatilities), annualized; ``sleeve_volatilities``
        (sleeve -> annualized volatility); ``correlation`` (DataFrame of shape (n_sleeves,
        n_sleeves)); ``n_obs``. Dispersions are sample statistics (ddof=1).

    Raises
    ------
    DataError
        If the meta stream and the sleeves share fewer than 2 dates, or there are no sleeves.
    """
    from skfolio.measures import correlation, standard_deviation
    from skfolio.portfolio import Portfolio

    common = meta.index.intersection(sleeves.index)
    if len(common) < 2 or sleeves.shape[1] == 0:
        raise DataError(
            f"diversification: the meta stream and sleeves {list(sleeves.columns)} share "
            f"{len(common)} dates; at least 2 are needed"
        )
    x = sleeves.loc[common].to_numpy(dtype=float)
    w = np.array([float(weights.get(s, 0.0)) for s in sleeves.columns])
    pf = Portfolio(X=x, weights=w, annualization_factor=periods_per_year)
    ratio = float(pf.diversification)
    vols = standard_deviation(x) * math.sqrt(periods_per_year)
    return {
        "diversification_ratio": ratio,
        "independent_bets": ratio**2,
        "effective_sleeves": effective_number(dict(zip(sleeves.columns, w, strict=True))),
        "volatility": float(pf.annualized_standard_deviation),
        "weighted_volatility": float(w @ vols),
        "sleeve_volatilities": {str(s): float(v) for s, v in zip(sleeves.columns, vols, strict=True)},
        "correlation": pd.DataFrame(correlation(x), index=sleeves.columns, columns=sleeves.columns),
        "n_obs": len(common),
    }


def _day(ts) -> str:
    return pd.Timestamp(ts).date().isoformat()
