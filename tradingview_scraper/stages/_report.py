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
    """
    _await_prewarm()
    from .. import report

    files, out = _named(input), _named(output)
    inputs = [f for v in files.values() for f in ([v] if isinstance(v, str) else v)]
    with _stage(ctx, "report", node_path, log, {}, inputs, out.values()) as record:
        data = report.load_node(ctx, node_path, files)
        analysis = report.analyse(data)
        for name, content in report.build_report(data, analysis).items():
            atomic_write_bytes(out[name], content)
        record.params["headline"] = headline(analysis)


def headline(analysis) -> dict:
    """What the report step records in the ledger for run listings (``tvs runs``): the last date of
    the meta stream and each risk profile's out-of-sample Sharpe as ``[profile, sharpe]`` pairs in the
    run's order of risk profiles (None where undefined)."""
    import math

    ends = [m["end"] for m in analysis.performance.values() if m.get("end")]
    return {
        "data_end": max(ends) if ends else None,
        "sharpe": [[p, m["sharpe"] if math.isfinite(m["sharpe"]) else None] for p, m in analysis.performance.items()],
    }
