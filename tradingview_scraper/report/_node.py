"""The artifacts of one meta node the report reads, as :class:`NodeData`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import DataError


@dataclass
class NodeData:
    """Everything the report of one meta node reads.

    ``stream`` is the node's ``returns.parquet``: DataFrame of shape (n_oos_dates,
    n_profiles); ``sleeves[p]`` is ``meta/returns_<p>.parquet``: DataFrame of shape
    (n_dates, n_sleeves); ``weights[p]`` / ``flattened[p]`` the JSON records; ``calendar``
    how the sleeves were aligned (``meta.aligned_returns``; None for files without it).
    """

    meta_profile: str
    run_id: str
    node_path: str
    risk_profiles: list[str]
    stream: pd.DataFrame
    sleeves: dict[str, pd.DataFrame]
    weights: dict[str, dict]
    flattened: dict[str, dict]
    calendar: dict | None = None
    #: ``risk_<p>.json`` per risk profile; ``rebalance_<p>.json`` (the root, with a current book).
    risk: dict[str, dict] = field(default_factory=dict)
    rebalance: dict[str, dict] = field(default_factory=dict)
    #: Data-quality findings the atomic children's policies let through (``data_quality`` of
    #: the meta returns' metadata): ``sleeve``, ``check``, ``symbol``, ``file``, ``start``, ``end``, ``message``.
    data_quality: list[dict] = field(default_factory=list)
    #: What the meta profile's health policy let through at plan time (``parity_warnings``:
    #: sleeves whose walk-forward windows differ, under ``health.on_parity_mismatch = "warn"``).
    warnings: list[str] = field(default_factory=list)
    #: Each sleeve's kind: ``computed``, ``external``, ``pinned`` or ``nested`` (a meta profile).
    kinds: dict[str, str] = field(default_factory=dict)


def sleeve_kind(spec) -> str:
    """How a node's sleeve comes about: ``nested`` (a meta profile), ``external`` (read from its files), ``pinned``, ``computed``."""
    if spec.is_meta:
        return "nested"
    if spec.kind == "external":
        return "external"
    return "pinned" if spec.pin else "computed"


def node_data(
    node, children: list, run_id: str, profiles: list[str], node_dir, returns: pd.DataFrame, meta_returns: Mapping[str, Any],
    meta_weights: dict, flattened: dict, risk: dict, rebalance: dict | None = None,
) -> NodeData:  # fmt: skip
    """The report's data of meta node ``node`` (a ``NodeSpec``) from its artifacts, as the ``report`` step receives them.

    ``returns``: the node's stream (``returns.parquet``); per risk profile (the plan's order):
    ``meta_returns`` (each ``meta/returns_<p>.parquet`` with its metadata, a ``steps.Parquet``),
    ``meta_weights``, ``flattened``, ``risk`` and (a rebalance) ``rebalance``. ``node_dir``: the
    node's directory (``layout.Node``), named in the message.

    Raises
    ------
    DataError
        If a risk profile's column is missing from ``returns.parquet``.
    """
    missing = [p for p in profiles if p not in returns.columns]
    if missing:
        raise DataError(
            f"{node_dir.file('returns')}: no column for risk profile(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, returns.columns))})"
        )
    metadata = meta_returns[profiles[0]].metadata
    return NodeData(
        meta_profile=node.profile,
        run_id=run_id,
        node_path=node.path,
        risk_profiles=list(profiles),
        stream=returns[profiles],
        sleeves={p: v.frame for p, v in meta_returns.items()},
        weights=dict(meta_weights),
        flattened=dict(flattened),
        calendar=metadata.get("calendar"),
        risk=dict(risk),
        rebalance=dict(rebalance or {}),
        data_quality=list(metadata.get("data_quality", [])),
        warnings=list(node.config.get("parity_warnings", [])),
        kinds={c.sleeve_id: sleeve_kind(c) for c in children},
    )
