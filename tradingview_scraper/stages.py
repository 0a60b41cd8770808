"""Workflow stages: the thin functions the Snakefile's rules call, one per rule.

Each stage reads its inputs through :mod:`layout`, calls the pure functions of
:mod:`sleeve` / :mod:`meta` / :mod:`report`, writes its outputs atomically and records
itself in the run's audit ledger.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from . import audit
from .engines import HIERARCHICAL
from .errors import DataError, SleeveError
from .layout import Node, read_json, read_parquet, write_json, write_parquet, write_text
from .manifest import ROOT
from .run import RunContext

log = logging.getLogger("tradingview_scraper")


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def _stage(
    ctx: RunContext, stage: str, node_path: str, logfile: str | None, params: dict, inputs, outputs
) -> Iterator[audit.stage_audit]:
    """Log this thread's records to ``logfile`` and audit the stage's inputs and outputs.

    Yields the audit record, whose ``params`` a stage may extend with its outcome.
    """
    handler = None
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logfile, mode="w")
        handler.addFilter(_ThreadFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        ensure_genesis(ctx)
        with audit.stage_audit(ctx.run_dir, stage, node_path, params, list(inputs), list(outputs)) as record:
            log.info("%s %s: start", stage, node_path)
            yield record
        log.info("%s %s: done in %.2f s", stage, node_path, time.perf_counter() - t0)
    except Exception as exc:
        log.error("%s %s: %s", stage, node_path, exc)
        raise
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def ensure_genesis(ctx: RunContext) -> None:
    """Start the run's audit ledger (idempotent)."""
    audit.genesis(
        ctx.run_dir,
        run_id=ctx.run_id,
        meta_profile=ctx.plan.profile,
        manifest_path=ctx.plan.manifest_path,
        manifest_sha256=ctx.plan.manifest_sha256,
    )


# --------------------------------------------------------------------------- sleeves


def sleeve_outputs(ctx: RunContext, node: Node) -> list[Path]:
    """Every artifact an atomic sleeve node writes."""
    rps = ctx.plan.risk_profiles
    return [
        node.file("returns"),
        node.file("health"),
        node.file("sign_test"),
        node.file("provenance"),
        *[node.file("weights", profile=p) for p in rps],
    ]


def _sleeve_task(config: dict, risk_profiles: list[str], sleeve_id: str, profile: str, base_dir: str) -> dict:
    """What runs on a Ray worker (or in-process): the sleeve's computation as plain data."""
    from .sleeve import compute_sleeve

    return compute_sleeve(config, risk_profiles, sleeve_id=sleeve_id, profile=profile, base_dir=base_dir).to_payload()


def run_sleeve(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Compute atomic sleeve ``node_path`` (on Ray unless ``ray`` is off) and write its artifacts."""
    from .orchestration import compute
    from .sleeve import SleeveResult

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    sid = spec.sleeve_id or spec.profile
    outputs = sleeve_outputs(ctx, node)
    with _stage(ctx, "sleeve", node_path, logfile, {"profile": spec.profile, "config": spec.config}, [], outputs):
        args = (spec.config, ctx.plan.risk_profiles, sid, spec.profile, str(ctx.base_dir))
        backend = compute.backend_from_config(ctx.ray, ctx.ray_address, ctx.ray_num_cpus)
        try:
            if backend is None:
                payload, prov = compute.local_call(_sleeve_task, *args)
            else:
                cpus = float(spec.config["backtest"].get("num_cpus", 1))
                payload, prov = backend.run(_sleeve_task, *args, name=sid, num_cpus=cpus)
        except SleeveError:
            raise
        except Exception as exc:
            raise SleeveError(f"sleeve {sid!r} failed: {type(exc).__name__}: {exc}") from exc
        result = SleeveResult.from_payload(payload)
        _write_sleeve(ctx, node, result, prov)


def _write_sleeve(ctx: RunContext, node: Node, result, provenance: dict) -> None:
    for rp, record in result.weights.items():
        write_json(node.file("weights", profile=rp), record)
    write_json(node.file("health"), result.health)
    write_json(node.file("sign_test"), result.sign_test)
    write_json(node.file("provenance"), {"computed": True, "run_id": ctx.run_id, **provenance})
    write_parquet(node.file("returns"), result.returns)  # last: the file Snakemake's DAG waits on


def pin_source(ctx: RunContext, node_path: str) -> Node:
    """The sleeve directory a pinned sleeve reuses, or DataError naming the paths looked at.

    A pin ``run_id`` resolves to ``data/runs/<run_id>/sleeves/<sleeve_id>/`` (a sleeve of an
    earlier meta run) or ``data/runs/<run_id>/`` (a standalone sleeve run of the same
    profile). Never a fallback to another run.
    """
    from .layout import run_node

    spec = ctx.spec(node_path)
    pinned = run_node(spec.pin, ctx.runs_root)
    candidates = [pinned.child(spec.sleeve_id), pinned]
    for cand in candidates:
        if cand.file("returns").exists():
            return cand
    looked = " or ".join(str(c.dir) for c in candidates)
    raise DataError(f"sleeve {spec.sleeve_id!r}: pinned run_id {spec.pin!r} not found (looked in {looked})")


def run_pin(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Copy a pinned sleeve's artifacts into this run, recording their provenance."""
    spec, node = ctx.spec(node_path), ctx.node(node_path)
    src = pin_source(ctx, node_path)
    outputs = sleeve_outputs(ctx, node)
    with _stage(ctx, "pin", node_path, logfile, {"pin": spec.pin, "source": str(src.dir)}, [], outputs):
        names = [(src.file(k), node.file(k)) for k in ("health", "sign_test")]
        names += [(src.file("weights", profile=p), node.file("weights", profile=p)) for p in ctx.plan.risk_profiles]
        missing = [str(s) for s, _ in names if not s.exists()]
        if missing:
            raise DataError(f"sleeve {spec.sleeve_id!r}: pinned run {spec.pin!r} is incomplete: missing {missing[0]}")
        returns = read_parquet(src.file("returns"))
        absent = [p for p in ctx.plan.risk_profiles if p not in returns.columns]
        if absent:
            raise DataError(
                f"sleeve {spec.sleeve_id!r}: pinned run {spec.pin!r} has no risk profile(s) {', '.join(absent)} "
                f"in {src.file('returns')}"
            )
        prov = read_json(src.file("provenance")) if src.file("provenance").exists() else {}
        if prov.get("profile", spec.profile) != spec.profile:
            raise DataError(
                f"sleeve {spec.sleeve_id!r}: pinned run {spec.pin!r} belongs to profile {prov.get('profile')!r}, "
                f"not {spec.profile!r}"
            )
        for s, d in names:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)
        write_json(node.file("provenance"), {"computed": False, "pinned_run_id": spec.pin, "source": str(src.dir), "source_provenance": prov})
        write_parquet(node.file("returns"), returns[ctx.plan.risk_profiles])


# --------------------------------------------------------------------------- meta layer


def child_holdings_file(ctx: RunContext, child_path: str, profile: str) -> Path:
    """A child node's per-profile asset weights: ``weights_<p>.json`` or ``flattened_<p>.json``."""
    name = "flattened" if ctx.spec(child_path).is_meta else "weights"
    return ctx.node(child_path).file(name, profile=profile)


def _check_health(ctx: RunContext, spec) -> None:
    from .sleeve import unhealthy_profiles

    threshold = float(spec.config["health"]["min_success_ratio"])
    for child_path in spec.children:
        child = ctx.spec(child_path)
        if child.is_meta:
            continue
        hfile = ctx.node(child_path).file("health")
        health = read_json(hfile) if hfile.exists() else {}
        sub = {"profiles": {p: v for p, v in (health.get("profiles") or {}).items() if p in ctx.plan.risk_profiles}}
        bad = unhealthy_profiles(sub, threshold)
        if bad and spec.config["health"]["on_unhealthy"] == "error":
            raise SleeveError(
                f"sleeve {child.sleeve_id!r} is unhealthy: {', '.join(bad)}; the minimum success ratio is "
                f"{threshold:.0%} (health.min_success_ratio)"
            )


def run_meta_returns(ctx: RunContext, node_path: str, profile: str, logfile: str | None = None) -> None:
    """Inner-join the children's ``profile`` streams into ``meta/returns_<profile>.parquet``."""
    from .meta import meta_returns

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    inputs = [ctx.node(c).file("returns") for c in spec.children]
    out = node.file("meta_returns", profile=profile)
    with _stage(ctx, "meta_returns", node_path, logfile, {"profile": profile}, inputs, [out]):
        _check_health(ctx, spec)
        bt = spec.config["backtest"]
        streams = {}
        for child_path, path in zip(spec.children, inputs, strict=True):
            frame = read_parquet(path)
            if profile not in frame.columns:
                raise DataError(f"{path}: no column for risk profile {profile!r} (has {', '.join(frame.columns)})")
            streams[ctx.spec(child_path).sleeve_id] = frame[profile]
        write_parquet(out, meta_returns(streams, min_obs=bt["train_window"] + bt["test_window"]))


def run_meta_optimize(ctx: RunContext, node_path: str, profile: str, logfile: str | None = None) -> None:
    """Allocate across sleeves: ``meta/weights_<p>.json``, the stream, the cluster tree."""
    from .meta import meta_optimize

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    src = node.file("meta_returns", profile=profile)
    outs = [node.file("meta_weights", profile=profile), node.file("meta_stream", profile=profile)]
    tree_file = node.file("cluster_tree", profile=profile)
    if profile in HIERARCHICAL:
        outs.append(tree_file)
    alloc, bt = spec.config["meta_allocation"], spec.config["backtest"]
    with _stage(ctx, "meta_optimize", node_path, logfile, {"profile": profile, **alloc, **bt}, [src], outs) as rec:
        record, stream, tree = meta_optimize(
            read_parquet(src),
            profile,
            min_weight=alloc["min_weight"],
            max_weight=alloc["max_weight"],
            train_window=bt["train_window"],
            test_window=bt["test_window"],
        )
        rec.params.update(fallback=record["fallback"], fallback_reason=record["fallback_reason"])
        if record["fallback"]:
            log.warning("meta %s %s: optimizer failed, equal-weight fallback: %s", node_path, profile, record["fallback_reason"])
        if profile in HIERARCHICAL:
            write_json(tree_file, {"meta_profile": spec.profile, "risk_profile": profile, **(tree or {"available": False})})
        write_json(outs[0], {"meta_profile": spec.profile, "risk_profile": profile, **record})
        write_parquet(outs[1], stream.to_frame(profile))


def run_node_returns(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """A meta node's sleeve interface: its out-of-sample streams, one column per risk profile."""
    import pandas as pd

    node = ctx.node(node_path)
    inputs = [node.file("meta_stream", profile=p) for p in ctx.plan.risk_profiles]
    out = node.file("returns")
    with _stage(ctx, "meta_stream", node_path, logfile, {}, inputs, [out]):
        frame = pd.concat([read_parquet(p) for p in inputs], axis=1, join="inner")
        frame.index.name = "date"
        write_parquet(out, frame)


def run_flatten(ctx: RunContext, node_path: str, profile: str, logfile: str | None = None) -> None:
    """Physical-asset weights of ``profile``: meta weights @ the children's asset weights."""
    from .meta import flatten

    spec, node = ctx.spec(node_path), ctx.node(node_path)
    wfile = node.file("meta_weights", profile=profile)
    hfiles = {ctx.spec(c).sleeve_id: child_holdings_file(ctx, c, profile) for c in spec.children}
    out = node.file("flattened", profile=profile)
    with _stage(ctx, "flatten", node_path, logfile, {"profile": profile}, [wfile, *hfiles.values()], [out]):
        sleeve_weights = read_json(wfile)["weights"]
        holdings = {sid: read_json(f)["weights"] for sid, f in hfiles.items()}
        flat = flatten(sleeve_weights, holdings)
        write_json(
            out,
            {
                "meta_profile": spec.profile,
                "risk_profile": profile,
                "run_id": ctx.run_id,
                "node": node_path,
                "sleeve_weights": sleeve_weights,
                **flat,
            },
        )


def run_resolved(ctx: RunContext, logfile: str | None = None) -> None:
    """Write ``manifest.resolved.json``: the resolved tree and the manifest's hash."""
    out = ctx.root.file("resolved")
    with _stage(ctx, "resolve", ROOT, logfile, {"profile": ctx.plan.profile}, [], [out]):
        write_json(out, {"run_id": ctx.run_id, **ctx.plan.to_dict()})


def report_inputs(ctx: RunContext, node_path: str) -> list[Path]:
    """Artifacts the report of meta node ``node_path`` reads."""
    node = ctx.node(node_path)
    files = [node.file("returns")]
    for p in ctx.plan.risk_profiles:
        files += [node.file(k, profile=p) for k in ("meta_returns", "meta_weights", "flattened")]
    return files


def run_report(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Write ``report.md`` and ``report.html`` of a meta node."""
    from . import report

    node = ctx.node(node_path)
    inputs = report_inputs(ctx, node_path)
    outs = [node.file("report_md"), node.file("report_html")]
    with _stage(ctx, "report", node_path, logfile, {}, inputs, outs):
        md, html = report.build_report(ctx, node_path)
        write_text(outs[0], md)
        write_text(outs[1], html)
