"""Reading the artifacts of one meta node into :class:`NodeData` (the report's only input I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError
from ..layout import read_json, read_parquet, read_parquet_metadata


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


def load_node(ctx, node_path: str, files: Mapping[str, Any]) -> NodeData:
    """Read the artifacts ``files`` of meta node ``node_path`` of run ``ctx``.

    ``files`` are the ``report`` rule's named inputs: ``returns`` (the node's stream), and
    one file per risk profile (the plan's order) under ``meta_returns``, ``meta_weights``,
    ``flattened``, ``risk`` and (a rebalance) ``rebalance``.

    Raises
    ------
    DataError
        If a risk profile's column is missing from ``returns.parquet``.
    """
    spec = ctx.spec(node_path)
    profiles = list(ctx.plan.risk_profiles)
    per = {k: dict(zip(profiles, map(str, v), strict=True)) for k, v in files.items() if k != "returns"}
    stream = read_parquet(files["returns"])
    missing = [p for p in profiles if p not in stream.columns]
    if missing:
        raise DataError(
            f"{files['returns']}: no column for risk profile(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, stream.columns))})"
        )
    metadata = read_parquet_metadata(per["meta_returns"][profiles[0]])
    return NodeData(
        meta_profile=spec.profile,
        run_id=ctx.run_id,
        node_path=node_path,
        risk_profiles=profiles,
        stream=stream[profiles],
        sleeves={p: read_parquet(f) for p, f in per["meta_returns"].items()},
        weights={p: read_json(f) for p, f in per["meta_weights"].items()},
        flattened={p: read_json(f) for p, f in per["flattened"].items()},
        calendar=metadata.get("calendar"),
        risk={p: read_json(f) for p, f in per.get("risk", {}).items() if Path(f).is_file()},
        rebalance={p: read_json(f) for p, f in per.get("rebalance", {}).items()},
        data_quality=list(metadata.get("data_quality", [])),
        warnings=list(spec.config.get("parity_warnings", [])),
        kinds={c.sleeve_id: sleeve_kind(c) for c in map(ctx.spec, spec.children)},
    )
