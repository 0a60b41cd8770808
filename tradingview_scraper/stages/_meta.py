"""The meta layer's steps: aligned returns behind the health gate, allocation, stream, flattening."""

from __future__ import annotations

from pathlib import Path

from ..layout import read_json, read_parquet, write_parquet
from ..manifest import NodeSpec
from ..run import RunContext
from ._common import Files, _await_prewarm, _named, _stage, child_input, console_warning, logger


def _check_health(ctx: RunContext, spec: NodeSpec, files: dict) -> list[dict]:
    """Stop the meta layer of ``spec`` on an unhealthy atomic child or a failed sign test
    (:func:`health.children_gate`); warn on the console where its ``health`` policy says so,
    and of sleeves whose walk-forward windows differ from the node's
    (``health.on_parity_mismatch = "warn"``; ``"error"`` refused the plan).

    ``files`` are the stage's named inputs (``health:<sleeve>``, ``sign_test:<sleeve>``); a
    missing file is a missing record.

    Returns
    -------
    list of dict
        The data-quality findings the atomic children's policies let through (their
        ``health.json`` ``data_quality``), each with its ``sleeve``, for the report.
    """
    from ..health import ChildRecords, children_gate

    def record(path: str) -> dict | None:
        return read_json(path) if Path(path).is_file() else None

    for warning in spec.config.get("parity_warnings", []):
        console_warning(warning)
    children = []
    for cpath in spec.children:
        child = ctx.spec(cpath)
        if not child.is_meta:
            hfile, sfile = files[child_input("health", child.sleeve_id)], files[child_input("sign_test", child.sleeve_id)]
            children.append(ChildRecords(child, record(hfile), record(sfile), hfile, sfile))
    for warning in children_gate(spec, children, ctx.plan.risk_profiles):
        console_warning(warning)
    return [{"sleeve": c.spec.sleeve_id, **f} for c in children for f in (c.health or {}).get("data_quality", [])]


def run_meta_returns(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Align the children's streams into ``meta/returns_<profile>.parquet``, every profile.

    ``input`` names each child's files ``returns:<sleeve>`` (and an atomic child's
    ``health:<sleeve>``, ``sign_test:<sleeve>``); ``output["returns"]`` lists the files in
    risk-profile order. Each child's returns are read once for all profiles; a child's
    periods between common dates are compounded into the next one
    (:func:`meta.aligned_returns`), counted per sleeve in the file's metadata
    (``layout.read_parquet_metadata``) and the audit record. The data-quality findings the
    atomic children's policies let through go into the same metadata (``data_quality``).
    """
    _await_prewarm()
    from ..compose import aligned
    from ..meta import compounded_note

    spec, files = ctx.spec(node_path), _named(input)
    profiles = ctx.plan.risk_profiles
    children = [ctx.spec(c) for c in spec.children]
    inputs = {c.sleeve_id: files[child_input("returns", c.sleeve_id)] for c in children}
    checked = [files[child_input(k, c.sleeve_id)] for c in children if not c.is_meta for k in ("health", "sign_test")]
    outs = dict(zip(profiles, _named(output)["returns"], strict=True))
    with _stage(ctx, "meta_returns", node_path, log, {"profiles": profiles}, [*inputs.values(), *checked], outs.values()) as rec:
        findings = _check_health(ctx, spec, files)
        # the report reads the children's data-quality findings from here (kept only when there are some)
        extra = {"data_quality": findings} if findings else {}
        frames = {sid: read_parquet(path) for sid, path in inputs.items()}
        for profile, out in outs.items():
            frame, cal = aligned(spec, frames, profile, sources=inputs)
            write_parquet(out, frame, metadata={"calendar": cal, **extra})
        # every profile of a sleeve shares its calendar: the last one speaks for all
        folded = {sid: c["compounded"] for sid, c in cal["sleeves"].items() if c["compounded"]}
        rec.params.update(common_dates=cal["common_dates"], compounded_periods=folded)
        if folded:
            logger.info("meta_returns %s: %s", node_path, compounded_note(cal))


def meta_optimize(
    node: NodeSpec, profile: str, returns, offload, note: dict, windows=None, books: dict | None = None
) -> dict:
    """Allocate across sleeves from ``returns`` (``meta/returns_<p>.parquet``): ``weights``
    (``meta/weights_<p>.json``), ``stream`` and, for hierarchical profiles, ``tree`` (the cluster tree).

    The optimization runs on the run's Ray cluster when it is up (``offload``); the node's own
    walk-forward passes its health gate (:func:`health.walk_forward_gate`). ``books``: the
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
        console_warning(warning)
    if weights["fallback"]:
        logger.warning("meta %s %s: optimizer failed, equal-weight fallback: %s", node.path, profile, weights["fallback_reason"])
    return {"weights": weights, "stream": stream.to_frame(profile), "tree": tree}


def _allocate(node: NodeSpec, returns, profile: str, books: dict | None, windows):
    """:func:`compose.allocate` and its window counts (on a Ray worker, or in-process)."""
    from ..compose import allocate

    fits: dict = {}
    return (*allocate(node, returns, profile, books, store=windows, fits=fits), fits)


def node_returns(streams: dict):
    """A meta node's sleeve interface (``returns.parquet``): its out-of-sample ``streams``
    (risk profile -> ``meta/stream_<p>.parquet``), one column per risk profile."""
    from ..compose import node_returns

    return node_returns(list(streams.values()))


def flatten(node: NodeSpec, children: list, profile: str, run_id: str, meta_weights: dict, holdings: dict) -> dict:
    """``flattened_<profile>.json``: the node's meta weights @ its children's asset weights.

    ``holdings``: each child's book (sleeve id -> its ``weights_<p>.json``, or a nested meta
    child's ``flattened_<p>.json``).
    """
    from ..compose import flattened

    return {"run_id": run_id, **flattened(node, children, profile, meta_weights, holdings)}
