"""Artifacts against their records: the latest record per file, damage checks, discarding damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from ..layout import Node
from . import _ledger
from ._hashing import _canonical, _entry_hash, file_sha256, fingerprint
from ._ledger import (
    ENTRY_KEYS,
    GENESIS_PREV_HASH,
    RENAMED_STAGES,
    _append_line,
    _ledger_path,
    _locked,
    _make_entry,
    _read_last_entry,
    _relative,
    _run_dir_of,
)


@dataclass(frozen=True)
class Recorded:
    """The latest successful record of an artifact: who wrote it, its sha256 and its fingerprint."""

    path: str
    stage: str
    seq: int
    sha256: str | None
    stat: str | None


@dataclass(frozen=True)
class Damage:
    """An artifact whose file no longer matches its record (``missing`` or ``changed``)."""

    record: Recorded
    problem: str

    def line(self, run_dir: Path | str) -> str:
        where = Path(run_dir) / self.record.path
        return f"{where} {self.problem} since stage {self.record.stage} wrote it (audit seq {self.record.seq})"


_HASH_FIELD = re.compile(rb',"hash":"([0-9a-f]{64})"|"hash":"([0-9a-f]{64})",')


def _line_hash_ok(raw: bytes, entry: dict[str, Any]) -> bool:
    """Whether ``entry`` (parsed from ledger line ``raw``) carries its own hash.

    The ledger writes canonical JSON, so the hashed body is the line without its ``hash``
    field: one sha256 of bytes instead of re-serializing the entry. Any other spelling of
    the line falls back to :func:`_entry_hash`.
    """
    want = entry.get("hash")
    body = raw.rstrip(b"\n")
    for match in _HASH_FIELD.finditer(body):
        if (match[1] or match[2]).decode() == want:
            cut = body[: match.start()] + body[match.end() :]
            if hashlib.sha256(cut).hexdigest() == want:
                return True
    return _entry_hash(entry) == want


class _Index:
    """Latest record per artifact of one ledger, read incrementally (the ledger is append-only).

    Every complete line read is checked like :func:`verify` does (entry hash, seq, chain),
    so the index is only ever built on a ledger that verifies.
    """

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.offset, self.inode, self.line, self.tail = 0, None, 0, b""
        self.next_seq, self.prev_hash = 0, GENESIS_PREV_HASH
        self.latest: dict[str, Recorded] = {}
        self.external: dict[str, tuple[str | None, str | None]] = {}  # input outside the run -> (stat key, sha256)
        self.io: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # seq -> (inputs, outputs)
        self.failed: dict[str, tuple[int, str, str]] = {}  # a failed stage not run successfully since -> (seq, node, error)

    def refresh(self, reread: bool = False) -> dict[str, Recorded]:
        """Read what was appended since the last call (``reread``: the whole ledger, verifying it anew)."""
        with self.lock:
            try:
                st = self.ledger.stat()
            except FileNotFoundError:
                self._reset()
                return {}
            if reread or st.st_ino != self.inode or st.st_size < self.offset:
                self._reset()
            self.inode = st.st_ino
            if st.st_size == self.offset:
                return self.latest
            with open(self.ledger, "rb") as fh:
                fh.seek(self.offset - len(self.tail))
                data = fh.read()
            if not data.startswith(self.tail):  # rewritten in place (a reused inode): read it anew
                self._reset()
                with open(self.ledger, "rb") as fh:
                    data = fh.read()
            data = data[len(self.tail) :]
            end = data.rfind(b"\n") + 1  # an incomplete last line is being written: read it later
            lines = data[:end].splitlines(keepends=True)
            for raw in lines:
                self.line += 1
                self._add(raw)
            self.offset += end
            if lines:
                self.tail = lines[-1]
            return self.latest

    def _add(self, raw: bytes) -> None:
        where = f"audit: {self.ledger} line {self.line}"
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not all(k in entry for k in ENTRY_KEYS):
            raise PipelineError(f"{where} is not a ledger entry; {_DAMAGED_LEDGER}")
        if not _line_hash_ok(raw, entry) or entry["seq"] != self.next_seq or entry["prev_hash"] != self.prev_hash:
            raise PipelineError(f"{where} (seq {entry['seq']}) was altered or breaks the hash chain; {_DAMAGED_LEDGER}")
        self.next_seq, self.prev_hash = entry["seq"] + 1, entry["hash"]
        kind = entry["kind"]
        if kind == "stage":
            # A later success of the same stage on the same node (and risk profile) repairs a failure.
            params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
            stage = RENAMED_STAGES.get(entry.get("stage"), entry.get("stage"))
            key = _canonical([stage, entry.get("node"), params.get("profile")])
            if entry.get("outcome") == "success":
                self.failed.pop(key, None)
            else:
                self.failed[key] = (entry["seq"], str(entry.get("node")), f"{entry.get('stage')} {entry.get('node')}: {entry.get('error')}")
        if kind == "stage" and entry.get("outcome") == "success":
            outputs = tuple(out["path"] for out in entry.get("outputs") or [])
            self.io[entry["seq"]] = (tuple(i["path"] for i in entry.get("inputs") or []), outputs)
            for item in entry.get("inputs") or []:
                if "stat" in item and str(item.get("path", "")).startswith("../"):
                    self.external[item["path"]] = (item.get("stat"), item.get("sha256"))
            for out in entry.get("outputs") or []:
                rel = out["path"]
                self.latest[rel] = Recorded(rel, str(entry["stage"]), entry["seq"], out.get("sha256"), out.get("stat"))
        elif kind == "discard":
            for rel in entry.get("paths") or []:
                self.latest.pop(rel, None)

    def computed_from(self, paths: set[str]) -> set[str]:
        """``paths``, the other outputs of the stages that wrote them, and everything recorded as computed from them."""
        with self.lock:
            live = {r.seq for r in self.latest.values()}
            io = {seq: self.io[seq] for seq in live if seq in self.io}
            producer = {rel: r.seq for rel, r in self.latest.items()}
        consumers: dict[str, set[int]] = {}
        for seq, (inputs, _) in io.items():
            for rel in inputs:
                consumers.setdefault(rel, set()).add(seq)
        out, todo = set(), list(paths)
        while todo:
            rel = todo.pop()
            if rel in out:
                continue
            out.add(rel)
            seqs = consumers.get(rel, set()) | ({producer[rel]} if rel in producer else set())
            todo.extend(o for seq in seqs for o in io.get(seq, ((), ()))[1] if o not in out)
        return {rel for rel in out if rel in producer or rel in paths}


_DAMAGED_LEDGER = (
    "the run's record cannot be trusted: run `python -m tradingview_scraper.audit verify <run_dir>`, "
    "restore audit.jsonl or start a new run id"
)
_INDEXES: dict[str, _Index] = {}


def _index(run_dir: Path | str | Node) -> _Index:
    ledger = _ledger_path(run_dir)
    key = os.path.abspath(ledger)
    with _ledger._LOCKS_GUARD:  # the module's current guard: a forked child replaces it
        return _INDEXES.setdefault(key, _Index(ledger))


def _check(root: Path, record: Recorded) -> str | None:
    """None if the file still matches ``record`` (its fingerprint, else its sha256), else the problem."""
    full = os.path.join(root, record.path)
    fp = fingerprint(full)
    if fp is None:
        return "is missing"
    if record.stat is not None and fp == record.stat:
        return None
    if record.sha256 is not None and file_sha256(full) == record.sha256:
        return None
    return "changed"


def damaged(run_dir: Path | str | Node) -> list[Damage]:
    """Every artifact the ledger records whose file is missing or no longer has the recorded bytes.

    The whole ledger is read and its chain verified; then stat first: a file whose
    fingerprint (size, mtime, ctime, inode) equals the one recorded at write time is not
    read, any other is hashed. A missing ledger means nothing recorded.

    Raises
    ------
    PipelineError
        The ledger does not verify (an altered entry, a broken chain, a malformed line).
    """
    root = _run_dir_of(run_dir)
    out = []
    for record in list(_index(run_dir).refresh(reread=True).values()):
        problem = _check(root, record)
        if problem:
            out.append(Damage(record, problem))
    return out


def recorded_inputs(run_dir: Path | str | Node) -> dict[str, tuple[str | None, str | None]]:
    """Absolute path -> (stat key, sha256) of every file outside the run that its stages recorded reading.

    The latest record per file; read only (the ledger's index is refreshed, nothing is
    written). ``{}`` without a ledger, or with one that does not verify (the pre-flight
    check reports that).
    """
    root = os.path.abspath(_run_dir_of(run_dir))
    index = _index(run_dir)
    try:
        index.refresh()
    except PipelineError:
        return {}
    with index.lock:
        return {os.path.normpath(os.path.join(root, rel)): record for rel, record in index.external.items()}


def last_seq(run_dir: Path | str | Node) -> int:
    """``seq`` of the ledger's last entry (-1 without a ledger)."""
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return -1
    last = _read_last_entry(ledger)
    return -1 if last is None else int(last["seq"])


def failures(run_dir: Path | str | Node, after: int = -1) -> list[dict[str, Any]]:
    """The stage entries recorded with ``outcome="error"`` after entry ``after``, in ledger order."""
    ledger = _ledger_path(run_dir)
    if not ledger.is_file():
        return []
    out = []
    for raw in ledger.read_bytes().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("kind") == "stage" and entry.get("outcome") == "error":
            if isinstance(entry.get("seq"), int) and entry["seq"] > after:
                out.append(entry)
    return out


def check_inputs(
    run_dir: Path | str | Node, inputs: list[Any], hint: str = "rerun the same command to recompute it"
) -> None:
    """Refuse to consume an input artifact that no longer matches its record in the run's ledger.

    Inputs outside ``run_dir`` and inputs without a record (not written by a stage of this
    run) are not checked here.

    Raises
    ------
    DataError
        Naming the first input that is missing or changed since it was written.
    """
    from ..errors import DataError

    root = _run_dir_of(run_dir)
    latest = None
    for item in inputs:
        rel = _relative(root, item)
        if rel.startswith("../"):
            continue
        if latest is None:
            latest = _index(run_dir).refresh()
        record = latest.get(rel)
        if record is None:
            continue
        problem = _check(root, record)
        if problem:
            raise DataError(f"{Damage(record, problem).line(root)}; {hint}")


def discard(run_dir: Path | str | Node, damages: list[Damage]) -> list[str]:
    """Delete damaged artifacts and what was computed from them, and record that in the ledger.

    Snakemake reruns the producer of a missing file only when a job that needs it reruns,
    so the other outputs of the damaged files' stages and every artifact the ledger records
    as computed from them (transitively, up to the final targets) go too: the chain from a
    target down to each damaged file is then missing, and reruns. (They would rerun anyway,
    their inputs being recomputed.) The ``discard`` entry retires the records: :func:`verify`
    no longer expects those files, and the stage that writes one again records it anew.

    Returns
    -------
    list of str
        Every path deleted, relative to ``run_dir``, sorted.
    """
    if not damages:
        return []
    doomed = sorted(_index(run_dir).computed_from({d.record.path for d in damages}))
    problems = {d.record.path: f"{d.problem} since stage {d.record.stage} (seq {d.record.seq})" for d in damages}
    return _remove_recorded(run_dir, doomed, problems)


def recorded(run_dir: Path | str | Node) -> list[str]:
    """Every artifact the run's ledger currently records (relative paths, sorted); the ledger is verified."""
    return sorted(_index(run_dir).refresh(reread=True))


def retire(run_dir: Path | str | Node, paths: list[str], reason: str) -> list[str]:
    """Delete recorded artifacts that are no longer current, and record why in the ledger (a ``discard`` entry).

    Returns
    -------
    list of str
        The paths retired, sorted.
    """
    if not paths:
        return []
    return _remove_recorded(run_dir, sorted(paths), dict.fromkeys(paths, reason))


def genesis_of(run_dir: Path | str | Node) -> dict[str, Any] | None:
    """The first entry of the run's ledger if it is a genesis entry, else None (no ledger, or not a ledger)."""
    ledger = _ledger_path(run_dir)
    try:
        with open(ledger, "rb") as fh:
            first = json.loads(fh.readline())
    except (OSError, ValueError):
        return None
    return first if isinstance(first, dict) and first.get("kind") == "genesis" else None


def unfinished(run_dir: Path | str | Node) -> tuple[int, str] | None:
    """The first stage failure that left the run unfinished: not repaired by a later success of the same
    stage on the same node (and risk profile), on a node that still holds recorded artifacts.

    A node no longer in the run (its artifacts retired) does not keep the run unfinished.

    Returns
    -------
    (int, str) or None
        The failure's ``seq`` and its one line (``"<stage> <node>: <error>"``); None when every
        failure was repaired (or none happened).

    Raises
    ------
    PipelineError
        The ledger does not verify.
    """
    index = _index(run_dir)
    index.refresh()
    with index.lock:
        failed, live = sorted(index.failed.values()), list(index.latest)
    for seq, node, line in failed:
        if node == "." or any(rel.startswith(node.rstrip("/") + "/") for rel in live):
            return seq, line
    return None


def _remove_recorded(run_dir: Path | str | Node, doomed: list[str], problems: dict[str, str]) -> list[str]:
    from ..layout import remove_artifact

    root = _run_dir_of(run_dir)
    for rel in doomed:
        remove_artifact(root / rel)
    payload = {"paths": doomed, "problems": problems}
    ledger = _ledger_path(run_dir)
    with _locked(ledger):
        last = _read_last_entry(ledger)
        if last is None:
            raise PipelineError(f"audit: {ledger} has no genesis entry")
        entry = _make_entry(last["seq"] + 1, last["hash"], "discard", payload)
        _append_line(ledger, _canonical(entry) + "\n")
    return doomed
