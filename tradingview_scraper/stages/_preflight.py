"""The checks a run passes before any work starts: its pins, its data, its external sleeves' files, its rebalance book."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PipelineError
from ..holdings import check_rebalance
from ..manifest import Plan
from ._common import console_warning
from ._pins import resolve_pin

if TYPE_CHECKING:
    from ..run import RunContext


def preflight(run: RunContext) -> None:
    """Check every pin, data source, external sleeve's files and the current book.

    The run's owner calls it once before any job executes, whichever entry point started
    the run. A run that recomputes its pinned sleeves (``--execute-sleeves``) has a plan
    without pins (:meth:`run.RunContext.from_config`): their data is checked instead.

    Raises
    ------
    ConfigError, DataError
        The first unusable pin, data source, external sleeve's file or book (see :func:`check_pins`,
        :func:`check_data`, :func:`external.check_files`, :func:`check_rebalance`).
    """
    from ..external import check_files

    plan = run.plan
    check_pins(plan, run.runs_root, run.run_id)
    check_data(plan, run.base_dir)
    for spec in plan.external_nodes():
        check_files(spec.config, plan.risk_profiles, run.base_dir, spec.label)
    check_rebalance(plan, run.runs_root, run.run_id, run.previous_run, run.holdings, run.base_dir, console_warning)


def check_data(plan: Plan, base_dir: Path | str = ".") -> None:
    """Check the data of every sleeve ``plan`` computes (every unpinned one) before any work starts (no price is read).

    Parameters
    ----------
    plan : Plan
        The resolved run.
    base_dir : path-like
        Directory that relative ``data.path`` values are resolved against.

    Raises
    ------
    ConfigError, DataError
        From :func:`data.check_source`, prefixed with the profile.
    """
    from ..data import check_source

    seen = set()
    for spec in plan.atomic_nodes():
        if spec.pin or spec.profile in seen:
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


def check_pins(plan: Plan, runs_root: Path | str, run_id: str | None = None) -> None:
    """Resolve every pinned sleeve of ``plan`` before any work starts.

    Raises
    ------
    DataError
        The first pin that does not resolve or is unusable (see :func:`resolve_pin`).
    """
    verified: set[str] = set()
    for spec in plan.atomic_nodes():
        if spec.pin:
            resolve_pin(spec, Path(runs_root), plan.risk_profiles, run_id, whole=spec.pin not in verified)
            verified.add(spec.pin)
