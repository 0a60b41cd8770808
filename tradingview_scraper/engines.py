"""Risk profiles and the skfolio risk engines behind them."""

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


def make_optimizer(profile: str, *, min_weight: float = 0.0, max_weight: float = 1.0):
    """A fresh, unfitted skfolio optimizer for ``profile`` within weight bounds.

    Parameters
    ----------
    profile : str
        A :class:`RiskProfile` value.
    min_weight, max_weight : float
        Bounds on every weight. ``equal_weight`` ignores them (1/n is feasible whenever
        the bounds are, which the manifest checks before any work starts).

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
