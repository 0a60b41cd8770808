"""The Euclidean projection of a sleeve allocation onto the polytope of a meta node's book limits.

:func:`project` solves ``min ||m - m0||`` over {m : sum m = 1, lo <= m <= hi, A m <= b}, the rows
``A m <= b`` being the limits written on the sleeve weights (:func:`limits.constraints`): a QP
solved by Clarabel, then exactly on its active set, else by least-distance programming.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LimitsError, OptimizationError

#: Tolerance every book meets its limits to.
LIMIT_TOL = 1e-9
#: Limit names in the order they are reported.
LIMIT_KEYS = ("max_position", "group_max", "group_min", "gross_max", "net_min", "net_max")


@dataclass
class Constraints:
    """Rows of ``A m <= b`` on the sleeve weights, each labelled ``(limit, key)``."""

    A: np.ndarray  #: (n_rows, n_sleeves)
    b: np.ndarray  #: (n_rows,)
    labels: list[tuple[str, str]]


def _infeasible(lo: float, hi: float, cons: Constraints, n: int) -> str:
    """Which limits no allocation within the sleeve bounds meets, each alone (else: jointly)."""
    import cvxpy as cp

    def feasible(mask):
        m = cp.Variable(n)
        c = [cp.sum(m) == 1, m >= lo, m <= hi]
        if mask.any():
            c.append(cons.A[mask] @ m <= cons.b[mask])
        prob = cp.Problem(cp.Minimize(0), c)
        try:
            prob.solve(solver=cp.CLARABEL)
        except cp.SolverError:  # undecided: this limit is not named alone
            return True
        return prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)

    names = sorted({lbl for lbl, _ in cons.labels}, key=LIMIT_KEYS.index)
    alone = [k for k in names if not feasible(np.array([lbl == k for lbl, _ in cons.labels]))]
    return ", ".join(alone) if alone else "jointly " + ", ".join(names)


def project(m0: np.ndarray, lo: float, hi: float, cons: Constraints) -> tuple[np.ndarray, float]:
    """The Euclidean projection of ``m0`` onto {m : sum m = 1, lo <= m <= hi, A m <= b}, and its distance.

    A feasible ``m0`` is returned as it is (distance 0). Otherwise Clarabel solves the QP and
    the solution is recomputed exactly on its active set (the KKT system of the equality
    constrained least squares), so every row holds to rounding; where that active set does
    not give a feasible point with non-negative multipliers (a degenerate or badly scaled
    problem), the exact least-distance method decides (:func:`_least_distance`).

    Parameters
    ----------
    m0 : ndarray of shape (n_sleeves,)
    lo, hi : float
        The sleeve bounds.
    cons : Constraints

    Returns
    -------
    m : ndarray of shape (n_sleeves,)
    distance : float
        ``||m - m0||_2``.

    Raises
    ------
    OptimizationError
        No allocation meets the limits (naming them), or the solution misses a row by more
        than :data:`LIMIT_TOL`.
    """
    m0 = np.asarray(m0, dtype=float)
    n = len(m0)
    G = np.vstack([cons.A, np.eye(n), -np.eye(n)])
    h = np.concatenate([cons.b, np.full(n, hi), np.full(n, -lo)])
    if abs(m0.sum() - 1) <= 1e-12 and (G @ m0 - h).max(initial=-1.0) <= 0.0:
        return m0, 0.0
    import cvxpy as cp

    m = cp.Variable(n)
    c = [cp.sum(m) == 1, m >= lo, m <= hi]
    if len(cons.b):
        c.append(cons.A @ m <= cons.b)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(m - m0)), c)
    try:
        prob.solve(solver=cp.CLARABEL)
        solved = prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and m.value is not None
    except cp.SolverError:  # a degenerate problem the interior-point solver gives up on: the exact method decides
        solved = False
    best = None
    if solved:
        for threshold in (1e-7, 1e-9, 1e-5):
            best = _on_active_set(m0, np.asarray(m.value, dtype=float), G, h, threshold)
            if best is not None:
                break
    if best is None:  # no active set confirmed: the exact least-distance solution (or none exists)
        best = _least_distance(m0, G, h)
        polished = None if best is None else _on_active_set(m0, best, G, h, 1e-9)
        best = best if polished is None else polished
    if best is None:
        raise LimitsError(
            f"book limits infeasible: no sleeve allocation within [{lo}, {hi}] meets {_infeasible(lo, hi, cons, n)}"
        )
    viol = max(float((G @ best - h).max(initial=0.0)), abs(float(best.sum()) - 1.0))
    if viol > LIMIT_TOL:
        raise OptimizationError(f"book limits: the projection misses a limit by {viol:.3g}")
    return best, float(np.linalg.norm(best - m0))


def _least_distance(m0: np.ndarray, G: np.ndarray, h: np.ndarray) -> np.ndarray | None:
    """The projection of ``m0`` onto {m : sum m = 1, G m <= h} by Lawson and Hanson's least distance
    programming (one NNLS, an exact active-set method); None when the set is empty.

    With ``m = 1/n + N y`` (N an orthonormal basis of the weights that sum to 0) and
    ``y = N^T m0 + u``, the projection is the shortest ``u`` with ``E u >= f``,
    ``E = -G N``, ``f = G (1/n + N N^T m0) - h`` (Lawson and Hanson, *Solving Least Squares
    Problems*, 1974, ch. 23).

    A row of ``G`` parallel to the ones vector (a long-only book's gross and net limits) is
    constant on the plane ``sum m = 1``: it is met or not by every point, so it is checked once and
    left out of ``E``. Kept, its row of ``E`` is rounding residue, and ``E_i u >= f_i = 0`` is then a
    half-space through the origin in an arbitrary direction, however small the residue, that cuts
    off the projection.
    """
    from scipy.linalg import null_space
    from scipy.optimize import nnls

    n = len(m0)
    N = null_space(np.ones((1, n)))
    base = np.full(n, 1.0 / n) + N @ (N.T @ m0)
    E, f = -G @ N, G @ base - h
    constant = np.linalg.norm(E, axis=1) <= 1e-12 * np.linalg.norm(G, axis=1)
    if (f[constant] > LIMIT_TOL).any():  # a limit on the sum that no allocation summing to 1 meets
        return None
    M = np.vstack([E[~constant].T, f[~constant]])
    target = np.zeros(N.shape[1] + 1)
    target[-1] = 1.0
    w, _ = nnls(M, target, maxiter=50 * M.shape[1])
    r = M @ w - target
    if abs(r[-1]) < 1e-12:  # the residual cannot be normalized: the constraints are incompatible
        return None
    m = base + N @ (-r[:-1] / r[-1])
    return m if (G @ m - h).max(initial=0.0) <= LIMIT_TOL else None


def _on_active_set(m0, approx, G, h, threshold: float) -> np.ndarray | None:
    """The projection with the rows within ``threshold`` of active at ``approx`` held as equalities (None: not optimal there)."""
    n = len(m0)
    active = np.flatnonzero(G @ approx - h >= -threshold)
    C = np.vstack([np.ones((1, n)), G[active]])
    d = np.concatenate([[1.0], h[active]])
    k = C.shape[0]
    K = np.block([[np.eye(n), C.T], [C, np.zeros((k, k))]])
    sol = np.linalg.lstsq(K, np.concatenate([m0, d]), rcond=None)[0]
    m, lam = sol[:n], sol[n:]
    if (G @ m - h).max(initial=0.0) > 1e-12 or abs(m.sum() - 1) > 1e-12:
        return None
    if (lam[1:] < -1e-8).any() and not _dual_feasible(m0 - m, G[active]):
        return None
    return m


def _dual_feasible(gradient: np.ndarray, active: np.ndarray) -> bool:
    """Whether ``gradient`` is a non-negative combination of the ``active`` rows plus a multiple of the all-ones vector.

    The least-squares multipliers are the minimum-norm ones: where active rows repeat the sum
    constraint (a long-only book's gross and net limits), they split its multiplier and can be
    negative although non-negative ones exist; NNLS decides.
    """
    from scipy.optimize import nnls

    n = len(gradient)
    _, residual = nnls(np.vstack([active, np.ones(n), -np.ones(n)]).T, gradient)
    return residual <= 1e-9 * max(1.0, float(np.linalg.norm(gradient)))
