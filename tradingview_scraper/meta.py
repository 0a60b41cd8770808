"""The meta layer: sleeve returns on common dates (compounded between them), bounded meta allocation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .backtest import walk_forward
from .engines import HIERARCHICAL
from .errors import DataError


def meta_returns(streams: dict[str, pd.Series], *, min_obs: int) -> pd.DataFrame:
    """Sleeves' same-profile return streams on their common dates, compounded in between.

    The frame of :func:`aligned_returns` (which see), without its calendar record.
    """
    return aligned_returns(streams, min_obs=min_obs)[0]


def aligned_returns(streams: dict[str, pd.Series], *, min_obs: int) -> tuple[pd.DataFrame, dict]:
    """Sleeves' same-profile return streams on their common dates, compounded in between, and how.

    The common calendar is the dates on which every sleeve has a return; nothing is padded,
    forward-filled or zero-filled. A sleeve's value on a common date is its return
    compounded over its own periods since the previous common date (its wealth curve,
    aligned on the common dates, then turned back into returns), so a 24x7 sleeve's weekend
    returns reach the meta layer on Monday. The span is the first to the last common date:
    on the first common date a sleeve contributes that date's own return, and its periods
    before the first or after the last common date lie outside the span (counted, not used).
    For every sleeve, ``prod(1 + column)`` equals ``prod(1 + own returns)`` over the span.

    Parameters
    ----------
    streams : dict of sleeve id -> Series
        Each sleeve's out-of-sample returns for one risk profile, on its own calendar.
    min_obs : int
        Fewest common dates accepted (one meta train window plus one test window).

    Returns
    -------
    frame : DataFrame of shape (n_common_dates, n_sleeves)
        Index ``date``.
    calendar : dict
        The span (``start``, ``end``, ``common_dates``) and per sleeve (``sleeves``) its
        ``periods``, ``compounded`` (periods inside the span that are not common dates,
        each compounded into the next common date), ``before_span`` and ``after_span``
        (stored in ``meta/returns_<p>.parquet``'s metadata).

    Raises
    ------
    DataError
        A stream has missing or non-finite values or repeated dates, or the common calendar
        is shorter than ``min_obs``.
    """
    own = {}
    for sid, s in streams.items():
        if not np.isfinite(s.to_numpy(dtype=float)).all():  # NaN included
            raise DataError(f"sleeve {sid!r}: return stream has missing or non-finite values")
        if not s.index.is_monotonic_increasing:
            s = s.sort_index()
        if not s.index.is_unique:
            dup = s.index[s.index.duplicated()][0]
            raise DataError(f"sleeve {sid!r}: return stream repeats date {dup.date()}; one return per date is needed")
        own[sid] = s
    # Sleeves read from separate files share calendars but not index objects: group them,
    # so the common dates and each calendar's buckets are computed once per calendar.
    calendars: dict[tuple, list[tuple[pd.DatetimeIndex, list[str]]]] = {}
    for sid, s in own.items():
        key = (len(s), s.index[0], s.index[-1]) if len(s) else (0,)
        same = calendars.setdefault(key, [])
        for index, members in same:
            if index.equals(s.index):
                members.append(sid)
                break
        else:
            same.append((s.index, [sid]))
    groups = [g for same in calendars.values() for g in same]
    common = groups[0][0] if groups else pd.DatetimeIndex([])
    for index, _ in groups[1:]:
        common = common.intersection(index)
    common = pd.DatetimeIndex(common).sort_values()
    if len(common) < max(min_obs, 1):
        spans = ", ".join(
            f"{sid} {s.index.min().date()}..{s.index.max().date()} ({len(s)})" if len(s) else f"{sid} (empty)"
            for sid, s in own.items()
        )
        raise DataError(
            f"sleeves share only {len(common)} common dates, fewer than the {min_obs} needed for one "
            f"meta train+test window; sleeve calendars: {spans}"
        )
    columns, counts = {}, {}
    for index, members in groups:
        values = np.column_stack([own[sid].to_numpy(dtype=float) for sid in members])
        if index.equals(common):  # on the common calendar already: nothing to compound
            out, count = values, {"periods": len(index), "compounded": 0, "before_span": 0, "after_span": 0}
        else:
            # Period d belongs to the first common date >= d; those before the first common
            # date (bucket 0 but not on it) and after the last are outside the span.
            bucket = common.searchsorted(index, side="left")
            before = (bucket == 0) & (index < common[0])
            after = bucket == len(common)
            inside = ~(before | after)
            r, b = values[inside], bucket[inside]
            first = np.searchsorted(b, np.arange(len(common)), side="left")  # each bucket holds its common date
            size = np.diff(np.append(first, len(b)))
            # A lone period keeps its return bit for bit; (1 + r) - 1 would round it.
            grown = np.multiply.reduceat(1.0 + r, first, axis=0) - 1.0
            out = np.where((size == 1)[:, None], r[first + size - 1], grown)
            count = {
                "periods": len(index),
                "compounded": int(inside.sum() - len(common)),
                "before_span": int(before.sum()),
                "after_span": int(after.sum()),
            }
        for j, sid in enumerate(members):
            columns[sid], counts[sid] = out[:, j], dict(count)
    order = list(own)
    frame = pd.DataFrame(
        np.column_stack([columns[sid] for sid in order]), index=pd.DatetimeIndex(common, name="date"), columns=order
    )
    counts = {sid: counts[sid] for sid in order}
    calendar = {
        "start": common[0].date().isoformat(),
        "end": common[-1].date().isoformat(),
        "common_dates": int(len(common)),
        "sleeves": counts,
    }
    return frame, calendar


def compounded_note(calendar: dict | None) -> str:
    """One sentence on which sleeves' periods were compounded into the common dates."""
    if not calendar:
        return ""
    folded = {s: c for s, c in calendar["sleeves"].items() if c["compounded"]}
    if not folded:
        return f"Every sleeve trades on all {calendar['common_dates']} common dates: no period was compounded."
    parts = ", ".join(f"{s} {c['compounded']} of {c['periods']}" for s, c in folded.items())
    return (
        f"Sleeves are aligned on the {calendar['common_dates']} dates they all trade; periods compounded into the "
        f"next common date (none dropped): {parts}."
    )


def meta_optimize(
    returns: pd.DataFrame,
    profile: str,
    *,
    min_weight: float,
    max_weight: float,
    train_window: int,
    test_window: int,
    estimator: dict | None = None,
    limits=None,
    books: dict | None = None,
    store=None,
    fits: dict | None = None,
) -> tuple[dict, pd.Series, dict | None]:
    """Allocate across sleeves with risk profile ``profile`` within sleeve bounds (and book limits).

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_sleeves)
        The frame of :func:`aligned_returns`.
    estimator : dict, optional
        The profile's definition when it is an estimator object: the same estimator the
        sleeves' streams of ``profile`` come from allocates across them (the record keeps
        the definition under ``estimator``).
    limits : limits.BookLimits, optional
        The node's book limits: every window's allocation and the live one keep the book
        (the children's holdings in force, ``books``) within them (:mod:`limits`); the record
        adds ``book_limits``.
    books : dict of sleeve id -> dict, optional
        With ``limits``: each child's ``weights_<profile>.json`` record, its per-window
        weights (``windows``) included.
    store : window_store.WindowStore, optional
        The window store: windows trained on unchanged rows are reused
        (:func:`backtest.walk_forward`; under book limits, on unchanged constraints too).
    fits : dict, optional
        Filled with the walk-forward's window counts: ``fitted``, ``reused`` and ``store``
        (what the store held), facts of this computation kept out of the record.

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
    window_limits = live_limits = None
    if limits is not None:
        window_limits, live_limits = _limit_rows(limits, [books[c] for c in returns.columns])
    res = walk_forward(
        returns,
        profile,
        train_window=train_window,
        test_window=test_window,
        min_weight=min_weight,
        max_weight=max_weight,
        estimator=estimator,
        limits=window_limits,
        live_limits=live_limits,
        store=None if store is None else store.within(limits=_limits_identity(limits)),
    )
    if fits is not None:
        fits.update(fitted=res.windows_fitted, reused=res.windows_reused, store=res.windows_store)
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
        # Each window's sleeve weights: what the out-of-sample stream held (risk attribution).
        "windows": {
            "start": [d.date().isoformat() for d in res.weights.index],
            "weights": {str(c): res.weights[c].astype(float).tolist() for c in res.weights.columns},
        },
    }
    if estimator is not None:
        record["estimator"] = estimator
    if limits is not None:
        free = res.final_unconstrained
        record["book_limits"] = {
            "limits": limits.to_dict(),
            "projection_distance": res.final_distance,
            "unconstrained_weights": None if free is None else {str(k): float(v) for k, v in free.items()},
            # per window: how far the projection moved the optimizer's weights (None: the window fell back)
            "windows": {"projection_distance": res.limit_distances, "infeasible": res.limits_infeasible},
        }
    tree = cluster_tree(res.final_model, list(returns.columns)) if profile in HIERARCHICAL else None
    return record, res.returns, tree


def _limits_identity(limits) -> dict | None:
    """A node's book limits as part of its window store's identity (each window's rows are keyed by their digest)."""
    return None if limits is None else {**limits.to_dict(), "groups": dict(limits.groups)}


def _limit_rows(limits, books: list[dict]):
    """``(first test date -> Constraints, live Constraints)`` of a node's book limits on its children's books."""
    from .limits import constraints
    from .limits_book import live_matrix, window_matrices

    at, built = window_matrices(books), {}

    def window(start):
        H, symbols = at(start)
        if id(H) not in built:  # one matrix per combination of the children's windows
            built[id(H)] = (H, constraints(limits, H, symbols))
        return built[id(H)][1]

    return window, constraints(limits, *live_matrix(books))


def _in_sample(returns: pd.DataFrame, weights: dict) -> dict:
    """Summary of the in-sample weighted sum (final weights over all history), labelled as such."""
    r = returns.to_numpy() @ np.array([weights[c] for c in returns.columns])
    return {"label": "in-sample (final weights applied to all history)", "mean": float(r.mean()), "std": float(r.std(ddof=1))}


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
