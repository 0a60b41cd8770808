"""Atomic sleeves: the sleeve step, computed on Ray or in-process."""

from __future__ import annotations

from pathlib import Path

from ..errors import PipelineError, SleeveError, one_line
from ..layout import Node
from ..manifest import ROOT, NodeSpec
from ._common import _import_numerics, logger, prewarm


def _driver_prices(config: dict, base_dir: Path) -> tuple[object, list[dict] | None]:
    """A file-based sleeve's prices, read and checked here so they travel with its tasks, and the findings.

    The worker that computes the sleeve may be on a node without the file; skfolio's
    datasets ship inside skfolio and load (and are checked, ``compute_sleeve``) anywhere:
    ``(None, None)`` for them.
    """
    if config["data"].get("source", "skfolio") == "skfolio":
        return None, None
    from ..data import checked_prices

    return checked_prices(
        config["data"], config["universe"].get("symbols"), base_dir=base_dir, health=config.get("health"),
        direction=config["universe"].get("direction", "LONG"),
    )  # fmt: skip


def sleeve(
    node: NodeSpec, node_dir: Node, profiles: list[str], run_id: str, prices, note: dict, warn, cluster, base_dir: Path,
    windows=None,
) -> dict:  # fmt: skip
    """Compute atomic sleeve ``node`` (on the run's Ray ``cluster``; in-process when it is None):
    ``returns``, ``health``, ``sign_test``, ``provenance`` and ``weights`` (risk profile -> record).

    ``prices``: the price files, read through the sleeve's ``data`` block, which names them, and
    passed through the data-quality pass before any fit: a finding that ``health.data_quality``
    refuses stops the sleeve, one it lets through is a console warning (``warn``) and lands in
    ``health.json`` (``data_quality``).

    Each risk profile's walk-forward is a task of its own (they are independent), so one
    sleeve's profiles spread over the cluster's CPUs: a run that recomputes one sleeve
    uses every core, not one. The parts are merged into the sleeve's one set of artifacts.

    ``windows``: the directory of the runs root's window store (None: reuse is off); windows
    whose train rows are unchanged since an earlier run come from it. Each task's counts go
    into ``provenance.json`` and the ledger's params (``note``), never into the shared artifacts.
    """
    from ..cluster import local_call
    from ..health import sleeve_verdict
    from ..sleeve import SleeveResult, compute_sleeve
    from ..window_store import WindowStore

    sid = node.sleeve_id or node.profile
    try:
        frame, findings = _driver_prices(node.config, base_dir)
    except PipelineError as exc:
        raise SleeveError(f"sleeve {sid!r} failed: {one_line(exc)}") from exc
    # on a worker, the returns travel back as an Arrow table (SleeveResult); the window store is
    # on a file system the workers share
    kw = {"sleeve_id": sid, "profile": node.profile, "base_dir": str(base_dir), "prices": frame, "windows": WindowStore.at(windows)}
    tasks = [((sid, rp), (node.config, [rp]), kw) for rp in profiles]
    if cluster is None:
        _import_numerics()  # the fits run in this job's thread: one thread at a time imports skfolio first
        done = {}
        for name, args, kwargs in tasks:
            try:
                done[name] = local_call(compute_sleeve, *args, **kwargs)
            except Exception as exc:
                raise SleeveError(f"sleeve {sid!r} ({name[1]}) failed: {one_line(exc)}") from exc
    else:
        prewarm()
        done = cluster.map(compute_sleeve, tasks, num_cpus=float(node.config["backtest"].get("num_cpus", 1)))
    result = SleeveResult.merge([part for part, _ in done.values()])
    # the ledger's summary of the window counts: totals and each risk profile's
    counts = result.windows.values()
    note["windows"] = {"fitted": sum(c["fitted"] for c in counts), "reused": sum(c["reused"] for c in counts), "profiles": result.windows}
    for rp, count in result.windows.items():
        if (count["store"] or "").startswith("unreadable"):
            logger.warning("sleeve %s (%s): window store %s", sid, rp, count["store"])
    if findings:
        result.health["data_quality"] = findings
    for finding in result.health.get("data_quality", []):
        warn(f"sleeve {sid!r}: data {finding['check']}: {finding['message']}")
    placement = {name[1]: prov for name, (_, prov) in done.items()}
    for rp, prov in placement.items():
        for warning in prov["warnings"]:
            logger.info("sleeve %s (%s) warned on its worker: %s", sid, rp, warning)
    verdict = sleeve_verdict(node, result.health, str(node_dir.file("health")))
    if verdict:  # a standalone run tells its user now; below a meta node, the sleeve's log keeps it
        (warn if node.path == ROOT else logger.warning)(verdict)
    first = next(iter(placement.values()))
    placed = {
        rp: {**{k: prov[k] for k in ("node_id", "node_ip", "worker_pid", "duration_s")}, "windows": result.windows.get(rp)}
        for rp, prov in placement.items()
    }
    provenance = {"computed": True, "run_id": run_id, "profile": node.profile, "sleeve": node.sleeve_id,
                  "mode": first["mode"], "address": first["address"], "tasks": placed}  # fmt: skip
    return {"returns": result.returns, "health": result.health, "sign_test": result.sign_test,
            "provenance": provenance, "weights": result.weights}  # fmt: skip

