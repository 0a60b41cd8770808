"""Prices from a directory of TradingView chart exports (one CSV per symbol)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..deps import export_files
from ..errors import DataError
from ._checks import _export_dir, _line_label, _names, _select
from ._readers import _read_csv
from ._series import _build_series, _parse_dates


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
