"""What a run's ledger says about its artifacts: their checks against their records, its failures, ``verify``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..deps import file_digest, file_sha256, fingerprint
from ..errors import DataError, PipelineError, StageError
from ..layout import Node, remove_artifact
from ._ledger import (
    RENAMED_STAGES,
    Ledger,
    Recorded,
    _canonical,
    _ledger_path,
    _paths,
    _relative,
    _run_dir_of,
    append,
    read,
    stage_entries,
    verified,
)


@dataclass(frozen=True)
class Damage:
    """An artifact whose file no longer matches its record (``missing`` or ``changed``)."""

    record: Recorded
    problem: str

    def line(self, run_dir: Path | str) -> str:
        where = Path(run_dir) / self.record.path
        return f"{where} {self.problem} since stage {self.record.stage} wrote it (audit seq {self.record.seq})"


def _check(root: Path, record: Recorded, trust_stat: bool = True) -> str | None:
    """None if the file still matches ``record`` (its fingerprint, unless not ``trust_stat``, else its sha256), else the problem."""
    full = os.path.join(root, record.path)
    fp = fingerprint(full)
    if fp is None:
        return "is missing"
    if trust_stat and record.stat is not None and fp == record.stat:
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
    records = verified(run_dir, anew=True).latest.values()
    return [Damage(record, problem) for record in records if (problem := _check(root, record))]


def recorded(run_dir: Path | str | Node) -> list[str]:
    """Every artifact the run's ledger currently records (relative paths, sorted); the whole ledger is verified."""
    return sorted(verified(run_dir, anew=True).latest)


def recorded_inputs(run_dir: Path | str | Node) -> dict[str, tuple[str | None, str | None]]:
    """Absolute path -> (stat key, sha256) of each file outside the run its stages recorded reading (the latest).

    Read only; ``{}`` without a ledger or with one that does not verify (the pre-flight check
    reports that).
    """
    root = os.path.abspath(_run_dir_of(run_dir))
    try:
        ledger = verified(run_dir)
    except PipelineError:
        return {}
    known = {}
    for item in (i for entry in ledger.successes() for i in entry.get("inputs") or [] if isinstance(i, dict)):
        if isinstance(item.get("path"), str) and item["path"].startswith("../") and "stat" in item:
            known[os.path.normpath(os.path.join(root, item["path"]))] = (item.get("stat"), item.get("sha256"))
    return known


def _records_of(run_dir: Path | str | Node, paths: list[Any]) -> list[tuple[Any, Recorded | None]]:
    """Each path with its latest record in the run's ledger (None outside the run or unrecorded)."""
    root = _run_dir_of(run_dir)
    rels = [_relative(root, p) for p in paths]
    inside = [not rel.startswith("../") for rel in rels]
    latest = verified(run_dir).latest if any(inside) else {}
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


def _computed_from(ledger: Ledger, paths: set[str]) -> set[str]:
    """``paths``, the other outputs of the stages that wrote them, and everything recorded as computed from them."""
    producer = {rel: r.seq for rel, r in ledger.latest.items()}
    writers = set(producer.values())
    io = {e["seq"]: (_paths(e.get("inputs")), _paths(e["outputs"])) for e in ledger.successes() if e["seq"] in writers}
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
        todo.extend(o for seq in seqs for o in io[seq][1] if o not in out)
    return {rel for rel in out if rel in producer or rel in paths}


def discard(run_dir: Path | str | Node, damages: list[Damage]) -> list[str]:
    """Delete damaged artifacts and what was computed from them, recording that in the ledger; the paths, sorted.

    Snakemake reruns the producer of a missing file only when a job that needs it reruns, so
    the other outputs of the damaged files' stages and every artifact recorded as computed
    from them (transitively, up to the final targets) go too: each chain from a target down
    to a damaged file then reruns. The ``discard`` entry retires the records (:func:`verify`
    no longer expects the files; the stage that writes one again records it anew).
    """
    if not damages:
        return []
    doomed = sorted(_computed_from(verified(run_dir), {d.record.path for d in damages}))
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
    append(run_dir, "discard", {"paths": doomed, "problems": problems}, f"audit: {_ledger_path(run_dir)} has no genesis entry")
    return doomed


def last_seq(run_dir: Path | str | Node) -> int:
    """``seq`` of the ledger's last entry (-1 without a ledger, or with one that does not verify: the claim reports that)."""
    try:
        return verified(run_dir).next_seq - 1
    except PipelineError:
        return -1


def first_failure(run_dir: Path | str | Node, after: int = -1) -> PipelineError | None:
    """The first stage failure the run's ledger recorded after entry ``after``, as the pipeline error it was.

    Stages run as threads, processes or cluster jobs; Snakemake reports their exceptions only
    as text, but every stage records its failure's one line in the ledger.
    """
    entry = next((e for e in stage_entries(run_dir, "error") if e["seq"] > after), None)
    if entry is None:
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
    ledger = verified(run_dir)
    failed: dict[str, tuple[int, str, str]] = {}
    for entry in (e for e in ledger.entries if e["kind"] == "stage"):
        params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
        stage, node = str(entry.get("stage")), entry.get("node")
        key = _canonical([RENAMED_STAGES.get(stage, stage), node, params.get("profile")])
        if entry.get("outcome") == "success":
            failed.pop(key, None)  # a later success of the same stage on the same node repairs a failure
        else:
            failed[key] = (entry["seq"], str(node), f"{stage} {node}: {entry.get('error')}")
    for seq, node, line in sorted(failed.values()):
        if node == "." or any(rel.startswith(node.rstrip("/") + "/") for rel in ledger.latest):
            return seq, line
    return None


def verify(run_dir: Path | str | Node) -> list[str]:
    """Check a run's ledger and the artifacts it records, every byte hashed; one message per problem, none when it verifies.

    Problems: a missing ledger or genesis, malformed lines, bad hashes (an entry altered), seq
    gaps, a broken chain, and a missing or changed file of each output of a latest successful
    stage entry (``"artifact <path> changed since stage <stage> (seq N)"``).
    """
    root, path = _run_dir_of(run_dir), _ledger_path(run_dir)
    data = path.read_bytes() if path.is_file() else None
    if not data:
        return [f"missing genesis: no ledger at {path}" if data is None else f"missing genesis: ledger {path} is empty"]
    whole = data.endswith(b"\n")
    ledger = Ledger().extended(data if whole else data + b"\n")  # an interrupted last line is checked too
    problems = [] if whole else [f"line {ledger.lines}: incomplete last line (interrupted write)"]
    problems += [p for _, _, line in ledger.problems for p in line]
    for rel, record in sorted(ledger.latest.items()):
        if (problem := _check(root, record, trust_stat=False)) == "is missing":
            problems.append(f"artifact {rel} missing (recorded by stage {record.stage}, seq {record.seq})")
        elif problem:
            problems.append(f"artifact {rel} changed since stage {record.stage} (seq {record.seq})")
    return problems


_PROG = "python -m tradingview_scraper.audit"


def main(argv: list[str] | None = None) -> int:
    """``python -m tradingview_scraper.audit verify <run_dir>``: 0 verified, 1 problems, 2 bad usage (one line)."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(f"usage: {_PROG} verify <run_dir>")
        return 0
    if len(args) != 2 or args[0] != "verify":
        print(f"{_PROG}: error: expected `verify <run_dir>`, got {' '.join(args) or 'no arguments'!r}", file=sys.stderr)
        return 2
    if not Path(args[1]).is_dir():
        print(f"{_PROG}: error: run directory {args[1]} does not exist", file=sys.stderr)
        return 2
    for problem in (problems := verify(args[1])):
        print(problem)
    if not problems:
        ledger = read(args[1], anew=True)
        print(f"audit OK: {len(ledger.entries)} entries, {len(ledger.latest)} artifacts verified")
    return 1 if problems else 0
