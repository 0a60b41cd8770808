"""The traded book under the root's book limits (issue 23 on issue 24's traded book): the limits as
rows on the traded weights, solved exactly by HiGHS's choice and the LP's active set."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .errors import ConfigError
    from .trading import _Problem


@dataclass(frozen=True)
class BookRows:
    """The root's book limits (:class:`limits.BookLimits`) as rows on a traded book's gross weights ``x``.

    ``net`` has shape (n_symbols, n_positions): a symbol's net weight is ``net @ x`` (+1 for a
    LONG row, -1 for a SHORT one). ``A`` has shape (n_rows, n_positions), each row a linear
    form of the net weights (a symbol's, a group's, the book's), held within ``[lo, hi]``;
    ``labels`` name each row ``(limit, key)``; ``gross_max`` bounds ``sum_j |net_j . x|``.
    """

    A: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    labels: list[tuple[str, str]]
    net: np.ndarray
    symbols: list[str]
    gross_max: float | None = None

    @property
    def empty(self) -> bool:
        """Whether no limit applies."""
        return not self.labels and self.gross_max is None

    def broken(self, x: Sequence[float], tol: float = 0.0) -> list[str]:
        """The limits book ``x`` breaks by more than ``tol``, each as ``limit key value > bound``."""
        x = np.asarray(x, dtype=float)
        out = []
        for (limit, key), row, lo, hi in zip(self.labels, self.A, self.lo, self.hi, strict=True):
            v = float(row @ x)
            if limit == "max_position":
                if abs(v) > hi + tol:
                    out.append(f"max_position {key} (|net| {abs(v):.6g} > {hi:.6g})")
            elif v > hi + tol:
                out.append(f"{limit}_max {key} (net {v:.6g} > {hi:.6g})")
            elif v < lo - tol:
                out.append(f"{limit}_min {key} (net {v:.6g} < {lo:.6g})")
        if self.gross_max is not None:
            gross = float(np.abs(self.net @ x).sum())
            if gross > self.gross_max + tol:
                out.append(f"gross_max ({gross:.6g} > {self.gross_max:.6g})")
        return out


    def checks(self, x: Sequence[float]) -> list[dict]:
        """Each limit's value on book ``x`` against its bounds: ``limit``, ``key``, ``value``, ``min``,
        ``max`` (None: unbounded on that side) and ``slack`` (the distance to the nearer bound, >= 0 when held)."""
        x = np.asarray(x, dtype=float)
        out = []
        for (limit, key), row, lo, hi in zip(self.labels, self.A, self.lo, self.hi, strict=True):
            v = float(row @ x)
            if limit == "max_position":
                out.append({"limit": limit, "key": key, "value": abs(v), "min": None, "max": float(hi), "slack": float(hi - abs(v))})
                continue
            slack = min(hi - v, v - lo)
            out.append({"limit": limit, "key": key, "value": v, "min": float(lo) if math.isfinite(lo) else None,
                        "max": float(hi) if math.isfinite(hi) else None, "slack": float(slack)})  # fmt: skip
        if self.gross_max is not None:
            gross = float(np.abs(self.net @ x).sum())
            out.append({"limit": "gross", "key": "book", "value": gross, "min": None, "max": self.gross_max,
                        "slack": self.gross_max - gross})  # fmt: skip
        return out


def book_rows(limits, symbols: Sequence[str], directions: Sequence[str]) -> BookRows:
    """The rows of a traded book's limits: ``limits`` (:class:`limits.BookLimits`, or None) on the
    net weights of the positions ``(symbols[i], directions[i])``.

    ``max_position`` gives one row per symbol the book holds (``-cap <= net <= cap``);
    ``group_max`` / ``group_min`` one row per bounded group (its members' net, ``[min, max]``);
    ``net_min`` / ``net_max`` one row (the book's net); ``gross_max`` stays a bound on
    ``sum |net|`` (auxiliary variables in :func:`limited_book`).
    """
    uniq = list(dict.fromkeys(symbols))
    col = {s: j for j, s in enumerate(uniq)}
    net = np.zeros((len(uniq), len(symbols)))
    for i, (s, d) in enumerate(zip(symbols, directions, strict=True)):
        net[col[s], i] = -1.0 if d == "SHORT" else 1.0
    rows, lo, hi, labels = [], [], [], []
    if limits is not None:
        for s in uniq:
            cap = limits.cap(s)
            if cap is not None:
                rows.append(net[col[s]]), lo.append(-float(cap)), hi.append(float(cap)), labels.append(("max_position", s))
        for g in sorted(set(limits.group_max) | set(limits.group_min)):
            member = [col[s] for s in uniq if limits.groups.get(s) == g]
            rows.append(net[member].sum(axis=0)), labels.append(("group", g))
            lo.append(float(limits.group_min.get(g, -math.inf))), hi.append(float(limits.group_max.get(g, math.inf)))
        if limits.net_min is not None or limits.net_max is not None:
            rows.append(net.sum(axis=0)), labels.append(("net", "book"))
            lo.append(-math.inf if limits.net_min is None else float(limits.net_min))
            hi.append(math.inf if limits.net_max is None else float(limits.net_max))
    n = len(symbols)
    return BookRows(np.array(rows, dtype=float).reshape(len(rows), n), np.array(lo, dtype=float), np.array(hi, dtype=float),
                    labels, net, uniq, None if limits is None or limits.gross_max is None else float(limits.gross_max))  # fmt: skip


#: How far a vertex rebuilt from its active constraints may miss them, and the traded book its
#: constraints (half the 1e-12 the book is held to).
_EXACT = 5e-13
#: Slack under which a constraint counts as active at the solver's solution.
_ACTIVE = 1e-9
#: HiGHS's tightest feasibility tolerances (its defaults would let a choice break a limit by 1e-6).
_HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10, "mip_feasibility_tolerance": 1e-10}
#: A move HiGHS could not tell from none (its smallest matrix coefficient): a dust position moves without a binary.
_DUST = 1e-9
#: How far a second choice tightens the limits when the first breaks one by a rounding (above
#: HiGHS's tolerance, so its amounts meet the untightened limits).
_MARGIN = 4e-10


def limited_book(c, t, gap, low, side, movable, p: _Problem, rows: BookRows) -> list[float]:
    """The traded book under the band, the budget, the cash and the book limits ``rows``.

    The problem of :func:`traded_book` over the progress ``u_i`` (``x_i = c_i + side_i u_i``)
    with binaries ``z_i`` (position ``i`` moves, by ``low_i <= u_i <= gap_i``), the cash gap
    ``w`` and, under ``gross_max``, ``a_j >= |net_j . x|`` with ``sum a_j <= gross_max``:
    every limit is linear in ``u``. HiGHS (``scipy.optimize.milp``, gap 0) solves it and so
    chooses the moving positions; their amounts are the LP's with that choice fixed, rebuilt
    exactly from the constraints active at HiGHS's vertex (a square or overdetermined linear
    system, least squares), so the limits, the band, the budget and the cash hold in floating
    point (checked to 5e-13), not to a solver's tolerance.

    Raises
    ------
    ConfigError
        No book within the band and the budget meets the limits: one line naming the limits the
        current book breaks and the settings that would let the book reach them.
        Also when HiGHS finds a book only within its tolerance (a constraint broken by a
        rounding, none met exactly).
    OptimizationError
        HiGHS fails (not expected).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    from .errors import OptimizationError

    n, m = len(c), (len(rows.symbols) if rows.gross_max is not None else 0)
    cv, sv, g, lo = (np.array(v, dtype=float) for v in (c, side, gap, low))
    mov = np.zeros(n, dtype=bool)
    mov[movable] = True
    # Variables [u (n), z (n), w, a (m)].
    nv = 2 * n + 1 + m
    U, Z, W, A = slice(0, n), slice(n, 2 * n), 2 * n, slice(2 * n + 1, nv)

    def block(**parts) -> np.ndarray:
        out = np.zeros(nv)
        for key, value in parts.items():
            out[{"u": U, "z": Z, "w": W, "a": A}[key]] = value
        return out

    ub_rows, ub_b = [], []  # A_ub v <= b_ub, shared by the MILP and the LP (z fixed)
    ub_rows.append(block(u=sv)), ub_b.append(p.room)
    ub_rows.append(block(u=-sv, w=-1.0)), ub_b.append(-p.k)
    ub_rows.append(block(u=sv, w=-1.0)), ub_b.append(p.k)
    if math.isfinite(p.budget):
        ub_rows.append(block(u=np.ones(n))), ub_b.append(p.budget)
    first = len(ub_rows)
    const = rows.A @ cv
    for r, base, low_r, high_r in zip(rows.A, const, rows.lo, rows.hi, strict=True):
        if math.isfinite(high_r):
            ub_rows.append(block(u=r * sv)), ub_b.append(high_r - base)
        if math.isfinite(low_r):
            ub_rows.append(block(u=-r * sv)), ub_b.append(base - low_r)
    last = len(ub_rows)
    if m:
        net_c = rows.net @ cv
        for j in range(m):
            e = np.zeros(m)
            e[j] = -1.0
            ub_rows.append(block(u=rows.net[j] * sv, a=e)), ub_b.append(-net_c[j])
            ub_rows.append(block(u=-rows.net[j] * sv, a=e)), ub_b.append(net_c[j])
        ub_rows.append(block(a=np.ones(m))), ub_b.append(rows.gross_max)
    A_ub, b_ub = np.array(ub_rows), np.array(ub_b)
    # The rows of the cash, the budget and the limits (not the auxiliaries' definitions), and each
    # one's room at the current book (u = 0).
    is_limit = np.zeros(len(b_ub), dtype=bool)
    is_limit[[0, *range(3, first)]] = True
    is_limit[first:last] = True
    room = b_ub.copy()
    if m:
        is_limit[-1] = True
        room[-1] = rows.gross_max - float(np.abs(net_c).sum())
    cost = block(u=-np.ones(n), w=1.0)
    # The band as u_i - gap_i z_i <= 0 <= u_i - low_i z_i, for the positions that can move by more than
    # HiGHS's smallest coefficient; one that can move by less (dust) moves (z_i = 1) toward its target.
    dust = mov & (g < _DUST)
    binary = mov & ~dust
    eye = np.eye(n)[binary]
    band_rows = (np.hstack([eye, -np.diag(g)[binary], np.zeros((len(eye), 1 + m))]),
                 np.hstack([eye, -np.diag(lo)[binary], np.zeros((len(eye), 1 + m))]))  # fmt: skip
    lb = np.concatenate([np.where(dust, lo, 0.0), dust.astype(float), [0.0], np.zeros(m)])
    ub = np.concatenate([np.where(mov, g, 0.0), mov.astype(float), [np.inf], np.full(m, np.inf)])
    # Where HiGHS's tolerance lets a choice or its amounts break a constraint by a rounding, the
    # budget, the cash and the limits are tightened by a margin and both are made again (an optimum
    # within the margin).
    for margin in (0.0, _MARGIN):
        # A limit the current book meets keeps it met (tightened by at most its room); one it breaks, by the margin.
        tight = b_ub - np.where(is_limit, np.where(room < 0, margin, np.minimum(margin, np.maximum(room, 0.0))), 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # HiGHS's own option names, passed on verbatim
            res = milp(
                cost,
                constraints=[LinearConstraint(A_ub, -np.inf, tight)] + ([
                    LinearConstraint(band_rows[0], -np.inf, 0.0), LinearConstraint(band_rows[1], 0.0, np.inf)
                ] if binary.any() else []),
                integrality=block(z=np.ones(n)),
                bounds=Bounds(lb, ub),
                options={"mip_rel_gap": 0.0, **_HIGHS},
            )  # fmt: skip
        if res.status == 2:
            raise _refused(rows, c)
        if res.x is None:
            if not margin:
                continue
            raise OptimizationError(f"trading: HiGHS found no traded book under the book limits ({res.message})")
        chosen = res.x[Z] > 0.5
        # The amounts of that choice: the LP with z fixed (u_i in [low_i, gap_i] or 0).
        lp_lb = np.concatenate([np.where(chosen, lo, 0.0), [0.0], np.zeros(m)])
        lp_ub = np.concatenate([np.where(chosen, g, 0.0), [np.inf], np.full(m, np.inf)])
        keep = np.r_[np.arange(n), [W], np.arange(2 * n + 1, nv)]
        x = _exact_amounts(cost[keep], A_ub[:, keep], tight, lp_lb, lp_ub, c, t, g, sv, n, rows, p)
        if x is not None:
            return x
    # HiGHS's tolerance found a book that breaks a constraint by a rounding only: none meets them all.
    raise _refused(rows, c)


def _refused(rows: BookRows, c) -> ConfigError:
    """The one line that refuses a band + budget + limits no traded book meets."""
    from .errors import ConfigError

    broken = rows.broken(c, _EXACT)
    return ConfigError(
        "trading: no traded book within the band and the turnover budget meets the root's book limits "
        f"(meta_allocation.book){': the current book breaks ' + ', '.join(broken) if broken else ''}; raise "
        "trading.max_turnover or lower trading.band (and min_order) so that the book can reach its limits"
    )


def _exact_amounts(cost, A_ub, b_ub, lb, ub, c, t, g, sv, n, rows: BookRows, p: _Problem) -> list[float] | None:
    """The LP's optimal amounts, rebuilt exactly from its active constraints, as the traded book; None if no
    candidate holds every constraint to :data:`_EXACT`."""
    from scipy.optimize import linprog

    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=list(zip(lb, ub, strict=True)), method="highs-ds",
                  options={k: v for k, v in _HIGHS.items() if k != "mip_feasibility_tolerance"})  # fmt: skip
    if res.x is None:
        return None
    v = res.x
    finite_ub = np.isfinite(ub)
    act = np.abs(A_ub @ v - b_ub) <= _ACTIVE
    at_lb = np.abs(v - lb) <= _ACTIVE
    at_ub = finite_ub & (np.abs(v - np.where(finite_ub, ub, 0.0)) <= _ACTIVE)
    eye = np.eye(len(v))
    M = np.vstack([A_ub[act], eye[at_lb], eye[at_ub]])
    r = np.concatenate([b_ub[act], lb[at_lb], ub[at_ub]])
    candidates = []
    if len(M):
        sol = np.linalg.lstsq(M, r, rcond=None)[0]
        if np.abs(M @ sol - r).max() <= _EXACT:
            candidates.append(sol)
    candidates.append(v)
    # Moves within HiGHS's tolerance of a bound, snapped to it: the least move first, then the full one.
    near_lb, near_ub = np.abs(v - lb) <= _ACTIVE, finite_ub & (np.abs(v - np.where(finite_ub, ub, 0.0)) <= _ACTIVE)
    candidates.append(np.where(near_lb, lb, np.where(near_ub, ub, v)))
    candidates.append(np.where(near_ub, ub, np.where(near_lb, lb, v)))
    for cand in candidates:
        u = np.clip(cand[:n], lb[:n], ub[:n])
        u = np.where(np.abs(u - ub[:n]) <= _EXACT, ub[:n], np.where(np.abs(u - lb[:n]) <= _EXACT, lb[:n], u))
        x = [t[i] if u[i] == g[i] else max(0.0, float(c[i] + sv[i] * u[i])) for i in range(n)]
        if _holds(x, c, p, rows) and _distance(x, t) <= res.fun + math.fsum(g) + 1e-9:
            return x
    return None


def _distance(x, t) -> float:
    """The L1 distance of book ``x`` from ``t``, the cash included."""
    return math.fsum(abs(a - b) for a, b in zip(x, t, strict=True)) + abs(math.fsum(t) - math.fsum(x))


def _holds(x, c, p: _Problem, rows: BookRows) -> bool:
    """Whether ``x`` holds the budget, the cash line and the limits to :data:`_EXACT` (the band holds by construction)."""
    moved = math.fsum(abs(a - b) for a, b in zip(x, c, strict=True))
    if math.isfinite(p.budget) and moved > p.budget + _EXACT:
        return False
    if math.fsum(x) - math.fsum(c) > p.room + _EXACT:
        return False
    return not rows.broken(x, _EXACT)
