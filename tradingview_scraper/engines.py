"""Risk profiles and the skfolio risk engines behind them (the fast engine of the built-ins is :mod:`window_engine`'s)."""

from __future__ import annotations

from enum import StrEnum


class RiskProfile(StrEnum):
    """A risk profile: one allocation rule, applied to assets (sleeves) or to sleeves (meta)."""

    EQUAL_WEIGHT = "equal_weight"
    INVERSE_VOLATILITY = "inverse_volatility"
    MIN_VARIANCE = "min_variance"
    HRP = "hrp"
    RISK_PARITY = "risk_parity"
    MAX_DIVERSIFICATION = "max_diversification"


#: Profiles whose allocation comes from a hierarchical clustering of the assets.
HIERARCHICAL = frozenset({RiskProfile.HRP})

RISK_PROFILES: tuple[str, ...] = tuple(p.value for p in RiskProfile)

#: Profiles whose skfolio optimizer takes linear constraints (``left_inequality``).
CONSTRAINED = frozenset({RiskProfile.MIN_VARIANCE, RiskProfile.RISK_PARITY, RiskProfile.MAX_DIVERSIFICATION})


def make_optimizer(profile: str, *, min_weight: float = 0.0, max_weight: float = 1.0, **inequality):
    """A fresh, unfitted skfolio optimizer for ``profile`` within weight bounds.

    Parameters
    ----------
    profile : str
        A :class:`RiskProfile` value.
    min_weight, max_weight : float
        Bounds on every weight. ``equal_weight`` ignores them (1/n is feasible whenever
        the bounds are, which the manifest checks before any work starts).
    **inequality
        ``left_inequality`` / ``right_inequality`` (``A w <= b``), for the profiles whose
        optimizer takes linear constraints (:data:`CONSTRAINED`; a meta node's book limits).

    Returns
    -------
    skfolio.optimization.BaseOptimization
        Long-only, fully invested (weights sum to 1).
    """
    from skfolio import RiskMeasure
    from skfolio.optimization import (
        EqualWeighted,
        HierarchicalRiskParity,
        InverseVolatility,
        MaximumDiversification,
        MeanRisk,
        ObjectiveFunction,
        RiskBudgeting,
    )

    bounds = {"min_weights": min_weight, "max_weights": max_weight}
    if inequality:
        if RiskProfile(profile) not in CONSTRAINED:
            raise ValueError(f"risk profile {profile!r} takes no linear constraints")
        bounds.update(inequality)
    match RiskProfile(profile):
        case RiskProfile.EQUAL_WEIGHT:
            return EqualWeighted()
        case RiskProfile.INVERSE_VOLATILITY:
            return InverseVolatility()
        case RiskProfile.MIN_VARIANCE:
            return MeanRisk(
                objective_function=ObjectiveFunction.MINIMIZE_RISK,
                risk_measure=RiskMeasure.VARIANCE,
                **bounds,
            )
        case RiskProfile.HRP:
            return HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE, **bounds)
        case RiskProfile.RISK_PARITY:
            return RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, **bounds)
        case RiskProfile.MAX_DIVERSIFICATION:
            return MaximumDiversification(**bounds)


class EstimatorEngine:
    """A risk profile defined as an estimator (:mod:`~tradingview_scraper.plugins`), fitted by itself on each window.

    No fast path: every window builds a fresh estimator from the definition and fits it on
    the window's returns as a DataFrame (column names included, so parameters keyed by
    asset work), exactly as skfolio's ``cross_val_predict`` fits a clone per split.

    Parameters
    ----------
    name : str
        The risk profile's name.
    definition : dict
        Its definition (``estimator``, ``params``).
    min_weight, max_weight : float
        Bounds on every weight. Bounds other than [0, 1] (a meta node's sleeve bounds) are
        given to the estimator as its ``min_weights`` / ``max_weights`` unless its
        definition sets them (:func:`plugins.build_estimator`).
    """

    needs_prior = False
    wants_frame = True

    def __init__(self, name: str, definition: dict, *, min_weight: float = 0.0, max_weight: float = 1.0):
        self.profile, self.definition = name, definition
        self.min_weight, self.max_weight = float(min_weight), float(max_weight)
        self.skfolio_fits = 0

    def model(self):
        """A fresh, unfitted estimator of this profile within its bounds."""
        from .plugins import build_estimator

        imposed = (self.min_weight, self.max_weight) != (0.0, 1.0)
        return build_estimator(
            self.definition,
            min_weight=self.min_weight if imposed else None,
            max_weight=self.max_weight if imposed else None,
        )

    def fit(self, X, prior=None):
        """Weights of one window (``X``: DataFrame of shape (n_obs, n_assets)): the estimator's ``weights_``.

        Raises
        ------
        Whatever the estimator raises on this window.
        """
        import numpy as np

        self.skfolio_fits += 1
        return np.asarray(self.model().fit(X).weights_, dtype=float)


class AssetBoundsEngine:
    """A risk profile under a bound per asset (an atomic profile's ``allocation`` by symbol), fitted by skfolio itself.

    Each window's bounds are the held columns' own (the selection changes them from window
    to window): skfolio's optimizers take them as ``min_weights`` / ``max_weights`` arrays;
    ``equal_weight`` and ``inverse_volatility`` (and a profile defined as an estimator) are
    fitted as without bounds and projected onto them exactly (``bounds.checked_weights``).

    Parameters
    ----------
    profile : str
    min_weight, max_weight : float or dict of symbol -> float
        ``"*"`` bounds the symbols not named.
    estimator : dict, optional
        The profile's definition when it is an estimator object.
    """

    needs_prior = False
    wants_frame = True

    def __init__(self, profile: str, min_weight, max_weight, estimator: dict | None = None):
        self.profile = profile if estimator is not None else RiskProfile(profile)
        self.min_weight, self.max_weight, self.estimator = min_weight, max_weight, estimator
        self.skfolio_fits = 0

    def bounds(self, columns):
        """``(lo, hi)``: ndarrays of shape (len(columns),)."""
        import numpy as np

        from .bounds import asset_bounds

        n = len(columns)
        lo = np.broadcast_to(asset_bounds(self.min_weight, list(columns), 0.0), (n,)).astype(float)
        hi = np.broadcast_to(asset_bounds(self.max_weight, list(columns), 1.0), (n,)).astype(float)
        return lo, hi

    def fit(self, X, prior=None):
        """Weights of one window (``X``: DataFrame of shape (n_obs, n_assets), its columns the symbols)."""
        import numpy as np

        self.skfolio_fits += 1
        if self.estimator is not None:
            from .plugins import build_estimator

            model = build_estimator(self.estimator)
        else:
            lo, hi = self.bounds(list(X.columns))
            model = make_optimizer(self.profile, min_weight=lo, max_weight=hi)
        return np.asarray(model.fit(X).weights_, dtype=float)
