"""Workflow stages: the thin functions the Snakefile's rules call, one per rule.

Each stage reads its inputs through :mod:`layout`, calls the pure functions of
:mod:`sleeve` / :mod:`meta` / :mod:`report`, writes its outputs atomically and records
itself in the run's audit ledger.

The stages live in one module per rule family; this module only re-exports them (no code
here: :mod:`deps` counts each rule's own stages module in its code hash, not this one).
"""

from __future__ import annotations

from ..engines import HIERARCHICAL
from ._common import console_warning, ensure_genesis, log, prewarm
from ._ledger import discard_damaged, first_failure, report_at_exit, runner_reports_errors
from ._meta import (
    child_holdings_file,
    run_flatten,
    run_meta_optimize,
    run_meta_returns,
    run_node_returns,
)
from ._pins import PIN_REQUIRED, check_pins, pin_source, resolve_pin, run_pin
from ._rebalance import check_rebalance, rebalance_source, run_rebalance
from ._report import report_inputs, run_report, run_resolved
from ._risk import risk_inputs, run_risk
from ._sleeves import check_data, run_sleeve, sleeve_outputs

__all__ = [
    "HIERARCHICAL",
    "PIN_REQUIRED",
    "check_data",
    "check_pins",
    "check_rebalance",
    "child_holdings_file",
    "console_warning",
    "discard_damaged",
    "ensure_genesis",
    "first_failure",
    "log",
    "pin_source",
    "prewarm",
    "rebalance_source",
    "report_at_exit",
    "report_inputs",
    "resolve_pin",
    "risk_inputs",
    "run_flatten",
    "run_meta_optimize",
    "run_meta_returns",
    "run_node_returns",
    "run_pin",
    "run_rebalance",
    "run_report",
    "run_resolved",
    "run_risk",
    "run_sleeve",
    "runner_reports_errors",
    "sleeve_outputs",
]
