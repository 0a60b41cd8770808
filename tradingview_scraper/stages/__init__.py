"""Workflow stages: the thin functions the Snakefile's rules call, one per rule.

Each stage receives its rule's files (``input``, ``output``, ``log``: plain paths, named as
the rule names them), reads the inputs, calls the pure functions of :mod:`sleeve` /
:mod:`meta` / :mod:`report`, writes the outputs atomically and records itself in the run's
audit ledger. It builds no artifact path of its own: the rule's declarations are the one
source (input functions: :mod:`tradingview_scraper.wiring`).

The stages live in one module per rule family; this module only re-exports them (no code
here: :mod:`deps` counts each rule's own stages module in its code hash, not this one).
"""

from __future__ import annotations

from ..engines import HIERARCHICAL
from ._common import (
    Files,
    StageIO,
    child_input,
    console_warning,
    ensure_genesis,
    logger,
    prewarm,
    watch,
)
from ._ledger import first_failure, report_at_exit
from ._meta import run_flatten, run_meta_optimize, run_meta_returns, run_node_returns
from ._pins import PIN_REQUIRED, check_pins, pin_source, resolve_pin, run_pinned_sleeve
from ._preflight import preflight
from ._rebalance import (
    check_previous_run,
    check_rebalance,
    rebalance_source,
    run_rebalance,
)
from ._report import run_report, run_resolved_manifest
from ._risk import run_risk
from ._sleeves import check_data, run_sleeve
from ._sources import check_source_run

__all__ = [
    "Files",
    "StageIO",
    "HIERARCHICAL",
    "PIN_REQUIRED",
    "check_data",
    "check_pins",
    "check_previous_run",
    "check_rebalance",
    "check_source_run",
    "child_input",
    "console_warning",
    "ensure_genesis",
    "first_failure",
    "logger",
    "pin_source",
    "preflight",
    "prewarm",
    "rebalance_source",
    "report_at_exit",
    "resolve_pin",
    "run_flatten",
    "run_meta_optimize",
    "run_meta_returns",
    "run_node_returns",
    "run_pinned_sleeve",
    "run_rebalance",
    "run_report",
    "run_resolved_manifest",
    "run_risk",
    "run_sleeve",
    "watch",
]
