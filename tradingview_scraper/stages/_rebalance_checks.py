"""The rebalance's pre-flight checks: the current book (a previous run or a holdings file) and its prices."""

from __future__ import annotations

from pathlib import Path

from .. import audit
from ..errors import ConfigError, DataError
from ..layout import run_node
from ..manifest import Plan
from ._common import console_warning
from ._pins import check_source_run


def check_rebalance(
    plan: Plan, runs_root: Path | str, run_id: str, previous_run: str | None, holdings: str | None,
    base_dir: Path | str = ".",
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
        (see :func:`holdings.read_holdings`); with trading settings, a held symbol no sleeve
        prices, an external sleeve's included (:func:`check_external_prices`).
    """
    from ..holdings import read_holdings

    if not (previous_run or holdings):
        return
    if not plan.root.is_meta:
        raise ConfigError(
            f"profile {plan.profile!r} is atomic; a rebalance (previous_run / holdings) needs a meta profile's "
            "flattened weights"
        )
    if plan.trading:  # the target holds every external sleeve's symbols: each needs a price
        check_external_prices(plan, base_dir)
    if previous_run:
        if previous_run == run_id:
            raise ConfigError(f"previous_run {previous_run!r} is this run's own id; give an earlier run")
        profile = check_previous_run(previous_run, runs_root, plan.risk_profiles, whole=True)
        if profile != plan.profile:
            from ..rebalance import other_profile

            console_warning(other_profile(previous_run, profile, plan.profile))
    if holdings:
        rows = read_holdings(holdings)
        if any("quantity" in r for r in rows) and not plan.trading:
            raise ConfigError(
                f"holdings {holdings}: a book in quantities needs the meta profile's trading.capital (the account's "
                "value) to be valued; add a trading block to profile " + repr(plan.profile) + " or give weights"
            )
        if plan.trading or any("quantity" in r for r in rows):
            _check_priced(plan, [r["symbol"] for r in rows], f"holdings {holdings}", base_dir)


def _external_priced(plan: Plan, base_dir: Path | str) -> set[str]:
    """The symbols the price tables of the plan's external sleeves give (issue 24)."""
    from ..external import external_files, read_prices

    out: set[str] = set()
    for spec in plan.external_nodes():
        files = external_files(spec.config, plan.risk_profiles, base_dir)
        if "prices" in files:
            try:
                out.update(read_prices(files["prices"]).columns)
            except DataError as exc:
                raise DataError(f"{spec.label}: external.prices: {exc}") from None
    return out


def check_external_prices(plan: Plan, base_dir: Path | str) -> None:
    """Refuse, before any work, trading a book that holds an external sleeve's symbol no sleeve prices.

    A symbol an external sleeve holds is priced by an atomic sleeve that lists it (where every atomic
    sleeve lists its symbols) or by the external sleeve's own price table (``external.prices``).

    Raises
    ------
    DataError
        Naming the sleeve, the symbol and how to give it a price (:func:`external.unpriced`).
    """
    from ..external import unpriced

    listed = [n.config["universe"].get("symbols") for n in plan.atomic_nodes()]
    known = None if any(s is None for s in listed) else {s for symbols in listed for s in symbols}
    for spec in plan.external_nodes():
        cfg = spec.config
        if known is not None:
            from ..external import external_files, read_book

            files = external_files(cfg, plan.risk_profiles, base_dir)
            held = {r["symbol"] for h in files["holdings"] for r in read_book(h)}
            if held <= known:
                continue  # an atomic sleeve prices every one
        line = unpriced(cfg, plan.risk_profiles, base_dir, spec.label)
        if line:
            raise DataError(line)


def _check_priced(plan: Plan, symbols: list[str], who: str, base_dir: Path | str = ".") -> None:
    """Refuse a held symbol no atomic sleeve of the plan lists (where every sleeve lists its symbols) and
    no external sleeve's price table gives.

    Raises
    ------
    DataError
        Naming the symbol and the sleeves' symbols.
    """
    listed = [n.config["universe"].get("symbols") for n in plan.atomic_nodes()]
    if any(s is None for s in listed):
        return  # a sleeve of a whole dataset: its symbols are known once its prices load (the stage checks)
    known = sorted({s for symbols_ in listed for s in symbols_} | _external_priced(plan, base_dir))
    for symbol in symbols:
        if symbol not in known:
            ext = " or gives it a price table (external.prices)" if plan.external_nodes() else ""
            raise DataError(
                f"{who}: {symbol} has no price: no sleeve of meta profile {plan.profile!r} trades it{ext} "
                f"(they price {', '.join(known)})"
            )


def check_previous_run(previous_run: str, runs_root: Path | str, risk_profiles: list[str], *, whole: bool) -> str | None:
    """Verify a previous run like a pin, and its book like a holdings file; return its meta profile.

    Raises
    ------
    DataError
        The previous run lacks a risk profile's ``flattened_<profile>.json``; is a symlink, is
        being written, did not finish or does not verify (see :func:`check_source_run`); or a
        flattened file is not a valid book (see :func:`holdings.read_holdings`).
    """
    from ..holdings import read_holdings

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
