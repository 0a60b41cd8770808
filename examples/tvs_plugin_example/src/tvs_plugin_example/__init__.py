"""An example plugin package: a risk-profile estimator and a selection, registered through entry points.

Install it into the pipeline's environment (``pip install examples/tvs_plugin_example``) and
name them in a manifest:

* ``{"name": "inv_var", "estimator": "inverse_variance", "params": {"power": 1.0}}`` in a
  ``profiles`` list;
* ``"selection": {"method": "low_volatility", "params": {"keep": 2}}`` in an atomic profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from skfolio.optimization import BaseOptimization

__all__ = ["InverseVariance", "low_volatility"]


class InverseVariance(BaseOptimization):
    """Weights proportional to ``1 / variance ** power`` of each asset's returns on the fitted window.

    A scikit-learn estimator as skfolio's are: its constructor only stores its parameters,
    ``fit`` sets ``weights_`` (ndarray of shape (n_assets,), summing to 1).

    Parameters
    ----------
    power : float, default 1.0
        1.0: inverse variance; 0.5: inverse volatility; 0.0: equal weight.
    portfolio_params : dict, optional
        Passed to skfolio's ``Portfolio`` by ``predict``.
    """

    def __init__(self, power: float = 1.0, portfolio_params: dict | None = None):
        super().__init__(portfolio_params=portfolio_params)
        self.power = power

    def fit(self, X, y=None, **fit_params):
        """Fit on returns ``X`` (array-like of shape (n_observations, n_assets))."""
        X = self._validate_data(X) if hasattr(self, "_validate_data") else np.asarray(X, dtype=float)
        variance = np.var(np.asarray(X, dtype=float), axis=0, ddof=1)
        raw = 1.0 / variance ** float(self.power)
        self.weights_ = raw / raw.sum()
        return self


def low_volatility(train: pd.DataFrame, params: dict) -> list[str]:
    """The ``keep`` symbols with the lowest volatility over the last ``lookback`` rows of the train window.

    Parameters
    ----------
    train : DataFrame of shape (n_observations, n_symbols)
        One walk-forward train window's returns (never a later date).
    params : dict
        ``keep`` (int, default 2) and ``lookback`` (int, default: the whole window).

    Returns
    -------
    list of str
        The symbols to hold in the next test window.
    """
    keep = int(params.get("keep", 2))
    tail = train.iloc[-int(params.get("lookback", len(train))) :]
    vol = tail.std(ddof=1).sort_values(kind="mergesort")
    return [str(s) for s in vol.index[:keep]]
