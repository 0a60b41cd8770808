"""The ledger as it is read while a run goes: its index, appending to it, and the artifacts against their records."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..deps import file_digest, file_sha256, fingerprint
from ..errors import DataError, PipelineError, StageError
from ..layout import Node, remove_artifact
from . import _ledger
from ._ledger import (
    Recorded,
    _append_entry,
    _Chain,
    _ledger_path,
    _locked,
    _make_entry,
    _relative,
    _run_dir_of,
)


@dataclass(frozen=True)
class Damage:
    """An artifact whose file no longer matches its record (``missing`` or ``changed``)."""

    record: Recorded
    problem: str

    def line(self, run_dir: Path | str) -> str:
        where = Path(run_dir) / self.record.path
        return f"{where} {self.problem} since stage {self.record.stage} wrote it (audit seq {self.record.seq})"


_DAMAGED_LEDGER = (
    "the run's record cannot be trusted: run `python -m tradingview_scraper.audit verify <run_dir>`, "
    "restore audit.jsonl or start a new run id"
)


class _Index:
    """The :class:`_Chain` of one ledger, read incrementally (the ledger is append-only).

    It stops at the first line :func:`verify` would report, so it is only ever built on a
    ledger that verifies.
    """

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.offset, self.inode, self.tail, self.chain = 0, None, b"", _Chain()

    def refresh(self, reread: bool = False) -> dict[str, Recorded]:
        """The latest record per artifact, after reading what was appended since the last call (``reread``: all of it)."""
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
                return self.chain.latest
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
                entry, problems = self.chain.add(raw)
                if problems:
                    where = f"audit: {self.ledger} line {self.chain.lines}"
                    self._reset()
                    if entry is None:
                        raise PipelineError(f"{where} is not a ledger entry; {_DAMAGED_LEDGER}")
                    if any(word in p for p in problems for word in ("bad hash", "seq gap", "broken chain")):
                        raise PipelineError(f"{where} (seq {entry['seq']}) was altered or breaks the hash chain; {_DAMAGED_LEDGER}")
                    raise PipelineError(f"audit: {self.ledger} {problems[0]}; {_DAMAGED_LEDGER}")
            self.offset += end
            if lines:
                self.tail = lines[-1]
            return self.chain.latest

    def computed_from(self, paths: set[str]) -> set[str]:
        """``paths``, the other outputs of the stages that wrote them, and everything recorded as computed from them."""
        with self.lock:
            producer = {rel: r.seq for rel, r in self.chain.latest.items()}
            io = {seq: self.chain.io[seq] for seq in set(producer.values()) if seq in self.chain.io}
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


_INDEXES: dict[str, _Index] = {}


def _index(run_dir: Path | str | Node) -> _Index:
    ledger = _ledger_path(run_dir)
    with _ledger._LOCKS_GUARD:  # the module's current guard: a forked child replaces it
        return _INDEXES.setdefault(os.path.abspath(ledger), _Index(ledger))


def _forget_indexes_after_fork() -> None:
    """Give a forked child fresh indexes: an index lock held by another parent thread would never be freed."""
    _INDEXES.clear()


os.register_at_fork(after_in_child=_forget_indexes_after_fork)


def _append(ledger: Path, kind: str, payload: dict[str, Any], no_genesis: str) -> dict[str, Any]:
    """Append a ``kind`` entry chained to the last one, under the ledger's locks.

    Raises
    ------
    PipelineError
        ``no_genesis``: the ledger is empty; or the ledger does not verify, or ends with an
        incomplete line (an interrupted write).
    """
    with _locked(ledger):
        index = _index(ledger.parent)
        index.refresh()
        with index.lock:
            chain, complete = index.chain, index.offset == ledger.stat().st_size
        if not complete:  # no writer is at work under the lock: the last write was interrupted
            raise PipelineError(
                f"audit: {ledger} ends with an incomplete line (interrupted write); run "
                f"`python -m tradingview_scraper.audit verify {ledger.parent}` and repair it"
            )
        if chain.entries == 0:
            raise PipelineError(no_genesis)
        return _append_entry(ledger, _make_entry(chain.next_seq, chain.prev_hash, kind, payload))


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

    The whole ledger is read and verified; a file whose fingerprint is the one recorded at
    write time is not read, any other is hashed. A missing ledger records nothing.

    Raises
    ------
    PipelineError
        The ledger does not verify (an altered entry, a broken chain, a malformed line).
    """
    root = _run_dir_of(run_dir)
    records = list(_index(run_dir).refresh(reread=True).values())
    return [Damage(record, problem) for record in records if (problem := _check(root, record))]


def recorded(run_dir: Path | str | Node) -> list[str]:
    """Every artifact the run's ledger currently records (relative paths, sorted); the ledger is verified."""
    return sorted(_index(run_dir).refresh(reread=True))


def recorded_inputs(run_dir: Path | str | Node) -> dict[str, tuple[str | None, str | None]]:
    """Absolute path -> (stat key, sha256) of each file outside the run its stages recorded reading (the latest).

    Read only; ``{}`` without a ledger or with one that does not verify (the pre-flight check
    reports that).
    """
    root = os.path.abspath(_run_dir_of(run_dir))
    index = _index(run_dir)
    try:
        index.refresh()
    except PipelineError:
        return {}
    with index.lock:
        return {os.path.normpath(os.path.join(root, rel)): record for rel, record in index.chain.external.items()}


def _records_of(run_dir: Path | str | Node, paths: list[Any]) -> list[tuple[Any, Recorded | None]]:
    """Each path with its latest record in the run's ledger (None outside the run or unrecorded)."""
    root = _run_dir_of(run_dir)
    rels = [_relative(root, p) for p in paths]
    inside = [not rel.startswith("../") for rel in rels]
    latest = _index(run_dir).refresh() if any(inside) else {}
    return [(p, latest.get(rel) if ok else None) for p, rel, ok in zip(paths, rels, inside, strict=True)]


def digests(run_dir: Path | str | Node, paths: list[str]) -> dict[str, str | None]:
    """Path (as given) -> sha256 of each file: its record's in the run's ledger while the file matches
    that record, else its bytes' (None if unreadable); the ledger has hashed what a stage wrote."""
    root, out = _run_dir_of(run_dir), {}
    for path, record in _records_of(run_dir, paths):
        vouched = record is not None and record.sha256 is not None and _check(root, record) is None
        out[path] = record.sha256 if vouched else file_digest(path)
    return out


def check_inputs(run_dir: Path | str | Node, inputs: list[Any], hint: str = "rerun the same command to recompute it") -> None:
    """Refuse to consume an input artifact that no longer matches its record in the run's ledger.

    Inputs outside ``run_dir``, and inputs no stage of this run recorded, are not checked.

    Raises
    ------
    DataError
        Naming the first input that is missing or changed since it was written.
    """
    root = _run_dir_of(run_dir)
    for _, record in _records_of(run_dir, inputs):
        if record is not None and (problem := _check(root, record)):
            raise DataError(f"{Damage(record, problem).line(root)}; {hint}")


def discard(run_dir: Path | str | Node, damages: list[Damage]) -> list[str]:
    """Delete damaged artifacts and what was computed from them, recording that in the ledger; the paths, sorted.

    Snakemake reruns the producer of a missing file only when a job that needs it reruns, so
    the other outputs of the damaged files' stages and every artifact recorded as computed
    from them (transitively, up to the final targets) go too: each chain from a target down
    to a damaged file then reruns. The ``discard`` entry retires the records (:func:`verify`
    no longer expects the files; the stage that writes one again records it anew).
    """
    doomed = sorted(_index(run_dir).computed_from({d.record.path for d in damages}))
    problems = {d.record.path: f"{d.problem} since stage {d.record.stage} (seq {d.record.seq})" for d in damages}
    return _remove_recorded(run_dir, doomed, problems)


def retire(run_dir: Path | str | Node, paths: list[str], reason: str) -> list[str]:
    """Delete recorded artifacts no longer current, recording ``reason`` in a ``discard`` entry; the paths, sorted."""
    return _remove_recorded(run_dir, sorted(paths), dict.fromkeys(paths, reason))


def _remove_recorded(run_dir: Path | str | Node, doomed: list[str], problems: dict[str, str]) -> list[str]:
    if not doomed:
        return []
    for rel in doomed:
        remove_artifact(_run_dir_of(run_dir) / rel)
    ledger = _ledger_path(run_dir)
    _append(ledger, "discard", {"paths": doomed, "problems": problems}, f"audit: {ledger} has no genesis entry")
    return doomed


def last_seq(run_dir: Path | str | Node) -> int:
    """``seq`` of the ledger's last entry (-1 without a ledger, or with one that does not verify: the claim reports that)."""
    index = _index(run_dir)
    try:
        index.refresh()
    except PipelineError:
        return -1
    with index.lock:
        return index.chain.next_seq - 1


def first_failure(run_dir: Path | str | Node, after: int = -1) -> PipelineError | None:
    """The first stage failure the run's ledger recorded after entry ``after``, as the pipeline error it was.

    Stages run as threads, processes or cluster jobs; Snakemake reports their exceptions only
    as text, but every stage records its failure's one line in the ledger.
    """
    later = (e for e in _ledger.stage_entries(run_dir, "error") if isinstance(e.get("seq"), int) and e["seq"] > after)
    if (entry := next(later, None)) is None:
        return None
    name, _, message = str(entry.get("error") or "").partition(": ")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, PipelineError) and message:
        return cls(message)
    return StageError(f"{entry.get('stage')} {entry.get('node')}: {entry.get('error')}")


def unfinished(run_dir: Path | str | Node) -> tuple[int, str] | None:
    """The first stage failure that left the run unfinished, as its ``seq`` and one line, or None.

    A failure counts unless a later success of the same stage on the same node (and risk
    profile) repaired it, or its node holds no recorded artifact any more (retired from the run).

    Raises
    ------
    PipelineError
        The ledger does not verify.
    """
    index = _index(run_dir)
    index.refresh()
    with index.lock:
        failed, live = sorted(index.chain.failed.values()), list(index.chain.latest)
    for seq, node, line in failed:
        if node == "." or any(rel.startswith(node.rstrip("/") + "/") for rel in live):
            return seq, line
    return None
