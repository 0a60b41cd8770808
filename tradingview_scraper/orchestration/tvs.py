"""``tvs``: the console command installed with the package (run, dag, verify, runs, prune)."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from .. import audit, history
from ..errors import PipelineError
from ..layout import RUNS_ROOT, run_dir
from ..manifest_io import DEFAULT_MANIFEST
from .cli import _OneLineParser

_PROG = "tvs"

_USAGE = f"""usage: {_PROG} COMMAND ...

commands:
  run PROFILE [options]        run the pipeline for PROFILE (options: {_PROG} run PROFILE --help)
  dag PROFILE [options]        the job graph of a run, nothing executed
  verify RUN                   verify a run's ledger and artifacts (RUN: a run id or a run directory)
  runs [--profile P]           list the runs: id, profile, data end, status, Sharpe per risk profile
  prune --keep N [--profile P] [--delete]
                               the runs older than the N newest of each profile (dry run unless --delete)
"""


def main(argv: list[str] | None = None) -> int:
    """Run ``tvs`` with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Exit codes: 0 success, 2 usage or configuration error (one line on stderr), 1 a stage
    failed or a run does not verify, 130 / 143 Ctrl-C / SIGTERM during ``run``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handler = {"run": partial(_pipeline, "run"), "dag": partial(_pipeline, "dag"), "verify": _verify, "runs": _runs,
               "prune": _prune}.get(command)  # fmt: skip
    if handler is None:
        print(f"{_PROG}: error: unknown command {command!r}; the commands are: run, dag, verify, runs, prune", file=sys.stderr)
        return 2
    try:
        return handler(rest)
    except PipelineError as exc:
        print(f"{_PROG} {command}: error: {exc}", file=sys.stderr)
        return 2


def _pipeline(command: str, rest: list[str]) -> int:
    """``tvs run`` / ``tvs dag``: ``PROFILE [options]`` as the runner's options (``--profile PROFILE ...``)."""
    from .cli import main as run_main

    if rest and not rest[0].startswith("-"):
        rest = ["--profile", rest[0], *rest[1:]]
    elif not any(a in ("-h", "--help") for a in rest):
        print(f"{_PROG} {command}: error: give the profile first: {_PROG} {command} PROFILE [options] (see --help)", file=sys.stderr)
        return 2
    return run_main([*rest, *(["--dry-run"] if command == "dag" else [])], prog=f"{_PROG} {command}", require_meta=False)


def _parser(command: str, description: str) -> _OneLineParser:
    p = _OneLineParser(prog=f"{_PROG} {command}", description=description)
    p.add_argument("--runs-root", default=str(RUNS_ROOT), help="directory of run directories (default: %(default)s)")
    return p


def _verify(rest: list[str]) -> int:
    p = _parser("verify", "Verify a run's hash-chained ledger and every artifact it records.")
    p.add_argument("run", metavar="RUN", help="a run id of the runs root, or a run directory")
    args = p.parse_args(rest)
    path = Path(args.run)
    if not (path.is_dir() or "/" in args.run):
        path = run_dir(args.run, args.runs_root)  # a run id: one safe path component
    found = history.read_run(path)
    if isinstance(found, str):
        print(f"{_PROG} verify: error: {path} is not a run: {found}", file=sys.stderr)
        return 2
    return audit.main(["verify", str(path)])


def _runs(rest: list[str]) -> int:
    p = _parser("runs", "List the runs of a runs root, oldest first.")
    p.add_argument("--profile", help="only the runs of this profile")
    p.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    args = p.parse_args(rest)
    found = history.runs(args.runs_root, args.profile)
    if args.json:
        print(json.dumps([r.as_dict() for r in found], indent=2))
        return 0
    if not found:
        print(f"no runs in {args.runs_root}")
        return 0
    rows = [("run id", "profile", "data end", "status", "Sharpe")]
    for r in found:
        sharpe = ", ".join(f"{p} {'-' if s is None else f'{s:.2f}'}" for p, s in r.sharpe.items()) or "-"
        status = r.status if r.status in ("finished", "running") else f"{r.status}: {r.detail}"[:120]
        rows.append((r.run_id, r.profile, r.data_end or "-", status, sharpe))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _prune(rest: list[str]) -> int:
    p = _parser("prune", "Delete the runs older than the N newest of each profile; a dry run unless --delete.")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="runs kept per profile (newest first)")
    p.add_argument("--profile", help="prune only this profile's runs")
    p.add_argument(
        "--manifest", default=str(DEFAULT_MANIFEST),
        help="the runs this manifest pins are kept: its next runs read them (default: %(default)s)",
    )  # fmt: skip
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="say what would be deleted (the default)")
    mode.add_argument("--delete", action="store_true", help="delete them")
    args = p.parse_args(rest)
    pins = dict.fromkeys(history.manifest_pins(args.manifest), f"manifest {args.manifest}")
    plan = history.prune_plan(args.keep, args.runs_root, args.profile, pinned=pins)
    for info, why in plan.keep:
        print(f"keep    {info.run_id}  ({why})")
    for name, why in plan.others:
        print(f"leave   {name}  (not a run: {why})")
    if not plan.delete:
        print(f"nothing to prune: every run in {args.runs_root} is kept")
        return 0
    if not args.delete:
        for info, why in plan.delete:
            print(f"would delete {info.run_id}  ({info.profile}, {info.status}, {why})")
        print(f"dry run: {len(plan.delete)} runs would be deleted; add --delete to delete them")
        return 0
    deleted, skipped = history.prune(plan)
    for info in deleted:
        print(f"deleted {info.run_id}  ({info.profile}, {info.status})")
    for info, why in skipped:
        print(f"skipped {info.run_id}  ({why})")
    return 0
