"""The fast window engine of the built-in risk profiles: skfolio's weights without skfolio's per-fit overhead."""

from __future__ import annotations

import threading
from time import perf_counter

from .engines import RiskProfile, make_optimizer

#: Clarabel settings skfolio's convex optimizers use (``MeanRisk`` and ``RiskBudgeting``).
_CLARABEL_OPTS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9}

#: Compiled problems by (profile, n_assets, min_weight, max_weight), with a lock each.
_PROBLEMS: dict[tuple, tuple] = {}
_PROBLEMS_LOCK = threading.Lock()

def window_prior(X):
    """skfolio's ``EmpiricalPrior`` return distribution of one window (ndarray of shape (n_obs, n_assets)).

    The one estimate of a window's moments that every risk profile of that window uses.
    """
    from skfolio.prior import EmpiricalPrior

    return EmpiricalPrior().fit(X).return_distribution_


class WindowEngine:
    """One risk profile, fitted on many walk-forward windows, with skfolio's weights.

    skfolio's estimators rebuild everything on every ``fit``: input validation, the
    prior, and for the convex profiles the cvxpy problem, which cvxpy compiles anew
    although only the covariance changes from window to window. This engine takes the
    window's prior from :func:`window_prior` (computed once per window, shared by every
    profile), and

    * ``min_variance`` / ``risk_parity`` / ``max_diversification``: builds skfolio's own
      problem once per shape, the covariance square root (and for max_diversification
      the volatilities and skfolio's homogenization factor) as cvxpy ``Parameter``s, and
      per window solves the same Clarabel problem skfolio would (same data, same
      sparsity, same settings: identical weights);
    * ``hrp``: skfolio's algorithm (Pearson distance of the prior's returns, Ward
      linkage, optimal leaf ordering, recursive bisection on the variance, weight
      bounds), on arrays;
    * ``inverse_volatility`` / ``equal_weight``: their closed forms.

    Whenever a fast fit is not clean (a solver status other than optimal, non-finite
    values, a bound violated), the window is fitted by the skfolio estimator itself,
    so failures raise exactly what skfolio raises.
    ``tests/test_engine_equivalence.py`` checks the weights against skfolio's on every
    window of every shipped sleeve.

    Parameters
    ----------
    profile : str
        A :class:`RiskProfile` value.
    min_weight, max_weight : float
        Bounds on every weight, as for :func:`make_optimizer`.
    """

    def __init__(self, profile: str, *, min_weight: float = 0.0, max_weight: float = 1.0):
        self.profile = RiskProfile(profile)
        self.min_weight, self.max_weight = float(min_weight), float(max_weight)
        self.fast_fits = 0
        self.skfolio_fits = 0
        #: Seconds spent per part of the fast fits: ``build`` (parameters into the
        #: compiled problem), ``solve`` (Clarabel and unpacking), ``allocate`` (closed
        #: forms and HRP). Read by bench/bench_engine.py.
        self.seconds = {"build": 0.0, "solve": 0.0, "allocate": 0.0}

    @property
    def needs_prior(self) -> bool:
        """True when :meth:`fit` uses the window's prior (shared when given)."""
        return self.profile != RiskProfile.EQUAL_WEIGHT

    def fit(self, X, prior=None):
        """Weights of one window.

        Parameters
        ----------
        X : ndarray of shape (n_obs, n_assets)
            The window's returns.
        prior : skfolio.prior.ReturnDistribution, optional
            :func:`window_prior` of ``X``, when the caller shares it between profiles.

        Returns
        -------
        ndarray of shape (n_assets,)
            The weights skfolio's estimator fits on ``X`` (``weights_``).

        Raises
        ------
        Whatever the skfolio estimator raises on this window.
        """
        import numpy as np

        w = None
        if np.isfinite(X).all():
            if self.profile == RiskProfile.EQUAL_WEIGHT:
                return np.ones(X.shape[1]) / X.shape[1]
            w = self._fast(X, window_prior(X) if prior is None else prior)
        if w is None:
            self.skfolio_fits += 1
            model = make_optimizer(self.profile, min_weight=self.min_weight, max_weight=self.max_weight)
            return np.asarray(model.fit(X).weights_, dtype=float)
        self.fast_fits += 1
        return w

    def _fast(self, X, prior):
        import numpy as np

        cov = prior.covariance
        if not np.isfinite(cov).all() or (np.diag(cov) <= 0).any():
            return None
        if self.profile not in (RiskProfile.INVERSE_VOLATILITY, RiskProfile.HRP):
            return self._convex(X.shape[1], prior)
        t0 = perf_counter()
        if self.profile == RiskProfile.INVERSE_VOLATILITY:
            w = 1 / np.sqrt(np.diag(cov))
            w = w / sum(w)
        else:
            w = self._hrp(prior.returns, cov)
        self.seconds["allocate"] += perf_counter() - t0
        return w

    def _convex(self, n: int, prior):
        import cvxpy as cp
        import numpy as np

        key = (self.profile, n, self.min_weight, self.max_weight)
        with _PROBLEMS_LOCK:
            if key not in _PROBLEMS:
                _PROBLEMS[key] = (*self._build(n), threading.Lock())
        problem, w, factor, sqrt_cov, ratio, lock = _PROBLEMS[key]
        with lock:  # one compiled problem per process: sleeves may be threads of one driver
            t0 = perf_counter()
            sqrt_cov.value = prior.covariance_sqrt.components[0]
            if ratio is not None:  # skfolio's homogenization factor, from the prior's mean
                ratio[0].value = np.sqrt(np.diag(prior.covariance))
                ratio[1].value = min(1e3, max(1e-3, np.mean(np.abs(prior.mu))))
            data, chain, inverse = problem.get_problem_data(cp.CLARABEL, solver_opts=_CLARABEL_OPTS)
            # A parameter leaves its structural zeros (the Cholesky factor's upper triangle)
            # in the matrices; dropped, the data equal skfolio's entry for entry.
            for name in (cp.settings.A, cp.settings.P):
                if data.get(name) is not None:
                    data[name] = _without_zeros(data[name])
            t1 = perf_counter()
            try:
                solution = chain.solve_via_data(problem, data, False, False, _CLARABEL_OPTS)
                problem.unpack_results(solution, chain, inverse)
            except cp.SolverError:
                return None
            finally:
                t2 = perf_counter()
                self.seconds["build"] += t1 - t0
                self.seconds["solve"] += t2 - t1
            status, w_value = problem.status, w.value
            f = 1.0 if factor is None else factor.value
        if status != cp.OPTIMAL or w_value is None:
            return None
        if f is None or not np.isfinite(f) or f <= 1e-12:
            return None
        weights = np.array(w_value / float(f), dtype=float)
        return weights if np.isfinite(weights).all() else None

    def _build(self, n: int):
        """skfolio's problem for this profile, expression for expression, the covariance square root a Parameter.

        Compiled by cvxpy on its first solve, then reused by every window of that shape
        in this process (``_PROBLEMS``).
        """
        import cvxpy as cp
        import numpy as np

        one, zero = cp.Constant(1), cp.Constant(0)
        w = cp.Variable(n)
        sqrt_cov = cp.Parameter((n, n))
        risk = cp.Variable(nonneg=True)
        ratio = None
        if self.profile == RiskProfile.MIN_VARIANCE:  # MeanRisk: minimize variance, factor 1
            factor, f = None, cp.Constant(1)
            constraints = []
        elif self.profile == RiskProfile.RISK_PARITY:  # RiskBudgeting: equal budgets, homogenized
            factor = f = cp.Variable()
            constraints = [np.ones(n) @ cp.log(w) * one >= 0]
        else:  # MaximumDiversification: MeanRisk maximizing (volatilities @ w) / std, Charnes-Cooper
            factor = f = cp.Variable()
            constraints = []
            ratio = (cp.Parameter(n, nonneg=True), cp.Parameter(nonneg=True))
        constraints += [
            w * one >= self.min_weight * f * one,
            w * one <= self.max_weight * f * one,
            cp.sum(w) * one == 1.0 * f * one,
            cp.SOC(risk * one, cp.hstack([sqrt_cov.T @ w]) * one),
        ]
        if self.profile == RiskProfile.MIN_VARIANCE:
            objective = cp.Minimize(cp.square(risk) * one + (zero + zero) * one + zero * one)
        elif self.profile == RiskProfile.RISK_PARITY:
            objective = cp.Minimize(cp.square(risk) * one + zero * one)
        else:
            volatilities, homogenization = ratio
            expected = volatilities @ w - zero - zero - zero  # less costs, fees, uncertainty: none
            constraints.append(expected * one - cp.Constant(0.0) * f * one == homogenization * one)
            objective = cp.Minimize(risk * one + (zero + zero) * one + zero * one)
        return cp.Problem(objective, constraints), w, factor, sqrt_cov, ratio

    def _hrp(self, returns, cov):
        import numpy as np
        from scipy.cluster import hierarchy
        from scipy.spatial.distance import squareform

        n = cov.shape[0]
        if n == 1:
            return np.ones(1)
        lo, hi = np.full(n, self.min_weight), np.full(n, self.max_weight)
        if lo.sum() > 1 + 1e-8 or hi.sum() < 1 - 1e-8:
            return None
        distance = np.sqrt(np.clip(0.5 * (1 - np.corrcoef(returns.T)), a_min=0.0, a_max=1.0))
        condensed = squareform(distance, checks=False)
        linkage = hierarchy.linkage(condensed, method="ward", optimal_ordering=False)
        ordering = hierarchy.leaves_list(hierarchy.optimal_leaf_ordering(linkage, condensed))
        risks = np.diag(cov).copy()
        weights = np.ones(n)
        items = [ordering]
        while items:
            new_items = []
            for e in items:
                if len(e) < 2:
                    continue
                mid = len(e) // 2
                left, right = e[:mid], e[mid:]
                new_items += [left, right]
                split = []
                for ids in (left, right):
                    v = np.zeros(n)
                    v[ids] = 1 / risks[ids]
                    v /= v.sum()
                    split.append(float(v @ cov @ v.T))
                if not np.isfinite(split).all() or split[0] + split[1] == 0:
                    return None
                alpha = 1 - split[0] / (split[0] + split[1])
                alpha = min(hi[left].sum() / weights[left[0]], max(lo[left].sum() / weights[left[0]], alpha))
                alpha = 1 - min(
                    hi[right].sum() / weights[right[0]], max(lo[right].sum() / weights[right[0]], 1 - alpha)
                )
                weights[left] *= alpha
                weights[right] *= 1 - alpha
            items = new_items
        if (
            not np.isfinite(weights).all()
            or not np.isclose(weights.sum(), 1)
            or (weights < lo - 1e-8).any()
            or (weights > hi + 1e-8).any()
        ):
            return None
        return weights


def _without_zeros(matrix):
    matrix.eliminate_zeros()
    return matrix
