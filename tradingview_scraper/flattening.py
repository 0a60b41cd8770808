"""Exact flattening: a meta node's physical-asset weights as its meta weights @ the sleeves' asset weights."""

from __future__ import annotations

from itertools import chain
from operator import itemgetter

import numpy as np

from .errors import ConservationError

GROSS_TOL = 1e-9
CONTRIB_TOL = 1e-12


def flatten_matrix(
    meta_weights: np.ndarray,
    holdings: np.ndarray,
    short: np.ndarray,
    *,
    sleeves: list[str] | None = None,
    assets: list[tuple[str, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Physical-asset weights as one product: meta weights @ sleeve-by-asset weight matrix.

    The vectorized core of :func:`flatten` (no Python loop over sleeves or assets), like
    skfolio's ``StackingOptimization`` computing ``outer_weights @ inner_weights``.

    Parameters
    ----------
    meta_weights : ndarray of shape (n_sleeves,)
        Meta weight of each sleeve, summing to 1.
    holdings : ndarray of shape (n_sleeves, n_assets)
        Each sleeve's gross asset weights (a row sums to 1). A column is one
        (symbol, direction) pair: a symbol held LONG and SHORT has two columns.
    short : ndarray of bool, shape (n_assets,)
        True for SHORT columns.
    sleeves : list of str, optional
        Sleeve ids, naming the culprit in errors (default: row numbers).
    assets : list of (symbol, direction), optional
        Column keys, naming the culprit in errors (default: column numbers).

    Returns
    -------
    gross : ndarray of shape (n_assets,)
        Flattened gross weight of each column, summing to 1.
    contributions : ndarray of shape (n_sleeves, n_assets)
        ``meta_weights[i] * holdings[i, j]``: what sleeve ``i`` puts into column ``j``.

    Raises
    ------
    ConservationError
        The shapes disagree; a sleeve's row or the meta weights do not sum to 1 within
        1e-9; the flattened gross weights do not sum to 1 within 1e-9; a column differs
        from the sum of its contributions by more than 1e-12; or a SHORT column would
        carry a positive net weight (a LONG one a negative one).
    """
    w = np.asarray(meta_weights, dtype=float)
    matrix = np.asarray(holdings, dtype=float)
    short = np.asarray(short, dtype=bool)
    if matrix.ndim != 2 or w.shape != (matrix.shape[0],) or short.shape != (matrix.shape[1],):
        raise ConservationError(
            f"shapes disagree: meta weights {w.shape}, holdings {matrix.shape}, short flags {short.shape}; "
            "need (n_sleeves,), (n_sleeves, n_assets), (n_assets,)"
        )
    row_sums = matrix.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > GROSS_TOL)
    if bad.size:
        i = int(bad[0])
        raise ConservationError(f"sleeve {_label(sleeves, i)!r}: asset weights sum to {float(row_sums[i])!r}, not 1")
    if abs(w.sum() - 1.0) > GROSS_TOL:
        raise ConservationError(f"meta weights sum to {float(w.sum())!r}, not 1")
    gross = w @ matrix
    contributions = w[:, None] * matrix
    total = float(gross.sum())
    if abs(total - 1.0) > GROSS_TOL:
        raise ConservationError(f"flattened gross weights sum to {total!r}, not 1")
    drift = np.abs(contributions.sum(axis=0) - gross)
    if drift.size and drift.max() > CONTRIB_TOL:
        j = int(drift.argmax())
        raise ConservationError(f"asset {_label(assets, j)} weight differs from its contributions by {drift[j]:g}")
    wrong = np.flatnonzero(gross < -CONTRIB_TOL)
    if wrong.size:
        j = int(wrong[0])
        side = "SHORT" if short[j] else "LONG"
        raise ConservationError(
            f"asset {_label(assets, j)} would carry a {'positive' if short[j] else 'negative'} net weight "
            f"({-gross[j] if short[j] else gross[j]:g}) as a {side} position; gross weights must be >= 0"
        )
    return gross, contributions


def _label(labels: list | None, i: int) -> object:
    return labels[i] if labels is not None else i


def holdings_matrix(sleeves: list[str], holdings: dict[str, list[dict]]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The sleeve-by-asset weight matrix of asset rows, one column per (symbol, direction).

    Parameters
    ----------
    sleeves : list of str
        Sleeve ids, in row order.
    holdings : dict of sleeve id -> list of rows
        Each sleeve's rows ``{"symbol", "direction", "weight"}``; repeated keys add up.

    Returns
    -------
    matrix : ndarray of shape (n_sleeves, n_assets)
    assets : list of (symbol, direction)
        Column keys, in order of first appearance.

    Raises
    ------
    ConservationError
        A sleeve has no holdings.
    """
    missing = [s for s in sleeves if s not in holdings]
    if missing:
        raise ConservationError(f"no holdings for sleeve(s) {', '.join(missing)}")
    counts = [len(holdings[s]) for s in sleeves]
    rows = list(chain.from_iterable(holdings[s] for s in sleeves))
    column: dict[tuple, int] = {}
    key = itemgetter("symbol", "direction")
    cols = np.fromiter((column.setdefault(k, len(column)) for k in map(key, rows)), dtype=np.int64, count=len(rows))
    weights = np.fromiter(map(itemgetter("weight"), rows), dtype=float, count=len(rows))
    n, m = len(sleeves), len(column)
    cells = np.repeat(np.arange(n), counts) * m + cols
    matrix = np.bincount(cells, weights=weights, minlength=n * m).reshape(n, m)
    return matrix, [(str(sym), str(d)) for sym, d in column]


def flatten(sleeve_weights: dict[str, float], holdings: dict[str, list[dict]]) -> dict:
    """Physical-asset weights of JSON rows: :func:`holdings_matrix`, then :func:`flatten_matrix`.

    Parameters
    ----------
    sleeve_weights : dict of sleeve id -> weight
        Meta weights, summing to 1.
    holdings : dict of sleeve id -> list of rows
        Each sleeve's asset rows ``{"symbol", "direction", "weight"}`` (gross weights
        summing to 1). A nested meta sleeve gives its own flattened rows.

    Returns
    -------
    dict
        ``weights``: rows keyed by (symbol, direction), sorted by weight descending,
        each with ``weight`` (gross), ``net_weight`` (negative for SHORT) and
        ``sleeves`` (contribution per sleeve); and ``gross``, ``net``, ``long``, ``short``.

    Raises
    ------
    ConservationError
        See :func:`holdings_matrix` and :func:`flatten_matrix`.
    """
    sleeves = list(sleeve_weights)
    matrix, assets = holdings_matrix(sleeves, holdings)
    short = np.array([d == "SHORT" for _, d in assets], dtype=bool)
    w = np.array([sleeve_weights[s] for s in sleeves], dtype=float)
    gross, contributions = flatten_matrix(w, matrix, short, sleeves=sleeves, assets=assets)
    weight = gross.tolist()
    held = sorted(np.flatnonzero(gross > 0).tolist(), key=lambda j: (-weight[j], assets[j]))
    by_asset = np.ascontiguousarray(contributions.T)
    names = np.array(sleeves, dtype=object)
    out = []
    for j in held:
        col = by_asset[j]
        nz = np.flatnonzero(col)
        out.append(
            {
                "symbol": assets[j][0],
                "direction": assets[j][1],
                "weight": weight[j],
                "net_weight": -weight[j] if short[j] else weight[j],
                "sleeves": dict(zip(names[nz].tolist(), col[nz].tolist(), strict=True)),
            }
        )
    return {
        "weights": out,
        "gross": float(gross.sum()),
        "net": float(np.where(short, -gross, gross).sum()),
        "long": float(gross[~short].sum()),
        "short": float(gross[short].sum()),
    }
