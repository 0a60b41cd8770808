"""Workflow stages: every rule calls :func:`run_step` with its step's name (the table: :mod:`tradingview_scraper.steps`).

The adapter receives the rule's files (``input``, ``output``, ``log``: plain paths, named as
the rule names them), reads the inputs, calls the step's function, writes the outputs
atomically and records the step in the run's audit ledger. It builds no artifact path of its
own: the rule's declarations are the one source (input functions derived from the table:
:mod:`tradingview_scraper.rule_inputs`).

The step functions live in one module per rule family; this module only re-exports names
(no code here: a step's code trigger counts the modules its function reaches).
"""

from __future__ import annotations

from ._common import StageIO, child_input, watch
from ._pins import PIN_REQUIRED, pin_source, resolve_pin
from ._preflight import check_data, check_pins, preflight
from ._reuse import reusable
from ._step import run_step

__all__ = [
    "PIN_REQUIRED",
    "StageIO",
    "check_data",
    "check_pins",
    "child_input",
    "pin_source",
    "preflight",
    "resolve_pin",
    "reusable",
    "run_step",
    "watch",
]
