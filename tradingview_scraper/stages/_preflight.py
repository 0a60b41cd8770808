"""The checks a run passes before any work starts: its pins, its data, its external sleeves' files, its rebalance book."""

from __future__ import annotations

from pathlib import Path

from ..holdings import check_rebalance
from ..manifest import Plan
from ._pins import check_pins
from ._sleeves import check_data


def preflight(
    plan: Plan,
    *,
    base_dir: Path | str,
    runs_root: Path | str,
    run_id: str,
    execute_sleeves: bool = False,
    previous_run: str | None = None,
    holdings: str | None = None,
) -> None:
    """Check every pin (unless ``execute_sleeves`` recomputes them), data source, external sleeve's files and the current book.

    The runner calls it once before Snakemake starts, and the workflow's ``onstart`` for a
    run the runner did not check in this process (the plain ``snakemake`` command).

    Raises
    ------
    ConfigError, DataError
        The first unusable pin, data source, external sleeve's file or book (see :func:`check_pins`,
        :func:`check_data`, :func:`external.check_files`, :func:`check_rebalance`).
    """
    from ..external import check_files

    if not execute_sleeves:
        check_pins(plan, runs_root, run_id)
    check_data(plan, base_dir, include_pinned=execute_sleeves)
    for spec in plan.external_nodes():
        check_files(spec.config, plan.risk_profiles, base_dir, spec.label)
    check_rebalance(plan, runs_root, run_id, previous_run, holdings, base_dir)
