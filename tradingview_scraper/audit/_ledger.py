"""The ledger file of a run: its entries' format, the one fold that reads and checks it, and appending under its locks."""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..deps import file_digest, fingerprint, stat_key
from ..errors import PipelineError
from ..layout import Node, dumps_json

#: ``prev_hash`` of the genesis entry.
GENESIS_PREV_HASH = "0" * 64

#: Keys every ledger entry carries besides its payload.
ENTRY_KEYS = ("seq", "prev_hash", "time", "kind", "hash")

#: Stage names older ledgers use -> the step's name now: a rerun under the new name repairs a
#: failure recorded under the old one.
RENAMED_STAGES = {"meta_stream": "node_returns", "pin": "pinned_sleeve", "resolve": "resolved_manifest"}

_DAMAGED_LEDGER = (
    "the run's record cannot be trusted: run `python -m tradingview_scraper.audit verify <run_dir>`, "
    "restore audit.jsonl or start a new run id"
)


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


def _paths(items: Any) -> list[str]:
    """The ``path`` of each well-formed ``{"path": ...}`` record of an entry's inputs or outputs."""
    return [i["path"] for i in items or [] if isinstance(i, dict) and isinstance(i.get("path"), str)]


@dataclass(frozen=True)
class Recorded:
    """The latest successful record of an artifact: who wrote it, its sha256 and its fingerprint."""

    path: str
    stage: str
    seq: int
    sha256: str | None
    stat: str | None


class Ledger:
    """A run's ledger folded line by line: its entries, its chain checked, the latest record per artifact.

    Attributes
    ----------
    entries : list of dict
        The entries of the lines that are JSON ledger objects, in ledger order.
    problems : list of tuple
        What :func:`verify` reports about the chain: per line with a problem, its number, its
        entry (None if malformed) and the problems.
    latest : dict
        Path -> :class:`Recorded` of every output of a successful stage not discarded since.
    next_seq, prev_hash
        What the next entry carries (``prev_hash`` None: the chain is unknown past a malformed line).
    complete : bool
        Whether the file ends with a whole line (no write was interrupted, or none is under way).
    """

    def __init__(self, inode: int | None = None) -> None:
        self.inode, self.size, self.tail, self.lines = inode, 0, b"", 0  # what of the file is folded
        self.entries: list[dict[str, Any]] = []
        self.problems: list[tuple[int, dict[str, Any] | None, list[str]]] = []
        self.latest: dict[str, Recorded] = {}
        self.next_seq, self.prev_seq, self.prev_hash = 0, None, GENESIS_PREV_HASH
        self.complete = True

    def extended(self, data: bytes) -> Ledger:
        """A copy with the whole lines of ``data``, the bytes that follow what is folded, folded in.

        The copy leaves this ledger as it is, so a ledger once read never changes under a thread that holds it.
        """
        new = copy.copy(self)
        new.entries, new.problems, new.latest = list(self.entries), list(self.problems), dict(self.latest)
        end = data.rfind(b"\n") + 1
        for raw in data[:end].split(b"\n")[:-1]:
            new.lines += 1
            entry = _entry_of(raw)
            if problems := new._apply(new.lines, entry):
                new.problems.append((new.lines, entry, problems))
            new.tail = raw + b"\n"
        new.size, new.complete = self.size + end, end == len(data)
        return new

    def _apply(self, n: int, entry: dict[str, Any] | None) -> list[str]:
        """Apply the line ``n`` holding ``entry`` and give the problems :func:`verify` reports for it."""
        if entry is None:
            self.next_seq, self.prev_hash = self.next_seq + 1, None  # the chain is unknown past it
            first = ["missing genesis: the first line is not a genesis entry"] if n == 1 else []
            return [f"line {n}: malformed entry (not a JSON ledger object)", *first]
        self.entries.append(entry)
        seq, kind, label = entry["seq"], entry["kind"], f"line {n} (seq {entry['seq']})"
        problems = []
        if n == 1 and kind != "genesis":
            problems.append(f"missing genesis: the first entry is of kind {kind!r}")
        elif n > 1 and kind == "genesis":
            problems.append(f"{label}: unexpected second genesis entry")
        elif kind not in ("genesis", "stage", "discard"):
            problems.append(f"{label}: unknown kind {kind!r}")
        if _entry_hash(entry) != entry["hash"]:
            problems.append(f"{label}: bad hash, entry altered after it was written")
        if seq != self.next_seq:
            after = f"after seq {self.prev_seq}" if self.prev_seq is not None else "at the start"
            problems.append(f"{label}: seq gap, expected seq {self.next_seq} {after}")
        if self.prev_hash is not None and entry["prev_hash"] != self.prev_hash:
            what = "the genesis value" if n == 1 else "the previous entry's hash"
            problems.append(f"{label}: broken chain, prev_hash does not match {what}")
        self.next_seq, self.prev_hash, self.prev_seq = seq + 1, entry["hash"], seq
        if kind == "discard":
            for rel in entry.get("paths") or []:
                self.latest.pop(rel, None)
        if kind != "stage" or entry.get("outcome") != "success":
            return problems
        if not isinstance(entry.get("outputs"), list):
            return [*problems, f"{label}: malformed outputs"]
        for out in entry["outputs"]:
            if isinstance(out, dict) and isinstance(out.get("path"), str):
                self.latest[out["path"]] = Recorded(out["path"], str(entry.get("stage")), seq, out.get("sha256"), out.get("stat"))
            else:
                problems.append(f"{label}: malformed output record {out!r}")
        return problems

    def successes(self) -> Iterator[dict[str, Any]]:
        """The successful stage entries, in ledger order."""
        return (e for e in self.entries if e["kind"] == "stage" and e.get("outcome") == "success")


def _entry_of(line: bytes) -> dict[str, Any] | None:
    """The ledger entry on ``line``, or None if it is no JSON object with the :data:`ENTRY_KEYS` of their types."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(entry, dict) and all(k in entry for k in ENTRY_KEYS) and type(entry["seq"]) is int):
        return None
    return entry if isinstance(entry["hash"], str) and isinstance(entry["prev_hash"], str) else None


# Absolute ledger path -> the ledger as last read. The file is append-only: a later read folds
# only the lines appended since, and a file replaced (another inode) or rewritten is read anew.
_READ: dict[str, Ledger] = {}


def read(run_dir: Path | str | Node, anew: bool = False) -> Ledger:
    """The run's ledger folded up to its last whole line, without raising (an empty one when there is none).

    ``anew``: fold the whole file again, not only what was appended since the last read.
    """
    path = _ledger_path(run_dir)
    key = os.path.abspath(path)
    try:
        with open(path, "rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            last = _READ.get(key)
            if anew or last is None or last.inode != inode:
                last = Ledger(inode)
            fh.seek(last.size - len(last.tail))
            data = fh.read()
    except FileNotFoundError:
        return Ledger()
    if not data.startswith(last.tail):  # rewritten in place (a reused inode)
        return read(run_dir, anew=True)
    ledger = last.extended(data[len(last.tail) :])
    _READ[key] = ledger
    return ledger


def verified(run_dir: Path | str | Node, anew: bool = False) -> Ledger:
    """:func:`read`, refusing a ledger at the first line :func:`verify` would report.

    Raises
    ------
    PipelineError
        In one line naming the ledger line and what is wrong with it.
    """
    ledger = read(run_dir, anew)
    if not ledger.problems:
        return ledger
    n, entry, problems = ledger.problems[0]
    where = f"audit: {_ledger_path(run_dir)} line {n}"
    if entry is None:
        raise PipelineError(f"{where} is not a ledger entry; {_DAMAGED_LEDGER}")
    if any(word in p for p in problems for word in ("bad hash", "seq gap", "broken chain")):
        raise PipelineError(f"{where} (seq {entry['seq']}) was altered or breaks the hash chain; {_DAMAGED_LEDGER}")
    raise PipelineError(f"audit: {_ledger_path(run_dir)} {problems[0]}; {_DAMAGED_LEDGER}")


def stage_entries(run_dir: Path | str | Node, outcome: str) -> Iterator[dict[str, Any]]:
    """The stage entries with ``outcome`` of the run's ledger, in ledger order, whether or not its chain verifies.

    No ledger has none; a line that is no ledger entry is skipped (the chain check reports it).
    """
    return (e for e in read(run_dir).entries if e["kind"] == "stage" and e.get("outcome") == outcome)


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


# flock() serialises processes; on a network file system it locks per process, so this lock
# serialises the threads of one process.
_THREADS = threading.Lock()


def _fresh_thread_lock() -> None:
    """Give a forked child its own lock: one held by another thread of the parent would never be freed."""
    global _THREADS
    _THREADS = threading.Lock()


os.register_at_fork(after_in_child=_fresh_thread_lock)


@contextmanager
def locked(run_dir: Path | str | Node) -> Iterator[Path]:
    """Hold the thread lock and an exclusive ``flock`` on ``audit.jsonl.lock``; yields the ledger's path."""
    ledger = _ledger_path(run_dir)
    with _THREADS:
        fd = os.open(ledger.with_name(ledger.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield ledger
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)  # a child forked meanwhile shares the descriptor: closing alone keeps the lock
        finally:
            os.close(fd)


def write_entry(ledger: Path, seq: int, prev_hash: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Append an entry as one canonical line with a single O_APPEND write, flushed to disk; the entry."""
    time = datetime.now(UTC).isoformat(timespec="microseconds")
    body = _normalise({**payload, "seq": seq, "prev_hash": prev_hash, "time": time, "kind": kind}, f"{kind} entry")
    entry = {**body, "hash": _entry_hash(body)}
    view = memoryview((_canonical(entry) + "\n").encode("utf-8"))
    created = not ledger.exists()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new file's directory entry is durable too
        dfd = os.open(ledger.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return entry


def append(run_dir: Path | str | Node, kind: str, payload: dict[str, Any], no_genesis: str) -> dict[str, Any]:
    """Append a ``kind`` entry chained to the last one of a ledger that verifies, under the ledger's locks.

    Raises
    ------
    PipelineError
        ``no_genesis``: the ledger is empty; or the ledger does not verify, or ends with an
        incomplete line (an interrupted write).
    """
    with locked(run_dir) as path:
        ledger = verified(run_dir)
        if not ledger.complete:  # no writer is at work under the lock: the last write was interrupted
            raise PipelineError(
                f"audit: {path} ends with an incomplete line (interrupted write); run "
                f"`python -m tradingview_scraper.audit verify {path.parent}` and repair it"
            )
        if not ledger.entries:
            raise PipelineError(no_genesis)
        return write_entry(path, ledger.next_seq, ledger.prev_hash, kind, payload)
