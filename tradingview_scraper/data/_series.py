"""One symbol's dates and prices, parsed and validated into a float64 series on its own calendar."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from ..errors import DataError
from ._checks import RowLabel, _day, _show

_EPOCH_MIN = 1e8  # unix seconds below this (before 1973-03) are not accepted as dates
_EPOCH_MS = 1e11  # unix times at or above this are milliseconds
_TZ_SUFFIX = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$")
_DATES_HELP = "expected ISO dates (YYYY-MM-DD[ HH:MM:SS]) or unix seconds"
_PRICES_HELP = "prices must be finite numbers > 0"


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
    out = pd.Series(values, index=dates, name=symbol, dtype="float64")
    out.attrs["file"] = str(file)  # where the prices come from, for the data-quality findings
    return out
