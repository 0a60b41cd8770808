"""Returns of a price table and the number of periods per year of its calendar."""

from __future__ import annotations

import pandas as pd


def periods_per_year(index: pd.DatetimeIndex) -> int:
    """Number of (daily) periods per year of the calendar ``index``.

    Parameters
    ----------
    index : DatetimeIndex of shape (n_dates,)
        The dates of a price or return series.

    Returns
    -------
    int
        365 when the calendar trades on weekends (any Saturday or Sunday in
        ``index``, e.g. 24x7 crypto), else 252.
    """
    weekdays = pd.DatetimeIndex(index).day_of_week
    return 365 if bool((weekdays >= 5).any()) else 252


def prices_to_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Simple returns ``p_t / p_{t-1} - 1`` of a price table.

    Parameters
    ----------
    prices : DataFrame of shape (n_dates, n_symbols)
        Prices, as returned by :func:`load_prices`.

    Returns
    -------
    returns : DataFrame of shape (n_dates - 1, n_symbols)
        Returns indexed by the later date of each pair; the first row is dropped and
        nothing is filled (a NaN price gives NaN returns).
    """
    return (prices / prices.shift(1) - 1.0).iloc[1:]
