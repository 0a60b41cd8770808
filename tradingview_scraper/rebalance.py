"""Rebalance: the trades from the current book to a run's flattened target weights, and their cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .errors import DataError
from .holdings import MAX_GROSS


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


# --------------------------------------------------------------------------- trading (issue 24)

#: The keys of a root meta profile's ``trading`` block.
TRADING_KEYS = ("capital", "lot_size", "min_order", "band", "max_turnover")


def _number(value) -> float | None:
    """``value`` as a finite float, or None (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def check_trading(trading, where: str) -> dict | None:
    """The checked ``trading`` block of a root meta profile, with its defaults; None without one.

    Parameters
    ----------
    trading : dict or None
        ``capital`` (> 0, the account's value in the prices' currency: positions plus cash),
        ``lot_size`` (> 0: a number, or symbol -> size with ``"*"`` for every other symbol;
        default 1), ``min_order`` (>= 0, the smallest order notional; default 0), ``band``
        (>= 0, the smallest move of a position's weight that is not a close; default 0),
        ``max_turnover`` (>= 0, the one-way turnover budget; default none).
    where : str
        How the message names the profile.

    Returns
    -------
    dict or None
        Every key, defaults filled in (``max_turnover`` None: no budget; ``lot_size`` a dict
        with ``"*"``).

    Raises
    ------
    ConfigError
        An unknown key, a missing ``capital``, or a value out of its range: one line naming
        the key, the value and what is valid.
    """
    from .errors import ConfigError

    if trading is None:
        return None
    if not isinstance(trading, dict):
        raise ConfigError(f"{where}: trading must be an object with {', '.join(TRADING_KEYS)}, got {trading!r}")
    unknown = [k for k in trading if k not in TRADING_KEYS]
    if unknown:
        raise ConfigError(f"{where}: trading.{unknown[0]} is not a trading setting; valid: {', '.join(TRADING_KEYS)}")
    if "capital" not in trading:
        raise ConfigError(f"{where}: trading.capital is missing; give the account's value (a number > 0)")

    def bounded(key: str, default, strict: bool):
        raw = trading.get(key, default)
        if raw is None and key == "max_turnover":
            return None
        value = _number(raw)
        if value is None or value < 0 or (strict and value == 0):
            bound = "> 0" if strict else ">= 0"
            raise ConfigError(f"{where}: trading.{key} = {raw!r} is not a finite number {bound}")
        return value

    out = {
        "capital": bounded("capital", None, True),
        "min_order": bounded("min_order", 0.0, False),
        "band": bounded("band", 0.0, False),
        "max_turnover": bounded("max_turnover", None, False),
    }
    if out["band"] > 1:
        raise ConfigError(f"{where}: trading.band = {out['band']!r} is a weight: give a number in [0, 1]")
    lots = trading.get("lot_size", 1.0)
    lots = lots if isinstance(lots, dict) else {"*": lots}
    checked = {}
    for symbol, raw in lots.items():
        value = _number(raw)
        key = "lot_size" if not isinstance(trading.get("lot_size"), dict) else f"lot_size.{symbol}"
        if value is None or value <= 0:
            raise ConfigError(f"{where}: trading.{key} = {raw!r} is not a finite number > 0 (fractional lots are fine)")
        checked[str(symbol)] = value
    checked.setdefault("*", 1.0)
    out["lot_size"] = checked
    return out


def value_quantities(rows: Sequence[Mapping], prices: Mapping[str, float], capital: float) -> list[dict]:
    """A quantity book as gross weights of ``capital`` at ``prices``: ``quantity * price / capital``.

    Raises
    ------
    DataError
        The positions are worth more than ``capital`` (weights would exceed 1).
    """
    out = [{**r, "weight": float(r["quantity"]) * float(prices[r["symbol"]]) / capital} for r in rows]
    gross = math.fsum(r["weight"] for r in out)
    if gross > MAX_GROSS:
        raise DataError(
            f"holdings: the positions are worth {gross * capital:.2f} at the run's last prices, more than "
            f"trading.capital = {capital:g}; capital is the account's value (positions plus cash)"
        )
    return out


def drifted(rows: Sequence[Mapping], growth: Mapping[tuple[str, str], float]) -> tuple[list[dict], float]:
    """A book of gross weights drifted by each position's price growth; also the book's value growth.

    A LONG position's value grows by ``g`` (price now / price then); a SHORT's exposure too,
    while its P&L is ``-w (g - 1)``. The book's value grows by ``v = 1 + sum_i s_i w_i (g_i - 1)``
    (cash earns nothing), and each drifted weight is ``w_i g_i / v``.

    Parameters
    ----------
    rows : list of dict
        ``symbol``, ``direction``, ``weight`` (gross), other keys kept.
    growth : dict of (symbol, direction) -> float
        Price growth of each position's symbol between the two dates.

    Returns
    -------
    (list of dict, float)
        The rows with ``weight`` drifted and ``weight_then`` kept, and ``v``.
    """
    sign = {"LONG": 1.0, "SHORT": -1.0}
    value = 1.0 + math.fsum(
        sign[r["direction"]] * float(r["weight"]) * (growth[(r["symbol"], r["direction"])] - 1.0) for r in rows
    )
    if value <= 0:
        raise DataError("the previous book lost all its value between the two runs (its shorts rose too far)")
    out = [
        {**r, "weight_then": float(r["weight"]),
         "weight": float(r["weight"]) * growth[(r["symbol"], r["direction"])] / value}
        for r in rows
    ]  # fmt: skip
    return out, value


def sleeve_cost_rate(row: Mapping, rates: Mapping[str, float], default: float) -> float:
    """A position's cost rate: the mix of the rates of the sleeves whose look-through holdings of it change.

    Each sleeve ``s`` of the root holds ``t_s`` of the position in the target (the flattened
    row's ``sleeves``) and ``c_s`` in the current book. Its weight in the mix is ``|t_s - c_s|``,
    the part of the trade it causes, so the position's cost is ``sum_s |t_s - c_s| r_s`` per unit of
    ``sum_s |t_s - c_s|``, charged on what the position trades. The current book's ``c_s``:

    * a previous run's: its flattened row's ``sleeves``, drifted with the position (scaled by the
      drifted weight over the weight then);
    * a holdings file, which names no sleeves: the current weight spread over the target's sleeves
      in proportion to their ``t_s``, so the mix is weighted by ``t_s``.

    When no sleeve's holding changes (the trade is the drift alone, or a holdings file's position no
    sleeve targets), the mix is weighted by ``|t_s| + |c_s|``; a position no sleeve holds on either
    side is charged ``default`` (the root meta profile's frictions).

    Parameters
    ----------
    row : dict
        A rebalance row (:func:`rebalance`): ``current_weight``, ``target_weight``,
        ``target_sleeves``, ``current_sleeves`` (None without a previous run) and, for a
        drifted book, ``current_scale`` (drifted weight over the weight then).
    rates : dict of str -> float
        Commission + slippage of each sleeve of the root (a sleeve not in it, such as one of a
        previous run of another profile, is charged ``default``).
    default : float
        The root's commission + slippage.
    """
    t = {s: float(v) for s, v in (row.get("target_sleeves") or {}).items()}
    if row.get("current_sleeves") is not None:
        scale = float(row.get("current_scale", 1.0))
        c = {s: float(v) * scale for s, v in row["current_sleeves"].items()}
    else:
        tw, cw = float(row["target_weight"]), float(row["current_weight"])
        c = {s: cw * v / tw for s, v in t.items()} if tw > 0 else {}
    sleeves = list(dict.fromkeys([*t, *c]))
    for weight in ({s: abs(t.get(s, 0.0) - c.get(s, 0.0)) for s in sleeves},
                   {s: abs(t.get(s, 0.0)) + abs(c.get(s, 0.0)) for s in sleeves}):  # fmt: skip
        total = math.fsum(weight.values())
        if total > 0:
            return math.fsum(weight[s] * float(rates.get(s, default)) for s in sleeves) / total
    return float(default)
