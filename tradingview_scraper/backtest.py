"""Walk-forward backtest of one risk profile over a returns matrix (assets or sleeves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .bounds import asset_bounds, check_window_weights, checked_weights, project_to_bounds
from .errors import DataError, OptimizationError
from .window_store import WindowFit, window_key

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
    #: Under book limits: each window's projection distance (None: the window fell back) and
    #: the first test dates of the windows no allocation within the limits exists for.
    limit_distances: list = field(default_factory=list)
    limits_infeasible: list[str] = field(default_factory=list)
    final_distance: float | None = None
    final_unconstrained: pd.Series | None = None
    #: Windows fitted now and windows whose fit came from the window store (run-specific facts, kept
    #: out of every artifact), and what the store held (``window_store.WindowFits.status``; None: no store).
    windows_fitted: int = 0
    windows_reused: int = 0
    windows_store: str | None = None

    def health(self) -> dict:
        return {
            "windows_attempted": self.windows_attempted,
            "windows_succeeded": self.windows_succeeded,
            "windows_fallback": self.windows_fallback,
            "errors": self.errors[:20],
        }


def fit_weights(
    X: pd.DataFrame,
    profile: str,
    *,
    min_weight: float = 0.0,
    max_weight: float = 1.0,
    estimator: dict | None = None,
) -> tuple[np.ndarray, object]:
    """Fit risk profile ``profile`` on ``X`` (n_obs, n_assets); return (weights, fitted model).

    ``estimator``: the profile's definition when it is an estimator object (see
    :class:`engines.EstimatorEngine`), else None (a built-in profile).

    Raises
    ------
    Whatever the skfolio estimator raises; OptimizationError on unusable weights.
    """
    from .engines import EstimatorEngine, make_optimizer

    if estimator is not None and (np.ndim(min_weight) or np.ndim(max_weight)):
        model = EstimatorEngine(profile, estimator).model()  # per-asset bounds: its weights are projected onto them
    elif estimator is not None:
        model = EstimatorEngine(profile, estimator, min_weight=min_weight, max_weight=max_weight).model()
    else:
        model = make_optimizer(profile, min_weight=min_weight, max_weight=max_weight)
    model.fit(X)
    return checked_weights(model.weights_, X.shape[1], profile, min_weight, max_weight), model


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
    priors: dict | None = None,
    estimator: dict | None = None,
    limits=None,
    live_limits=None,
    store=None,
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
    min_weight, max_weight : float or dict
        Bounds on each weight (meta level: sleeve bounds); a dict gives a bound per column
        (symbol -> bound, ``"*"`` for the rest: an atomic profile's ``allocation``), fitted by
        :class:`engines.AssetBoundsEngine`.
    cost_rate : float
        Commission + slippage per unit of turnover, charged on the first day of each
        test window: ``cost = cost_rate * sum(|w_new - w_prev|)`` (the first window
        buys from cash, turnover 1).
    selector : callable, optional
        Train-window returns -> columns to hold; decided inside each window.
    priors : dict, optional
        Window priors (:func:`window_engine.window_prior`) by window and columns, filled and
        reused: pass one dict to the walk-forwards of several risk profiles over the
        same ``X`` and each window's moments are estimated once.
    estimator : dict, optional
        The definition of a risk profile given as an estimator object
        (:func:`plugins.estimator_definition`): every window and the final weights are fitted
        by that estimator itself (:class:`engines.EstimatorEngine`). None: ``profile`` is
        a built-in risk profile.
    limits : callable, optional
        ``first test date -> limits.Constraints`` of that window: a meta node's book limits
        (:mod:`~tradingview_scraper.limits`) on the holdings in force then. Each window's
        allocation is fitted within them (:func:`limits.fit_limited`); a window no allocation
        meets them for falls back and is counted and listed (``limits_infeasible``).
    live_limits : limits.Constraints, optional
        The same on the live holdings, for the final weights; infeasible there raises.
    store : window_store.WindowStore, optional
        Where window fits are kept across runs: a window whose train rows (and constraints)
        are unchanged since the stored fit is not fitted again but taken from the store
        (counted in ``windows_reused``); the others are fitted (``windows_fitted``) and the
        store is rewritten. The live fit is always fitted; the result is the same, bit for
        bit, as without a store. With a ``selector``, the store's context must name the
        selection (``store.within(selection=...)``).

    Returns
    -------
    WalkForwardResult
        A window whose optimizer fails falls back to equal weight over the selected
        columns (projected to bounds) and is counted in ``windows_fallback``. Windows
        are fitted by :class:`window_engine.WindowEngine` (skfolio's weights, without
        skfolio's per-fit overhead); the final weights by the skfolio estimator itself.

    Raises
    ------
    DataError
        Fewer observations than one train window plus one test observation.
    """
    from skfolio.model_selection import WalkForward

    from .engines import EstimatorEngine
    from .window_engine import WindowEngine

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
    if isinstance(min_weight, dict) or isinstance(max_weight, dict):
        from .engines import AssetBoundsEngine

        engine = AssetBoundsEngine(profile, min_weight, max_weight, estimator)
    elif estimator is not None:
        engine = EstimatorEngine(profile, estimator, min_weight=min_weight, max_weight=max_weight)
    else:
        engine = WindowEngine(profile, min_weight=min_weight, max_weight=max_weight)
    fits = None
    if store is not None:
        if selector is not None and "selection" not in store.context:
            raise ValueError("walk_forward: a store used with a selector must name the selection (store.within(selection=...))")
        fits = store.open(X, {
            "columns": [str(c) for c in columns], "profile": profile, "estimator": estimator,
            "min_weight": min_weight, "max_weight": max_weight, "train_window": train_window, "test_window": test_window,
        })  # fmt: skip
        res.windows_store = fits.status
    for train, test in splitter.split(values):
        res.windows_attempted += 1
        cons = limits(X.index[test[0]]) if limits is not None else None
        key = window_key(train, cons) if fits is not None else None
        fit = fits.get(key) if fits is not None else None
        fitted = fit is None
        if fitted:
            fit = _fit_window(X, values, train, engine, selector, columns, {} if priors is None else priors, cons)
        res.windows_fitted, res.windows_reused = res.windows_fitted + fitted, res.windows_reused + (not fitted)
        if fits is not None:
            fits.keep(key, fit, fitted=fitted)
        _tally(res, fit, cons, X.index[test[0]])
        w = fit.weights
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
    if fits is not None:
        fits.save()

    last = X.iloc[-train_window:]
    sub = selector(last) if selector else columns
    # per-asset bounds (a map) as vectors over the held columns; numbers stay numbers
    min_weight, max_weight = asset_bounds(min_weight, list(sub), 0.0), asset_bounds(max_weight, list(sub), 1.0)
    if live_limits is not None:
        from .errors import LimitsError
        from .limits import fit_limited, project

        try:
            w_free, _ = fit_weights(last[sub], profile, min_weight=min_weight, max_weight=max_weight, estimator=estimator)
            res.final_unconstrained = pd.Series(w_free, index=sub).reindex(columns, fill_value=0.0)
        except Exception:  # noqa: BLE001 - only the report's "unconstrained" values are lost
            res.final_unconstrained = None
        try:
            w_sub, res.final_distance, res.final_model = fit_limited(
                last[sub], engine, live_limits, profile=profile, estimator=estimator
            )
        except LimitsError:
            raise  # the live book meets its limits or the node stops: no fallback would meet them
        except Exception as exc:  # noqa: BLE001 - the optimizer failed: equal weight within the limits, recorded
            w_eq = project_to_bounds(np.full(len(sub), 1.0 / len(sub)), min_weight, max_weight)
            w_sub, res.final_distance = project(w_eq, min_weight, max_weight, live_limits)
            res.final_fallback, res.final_error = True, f"{type(exc).__name__}: {exc}"
    else:
        try:
            w_sub, model = fit_weights(
                last[sub], profile, min_weight=min_weight, max_weight=max_weight, estimator=estimator
            )
            res.final_model = model
        except Exception as exc:  # noqa: BLE001 - any optimizer failure falls back, recorded
            w_sub = project_to_bounds(np.full(len(sub), 1.0 / len(sub)), min_weight, max_weight)
            res.final_fallback, res.final_error = True, f"{type(exc).__name__}: {exc}"
    check_window_weights(w_sub, min_weight, max_weight, window=str(last.index[-1].date()), profile=profile)
    res.final_weights = pd.Series(w_sub, index=sub, name=profile).reindex(columns, fill_value=0.0)
    res.fitted_on = {
        "start": last.index[0].date().isoformat(),
        "end": last.index[-1].date().isoformat(),
        "n_obs": int(len(last)),
    }
    return res


def _tally(res: WalkForwardResult, fit: WindowFit, constraints, start) -> None:
    """Count window ``fit`` (first test date ``start``) in ``res``: the same whether fitted now or reused."""
    if fit.ok:
        res.windows_succeeded += 1
    else:
        res.windows_fallback += 1
        res.errors.append(fit.error)
    if constraints is not None:
        res.limit_distances.append(fit.distance)
        if fit.infeasible:
            res.limits_infeasible.append(str(start.date()))


def _fallback(n: int, lo: float, hi: float, constraints) -> tuple[np.ndarray, bool]:
    """A failed window's equal weight (within the bounds and, under book limits, projected onto them).

    Returns the weights and whether no allocation meets the limits (then the window holds the
    bounded equal weight).
    """
    w = project_to_bounds(np.full(n, 1.0 / n), lo, hi)
    if constraints is None:
        return w, False
    from .limits import project

    try:
        return project(w, lo, hi, constraints)[0], False
    except OptimizationError:
        return w, True


def _fit_window(
    X: pd.DataFrame,
    values: np.ndarray,
    train: np.ndarray,
    engine,
    selector: Selector | None,
    columns: list[str],
    priors: dict,
    constraints=None,
) -> WindowFit:
    """Fit one window on its train rows ``train`` (within ``constraints``, a meta node's book limits, when given)."""
    from .window_engine import window_prior

    sub = selector(X.iloc[train]) if selector else columns
    lo, hi = engine.bounds(sub) if hasattr(engine, "bounds") else (engine.min_weight, engine.max_weight)
    picked = [columns.index(c) for c in sub] if selector else list(range(len(columns)))
    distance, infeasible, error = None, False, None
    try:
        x = X.iloc[train, picked] if getattr(engine, "wants_frame", False) else values[train][:, picked]
        prior = None
        if engine.needs_prior:
            key = (int(train[0]), len(train), tuple(picked))
            prior = priors[key] if key in priors else priors.setdefault(key, window_prior(x))
        if constraints is None:
            w_sub = checked_weights(engine.fit(x, prior), len(sub), engine.profile, lo, hi)
        else:
            from .limits import fit_limited

            w_sub, distance, _ = fit_limited(x, engine, constraints, prior=prior)
    except Exception as exc:  # noqa: BLE001 - a failed window falls back and is counted
        w_sub, infeasible = _fallback(len(sub), lo, hi, constraints)
        error = f"{X.index[train[-1]].date()}: {type(exc).__name__}: {exc}"
    check_window_weights(w_sub, lo, hi, window=str(X.index[train[-1]].date()), profile=engine.profile)
    w = np.zeros(len(columns))
    w[picked] = w_sub
    return WindowFit(w, error is None, error, None if distance is None else float(distance), infeasible)
