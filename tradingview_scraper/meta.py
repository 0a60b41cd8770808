"""The meta layer: inner-joined sleeve returns, bounded meta allocation, exact flattening."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .backtest import walk_forward
from .engines import HIERARCHICAL
from .errors import ConservationError, DataError

GROSS_TOL = 1e-9
CONTRIB_TOL = 1e-12


def meta_returns(streams: dict[str, pd.Series], *, min_obs: int) -> pd.DataFrame:
    """Inner join of the sleeves' same-profile return streams.

    Parameters
    ----------
    streams : dict of sleeve id -> Series
        Each sleeve's out-of-sample returns for one risk profile, on its own calendar.
    min_obs : int
        Fewest common dates accepted (one meta train window plus one test window).

    Returns
    -------
    DataFrame of shape (n_common_dates, n_sleeves)
        Only dates on which every sleeve has a return: never padded or filled.

    Raises
    ------
    DataError
        A stream has missing values, or the common calendar is shorter than ``min_obs``.
    """
    for sid, s in streams.items():
        if s.isna().any() or not np.isfinite(s.to_numpy(dtype=float)).all():
            raise DataError(f"sleeve {sid!r}: return stream has missing or non-finite values")
    frame = pd.concat(streams, axis=1, join="inner").sort_index()
    frame.index.name = "date"
    if len(frame) < min_obs:
        spans = ", ".join(
            f"{sid} {s.index.min().date()}..{s.index.max().date()} ({len(s)})" if len(s) else f"{sid} (empty)"
            for sid, s in streams.items()
        )
        raise DataError(
            f"sleeves share only {len(frame)} common dates, fewer than the {min_obs} needed for one "
            f"meta train+test window; sleeve calendars: {spans}"
        )
    return frame


def meta_optimize(
    returns: pd.DataFrame,
    profile: str,
    *,
    min_weight: float,
    max_weight: float,
    train_window: int,
    test_window: int,
) -> tuple[dict, pd.Series, dict | None]:
    """Allocate across sleeves with risk profile ``profile`` within sleeve bounds.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_sleeves)
        Output of :func:`meta_returns`.

    Returns
    -------
    record : dict
        ``meta/weights_<profile>.json`` content (less identity fields): weights fitted
        on the last train window, bounds, method, fallback flag and reason,
        degenerate-bounds flag, walk-forward health.
    stream : Series of shape (n_test_dates,)
        The meta portfolio's out-of-sample walk-forward returns.
    cluster_tree : dict or None
        Linkage, leaf order and distances of hierarchical profiles.
    """
    n = returns.shape[1]
    res = walk_forward(
        returns,
        profile,
        train_window=train_window,
        test_window=test_window,
        min_weight=min_weight,
        max_weight=max_weight,
    )
    weights = {str(k): float(v) for k, v in res.final_weights.items()}
    record = {
        "method": profile,
        "weights": weights,
        "bounds": {"min_weight": min_weight, "max_weight": max_weight},
        "fallback": res.final_fallback,
        "fallback_reason": res.final_error,
        "degenerate_bounds": degenerate_bounds(n, min_weight, max_weight),
        "fitted_on": res.fitted_on,
        "walk_forward": {
            "train_window": train_window,
            "test_window": test_window,
            **{k: v for k, v in res.health().items()},
        },
        "in_sample_weighted_sum": _in_sample(returns, weights),
    }
    tree = cluster_tree(res.final_model, list(returns.columns)) if profile in HIERARCHICAL else None
    return record, res.returns, tree


def _in_sample(returns: pd.DataFrame, weights: dict) -> dict:
    """Summary of the in-sample weighted sum (final weights over all history), labelled as such."""
    r = returns.to_numpy() @ np.array([weights[c] for c in returns.columns])
    return {"label": "in-sample (final weights applied to all history)", "mean": float(r.mean()), "std": float(r.std())}


def degenerate_bounds(n: int, lo: float, hi: float) -> bool:
    """True when the bounds leave no freedom: every feasible allocation is the same."""
    return bool(abs(n * lo - 1) < 1e-12 or abs(n * hi - 1) < 1e-12)


def cluster_tree(model: object | None, labels: list[str]) -> dict | None:
    """Linkage matrix, leaf order and distance matrix of a fitted hierarchical model."""
    if model is None:
        return None
    from scipy.cluster.hierarchy import leaves_list

    seriation = getattr(model, "seriation_estimator_", None)
    hc = getattr(seriation, "hierarchical_clustering_estimator_", None) if seriation is not None else None
    if hc is None:
        hc = getattr(model, "hierarchical_clustering_estimator_", None)
    dist = getattr(model, "distance_estimator_", None)
    if hc is None or getattr(hc, "linkage_matrix_", None) is None:
        return None
    linkage = np.asarray(hc.linkage_matrix_, dtype=float)
    return {
        "labels": labels,
        "linkage": linkage.tolist(),
        "order": [labels[i] for i in leaves_list(linkage)],
        "linkage_method": str(getattr(hc, "linkage_method", "")),
        "distances": np.asarray(dist.distance_).tolist() if dist is not None else None,
    }


def flatten(sleeve_weights: dict[str, float], holdings: dict[str, list[dict]]) -> dict:
    """Physical-asset weights: meta weights @ sleeve-by-asset weight matrix.

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
        A sleeve's rows or the result do not sum to 1, or a row differs from the sum of
        its contributions.
    """
    sleeves = list(sleeve_weights)
    missing = [s for s in sleeves if s not in holdings]
    if missing:
        raise ConservationError(f"no holdings for sleeve(s) {', '.join(missing)}")
    keys: dict[tuple[str, str], int] = {}
    rows, cols, vals = [], [], []
    for i, sid in enumerate(sleeves):
        total = 0.0
        for h in holdings[sid]:
            key = (str(h["symbol"]), str(h["direction"]))
            j = keys.setdefault(key, len(keys))
            rows.append(i)
            cols.append(j)
            vals.append(float(h["weight"]))
            total += float(h["weight"])
        if abs(total - 1.0) > GROSS_TOL:
            raise ConservationError(f"sleeve {sid!r}: asset weights sum to {total!r}, not 1")
    matrix = np.zeros((len(sleeves), len(keys)))
    np.add.at(matrix, (np.array(rows, dtype=int), np.array(cols, dtype=int)), np.array(vals))
    w = np.array([sleeve_weights[s] for s in sleeves], dtype=float)
    if abs(w.sum() - 1.0) > GROSS_TOL:
        raise ConservationError(f"meta weights sum to {w.sum()!r}, not 1")
    contrib = w[:, None] * matrix  # (n_sleeves, n_assets)
    flat = w @ matrix
    return _rows(flat, contrib, list(keys), sleeves)


def _rows(flat: np.ndarray, contrib: np.ndarray, keys: list[tuple[str, str]], sleeves: list[str]) -> dict:
    gross = float(flat.sum())
    if abs(gross - 1.0) > GROSS_TOL:
        raise ConservationError(f"flattened gross weights sum to {gross!r}, not 1")
    drift = np.abs(contrib.sum(axis=0) - flat)
    if drift.size and drift.max() > CONTRIB_TOL:
        j = int(drift.argmax())
        raise ConservationError(f"asset {keys[j]} weight differs from its contributions by {drift[j]:g}")
    sign = np.array([-1.0 if d == "SHORT" else 1.0 for _, d in keys])
    order = sorted(range(len(keys)), key=lambda j: (-flat[j], keys[j]))
    out = []
    for j in order:
        if flat[j] <= 0:
            continue
        nz = np.nonzero(contrib[:, j])[0]
        out.append(
            {
                "symbol": keys[j][0],
                "direction": keys[j][1],
                "weight": float(flat[j]),
                "net_weight": float(sign[j] * flat[j]),
                "sleeves": {sleeves[i]: float(contrib[i, j]) for i in nz},
            }
        )
    net = float((sign * flat).sum())
    long_ = float(flat[sign > 0].sum())
    return {"weights": out, "gross": gross, "net": net, "long": long_, "short": float(flat[sign < 0].sum())}
