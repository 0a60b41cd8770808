"""The meta layer's stages: aligned returns behind the health gate, allocation, stream, flattening."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..layout import read_json, read_parquet, write_json, write_parquet
from ..manifest import NodeSpec
from ..run import RunContext
from ._common import Files, _await_prewarm, _named, _stage, child_input, console_warning, logger


def _check_health(ctx: RunContext, spec: NodeSpec, files: dict) -> list[dict]:
    """Stop the meta layer of ``spec`` on an unhealthy atomic child or a failed sign test
    (:func:`sleeve.children_gate`); warn on the console where its ``health`` policy says so,
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
    from ..sleeve import ChildRecords, children_gate

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
    from ..meta import aligned_returns, compounded_note

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
        bt = spec.config["backtest"]
        frames = {sid: (path, read_parquet(path)) for sid, path in inputs.items()}
        for profile, out in outs.items():
            streams = {}
            for sid, (path, frame) in frames.items():
                if profile not in frame.columns:
                    raise DataError(f"{path}: no column for risk profile {profile!r} (has {', '.join(frame.columns)})")
                streams[sid] = frame[profile]
            aligned, cal = aligned_returns(streams, min_obs=bt["train_window"] + bt["test_window"])
            write_parquet(out, aligned, metadata={"calendar": cal, **extra})
        # every profile of a sleeve shares its calendar: the last one speaks for all
        folded = {sid: c["compounded"] for sid, c in cal["sleeves"].items() if c["compounded"]}
        rec.params.update(common_dates=cal["common_dates"], compounded_periods=folded)
        if folded:
            logger.info("meta_returns %s: %s", node_path, compounded_note(cal))


def run_meta_optimize(
    ctx: RunContext, node_path: str, profile: str, *, input: Files, output: Files, log: str | None = None
) -> None:
    """Allocate across sleeves: ``output`` ``weights`` (``meta/weights_<p>.json``), ``stream``, and ``tree``
    (the cluster tree, hierarchical profiles) from ``input["returns"]``."""
    _await_prewarm()
    from ..meta import meta_optimize
    from ..sleeve import walk_forward_gate

    spec, src, out = ctx.spec(node_path), _named(input)["returns"], _named(output)
    outs = [out["weights"], out["stream"], *([out["tree"]] if "tree" in out else [])]
    alloc, bt = spec.config["meta_allocation"], spec.config["backtest"]
    with _stage(ctx, "meta_optimize", node_path, log, {"profile": profile, **alloc, **bt}, [src], outs) as rec:
        record, stream, tree = _on_running_cluster(
            ctx,
            (spec.label, profile),
            meta_optimize,
            read_parquet(src),
            profile,
            min_weight=alloc["min_weight"],
            max_weight=alloc["max_weight"],
            train_window=bt["train_window"],
            test_window=bt["test_window"],
        )
        rec.params.update(fallback=record["fallback"], fallback_reason=record["fallback_reason"])
        for err in record["walk_forward"]["errors"][:3]:
            logger.info("meta %s %s: window fell back: %s", node_path, profile, err)
        warning = walk_forward_gate(spec, profile, record)
        if warning:
            console_warning(warning)
        if record["fallback"]:
            logger.warning("meta %s %s: optimizer failed, equal-weight fallback: %s", node_path, profile, record["fallback_reason"])
        if "tree" in out:
            write_json(out["tree"], {"meta_profile": spec.profile, "risk_profile": profile, **(tree or {"available": False})})
        write_json(out["weights"], {"meta_profile": spec.profile, "risk_profile": profile, **record})
        write_parquet(out["stream"], stream.to_frame(profile))


def _on_running_cluster(ctx: RunContext, name: tuple[str, str], fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the run's Ray cluster if it is already up, else in-process.

    The meta stages run as threads of the driver and would share its GIL; when the
    sleeves have started a cluster, its workers (with skfolio already imported) run the
    risk profiles' optimizations in parallel. No cluster is started for this. ``name`` is
    ``(node label, risk profile)``: a failed task is a MetaError naming both.
    """
    if ctx.cluster is None or not ctx.cluster.is_up:
        return fn(*args, **kwargs)
    result, provenance = ctx.cluster.map(fn, [(name, args, kwargs)], max_retries=1, kind="meta")[name]
    for warning in provenance["warnings"]:
        logger.info("%s (%s) warned on its worker: %s", *name, warning)
    return result


def run_node_returns(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """A meta node's sleeve interface (``output["returns"]``): its out-of-sample streams
    (``input["streams"]``), one column per risk profile."""
    import pandas as pd

    inputs, out = _named(input)["streams"], _named(output)["returns"]
    with _stage(ctx, "meta_stream", node_path, log, {}, inputs, [out]):
        frame = pd.concat([read_parquet(p) for p in inputs], axis=1, join="inner")
        frame.index.name = "date"
        write_parquet(out, frame)


def run_flatten(
    ctx: RunContext, node_path: str, profile: str, *, input: Files, output: Files, log: str | None = None
) -> None:
    """Physical-asset weights of ``profile``: meta weights @ the children's asset weights.

    ``input`` holds ``meta_weights`` and each child's ``holdings:<sleeve>`` (its
    ``weights_<p>.json``, or a nested meta child's ``flattened_<p>.json``).
    """
    _await_prewarm()
    from ..meta import flatten

    spec, files, out = ctx.spec(node_path), _named(input), _named(output)["flattened"]
    wfile = files["meta_weights"]
    hfiles = {ctx.spec(c).sleeve_id: files[child_input("holdings", ctx.spec(c).sleeve_id)] for c in spec.children}
    with _stage(ctx, "flatten", node_path, log, {"profile": profile}, [wfile, *hfiles.values()], [out]):
        sleeve_weights = read_json(wfile)["weights"]
        records = {sid: read_json(f) for sid, f in hfiles.items()}
        flat = flatten(sleeve_weights, {sid: r["weights"] for sid, r in records.items()})
        write_json(
            out,
            {
                "meta_profile": spec.profile,
                "risk_profile": profile,
                "run_id": ctx.run_id,
                "node": node_path,
                "sleeve_weights": sleeve_weights,
                **flat,
                "held_by": _held_by(ctx, spec, records),
            },
        )


def _held_by(ctx: RunContext, spec: NodeSpec, records: dict[str, dict]) -> list[dict]:
    """Each position's first atomic sleeve below the node (plan order, depth first) holding it.

    The risk stage takes a position's prices from that sleeve; it is carried up from each
    nested meta child's own flattened file, so no stage above needs the leaves' weights.
    """
    held: dict[tuple[str, str], str] = {}
    for c in spec.children:
        child = ctx.spec(c)
        record = records[child.sleeve_id]
        if child.is_meta:
            for row in record["held_by"]:
                held.setdefault((row["symbol"], row["direction"]), row["sleeve"])
        else:
            for row in record["weights"]:
                if row["weight"] > 0:
                    held.setdefault((row["symbol"], row["direction"]), c)
    return [{"symbol": s, "direction": d, "sleeve": leaf} for (s, d), leaf in held.items()]
