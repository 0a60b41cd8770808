"""Reading the artifacts of one meta node into :class:`NodeData` (the report's only input I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def load_node(ctx, node_path: str) -> NodeData:
    """Read the artifacts of meta node ``node_path`` of run ``ctx``.

    Raises
    ------
    DataError
        If a risk profile's column is missing from ``returns.parquet``.
    """
    node, spec = ctx.node(node_path), ctx.spec(node_path)
    profiles = list(ctx.plan.risk_profiles)
    stream = read_parquet(node.file("returns"))
    missing = [p for p in profiles if p not in stream.columns]
    if missing:
        raise DataError(
            f"{node.file('returns')}: no column for risk profile(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, stream.columns))})"
        )
    return NodeData(
        meta_profile=spec.profile,
        run_id=ctx.run_id,
        node_path=node_path,
        risk_profiles=profiles,
        stream=stream[profiles],
        sleeves={p: read_parquet(node.file("meta_returns", profile=p)) for p in profiles},
        weights={p: read_json(node.file("meta_weights", profile=p)) for p in profiles},
        flattened={p: read_json(node.file("flattened", profile=p)) for p in profiles},
        calendar=read_parquet_metadata(node.file("meta_returns", profile=profiles[0])).get("calendar"),
        risk={p: read_json(f) for p in profiles if (f := node.file("risk", profile=p)).is_file()},
        rebalance=(
            {p: read_json(node.file("rebalance", profile=p)) for p in profiles}
            if node_path == "." and (getattr(ctx, "previous_run", None) or getattr(ctx, "holdings", None))
            else {}
        ),
    )
