"""Rebalance: the trades from the current book to a run's flattened target weights, and their cost."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import DataError

DIRECTIONS = ("LONG", "SHORT")
#: Largest gross weight a book may hold (fractions of portfolio value; the rest is cash).
MAX_GROSS = 1.0 + 1e-6


def read_holdings(path: Path | str) -> list[dict]:
    """The current book from a holdings file: rows ``{"symbol", "direction", "weight"}``.

    Parameters
    ----------
    path : path-like
        A CSV file with a header ``symbol,direction,weight`` (any column order, other
        columns ignored), or a JSON file holding a list of such objects or an object
        with a ``"weights"`` list (so a run's ``flattened_<profile>.json`` is a valid
        book). ``weight`` is the gross fraction of portfolio value (>= 0); a short is
        ``direction`` SHORT with a positive weight. Gross weights add up to at most 1;
        what is left is cash. A file with a header and no rows is an all-cash book.

    Returns
    -------
    list of dict
        One row per (symbol, direction), in file order.

    Raises
    ------
    DataError
        The file is missing or unreadable, a column is missing, or a row has an empty
        symbol, a direction other than LONG/SHORT, a weight that is not a finite number
        >= 0, or repeats a (symbol, direction); or the gross weights add up to more
        than 1. The message names the file and the row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"holdings file {path} not found; give a CSV (symbol,direction,weight) or JSON file")
    if path.suffix.lower() == ".json":
        records = _json_records(path)
    else:
        records = _csv_records(path)
    rows: list[dict] = []
    seen: dict[tuple[str, str], str] = {}
    for where, rec in records:
        row = _holding(path, where, rec)
        key = (row["symbol"], row["direction"])
        if key in seen:
            raise DataError(f"{path}: {where}: {key[0]} {key[1]} repeats {seen[key]}; give each (symbol, direction) once")
        seen[key] = where
        rows.append(row)
    gross = math.fsum(r["weight"] for r in rows)
    if gross > MAX_GROSS:
        raise DataError(
            f"{path}: gross weights add up to {gross:.6g}, more than 1; weights are fractions of portfolio value "
            "(the rest is cash)"
        )
    return rows


def _csv_records(path: Path) -> list[tuple[str, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            header = [str(c).strip().lower() for c in reader.fieldnames or []]
            missing = [c for c in ("symbol", "direction", "weight") if c not in header]
            if missing:
                raise DataError(
                    f"{path}: line 1: a holdings CSV needs columns symbol, direction, weight; missing "
                    f"{', '.join(missing)} (found {', '.join(header) or 'no header'})"
                )
            out = []
            for line, rec in enumerate(reader, start=2):
                clean = {str(k).strip().lower(): v for k, v in rec.items() if k is not None}
                if None in rec:
                    raise DataError(f"{path}: line {line}: more fields than the header's {len(header)}")
                out.append((f"line {line}", clean))
            return out
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None


def _json_records(path: Path) -> list[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read as JSON: {exc}") from None
    rows = data.get("weights") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a list of {{symbol, direction, weight}} objects or an object with 'weights'")
    prefix = "weights" if isinstance(data, dict) else "row"
    out = []
    for i, rec in enumerate(rows):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {prefix}[{i}]: expected an object with symbol, direction, weight, got {rec!r}")
        out.append((f"{prefix}[{i}]", {str(k).lower(): v for k, v in rec.items()}))
    return out


def _holding(path: Path, where: str, rec: Mapping) -> dict:
    missing = [c for c in ("symbol", "direction", "weight") if rec.get(c) in (None, "")]
    if missing:
        raise DataError(f"{path}: {where}: missing {', '.join(missing)} (a row is symbol, direction, weight)")
    symbol = str(rec["symbol"]).strip()
    direction = str(rec["direction"]).strip().upper()
    if not symbol:
        raise DataError(f"{path}: {where}: empty symbol")
    if direction not in DIRECTIONS:
        raise DataError(f"{path}: {where}: direction {rec['direction']!r} is not LONG or SHORT")
    raw = rec["weight"]
    try:
        weight = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight) or weight < 0:
        raise DataError(
            f"{path}: {where}: weight {raw!r} of {symbol} {direction} is not a finite number >= 0 "
            "(a short is direction SHORT with a positive weight)"
        )
    return {"symbol": symbol, "direction": direction, "weight": weight}


def rebalance(
    target: Sequence[Mapping],
    current: Sequence[Mapping],
    *,
    cost_rate: float,
    current_sleeves: bool = False,
) -> dict:
    """Trades from ``current`` to ``target``, per (symbol, direction), with turnover and cost.

    Parameters
    ----------
    target : list of dict
        The flattened rows of a run (``flattened_<profile>.json`` ``weights``): ``symbol``,
        ``direction``, ``weight`` (gross) and ``sleeves`` (contribution per sleeve).
    current : list of dict
        The current book: rows with ``symbol``, ``direction``, ``weight``; with
        ``current_sleeves``, a previous run's flattened rows (with ``sleeves``).
    cost_rate : float
        Commission + slippage per unit of traded weight (the backtest's friction rule).
    current_sleeves : bool
        Whether ``current`` rows carry ``sleeves`` (a previous run): then each row's
        trade is also split by sleeve.

    Returns
    -------
    dict
        ``rows``: one per (symbol, direction) held now or in the target, sorted by
        ``|trade|`` descending, each with ``current_weight``, ``target_weight`` (exactly
        the flattened weight), ``trade = target_weight - current_weight``, ``net_trade``
        (signed: negative for SHORT), ``target_sleeves``, ``current_sleeves`` (None
        without a previous run) and ``drivers`` (sleeves ordered by how much of the trade
        they cause, or by target contribution without a previous run); and ``traded``
        (``sum |trade|``), ``turnover_one_way`` (``traded / 2``), ``cost_rate``,
        ``estimated_cost`` (``cost_rate * traded``, a fraction of portfolio value), and
        the book totals ``current_gross``, ``target_gross``, ``n_trades``.
    """
    now = {(str(r["symbol"]), str(r["direction"])): r for r in current}
    tgt = {(str(r["symbol"]), str(r["direction"])): r for r in target}
    keys = list(tgt) + [k for k in now if k not in tgt]
    rows = []
    for key in keys:
        t, c = tgt.get(key), now.get(key)
        tw = float(t["weight"]) if t is not None else 0.0
        cw = float(c["weight"]) if c is not None else 0.0
        trade = tw - cw
        sign = -1.0 if key[1] == "SHORT" else 1.0
        t_sl = {str(s): float(v) for s, v in (t or {}).get("sleeves", {}).items()}
        c_sl = {str(s): float(v) for s, v in (c or {}).get("sleeves", {}).items()} if current_sleeves else None
        if c_sl is not None:
            change = {s: t_sl.get(s, 0.0) - c_sl.get(s, 0.0) for s in dict.fromkeys([*t_sl, *c_sl])}
            drivers = [s for s in sorted(change, key=lambda s: (-abs(change[s]), s)) if change[s] != 0.0]
        else:
            drivers = sorted(t_sl, key=lambda s: (-t_sl[s], s))
        rows.append(
            {
                "symbol": key[0],
                "direction": key[1],
                "current_weight": cw,
                "target_weight": tw,
                "trade": trade,
                "net_trade": sign * trade,
                "target_sleeves": t_sl,
                "current_sleeves": c_sl,
                "drivers": drivers,
            }
        )
    rows.sort(key=lambda r: (-abs(r["trade"]), r["symbol"], r["direction"]))
    traded = math.fsum(abs(r["trade"]) for r in rows)
    return {
        "rows": rows,
        "n_trades": sum(1 for r in rows if r["trade"] != 0.0),
        "current_gross": math.fsum(r["current_weight"] for r in rows),
        "target_gross": math.fsum(r["target_weight"] for r in rows),
        "traded": traded,
        "turnover_one_way": traded / 2.0,
        "cost_rate": float(cost_rate),
        "estimated_cost": float(cost_rate) * traded,
    }


def other_profile(previous_run: str, profile: str | None, current: str) -> str:
    """The warning a previous run of another meta profile gets, on the console and in the report."""
    return (
        f"previous_run {previous_run!r} is a run of meta profile {profile!r}, not {current!r}: "
        "the rebalance and the changes compare two different portfolios"
    )


def sleeve_weight_changes(target: Mapping[str, float], previous: Mapping[str, float]) -> dict:
    """Per sleeve: previous and target meta weight and the change (a sleeve absent on one side is 0)."""
    out = {}
    for s in dict.fromkeys([*target, *previous]):
        t, p = float(target.get(s, 0.0)), float(previous.get(s, 0.0))
        out[str(s)] = {"previous": p, "target": t, "change": t - p}
    return out
