"""Reading CSV and parquet price files into text or typed cells and a mask of empty cells."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import DataError, one_line
from ._checks import _names


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
        raise DataError(f"{path}: cannot read as CSV: {one_line(exc)}") from None
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
        raise DataError(f"{path}: cannot read as parquet: {one_line(exc)}") from None
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
