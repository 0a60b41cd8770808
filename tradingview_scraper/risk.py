"""Where the risk sits: ex-ante Euler risk contributions and realised contributions of a meta node.

Convention (Euler): on a covariance matrix ``S`` and weights ``w``, the portfolio volatility is
``sigma = sqrt(w' S w)`` and the contribution of position ``i`` is
``RC_i = w_i (S w)_i / sigma``; the contributions add up to ``sigma`` exactly. ``S`` is
skfolio's ``EmpiricalCovariance`` of the window's returns and ``sigma`` equals skfolio's
``Portfolio(X, w).standard_deviation`` (both with ``ddof = 1``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .errors import DataError

#: Largest accepted gap between the Euler volatility and skfolio's Portfolio volatility.
_SIGMA_TOL = 1e-10


def euler_contributions(returns: pd.DataFrame, weights: pd.Series) -> dict:
    """Ex-ante Euler risk contributions of ``weights`` on the covariance of ``returns``.

    Parameters
    ----------
    returns : DataFrame of shape (n_obs, n_positions)
        Per-period returns of the positions over the estimation window.
    weights : Series of shape (n_positions,)
        Weight of each column of ``returns`` (gross; a SHORT position's returns are its
        synthetic-long returns).

    Returns
    -------
    dict
        ``volatility`` (per period, ``sqrt(w' S w)``), ``n_obs``, and ``positions``: per
        column ``weight``, ``marginal`` (``(S w)_i / sigma``), ``contribution``
        (``w_i * marginal``, adding up to ``volatility``), ``share`` (contribution /
        volatility, adding up to 1; None when the volatility is 0) and
        ``standalone_volatility`` (``sqrt(S_ii)``). ``zero_variance`` (only when there
        are some) lists the columns that are constant over the window (a halted price):
        their contribution is 0 and skfolio's volatility check runs on the other columns.

    Raises
    ------
    DataError
        Fewer than 2 observations, non-finite returns, or weights missing for a column.
    """
    from skfolio import Portfolio
    from skfolio.moments import EmpiricalCovariance

    if len(returns) < 2:
        raise DataError(f"risk contributions need at least 2 observations, got {len(returns)}")
    if not np.isfinite(returns.to_numpy(dtype=float)).all():
        bad = returns.columns[~np.isfinite(returns.to_numpy(dtype=float)).all(axis=0)].tolist()
        raise DataError(f"risk contributions: non-finite returns in column(s) {', '.join(map(str, bad))}")
    missing = [c for c in returns.columns if c not in weights.index]
    if missing:
        raise DataError(f"risk contributions: no weight for column(s) {', '.join(map(str, missing))}")
    w = weights.reindex(returns.columns).to_numpy(dtype=float)
    x = returns.to_numpy(dtype=float)
    # A constant column (a halted price) has a zero row and column in S, and adds nothing to
    # w' S w; skfolio refuses a zero variance, so S and the cross-check come from the others.
    live = ~(x == x[:1]).all(axis=0)
    if live.all():
        cov = np.asarray(EmpiricalCovariance().fit(x).covariance_, dtype=float)
    else:
        cov = np.zeros((x.shape[1], x.shape[1]))
        if live.any():
            cov[np.ix_(live, live)] = np.asarray(EmpiricalCovariance().fit(x[:, live]).covariance_, dtype=float)
    sw = cov @ w
    sigma = float(np.sqrt(max(float(w @ sw), 0.0)))
    skfolio_sigma = float(Portfolio(X=x[:, live], weights=w[live]).standard_deviation) if live.any() else 0.0
    if abs(skfolio_sigma - sigma) > _SIGMA_TOL * max(1.0, sigma):
        raise DataError(f"risk contributions: Euler volatility {sigma!r} differs from skfolio's {skfolio_sigma!r}")
    marginal = sw / sigma if sigma > 0 else np.zeros_like(sw)
    contribution = w * marginal
    positions = {}
    for i, name in enumerate(returns.columns):
        positions[name] = {
            "weight": float(w[i]),
            "marginal": float(marginal[i]),
            "contribution": float(contribution[i]),
            "share": float(contribution[i] / sigma) if sigma > 0 else None,
            "standalone_volatility": float(np.sqrt(max(cov[i, i], 0.0))),
        }
    out = {"volatility": sigma, "n_obs": int(len(returns)), "positions": positions}
    if not live.all():
        out["zero_variance"] = [str(c) for c, ok in zip(returns.columns, live, strict=True) if not ok]
    return out


def realised_contributions(
    sleeve_returns: pd.DataFrame, stream: pd.Series, window_starts: list, window_weights: Mapping[str, list]
) -> dict:
    """Out-of-sample contribution of each sleeve to the meta stream's return and variance.

    The stream holds, from each window's first test date on, that window's sleeve
    weights: ``r_t = sum_i x_it`` with ``x_it = w_i(t) R_it``. Return contribution is
    ``sum_t x_it`` (arithmetic: the contributions add up to ``sum_t r_t``), variance
    contribution is ``cov(x_i, r)`` (they add up to ``var(r)``, ``ddof = 1``).

    Parameters
    ----------
    sleeve_returns : DataFrame of shape (n_dates, n_sleeves)
        The node's meta returns (sleeve streams on the common dates).
    stream : Series of shape (n_test_dates,)
        The node's out-of-sample stream (``meta/stream_<profile>.parquet``).
    window_starts : list of date-like
        First test date of each walk-forward window.
    window_weights : dict of sleeve id -> list of float
        Each sleeve's weight in every window.

    Returns
    -------
    dict
        ``start``, ``end``, ``n_obs``, ``total_return`` (``sum_t r_t``), ``variance``,
        ``volatility``, ``residual`` (largest ``|r_t - sum_i x_it|``: frictions or rounding)
        and ``sleeves``: per sleeve ``return``, ``return_share``, ``variance``,
        ``variance_share``, ``volatility`` (``cov(x_i, r) / sigma_r``, adding up to the
        stream's volatility) and ``mean_weight``.

    Raises
    ------
    DataError
        The stream has dates without sleeve returns or before the first window.
    """
    sleeves = list(sleeve_returns.columns)
    idx = pd.DatetimeIndex(pd.to_datetime(list(window_starts)))
    held = pd.DataFrame({s: list(map(float, window_weights[s])) for s in sleeves}, index=idx).sort_index()
    dates = stream.index
    absent = dates.difference(sleeve_returns.index)
    if len(absent):
        raise DataError(f"realised contributions: {len(absent)} stream dates have no sleeve returns (first {absent[0]})")
    if len(dates) and dates[0] < held.index[0]:
        raise DataError(f"realised contributions: stream starts {dates[0]} before the first window {held.index[0]}")
    w = held.reindex(dates, method="ffill")
    x = sleeve_returns.loc[dates, sleeves] * w
    r = stream.astype(float)
    total = float(r.sum())
    var = float(r.var(ddof=1)) if len(r) > 1 else 0.0
    sigma = float(np.sqrt(var))
    centred = r - r.mean()
    out = {}
    for s in sleeves:
        xs = x[s]
        cov = float(((xs - xs.mean()) * centred).sum() / (len(r) - 1)) if len(r) > 1 else 0.0
        ret = float(xs.sum())
        out[s] = {
            "return": ret,
            "return_share": ret / total if total != 0 else None,
            "variance": cov,
            "variance_share": cov / var if var > 0 else None,
            "volatility": cov / sigma if sigma > 0 else None,
            "mean_weight": float(w[s].mean()),
        }
    return {
        "start": dates[0].date().isoformat() if len(dates) else None,
        "end": dates[-1].date().isoformat() if len(dates) else None,
        "n_obs": int(len(dates)),
        "total_return": total,
        "variance": var,
        "volatility": sigma,
        "residual": float((r - x.sum(axis=1)).abs().max()) if len(r) else 0.0,
        "sleeves": out,
    }


def common_date_returns(wealth: pd.Series, dates: pd.DatetimeIndex) -> pd.Series:
    """Returns between consecutive ``dates`` of a wealth (or price) path: nothing padded, no P&L dropped.

    Parameters
    ----------
    wealth : Series
        Wealth or price, on the asset's own calendar (which holds every one of ``dates``).
    dates : DatetimeIndex of shape (n_dates + 1,)
        The previous common date followed by the window's common dates.

    Returns
    -------
    Series of shape (n_dates,)
        ``wealth[d_k] / wealth[d_{k-1}] - 1``: a 24x7 asset's weekend P&L lands on Monday.

    Raises
    ------
    DataError
        A common date is missing from the asset's calendar.
    """
    absent = dates.difference(wealth.index)
    if len(absent):
        raise DataError(f"{wealth.name}: no price on common date {absent[0].date()}")
    sampled = wealth.loc[dates].astype(float)
    return (sampled / sampled.shift(1) - 1.0).iloc[1:]


def interval_returns(returns: pd.Series, dates: pd.DatetimeIndex) -> pd.Series:
    """Per-period returns compounded between consecutive ``dates``: a wiped-out path's returns stay defined.

    Equals :func:`common_date_returns` of the wealth path ``(1 + returns).cumprod()`` as long
    as that wealth stays above 0; where a period loses 100% (a SHORT position's cap), the
    wealth ratio is 0 / 0 but the position, held at its weight from period to period as the
    optimizer assumes, still has a return in every later interval.

    Parameters
    ----------
    returns : Series
        Per-period returns on the asset's own calendar (which holds every one of ``dates[1:]``).
    dates : DatetimeIndex of shape (n_dates + 1,)
        The previous common date followed by the window's common dates.

    Returns
    -------
    Series of shape (n_dates,)
        ``prod(1 + r_t) - 1`` over ``dates[k-1] < t <= dates[k]``.

    Raises
    ------
    DataError
        A common date is missing from the asset's calendar.
    """
    absent = dates[1:].difference(returns.index)
    if len(absent):
        raise DataError(f"{returns.name}: no return on common date {absent[0].date()}")
    inside = returns[(returns.index > dates[0]) & (returns.index <= dates[-1])].astype(float)
    closing = dates.searchsorted(inside.index, side="left")
    growth = (1.0 + inside).groupby(closing).prod()
    return pd.Series(growth.to_numpy() - 1.0, index=dates[1:], name=returns.name)
