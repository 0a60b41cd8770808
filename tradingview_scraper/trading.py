"""Trading a rebalance: the traded book under the band and the turnover budget, and the orders in lots."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .trading_limits import BookRows

#: The order sides by position direction and the sign of the trade.
SIDES = {("LONG", 1): "BUY", ("LONG", -1): "SELL", ("SHORT", 1): "SELL_SHORT", ("SHORT", -1): "BUY_TO_COVER"}
#: The columns of ``orders_<profile>.csv``, in order.
ORDER_COLUMNS = ("symbol", "side", "quantity", "price", "price_date", "notional", "est_cost")


def lot_of(trading: Mapping, symbol: str) -> float:
    """The lot size of ``symbol`` under checked trading settings (its own, else ``"*"``)."""
    return float(trading["lot_size"].get(symbol, trading["lot_size"]["*"]))


def traded_book(
    current: Sequence[float],
    target: Sequence[float],
    *,
    band: float = 0.0,
    max_turnover: float | None = None,
    limits: BookRows | None = None,
) -> list[float]:
    """The traded book: closest to ``target`` in L1 over the whole book (cash included), under
    the band and the turnover budget.

    The problem, over gross weights ``x`` with cash ``1 - sum x``, ``c`` = ``current``,
    ``t`` = ``target``::

        minimise    sum_i |x_i - t_i| + |(1 - sum x) - (1 - sum t)|
        subject to  x_i between c_i and t_i          (a position moves toward its target only)
                    x_i = c_i  or  |x_i - c_i| >= band  or  x_i = 0   (no move below the band but a close)
                    sum_i |x_i - c_i| / 2 <= max_turnover             (one-way turnover budget)
                    sum_i x_i <= max(1, sum_i c_i)                     (cash does not go below 0, or lower)

    Why L1 with the cash: weights and cash add up to 1 in both books, so the distance is
    twice the one-way turnover still needed to reach the target, the unit the budget is
    spent in; selling into cash the target does not hold is no closer, so the budget goes
    to the positions that are short of their target, and sells follow as far as they fund
    them or the budget allows. The problem is linear with binaries (a MILP; an L2 objective
    would make it a MIQP, for which no exact solver ships with the project's dependencies).
    HiGHS (``scipy.optimize.milp``, gap 0) chooses which positions move; the amounts of that
    choice are then solved exactly (an LP in the buys' and the sells' totals, two variables:
    the best vertex, :meth:`_Problem.amounts`), so the band, the budget and the cash hold in floating
    point, not to a solver's tolerance. Among equally close books, the one that trades more
    toward the target is kept.

    Parameters
    ----------
    current, target : sequence of float
        Gross weights (>= 0) of the same positions, in one order; ``sum target <= 1``.
    band : float
        Smallest move that is not a close.
    max_turnover : float or None
        One-way turnover budget (None: none).
    limits : BookRows or None
        The book limits the traded book must meet (:func:`trading_limits.book_rows`): linear rows on its
        net weights, and ``gross_max``. With rows, the problem above gains them as
        constraints and is solved by :func:`trading_limits.limited_book` (HiGHS, then exactly on its
        active set).

    Returns
    -------
    list of float
        ``x``, in the positions' order. A position at its target is exactly ``t_i``; a
        closed one exactly 0.

    Raises
    ------
    LimitsError
        No book within the band and the budget meets the limits (:func:`trading_limits.limited_book`).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    c = [float(v) for v in current]
    t = [float(v) for v in target]
    gap = [abs(ti - ci) for ci, ti in zip(c, t, strict=True)]
    side = [1.0 if ti > ci else -1.0 for ci, ti in zip(c, t, strict=True)]
    # A close (target 0) may move by less than the band: all of it, or at least the band.
    low = [min(band, g) if ti == 0.0 else band for g, ti in zip(gap, t, strict=True)]
    movable = [i for i, g in enumerate(gap) if g > 0.0 and g >= low[i]]
    p = _Problem(gap, low, side, 2.0 * max_turnover if max_turnover is not None else math.inf,
                 max(0.0, 1.0 - math.fsum(c)), math.fsum(t) - math.fsum(c))  # fmt: skip
    x = list(c)
    if limits is not None and not limits.empty:
        from .trading_limits import limited_book

        return limited_book(c, t, gap, low, side, movable, p, limits)
    if not movable:
        return x
    full = p.vertex(movable)
    _, _, (_, ub, _, us) = p._box(movable)
    if full is not None and (full[1], full[2]) == (ub, us):
        chosen = movable  # every position reaches its target within the budget and the cash
    else:
        n = len(movable)
        g = np.array([gap[i] for i in movable])
        lo = np.array([low[i] for i in movable])
        s = np.array([side[i] for i in movable])
        zeros, eye = np.zeros(n), np.eye(n)
        # Variables [u (progress), z (moves), w (cash gap)]: minimise -sum u + w.
        cons = [
            LinearConstraint(np.hstack([eye, -np.diag(g), zeros[:, None]]), -np.inf, 0.0),
            LinearConstraint(np.hstack([eye, -np.diag(lo), zeros[:, None]]), 0.0, np.inf),
            LinearConstraint(np.hstack([s, zeros, [0.0]])[None, :], -np.inf, p.room),
            LinearConstraint(np.hstack([s, zeros, [1.0]])[None, :], p.k, np.inf),
            LinearConstraint(np.hstack([-s, zeros, [1.0]])[None, :], -p.k, np.inf),
        ]
        if math.isfinite(p.budget):
            cons.append(LinearConstraint(np.hstack([np.ones(n), zeros, [0.0]])[None, :], -np.inf, p.budget))
        res = milp(
            np.hstack([-np.ones(n), zeros, [1.0]]),
            constraints=cons,
            integrality=np.hstack([zeros, np.ones(n), [0.0]]),
            bounds=Bounds(np.zeros(2 * n + 1), np.hstack([g, np.ones(n), [np.inf]])),
            options={"mip_rel_gap": 0.0},
        )
        z = res.x[n : 2 * n] if res.x is not None else zeros
        chosen = _feasible([i for i, zi in zip(movable, z, strict=True) if zi > 0.5], p)
        # Ties: add every other position (largest move first) that keeps the book as close.
        for i in sorted(set(movable) - set(chosen), key=lambda i: (-gap[i], i)):
            now, more = p.vertex(chosen), p.vertex([*chosen, i])
            if more is not None and more[0] <= now[0]:
                chosen = [*chosen, i]
    for i, u in p.amounts(chosen).items():
        x[i] = t[i] if u == gap[i] else max(0.0, c[i] + side[i] * u)
    return x


#: What a vertex may overshoot the budget or the cash line by (far below the 1e-12 the book is held to).
_ROUNDING = 1e-15


class _Problem:
    """The traded-book problem over a fixed choice of moving positions (:func:`traded_book`).

    Over a choice, only the buys' total ``B`` and the sells' total ``S`` matter: the distance
    is ``G - B - S + |k - B + S|`` (``G`` the choice's and the others' gaps, ``k`` the
    target's gross less the current's), with ``B`` in ``[Lb, Ub]``, ``S`` in ``[Ls, Us]``,
    ``B + S <= budget`` and ``B - S <= room``. A piecewise-linear objective on a polygon is
    least at a vertex of the polygon cut by the kink ``B - S = k``: the vertices are the
    pairwise intersections of those seven lines.
    """

    def __init__(self, gap, low, side, budget, room, k):
        self.gap, self.low, self.side, self.budget, self.room, self.k = gap, low, side, budget, room, k

    def _box(self, chosen):
        buys = [i for i in chosen if self.side[i] > 0]
        sells = [i for i in chosen if self.side[i] < 0]
        sums = [math.fsum(v[i] for i in grp) for grp in (buys, sells) for v in (self.low, self.gap)]
        return buys, sells, sums  # lb, ub, ls, us

    def _ok(self, b, s, lb, ub, ls, us) -> bool:
        # A vertex on the budget or cash line may miss it by a rounding of its two coordinates.
        return lb <= b <= ub and ls <= s <= us and b + s <= self.budget + _ROUNDING and b - s <= self.room + _ROUNDING

    def vertex(self, chosen) -> tuple[float, float, float] | None:
        """``(distance, B, S)`` at the best vertex (ties: more sells, then more buys), or None if infeasible."""
        _, _, (lb, ub, ls, us) = self._box(chosen)
        lines = [(1, 0, lb), (1, 0, ub), (0, 1, ls), (0, 1, us), (1, -1, self.room), (1, -1, self.k)]
        if math.isfinite(self.budget):
            lines.append((1, 1, self.budget))
        best = None
        total_gap = math.fsum(self.gap)
        for i, (a1, b1, c1) in enumerate(lines):
            for a2, b2, c2 in lines[i + 1 :]:
                det = a1 * b2 - a2 * b1
                if det == 0:
                    continue
                b = (c1 * b2 - c2 * b1) / det
                s = (a1 * c2 - a2 * c1) / det
                b, s = min(max(b, lb), ub), min(max(s, ls), us)
                if not self._ok(b, s, lb, ub, ls, us):
                    continue
                dist = total_gap - b - s + abs(self.k - b + s)
                key = (dist, -s, -b)
                if best is None or key < best[0]:
                    best = (key, b, s)
        return None if best is None else (best[0][0], best[1], best[2])

    def amounts(self, chosen) -> dict[int, float]:
        """Each chosen position's progress: its side's total spread from the least moves in
        proportion to what each may still move."""
        best = self.vertex(chosen)
        if best is None:
            return {}
        _, b, s = best
        buys, sells, (lb, ub, ls, us) = self._box(chosen)
        out = {}
        for group, lo_sum, hi_sum, amount in ((buys, lb, ub, b), (sells, ls, us, s)):
            spare = hi_sum - lo_sum
            share = (amount - lo_sum) / spare if spare > 0 else 0.0
            for i in group:
                out[i] = self.gap[i] if share >= 1.0 else self.low[i] + share * (self.gap[i] - self.low[i])
        return out


def _feasible(chosen, p: _Problem) -> list[int]:
    """``chosen`` without the positions whose least move breaks the budget or the cash in floating point.

    The solver's choice holds to its tolerance; dropping the largest least moves until the
    choice is exactly feasible keeps it whenever it is (always, but at a tie with an edge).
    """
    chosen = list(chosen)
    while chosen and p.vertex(chosen) is None:
        chosen.remove(max(chosen, key=lambda i: (p.low[i], i)))
    return chosen


def orders(
    rows: Sequence[Mapping],
    trading: Mapping,
) -> dict:
    """The orders that take the current book to the traded book, in lots, at the last prices.

    Parameters
    ----------
    rows : list of dict
        Per position: ``symbol``, ``direction``, ``price``, ``price_date``, ``current_quantity``,
        ``traded_weight``, ``cost_rate``.
    trading : dict
        Checked trading settings (:func:`rebalance.check_trading`).

    Returns
    -------
    dict
        ``orders``: rows of :data:`ORDER_COLUMNS` (largest notional first), each a positive
        multiple of its lot at or above ``min_order``; per position ``final_quantity`` and
        ``gap`` (final - traded target, in units) set on ``rows``; ``dropped``: orders
        under ``min_order`` left out; ``n_orders``, ``notional``, ``est_cost``,
        ``residual_cash`` (capital less the gross value of the final positions) and
        ``largest_gap`` (in lots).
    """
    capital = float(trading["capital"])
    out, dropped, gaps = [], [], []
    for r in rows:
        lot, price = lot_of(trading, r["symbol"]), float(r["price"])
        target_q = float(r["traded_weight"]) * capital / price
        delta = round((target_q - float(r["current_quantity"])) / lot) * lot
        order = None
        if delta != 0.0:
            order = {
                "symbol": r["symbol"],
                "side": SIDES[(r["direction"], 1 if delta > 0 else -1)],
                "quantity": abs(delta),
                "price": price,
                "price_date": r["price_date"],
                "notional": abs(delta) * price,
                "est_cost": abs(delta) * price * float(r["cost_rate"]),
            }
            if order["notional"] < float(trading["min_order"]):
                dropped.append(order)
                delta, order = 0.0, None
        final = float(r["current_quantity"]) + delta
        r["final_quantity"] = final
        r["gap"] = final - target_q
        gaps.append((abs(r["gap"]) / lot, r["symbol"], r["direction"], order is not None or delta == 0.0))
        if order:
            out.append(order)
    out.sort(key=lambda o: (-o["notional"], o["symbol"], o["side"]))
    worst = max(gaps, default=(0.0, None, None, True))
    gross = math.fsum(float(r["final_quantity"]) * float(r["price"]) for r in rows)
    return {
        "orders": out,
        "dropped": dropped,
        "n_orders": len(out),
        "notional": math.fsum(o["notional"] for o in out),
        "est_cost": math.fsum(o["est_cost"] for o in out),
        "residual_cash": capital - gross,
        "largest_gap": {"lots": worst[0], "symbol": worst[1], "direction": worst[2]},
    }


def orders_csv(rebalance: Mapping) -> bytes:
    """``orders_<profile>.csv``: the orders of a rebalance, columns :data:`ORDER_COLUMNS`."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ORDER_COLUMNS)
    for o in rebalance["orders"]["orders"]:
        writer.writerow([o["symbol"], o["side"], repr(float(o["quantity"])), repr(float(o["price"])), o["price_date"],
                         repr(float(o["notional"])), repr(float(o["est_cost"]))])  # fmt: skip
    return buf.getvalue().encode()
