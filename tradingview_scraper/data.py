"""Price data sources: skfolio's embedded datasets, user price tables and TradingView chart exports."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .deps import export_files
from .deps import resolve_path as _resolve
from .errors import ConfigError, DataError

#: Valid values of ``data["source"]``; the first is the default.
SOURCES: tuple[str, ...] = ("skfolio", "table", "tradingview")
#: skfolio datasets that ship inside the package (the others download): name -> loader.
SKFOLIO_DATASETS: dict[str, str] = {
    "sp500": "load_sp500_dataset",
    "factors": "load_factors_dataset",
}
#: Valid values of ``data["layout"]`` for ``source="table"``.
LAYOUTS: tuple[str, ...] = ("wide", "long")
#: Column names (case-insensitive) recognised as the date column.
DATE_COLUMNS: tuple[str, ...] = ("date", "time", "timestamp", "datetime")

_TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
_MAX_LISTED = 10
_EPOCH_MIN = 1e8  # unix seconds below this (before 1973-03) are not accepted as dates
_EPOCH_MS = 1e11  # unix times at or above this are milliseconds
_TZ_SUFFIX = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$")
_DATES_HELP = "expected ISO dates (YYYY-MM-DD[ HH:MM:SS]) or unix seconds"
_PRICES_HELP = "prices must be finite numbers > 0"

RowLabel = Callable[[int], str]


# --------------------------------------------------------------------------- public API


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
    if not isinstance(data, Mapping):
        raise ConfigError(f"data must be a mapping with a 'source' key, got {type(data).__name__}")
    source, start, end = _source_and_bounds(data)
    if source == "skfolio":
        series = _load_skfolio(data, symbols)
    elif source == "table":
        series = _load_table(data, symbols, Path(base_dir))
    else:
        series = _load_tradingview(data, symbols, Path(base_dir))
    return _join(series, data, start, end)


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


# --------------------------------------------------------------------------- loaders


def _load_skfolio(data: Mapping[str, Any], symbols: Sequence[str] | None) -> dict[str, pd.Series]:
    """Series per symbol of one of skfolio's offline datasets."""
    name = _dataset(data)
    import skfolio.datasets  # lazy: importing skfolio takes ~1.5 s

    frame = getattr(skfolio.datasets, SKFOLIO_DATASETS[name])()
    where = f"skfolio dataset {name!r}"
    wanted = _select(symbols, [str(c) for c in frame.columns], where)
    frame.columns = [str(c) for c in frame.columns]
    dates = pd.DatetimeIndex(frame.index).as_unit("ns")
    rows = np.arange(len(frame))
    return {
        sym: _build_series(
            where,
            sym,
            dates,
            frame[sym],
            frame[sym].isna().to_numpy(),
            rows,
            _row_label,
            missing_ok=True,
        )
        for sym in wanted
    }


def _load_table(
    data: Mapping[str, Any], symbols: Sequence[str] | None, base_dir: Path
) -> dict[str, pd.Series]:
    """Series per symbol of a wide or long parquet/CSV price table."""
    path = _table_path(data, base_dir)
    layout = data.get("layout")
    if path.name.lower().endswith((".parquet", ".pq")):
        raw, missing, index_cols = _read_parquet(path)
        label = _row_label
    else:
        raw, missing = _read_csv(path)
        index_cols = []
        label = _line_label
    lowered = {str(c).lower(): str(c) for c in raw.columns}
    if layout is None:
        layout = "long" if "symbol" in lowered else "wide"
    if layout == "long":
        return _long_table(path, raw, missing, lowered, symbols, label)
    return _wide_table(path, raw, missing, lowered, index_cols, symbols, label)


def _wide_table(
    path: Path,
    raw: pd.DataFrame,
    missing: pd.DataFrame,
    lowered: dict[str, str],
    index_cols: list[str],
    symbols: Sequence[str] | None,
    label: RowLabel,
) -> dict[str, pd.Series]:
    """Series per symbol of a wide table: a date column and one column per symbol."""
    columns = [str(c) for c in raw.columns]
    named = [lowered[n] for n in DATE_COLUMNS if n in lowered]
    date_col = named[0] if named else (index_cols[0] if index_cols else columns[0])
    price_cols = [c for c in columns if c != date_col and not c.startswith("__index_level_")]
    if not price_cols:
        raise DataError(
            f"{path}: a wide table needs a date column and one column per symbol; "
            f"found only {_names(columns)}"
        )
    wanted = _select(symbols, price_cols, str(path))
    rows = np.arange(len(raw))
    dates = _parse_dates(path, date_col, raw[date_col], missing[date_col].to_numpy(), rows, label)
    return {
        sym: _build_series(
            path, sym, dates, raw[sym], missing[sym].to_numpy(), rows, label, missing_ok=True
        )
        for sym in wanted
    }


def _long_table(
    path: Path,
    raw: pd.DataFrame,
    missing: pd.DataFrame,
    lowered: dict[str, str],
    symbols: Sequence[str] | None,
    label: RowLabel,
) -> dict[str, pd.Series]:
    """Series per symbol of a long table with columns (date, symbol, close)."""
    date_names = [lowered[n] for n in DATE_COLUMNS if n in lowered]
    absent = [n for n in ("symbol", "close") if n not in lowered]
    if not date_names:
        absent.insert(0, "date")
    if absent:
        raise DataError(
            f"{path}: a long table needs columns date, symbol, close (case-insensitive); "
            f"missing {_names(absent)}, found {_names([str(c) for c in raw.columns])}"
        )
    date_col, sym_col, close_col = date_names[0], lowered["symbol"], lowered["close"]
    sym_missing = missing[sym_col].to_numpy()
    if sym_missing.any():
        row = int(np.argmax(sym_missing))
        raise DataError(f"{path}: {label(row)}: empty symbol; every row needs a symbol")
    sym_values = raw[sym_col].astype(str).str.strip().to_numpy()
    available = list(dict.fromkeys(sym_values))
    wanted = _select(symbols, available, str(path))
    out: dict[str, pd.Series] = {}
    for sym in wanted:
        rows = np.flatnonzero(sym_values == sym)
        dates = _parse_dates(
            path,
            date_col,
            raw[date_col].iloc[rows],
            missing[date_col].to_numpy()[rows],
            rows,
            label,
            symbol=sym,
        )
        out[sym] = _build_series(
            path,
            sym,
            dates,
            raw[close_col].iloc[rows],
            missing[close_col].to_numpy()[rows],
            rows,
            label,
            missing_ok=False,
        )
    return out


def _load_tradingview(
    data: Mapping[str, Any], symbols: Sequence[str] | None, base_dir: Path
) -> dict[str, pd.Series]:
    """Series per symbol of a directory of TradingView chart exports."""
    directory, mapping = _export_dir(data, base_dir)
    if mapping is None:
        mapping = export_files(directory, None)
    wanted = _select(symbols, list(mapping), str(directory))
    out: dict[str, pd.Series] = {}
    for sym in wanted:
        path = mapping[sym]
        if not path.is_file():
            raise DataError(f"TradingView export for symbol {sym!r} not found: {path}")
        raw, missing = _read_csv(path)
        lowered = {str(c).lower(): str(c) for c in raw.columns}
        absent = [n for n in ("time", "close") if n not in lowered]
        if absent:
            raise DataError(
                f"{path}: symbol {sym!r}: a TradingView export needs columns time and close "
                f"(time, open, high, low, close, Volume); missing {_names(absent)}, found "
                f"{_names([str(c) for c in raw.columns])}"
            )
        rows = np.arange(len(raw))
        time_col, close_col = lowered["time"], lowered["close"]
        dates = _parse_dates(
            path,
            time_col,
            raw[time_col],
            missing[time_col].to_numpy(),
            rows,
            _line_label,
            symbol=sym,
        )
        out[sym] = _build_series(
            path,
            sym,
            dates,
            raw[close_col],
            missing[close_col].to_numpy(),
            rows,
            _line_label,
            missing_ok=False,
        )
    return out


# --------------------------------------------------------------------------- readers


def _read_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All cells of a CSV file as stripped text, and the mask of empty cells."""
    try:
        raw = pd.read_csv(
            path, dtype=str, na_filter=False, encoding="utf-8-sig", skipinitialspace=True
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: empty file (no header, no rows); expected a CSV price file"
        ) from None
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {_one_line(exc)}") from None
    if raw.empty:
        raise DataError(f"{path}: no data rows (only the header {_names(list(raw.columns))})")
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.apply(lambda col: col.str.strip())
    return raw, raw.eq("")


def _read_parquet(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Columns of a parquet file, the mask of null values and the stored pandas index columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as parquet: {_one_line(exc)}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows (columns {_names(table.column_names)})")
    meta = table.schema.pandas_metadata or {}
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    names = [str(c) for c in table.column_names]
    raw = pd.DataFrame({n: table.column(i).to_pandas() for i, n in enumerate(names)}, columns=names)
    missing = pd.DataFrame(
        {
            n: pc.is_null(table.column(i)).to_numpy(zero_copy_only=False)
            for i, n in enumerate(names)
        },
        columns=names,
    )
    return raw, missing, index_cols


# --------------------------------------------------------------------------- validation


def _parse_dates(
    file: object,
    column: str,
    raw: pd.Series,
    missing: np.ndarray,
    rows: np.ndarray,
    label: RowLabel,
    *,
    symbol: str | None = None,
) -> pd.DatetimeIndex:
    """Parse a date column of shape (n,) into a tz-naive datetime64[ns] index of shape (n,)."""
    who = f"symbol {symbol!r}, " if symbol is not None else ""
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(f"{file}: {who}{label(rows[i])}: empty {column!r}; {_DATES_HELP}")
    raw = raw.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        idx = pd.DatetimeIndex(raw)
    elif pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        idx = _from_epoch(file, who, column, raw.to_numpy(dtype=float), raw, rows, label)
    else:
        text = raw.astype(str).str.strip()
        if text.str.fullmatch(r"-?\d+(?:\.\d+)?").all():
            idx = _from_epoch(file, who, column, text.astype(float).to_numpy(), raw, rows, label)
        else:
            idx = _from_text(text)
            bad = np.asarray(idx.isna())
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{file}: {who}{label(rows[i])}: cannot parse {column!r} value "
                    f"{_show(raw.iloc[i])} as a date; {_DATES_HELP}"
                )
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    return idx.as_unit("ns")


def _from_text(text: pd.Series) -> pd.DatetimeIndex:
    """Parse date strings, ISO 8601 first; a trailing UTC offset is dropped (wall-clock time kept)."""
    text = text.str.replace(_TZ_SUFFIX, r"\1", regex=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        except (ValueError, TypeError):
            parsed = pd.Series(pd.NaT, index=text.index)
        if parsed.isna().any():
            try:
                alt = pd.to_datetime(text, errors="coerce")
            except (ValueError, TypeError):
                alt = parsed
            if alt.isna().sum() < parsed.isna().sum():
                parsed = alt
    return pd.DatetimeIndex(parsed)


def _from_epoch(
    file: object,
    who: str,
    column: str,
    values: np.ndarray,
    raw: pd.Series,
    rows: np.ndarray,
    label: RowLabel,
) -> pd.DatetimeIndex:
    """Unix seconds (or milliseconds, when every value is >= 1e11) as UTC timestamps."""
    bad = ~np.isfinite(values) | (values < _EPOCH_MIN)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{file}: {who}{label(rows[i])}: {column!r} value {_show(raw.iloc[i])} is not a date; "
            f"{_DATES_HELP} (>= {_EPOCH_MIN:.0e})"
        )
    unit = "ms" if (values >= _EPOCH_MS).all() else "s"
    return pd.DatetimeIndex(pd.to_datetime(values, unit=unit))


def _build_series(
    file: object,
    symbol: str,
    dates: pd.DatetimeIndex,
    raw: pd.Series,
    missing: np.ndarray,
    rows: np.ndarray,
    label: RowLabel,
    *,
    missing_ok: bool,
) -> pd.Series:
    """Validate one symbol's prices and return its float64 series on its own calendar.

    ``dates``, ``raw``, ``missing`` and ``rows`` (0-based row numbers in the file) all
    have shape (n,). Missing cells are dropped when ``missing_ok``, else an error.
    """
    raw = raw.reset_index(drop=True)
    if missing.any() and not missing_ok:
        i = int(np.argmax(missing))
        raise DataError(
            f"{file}: symbol {symbol!r}, {label(rows[i])} ({_day(dates[i])}): empty price; "
            f"{_PRICES_HELP}"
        )
    if pd.api.types.is_bool_dtype(raw.dtype):
        values = np.full(len(raw), np.nan)
    else:
        numeric = pd.to_numeric(raw.where(~missing), errors="coerce")
        values = pd.Series(numeric).to_numpy(dtype=float, na_value=np.nan)
    bad = ~missing & ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.argmax(bad))
        value = values[i]
        if np.isnan(value):
            text = str(raw.iloc[i]).strip().lower()
            why = "is NaN" if text in {"nan", "na", "n/a", "null", "none"} else "is not a number"
        elif np.isinf(value):
            why = "is infinite"
        else:
            why = "is not > 0"
        raise DataError(
            f"{file}: symbol {symbol!r}, {label(rows[i])} ({_day(dates[i])}): price "
            f"{_show(raw.iloc[i])} {why}; {_PRICES_HELP}"
        )
    keep = ~missing
    dates, values, rows = dates[keep], values[keep], rows[keep]
    steps = np.diff(dates.asi8)
    if (steps <= 0).any():
        j = int(np.argmax(steps <= 0)) + 1
        if steps[j - 1] == 0:
            raise DataError(
                f"{file}: symbol {symbol!r}, {label(rows[j])}: duplicate date {_day(dates[j])} "
                f"(also at {label(rows[j - 1])}); each date may appear once per symbol"
            )
        raise DataError(
            f"{file}: symbol {symbol!r}, {label(rows[j])}: date {_day(dates[j])} comes after "
            f"{_day(dates[j - 1])} ({label(rows[j - 1])}); dates must be sorted ascending "
            "(unsorted input is not reordered)"
        )
    return pd.Series(values, index=dates, name=symbol, dtype="float64")


# --------------------------------------------------------------------------- join


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


# --------------------------------------------------------------------------- helpers


def _select(symbols: Sequence[str] | None, available: list[str], where: str) -> list[str]:
    """The requested symbols in order (all of ``available`` when None); unknown ones are an error."""
    if symbols is None:
        return list(available)
    if isinstance(symbols, str) or not all(isinstance(s, str) for s in symbols):
        raise ConfigError(f"symbols must be a list of strings, got {symbols!r}")
    symbols = list(symbols)
    if not symbols:
        raise ConfigError("symbols is empty; pass None for every symbol of the source")
    dupes = sorted({s for s in symbols if symbols.count(s) > 1})
    if dupes:
        raise ConfigError(f"symbols lists {_names(dupes)} more than once")
    known = set(available)
    unknown = [s for s in symbols if s not in known]
    if unknown:
        what = "symbol" if len(unknown) == 1 else "symbols"
        raise DataError(
            f"{where}: {what} {_names(unknown)} not found; available: {_names(available)}"
        )
    return symbols


def _source_and_bounds(data: Mapping[str, Any]) -> tuple[str, pd.Timestamp | None, pd.Timestamp | None]:
    """The checked ``source``, ``start`` and ``end`` of a data block."""
    source = data.get("source", SOURCES[0])
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}: valid sources are {_names(SOURCES)}")
    start, end = _bound(data, "start"), _bound(data, "end")
    if start is not None and end is not None and start > end:
        raise ConfigError(f"data.start {data['start']!r} is after data.end {data['end']!r}")
    return source, start, end


def _dataset(data: Mapping[str, Any]) -> str:
    """The checked skfolio ``dataset`` name of a ``source="skfolio"`` block."""
    name = data.get("dataset", "sp500")
    if name not in SKFOLIO_DATASETS:
        raise ConfigError(
            f"unknown skfolio dataset {name!r}: valid datasets are {_names(SKFOLIO_DATASETS)} "
            "(the other skfolio datasets download from the internet and are not supported)"
        )
    return name


def _table_path(data: Mapping[str, Any], base_dir: Path) -> Path:
    """The existing price-table file of a ``source="table"`` block (layout checked too)."""
    path = _resolve(data, base_dir)
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown table layout {layout!r}: valid layouts are {_names(LAYOUTS)}")
    if not path.exists():
        raise DataError(f"price table not found: {path} (data.path resolved against {base_dir})")
    if not path.is_file():
        raise DataError(f"price table {path} is a directory; expected a .parquet, .pq or .csv file")
    if not path.name.lower().endswith(_TABLE_SUFFIXES):
        raise DataError(
            f"price table {path} has an unsupported extension; expected {_names(_TABLE_SUFFIXES)}"
        )
    return path


def _export_dir(data: Mapping[str, Any], base_dir: Path) -> tuple[Path, dict[str, Path] | None]:
    """The existing export directory of a ``source="tradingview"`` block, and ``files`` as paths."""
    directory = _resolve(data, base_dir)
    if not directory.exists():
        raise DataError(
            f"TradingView export directory not found: {directory} "
            f"(data.path resolved against {base_dir})"
        )
    if not directory.is_dir():
        raise DataError(
            f"TradingView data.path {directory} is not a directory; expected a directory of "
            "chart-export CSV files"
        )
    files = data.get("files")
    if files is None:
        return directory, None
    if not isinstance(files, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise ConfigError("data.files must map symbol -> CSV file name inside data.path")
    return directory, {sym: directory / name for sym, name in files.items()}


def _bound(data: Mapping[str, Any], key: str) -> pd.Timestamp | None:
    """``data[key]`` as a tz-naive Timestamp, or None when absent."""
    value = data.get(key)
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise ConfigError(f"data.{key} {value!r} is not a date; expected an ISO date (YYYY-MM-DD)")
    return stamp.tz_localize(None) if stamp.tz is not None else stamp


def _names(names: Sequence[str] | Mapping[str, Any]) -> str:
    """Quoted, comma-separated names, truncated after a few."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _row_label(i: int) -> str:
    """Label of 0-based data row ``i`` of a parquet file or DataFrame (1-based)."""
    return f"row {int(i) + 1}"


def _line_label(i: int) -> str:
    """Label of 0-based data row ``i`` of a CSV file: its line number (the header is line 1)."""
    return f"line {int(i) + 2}"


def _day(stamp: pd.Timestamp) -> str:
    """A timestamp as ISO text, without a midnight time."""
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat()


def _show(value: object) -> str:
    """A cell value for a message: strings quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
