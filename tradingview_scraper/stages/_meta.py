"""The meta layer's steps (aligned returns behind the health gate, allocation, flattening) and the run's resolved manifest."""

from __future__ import annotations

from ..layout import Node
from ..manifest import NodeSpec
from ..steps import Parquet
from ._common import logger


def resolved_manifest(run_id: str, plan) -> dict:
    """``manifest.resolved.json``: the resolved tree and the manifest's hash."""
    return {"run_id": run_id, **plan.to_dict()}


def meta_returns(
    node: NodeSpec, children: list, profiles: list[str], node_dir: Node, returns: dict, health: dict, sign_test: dict,
    note: dict, warn,
) -> dict[str, Parquet]:  # fmt: skip
    """``meta/returns_<profile>.parquet`` of every risk profile: the children's streams on their common dates.

    ``returns``: each child's ``returns.parquet`` (sleeve id -> DataFrame), read once for every
    profile; ``health`` / ``sign_test``: each atomic child's records (sleeve id -> dict). First
    the meta layer's health gate (:func:`health.children_gate`) stops on an unhealthy atomic
    child or a failed sign test, and ``warn`` tells what the node's ``health`` policy lets
    through (and which sleeves' walk-forward windows differ from the node's:
    ``health.on_parity_mismatch = "warn"``; ``"error"`` refused the plan). A child's periods
    between common dates are compounded into the next one (:func:`compose.aligned`), counted
    per sleeve in each file's metadata (``calendar``) and in the ledger (``note``); the
    data-quality findings the atomic children's policies let through, each with its
    ``sleeve``, go into the same metadata (``data_quality``, for the report).
    """
    from ..compose import aligned
    from ..health import ChildRecords, children_gate
    from ..meta import compounded_note

    def where(child, name: str) -> str:  # the child's file a message names
        return str(node_dir.child(child.sleeve_id).file(name))

    for warning in node.config.get("parity_warnings", []):
        warn(warning)
    atomic = [c for c in children if not c.is_meta]
    gate = [ChildRecords(c, health[c.sleeve_id], sign_test[c.sleeve_id], where(c, "health"), where(c, "sign_test")) for c in atomic]
    for warning in children_gate(node, gate, profiles):
        warn(warning)
    findings = [{"sleeve": c.sleeve_id, **f} for c in atomic for f in health[c.sleeve_id].get("data_quality", [])]
    extra = {"data_quality": findings} if findings else {}  # kept only when there are some
    out = {}
    for profile in profiles:
        frame, cal = aligned(node, returns, profile, sources={c.sleeve_id: where(c, "returns") for c in children})
        out[profile] = Parquet(frame, {"calendar": cal, **extra})
    # every profile of a sleeve shares its calendar: the last one speaks for all
    folded = {sid: c["compounded"] for sid, c in cal["sleeves"].items() if c["compounded"]}
    note.update(common_dates=cal["common_dates"], compounded_periods=folded)
    if folded:
        logger.info("meta_returns %s: %s", node.path, compounded_note(cal))
    return out


def meta_optimize(
    node: NodeSpec, profile: str, returns, offload, note: dict, warn, windows=None, books: dict | None = None
) -> dict:
    """Allocate across sleeves from ``returns`` (``meta/returns_<p>.parquet``): ``weights``
    (``meta/weights_<p>.json``), ``stream`` and, for hierarchical profiles, ``tree`` (the cluster tree).

    The optimization runs on the run's Ray cluster when it is up (``offload``); the node's own
    walk-forward passes its health gate (:func:`health.walk_forward_gate`; ``warn`` tells what its
    policy lets through). ``books``: the
    children's books of ``profile`` (sleeve id -> record), given only at a node with book limits.
    ``windows``: the directory of the runs root's window store (None: reuse is off); the
    walk-forward's window counts go into the ledger's params (``windows``), not into the artifacts.
    """
    from ..health import walk_forward_gate
    from ..window_store import WindowStore

    store = WindowStore.at(windows)
    weights, stream, tree, fits = offload((node.label, profile), _allocate, node, returns, profile, books, store)
    note.update(fallback=weights["fallback"], fallback_reason=weights["fallback_reason"], windows=fits)
    if (fits.get("store") or "").startswith("unreadable"):
        logger.warning("meta %s %s: window store %s", node.path, profile, fits["store"])
    for err in weights["walk_forward"]["errors"][:3]:
        logger.info("meta %s %s: window fell back: %s", node.path, profile, err)
    warning = walk_forward_gate(node, profile, weights)
    if warning:
        warn(warning)
    if weights["fallback"]:
        logger.warning("meta %s %s: optimizer failed, equal-weight fallback: %s", node.path, profile, weights["fallback_reason"])
    return {"weights": weights, "stream": stream.to_frame(profile), "tree": tree}


def _allocate(node: NodeSpec, returns, profile: str, books: dict | None, windows):
    """:func:`compose.allocate` and its window counts (on a Ray worker, or in-process)."""
    from ..compose import allocate

    fits: dict = {}
    return (*allocate(node, returns, profile, books, store=windows, fits=fits), fits)


def flatten(node: NodeSpec, children: list, profile: str, run_id: str, meta_weights: dict, holdings: dict) -> dict:
    """``flattened_<profile>.json``: the node's meta weights @ its children's asset weights.

    ``holdings``: each child's book (sleeve id -> its ``weights_<p>.json``, or a nested meta
    child's ``flattened_<p>.json``).
    """
    from ..compose import flattened

    return {"run_id": run_id, **flattened(node, children, profile, meta_weights, holdings)}
