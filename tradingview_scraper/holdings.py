"""The holdings-file format: a book as rows of symbol, direction and weight (or quantity), from CSV or JSON."""

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
    """The current book from a holdings file: rows ``{"symbol", "direction", "weight"}`` (or ``"quantity"``).

    Parameters
    ----------
    path : path-like
        A CSV file with a header ``symbol,direction,weight`` (any column order, other
        columns ignored), or a JSON file holding a list of such objects or an object
        with a ``"weights"`` list (so a run's ``flattened_<profile>.json`` is a valid
        book). ``weight`` is the gross fraction of portfolio value (>= 0); a short is
        ``direction`` SHORT with a positive weight. Gross weights add up to at most 1;
        what is left is cash. A file with a header and no rows is an all-cash book. A
        file may give ``quantity`` (units held, >= 0, a short with direction SHORT)
        instead of ``weight``: the run values it at its last prices (:func:`value_quantities`).

    Returns
    -------
    list of dict
        One row per (symbol, direction), in file order, with ``weight`` or ``quantity``
        (one of the two for the whole file).

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
    measure = _measure(path, records)
    for where, rec in records:
        row = _holding(path, where, rec, measure)
        key = (row["symbol"], row["direction"])
        if key in seen:
            raise DataError(f"{path}: {where}: {key[0]} {key[1]} repeats {seen[key]}; give each (symbol, direction) once")
        seen[key] = where
        rows.append(row)
    gross = math.fsum(r.get("weight", 0.0) for r in rows)
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
            missing = [c for c in ("symbol", "direction") if c not in header]
            missing += [] if {"weight", "quantity"} & set(header) else ["weight"]
            if missing:
                raise DataError(
                    f"{path}: line 1: a holdings CSV needs columns symbol, direction, weight (or quantity); missing "
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


def _measure(path: Path, records: Sequence[tuple[str, dict]]) -> str:
    """``"weight"`` or ``"quantity"``: what the file's rows give (one of the two, for every row)."""
    given = {k for _, rec in records for k in ("weight", "quantity") if rec.get(k) not in (None, "")}
    if given == {"weight", "quantity"}:
        where = next(w for w, rec in records if rec.get("quantity") not in (None, ""))
        raise DataError(f"{path}: {where}: a book gives weights or quantities, not both; give one column")
    return "quantity" if given == {"quantity"} else "weight"


def _holding(path: Path, where: str, rec: Mapping, measure: str = "weight") -> dict:
    missing = [c for c in ("symbol", "direction", measure) if rec.get(c) in (None, "")]
    if missing:
        raise DataError(f"{path}: {where}: missing {', '.join(missing)} (a row is symbol, direction, {measure})")
    symbol = str(rec["symbol"]).strip()
    direction = str(rec["direction"]).strip().upper()
    if not symbol:
        raise DataError(f"{path}: {where}: empty symbol")
    if direction not in DIRECTIONS:
        raise DataError(f"{path}: {where}: direction {rec['direction']!r} is not LONG or SHORT")
    raw = rec[measure]
    try:
        weight = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight) or weight < 0:
        raise DataError(
            f"{path}: {where}: {measure} {raw!r} of {symbol} {direction} is not a finite number >= 0 "
            f"(a short is direction SHORT with a positive {measure})"
        )
    return {"symbol": symbol, "direction": direction, measure: weight}
