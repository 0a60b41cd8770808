"""Weights within bounds: the exact projection onto the bounded simplex, and the checks of an optimizer's and a window's weights."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, ConservationError, OptimizationError

#: Tolerance of a window's weights: they sum to 1 and stay within their bounds to this.
WEIGHT_TOL = 1e-12


def project_to_bounds(weights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Euclidean projection of ``weights`` onto the capped simplex {w : sum w = 1, lo <= w <= hi}.

    The nearest point in the Euclidean norm is ``clip(weights - tau, lo, hi)`` for the one
    shift ``tau`` that makes it sum to 1 (the KKT conditions of the projection): weights
    strictly between the bounds all move by the same amount. ``tau`` is bracketed by
    bisection, then solved exactly on the bracket's set of free weights, so the result sums
    to 1 within 1e-12 and every weight lies within [lo, hi]. A feasible input is returned
    unchanged (up to rounding).

    Parameters
    ----------
    weights : array-like of shape (n,)
        Finite weights (any sum).
    lo, hi : float
        Bounds on every weight, feasible: ``n * lo <= 1 <= n * hi`` and ``lo <= hi``.

    Returns
    -------
    ndarray of shape (n,)

    Raises
    ------
    ConfigError
        The bounds are infeasible for ``n`` weights, or a weight is not finite.
    """
    v = np.asarray(weights, dtype=float).copy()
    n = len(v)
    if n == 0:
        return v
    if not np.isfinite(v).all():
        raise ConfigError(f"cannot project non-finite weights {v.tolist()!r} onto bounds [{lo}, {hi}]")
    if np.ndim(lo) or np.ndim(hi):
        return _project_to_vector_bounds(v, np.broadcast_to(lo, v.shape).astype(float), np.broadcast_to(hi, v.shape).astype(float))
    if lo > hi or n * lo > 1 + WEIGHT_TOL or n * hi < 1 - WEIGHT_TOL:
        raise ConfigError(
            f"bounds [{lo}, {hi}] are infeasible for {n} weights summing to 1; "
            f"need min_weight <= {1 / n:.4g} <= max_weight"
        )

    def total(tau: float) -> float:
        return float(np.clip(v - tau, lo, hi).sum())

    # total() falls from n*hi (tau <= min(v) - hi) to n*lo (tau >= max(v) - lo).
    left, right = float(v.min() - hi), float(v.max() - lo)
    for _ in range(200):
        mid = 0.5 * (left + right)
        if mid in (left, right):
            break
        if total(mid) > 1.0:
            left = mid
        else:
            right = mid
    tau = 0.5 * (left + right)
    at_hi, at_lo = v - tau >= hi, v - tau <= lo
    free = ~(at_hi | at_lo)
    if free.any():  # on the linear piece: sum(v_free - tau) = 1 - (capped mass)
        budget = 1.0 - hi * at_hi.sum() - lo * at_lo.sum()
        tau = float((v[free].sum() - budget) / free.sum())
    w = np.clip(v - tau, lo, hi)
    slack = 1.0 - w.sum()  # rounding only: put it where the bounds leave room
    room = (w < hi) if slack > 0 else (w > lo)
    if slack and room.any():
        w[room] += slack / room.sum()
        w = np.clip(w, lo, hi)
    return w


def _project_to_vector_bounds(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """:func:`project_to_bounds` with a bound per weight (an atomic profile's ``allocation`` by symbol).

    The same shift ``tau``: ``clip(v - tau, lo, hi)`` summing to 1, bracketed by bisection and
    solved exactly on the free weights.
    """
    if (lo > hi).any() or lo.sum() > 1 + WEIGHT_TOL or hi.sum() < 1 - WEIGHT_TOL:
        raise ConfigError(
            f"per-asset bounds are infeasible for {len(v)} weights summing to 1: floors sum to {lo.sum():.4g}, "
            f"caps to {hi.sum():.4g}; need floors <= 1 <= caps"
        )
    left, right = float((v - hi).min()), float((v - lo).max())
    for _ in range(200):
        mid = 0.5 * (left + right)
        if mid in (left, right):
            break
        if float(np.clip(v - mid, lo, hi).sum()) > 1.0:
            left = mid
        else:
            right = mid
    tau = 0.5 * (left + right)
    at_hi, at_lo = v - tau >= hi, v - tau <= lo
    free = ~(at_hi | at_lo)
    if free.any():
        budget = 1.0 - hi[at_hi].sum() - lo[at_lo].sum()
        tau = float((v[free].sum() - budget) / free.sum())
    w = np.clip(v - tau, lo, hi)
    slack = 1.0 - w.sum()
    room = (w < hi) if slack > 0 else (w > lo)
    if slack and room.any():
        w[room] += slack / room.sum()
        w = np.clip(w, lo, hi)
    return w


def asset_bounds(bound, columns: list[str], default: float):
    """A bound as a number, or per column (ndarray) when given as symbol -> bound with ``"*"`` for the rest."""
    if isinstance(bound, dict):
        return np.array([float(bound.get(c, bound.get("*", default))) for c in columns])
    return bound


def check_window_weights(weights: np.ndarray, lo: float, hi: float, *, window: str, profile: str) -> None:
    """Refuse a walk-forward window whose weights are not a full, bounded allocation.

    Parameters
    ----------
    weights : ndarray of shape (n_held,)
        The window's weights over the columns it holds.
    lo, hi : float
        The bounds every held weight must respect.
    window, profile : str
        The window (its last train date) and the risk profile, to name the culprit.

    Raises
    ------
    ConservationError
        The weights are not finite, do not sum to 1 within 1e-12, or leave [lo, hi] by more
        than 1e-12.
    """
    w = np.asarray(weights, dtype=float)
    where = f"{profile} walk-forward window trained up to {window}"
    if not np.isfinite(w).all():
        raise ConservationError(f"{where}: weights {w.tolist()!r} are not finite")
    if abs(w.sum() - 1.0) > WEIGHT_TOL:
        raise ConservationError(f"{where}: weights sum to {float(w.sum())!r}, not 1 (tolerance {WEIGHT_TOL:g})")
    if w.size and (np.any(w < np.asarray(lo) - WEIGHT_TOL) or np.any(w > np.asarray(hi) + WEIGHT_TOL)):
        bounds = f"[{lo}, {hi}]" if not (np.ndim(lo) or np.ndim(hi)) else "(per asset)"
        raise ConservationError(
            f"{where}: weights span [{float(w.min())!r}, {float(w.max())!r}], outside the bounds {bounds}"
        )


def checked_weights(weights, n_assets: int, profile: str, min_weight: float, max_weight: float) -> np.ndarray:
    """An optimizer's weights, checked (shape, finite, sum 1), clipped at 0 and held within bounds.

    Raises
    ------
    OptimizationError
        The weights are not ``n_assets`` finite numbers summing to 1 within 1e-6.
    """
    w = np.asarray(weights, dtype=float)
    if w.shape != (n_assets,) or not np.all(np.isfinite(w)) or abs(w.sum() - 1) > 1e-6:
        raise OptimizationError(f"optimizer {profile} returned invalid weights (sum {w.sum():.6g})")
    w = np.clip(w, 0.0, None)
    w = w / w.sum()
    if (w < min_weight).any() or (w > max_weight).any() or abs(w.sum() - 1.0) > WEIGHT_TOL:
        w = project_to_bounds(w, min_weight, max_weight)
    return w
