"""The resolved manifest and the report steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..layout import atomic_write_bytes, store_entry, write_store_file
from ..run import RunContext
from ._common import Files, _await_prewarm, _named, _stage


def resolved_manifest(run_id: str, plan) -> dict:
    """``manifest.resolved.json``: the resolved tree and the manifest's hash."""
    return {"run_id": run_id, **plan.to_dict()}


def run_report(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write a meta node's ``report.md``, self-contained ``report.html`` and ``report_assets/``.

    ``input`` as :func:`report.load_node` reads it; ``output`` named by :func:`report.output_name`.
    With reuse on, the figures come from the runs root's report store when an earlier run
    drew them from the same data (:func:`report.figures_key`), and are kept there once drawn:
    a run that recomputed nothing the figures show draws none. The ledger's ``figures``
    param says which (``drawn`` or ``reused``).
    """
    _await_prewarm()
    from .. import report

    files, out = _named(input), _named(output)
    inputs = [f for v in files.values() for f in ([v] if isinstance(v, str) else v)]
    with _stage(ctx, "report", node_path, log, {}, inputs, out.values()) as record:
        data = report.load_node(ctx, node_path, files)
        analysis = report.analyse(data)
        store = ctx.store("report")
        key = report.figures_key(data) if store is not None else None
        pngs = stored_figures(store, key) if store is not None else None
        record.params["figures"] = "drawn" if pngs is None else "reused"
        if pngs is None:
            pngs = report.figures(data, analysis)
            if store is not None:
                keep_figures(store, key, pngs)
        for name, content in report.build_report(data, analysis, pngs).items():
            atomic_write_bytes(out[name], content)
        record.params["headline"] = headline(analysis)


# ----------------------------------------------------------------------------- the report store
# One entry per figures key: each figure's PNG and an index of their digests, written last.


def stored_figures(store: Path, key: str) -> dict[str, bytes] | None:
    """The figures kept under ``key``, each checked against the index's digest; None when any is missing or differs."""
    entry = store_entry(store, key)
    try:
        index = json.loads((entry / "index.json").read_text())
        pngs = {name: (entry / f"{name}.png").read_bytes() for name in index}
    except (OSError, ValueError, TypeError):
        return None
    if any(hashlib.sha256(pngs[name]).hexdigest() != digest for name, digest in index.items()):
        return None
    return pngs


def keep_figures(store: Path, key: str, pngs: dict[str, bytes]) -> None:
    """Keep the figures drawn for ``key`` (best effort: a store that cannot be written costs only the reuse)."""
    entry = store_entry(store, key)
    try:
        for name, content in pngs.items():
            write_store_file(entry / f"{name}.png", content)
        index = {name: hashlib.sha256(content).hexdigest() for name, content in pngs.items()}
        write_store_file(entry / "index.json", json.dumps(index, sort_keys=True).encode())
    except OSError:
        pass


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
