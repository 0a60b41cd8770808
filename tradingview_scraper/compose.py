"""The meta composition: what a meta node computes from its children's data, written once.

The workflow's meta stages call these steps one job at a time, reading and writing the
artifacts between them; the in-memory API (:func:`~tradingview_scraper.api.run_plan`) and
``bench/reference.py`` chain the same steps with :func:`compose_profile`. Pure functions:
data and plan nodes in, data out, no file is read or written.

A child's *book* is the record its parent flattens: an atomic sleeve's
``weights_<profile>.json`` record, a nested meta node's ``flattened_<profile>.json`` record
(both hold ``weights``, the asset rows; a meta node's also ``held_by``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from .errors import DataError

if TYPE_CHECKING:
    from .manifest import NodeSpec

__all__ = [
    "Composed",
    "aligned",
    "allocate",
    "compose_profile",
    "flattened",
    "held_by",
    "node_returns",
]


def aligned(
    node: NodeSpec, returns: Mapping[str, pd.DataFrame], profile: str, *, sources: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, dict]:
    """The children's ``profile`` streams on their common dates (:func:`meta.aligned_returns`).

    Parameters
    ----------
    node : NodeSpec
        The meta node (its ``backtest`` windows set the fewest common dates).
    returns : dict of sleeve id -> DataFrame of shape (n_dates, n_risk_profiles)
        Each child's ``returns.parquet``, in the node's children order.
    profile : str
        The risk profile.
    sources : dict of sleeve id -> str, optional
        Where each frame comes from, for the message.

    Returns
    -------
    frame : DataFrame of shape (n_common_dates, n_sleeves)
    calendar : dict
        See :func:`meta.aligned_returns`.

    Raises
    ------
    DataError
        A child has no column for ``profile``, or see :func:`meta.aligned_returns`.
    """
    from .meta import aligned_returns

    streams = {}
    for sid, frame in returns.items():
        if profile not in frame.columns:
            where = (sources or {}).get(sid, f"sleeve {sid!r}")
            raise DataError(f"{where}: no column for risk profile {profile!r} (has {', '.join(frame.columns)})")
        streams[sid] = frame[profile]
    bt = node.config["backtest"]
    return aligned_returns(streams, min_obs=bt["train_window"] + bt["test_window"])


def allocate(
    node: NodeSpec,
    frame: pd.DataFrame,
    profile: str,
    books: Mapping[str, dict] | None = None,
    *,
    store=None,
    fits: dict | None = None,
) -> tuple[dict, pd.Series, dict | None]:
    """The node's meta allocation of ``profile`` within its sleeve bounds (:func:`meta.meta_optimize`).

    Parameters
    ----------
    node : NodeSpec
        The meta node (``meta_allocation`` bounds, ``backtest`` windows).
    frame : DataFrame of shape (n_common_dates, n_sleeves)
        The output of :func:`aligned`.
    profile : str
        The risk profile.
    books : dict of sleeve id -> dict, optional
        Each child's book of ``profile`` with its per-window weights: read only when the node
        has book limits (``meta_allocation.book``).
    store, fits : optional
        The window store and the dict its counts go into (:func:`meta.meta_optimize`).

    Returns
    -------
    weights : dict
        ``meta/weights_<profile>.json``.
    stream : Series of shape (n_test_dates,)
        The meta level's out-of-sample walk-forward returns.
    tree : dict or None
        ``meta/tree_<profile>.json`` of a hierarchical profile, else None.
    """
    from .engines import HIERARCHICAL
    from .errors import LimitsError, MetaError
    from .meta import meta_optimize

    alloc, bt = node.config["meta_allocation"], node.config["backtest"]
    limits = node_limits(node)
    try:
        record, stream, tree = meta_optimize(
            frame,
            profile,
            min_weight=alloc["min_weight"],
            max_weight=alloc["max_weight"],
            train_window=bt["train_window"],
            test_window=bt["test_window"],
            estimator=node.config.get("estimators", {}).get(profile),
            limits=limits,
            books=books,
            store=store,
            fits=fits,
        )
    except LimitsError as exc:
        raise MetaError(f"{node.label} ({profile}): the live allocation: {exc}") from exc
    ident = {"meta_profile": node.profile, "risk_profile": profile}
    tree_record = {**ident, **(tree or {"available": False})} if profile in HIERARCHICAL else None
    return {**ident, **record}, stream, tree_record


def node_limits(node: NodeSpec):
    """The node's book limits (:class:`limits.BookLimits`), or None when it sets none."""
    book = node.config["meta_allocation"].get("book")
    if not book:
        return None
    from .limits import book_limits

    return book_limits(book, node.label)


def node_returns(streams: Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame]) -> pd.DataFrame:
    """A meta node's ``returns.parquet`` (its sleeve interface): its streams (one column each) on their common dates.

    Parameters
    ----------
    streams : dict of risk profile -> DataFrame of shape (n_test_dates, 1), or a list of them
        Each risk profile's stream (``meta/stream_<profile>.parquet``), its column named after
        the profile, in the plan's order.

    Returns
    -------
    DataFrame of shape (n_dates, n_risk_profiles)
        Index ``date``.
    """
    frame = pd.concat(list(streams.values() if isinstance(streams, Mapping) else streams), axis=1, join="inner")
    frame.index.name = "date"
    return frame


def held_by(children: Sequence[NodeSpec], books: Mapping[str, dict]) -> list[dict]:
    """Each position's first atomic sleeve below the node (plan order, depth first, the node's external
    sleeves last) holding it.

    The risk stage takes a position's prices from that sleeve; it is carried up from each
    nested meta child's own book, so no stage above needs the leaves' weights.

    Returns
    -------
    list of dict
        ``symbol``, ``direction``, ``sleeve`` (the plan path of the atomic sleeve).
    """
    held: dict[tuple[str, str], str] = {}
    # An external sleeve's positions have no prices in the run: a sleeve that has them comes first.
    ordered = [c for c in children if c.kind != "external"] + [c for c in children if c.kind == "external"]
    for child in ordered:
        book = books[child.sleeve_id]
        if child.is_meta:
            for row in book["held_by"]:
                held.setdefault((row["symbol"], row["direction"]), row["sleeve"])
        else:
            for row in book["weights"]:
                if row["weight"] > 0:
                    held.setdefault((row["symbol"], row["direction"]), child.path)
    return [{"symbol": s, "direction": d, "sleeve": leaf} for (s, d), leaf in held.items()]


def flattened(
    node: NodeSpec, children: Sequence[NodeSpec], profile: str, weights: dict, books: Mapping[str, dict]
) -> dict:
    """The node's physical-asset book: meta weights @ the children's asset weights (:func:`flattening.flatten`).

    Parameters
    ----------
    node : NodeSpec
        The meta node.
    children : list of NodeSpec
        Its children, in plan order.
    profile : str
        The risk profile.
    weights : dict
        Its ``meta/weights_<profile>.json`` record (:func:`allocate`); its ``weights`` count.
    books : dict of sleeve id -> dict
        Each child's book of the same risk profile (see the module docstring).

    Returns
    -------
    dict
        ``flattened_<profile>.json`` less the run id: ``meta_profile``, ``risk_profile``,
        ``node``, ``sleeve_weights``, what :func:`flattening.flatten` returns, and ``held_by``.
    """
    from .flattening import flatten

    # Sleeves in the order of the weights file's keys, so a book flattened from memory sums
    # in the same order, to the same bits, as one flattened from the file.
    sleeve_weights = dict(sorted(weights["weights"].items()))
    flat = flatten(sleeve_weights, {c.sleeve_id: books[c.sleeve_id]["weights"] for c in children})
    out = {
        "meta_profile": node.profile,
        "risk_profile": profile,
        "node": node.path,
        "sleeve_weights": sleeve_weights,
        **flat,
        "held_by": held_by(children, books),
    }
    limits = node_limits(node)
    if limits is not None:
        out["book_limits"] = book_limits_record(limits, sleeve_weights, weights, books)
    return out


def book_limits_record(limits, sleeve_weights: Mapping[str, float], weights: dict, books: Mapping[str, dict]) -> dict:
    """``flattened_<profile>.json`` ``book_limits``: the live book against every limit (:func:`limits_book.book_report`),
    the projection's distance, and the walk-forward's windows under the limits.

    Parameters
    ----------
    limits : limits.BookLimits
    sleeve_weights : dict of sleeve id -> float
        The live meta weights.
    weights : dict
        The node's ``meta/weights_<profile>.json`` record (its ``book_limits``).
    books : dict of sleeve id -> dict
        Each child's book of the profile.
    """
    import numpy as np

    from .limits_book import book_report, live_matrix

    sleeves = list(sleeve_weights)
    H, symbols = live_matrix([books[s] for s in sleeves])
    rec = weights.get("book_limits", {})
    free = rec.get("unconstrained_weights")
    report = book_report(
        limits, H, symbols, np.array([sleeve_weights[s] for s in sleeves]),
        None if free is None else np.array([free[s] for s in sleeves]),
    )  # fmt: skip
    distances = [d for d in rec.get("windows", {}).get("projection_distance", []) if d is not None]
    return {
        **report,
        "projection_distance": rec.get("projection_distance"),
        "windows": {
            "fitted": len(distances),
            "projected": sum(1 for d in distances if d > 0),
            "max_projection_distance": max(distances, default=0.0),
            "infeasible": rec.get("windows", {}).get("infeasible", []),
        },
    }


@dataclass
class Composed:
    """One risk profile of a meta node, composed: what its stages write, in memory."""

    aligned: pd.DataFrame  #: (n_common_dates, n_sleeves), ``meta/returns_<profile>.parquet``
    calendar: dict  #: the common dates and what was compounded (that file's metadata)
    weights: dict  #: ``meta/weights_<profile>.json``
    stream: pd.Series  #: (n_test_dates,), ``meta/stream_<profile>.parquet``
    tree: dict | None  #: ``meta/tree_<profile>.json`` of a hierarchical profile
    flattened: dict  #: ``flattened_<profile>.json`` less the run id
    warning: str | None  #: the node's own health warning let through


def compose_profile(
    node: NodeSpec,
    children: Sequence[NodeSpec],
    returns: Mapping[str, pd.DataFrame],
    books: Mapping[str, dict],
    profile: str,
) -> Composed:
    """One risk profile of meta node ``node``: :func:`aligned`, :func:`allocate`, the node's own health gate (:func:`health.walk_forward_gate`), :func:`flattened`.

    Parameters
    ----------
    node : NodeSpec
        The meta node.
    children : list of NodeSpec
        Its children, in plan order.
    returns : dict of sleeve id -> DataFrame of shape (n_dates, n_risk_profiles)
        Each child's returns.
    books : dict of sleeve id -> dict
        Each child's book of ``profile``.
    profile : str
        The risk profile.

    Returns
    -------
    Composed

    Raises
    ------
    DataError, MetaError, ConservationError
        As the steps raise them.
    """
    frame, calendar = aligned(node, returns, profile)
    weights, stream, tree = allocate(node, frame, profile, books if node_limits(node) else None)
    from .health import walk_forward_gate

    warning = walk_forward_gate(node, profile, weights)
    return Composed(frame, calendar, weights, stream, tree, flattened(node, children, profile, weights, books), warning)
