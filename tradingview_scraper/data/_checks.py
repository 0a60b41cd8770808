"""Checks of a ``data`` block (source, dataset, layout, paths, dates, symbols) and the wording of data errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..deps import resolve_path as _resolve
from ..errors import ConfigError, DataError

#: Valid values of ``data["source"]``; the first is the default.
SOURCES: tuple[str, ...] = ("skfolio", "table", "tradingview")
#: skfolio datasets that ship inside the package (the others download): name -> loader.
SKFOLIO_DATASETS: dict[str, str] = {
    "sp500": "load_sp500_dataset",
    "factors": "load_factors_dataset",
}
#: Valid values of ``data["layout"]`` for ``source="table"``.
LAYOUTS: tuple[str, ...] = ("wide", "long")

_TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
_MAX_LISTED = 10

RowLabel = Callable[[int], str]


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
