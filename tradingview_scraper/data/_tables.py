"""Prices from a user's price table: a wide or long parquet/CSV file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._checks import RowLabel, _line_label, _names, _row_label, _select, _table_path
from ._readers import _read_csv, _read_parquet
from ._series import _build_series, _parse_dates

#: Column names (case-insensitive) recognised as the date column.
DATE_COLUMNS: tuple[str, ...] = ("date", "time", "timestamp", "datetime")


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
