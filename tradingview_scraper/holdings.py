"""The holdings-file format: a book as rows of symbol, direction and weight (or quantity), from CSV or JSON;
and the checks of a rebalance's book (a holdings file or a previous run's) before any work starts."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
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


# --------------------------------------------------------------------------- a rebalance's book, checked before any work


def check_previous_run(previous_run: str, runs_root: Path | str, risk_profiles: list[str], *, whole: bool) -> str | None:
    """Verify a previous run like a pin, and its book like a holdings file; return its meta profile.

    ``whole``: check every artifact its ledger records (the pre-flight check), not only its books.

    Raises
    ------
    DataError
        The previous run lacks a risk profile's ``flattened_<profile>.json``; is a symlink, is
        being written, did not finish or does not verify (see ``runlock.check_source_run``); or a
        flattened file is not a valid book (see :func:`read_holdings`).
    """
    from . import audit
    from .layout import run_node
    from .runlock import check_source_run

    prev = run_node(previous_run, Path(runs_root))
    who = f"previous_run {previous_run!r}"
    books = [prev.file("flattened", profile=p) for p in risk_profiles]
    missing = [p for p, f in zip(risk_profiles, books, strict=True) if not f.is_file()]
    if missing and not prev.dir.is_symlink():  # a link is refused as such below
        raise DataError(
            f"{who} ({prev.dir}) has no flattened weights for risk profile(s) "
            f"{', '.join(missing)}; give a finished meta run of the same risk profiles"
        )
    check_source_run(prev.dir, books, who=who, hint=f"rerun run {previous_run!r}, or give another run", whole=whole)
    for book in books:
        try:
            read_holdings(book)
        except DataError as exc:
            raise DataError(f"{who}: its book is not a valid book: {exc}") from None
    genesis = audit.genesis_of(prev.dir) or {}
    return genesis.get("meta_profile")


def check_rebalance(
    plan, runs_root: Path | str, run_id: str, previous_run: str | None, holdings: str | None, base_dir: Path | str,
    warn: Callable[[str], None],
) -> None:
    """Check the current book of a rebalance before any work starts.

    A previous run is verified like a pin (:func:`check_previous_run`); a previous run of
    another meta profile is used, with a warning on the console (``warn``).

    Raises
    ------
    ConfigError
        A rebalance of an atomic profile, a previous run that is this run, or a book in
        quantities without trading settings.
    DataError
        The previous run cannot be trusted or its book is not a valid book (see
        :func:`check_previous_run`), or the holdings file is unreadable or has a bad row
        (see :func:`read_holdings`); with trading settings, a held symbol no sleeve
        prices, an external sleeve's included (:func:`check_external_prices`).
    """
    from .errors import ConfigError

    if not (previous_run or holdings):
        return
    if not plan.root.is_meta:
        raise ConfigError(
            f"profile {plan.profile!r} is atomic; a rebalance (previous_run / holdings) needs a meta profile's "
            "flattened weights"
        )
    if plan.trading:  # the target holds every external sleeve's symbols: each needs a price
        check_external_prices(plan, base_dir)
    if previous_run:
        if previous_run == run_id:
            raise ConfigError(f"previous_run {previous_run!r} is this run's own id; give an earlier run")
        profile = check_previous_run(previous_run, runs_root, plan.risk_profiles, whole=True)
        if profile != plan.profile:
            from .rebalance import other_profile

            warn(other_profile(previous_run, profile, plan.profile))
    if holdings:
        rows = read_holdings(holdings)
        quantities = any("quantity" in r for r in rows)
        if quantities and not plan.trading:
            raise ConfigError(
                f"holdings {holdings}: a book in quantities needs the meta profile's trading.capital (the account's "
                "value) to be valued; add a trading block to profile " + repr(plan.profile) + " or give weights"
            )
        if plan.trading or quantities:
            _check_priced(plan, [r["symbol"] for r in rows], f"holdings {holdings}", base_dir)


def _listed(plan) -> set[str] | None:
    """The symbols the plan's atomic sleeves list, or None when one takes a whole dataset (known once its prices load)."""
    listed = [n.config["universe"].get("symbols") for n in plan.atomic_nodes()]
    return None if any(s is None for s in listed) else {s for symbols in listed for s in symbols}


def check_external_prices(plan, base_dir: Path | str) -> None:
    """Refuse, before any work, trading a book that holds an external sleeve's symbol no sleeve prices.

    A symbol an external sleeve holds is priced by an atomic sleeve that lists it (where every atomic
    sleeve lists its symbols) or by the external sleeve's own price table (``external.prices``).

    Raises
    ------
    DataError
        Naming the sleeve, the symbol and how to give it a price (:func:`external.unpriced`).
    """
    from .external import external_files, read_book, unpriced

    known = _listed(plan)
    for spec in plan.external_nodes():
        if known is not None:
            files = external_files(spec.config, plan.risk_profiles, base_dir)
            if {r["symbol"] for h in files["holdings"] for r in read_book(h)} <= known:
                continue  # an atomic sleeve prices every one
        line = unpriced(spec.config, plan.risk_profiles, base_dir, spec.label)
        if line:
            raise DataError(line)


def _check_priced(plan, symbols: list[str], who: str, base_dir: Path | str) -> None:
    """Refuse a held symbol no atomic sleeve of the plan lists (where every sleeve lists its symbols) and
    no external sleeve's price table gives.

    Raises
    ------
    DataError
        Naming the symbol and the sleeves' symbols.
    """
    from .external import external_files, read_prices

    listed = _listed(plan)
    if listed is None:
        return  # a sleeve of a whole dataset: its symbols are known once its prices load (the rebalance checks)
    for spec in plan.external_nodes():  # the symbols the external sleeves' price tables give
        files = external_files(spec.config, plan.risk_profiles, base_dir)
        if "prices" in files:
            try:
                listed |= set(read_prices(files["prices"]).columns)
            except DataError as exc:
                raise DataError(f"{spec.label}: external.prices: {exc}") from None
    known = sorted(listed)
    for symbol in symbols:
        if symbol not in known:
            ext = " or gives it a price table (external.prices)" if plan.external_nodes() else ""
            raise DataError(
                f"{who}: {symbol} has no price: no sleeve of meta profile {plan.profile!r} trades it{ext} "
                f"(they price {', '.join(known)})"
            )
