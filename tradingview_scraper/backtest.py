"""Walk-forward backtest of one risk profile over a returns matrix (assets or sleeves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import DataError

#: A selection rule: train-window returns -> the columns to hold in the next test window.
Selector = Callable[[pd.DataFrame], list[str]]


@dataclass
class WalkForwardResult:
    """Outcome of :func:`walk_forward` for one risk profile.

    Attributes
    ----------
    returns : Series of shape (n_test_obs,)
        Out-of-sample returns, net of frictions, indexed by date.
    weights : DataFrame of shape (n_windows, n_assets)
        Target weights of every window, indexed by the window's first test date.
    final_weights : Series of shape (n_assets,)
        Weights fitted on the last ``train_window`` observations (the live allocation).
    """

    returns: pd.Series
    weights: pd.DataFrame
    final_weights: pd.Series
    fitted_on: dict
    windows_attempted: int = 0
    windows_succeeded: int = 0
    windows_fallback: int = 0
    errors: list[str] = field(default_factory=list)
    final_fallback: bool = False
    final_error: str | None = None
    final_model: object | None = None

    def health(self) -> dict:
        return {
            "windows_attempted": self.windows_attempted,
            "windows_succeeded": self.windows_succeeded,
            "windows_fallback": self.windows_fallback,
            "errors": self.errors[:20],
        }


def project_to_bounds(weights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Nearest-in-proportion weights within [lo, hi] that sum to 1 (capped simplex).

    Weights at a bound are frozen; the remainder is redistributed in proportion to the
    free weights, until nothing violates a bound. Feasible whenever ``n*lo <= 1 <= n*hi``.
    """
    w = np.asarray(weights, dtype=float).copy()
    n = len(w)
    if n == 0:
        return w
    free = np.ones(n, dtype=bool)
    for _ in range(n + 1):
        budget = 1.0 - w[~free].sum()
        base = w[free]
        base = base / base.sum() * budget if base.sum() > 0 else np.full(free.sum(), budget / free.sum())
        w[free] = base
        over, under = free & (w > hi + 1e-15), free & (w < lo - 1e-15)
        if not over.any() and not under.any():
            break
        w[over], w[under] = hi, lo
        free &= ~(over | under)
        if not free.any():
            break
    return w


def fit_weights(
    X: pd.DataFrame, profile: str, *, min_weight: float = 0.0, max_weight: float = 1.0
) -> tuple[np.ndarray, object]:
    """Fit risk profile ``profile`` on ``X`` (n_obs, n_assets); return (weights, fitted model).

    Raises
    ------
    OptimizationError-like exceptions from skfolio/cvxpy, or ValueError on non-finite weights.
    """
    from .engines import make_optimizer

    model = make_optimizer(profile, min_weight=min_weight, max_weight=max_weight)
    model.fit(X)
    w = np.asarray(model.weights_, dtype=float)
    if w.shape != (X.shape[1],) or not np.all(np.isfinite(w)) or abs(w.sum() - 1) > 1e-6:
        raise ValueError(f"optimizer {profile} returned invalid weights (sum {w.sum():.6g})")
    w = np.clip(w, 0.0, None)
    w = w / w.sum()
    if (w < min_weight - 1e-9).any() or (w > max_weight + 1e-9).any():
        w = project_to_bounds(w, min_weight, max_weight)
    return w, model


def walk_forward(
    X: pd.DataFrame,
    profile: str,
    *,
    train_window: int,
    test_window: int,
    min_weight: float = 0.0,
    max_weight: float = 1.0,
    cost_rate: float = 0.0,
    selector: Selector | None = None,
) -> WalkForwardResult:
    """Walk-forward backtest: fit on each train window, hold for the next test window.

    Parameters
    ----------
    X : DataFrame of shape (n_obs, n_assets)
        Simple returns, DatetimeIndex, no missing values.
    profile : str
        Risk profile (see :mod:`tradingview_scraper.engines`).
    train_window, test_window : int
        Window lengths in observations (skfolio ``WalkForward``; the last, shorter test
        window is kept so the stream reaches the end of the data).
    min_weight, max_weight : float
        Bounds on each weight (meta level: sleeve bounds).
    cost_rate : float
        Commission + slippage per unit of turnover, charged on the first day of each
        test window: ``cost = cost_rate * sum(|w_new - w_prev|)`` (the first window
        buys from cash, turnover 1).
    selector : callable, optional
        Train-window returns -> columns to hold; decided inside each window.

    Returns
    -------
    WalkForwardResult
        A window whose optimizer fails falls back to equal weight over the selected
        columns (projected to bounds) and is counted in ``windows_fallback``.

    Raises
    ------
    DataError
        Fewer observations than one train window plus one test observation.
    """
    from skfolio.model_selection import WalkForward

    n_obs, n_assets = X.shape
    if n_obs < train_window + 1:
        raise DataError(
            f"{n_obs} observations are too few for train_window={train_window} + test_window={test_window}"
        )
    columns = list(X.columns)
    values = X.to_numpy(dtype=float)
    splitter = WalkForward(train_size=train_window, test_size=test_window, reduce_test=True)
    res = WalkForwardResult(
        returns=pd.Series(dtype=float), weights=pd.DataFrame(), final_weights=pd.Series(dtype=float), fitted_on={}
    )
    out_idx: list[np.ndarray] = []
    out_ret: list[np.ndarray] = []
    history: list[np.ndarray] = []
    starts = []
    prev = np.zeros(n_assets)
    for train, test in splitter.split(values):
        res.windows_attempted += 1
        w = _fit_window(X.iloc[train], profile, min_weight, max_weight, selector, columns, res)
        r = values[test] @ w
        r[0] -= cost_rate * np.abs(w - prev).sum()
        prev = w
        out_idx.append(test)
        out_ret.append(r)
        history.append(w)
        starts.append(X.index[test[0]])
    idx = np.concatenate(out_idx)
    res.returns = pd.Series(np.concatenate(out_ret), index=X.index[idx], name=profile)
    res.returns.index.name = "date"
    res.weights = pd.DataFrame(history, index=pd.DatetimeIndex(starts, name="date"), columns=columns)

    last = X.iloc[-train_window:]
    sub = selector(last) if selector else columns
    try:
        w_sub, model = fit_weights(last[sub], profile, min_weight=min_weight, max_weight=max_weight)
        res.final_model = model
    except Exception as exc:  # noqa: BLE001 - any optimizer failure falls back, recorded
        w_sub = project_to_bounds(np.full(len(sub), 1.0 / len(sub)), min_weight, max_weight)
        res.final_fallback, res.final_error = True, f"{type(exc).__name__}: {exc}"
    res.final_weights = pd.Series(w_sub, index=sub, name=profile).reindex(columns, fill_value=0.0)
    res.fitted_on = {
        "start": last.index[0].date().isoformat(),
        "end": last.index[-1].date().isoformat(),
        "n_obs": int(len(last)),
    }
    return res


def _fit_window(
    train: pd.DataFrame,
    profile: str,
    lo: float,
    hi: float,
    selector: Selector | None,
    columns: list[str],
    res: WalkForwardResult,
) -> np.ndarray:
    sub = selector(train) if selector else columns
    try:
        w_sub, _ = fit_weights(train[sub], profile, min_weight=lo, max_weight=hi)
        res.windows_succeeded += 1
    except Exception as exc:  # noqa: BLE001 - a failed window falls back and is counted
        w_sub = project_to_bounds(np.full(len(sub), 1.0 / len(sub)), lo, hi)
        res.windows_fallback += 1
        res.errors.append(f"{train.index[-1].date()}: {type(exc).__name__}: {exc}")
    w = pd.Series(w_sub, index=sub).reindex(columns, fill_value=0.0)
    return w.to_numpy()
