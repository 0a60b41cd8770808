"""The size of the house: lines of the orchestration modules against the numerics, per module.

The orchestration set is what moves files, runs and records jobs (the table of steps and its
adapter, the rules' inputs, the run's owner, lock and context, the entry points, the Ray
subpackage, the audit ledger, the layout, content and code digests); the numerics set is what
computes a portfolio (walk-forward, engines, meta allocation, flattening, limits, risk,
rebalance and trading, the report's measures). ``tests/test_house.py`` holds the bounds.

    python bench/lines.py [--base REV]

Prints a table of module -> lines (and the lines at ``REV`` with ``--base``), each set's total,
and the modules over the per-module bound.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tradingview_scraper"

#: Paths below the package (a folder counts every ``*.py`` in it).
ORCHESTRATION = (
    "steps.py", "stages", "rule_inputs.py", "owner.py", "run.py", "runlock.py", "orchestration",
    "cluster", "audit", "layout", "deps.py", "codehash.py",
)  # fmt: skip
NUMERICS = (
    "backtest.py", "engines.py", "window_engine.py", "meta.py", "compose.py", "flattening.py", "sleeve.py",
    "bounds.py", "projection.py", "limits.py", "limits_book.py", "health.py", "risk.py", "risk_book.py",
    "rebalance.py", "current_book.py", "trading.py", "trading_limits.py", "report/_metrics.py",
)  # fmt: skip
#: No package module is longer (lines).
MODULE_BOUND = 400


def modules(paths, tree: Path = ROOT) -> list[Path]:
    """The ``*.py`` files of ``paths`` (below the package of ``tree``), sorted."""
    out = []
    for rel in paths:
        p = tree / PACKAGE / rel
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else [])
    return out


def count(path: Path) -> int:
    """Lines of one file."""
    return len(path.read_text().splitlines())


def _at(rev: str, rel: str) -> int | None:
    """Lines of ``rel`` (relative to the repository) at git revision ``rev``; None where it did not exist."""
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], capture_output=True, text=True)
    return len(done.stdout.splitlines()) if done.returncode == 0 else None


def _listed_at(rev: str, paths) -> list[str]:
    """Repository-relative ``*.py`` files of ``paths`` at ``rev``."""
    done = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, PACKAGE], capture_output=True,
                          text=True, check=True)  # fmt: skip
    wanted = [f"{PACKAGE}/{p}" for p in paths]
    return [f for f in done.stdout.split() if f.endswith(".py") and any(f == w or f.startswith(w + "/") for w in wanted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="git revision to compare with")
    args = parser.parse_args(argv)
    for title, paths in (("orchestration", ORCHESTRATION), ("numerics", NUMERICS)):
        now = {p.relative_to(ROOT).as_posix(): count(p) for p in modules(paths)}
        then = {f: _at(args.base, f) for f in _listed_at(args.base, paths)} if args.base else {}
        print(f"\n{title}")
        for rel in sorted(set(now) | set(then)):
            before = f"{then[rel]:>6}" if rel in then else "     -" if args.base else ""
            print(f"  {rel.removeprefix(PACKAGE + '/'):<34}{before}{now.get(rel, 0):>6}")
        base_total = f"{sum(then.values()):>6}" if args.base else ""
        print(f"  {'total':<34}{base_total}{sum(now.values()):>6}")
    over = [(p.relative_to(ROOT).as_posix(), count(p)) for p in (ROOT / PACKAGE).rglob("*.py") if count(p) > MODULE_BOUND]
    print(f"\nmodules over {MODULE_BOUND} lines: {', '.join(f'{r} ({n})' for r, n in over) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
