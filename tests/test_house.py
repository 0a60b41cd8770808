"""The house's bounds: no package module over the per-module bound, the orchestration set held where it stands.

The groups and the bound live in ``bench/lines.py`` (which prints the table); the orchestration
bound is a ratchet: lower it when the set shrinks, never raise it to make room.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_lines", ROOT / "bench" / "lines.py")
lines = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lines)

#: Lines of the orchestration set (``bench/lines.py``) at most.
ORCHESTRATION_BOUND = 5420


def test_no_package_module_is_over_the_bound():
    over = {p.relative_to(ROOT).as_posix(): lines.count(p) for p in (ROOT / lines.PACKAGE).rglob("*.py")}
    assert len(over) > 50
    assert {k: n for k, n in over.items() if n > lines.MODULE_BOUND} == {}


def test_the_orchestration_set_is_held():
    found = lines.modules(lines.ORCHESTRATION)
    assert len(found) > 20  # the groups name real modules
    total = sum(map(lines.count, found))
    assert total <= ORCHESTRATION_BOUND, f"the orchestration modules have {total} lines (bench/lines.py)"
