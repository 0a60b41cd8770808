"""Atomic sleeves: the sleeve stage (on Ray or in-process) and the pre-flight check of their data."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PipelineError, SleeveError
from ..layout import write_json, write_parquet
from ..manifest import ROOT, NodeSpec, Plan
from ..run import RunContext
from ._common import Files, _named, _stage, console_warning, logger, prewarm


def _sleeve_task(
    config: dict, risk_profiles: list[str], sleeve_id: str, profile: str, base_dir: str, prices=None, windows=None
):
    """What runs on a Ray worker (or in-process): the sleeve's computation, its returns a frame.

    The result travels back as :class:`~tradingview_scraper.sleeve.SleeveResult` sends
    it: the returns as an Arrow table, the records as they are. ``windows``: the runs root's
    window store (:class:`~tradingview_scraper.window_store.WindowStore`), on a file system
    the worker shares.
    """
    from ..sleeve import compute_sleeve

    return compute_sleeve(
        config, risk_profiles, sleeve_id=sleeve_id, profile=profile, base_dir=base_dir, prices=prices, windows=windows
    )


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


def run_sleeve(
    ctx: RunContext, node_path: str, *, output: Files, log: str | None = None, input: Files | None = None
) -> None:
    """Compute atomic sleeve ``node_path`` (on Ray unless ``ray`` is off) and write its artifacts.

    ``output`` names ``returns``, ``health``, ``sign_test``, ``provenance`` and ``weights``
    (one file per risk profile, in the plan's order). ``input["prices"]``, the price files,
    are read through the sleeve's ``data`` block, which names them, and pass the data-quality
    pass before any fit: a finding that ``health.data_quality`` refuses stops the sleeve, one
    it lets through is a console warning and lands in ``health.json`` (``data_quality``).

    Each risk profile's walk-forward is a task of its own (they are independent), so one
    sleeve's profiles spread over the cluster's CPUs: a run that recomputes one sleeve
    uses every core, not one. The parts are merged into the sleeve's one set of artifacts.

    With reuse on (``RunContext.store``), windows whose train rows are unchanged since an
    earlier run come from the runs root's window store; each task's counts (``windows``) go
    into ``provenance.json`` and the ledger's params, never into the shared artifacts.
    """
    from ..cluster import local_call
    from ..health import health_gate, unhealthy_profiles
    from ..sleeve import SleeveResult

    spec, out = ctx.spec(node_path), _sleeve_files(ctx, output)
    sid = spec.sleeve_id or spec.profile
    outputs = [out[k] for k in ("returns", "health", "sign_test", "provenance")] + list(out["weights"].values())
    prices = _named(input or {}).get("prices", [])  # recorded with their digests: the ledger knows what was read
    inputs = [os.path.abspath(p) for p in ([prices] if isinstance(prices, str) else prices)]
    with _stage(ctx, "sleeve", node_path, log, {"profile": spec.profile, "config": spec.config}, inputs, outputs) as rec:
        try:
            prices, findings = _driver_prices(spec.config, ctx.base_dir)
        except PipelineError as exc:
            raise SleeveError(f"sleeve {sid!r} failed: {type(exc).__name__}: {exc}") from exc
        store = window_store(ctx)
        tasks = [
            ((sid, rp), (spec.config, [rp], sid, spec.profile, str(ctx.base_dir), prices, store), {})
            for rp in ctx.plan.risk_profiles
        ]
        if ctx.cluster is None:
            done = {}
            for name, args, _ in tasks:
                try:
                    done[name] = local_call(_sleeve_task, *args)
                except Exception as exc:
                    raise SleeveError(f"sleeve {sid!r} ({name[1]}) failed: {type(exc).__name__}: {exc}") from exc
        else:
            prewarm()
            cpus = float(spec.config["backtest"].get("num_cpus", 1))
            done = ctx.cluster.map(_sleeve_task, tasks, num_cpus=cpus)
        result = SleeveResult.merge([part for part, _ in done.values()])
        rec.params["windows"] = window_counts(result.windows)
        for rp, count in result.windows.items():
            if (count["store"] or "").startswith("unreadable"):
                logger.warning("sleeve %s (%s): window store %s", sid, rp, count["store"])
        if findings:
            result.health["data_quality"] = findings
        for finding in result.health.get("data_quality", []):
            console_warning(f"sleeve {sid!r}: data {finding['check']}: {finding['message']}")
        placement = {name[1]: prov for name, (_, prov) in done.items()}
        for rp, prov in placement.items():
            for warning in prov["warnings"]:
                logger.info("sleeve %s (%s) warned on its worker: %s", sid, rp, warning)
        _write_sleeve(ctx, spec, out, result, placement)
        if node_path == ROOT:  # a standalone run warns its user now; a meta run applies the policy
            try:
                warning = health_gate(spec, result.health, spec.config["health"], where=out["health"])
            except SleeveError as exc:
                warning = f"{exc}; a meta run consuming it stops"
            if warning:
                console_warning(warning)
        else:
            bad = unhealthy_profiles(result.health, float(spec.config["health"]["min_success_ratio"]))
            if bad:
                logger.warning("sleeve %s is unhealthy: %s (a meta run consuming it stops)", sid, ", ".join(bad))


def _sleeve_files(ctx: RunContext, output: Files) -> dict:
    """A sleeve rule's named outputs, ``weights`` as risk profile -> file."""
    out = _named(output)
    return {**out, "weights": dict(zip(ctx.plan.risk_profiles, out["weights"], strict=True))}


def _write_sleeve(ctx: RunContext, spec: NodeSpec, out: dict, result, placement: dict[str, dict]) -> None:
    """Write a computed sleeve's artifacts to ``out``; ``placement`` maps each risk profile to where it ran."""
    for rp, record in result.weights.items():
        write_json(out["weights"][rp], record)
    write_json(out["health"], result.health)
    write_json(out["sign_test"], result.sign_test)
    first = next(iter(placement.values()))
    tasks = {
        rp: {**{k: prov[k] for k in ("node_id", "node_ip", "worker_pid", "duration_s")}, "windows": result.windows.get(rp)}
        for rp, prov in placement.items()
    }
    write_json(
        out["provenance"],
        {
            "computed": True,
            "run_id": ctx.run_id,
            "profile": spec.profile,
            "sleeve": spec.sleeve_id,
            "mode": first["mode"],
            "address": first["address"],
            "tasks": tasks,
        },
    )
    write_parquet(out["returns"], result.returns)  # last: the file Snakemake's DAG waits on


def window_store(ctx: RunContext):
    """The run's window store (:class:`~tradingview_scraper.window_store.WindowStore`), None when reuse is off."""
    from ..window_store import WindowStore

    return WindowStore.at(ctx.store("windows"))


def window_counts(windows: dict[str, dict]) -> dict:
    """The ledger's summary of walk-forward window counts (risk profile -> ``fitted``, ``reused``, ``store``): totals and each profile's."""
    return {
        "fitted": sum(c["fitted"] for c in windows.values()),
        "reused": sum(c["reused"] for c in windows.values()),
        "profiles": windows,
    }


def check_data(plan: Plan, base_dir: Path | str = ".", *, include_pinned: bool = False) -> None:
    """Check the data of every sleeve ``plan`` computes before any work starts (no price is read).

    Parameters
    ----------
    plan : Plan
        The resolved run.
    base_dir : path-like
        Directory that relative ``data.path`` values are resolved against.
    include_pinned : bool
        Check pinned sleeves too (``--execute-sleeves`` recomputes them).

    Raises
    ------
    ConfigError, DataError
        From :func:`data.check_source`, prefixed with the profile.
    """
    from ..data import check_source

    seen = set()
    for spec in plan.atomic_nodes():
        if (spec.pin and not include_pinned) or spec.profile in seen:
            continue
        seen.add(spec.profile)
        bt = spec.config["backtest"]
        try:
            check_source(
                spec.config["data"],
                spec.config["universe"].get("symbols"),
                base_dir=base_dir,
                min_returns=int(bt["train_window"]) + int(bt["test_window"]),
            )
        except PipelineError as exc:
            raise type(exc)(f"profile {spec.profile!r}: {exc}") from None

