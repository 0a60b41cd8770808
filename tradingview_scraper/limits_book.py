"""A meta node's book against its limits: the children's net holdings as ``H`` (live and per window), and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import OptimizationError

if TYPE_CHECKING:
    from .limits import BookLimits

__all__ = ["book_report", "live_matrix", "net_matrix", "window_matrices"]

#: A limit binds when its slack is at most this (the convex solvers' own tolerance).
BINDING_TOL = 1e-6


def net_matrix(books: Sequence[Sequence[Mapping]], symbols: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The sleeves' net weight per symbol: ``H`` of shape (n_sleeves, n_symbols), and the symbols.

    ``books``: each sleeve's rows ``{"symbol", "net_weight"}`` (a symbol's rows add up).
    """
    if symbols is None:
        symbols = sorted({r["symbol"] for rows in books for r in rows})
    col = {s: j for j, s in enumerate(symbols)}
    H = np.zeros((len(books), len(symbols)))
    for i, rows in enumerate(books):
        for r in rows:
            H[i, col[r["symbol"]]] += float(r["net_weight"])
    return H, list(symbols)


def _windows(record: Mapping):
    import pandas as pd

    w = record["windows"]
    return pd.DatetimeIndex(pd.to_datetime(w["start"])), w["weights"]


def window_matrices(books: Sequence[Mapping], symbols: Sequence[str] | None = None):
    """``start -> (H, symbols)``: the children's net holdings in force on a meta window's first test date.

    ``books``: each child's ``weights_<profile>.json`` record, with its per-window weights
    (``windows``). A child's window in force on date ``d`` is its last one starting on or before ``d``.

    Raises
    ------
    OptimizationError
        A child records no window starting on or before ``d``.
    """
    sign = [-1.0 if b["direction"] == "SHORT" else 1.0 for b in books]
    parsed = [_windows(b) for b in books]
    if symbols is None:
        symbols = sorted({s for _, w in parsed for s in w})
    cache: dict[tuple, np.ndarray] = {}

    def at(start) -> tuple[np.ndarray, list[str]]:
        idx = tuple(int(starts.searchsorted(start, side="right")) - 1 for starts, _ in parsed)
        if min(idx) < 0:
            raise OptimizationError(f"no sleeve holdings recorded on or before {start}")
        if idx not in cache:
            H = np.zeros((len(books), len(symbols)))
            col = {s: j for j, s in enumerate(symbols)}
            for i, ((_, w), k) in enumerate(zip(parsed, idx, strict=True)):
                for s, series in w.items():
                    H[i, col[s]] += sign[i] * float(series[k])
            cache[idx] = H
        return cache[idx], list(symbols)

    return at


def live_matrix(books: Sequence[Mapping]) -> tuple[np.ndarray, list[str]]:
    """``(H, symbols)`` of the children's live holdings (their records' ``weights`` rows)."""
    return net_matrix([b["weights"] for b in books])


def book_report(limits: BookLimits, H: np.ndarray, symbols: Sequence[str], m: np.ndarray, unconstrained=None) -> dict:
    """Where the book ``H^T m`` stands against every limit: what binds, by how much, the groups' exposure.

    Parameters
    ----------
    unconstrained : ndarray of shape (n_sleeves,), optional
        The allocation the optimizer gives without the limits: its book's value of each
        binding limit says how far the limit moved the book.

    Returns
    -------
    dict
        ``limits`` (as configured), ``checks``: one row per limit and key (``value``,
        ``bound``, ``slack``: bound minus value, >= -1e-9), ``binding``: the rows with
        slack <= :data:`BINDING_TOL`, each with ``unconstrained`` (the unconstrained book's value) and
        ``excess`` (how far that was beyond the bound, 0 if it was not), ``groups``: group ->
        ``net``, ``min``, ``max``; ``gross``, ``net``.
    """
    checks = []

    def rows(m_):
        book = H.T @ m_
        out = []
        for j, s in enumerate(symbols):
            cap = limits.cap(s)
            if cap is not None:
                out.append(("max_position", s, abs(book[j]), cap, 1))
        for g in sorted(set(limits.group_max) | set(limits.group_min)):
            v = sum(book[j] for j, s in enumerate(symbols) if limits.groups.get(s) == g)
            if g in limits.group_max:
                out.append(("group_max", g, v, limits.group_max[g], 1))
            if g in limits.group_min:
                out.append(("group_min", g, v, limits.group_min[g], -1))
        if limits.gross_max is not None:
            out.append(("gross_max", "book", float(np.abs(book).sum()), limits.gross_max, 1))
        if limits.net_max is not None:
            out.append(("net_max", "book", float(book.sum()), limits.net_max, 1))
        if limits.net_min is not None:
            out.append(("net_min", "book", float(book.sum()), limits.net_min, -1))
        return out

    free = {(k, key): v for k, key, v, _, _ in rows(np.asarray(unconstrained))} if unconstrained is not None else {}
    for k, key, v, bound, side in rows(np.asarray(m)):
        slack = side * (bound - v)
        row = {"limit": k, "key": key, "value": float(v), "bound": float(bound), "slack": float(slack)}
        if slack <= BINDING_TOL and (k, key) in free:
            row["unconstrained"] = float(free[(k, key)])
            row["excess"] = float(max(0.0, side * (free[(k, key)] - bound)))
        checks.append(row)
    book = H.T @ np.asarray(m)
    groups = {}
    for g in sorted(set(limits.groups.values())):
        v = float(sum(book[j] for j, s in enumerate(symbols) if limits.groups.get(s) == g))
        groups[g] = {"net": v, "min": limits.group_min.get(g), "max": limits.group_max.get(g)}
    return {
        "limits": limits.to_dict(),
        "binding": [r for r in checks if r["slack"] <= BINDING_TOL],
        "checks": checks,
        "groups": groups,
        "gross": float(np.abs(book).sum()),
        "net": float(book.sum()),
    }
