"""External sleeves: a strategy run elsewhere enters the meta layer from its returns and holdings files.

A meta profile's sleeve ``{"id": "trend", "external": {"returns": "path", "holdings": "path"}}``
is read here into the sleeve interface every node exposes (``returns.parquet``,
``weights_<p>.json``, ``health.json``, ``sign_test.json``, ``provenance.json``), so the meta
layer, the risk stage, flattening and the report take it like any sleeve. Functions of the
files' contents; the ``external_sleeve`` step is :func:`sleeve_interface`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from .deps import file_sha256, resolve_against
from .errors import DataError

#: How far a book's gross weights may be from 1: the flattening's own conservation tolerance.
BOOK_TOL = 1e-9


def external_files(config: Mapping, risk_profiles: list[str], base_dir: Path | str) -> dict[str, object]:
    """The files external sleeve ``config`` reads: ``returns`` (a path), ``holdings`` (one path per risk
    profile, in order) and, when it gives one, ``prices`` (its price table)."""
    ext = config["external"]
    holdings = ext["holdings"]
    books = [holdings[p] for p in risk_profiles] if isinstance(holdings, Mapping) else [holdings] * len(risk_profiles)
    out = {"returns": resolve_against(ext["returns"], base_dir), "holdings": [resolve_against(b, base_dir) for b in books]}
    if ext.get("prices"):
        out["prices"] = resolve_against(ext["prices"], base_dir)
    return out


def read_prices(path: Path | str, symbols=None):
    """An external sleeve's price table: DataFrame of shape (n_dates, n_symbols), as a ``"table"`` data
    source reads it (:func:`data.load_prices`: a date column and one column per symbol, or the long
    layout ``date,symbol,close``; CSV or parquet; an empty cell of a wide table is no price that day).

    Raises
    ------
    DataError
        The table is missing or unreadable, or a row or price is refused (naming the file, symbol and
        row), or a symbol of ``symbols`` has no column.
    """
    from .data import load_prices

    return load_prices({"source": "table", "path": str(path)}, symbols)


def unpriced(config: Mapping, risk_profiles: list[str], base_dir: Path | str, who: str) -> str | None:
    """The line that refuses trading a book holding external sleeve ``config``'s symbols, or None when its
    price table gives every symbol its books hold.

    Raises
    ------
    DataError
        Its books or its price table cannot be read (naming the file and row).
    """
    files = external_files(config, risk_profiles, base_dir)
    held = list(dict.fromkeys(r["symbol"] for h in files["holdings"] for r in read_book(h)))
    if "prices" not in files:
        return (f"{who} holds {held[0]}, which has no price: give its external block a price table, "
                '"prices": "path" (CSV or parquet: a date column and one column per symbol)')  # fmt: skip
    try:
        columns = set(read_prices(files["prices"]).columns)
    except DataError as exc:
        raise DataError(f"{who}: external.prices: {exc}") from None
    missing = [s for s in held if s not in columns]
    if missing:
        return (f"{who} holds {missing[0]}, which has no price: its price table {files['prices']} has no column "
                f"{missing[0]!r}; add one (a date column and one column per symbol)")  # fmt: skip
    return None


def check_files(config: Mapping, risk_profiles: list[str], base_dir: Path | str, who: str) -> None:
    """Refuse, before any work starts, an external sleeve whose files are missing.

    Raises
    ------
    DataError
        Naming the sleeve and the missing file.
    """
    files = external_files(config, risk_profiles, base_dir)
    extra = [("prices", files["prices"])] if "prices" in files else []
    for key, path in [("returns", files["returns"]), *(("holdings", h) for h in files["holdings"]), *extra]:
        if not Path(path).is_file():
            raise DataError(f"{who}: external.{key} file {path} not found")


def read_returns(path: Path | str, risk_profiles: list[str]):
    """An external stream: DataFrame of shape (n_dates, n_risk_profiles), index ``date``.

    Parameters
    ----------
    path : path-like
        A CSV or parquet file with a ``date`` column and either one ``return`` column (taken
        for every risk profile) or one column per risk profile (other columns are ignored).
        A return is a simple per-period return of the sleeve's book, net of its costs.
    risk_profiles : list of str
        The run's risk profiles, the frame's columns in order.

    Raises
    ------
    DataError
        The file is missing or unreadable, has no ``date`` column, neither a ``return`` column
        nor a column for every risk profile, or a row with a date that does not parse, a date
        repeated or out of order, a value that is not a finite number, or a return of -100%
        or less. The message names the file and the row (a CSV's line, a parquet file's row).
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"external returns file {path} not found")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        raw = pd.read_parquet(path) if parquet else pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # a library's parse error, named by file
        raise DataError(f"{path}: cannot read as {'parquet' if parquet else 'CSV'}: {type(exc).__name__}: {exc}") from None
    if parquet and raw.index.name == "date" and "date" not in raw.columns:
        raw = raw.reset_index()
    columns = {str(c).strip().lower(): c for c in raw.columns}

    def where(i: int) -> str:
        return f"row {i}" if parquet else f"line {i + 2}"

    if "date" not in columns:
        raise DataError(f"{path}: no 'date' column (found {', '.join(map(str, raw.columns)) or 'none'})")
    if "return" in columns:
        chosen = {p: columns["return"] for p in risk_profiles}
    else:
        missing = [p for p in risk_profiles if p not in columns]
        if missing:
            raise DataError(
                f"{path}: no 'return' column and no column for risk profile(s) {', '.join(missing)}; give one "
                f"'return' column for every risk profile or one column per risk profile ({', '.join(risk_profiles)})"
            )
        chosen = {p: columns[p] for p in risk_profiles}
    dates = pd.to_datetime(raw[columns["date"]], errors="coerce", format="mixed") if len(raw) else pd.DatetimeIndex([])
    bad = np.flatnonzero(pd.isna(dates).to_numpy()) if len(raw) else []
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{path}: {where(i)}: date {raw[columns['date']].iloc[i]!r} is not a date")
    index = pd.DatetimeIndex(dates)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "repeats" if steps[i - 1] == 0 else "comes before"
        raise DataError(f"{path}: {where(i)}: date {index[i].date()} {what} the previous row's; give one row per date, in order")
    out = {}
    for profile, col in chosen.items():
        values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=float)
        wrong = np.flatnonzero(~np.isfinite(values) | (values <= -1.0))
        if len(wrong):
            i = int(wrong[0])
            value = raw[col].iloc[i]
            shown = repr(value) if isinstance(value, str) else str(value)  # a CSV's text quoted, a parquet number as is
            if math.isfinite(values[i]):
                raise DataError(
                    f"{path}: {where(i)}: return {shown} in column {col!r} is -100% or less; a sleeve's return "
                    "is a simple return > -1"
                )
            raise DataError(f"{path}: {where(i)}: {col!r} value {shown} is not a finite number")
        out[profile] = values
    if len(index) < 2:
        raise DataError(f"{path}: {len(index)} row(s); an external stream needs its returns over the meta layer's windows")
    frame = pd.DataFrame(out, index=pd.DatetimeIndex(index, name="date"))
    from .sleeve import stored_dates

    frame.index = stored_dates(frame.index)
    return frame


def read_book(path: Path | str) -> list[dict]:
    """An external sleeve's book: rows ``symbol``, ``direction``, ``weight``, ``net_weight`` (negative for SHORT).

    The holdings-file format (:func:`holdings.read_holdings`: CSV ``symbol,direction,weight``
    or JSON; weights, not quantities), fully invested: a sleeve's gross weights add up to 1, as a computed sleeve's do,
    so that flattening conserves weight exactly. Zero weights are dropped.

    Raises
    ------
    DataError
        A row the holdings format refuses (naming the file and row), no row with a weight, or
        gross weights that do not add up to 1 within 1e-9.
    """
    from .holdings import read_holdings

    rows = read_holdings(path)
    if any("weight" not in r for r in rows):  # units need a capital and prices the run does not have for it
        raise DataError(f"{path}: an external sleeve's book gives weights, not quantities (columns symbol, direction, weight)")
    gross = math.fsum(r["weight"] for r in rows)
    if abs(gross - 1.0) > BOOK_TOL:
        raise DataError(
            f"{path}: gross weights add up to {gross:.12g}, not 1; an external sleeve's book is fully invested "
            "(give each position its share of the sleeve)"
        )
    return [
        {**r, "net_weight": -r["weight"] if r["direction"] == "SHORT" else r["weight"]} for r in rows if r["weight"] > 0
    ]


def external_sleeve(
    node, risk_profiles: list[str], run_id: str, returns: str, holdings: list[str], digests: Mapping[str, str],
    prices: str | None = None,
) -> dict:
    """The sleeve interface of external node ``node`` from its files.

    Parameters
    ----------
    node : NodeSpec
        The external sleeve.
    risk_profiles : list of str
        The run's risk profiles.
    run_id : str
        The run.
    returns : str
        Its returns file (:func:`read_returns`).
    holdings : list of str
        Its book per risk profile, in ``risk_profiles`` order (:func:`read_book`).
    digests : dict of str -> str
        The sha256 of each file read, for ``provenance.json``.
    prices : str, optional
        Its price table (:func:`read_prices`), read here so that a bad table stops this step,
        naming the file and row; it must price every symbol the books hold.

    Returns
    -------
    dict
        ``returns`` (DataFrame of shape (n_dates, n_risk_profiles)), ``weights`` (risk
        profile -> ``weights_<p>.json`` record), ``health``, ``sign_test``, ``provenance``.
    """
    frame = read_returns(returns, risk_profiles)
    books = {p: read_book(h) for p, h in zip(risk_profiles, holdings, strict=True)}
    if prices is not None:
        held = list(dict.fromkeys(r["symbol"] for rows in books.values() for r in rows))
        read_prices(prices, held)
    sid = node.sleeve_id
    span = {"start": frame.index[0].date().isoformat(), "end": frame.index[-1].date().isoformat(), "n_obs": len(frame)}
    weights = {
        p: {
            "sleeve": sid,
            "profile": None,
            "risk_profile": p,
            "direction": "MIXED" if len({r["direction"] for r in books[p]}) > 1 else books[p][0]["direction"],
            "kind": "external",
            "source": str(h),
            "fitted_on": None,
            "fallback": False,
            "fallback_reason": None,
            "weights": books[p],
        }
        for p, h in zip(risk_profiles, holdings, strict=True)
    }
    health = {
        "sleeve": sid,
        "kind": "external",
        "source": str(returns),
        # The stream's checks (finite, > -100%, dates in order) passed when it was read; the
        # meta layer checks its overlap with the other sleeves (enough common dates).
        "checks": {"finite": True, "above_minus_100pct": True, "dates_ordered": True},
        **span,
    }
    sign_test = {
        "kind": "external",
        "applicable": False,
        "reason": "an external stream is its book's own return as given (LONG and SHORT rows carry their "
        "direction in the holdings file); there is no synthetic-long basket to test",
    }
    provenance = {
        "computed": False,
        "kind": "external",
        "run_id": run_id,
        "sleeve": sid,
        "returns": str(returns),
        "holdings": {p: str(h) for p, h in zip(risk_profiles, holdings, strict=True)},
        **({"prices": str(prices)} if prices is not None else {}),
        "sha256": dict(digests),
        **span,
    }
    return {"returns": frame, "weights": weights, "health": health, "sign_test": sign_test, "provenance": provenance}


def sleeve_interface(node, profiles: list[str], run_id: str, files: Mapping[str, object]) -> dict:
    """The ``external_sleeve`` step: :func:`external_sleeve` of ``node`` on its ``files``.

    ``files``: ``returns`` (the stream's file), ``holdings`` (one book per risk profile, in
    ``profiles`` order; the same file may repeat) and, when the sleeve gives one, ``prices``.
    ``provenance.json`` records each file's sha256, by its absolute path.

    Raises
    ------
    DataError
        A file is missing or a row is refused: one line naming the sleeve, the file and the row.
    """
    holdings = files["holdings"] if isinstance(files["holdings"], list) else [files["holdings"]] * len(profiles)
    prices = files.get("prices")
    read = dict.fromkeys(os.path.abspath(f) for f in [files["returns"], *holdings, *([prices] if prices else [])])
    try:
        return external_sleeve(node, profiles, run_id, files["returns"], holdings, {f: file_sha256(f) for f in read}, prices)
    except DataError as exc:
        raise DataError(f"{node.label}: {exc}") from None
