"""The rebalance stage: the current book, its pre-flight check, the trades to the flattened book."""

from __future__ import annotations

from pathlib import Path

from .. import audit
from ..errors import ConfigError, DataError
from ..layout import read_json, run_node, write_json
from ..manifest import ROOT, Plan
from ..run import RunContext
from ._common import Files, _named, _stage, console_warning
from ._sources import check_source_run


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

    A previous run is verified like a pin (:func:`check_previous_run`); a previous run of
    another meta profile is used, with a warning on the console.

    Raises
    ------
    ConfigError
        A rebalance of an atomic profile, or a previous run that is this run.
    DataError
        The previous run cannot be trusted or its book is not a valid book (see
        :func:`check_previous_run`), or the holdings file is unreadable or has a bad row
        (see :func:`rebalance.read_holdings`).
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
        profile = check_previous_run(previous_run, runs_root, plan.risk_profiles, whole=True)
        if profile != plan.profile:
            from ..rebalance import other_profile

            console_warning(other_profile(previous_run, profile, plan.profile))
    if holdings:
        read_holdings(holdings)


def check_previous_run(previous_run: str, runs_root: Path | str, risk_profiles: list[str], *, whole: bool) -> str | None:
    """Verify a previous run like a pin, and its book like a holdings file; return its meta profile.

    Raises
    ------
    DataError
        The previous run lacks a risk profile's ``flattened_<profile>.json``; is a symlink, is
        being written, did not finish or does not verify (see :func:`check_source_run`); or a
        flattened file is not a valid book (see :func:`rebalance.read_holdings`).
    """
    from ..rebalance import read_holdings

    prev = run_node(previous_run, Path(runs_root))
    who = f"previous_run {previous_run!r}"
    books = [prev.file("flattened", profile=p) for p in risk_profiles]
    missing = [p for p, f in zip(risk_profiles, books, strict=True) if not f.is_file()]
    if missing and not prev.dir.is_symlink():  # a link is refused as such below
        raise DataError(
            f"{who} ({prev.dir}) has no flattened weights for risk profile(s) "
            f"{', '.join(missing)}; give a finished meta run of the same risk profiles"
        )
    check_source_run(prev.dir, books, who=who, hint=f"rerun run {previous_run!r}, or give another run", whole=whole)
    for book in books:
        try:
            read_holdings(book)
        except DataError as exc:
            raise DataError(f"{who}: its book is not a valid book: {exc}") from None
    genesis = audit.genesis_of(prev.dir) or {}
    return genesis.get("meta_profile")


def run_rebalance(ctx: RunContext, node_path: str, profile: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write ``output["rebalance"]``: the trades from the current book (``input["current"]``: the holdings
    file, or the previous run's flattened weights) to the flattened weights (``input["target"]``)."""
    from ..rebalance import read_holdings, rebalance, sleeve_weight_changes

    if not (ctx.holdings or ctx.previous_run):
        raise ConfigError("rebalance needs previous_run or holdings (--previous-run RUN_ID or --holdings FILE)")
    files = _named(input)
    # A book whose path Snakemake cannot take literally is not an input (rule_inputs.declared).
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
            # Read only what the previous run's ledger vouches for, and only a valid book.
            check_previous_run(ctx.previous_run, ctx.runs_root, [profile], whole=False)
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

