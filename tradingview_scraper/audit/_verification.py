"""Verifying a run's ledger and the artifacts it records, and its command line (``verify <run_dir>``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..layout import Node
from ._hashing import _entry_hash, file_sha256
from ._ledger import ENTRY_KEYS, GENESIS_PREV_HASH, _ledger_path, _run_dir_of


def _verify(run_dir: Path | str | Node) -> tuple[list[str], int, int]:
    """Problems, number of entries and number of artifacts checked."""
    root = _run_dir_of(run_dir)
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return [f"missing genesis: no ledger at {ledger}"], 0, 0
    data = ledger.read_bytes()
    if not data:
        return [f"missing genesis: ledger {ledger} is empty"], 0, 0

    problems: list[str] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        problems.append(f"line {len(lines)}: incomplete last line (interrupted write)")

    expected_seq = 0
    expected_prev: str | None = GENESIS_PREV_HASH
    prev_seq: int | None = None
    n_entries = 0
    latest: dict[str, tuple[str, str | None, int]] = {}
    for lineno, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if (
            not isinstance(entry, dict)
            or not all(k in entry for k in ENTRY_KEYS)
            or not isinstance(entry["seq"], int)
            or isinstance(entry["seq"], bool)
            or not isinstance(entry["hash"], str)
            or not isinstance(entry["prev_hash"], str)
        ):
            problems.append(f"line {lineno}: malformed entry (not a JSON ledger object)")
            if lineno == 1:
                problems.append("missing genesis: the first line is not a genesis entry")
            expected_seq += 1
            expected_prev = None  # unknown; the malformed line is already reported
            continue
        n_entries += 1
        seq, kind = entry["seq"], entry.get("kind")
        label = f"line {lineno} (seq {seq})"
        if lineno == 1 and kind != "genesis":
            problems.append(f"missing genesis: the first entry is of kind {kind!r}")
        elif lineno > 1 and kind == "genesis":
            problems.append(f"{label}: unexpected second genesis entry")
        elif kind not in ("genesis", "stage", "discard"):
            problems.append(f"{label}: unknown kind {kind!r}")
        if _entry_hash(entry) != entry["hash"]:
            problems.append(f"{label}: bad hash, entry altered after it was written")
        if seq != expected_seq:
            after = f"after seq {prev_seq}" if prev_seq is not None else "at the start"
            problems.append(f"{label}: seq gap, expected seq {expected_seq} {after}")
        if expected_prev is not None and entry["prev_hash"] != expected_prev:
            what = "the genesis value" if lineno == 1 else "the previous entry's hash"
            problems.append(f"{label}: broken chain, prev_hash does not match {what}")
        expected_seq, expected_prev, prev_seq = seq + 1, entry["hash"], seq

        if kind == "stage" and entry.get("outcome") == "success":
            outputs = entry.get("outputs")
            if not isinstance(outputs, list):
                problems.append(f"{label}: malformed outputs")
                continue
            for out in outputs:
                if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                    problems.append(f"{label}: malformed output record {out!r}")
                    continue
                latest[out["path"]] = (str(entry.get("stage")), out.get("sha256"), seq)
        elif kind == "discard":  # damaged artifacts deleted on purpose: their producers rerun
            for rel in entry.get("paths") or []:
                latest.pop(rel, None)

    for rel, (stage, recorded, seq) in sorted(latest.items()):
        full = Path(os.path.normpath(root / rel))
        if not full.exists():
            problems.append(f"artifact {rel} missing (recorded by stage {stage}, seq {seq})")
        elif recorded is None or file_sha256(full) != recorded:
            problems.append(f"artifact {rel} changed since stage {stage} (seq {seq})")
    return problems, n_entries, len(latest)


def verify(run_dir: Path | str | Node) -> list[str]:
    """Check a run's ledger and the artifacts it records.

    Parameters
    ----------
    run_dir : path-like or Node
        The root run directory.

    Returns
    -------
    list of str
        One message per problem; empty when the ledger verifies. Problems: missing ledger
        or genesis, malformed lines, bad hashes (entry altered), seq gaps, broken chain
        (``prev_hash`` mismatch), and, for every path recorded as an output of its latest
        successful stage entry, a missing file or a changed sha256
        (``"artifact <path> changed since stage <stage> (seq N)"``).
    """
    return _verify(run_dir)[0]


# --------------------------------------------------------------------------- CLI


_PROG = "python -m tradingview_scraper.audit"


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{_PROG}: error: {message} (usage: {_PROG} verify <run_dir>)\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m tradingview_scraper.audit verify <run_dir>``: 0 verified, 1 problems, 2 bad usage."""
    parser = _OneLineParser(
        prog=_PROG,
        description="Verify the hash-chained audit ledger of a run directory.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    cmd = sub.add_parser("verify", help="verify audit.jsonl and the artifacts it records")
    cmd.add_argument("run_dir", help="the root run directory, e.g. data/runs/<run_id>")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        print(f"{_PROG}: error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    problems, n_entries, n_artifacts = _verify(args.run_dir)
    if problems:
        for problem in problems:
            print(problem)
        return 1
    print(f"audit OK: {n_entries} entries, {n_artifacts} artifacts verified")
    return 0
