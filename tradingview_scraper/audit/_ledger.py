"""The ledger file of a run: entry hashing, locking, writing a line, and the one walk that checks its chain."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..deps import file_digest, file_sha256, fingerprint, stat_key
from ..errors import PipelineError
from ..layout import Node, dumps_json

#: ``prev_hash`` of the genesis entry.
GENESIS_PREV_HASH = "0" * 64

#: Keys every ledger entry carries besides its payload.
ENTRY_KEYS = ("seq", "prev_hash", "time", "kind", "hash")

#: Stage names older ledgers use -> the step's name now: a rerun under the new name repairs a
#: failure recorded under the old one.
RENAMED_STAGES = {"meta_stream": "node_returns", "pin": "pinned_sleeve", "resolve": "resolved_manifest"}

# One threading lock per ledger path: flock() serialises processes, these serialise the
# threads of one process (and keep the lock-file handling simple).
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _reset_locks_after_fork() -> None:
    """Give a forked child fresh locks: a lock held by another parent thread would never be freed."""
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    _LOCKS.clear()


os.register_at_fork(after_in_child=_reset_locks_after_fork)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"}).encode("utf-8")).hexdigest()


def _normalise(obj: Any, what: str) -> Any:
    """``obj`` as plain JSON data (the layout's JSON rules), so hashing what is stored is stable."""
    try:
        return json.loads(dumps_json(obj))
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"audit: {what} is not JSON-serialisable ({exc})") from exc


def _ledger_path(run_dir: Path | str | Node) -> Path:
    return (run_dir if isinstance(run_dir, Node) else Node(Path(run_dir))).file("audit")


def _run_dir_of(run_dir: Path | str | Node) -> Path:
    return run_dir.dir if isinstance(run_dir, Node) else Path(run_dir)


def _relative(run_dir: Path, path: Path | str | Node) -> str:
    """``path`` as a posix path relative to ``run_dir`` (``"."`` for the run directory itself).

    An absolute path, or a relative one inside ``run_dir`` as read from the working directory
    (``data/runs/<id>/...``), is used as is; any other is relative to ``run_dir``.
    """
    raw = path.dir if isinstance(path, Node) else Path(path)
    root = os.path.abspath(run_dir)
    candidate = os.path.abspath(raw)
    if not raw.is_absolute() and candidate != root and not candidate.startswith(root.rstrip(os.sep) + os.sep):
        candidate = os.path.abspath(os.path.join(root, raw))
    return Path(os.path.relpath(candidate, root)).as_posix()


def _hashed(run_dir: Path, paths: list[Any], stat: bool = False) -> list[dict[str, str | None]]:
    """``{"path", "sha256"}`` per path, plus ``"stat"`` (its :func:`deps.fingerprint`) when ``stat``; a path
    outside ``run_dir`` always has its :func:`deps.stat_key`, so the workflow reuses the sha256 while it holds."""
    out = []
    for item in paths:
        rel = _relative(run_dir, item)
        full = run_dir / rel
        external = rel.startswith("../")
        before = stat_key(full) if external else fingerprint(full) if stat else None  # stat first: a later change then shows
        record = {"path": rel, "sha256": file_digest(full)}
        if stat or external:
            record["stat"] = before
        out.append(record)
    return out


@contextmanager
def _locked(ledger: Path) -> Iterator[None]:
    """Hold the ledger's thread lock and an exclusive ``flock`` on ``audit.jsonl.lock``."""
    with _LOCKS_GUARD:
        tlock = _LOCKS.setdefault(os.path.abspath(ledger), threading.Lock())
    with tlock:
        fd = os.open(_lock_path(ledger), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _lock_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".lock")


def _entry_of(line: bytes) -> dict[str, Any] | None:
    """The ledger entry on ``line``, or None if it is no JSON object with the :data:`ENTRY_KEYS` of their types."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(entry, dict) and all(k in entry for k in ENTRY_KEYS) and type(entry["seq"]) is int):
        return None
    return entry if isinstance(entry["hash"], str) and isinstance(entry["prev_hash"], str) else None


def stage_entries(run_dir: Path | str | Node, outcome: str) -> Iterator[dict[str, Any]]:
    """The stage entries with ``outcome`` of the run's ledger, in ledger order, read leniently.

    No ledger has none; a line that is no JSON object is skipped (the chain check reports it).
    """
    ledger = _ledger_path(run_dir)
    for raw in ledger.read_bytes().splitlines() if ledger.is_file() else []:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("kind") == "stage" and entry.get("outcome") == outcome:
            yield entry


def genesis_of(run_dir: Path | str | Node) -> dict[str, Any] | None:
    """The first entry of the run's ledger if it is a genesis entry, else None (no ledger, or not a ledger).

    Only the first line is read: a ledger damaged further on still names its run.
    """
    try:
        with open(_ledger_path(run_dir), "rb") as fh:
            first = _entry_of(fh.readline())
    except OSError:
        return None
    return first if first is not None and first["kind"] == "genesis" else None


def genesis_for(run_dir: Path | str | Node, run_id: str, error: type[PipelineError] = PipelineError) -> dict[str, Any] | None:
    """Run ``run_id``'s genesis entry in the directory's ledger; None when there is no ledger yet.

    Raises
    ------
    error
        The ledger does not start with a genesis entry, or it is another run's.
    """
    ledger = _ledger_path(run_dir)
    if not ledger.exists() or ledger.stat().st_size == 0:
        return None
    first = genesis_of(run_dir)
    if first is None:
        raise error(
            f"{ledger} does not start with a genesis entry: {_run_dir_of(run_dir)} is not a run directory of this pipeline; "
            "choose another run id"
        )
    if first.get("run_id") != run_id:
        raise error(
            f"run directory {_run_dir_of(run_dir)} holds the ledger of run {first.get('run_id')!r}, not {run_id!r}; "
            "choose another run id (a run directory is never renamed or reused)"
        )
    return first


def _make_entry(seq: int, prev_hash: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    time = datetime.now(UTC).isoformat(timespec="microseconds")
    body = _normalise({**payload, "seq": seq, "prev_hash": prev_hash, "time": time, "kind": kind}, f"{kind} entry")
    return {**body, "hash": _entry_hash(body)}


def _append_entry(ledger: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` as one canonical line with a single O_APPEND write, then flush it to disk."""
    view = memoryview((_canonical(entry) + "\n").encode("utf-8"))
    created = not ledger.exists()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dfd = os.open(ledger.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return entry


@dataclass(frozen=True)
class Recorded:
    """The latest successful record of an artifact: who wrote it, its sha256 and its fingerprint."""

    path: str
    stage: str
    seq: int
    sha256: str | None
    stat: str | None


_HASH_FIELD = re.compile(rb',"hash":"([0-9a-f]{64})"|"hash":"([0-9a-f]{64})",')


def _line_hash_ok(raw: bytes, entry: dict[str, Any]) -> bool:
    """Whether ``entry``, parsed from ledger line ``raw``, carries its own hash.

    A canonical line hashes as its bytes without the ``hash`` field (no re-serializing);
    any other spelling falls back to :func:`_entry_hash`.
    """
    want, body = entry.get("hash"), raw.rstrip(b"\n")
    for match in _HASH_FIELD.finditer(body):
        if (match[1] or match[2]).decode() == want:
            if hashlib.sha256(body[: match.start()] + body[match.end() :]).hexdigest() == want:
                return True
    return _entry_hash(entry) == want


class _Chain:
    """A ledger folded line by line: its chain checked, and what its entries record.

    ``latest``: path -> :class:`Recorded` of every artifact not discarded since; ``external``:
    each input outside the run -> (stat key, sha256); ``io``: seq -> (inputs, outputs) of a
    successful stage; ``failed``: a stage (renamed, node, profile) -> (seq, node, one line) of
    a failure not repaired by a later success.
    """

    def __init__(self) -> None:
        self.lines, self.entries, self.next_seq, self.prev_seq = 0, 0, 0, None
        self.prev_hash: str | None = GENESIS_PREV_HASH
        self.latest: dict[str, Recorded] = {}
        self.external: dict[str, tuple[str | None, str | None]] = {}
        self.io: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.failed: dict[str, tuple[int, str, str]] = {}

    def add(self, raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
        """Check and apply one line: its entry (None if malformed) and the problems :func:`verify` reports for it."""
        self.lines += 1
        n, entry = self.lines, _entry_of(raw)
        if entry is None:
            self.next_seq, self.prev_hash = self.next_seq + 1, None  # the chain is unknown past it
            first = ["missing genesis: the first line is not a genesis entry"] if n == 1 else []
            return None, [f"line {n}: malformed entry (not a JSON ledger object)", *first]
        seq, kind, label = entry["seq"], entry["kind"], f"line {n} (seq {entry['seq']})"
        problems = []
        if n == 1 and kind != "genesis":
            problems.append(f"missing genesis: the first entry is of kind {kind!r}")
        elif n > 1 and kind == "genesis":
            problems.append(f"{label}: unexpected second genesis entry")
        elif kind not in ("genesis", "stage", "discard"):
            problems.append(f"{label}: unknown kind {kind!r}")
        if not _line_hash_ok(raw, entry):
            problems.append(f"{label}: bad hash, entry altered after it was written")
        if seq != self.next_seq:
            after = f"after seq {self.prev_seq}" if self.prev_seq is not None else "at the start"
            problems.append(f"{label}: seq gap, expected seq {self.next_seq} {after}")
        if self.prev_hash is not None and entry["prev_hash"] != self.prev_hash:
            what = "the genesis value" if n == 1 else "the previous entry's hash"
            problems.append(f"{label}: broken chain, prev_hash does not match {what}")
        self.entries += 1
        self.next_seq, self.prev_hash, self.prev_seq = seq + 1, entry["hash"], seq
        if kind == "discard":
            for rel in entry.get("paths") or []:
                self.latest.pop(rel, None)
        if kind != "stage":
            return entry, problems
        params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
        stage, node = str(entry.get("stage")), entry.get("node")
        key = _canonical([RENAMED_STAGES.get(stage, stage), node, params.get("profile")])
        if entry.get("outcome") != "success":
            self.failed[key] = (seq, str(node), f"{stage} {node}: {entry.get('error')}")
            return entry, problems
        self.failed.pop(key, None)  # a later success of the same stage on the same node repairs a failure
        if not isinstance(entry.get("outputs"), list):
            return entry, [*problems, f"{label}: malformed outputs"]
        inputs = [i for i in entry.get("inputs") or [] if isinstance(i, dict) and isinstance(i.get("path"), str)]
        for item in inputs:
            if "stat" in item and item["path"].startswith("../"):
                self.external[item["path"]] = (item.get("stat"), item.get("sha256"))
        outputs = []
        for out in entry["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                problems.append(f"{label}: malformed output record {out!r}")
                continue
            outputs.append(out["path"])
            self.latest[out["path"]] = Recorded(out["path"], stage, seq, out.get("sha256"), out.get("stat"))
        self.io[seq] = (tuple(i["path"] for i in inputs), tuple(outputs))
        return entry, problems


def _verify(run_dir: Path | str | Node) -> tuple[list[str], int, int]:
    """Problems, number of entries and number of artifacts checked."""
    root, ledger = _run_dir_of(run_dir), _ledger_path(run_dir)
    data = ledger.read_bytes() if ledger.is_file() else None
    if not data:
        return [f"missing genesis: no ledger at {ledger}" if data is None else f"missing genesis: ledger {ledger} is empty"], 0, 0
    problems: list[str] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        problems.append(f"line {len(lines)}: incomplete last line (interrupted write)")
    chain = _Chain()
    for raw in lines:
        problems += chain.add(raw)[1]
    for rel, record in sorted(chain.latest.items()):
        full = Path(os.path.normpath(root / rel))
        if not full.exists():
            problems.append(f"artifact {rel} missing (recorded by stage {record.stage}, seq {record.seq})")
        elif record.sha256 is None or file_sha256(full) != record.sha256:
            problems.append(f"artifact {rel} changed since stage {record.stage} (seq {record.seq})")
    return problems, chain.entries, len(chain.latest)


def verify(run_dir: Path | str | Node) -> list[str]:
    """Check a run's ledger and the artifacts it records; one message per problem, none when it verifies.

    Problems: a missing ledger or genesis, malformed lines, bad hashes (an entry altered), seq
    gaps, a broken chain, and a missing or changed file of each output of a latest successful
    stage entry (``"artifact <path> changed since stage <stage> (seq N)"``).
    """
    return _verify(run_dir)[0]


_PROG = "python -m tradingview_scraper.audit"


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{_PROG}: error: {message} (usage: {_PROG} verify <run_dir>)\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m tradingview_scraper.audit verify <run_dir>``: 0 verified, 1 problems, 2 bad usage."""
    parser = _OneLineParser(prog=_PROG, description="Verify the hash-chained audit ledger of a run directory.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    cmd = sub.add_parser("verify", help="verify audit.jsonl and the artifacts it records")
    cmd.add_argument("run_dir", help="the root run directory, e.g. data/runs/<run_id>")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        print(f"{_PROG}: error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    problems, n_entries, n_artifacts = _verify(args.run_dir)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"audit OK: {n_entries} entries, {n_artifacts} artifacts verified")
    return 1 if problems else 0
