"""The resolved manifest and the report stages."""

from __future__ import annotations

from pathlib import Path

from ..layout import atomic_write_bytes, write_json
from ..manifest import ROOT
from ..run import RunContext
from ._common import _await_prewarm, _stage


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
        files += [node.file(k, profile=p) for k in ("meta_returns", "meta_weights", "flattened", "risk")]
        if node_path == ROOT and (ctx.previous_run or ctx.holdings):
            files.append(node.file("rebalance", profile=p))
    return files


def run_report(ctx: RunContext, node_path: str, logfile: str | None = None) -> None:
    """Write a meta node's ``report.md``, self-contained ``report.html`` and ``report_assets/``."""
    _await_prewarm()
    from .. import report

    inputs = report_inputs(ctx, node_path)
    outs = report.output_files(ctx.node(node_path))
    with _stage(ctx, "report", node_path, logfile, {}, inputs, outs):
        for path, data in report.build_report(ctx, node_path).items():
            atomic_write_bytes(path, data)

