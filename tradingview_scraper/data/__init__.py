"""Price data sources: skfolio's embedded datasets, user price tables and TradingView chart exports.

:func:`load_prices` reads a profile's close prices from any source (``_skfolio``,
``_tables``, ``_tradingview``, over the readers of ``_readers`` and the per-symbol
validation of ``_series``) and inner-joins their calendars; :func:`checked_prices` does the
same after the data-quality pass of ``_quality`` on the symbols' own series; :func:`check_source` checks a
``data`` block (``_checks``) before any price is read; ``_returns`` turns prices into
returns. Only numpy, pandas and the standard library are imported at the top of a module:
skfolio and pyarrow load when a source needs them.
"""

from ._checks import LAYOUTS, SKFOLIO_DATASETS, SOURCES, RowLabel
from ._prices import check_source, checked_prices, load_prices
from ._quality import DATA_QUALITY_DEFAULTS, data_quality_policy, quality_findings
from ._returns import periods_per_year, prices_to_returns
from ._tables import DATE_COLUMNS

__all__ = [
    "DATA_QUALITY_DEFAULTS",
    "DATE_COLUMNS",
    "LAYOUTS",
    "SKFOLIO_DATASETS",
    "SOURCES",
    "RowLabel",
    "check_source",
    "checked_prices",
    "data_quality_policy",
    "load_prices",
    "periods_per_year",
    "prices_to_returns",
    "quality_findings",
]
