"""Workflow stages: every rule calls :func:`run_step` with its step's name (the table: :mod:`tradingview_scraper.steps`).

The adapter receives the rule's files (``input``, ``output``, ``log``: plain paths, named as
the rule names them), reads the inputs, calls the step's function, writes the outputs
atomically and records the step in the run's audit ledger. It builds no artifact path of its
own: the rule's declarations are the one source (input functions derived from the table:
:mod:`tradingview_scraper.rule_inputs`). Steps that do their own reading and writing (a
sleeve on Ray, a pinned copy, the risk, the report) keep a body of their own.

The step functions live in one module per rule family; this module only re-exports names
(no code here: a step's code trigger counts the modules its function reaches).
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
from ._pins import PIN_REQUIRED, check_pins, pin_source, resolve_pin
from ._preflight import preflight
from ._reuse import reusable
from ._sleeves import check_data, run_sleeve
from ._sources import check_source_run
from ._step import run_step

__all__ = [
    "Files",
    "StageIO",
    "HIERARCHICAL",
    "PIN_REQUIRED",
    "check_data",
    "check_pins",
    "check_source_run",
    "child_input",
    "console_warning",
    "ensure_genesis",
    "first_failure",
    "logger",
    "pin_source",
    "preflight",
    "prewarm",
    "report_at_exit",
    "reusable",
    "resolve_pin",
    "run_sleeve",
    "run_step",
    "watch",
]
