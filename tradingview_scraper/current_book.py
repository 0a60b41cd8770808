"""The rebalance step: the current book (a holdings file, or a previous run's book drifted to this
run's prices), the trades to the flattened book and, with trading settings, the traded book and its orders."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import audit
from .errors import ConfigError, DataError
from .holdings import check_previous_run, read_holdings
from .layout import read_json, read_parquet, run_node
from .rebalance import drifted, rebalance, sleeve_cost_rate, sleeve_weight_changes, value_quantities


def rebalance_source(previous_run: str | None, holdings: str | None, runs_root: Path | str, profile: str) -> Path | None:
    """The current book of ``profile``'s rebalance: the holdings file, or the previous run's flattened file."""
    if holdings:
        return Path(holdings)
    if previous_run:
        return run_node(previous_run, runs_root).file("flattened", profile=profile)
    return None


def drift_source(previous_run: str, runs_root: Path | str) -> Path:
    """The previous run's ``returns.parquet``: its last date is where its book drifts from."""
    return run_node(previous_run, runs_root).file("returns")


def needs_prices(previous_run: str | None, holdings: str | None, trading: dict | None) -> bool:
    """Whether a rebalance values its book at prices: a previous run drifts, a quantity book is
    valued, trading settings size orders. A book of weights without trading settings is not."""
    if previous_run or trading:
        return True
    return bool(holdings) and any("quantity" in r for r in read_holdings(holdings))


def rebalance_file(
    target: dict, plan, profile: str, run_id: str, previous_run: str | None, holdings: str | None, runs_root: Path,
    base_dir: Path, warn: Callable[[str], None], current: str | None = None, returns=None, since: str | None = None,
    reads: list | None = None,
) -> dict:  # fmt: skip
    """``rebalance_<profile>.json``: the trades from the current book to the flattened weights.

    The current book is the holdings file (``holdings``) or the previous run's flattened
    weights (``previous_run``), drifted by each position's price growth from the previous
    run's last date to this run's; with trading settings (``plan.trading``), the traded book
    and its orders too.

    Parameters
    ----------
    target : dict
        This run's ``flattened_<profile>.json``.
    plan, profile, run_id, previous_run, holdings, runs_root, base_dir
        The run's (a step's job attributes).
    warn : callable
        Prints a line the person running the pipeline must see (a position not drifted).
    current : str, optional
        The current book's file (default: where ``holdings`` / ``previous_run`` has it: a path
        Snakemake cannot take literally is not a rule's input).
    returns : DataFrame, optional
        This run's ``returns.parquet`` (with a previous run: its last date).
    since : str, optional
        The previous run's ``returns.parquet`` (default: where ``previous_run`` has it).
    reads : list, optional
        Where the files it reads that the rule could not declare (``current``, ``since``) are
        added, for the ledger.

    Raises
    ------
    ConfigError
        A book in quantities without trading settings.
    DataError
        The previous run no longer verifies, ends after this run, or holds what no sleeve
        prices while trading; a held symbol without a price; a quantity book worth more than
        the capital.
    """
    source = Path(current or rebalance_source(previous_run, holdings, runs_root, profile)).resolve()
    undeclared = [] if current else [str(source)]
    if previous_run and not since:
        since = str(drift_source(previous_run, runs_root))
        undeclared.append(since)
    if reads is not None:
        reads += undeclared
    frictions, trading = plan.root.config["frictions"], plan.trading
    held_by = {r["symbol"]: r["sleeve"] for r in target.get("held_by", [])}
    prices = BookPrices(plan, base_dir, held_by) if needs_prices(previous_run, holdings, trading) else None
    quantities = prev = None
    if holdings:
        rows = read_holdings(source)
        book = {"kind": "holdings", "path": str(source), "sha256": audit.file_sha256(source)}
        if any("quantity" in r for r in rows):
            if not trading:
                raise ConfigError("holdings in quantities need the meta profile's trading.capital (the account's value)")
            quantities = {(r["symbol"], r["direction"]): r["quantity"] for r in rows}
            rows = value_quantities(rows, {r["symbol"]: prices.last(r["symbol"])[0] for r in rows}, trading["capital"])
            book["quantities"] = True
    else:
        # Read only what the previous run's ledger vouches for, and only a valid book.
        check_previous_run(previous_run, runs_root, [profile], whole=False)
        prev = read_json(source)
        book = {
            "kind": "previous_run",
            "run_id": previous_run,
            "meta_profile": prev.get("meta_profile"),
            "path": str(source),
            "sha256": audit.file_sha256(source),
        }
        then, now = _drift_dates(previous_run, runs_root, returns, since)
        growth, undrifted = {}, []
        for r in prev["weights"]:
            try:
                growth[(r["symbol"], r["direction"])] = prices.growth(r["symbol"], then)
            except DataError:
                if trading:  # orders need a price for every position
                    raise
                # A previous run of another meta profile may hold what no sleeve here prices: it keeps its weight.
                growth[(r["symbol"], r["direction"])] = 1.0
                undrifted.append(f"{r['symbol']} {r['direction']}")
        rows, value = drifted(prev["weights"], growth)
        book["drift"] = {"from": then.date().isoformat(), "to": now.date().isoformat(), "book_value": value}
        if undrifted:
            book["drift"]["undrifted"] = undrifted
            warn(
                f"previous_run {previous_run!r}: {', '.join(undrifted)} not drifted ({profile}): no sleeve of "
                f"meta profile {plan.profile!r} prices it"
            )
    rate = float(frictions["commission"]) + float(frictions["slippage"])
    body = rebalance(target["weights"], rows, cost_rate=rate, current_sleeves=prev is not None)
    doc = {
        "meta_profile": plan.profile,
        "risk_profile": profile,
        "run_id": run_id,
        "current": book,
        "commission": float(frictions["commission"]),
        "slippage": float(frictions["slippage"]),
        "sleeve_weights": (
            sleeve_weight_changes(target["sleeve_weights"], prev.get("sleeve_weights") or {}) if prev is not None else None
        ),
        **body,
    }
    if trading:
        doc.update(_traded(plan, doc, prices, rows, prev is not None, quantities))
    return doc


def _drift_dates(previous_run: str, runs_root: Path, returns, since: str) -> tuple:
    """The previous run's last date (``since``: its ``returns.parquet``, verified against its ledger)
    and this run's (``returns``), refused when out of order."""
    from .runlock import check_source_run

    prev = run_node(previous_run, runs_root)
    check_source_run(prev.dir, [since], who=f"previous_run {previous_run!r}",
                     hint=f"rerun run {previous_run!r}, or give another run", whole=False)  # fmt: skip
    then, now = read_parquet(since).index.max(), returns.index.max()
    if then > now:
        raise DataError(
            f"previous_run {previous_run!r}: its data end on {then.date()}, after this run's {now.date()}; "
            "a book cannot drift backwards: give an earlier run"
        )
    return then, now


def _traded(plan, doc: Mapping, prices, current: Sequence[Mapping], drifted_book: bool, quantities: Mapping | None) -> dict:
    """What trading settings (``plan.trading``) add to a rebalance (``doc``): per row ``traded_weight``,
    ``untraded``, ``price``, ``cost_rate`` (:func:`rebalance.sleeve_cost_rate`), ``current_quantity``;
    the traded book's totals, the book limits it holds (``book_limits``), the tracking error left and
    the orders. ``current``: the book's rows (a previous run's, ``drifted_book``, with ``weight_then``);
    ``quantities``: (symbol, direction) -> units held, for a book in quantities."""
    from .compose import node_limits
    from .trading import orders, traded_book
    from .trading_limits import book_rows

    trading, rows = plan.trading, doc["rows"]
    # An order under min_order is a move under min_order / capital: the band covers both.
    band = max(trading["band"], trading["min_order"] / trading["capital"])
    # The root's book limits (#23) hold on the traded book too.
    limits = node_limits(plan.root)
    lim_rows = book_rows(limits, [r["symbol"] for r in rows], [r["direction"] for r in rows]) if limits else None
    x = traded_book([r["current_weight"] for r in rows], [r["target_weight"] for r in rows],
                    band=band, max_turnover=trading["max_turnover"], limits=lim_rows)  # fmt: skip
    rates, root_rate = _sleeve_rates(plan), doc["cost_rate"]
    # A previous run's per-sleeve holdings drift with their position.
    scale = {(c["symbol"], c["direction"]): c["weight"] / c["weight_then"] for c in current
             if drifted_book and c.get("weight_then")}  # fmt: skip
    for r, xi in zip(rows, x, strict=True):
        key = (r["symbol"], r["direction"])
        r["traded_weight"] = xi
        r["untraded"] = r["target_weight"] - xi
        r["price"], r["price_date"] = prices.last(r["symbol"])
        r["cost_rate"] = sleeve_cost_rate({**r, "current_scale": scale.get(key, 1.0)}, rates, root_rate)
        r["current_quantity"] = (
            quantities.get(key, 0.0) if quantities is not None else r["current_weight"] * trading["capital"] / r["price"]
        )
    moved = math.fsum(abs(r["traded_weight"] - r["current_weight"]) for r in rows)
    to_target = {k: doc[k] for k in ("traded", "turnover_one_way", "n_trades")}
    to_target["estimated_cost"] = math.fsum(abs(r["trade"]) * r["cost_rate"] for r in rows)
    to_target["cost_rate"] = to_target["estimated_cost"] / doc["traded"] if doc["traded"] else root_rate
    out = {
        "to_target": to_target,
        "trading": trading,
        "band_applied": band,
        "cash": 1.0 - math.fsum(x),
        "traded": moved,
        "turnover_one_way": moved / 2.0,
        "n_trades": sum(1 for r in rows if r["traded_weight"] != r["current_weight"]),
        "estimated_cost": math.fsum(abs(r["traded_weight"] - r["current_weight"]) * r["cost_rate"] for r in rows),
        "untraded_one_way": (math.fsum(abs(r["untraded"]) for r in rows) + abs(math.fsum(r["untraded"] for r in rows))) / 2.0,
        "tracking_error": _tracking_error(prices, rows, int(plan.root.config["backtest"]["train_window"])),
        "orders": orders(rows, trading),
    }
    if lim_rows is not None:
        out["book_limits"] = {
            "limits": limits.to_dict(),
            "current_breaks": lim_rows.broken([r["current_weight"] for r in rows]),
            "traded": lim_rows.checks(x),
        }
    return out


def _tracking_error(prices, rows: Sequence[Mapping], window: int) -> dict | None:
    """Ex-ante tracking error of what is left untraded (``untraded``: target - traded), on the last
    ``window`` dates every such position shares (None with fewer than two).

    Each position's per-period returns come from its symbol's prices (``prices.series``; a
    SHORT's synthetic-long ``-min(r, 1)``, as its sleeve sees them).
    """
    import numpy as np
    import pandas as pd

    from .data import periods_per_year

    left = [r for r in rows if r["untraded"] != 0.0]
    if not left:
        return {"per_period": 0.0, "annualised": 0.0, "n_obs": 0}
    cols = {}
    for r in left:
        ret = prices.series(r["symbol"]).pct_change().dropna()
        cols[f"{r['symbol']} {r['direction']}"] = -ret.clip(upper=1.0) if r["direction"] == "SHORT" else ret
    frame = pd.DataFrame(cols).dropna().tail(window)
    if len(frame) < 2:
        return None
    d = np.array([r["untraded"] for r in left])
    te = float(np.sqrt(max(0.0, d @ np.cov(frame.to_numpy(), rowvar=False, ddof=1).reshape(len(d), len(d)) @ d)))
    return {"per_period": te, "annualised": te * periods_per_year(frame.index) ** 0.5, "n_obs": len(frame),
            "start": frame.index[0].date().isoformat(), "end": frame.index[-1].date().isoformat()}  # fmt: skip


def _sleeve_rates(plan) -> dict[str, float]:
    """Commission + slippage of each sleeve of the root: an atomic sleeve's backtest frictions, a nested
    meta profile's own ``frictions``, an external sleeve's the root's (its stream is net of its own costs)."""
    root = plan.root.config["frictions"]
    out = {}
    for path in plan.root.children:
        spec = plan.nodes[path]
        f = spec.config["frictions"] if spec.is_meta else spec.config["backtest"] if spec.kind == "atomic" else root
        out[spec.sleeve_id] = float(f["commission"]) + float(f["slippage"])
    return out


class BookPrices:
    """Each symbol's prices, from the sleeve that holds it (the first, in plan order, that lists it): an
    atomic sleeve's data, or an external sleeve's own price table (``external.prices``).

    Parameters
    ----------
    plan : Plan
        The run's plan.
    base_dir : path-like
        Where the sleeves' data paths are found.
    held_by : dict of str -> str
        Symbol -> plan path of the sleeve that holds it (a flattened book's ``held_by``).
    """

    def __init__(self, plan, base_dir: Path | str, held_by: Mapping[str, str]) -> None:
        self.plan, self.base_dir, self.held_by, self._frames = plan, base_dir, held_by, {}

    def _frame(self, spec):
        from .data import load_prices
        from .external import external_files, read_prices

        if spec.path not in self._frames:
            cfg = spec.config
            if spec.kind == "external":
                self._frames[spec.path] = read_prices(external_files(cfg, self.plan.risk_profiles, self.base_dir)["prices"])
            else:
                self._frames[spec.path] = load_prices(cfg["data"], cfg["universe"].get("symbols"), base_dir=self.base_dir)
        return self._frames[spec.path]

    def series(self, symbol: str):
        """The symbol's price series (a Series, dates ascending, no missing values).

        Raises
        ------
        DataError
            No sleeve of the plan prices ``symbol``.
        """
        plan = self.plan
        held = [plan.nodes[self.held_by[symbol]]] if symbol in self.held_by else []
        # an external sleeve has prices of its own only with a price table
        specs = [s for s in held + plan.atomic_nodes() + plan.external_nodes()
                 if s.kind != "external" or s.config["external"].get("prices")]  # fmt: skip
        for spec in {s.path: s for s in specs}.values():
            listed = spec.config["universe"].get("symbols") if spec.kind != "external" else None
            if listed is not None and symbol not in listed:
                continue
            frame = self._frame(spec)
            if symbol in frame.columns:
                return frame[symbol].dropna()
        hint = (f"give external sleeve {held[0].sleeve_id!r} a price table with a {symbol} column "
                '("prices": "path" in its external block: a date column and one column per symbol)'
                if held and held[0].kind == "external" else "give a book of symbols the run's sleeves trade")  # fmt: skip
        raise DataError(f"rebalance: the book holds {symbol}, which no sleeve of meta profile {plan.profile!r} prices; {hint}")

    def last(self, symbol: str) -> tuple[float, str]:
        """The symbol's last price and its date."""
        s = self.series(symbol)
        return float(s.iloc[-1]), s.index[-1].date().isoformat()

    def growth(self, symbol: str, since) -> float:
        """Its price growth from its last price at or before ``since`` to its last price."""
        s = self.series(symbol)
        before = s[s.index <= since]
        if before.empty:
            raise DataError(f"rebalance: no price of {symbol} on or before {since.date()} (the previous run's last date)")
        return float(s.iloc[-1]) / float(before.iloc[-1])
