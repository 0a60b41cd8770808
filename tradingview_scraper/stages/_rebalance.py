"""The rebalance stage: the current book, its pre-flight check, the trades to the flattened book."""

from __future__ import annotations

from pathlib import Path

from .. import audit
from ..errors import ConfigError, DataError
from ..layout import read_json, run_node, write_json
from ..manifest import ROOT, Plan
from ..run import RunContext
from ._common import Files, _named, _stage


def rebalance_source(ctx: RunContext, profile: str) -> Path | None:
    """The current book of ``profile``'s rebalance: the holdings file, or the previous run's flattened file."""
    if ctx.holdings:
        return Path(ctx.holdings)
    if ctx.previous_run:
        return run_node(ctx.previous_run, ctx.runs_root).file("flattened", profile=profile)
    return None


def check_rebalance(
    plan: Plan, runs_root: Path | str, run_id: str, previous_run: str | None, holdings: str | None
) -> None:
    """Check the current book of a rebalance before any work starts.

    Raises
    ------
    ConfigError
        A rebalance of an atomic profile, or a previous run that is this run.
    DataError
        The previous run lacks a risk profile's ``flattened_<profile>.json``, or the
        holdings file is unreadable or has a bad row (see :func:`rebalance.read_holdings`).
    """
    from ..rebalance import read_holdings

    if not (previous_run or holdings):
        return
    if not plan.root.is_meta:
        raise ConfigError(
            f"profile {plan.profile!r} is atomic; a rebalance (previous_run / holdings) needs a meta profile's "
            "flattened weights"
        )
    if previous_run:
        if previous_run == run_id:
            raise ConfigError(f"previous_run {previous_run!r} is this run's own id; give an earlier run")
        prev = run_node(previous_run, Path(runs_root))
        missing = [p for p in plan.risk_profiles if not prev.file("flattened", profile=p).is_file()]
        if missing:
            raise DataError(
                f"previous_run {previous_run!r} ({prev.dir}) has no flattened weights for risk profile(s) "
                f"{', '.join(missing)}; give a finished meta run of the same risk profiles"
            )
    if holdings:
        read_holdings(holdings)


def run_rebalance(ctx: RunContext, profile: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write ``output["rebalance"]``: the trades from the current book (``input["current"]``: the holdings
    file, or the previous run's flattened weights) to the flattened weights (``input["target"]``)."""
    from ..rebalance import read_holdings, rebalance, sleeve_weight_changes

    if not (ctx.holdings or ctx.previous_run):
        raise ConfigError("rebalance needs previous_run or holdings (--previous-run RUN_ID or --holdings FILE)")
    files = _named(input)
    # A book whose path Snakemake cannot take literally is not an input (wiring.outside_files).
    current = files.get("current") or str(rebalance_source(ctx, profile))
    target_file, source, out = files["target"], Path(current).resolve(), _named(output)["rebalance"]
    frictions = ctx.plan.root.config["frictions"]
    params = {"profile": profile, "previous_run": ctx.previous_run, "holdings": ctx.holdings, **frictions}
    with _stage(ctx, "rebalance", ROOT, log, params, [target_file, source], [out]):
        flat = read_json(target_file)
        if ctx.holdings:
            current, prev = read_holdings(source), None
            book = {"kind": "holdings", "path": str(source), "sha256": audit.file_sha256(source)}
        else:
            prev = read_json(source)
            current = prev["weights"]
            book = {
                "kind": "previous_run",
                "run_id": ctx.previous_run,
                "meta_profile": prev.get("meta_profile"),
                "path": str(source),
                "sha256": audit.file_sha256(source),
            }
        rate = float(frictions["commission"]) + float(frictions["slippage"])
        body = rebalance(flat["weights"], current, cost_rate=rate, current_sleeves=prev is not None)
        write_json(
            out,
            {
                "meta_profile": ctx.plan.profile,
                "risk_profile": profile,
                "run_id": ctx.run_id,
                "current": book,
                "commission": float(frictions["commission"]),
                "slippage": float(frictions["slippage"]),
                "sleeve_weights": (
                    sleeve_weight_changes(flat["sleeve_weights"], prev.get("sleeve_weights") or {})
                    if prev is not None
                    else None
                ),
                **body,
            },
        )

