"""The rebalance stage: the current book and the trades to the flattened book (its checks: ``_rebalance_checks``)."""

from __future__ import annotations

from pathlib import Path

from .. import audit
from ..errors import ConfigError, DataError
from ..layout import read_json, run_node, write_json
from ..manifest import ROOT
from ..run import RunContext
from ._common import Files, _named, _stage, console_warning
from ._pins import check_source_run
from ._rebalance_checks import check_previous_run


def rebalance_source(ctx: RunContext, profile: str) -> Path | None:
    """The current book of ``profile``'s rebalance: the holdings file, or the previous run's flattened file."""
    if ctx.holdings:
        return Path(ctx.holdings)
    if ctx.previous_run:
        return run_node(ctx.previous_run, ctx.runs_root).file("flattened", profile=profile)
    return None


def drift_source(ctx: RunContext) -> Path:
    """The previous run's ``returns.parquet``: its last date is where its book drifts from."""
    return run_node(ctx.previous_run, ctx.runs_root).file("returns")


def needs_prices(ctx: RunContext) -> bool:
    """Whether a rebalance values its book at prices: a previous run drifts, a quantity book is
    valued, trading settings size orders. A book of weights without trading settings is not."""
    from ..holdings import read_holdings

    if ctx.previous_run or ctx.plan.trading:
        return True
    return bool(ctx.holdings) and any("quantity" in r for r in read_holdings(ctx.holdings))


class _Prices:
    """Each symbol's prices, from the sleeve that holds it (the first, in plan order, that lists it): an
    atomic sleeve's data, or an external sleeve's own price table (``external.prices``)."""

    def __init__(self, ctx: RunContext, held_by: dict[str, str]) -> None:
        self.ctx, self.held_by, self._frames = ctx, held_by, {}

    def _frame(self, spec):
        from ..data import load_prices
        from ..external import external_files, read_prices

        if spec.path not in self._frames:
            cfg = spec.config
            if spec.kind == "external":
                table = external_files(cfg, self.ctx.plan.risk_profiles, self.ctx.base_dir)["prices"]
                self._frames[spec.path] = read_prices(table)
            else:
                self._frames[spec.path] = load_prices(cfg["data"], cfg["universe"].get("symbols"), base_dir=self.ctx.base_dir)
        return self._frames[spec.path]

    def _priced(self, spec) -> bool:
        """Whether ``spec`` has prices of its own: an atomic sleeve, or an external one with a price table."""
        return spec.kind != "external" or bool(spec.config["external"].get("prices"))

    def series(self, symbol: str):
        """The symbol's price series (dates ascending, no missing values)."""
        plan = self.ctx.plan
        held = [self.ctx.spec(self.held_by[symbol])] if symbol in self.held_by else []
        specs = [s for s in held + plan.atomic_nodes() + plan.external_nodes() if self._priced(s)]
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


def _sleeve_rates(ctx: RunContext) -> dict[str, float]:
    """Commission + slippage of each sleeve of the root: an atomic sleeve's backtest frictions, a nested
    meta profile's own ``frictions``, an external sleeve's the root's (its stream is net of its own costs)."""
    root = ctx.plan.root.config["frictions"]
    out = {}
    for path in ctx.plan.root.children:
        spec = ctx.plan.nodes[path]
        f = spec.config["frictions"] if spec.is_meta else spec.config["backtest"] if spec.kind == "atomic" else root
        out[spec.sleeve_id] = float(f["commission"]) + float(f["slippage"])
    return out


def _tracking_error(ctx: RunContext, prices: _Prices, rows: list[dict]) -> dict | None:
    """Ex-ante tracking error of what is left untraded (target - traded), on the last training window.

    Each position's per-period returns come from its symbol's prices (a SHORT's synthetic-long
    ``-min(r, 1)``, as its sleeve sees them), on the dates every such position shares.
    """
    import numpy as np
    import pandas as pd

    from ..data import periods_per_year

    left = [r for r in rows if r["untraded"] != 0.0]
    if not left:
        return {"per_period": 0.0, "annualised": 0.0, "n_obs": 0}
    cols = {}
    for r in left:
        ret = prices.series(r["symbol"]).pct_change().dropna()
        cols[f"{r['symbol']} {r['direction']}"] = -ret.clip(upper=1.0) if r["direction"] == "SHORT" else ret
    frame = pd.DataFrame(cols).dropna().tail(int(ctx.plan.root.config["backtest"]["train_window"]))
    if len(frame) < 2:
        return None
    d = np.array([r["untraded"] for r in left])
    te = float(np.sqrt(max(0.0, d @ np.cov(frame.to_numpy(), rowvar=False, ddof=1).reshape(len(d), len(d)) @ d)))
    return {"per_period": te, "annualised": te * periods_per_year(frame.index) ** 0.5, "n_obs": len(frame),
            "start": frame.index[0].date().isoformat(), "end": frame.index[-1].date().isoformat()}  # fmt: skip


def run_rebalance(ctx: RunContext, node_path: str, profile: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write ``output["rebalance"]``: the trades from the current book (``input["current"]``: the holdings
    file, or the previous run's flattened weights, drifted to this run's prices) to the flattened
    weights (``input["target"]``); with trading settings, the traded book and its orders."""

    from ..holdings import read_holdings
    from ..rebalance import drifted, rebalance, sleeve_weight_changes, value_quantities

    if not (ctx.holdings or ctx.previous_run):
        raise ConfigError("rebalance needs previous_run or holdings (--previous-run RUN_ID or --holdings FILE)")
    files = _named(input)
    # A book whose path Snakemake cannot take literally is not an input (rule_inputs.declared).
    current = files.get("current") or str(rebalance_source(ctx, profile))
    target_file, source, out = files["target"], Path(current).resolve(), _named(output)["rebalance"]
    frictions, trading = ctx.plan.root.config["frictions"], ctx.plan.trading
    params = {"profile": profile, "previous_run": ctx.previous_run, "holdings": ctx.holdings, **frictions}
    if trading:
        params["trading"] = trading
    # This run's last date is read only to drift a previous run's book.
    since = (files.get("since") or str(drift_source(ctx))) if ctx.previous_run else None
    reads = [target_file, source] + ([files["returns"], since] if ctx.previous_run else [])
    with _stage(ctx, "rebalance", ROOT, log, params, reads, [out]):
        flat = read_json(target_file)
        priced = needs_prices(ctx)
        prices = _Prices(ctx, {r["symbol"]: r["sleeve"] for r in flat.get("held_by", [])}) if priced else None
        drift = None
        if ctx.holdings:
            current, prev = read_holdings(source), None
            book = {"kind": "holdings", "path": str(source), "sha256": audit.file_sha256(source)}
            if any("quantity" in r for r in current):
                if not trading:
                    raise ConfigError("holdings in quantities need the meta profile's trading.capital (the account's value)")
                quantities = {(r["symbol"], r["direction"]): r["quantity"] for r in current}
                current = value_quantities(current, {r["symbol"]: prices.last(r["symbol"])[0] for r in current},
                                           trading["capital"])  # fmt: skip
                book["quantities"] = True
        else:
            # Read only what the previous run's ledger vouches for, and only a valid book.
            check_previous_run(ctx.previous_run, ctx.runs_root, [profile], whole=False)
            prev = read_json(source)
            current = prev["weights"]
            book = {
                "kind": "previous_run",
                "run_id": ctx.previous_run,
                "meta_profile": prev.get("meta_profile"),
                "path": str(source),
                "sha256": audit.file_sha256(source),
            }
            drift = _drift_dates(ctx, files["returns"], since)
            growth, undrifted = {}, []
            for r in current:
                try:
                    growth[(r["symbol"], r["direction"])] = prices.growth(r["symbol"], drift["then"])
                except DataError:
                    if trading:  # orders need a price for every position
                        raise
                    # A previous run of another meta profile may hold what no sleeve here prices: it keeps its weight.
                    growth[(r["symbol"], r["direction"])] = 1.0
                    undrifted.append(f"{r['symbol']} {r['direction']}")
            current, value = drifted(current, growth)
            drift = {"from": drift["then"].date().isoformat(), "to": drift["now"].date().isoformat(), "book_value": value}
            if undrifted:
                drift["undrifted"] = undrifted
                console_warning(
                    f"previous_run {ctx.previous_run!r}: {', '.join(undrifted)} not drifted ({profile}): no sleeve of "
                    f"meta profile {ctx.plan.profile!r} prices it"
                )
            book["drift"] = drift
        rate = float(frictions["commission"]) + float(frictions["slippage"])
        body = rebalance(flat["weights"], current, cost_rate=rate, current_sleeves=prev is not None)
        doc = {
            "meta_profile": ctx.plan.profile,
            "risk_profile": profile,
            "run_id": ctx.run_id,
            "current": book,
            "commission": float(frictions["commission"]),
            "slippage": float(frictions["slippage"]),
            "sleeve_weights": (
                sleeve_weight_changes(flat["sleeve_weights"], prev.get("sleeve_weights") or {})
                if prev is not None
                else None
            ),
            **body,
        }
        if trading:
            doc.update(_traded(ctx, doc, trading, prices, current, prev is not None,
                               quantities if book.get("quantities") else None))  # fmt: skip
        write_json(out, doc)


def _traded(ctx: RunContext, doc: dict, trading: dict, prices: _Prices, current: list[dict], drifted_book: bool,
            quantities: dict | None) -> dict:  # fmt: skip
    """What trading settings add to a rebalance: per row ``traded_weight``, ``untraded``, ``price``,
    ``cost_rate`` (:func:`rebalance.sleeve_cost_rate`), ``current_quantity``; the traded book's
    totals, the book limits it holds (``book_limits``), the tracking error left and the orders."""
    import math

    from ..compose import node_limits
    from ..rebalance import sleeve_cost_rate
    from ..trading import orders, traded_book
    from ..trading_limits import book_rows

    rows = doc["rows"]
    # An order under min_order is a move under min_order / capital: the band covers both.
    band = max(trading["band"], trading["min_order"] / trading["capital"])
    # The root's book limits (#23) hold on the traded book too.
    limits = node_limits(ctx.plan.root)
    lim_rows = book_rows(limits, [r["symbol"] for r in rows], [r["direction"] for r in rows]) if limits else None
    x = traded_book([r["current_weight"] for r in rows], [r["target_weight"] for r in rows],
                    band=band, max_turnover=trading["max_turnover"], limits=lim_rows)  # fmt: skip
    rates, root_rate = _sleeve_rates(ctx), doc["cost_rate"]
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
    traded = math.fsum(abs(r["traded_weight"] - r["current_weight"]) for r in rows)
    to_target = {k: doc[k] for k in ("traded", "turnover_one_way", "n_trades")}
    to_target["estimated_cost"] = math.fsum(abs(r["trade"]) * r["cost_rate"] for r in rows)
    to_target["cost_rate"] = to_target["estimated_cost"] / doc["traded"] if doc["traded"] else root_rate
    out = {
        "to_target": to_target,
        "trading": trading,
        "band_applied": band,
        "cash": 1.0 - math.fsum(x),
        "traded": traded,
        "turnover_one_way": traded / 2.0,
        "n_trades": sum(1 for r in rows if r["traded_weight"] != r["current_weight"]),
        "estimated_cost": math.fsum(abs(r["traded_weight"] - r["current_weight"]) * r["cost_rate"] for r in rows),
        "untraded_one_way": (math.fsum(abs(r["untraded"]) for r in rows) + abs(math.fsum(r["untraded"] for r in rows))) / 2.0,
        "tracking_error": _tracking_error(ctx, prices, rows),
        "orders": orders(rows, trading),
    }
    if lim_rows is not None:
        out["book_limits"] = {
            "limits": limits.to_dict(),
            "current_breaks": lim_rows.broken([r["current_weight"] for r in rows]),
            "traded": lim_rows.checks(x),
        }
    return out


def _drift_dates(ctx: RunContext, returns: str, since: str) -> dict:
    """The previous run's last date (``since``: its ``returns.parquet``) and this run's (``returns``),
    refused when out of order."""
    from ..layout import read_parquet

    prev = run_node(ctx.previous_run, ctx.runs_root)
    check_source_run(prev.dir, [since], who=f"previous_run {ctx.previous_run!r}",
                     hint=f"rerun run {ctx.previous_run!r}, or give another run", whole=False)  # fmt: skip
    then, now = read_parquet(since).index.max(), read_parquet(returns).index.max()
    if then > now:
        raise DataError(
            f"previous_run {ctx.previous_run!r}: its data end on {then.date()}, after this run's {now.date()}; "
            "a book cannot drift backwards: give an earlier run"
        )
    return {"then": then, "now": now}


def orders_file(rebalance: dict) -> bytes:
    """``orders_<profile>.csv``: the rebalance's orders (columns ``trading.ORDER_COLUMNS``)."""
    from ..trading import orders_csv

    return orders_csv(rebalance)
