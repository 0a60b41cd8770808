"""The resolved manifest and the report steps."""

from __future__ import annotations

from ..layout import atomic_write_bytes
from ..run import RunContext
from ._common import Files, _await_prewarm, _named, _stage


def resolved_manifest(run_id: str, plan) -> dict:
    """``manifest.resolved.json``: the resolved tree and the manifest's hash."""
    return {"run_id": run_id, **plan.to_dict()}


def run_report(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write a meta node's ``report.md``, self-contained ``report.html`` and ``report_assets/``.

    ``input`` as :func:`report.load_node` reads it; ``output`` named by :func:`report.output_name`.
    The ledger records the report's ``headline`` (:func:`report.headline`) and whether its
    ``figures`` were ``drawn`` or ``reused`` from the runs root's report store
    (:func:`report.figures_via_store`).
    """
    _await_prewarm()
    from .. import report

    files, out = _named(input), _named(output)
    inputs = [f for v in files.values() for f in ([v] if isinstance(v, str) else v)]
    with _stage(ctx, "report", node_path, log, {}, inputs, out.values()) as record:
        data = report.load_node(ctx, node_path, files)
        analysis = report.analyse(data)
        pngs, record.params["figures"] = report.figures_via_store(ctx.store("report"), data, analysis)
        for name, content in report.build_report(data, analysis, pngs).items():
            atomic_write_bytes(out[name], content)
        record.params["headline"] = report.headline(analysis)
