"""Loading a profile's close prices (every source, inner-joined) and checking a data block before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ._checks import _dataset, _day, _export_dir, _names, _source_and_bounds, _table_path
from ._quality import data_quality_policy, quality_findings, refuse
from ._skfolio import _load_skfolio
from ._tables import _load_table
from ._tradingview import _load_tradingview


def load_prices(
    data: Mapping[str, Any], symbols: Sequence[str] | None = None, *, base_dir: str | Path = "."
) -> pd.DataFrame:
    """Load close prices of ``symbols`` from the source described by ``data``.

    Parameters
    ----------
    data : dict
        The ``data`` block of a profile. ``source`` selects the loader (default
        ``"skfolio"``):

        * ``"skfolio"``: ``dataset`` is ``"sp500"`` (default; 20 stocks, 1990-2022) or
          ``"factors"`` (5 ETFs, 2014-2022). Both load offline.
        * ``"table"``: ``path`` is a ``.parquet``/``.pq``/``.csv`` file, ``layout`` is
          ``"wide"`` (a date column plus one column per symbol) or ``"long"`` (columns
          date, symbol, close); detected from the columns when absent. In a wide table
          an empty cell (a null in parquet) means "no observation that day".
        * ``"tradingview"``: ``path`` is a directory of TradingView chart exports (CSV:
          time, open, high, low, close[, Volume]); ``files`` optionally maps symbol ->
          file name, otherwise every ``*.csv`` is loaded and named after its file
          (``"BINANCE_BTCUSDT, 1D.csv"`` -> ``"BTCUSDT"``), sorted by symbol.

        Optional ``start`` / ``end`` (ISO dates, inclusive) trim the result.
    symbols : list of str, optional
        Symbols to return, in this order. All symbols of the source when None (in the
        source's column order; first-appearance order in a long table).
    base_dir : str or Path, default "."
        Directory that a relative ``data["path"]`` is resolved against.

    Returns
    -------
    prices : DataFrame of shape (n_dates, n_symbols)
        float64 close prices, all finite and > 0. The index is a tz-naive
        ``DatetimeIndex`` named ``"date"`` (datetime64[ns], strictly increasing,
        normalized to midnight when every symbol has at most one row per day) holding
        the dates on which every symbol has a price: an inner join of the symbols' own
        calendars, never padded or filled. Timezone offsets in ISO times are dropped
        (the exchange's wall-clock time is kept); unix times are read as UTC.

    Raises
    ------
    ConfigError
        Unknown ``source`` / ``dataset`` / ``layout``, a missing ``path``, an invalid
        ``start`` / ``end`` or ``files``, or a malformed ``symbols`` argument.
    DataError
        A missing, empty or unreadable file; missing columns; a requested symbol absent
        from the source; a price that is empty (long tables and TradingView exports),
        non-numeric, NaN, infinite, zero or negative; an unparseable date; a duplicate
        or out-of-order date of one symbol; or no date left after trimming and the
        inner join. The message names the file, symbol and row.
    """
    series, start, end = _load_series(data, symbols, Path(base_dir))
    return _join(series, data, start, end)


def checked_prices(
    data: Mapping[str, Any],
    symbols: Sequence[str] | None = None,
    *,
    base_dir: str | Path = ".",
    health: Mapping[str, Any] | None = None,
    direction: str = "LONG",
) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`load_prices`, after the data-quality pass on the symbols' own series.

    The pass (:func:`~tradingview_scraper.data._quality.quality_findings`) looks at each
    symbol before the inner join, within ``start`` / ``end``: a history that ends or starts
    far from the others', a constant price (to the last date: ``halted``), a jump, daily
    bars stamped near midnight. The ``health.data_quality`` policy refuses or lets through
    each finding.

    Parameters
    ----------
    data, symbols, base_dir
        As for :func:`load_prices`.
    health : dict, optional
        The profile's ``health`` block; its ``data_quality`` policy (defaults when absent).
    direction : {"LONG", "SHORT"}, default "LONG"
        The sleeve's direction (a SHORT sleeve is also checked for wipe-outs).

    Returns
    -------
    prices : DataFrame of shape (n_dates, n_symbols)
        As :func:`load_prices` returns it.
    findings : list of dict
        The findings the policy lets through (``action`` ``"warn"``), each naming the
        symbol, its file and the dates (see ``quality_findings``).

    Raises
    ------
    ConfigError, DataError
        As :func:`load_prices`; a ``DataError`` also for a finding the policy refuses, and
        a ``ConfigError`` for an invalid ``health.data_quality`` block.
    """
    policy = data_quality_policy(health)
    series, start, end = _load_series(data, symbols, Path(base_dir))
    trimmed = {sym: s[_window(s.index, start, end)] for sym, s in series.items()}
    files = {sym: s.attrs.get("file", "?") for sym, s in series.items()}
    findings = quality_findings(trimmed, files, policy, direction=direction)
    passed = refuse(findings)
    return _join(series, data, start, end), passed


def _load_series(
    data: Mapping[str, Any], symbols: Sequence[str] | None, base_dir: Path
) -> tuple[dict[str, pd.Series], pd.Timestamp | None, pd.Timestamp | None]:
    """Each symbol's series on its own calendar, and the block's checked ``start`` and ``end``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"data must be a mapping with a 'source' key, got {type(data).__name__}")
    source, start, end = _source_and_bounds(data)
    if source == "skfolio":
        series = _load_skfolio(data, symbols)
    elif source == "table":
        series = _load_table(data, symbols, base_dir)
    else:
        series = _load_tradingview(data, symbols, base_dir)
    return series, start, end


def check_source(
    data: Mapping[str, Any],
    symbols: Sequence[str] | None = None,
    *,
    base_dir: str | Path = ".",
    min_returns: int = 0,
) -> None:
    """Check a ``data`` block without reading a price: cheap enough to run before any work starts.

    Checks the source, dataset and layout names, ``start`` / ``end``, that ``path`` exists
    (a non-empty table file; an export directory and the files ``files`` names for
    ``symbols``) and, for the skfolio datasets (US trading days, so never more rows than
    weekdays), that ``[start, end]`` has room for ``min_returns`` returns. Everything else
    (content, symbols, the exact number of rows) is checked when the prices load.

    Parameters
    ----------
    data : dict
        The ``data`` block of a profile (see :func:`load_prices`).
    symbols : list of str, optional
        Symbols the sleeve will load (None: all).
    base_dir : str or Path, default "."
        Directory that a relative ``data["path"]`` is resolved against.
    min_returns : int, default 0
        Returns the sleeve needs (train_window + test_window).

    Raises
    ------
    ConfigError
        Unknown source / dataset / layout, invalid ``start`` / ``end`` or ``files``, or a
        skfolio date range with fewer weekdays than ``min_returns`` + 1 prices.
    DataError
        The table file or export directory (or a mapped export) does not exist, or the
        table file is empty.
    """
    source, start, end = _source_and_bounds(data)
    if source == "table":
        path = _table_path(data, Path(base_dir))
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (no header, no rows); expected a price table")
    elif source == "tradingview":
        _, mapping = _export_dir(data, Path(base_dir))
        for sym, path in (mapping or {}).items():
            if (symbols is None or sym in symbols) and not path.is_file():
                raise DataError(f"TradingView export for symbol {sym!r} not found: {path}")
    else:
        name = _dataset(data)
        if start is not None:
            last = (end if end is not None else pd.Timestamp.today()).normalize() + pd.Timedelta(days=1)
            weekdays = int(np.busday_count(start.date(), last.date())) if last > start else 0
            if weekdays - 1 < min_returns:
                raise ConfigError(
                    f"data {data.get('start')}..{data.get('end') or 'today'} holds at most {max(weekdays - 1, 0)} "
                    f"daily returns of skfolio dataset {name!r}, fewer than train_window + test_window = "
                    f"{min_returns}; widen data.start/end or shorten the windows"
                )


def _join(
    series: dict[str, pd.Series],
    data: Mapping[str, Any],
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> pd.DataFrame:
    """Inner-join the symbols' calendars, trimmed to [start, end]; shape (n_dates, n_symbols)."""
    daily = all(not s.index.normalize().has_duplicates for s in series.values())
    if daily:
        series = {sym: s.set_axis(s.index.normalize()) for sym, s in series.items()}
    trimmed = {sym: s[_window(s.index, start, end)] for sym, s in series.items()}
    common = reduce(lambda a, b: a.intersection(b), (s.index for s in trimmed.values()))
    common = pd.DatetimeIndex(common).sort_values()
    if len(common) == 0:
        spans = "; ".join(
            f"{sym}: {_day(s.index[0])}..{_day(s.index[-1])} ({len(s)} rows)"
            if len(s)
            else f"{sym}: no prices"
            for sym, s in series.items()
        )
        window = f" within {data.get('start', '-inf')}..{data.get('end', '+inf')}"
        raise DataError(
            f"no date on which every symbol has a price{window if start is not None or end is not None else ''} "
            f"(inner join of {_names(list(series))} is empty); {spans}"
        )
    common.name = "date"
    frame = pd.DataFrame(
        {sym: s.loc[common].to_numpy() for sym, s in trimmed.items()}, index=common
    )
    return frame.astype("float64")


def _window(
    index: pd.DatetimeIndex, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> np.ndarray:
    """Boolean mask of shape (n,) of ``index`` within [start, end]; a date-only end covers its day."""
    mask = np.ones(len(index), dtype=bool)
    if start is not None:
        mask &= index >= start
    if end is not None:
        mask &= index < end + pd.Timedelta(days=1) if end == end.normalize() else index <= end
    return mask
