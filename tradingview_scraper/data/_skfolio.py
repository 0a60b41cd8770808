"""Prices from skfolio's embedded (offline) datasets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._checks import SKFOLIO_DATASETS, _dataset, _row_label, _select
from ._series import _build_series


def _load_skfolio(data: Mapping[str, Any], symbols: Sequence[str] | None) -> dict[str, pd.Series]:
    """Series per symbol of one of skfolio's offline datasets."""
    name = _dataset(data)
    import skfolio.datasets  # lazy: skfolio is a heavy import (docs/performance.md)

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
